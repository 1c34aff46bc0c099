//! Pool metrics: counters bumped on the hot path with relaxed atomics, the
//! [`PoolMetrics`] snapshot users read, and (feature `metrics`) the same
//! figures exported to the `metrics` facade.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::histogram::{Histogram, LatencySummary};
use crate::job::Outcome;
#[cfg(feature = "metrics")]
use crate::metrics_export::{Family, PoolExport};

/// Counters and histograms, owned by the pool's shared state. Every job
/// that was accepted ends in exactly one of `completed`, `panicked` and
/// `cancelled`; the fields are private so that only these methods move
/// them.
pub(crate) struct Counters {
    submitted: AtomicU64,
    completed: AtomicU64,
    panicked: AtomicU64,
    cancelled: AtomicU64,
    rejected: AtomicU64,
    queue_wait: Histogram,
    run_time: Histogram,
    #[cfg(feature = "metrics")]
    export: PoolExport,
}

impl Counters {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(pool: &str) -> Self {
        Counters {
            submitted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            queue_wait: Histogram::new(),
            run_time: Histogram::new(),
            #[cfg(feature = "metrics")]
            export: PoolExport::new(Family::Pool, pool),
        }
    }

    /// A job was accepted into the queue.
    pub(crate) fn submitted(&self) {
        self.submitted.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        self.export.submitted.increment(1);
    }

    /// A submission was refused (queue full on a non-waiting path, or the
    /// pool shut down).
    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        self.export.rejected.increment(1);
    }

    /// `n` accepted jobs will never run (cancelled by their caller, by a
    /// shutdown, or failed because no thread could start).
    pub(crate) fn cancelled(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.cancelled.fetch_add(n, Relaxed);
        #[cfg(feature = "metrics")]
        self.export.cancelled.increment(n);
    }

    /// A job taken by a thread ended: counts its outcome. Called before
    /// the job's caller is woken, so that a caller who reads the metrics
    /// right after its result sees its own job counted.
    pub(crate) fn ended(&self, outcome: Outcome) {
        match outcome {
            Outcome::Completed => {
                self.completed.fetch_add(1, Relaxed);
                #[cfg(feature = "metrics")]
                self.export.completed.increment(1);
            }
            Outcome::Panicked => {
                self.panicked.fetch_add(1, Relaxed);
                #[cfg(feature = "metrics")]
                self.export.panicked.increment(1);
            }
            Outcome::Skipped => self.cancelled(1),
        }
    }

    /// Records how long a job that ran waited in the queue and ran. Called
    /// after its caller was woken: the histograms are not on the path of
    /// the result (a clock read and six atomic operations that a caller
    /// awaiting one job at a time would otherwise wait for), so they may
    /// trail the counters by the job that just ended.
    pub(crate) fn timed(&self, outcome: Outcome, waited: Duration, ran: Duration) {
        self.queue_wait.record(waited);
        #[cfg(feature = "metrics")]
        self.export.wait.record(waited.as_secs_f64());
        if outcome != Outcome::Skipped {
            self.run_time.record(ran);
            #[cfg(feature = "metrics")]
            self.export.run.record(ran.as_secs_f64());
        }
    }

    /// Exports the gauges (feature `metrics`). Called under the pool's lock
    /// after any of them changed, so updates are ordered by the lock and a
    /// stale value can never overwrite a newer one.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    #[inline]
    pub(crate) fn gauges(&self, queued: usize, running: usize, threads: usize) {
        #[cfg(feature = "metrics")]
        {
            self.export.queued.set(queued as f64);
            self.export.running.set(running as f64);
            self.export.threads.set(threads as f64);
        }
    }

    pub(crate) fn snapshot(
        &self,
        threads: usize,
        idle: usize,
        queued: usize,
        running: usize,
    ) -> PoolMetrics {
        PoolMetrics {
            threads,
            idle,
            queued,
            running,
            submitted: self.submitted.load(Relaxed),
            completed: self.completed.load(Relaxed),
            panicked: self.panicked.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            queue_wait: self.queue_wait.summary(),
            run_time: self.run_time.summary(),
        }
    }
}

/// A snapshot of a pool's state and history, from [`ThreadPool::metrics`](crate::ThreadPool::metrics).
///
/// Gauges (`threads`, `idle`, `queued`, `running`) are read together under
/// the pool's lock; counters are cumulative since the pool was built. Every
/// accepted job ends in exactly one of `completed`, `panicked` and
/// `cancelled`, so once the pool is idle
/// `submitted == completed + panicked + cancelled`.
///
/// A job's outcome is counted before its caller is woken, so a caller that
/// reads the metrics right after its result sees its job counted. Its
/// `queue_wait` and `run_time` are recorded just after (a clock read and
/// the histograms are kept off the result's path): they include every job
/// once the pool is idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolMetrics {
    /// Worker threads alive now.
    pub threads: usize,
    /// Of those, waiting for work.
    pub idle: usize,
    /// Jobs waiting in the queue.
    pub queued: usize,
    /// Jobs running now (including detached ones whose caller gave up).
    pub running: usize,
    /// Jobs accepted into the queue.
    pub submitted: u64,
    /// Jobs that returned normally.
    pub completed: u64,
    /// Jobs that panicked (their callers got [`Error::is_panic`](crate::Error::is_panic)).
    pub panicked: u64,
    /// Accepted jobs that never ran: cancelled by their caller (a dropped
    /// future), by `shutdown_now` or a shutdown deadline, or failed because
    /// no thread could be started.
    pub cancelled: u64,
    /// Submissions refused: queue full on a non-waiting path, or pool shut down.
    pub rejected: u64,
    /// Time from queueing to start, of jobs that started.
    pub queue_wait: LatencySummary,
    /// Time from start to end, of jobs that ran.
    pub run_time: LatencySummary,
}
