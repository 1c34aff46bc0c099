//! Find out when something stalls the event loop, where, and why.
//!
//! An async runtime runs many tasks on a few threads. A task that computes
//! for 200 ms, or calls a blocking function (a sync database driver,
//! `std::fs`, `std::thread::sleep`), holds its thread for that long: every
//! other task on it waits, and nothing says so. The classic diagnosis is a
//! ticker printing the time every second, so a person can spot a gap.
//! This module turns it into tooling you can leave on in production:
//!
//! - [`LagMonitor`]: the ticker done right. It records how late each timer
//!   wake-up is into a histogram (p50, p99, max, count over a threshold),
//!   net of the timer's own floor.
//! - [`StallDetector`]: a watchdog OS thread that notices a runtime thread
//!   that has not returned to its scheduler for longer than a threshold
//!   (default 100 ms) and reports it *while it is still stalled*: which
//!   thread and task ([`instrument`], `spawn_named`), where (a backtrace of
//!   the stalled thread, Linux) and why: burning CPU (move it to a pool or
//!   yield with a time budget), sleeping in a syscall (blocking I/O: move
//!   it to a thread pool), or starved (runnable, but the machine or the
//!   container's CPU quota kept it off the CPU: not the task's fault, and
//!   said so). Reports repeat at doubling intervals while the stall lasts,
//!   and a final one gives its total length. They go to the log, a
//!   callback, and any number of [`StallReports`] streams.
//!
//! Code that does the right thing stays quiet: `spawn_blocking`,
//! `offload::run` and an idle runtime are never reported, and a thread
//! inside tokio's `block_in_place` is not taken for a stalled worker (the
//! runtime handed its work to another thread, which is watched instead).
//!
//! The hot path is atomics only: a thread-local read and a relaxed store
//! when a worker parks, unparks or passes a heartbeat. The design, and its
//! limits, are in `src/monitor/README.md`.
//!
//! # Example (tokio, feature `tokio`)
//!
//! One call builds and watches a runtime, of either flavour:
//!
//! ```
//! # #[cfg(feature = "tokio")] {
//! use offload::monitor::{LagMonitor, StallDetector};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let stalls = StallDetector::builder()
//!     .threshold(Duration::from_millis(100))
//!     .on_report(|report| eprintln!("{report}"))
//!     .build()?;
//! let rt = stalls.watch(tokio::runtime::Builder::new_multi_thread().worker_threads(2))?;
//! let lag = LagMonitor::builder().interval(Duration::from_millis(10)).start(rt.handle())?;
//!
//! rt.block_on(async {
//!     // A well-behaved loop: no report.
//!     tokio::time::sleep(Duration::from_millis(50)).await;
//! });
//! println!("{}", lag.snapshot());
//! # Ok(()) }
//! # main().unwrap();
//! # }
//! ```
//!
//! Step by step, for a runtime built elsewhere: [`StallDetector::hooks`],
//! `WorkerHooks::install` on the builder, `WorkerHooks::attach` on the
//! built runtime, and on a current-thread runtime [`StallDetector::enter`]
//! on the thread that calls `block_on`. A detector wired half-way says so
//! in a `tracing` warning.
//!
//! Without the `tokio` feature everything works with plain closures: call
//! the [`WorkerHooks`] methods from your runtime's thread hooks, and spawn
//! [`StallDetector::heartbeats`] (one set per runtime, for its number of
//! worker threads) and [`LagMonitor::ticker`] with your runtime's sleep
//! function.

mod lag;
mod stall;

pub use lag::{LagMonitor, LagMonitorBuilder, LagSnapshot};
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use stall::WatchedRuntime;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use stall::spawn_named;
pub use stall::{
    Frame, Instrumented, StallBacktrace, StallCause, StallDetector, StallDetectorBuilder,
    StallKind, StallPhase, StallReport, StallReports, StallReportsIter, TaskLabel, WatchGuard,
    WorkerHooks, beat, instrument,
};
