//! Run blocking I/O and CPU-heavy work from async Rust without stalling the
//! event loop.
//!
//! # The problem
//!
//! An async runtime runs many tasks on a few threads. A task that blocks a
//! thread (a sync database driver, a file or image library, an SDK with no
//! async API, a long parse of a multi-megabyte document) stops every other
//! task on that thread: timers fire late, requests queue up, health checks
//! fail. Python's asyncio has the same problem, and
//! `loop.run_in_executor(executor, f)` as its answer; this crate is that
//! answer for Rust, with the sharp edges filed off:
//!
//! - [`run`]: run a blocking closure on the lazily created default pool
//!   (`run_in_executor(None, f)`), sized for blocking I/O.
//! - [`compute`]: run CPU-bound work on a lazily created pool of one
//!   thread per core, at a [`Priority`] that lets the loop win most of
//!   each contended core.
//! - [`ThreadPool`]: a pool you size and name, with a bounded queue
//!   (backpressure), cancellation of queued work, panics delivered to the
//!   caller, three shutdown modes, and metrics.
//! - [`Dedicated`]: one thread that owns a non-thread-safe resource.
//! - [`Executor`] + [`run_in_executor`]: bring your own executor by
//!   implementing one method.
//! - [`proc`]: worker processes for isolation and hard timeouts.
//! - [`remote`]: building blocks for executors on other machines.
//! - [`coop`]: yield to the scheduler from CPU-bound loops instead.
//! - [`monitor`]: find out when, where and why the loop stalls.
//!
//! The futures need no particular runtime (no reactor, no timer: a job's
//! thread completes it through a waker), so any executor drives them; the
//! tests run on tokio's multi-thread and current-thread runtimes and on
//! `futures::executor::block_on`.
//!
//! # Examples
//!
//! ```
//! # futures::executor::block_on(async {
//! // The default pool, like `loop.run_in_executor(None, f)`:
//! let text = offload::run(|| std::fs::read_to_string("/etc/hosts")).await?;
//!
//! // A pool of your own:
//! let pool = offload::ThreadPool::builder().name("img").threads(4).build()?;
//! let sum: u64 = pool.run(|| (0..1_000_000u64).sum()).await?;
//! assert_eq!(sum, 499_999_500_000);
//!
//! // Panics come back as errors; the pool keeps its threads.
//! let err = pool.run(|| -> u8 { panic!("bad pixel") }).await.unwrap_err();
//! assert!(err.is_panic());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # A closure that returns a future does not compile
//!
//! Python lets you pass an `async def` to `run_in_executor`: the executor
//! builds a coroutine and never runs it. Here a closure that returns a
//! future does not compile (see [`Blocking`], which also shows the one
//! explicit way to return a future on purpose, [`Unpolled`]):
//!
//! ```compile_fail
//! # futures::executor::block_on(async {
//! let pool = offload::ThreadPool::builder().build().unwrap();
//! pool.run(|| async { 42 }).await; // error: cannot infer `OutputIsNotAFuture`
//! # });
//! ```
//!
//! # Cancellation
//!
//! Dropping a future returned by this crate before its job starts means the
//! job never runs. After it starts, a thread cannot be stopped: the job
//! runs to completion, detached, and keeps its thread until then.
//!
//! # Features
//!
//! - `tokio`: one-call stall detection for a tokio runtime
//!   ([`StallDetector::watch`](monitor::StallDetector)), the lag ticker and
//!   heartbeats spawned on a runtime, tokio's worker metrics as evidence.
//! - `macros`: `#[offload::proc::task]` turns a plain `fn` into a task.
//! - `metrics`: every pool (`offload_pool_*`, `offload_proc_*`, label
//!   `pool`), the loop monitor (`offload_loop_*`) and the starvation guard
//!   of [`Priority::Background`] (`offload_background_fallbacks_total`,
//!   `offload_background_fallen_back`) report through the
//!   [`metrics`](https://docs.rs/metrics) facade. A pool registers its
//!   handles when it is built (the default pools on first use), so install
//!   the recorder (a Prometheus exporter, say) before that.
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod dedicated;
mod default_pool;
mod error;
mod executor;
mod histogram;
mod job;
mod lone_caller;
#[cfg(feature = "metrics")]
mod metrics_export;
mod pool;
mod priority;
mod sync;

pub mod coop;
pub mod monitor;
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
pub mod proc;
pub mod remote;

pub use dedicated::{Dedicated, DedicatedBuilder, DedicatedReady};
pub use default_pool::{
    COMPUTE_THREADS_ENV, THREADS_ENV, compute, compute_pool, default_pool, run, set_compute_pool,
    set_default_pool,
};
pub use error::{BuildError, Error, TryRunError};
pub use executor::{Blocking, Executor, Run, Submit, Unpolled, run_in_executor};
pub use histogram::LatencySummary;
pub use job::{Job, JobHandle};
pub use pool::{
    PoolMetrics, RunningJob, Shutdown, ShutdownReport, ShutdownTimeout, ThreadPool,
    ThreadPoolBuilder,
};
pub use priority::Priority;
