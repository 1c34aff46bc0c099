//! Worker processes for CPU-bound work: registered, typed tasks, crash
//! isolation, hard timeouts. The counterpart of Python's
//! `ProcessPoolExecutor`, minus its worst traits.
//!
//! In Rust, threads already run CPU work in parallel (there is no GIL), so
//! reach for processes when you need what only a process gives: **isolation**
//! (a segfault or `abort` in native code, a leak, a runaway loop you must be
//! able to kill) and **hard timeouts** (a thread cannot be stopped; a process
//! can).
//!
//! - Define work as a [`Task`]: a name, serde input and output, a `run`.
//! - Register tasks in a [`Registry`]; make
//!   [`run_worker_if_child`] the first line of `main`, so that the current
//!   executable, re-executed, serves them.
//! - Call them through a [`ProcessPool`]: `pool.call::<Sum>(input).await`.
//!
//! The design (driver threads, handshake, framing, who decides what a
//! cancellation or a timeout applies to, no orphans) is described in
//! `README.md` beside this module.
//!
//! # Layout
//!
//! - the call a user makes: `pool.rs` ([`ProcessPool`]), `builder.rs`,
//!   `call.rs` ([`Call`], [`CallOptions`], [`OnDrop`]);
//! - what a task is: `task.rs` ([`Task`], [`Registry`]), `codec.rs`;
//! - the parent's side of the workers: `supervisor.rs` (lanes, starts,
//!   retries), `child/` (one worker process: spawn, handshake, output,
//!   reaping, reading replies);
//! - the worker's side: `worker/` (serving calls, the control channel,
//!   which call is running);
//! - between them: `protocol.rs` (messages, hello), `wire.rs` (frames).

mod builder;
mod call;
mod caller_writes;
mod child;
mod codec;
#[cfg(test)]
mod fuzz;
mod pool;
mod protocol;
mod supervisor;
mod task;
mod wire;
mod worker;

pub use builder::ProcessPoolBuilder;
pub use call::{Call, CallOptions, OnDrop};
pub use child::WorkerOutput;
pub use pool::{ProcMetrics, ProcessPool, Ready, Shutdown};
pub use task::{Registry, Task, fingerprint};
pub use worker::run_worker_if_child;

/// Turns a plain function into a [`Task`] (feature `macros`).
///
/// `#[task] fn word_count(text: String) -> usize` keeps the function and
/// adds `pub struct WordCount` (the name in CamelCase) implementing `Task`
/// with `NAME = "word_count"`, `Input = String`, `Output = usize`. Several
/// arguments make a tuple input; `#[task(name = "...", type = Ident)]`
/// overrides the names.
///
/// ```
/// use offload::proc::{Registry, Task, task};
///
/// #[task]
/// pub fn word_count(text: String) -> usize {
///     text.split_whitespace().count()
/// }
///
/// #[task(name = "scale.v2")]
/// pub fn scale(values: Vec<f64>, factor: f64) -> Vec<f64> {
///     values.into_iter().map(|v| v * factor).collect()
/// }
///
/// let registry = Registry::new().with::<WordCount>().with::<Scale>();
/// assert!(registry.contains("word_count") && registry.contains("scale.v2"));
/// assert_eq!(<Scale as Task>::run((vec![1.0, 2.0], 3.0)), vec![3.0, 6.0]);
/// ```
///
/// A task runs on a worker's thread, so an `async fn` is refused:
///
/// ```compile_fail
/// #[offload::proc::task]
/// async fn fetch(url: String) -> String { url }
/// ```
#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub use offload_macros::task;
