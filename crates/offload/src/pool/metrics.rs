//! Pool metrics: counters bumped on the hot path with relaxed atomics, and
//! the [`PoolMetrics`] snapshot users read.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::histogram::{Histogram, LatencySummary};

/// Counters and histograms, owned by the pool's shared state.
pub(crate) struct Counters {
    pub(crate) submitted: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) queue_wait: Histogram,
    pub(crate) run_time: Histogram,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Counters {
            submitted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            queue_wait: Histogram::new(),
            run_time: Histogram::new(),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// A snapshot of a pool's state and history, from [`ThreadPool::metrics`](crate::ThreadPool::metrics).
///
/// Gauges (`threads`, `idle`, `queued`, `running`) are read together under
/// the pool's lock; counters are cumulative since the pool was built.
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
    /// Jobs cancelled before they started (dropped futures, `shutdown_now`, deadlines).
    pub cancelled: u64,
    /// Submissions refused: queue full on a non-waiting path, or pool shut down.
    pub rejected: u64,
    /// Time from queueing to start, of jobs that started.
    pub queue_wait: LatencySummary,
    /// Time from start to end, of jobs that ran.
    pub run_time: LatencySummary,
}

impl Counters {
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
