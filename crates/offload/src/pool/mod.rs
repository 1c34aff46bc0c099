//! [`ThreadPool`]: bounded threads, a bounded queue with backpressure,
//! cancellation of queued work, three shutdown modes, metrics.
//!
//! The design note is `README.md` in this folder.

mod builder;
mod metrics;
mod shared;
mod shutdown;
#[cfg(test)]
mod tests;
mod worker;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use builder::ThreadPoolBuilder;
pub(crate) use builder::default_thread_count;
pub(crate) use builder::{ExitHook, StartHook};
pub use metrics::PoolMetrics;
pub use shutdown::{RunningJob, Shutdown, ShutdownReport, ShutdownTimeout};

use builder::Config;
use shared::{Phase, PoolShared};

#[cfg(doc)]
use crate::error::Error;
use crate::error::TryRunError;
use crate::executor::{Blocking, Executor, Run, Submit, run_in_executor};
use crate::job::{Job, JobHandle, try_submit};

/// A pool of threads for blocking work, awaited from async code.
///
/// Up to [`threads`](ThreadPoolBuilder::threads) threads run jobs taken from
/// a queue of at most [`queue_capacity`](ThreadPoolBuilder::queue_capacity)
/// jobs. Threads start when work arrives and exit after
/// [`keep_alive`](ThreadPoolBuilder::keep_alive) without any. Both bounds are
/// true at every moment, even for jobs whose caller gave up: a thread is
/// given back only when its job really ends.
///
/// A `ThreadPool` is a cheap handle: [`Clone`] it to share the pool (into
/// an axum state, into tasks); every clone submits to the same threads and
/// queue. The futures it returns need no particular runtime: they complete
/// under any executor alike (tested: tokio's two runtimes and
/// `futures::executor::block_on`). A job submitted inside a [`tracing`]
/// span runs inside that span on the pool's thread.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// let pool = offload::ThreadPool::builder().name("io").threads(4).build()?;
///
/// // Waits for room in the queue if it is full (backpressure).
/// let hosts = pool.run(|| std::fs::read_to_string("/etc/hosts")).await?;
///
/// // Fails at once if the queue is full, handing the closure back.
/// let handle = pool.try_run(|| 2 + 2).map_err(|e| e.to_string())?;
/// assert_eq!(handle.await?, 4);
///
/// pool.shutdown().await; // drain: wait for queued and running jobs
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
///
/// # Cancellation
///
/// Dropping the future of [`run`](Self::run) (or a [`JobHandle`]) while its
/// job is queued removes the job: it never runs, and its place in the queue
/// is free at once. Dropping it after the job started detaches the job: it
/// runs to the end on its thread, which stays counted until then, and its
/// result is dropped.
///
/// # Shutdown
///
/// - [`shutdown`](Self::shutdown)`.await`: take no new jobs, run the queued
///   ones, wait for all to finish.
/// - [`shutdown_now`](Self::shutdown_now): take no new jobs and cancel the
///   queued ones (their callers get [`Error::is_cancelled`]); running jobs
///   finish.
/// - [`shutdown_timeout`](Self::shutdown_timeout)`.await`: drain until a
///   deadline, then cancel what is queued and report what still runs.
/// - [`shutdown_blocking`](Self::shutdown_blocking): drain and block the
///   calling thread until every thread has exited, for sync code and tests.
/// - Dropping the last handle **never waits**: it starts the drain and
///   returns at once. Queued jobs still run and their callers still get
///   their results (like Python's `shutdown(wait=False)`); the threads exit
///   when the queue is empty. To wait, say so: `shutdown().await` or
///   `shutdown_blocking()`.
///
/// After any of these, submissions fail with [`Error::is_shutdown`] (or
/// [`TryRunError::Shutdown`]), never with a future that hangs.
///
/// # Blocking
///
/// Only [`shutdown_blocking`](Self::shutdown_blocking) blocks the calling
/// thread on other threads (for as long as the longest job). Every other
/// method returns at once: `run`, `try_run`, `shutdown*`, `metrics` and
/// `Debug` take the pool's lock for a few hundred nanoseconds and never
/// run user code under it; the futures they return wait without blocking.
/// One bounded exception makes short jobs fast: a caller with nothing else
/// in flight whose job goes to a worker spinning for work waits until that
/// worker has taken it (about 0.2 µs, about 1 µs at most), so that a
/// job of a few hundred nanoseconds has finished by the caller's first
/// poll instead of after its thread parked (round trip 0.63 → 0.41 µs).
pub struct ThreadPool {
    shared: Arc<PoolShared>,
}

