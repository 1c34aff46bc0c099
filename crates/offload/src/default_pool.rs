//! The default pool: `offload::run(f)`, the counterpart of Python's
//! `loop.run_in_executor(None, f)`.

use std::sync::OnceLock;

use crate::error::BuildError;
use crate::executor::{Blocking, Run, run_in_executor};
use crate::pool::{ThreadPool, ThreadPoolBuilder, default_thread_count};

/// Environment variable that sets the default pool's thread count.
pub const THREADS_ENV: &str = "OFFLOAD_THREADS";

static DEFAULT: OnceLock<ThreadPool> = OnceLock::new();

/// Runs the blocking closure `f` on the default pool: the counterpart of
/// Python's `loop.run_in_executor(None, f)`.
///
/// The default pool is created on first use, named `offload-run` (threads
/// `offload-run-0`, …), with `min(32, cpus + 4)` threads like Python's
/// default executor, a queue of 64 jobs per thread, and threads that exit
/// after 10 s idle. Change its size with the `OFFLOAD_THREADS` environment
/// variable, or replace it entirely with [`set_default_pool`] before first
/// use.
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
/// It lives as long as the process: do not shut it down (every later
/// [`run`] would fail with [`Error::is_shutdown`](crate::Error::is_shutdown)).
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

fn default_builder() -> ThreadPoolBuilder {
    let threads = match std::env::var(THREADS_ENV) {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                tracing::warn!(value = %v, "offload: {THREADS_ENV} is not a positive integer; using the default");
                default_thread_count()
            }
        },
        Err(_) => default_thread_count(),
    };
    ThreadPool::builder()
        .name("offload-run")
        .threads(threads)
        .queue_capacity(threads.saturating_mul(64))
}
