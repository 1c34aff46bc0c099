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
//! The design (driver threads, handshake, framing, cancellation, no orphans)
//! is described in `README.md` beside this module.

mod child;
#[cfg(test)]
mod fuzz;
mod pool;
mod protocol;
mod task;
mod wire;
mod worker;

pub use pool::{Call, CallOptions, OnDrop, ProcMetrics, ProcessPool, ProcessPoolBuilder};
pub use task::{Registry, Task};
pub use worker::run_worker_if_child;