impl ThreadPool {
    /// A builder with the defaults listed on [`ThreadPoolBuilder`].
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::default()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        ThreadPool {
            shared: PoolShared::new(config),
        }
    }

    /// Starts `n` threads now instead of on first use (`min_threads`, and a
    /// dedicated executor's one thread). Fails only if threads were asked
    /// for and the pool has none after trying: a pool that got some goes
    /// on with those.
    pub(crate) fn prestart(&self, n: usize) -> Result<(), std::io::Error> {
        let mut last_error = None;
        for _ in 0..n {
            if !self.shared.claim_thread(&mut self.shared.lock()) {
                break;
            }
            if let Err(e) = worker::spawn(&self.shared) {
                last_error = Some(e);
            }
        }
        match last_error {
            Some(e) if self.shared.lock().threads() == 0 => Err(e),
            _ => Ok(()),
        }
    }

    /// Runs the blocking closure `f` on the pool and resolves to its result.
    ///
    /// If the queue is full, the job waits for room in a line behind it,
    /// in the order of the calls, and enters the queue as soon as a worker
    /// takes a job: backpressure without a wake-up per waiting caller.
    /// Equivalent to [`run_in_executor`]`(&pool, f)`.
    ///
    /// # Errors
    ///
    /// [`Error::is_panic`] if `f` panicked (the thread survives),
    /// [`Error::is_cancelled`] if `shutdown_now` or a deadline cancelled it
    /// while queued, [`Error::is_shutdown`] if the pool was shut down before
    /// it was queued, [`Error::is_spawn`] if the pool has no thread and
    /// none could be started.
    ///
    /// # Cancellation
    ///
    /// See [the type's docs](ThreadPool#cancellation).
    pub fn run<F, T, OutputIsNotAFuture>(&self, f: F) -> Run<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Blocking<OutputIsNotAFuture> + Send + 'static,
    {
        run_in_executor(self, f)
    }

    /// Queues `f` if there is room right now, without waiting, and returns
    /// a handle to await its result.
    ///
    /// # Errors
    ///
    /// [`TryRunError::Full`] if the queue is full and
    /// [`TryRunError::Shutdown`] if the pool is shut down; both hand `f`
    /// back.
    pub fn try_run<F, T, OutputIsNotAFuture>(&self, f: F) -> Result<JobHandle<T>, TryRunError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Blocking<OutputIsNotAFuture> + Send + 'static,
    {
        self.try_run_with(f, |f: F| f())
    }

    /// The shared "hand it back" path of every non-waiting submission built
    /// on a thread pool: queues `body(value)` if there is room now, and
    /// otherwise returns `value` in the error (`body` is dropped).
    /// [`try_run`](Self::try_run) is `try_run_with(f, |f| f())`; a dedicated
    /// executor lends its resource in `body`; a process pool sends `value`
    /// (the call's input) to a worker in `body`.
    pub(crate) fn try_run_with<V, B, T>(
        &self,
        value: V,
        body: B,
    ) -> Result<JobHandle<T>, TryRunError<V>>
    where
        V: Send + 'static,
        B: FnOnce(V) -> T + Send + 'static,
        T: Send + 'static,
    {
        let shared = &self.shared;
        try_submit(value, body, |job| {
            shared.try_push(job).map_err(|(job, why)| {
                shared.reject();
                (job, why.into())
            })
        })
    }

    /// Stops taking jobs and resolves once every queued and running job has
    /// finished (drain). The pool is closed at the call, not at the first
    /// poll.
    pub fn shutdown(&self) -> Shutdown {
        self.shared.close(false);
        Shutdown {
            shared: self.shared.clone(),
        }
    }

    /// Stops taking jobs, drains the queue, and blocks the calling thread
    /// until every job has finished and every thread of the pool has
    /// exited: the waiting counterpart of dropping the pool, for sync code,
    /// `main` and tests.
    ///
    /// # Blocking
    ///
    /// Blocks for as long as the queued and running jobs take. Never call it
    /// from async code: use [`shutdown`](Self::shutdown)`.await` there. With
    /// the crate's `tokio` feature, a call on a tokio runtime thread (where
    /// `tokio::runtime::Handle::try_current()` succeeds) logs a `tracing`
    /// warning before it blocks; without that feature, or on another
    /// runtime, nothing can tell an async thread from a plain one, and a
    /// [stall detector](crate::monitor) is what reports it.
    ///
    /// Called from one of the pool's own jobs, it cannot wait for itself:
    /// it closes the pool, logs a warning and returns at once.
    pub fn shutdown_blocking(&self) {
        self.shared.close(false);
        if worker::is_worker_of(&self.shared) {
            tracing::warn!(
                pool = %self.shared.config.name,
                "offload: shutdown_blocking called from one of the pool's own jobs; not waiting for itself"
            );
            return;
        }
        warn_if_async("ThreadPool::shutdown_blocking", &self.shared.config.name);
        self.shared.wait_exited();
    }

    /// Stops taking jobs and cancels every queued job; their callers get
    /// [`Error::is_cancelled`]. Running jobs finish. Returns how many jobs
    /// were cancelled. Await [`shutdown`](Self::shutdown) afterwards to wait
    /// for the running ones.
    pub fn shutdown_now(&self) -> usize {
        self.shared.close(true)
    }

    /// Stops taking jobs and drains the queue for at most `timeout`. At the
    /// deadline, jobs still queued are cancelled and jobs still running are
    /// listed in the [`ShutdownReport`] instead of being silently leaked.
    ///
    /// Any `timeout` works: one too long to be a point in time
    /// (`Duration::MAX`) means no deadline. The deadline is kept by a
    /// short-lived helper thread, so this works without any async runtime's
    /// timer.
    pub fn shutdown_timeout(&self, timeout: Duration) -> ShutdownTimeout {
        self.shared.close(false);
        ShutdownTimeout::new(self.shared.clone(), Instant::now().checked_add(timeout))
    }

    /// Whether the pool was shut down (it takes no new jobs).
    pub fn is_shutdown(&self) -> bool {
        self.shared.lock().phase == Phase::Closed
    }

    /// Live gauges, counters since the start, and latency histograms.
    pub fn metrics(&self) -> PoolMetrics {
        let st = self.shared.lock();
        let (threads, idle, queued, running) =
            (st.threads(), st.sleeping, st.queue.len(), st.running());
        drop(st);
        self.shared
            .counters()
            .snapshot(threads, idle, queued, running)
    }

    /// The thread name prefix (also the `pool` label of its exported
    /// metrics).
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// The most threads this pool runs at once.
    pub fn max_threads(&self) -> usize {
        self.shared.config.max_threads
    }

    /// The most jobs that wait in the queue.
    pub fn queue_capacity(&self) -> usize {
        self.shared.config.queue_capacity
    }
}

