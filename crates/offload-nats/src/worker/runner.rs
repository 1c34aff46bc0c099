//! Where a worker runs its calls ([`Runner`]: a local process pool, or
//! threads in the worker itself), and each task's service-API counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use offload::proc::{ProcessPool, Registry};

/// One task's entry: its name, fingerprint and service-API counters.
#[derive(Debug)]
pub(crate) struct TaskEntry {
    pub(crate) name: &'static str,
    pub(crate) fp: u64,
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) nanos: AtomicU64,
}

impl TaskEntry {
    pub(super) fn record(&self, ok: bool, took: Duration) {
        self.requests.fetch_add(1, Relaxed);
        if !ok {
            self.errors.fetch_add(1, Relaxed);
        }
        self.nanos
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }
}

/// Where a worker runs its calls.
pub(crate) enum Runner {
    /// Worker processes (the default): isolation, hard timeouts, kill on cancel.
    Procs(ProcessPool),
    /// Threads of the worker itself: faster, not isolated.
    Threads {
        pool: offload::ThreadPool,
        registry: Arc<Registry>,
    },
}

/// A call running in a [`Runner`].
pub(crate) type Running =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, offload::Error>> + Send>>;

impl Runner {
    /// Starts task `name` (at fingerprint `fp`) on encoded `input`;
    /// dropping the future cancels it as the runner can.
    pub(crate) fn call(
        &self,
        name: &'static str,
        fp: u64,
        input: Vec<u8>,
        options: offload::proc::CallOptions,
    ) -> Running {
        match self {
            Runner::Procs(p) => Box::pin(p.call_bytes(name, Some(fp), input, options)),
            Runner::Threads { pool, registry } => {
                let registry = registry.clone();
                let run = offload::run_in_executor(pool, move || registry.dispatch(name, &input));
                Box::pin(async move { run.await? })
            }
        }
    }

    /// Whether it runs calls in worker processes.
    pub(super) fn is_processes(&self) -> bool {
        matches!(self, Runner::Procs(_))
    }

    /// Calls it has in flight at once: the process pool's (processes ×
    /// pipeline depth), or one running and one ready per thread.
    pub(super) fn in_flight(&self) -> usize {
        match self {
            Runner::Procs(p) => p.max_in_flight().max(1),
            Runner::Threads { pool, .. } => pool.max_threads().saturating_mul(2),
        }
    }

    /// (running, queued) calls now. A process pool's running calls are
    /// those written to its processes (most are written by their handler,
    /// not carried by a driver thread).
    pub(crate) fn load(&self) -> (usize, usize) {
        match self {
            Runner::Procs(p) => {
                let m = p.metrics();
                (m.in_flight.max(m.calls.running), m.calls.queued)
            }
            Runner::Threads { pool, .. } => {
                let m = pool.metrics();
                (m.running, m.queued)
            }
        }
    }

    /// Stops it, waiting (at most 10 s) for its processes to be reaped.
    pub(super) async fn shutdown(&self) {
        let done = async {
            match self {
                Runner::Procs(p) => p.shutdown().await,
                Runner::Threads { pool, .. } => pool.shutdown().await,
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
    }
}
