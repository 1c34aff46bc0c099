//! Names and labels of what the pools export to the [`metrics`] facade
//! (feature `metrics`), in one place so that every pool speaks alike and
//! the names agree with the loop monitor's (`offload_loop_lag_seconds`,
//! `offload_loop_stalls_total`, `offload_loop_stall_seconds`):
//!
//! - `offload_<family>_<what>`: `family` is the kind of executor
//!   ([`Family::Pool`] for thread pools and dedicated executors,
//!   [`Family::Proc`] for process pools), `what` the quantity;
//! - counters end in `_total`, durations are histograms in seconds and end
//!   in `_seconds`, gauges are bare nouns;
//! - one label, `pool`, whose value is the pool's name (the thread name
//!   prefix: `offload-run` for the default pool).
//!
//! Handles are registered once, when a pool is built, against the
//! recorder installed then; recording through a handle is one dynamic call
//! (a no-op handle when no recorder is installed). Without the feature this
//! module does not exist and the hot path has no trace of it.

use metrics::{Counter, Gauge, Histogram};

/// Counter, no label: how many times this process's background threads
/// left the idle class because one of them starved (`priority/guard.rs`).
pub(crate) const BACKGROUND_FALLBACKS: &str = "offload_background_fallbacks_total";

/// Gauge, no label: 1 while this process's background threads compete at
/// their nice level after a starvation, 0 while they are in the idle class.
pub(crate) const BACKGROUND_FALLEN_BACK: &str = "offload_background_fallen_back";

/// The label every pool metric carries.
pub(crate) const POOL_LABEL: &str = "pool";

/// Which kind of executor a metric describes: the middle of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// `offload_pool_*`: thread pools, the default pool, dedicated executors.
    Pool,
    /// `offload_proc_*`: process pools (worker processes).
    Proc,
}

impl Family {
    fn prefix(self) -> &'static str {
        match self {
            Family::Pool => "offload_pool",
            Family::Proc => "offload_proc",
        }
    }

    /// The full metric name for `what` (`"rejected_total"` →
    /// `offload_pool_rejected_total`).
    pub(crate) fn name(self, what: &str) -> String {
        format!("{}_{what}", self.prefix())
    }

    /// A counter named `offload_<family>_<what>` labelled with `pool`.
    /// `what` ends in `_total`.
    pub(crate) fn counter(self, what: &str, pool: &str) -> Counter {
        metrics::counter!(self.name(what), POOL_LABEL => pool.to_owned())
    }

    /// A gauge named `offload_<family>_<what>` labelled with `pool`.
    pub(crate) fn gauge(self, what: &str, pool: &str) -> Gauge {
        metrics::gauge!(self.name(what), POOL_LABEL => pool.to_owned())
    }

    /// A histogram (seconds) named `offload_<family>_<what>` labelled with
    /// `pool`. `what` ends in `_seconds`.
    pub(crate) fn histogram(self, what: &str, pool: &str) -> Histogram {
        metrics::histogram!(self.name(what), POOL_LABEL => pool.to_owned())
    }
}

/// The handles of one thread pool's metrics (see the table in
/// `pool/README.md`). Gauges are `set` under the pool's lock, right after
/// the value changed, so their updates are ordered and a stale value can
/// never overwrite a newer one.
pub(crate) struct PoolExport {
    pub(crate) queued: Gauge,
    pub(crate) running: Gauge,
    pub(crate) threads: Gauge,
    pub(crate) wait: Histogram,
    pub(crate) run: Histogram,
    pub(crate) submitted: Counter,
    pub(crate) completed: Counter,
    pub(crate) panicked: Counter,
    pub(crate) cancelled: Counter,
    pub(crate) rejected: Counter,
}

impl PoolExport {
    /// Registers the handles of pool `pool` of `family`.
    pub(crate) fn new(family: Family, pool: &str) -> Self {
        PoolExport {
            queued: family.gauge("queued", pool),
            running: family.gauge("running", pool),
            threads: family.gauge("threads", pool),
            wait: family.histogram("wait_seconds", pool),
            run: family.histogram("run_seconds", pool),
            submitted: family.counter("submitted_total", pool),
            completed: family.counter("completed_total", pool),
            panicked: family.counter("panicked_total", pool),
            cancelled: family.counter("cancelled_total", pool),
            rejected: family.counter("rejected_total", pool),
        }
    }
}

impl std::fmt::Debug for PoolExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolExport").finish_non_exhaustive()
    }
}