/// Logs a warning if the calling thread runs an async runtime (tokio,
/// detected with the `tokio` feature) before a call named `what` blocks it.
#[cfg_attr(not(feature = "tokio"), allow(unused_variables))]
pub(crate) fn warn_if_async(what: &str, pool: &str) {
    #[cfg(feature = "tokio")]
    if tokio::runtime::Handle::try_current().is_ok() {
        tracing::warn!(
            pool = %pool,
            "offload: {what} blocks this thread, which runs a tokio runtime: the event loop stalls until the pool is idle; await `shutdown()` instead"
        );
    }
}

impl Clone for ThreadPool {
    /// Another handle to the same pool (same threads, queue and metrics).
    fn clone(&self) -> Self {
        self.shared.handle_cloned();
        ThreadPool {
            shared: self.shared.clone(),
        }
    }
}

impl Executor for ThreadPool {
    /// Queues the job if there is room. A full queue or a shut-down pool
    /// fails the job at once ([`Error::is_rejected`] or
    /// [`Error::is_shutdown`]); use [`ThreadPool::run`] or
    /// [`run_in_executor`] to wait for room instead.
    fn execute(&self, job: Job) {
        if let Err((job, why)) = self.shared.try_push(job) {
            let error = self.shared.refusal_error(why);
            job.abandon(error);
        }
    }

    fn submit(&self, job: Job) -> Submit {
        match self.shared.push_or_line_up(job) {
            Ok(()) => Submit::done(Ok(())),
            Err((job, why)) => {
                let error = self.shared.refusal_error(why);
                drop(job);
                Submit::done(Err(error))
            }
        }
    }
}

impl Drop for ThreadPool {
    /// Dropping the last handle starts an orderly shutdown and returns at
    /// once: queued jobs still run and deliver their results, and the
    /// threads exit when the queue is empty. It never waits, not even for
    /// running jobs; safe from inside one of the pool's own jobs.
    fn drop(&mut self) {
        if self.shared.handle_dropped() {
            self.shared.close(false);
        }
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("ThreadPool")
            .field("name", &self.shared.config.name)
            .field("threads", &st.threads())
            .field("max_threads", &self.shared.config.max_threads)
            .field("idle", &st.sleeping)
            .field("running", &st.running())
            .field("queued", &st.queue.len())
            .field("queue_capacity", &self.shared.config.queue_capacity)
            .field("shut_down", &(st.phase == Phase::Closed))
            .finish()
    }
}
