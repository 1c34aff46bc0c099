//! [`ThreadPool`]: bounded threads, a bounded queue with backpressure,
//! cancellation of queued work, three shutdown modes, metrics.
//!
//! The design note is `README.md` in this folder.

mod builder;
mod metrics;
mod shared;
mod shutdown;
mod submit;
mod worker;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use builder::ThreadPoolBuilder;
pub(crate) use builder::default_thread_count;
pub use metrics::PoolMetrics;
pub use shutdown::{RunningJob, Shutdown, ShutdownReport, ShutdownTimeout};

use builder::Config;
use metrics::Counters;
use shared::{Phase, PushError, Shared};
use submit::SlotWait;

use crate::error::{Error, TryRunError};
use crate::executor::{Blocking, Executor, Run, Submit, run_in_executor};
use crate::job::{Job, JobHandle, Reclaimable};

/// A pool of threads for blocking work, awaited from async code.
///
/// Up to [`threads`](ThreadPoolBuilder::threads) threads run jobs taken from
/// a queue of at most [`queue_capacity`](ThreadPoolBuilder::queue_capacity)
/// jobs. Threads start when work arrives and exit after
/// [`keep_alive`](ThreadPoolBuilder::keep_alive) without any. Both bounds are
/// true at every moment, even for jobs whose caller gave up: a thread is
/// given back only when its job really ends.
///
/// The futures it returns need no particular runtime: they complete under
/// any executor alike (tested: tokio's two runtimes and
/// `futures::executor::block_on`).
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// let pool = offload::ThreadPool::builder().name("io").threads(4).build()?;
///
/// // Waits for a queue slot if the queue is full (backpressure).
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
/// job is queued removes the job: it never runs, and its queue slot is free
/// at once. Dropping it after the job started detaches the job: it runs to
/// the end on its thread, which stays counted until then, and its result is
/// dropped.
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
/// - Dropping the pool drains it and blocks until its threads exit, like
///   leaving Python's `with ThreadPoolExecutor() as pool:` block. In async
///   code, prefer `shutdown().await` before the drop: the drop then returns
///   at once.
///
/// After any of these, submissions fail with [`Error::is_shutdown`] (or
/// [`TryRunError::Shutdown`]), never with a future that hangs.
pub struct ThreadPool {
    shared: Arc<Shared>,
}

impl ThreadPool {
    /// A builder with the defaults listed on [`ThreadPoolBuilder`].
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::default()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        ThreadPool {
            shared: Shared::new(config),
        }
    }

    /// Starts `n` threads now instead of on first use (used where a thread
    /// must exist before any job, like a dedicated executor's).
    pub(crate) fn prestart(&self, n: usize) {
        for _ in 0..n {
            let mut st = self.shared.lock();
            if st.threads >= self.shared.config.max_threads {
                return;
            }
            st.threads += 1;
            drop(st);
            worker::spawn(&self.shared);
        }
    }

    /// Runs the blocking closure `f` on the pool and resolves to its result.
    ///
    /// Waits for a queue slot first if the queue is full. Equivalent to
    /// [`run_in_executor`]`(&pool, f)`.
    ///
    /// # Errors
    ///
    /// [`Error::is_panic`] if `f` panicked (the thread survives),
    /// [`Error::is_cancelled`] if `shutdown_now` or a deadline cancelled it
    /// while queued, [`Error::is_shutdown`] if the pool was shut down before
    /// it was queued.
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
        let (cell, job, handle) = Reclaimable::new(f);
        match self.shared.try_push(job) {
            Ok(()) => Ok(handle),
            Err((job, why)) => {
                Counters::add(&self.shared.counters.rejected, 1);
                let f = cell
                    .reclaim(job)
                    .expect("a job that was never queued still holds its closure");
                drop(handle);
                Err(match why {
                    PushError::Full => TryRunError::Full(f),
                    PushError::Shutdown => TryRunError::Shutdown(f),
                })
            }
        }
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
    /// The deadline is kept by a short-lived helper thread, so this works
    /// without any async runtime's timer.
    pub fn shutdown_timeout(&self, timeout: Duration) -> ShutdownTimeout {
        self.shared.close(false);
        ShutdownTimeout::new(self.shared.clone(), Instant::now() + timeout)
    }

    /// Whether the pool was shut down (it takes no new jobs).
    pub fn is_shutdown(&self) -> bool {
        self.shared.lock().phase == Phase::Closed
    }

    /// Live gauges, counters since the start, and latency histograms.
    pub fn metrics(&self) -> PoolMetrics {
        let st = self.shared.lock();
        let (threads, idle, queued, running) =
            (st.threads, st.sleeping, st.queue.len(), st.running);
        drop(st);
        self.shared
            .counters
            .snapshot(threads, idle, queued, running)
    }

    /// The thread name prefix.
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

impl Executor for ThreadPool {
    /// Queues the job if there is room. A full queue or a shut-down pool
    /// fails the job at once ([`Error::is_rejected`] or
    /// [`Error::is_shutdown`]); use [`ThreadPool::run`] or
    /// [`run_in_executor`] to wait for room instead.
    fn execute(&self, job: Job) {
        if let Err((job, why)) = self.shared.try_push(job) {
            Counters::add(&self.shared.counters.rejected, 1);
            job.abandon(match why {
                PushError::Full => Error::rejected(),
                PushError::Shutdown => Error::shutdown(),
            });
        }
    }

    fn submit(&self, job: Job) -> Submit {
        if self.shared.looks_full() {
            // Most likely full: skip a doomed push and wait for a slot (the
            // wait's first poll pushes if there is room after all).
            self.shared.adopt(&job);
            return Submit::waiting(SlotWait {
                shared: self.shared.clone(),
                job: Some(job),
                waiter: None,
            });
        }
        match self.shared.try_push(job) {
            Ok(()) => Submit::done(Ok(())),
            Err((_job, PushError::Shutdown)) => {
                Counters::add(&self.shared.counters.rejected, 1);
                Submit::done(Err(Error::shutdown()))
            }
            Err((job, PushError::Full)) => Submit::waiting(SlotWait {
                shared: self.shared.clone(),
                job: Some(job),
                waiter: None,
            }),
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.close(false);
        if worker::is_worker_of(&self.shared) {
            // Dropped from inside one of its own jobs: waiting for every
            // thread to exit would wait for this one.
            return;
        }
        self.shared.wait_exited(None);
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("ThreadPool")
            .field("name", &self.shared.config.name)
            .field("threads", &st.threads)
            .field("max_threads", &self.shared.config.max_threads)
            .field("idle", &st.sleeping)
            .field("running", &st.running)
            .field("queued", &st.queue.len())
            .field("queue_capacity", &self.shared.config.queue_capacity)
            .field("shut_down", &(st.phase == Phase::Closed))
            .finish()
    }
}

impl ThreadPoolBuilder {
    /// Builds a pool for a dedicated executor: one thread that never idles
    /// out.
    pub(crate) fn dedicated(
        name: String,
        queue_capacity: usize,
        on_start: builder::StartHook,
    ) -> Self {
        let mut b = ThreadPool::builder()
            .name(name)
            .threads(1)
            .queue_capacity(queue_capacity)
            .keep_alive(None);
        b.config_mut().on_start = Some(on_start);
        b
    }
}
