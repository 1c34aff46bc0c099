//! The default pools, created on first use: [`run`] for blocking I/O (the
//! counterpart of Python's `loop.run_in_executor(None, f)`) and
//! [`compute`] for CPU-bound work.

use std::sync::OnceLock;

use crate::error::BuildError;
use crate::executor::{Blocking, Run, run_in_executor};
use crate::pool::{ThreadPool, ThreadPoolBuilder, default_thread_count};
use crate::priority::Priority;

/// Environment variable that sets the default pool's thread count.
pub const THREADS_ENV: &str = "OFFLOAD_THREADS";

/// Environment variable that sets the compute pool's thread count.
pub const COMPUTE_THREADS_ENV: &str = "OFFLOAD_COMPUTE_THREADS";

static DEFAULT: OnceLock<ThreadPool> = OnceLock::new();
static COMPUTE: OnceLock<ThreadPool> = OnceLock::new();

/// Runs the blocking closure `f` on the default pool: the counterpart of
/// Python's `loop.run_in_executor(None, f)`.
///
/// The default pool is created on first use, named `offload-run` (threads
/// `offload-run-0`, …), with `min(32, cpus + 4)` threads like Python's
/// default executor, a queue of 64 jobs per thread, and threads that exit
/// after 10 s idle. Change its size with the `OFFLOAD_THREADS` environment
/// variable, or replace it entirely with [`set_default_pool`] before first
/// use. Its threads run at [`Priority::Normal`]: they mostly wait, and a
/// finished read should get its core back at once.
///
/// For CPU-bound work use [`compute`]: more runnable threads than cores
/// make the loop wait its turn for a core.
///
/// # Errors
///
/// As [`ThreadPool::run`]: [`Error::is_panic`](crate::Error::is_panic) if
/// `f` panicked. The default pool is never shut down.
///
/// # Blocking
///
/// Never blocks: the first call creates the pool (no thread starts until a
/// job arrives), every call queues the job and returns a future.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// let hosts = offload::run(|| std::fs::read_to_string("/etc/hosts")).await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub fn run<F, T, OutputIsNotAFuture>(f: F) -> Run<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Blocking<OutputIsNotAFuture> + Send + 'static,
{
    run_in_executor(default_pool(), f)
}

/// The default pool, created on first use (see [`run`]). Never blocks.
///
/// It lives as long as the process. Shut it down only when the program is
/// leaving (a service draining on SIGTERM: `default_pool().shutdown_timeout(d).await`):
/// every later [`run`] fails with [`Error::is_shutdown`](crate::Error::is_shutdown).
pub fn default_pool() -> &'static ThreadPool {
    DEFAULT.get_or_init(|| {
        default_builder()
            .build()
            .expect("the default pool's configuration is valid")
    })
}

/// Replaces the default pool's configuration. Call it early, before
/// anything uses [`run`] or [`default_pool`]. Never blocks (it starts the
/// builder's `min_threads`, if any, and returns).
///
/// # Errors
///
/// [`BuildError::DefaultPoolExists`] if the default pool already exists,
/// or the builder's own error if its settings are invalid.
///
/// # Examples
///
/// ```
/// offload::set_default_pool(offload::ThreadPool::builder().name("blk").threads(16))?;
/// # Ok::<(), offload::BuildError>(())
/// ```
pub fn set_default_pool(builder: ThreadPoolBuilder) -> Result<(), BuildError> {
    if DEFAULT.get().is_some() {
        return Err(BuildError::DefaultPoolExists);
    }
    let pool = builder.build()?;
    // A concurrent first use may win the race: then this pool is dropped
    // (it has no threads yet) and the caller hears about it.
    DEFAULT.set(pool).map_err(|_| BuildError::DefaultPoolExists)
}

/// Runs the CPU-bound closure `f` on the compute pool: one thread per
/// core, at [`Priority::Background`], so that however much work is queued
/// the event loop's threads take a contended core at once, while idle
/// cores still run the work at full speed.
///
/// The compute pool is created on first use, named `offload-cpu`, with as
/// many threads as [`std::thread::available_parallelism`] (change it with
/// the `OFFLOAD_COMPUTE_THREADS` environment variable, or replace the pool
/// with [`set_compute_pool`] before first use), a queue of 64 jobs per
/// thread, and threads that exit after 10 s idle.
///
/// Which to use: [`compute`] for work that keeps a core busy (parsing,
/// hashing, compression, image work); [`run`] for work that waits (files,
/// sync database drivers, SDKs); a [`proc::ProcessPool`](crate::proc) for
/// work that must be isolated or killable.
///
/// # Errors
///
/// As [`ThreadPool::run`]: [`Error::is_panic`](crate::Error::is_panic) if
/// `f` panicked. The compute pool is never shut down.
///
/// # Blocking
///
/// Never blocks, as [`run`].
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// let digest: u64 = offload::compute(|| (0..1_000_000u64).fold(0u64, |h, x| h.rotate_left(5) ^ x)).await?;
/// # let _ = digest;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub fn compute<F, T, OutputIsNotAFuture>(f: F) -> Run<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Blocking<OutputIsNotAFuture> + Send + 'static,
{
    run_in_executor(compute_pool(), f)
}

/// The compute pool, created on first use (see [`compute`]). Never blocks.
///
/// It lives as long as the process. Shut it down only when the program is
/// leaving, as for [`default_pool`]: every later [`compute`] fails with
/// [`Error::is_shutdown`](crate::Error::is_shutdown).
pub fn compute_pool() -> &'static ThreadPool {
    COMPUTE.get_or_init(|| {
        compute_builder()
            .build()
            .expect("the compute pool's configuration is valid")
    })
}

/// Replaces the compute pool's configuration, as [`set_default_pool`]
/// does for the default pool. Call it before anything uses [`compute`].
///
/// # Errors
///
/// [`BuildError::DefaultPoolExists`] if the compute pool already exists,
/// or the builder's own error if its settings are invalid.
pub fn set_compute_pool(builder: ThreadPoolBuilder) -> Result<(), BuildError> {
    if COMPUTE.get().is_some() {
        return Err(BuildError::DefaultPoolExists);
    }
    let pool = builder.build()?;
    COMPUTE.set(pool).map_err(|_| BuildError::DefaultPoolExists)
}

/// A thread count from `var`, or `default` (with a warning if `var` is set
/// to something that is not a positive integer).
fn threads_from_env(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                tracing::warn!(value = %v, "offload: {var} is not a positive integer; using the default");
                default
            }
        },
        Err(_) => default,
    }
}

fn default_builder() -> ThreadPoolBuilder {
    let threads = threads_from_env(THREADS_ENV, default_thread_count());
    ThreadPool::builder()
        .name("offload-run")
        .threads(threads)
        .queue_capacity(threads.saturating_mul(64))
        .priority(Priority::Normal)
}

fn compute_builder() -> ThreadPoolBuilder {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let threads = threads_from_env(COMPUTE_THREADS_ENV, cores);
    ThreadPool::builder()
        .name("offload-cpu")
        .threads(threads)
        .queue_capacity(threads.saturating_mul(64))
        .priority(Priority::Background)
}
