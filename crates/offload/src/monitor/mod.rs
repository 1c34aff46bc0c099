//! Find out when something stalls the event loop, where, and why.
//!
//! An async runtime runs many tasks on a few threads. A task that computes
//! for 200 ms, or calls a blocking function (a sync database driver,
//! `std::fs`, `std::thread::sleep`), holds its thread for that long: every
//! other task on it waits, and nothing says so. The seed's answer is a
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
//!   yield with a time budget) or sleeping in a syscall (blocking I/O: move
//!   it to a thread pool). Reports repeat at doubling intervals while the
//!   stall lasts, and a final one gives its total length.
//!
//! The hot path is atomics only: a thread-local read and a relaxed store
//! when a worker parks, unparks or passes a heartbeat. The design, and its
//! limits, are in `src/monitor/README.md`.
//!
//! # Example (tokio, feature `tokio`)
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
//! let hooks = stalls.hooks();
//! let rt = hooks
//!     .install(&mut tokio::runtime::Builder::new_multi_thread())
//!     .worker_threads(2)
//!     .enable_all()
//!     .build()?;
//! hooks.attach(rt.handle()); // heartbeats + tokio's worker counters
//! let lag = LagMonitor::builder().interval(Duration::from_millis(10)).start(rt.handle());
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
//! On a current-thread runtime, the thread calling `block_on` is the
//! worker: watch it with [`StallDetector::enter`] for as long as it runs
//! the runtime.
//!
//! Without the `tokio` feature everything works with plain closures: call
//! the [`WorkerHooks`] methods from your runtime's thread hooks, and spawn
//! [`StallDetector::heartbeat`] and [`LagMonitor::ticker`] with your
//! runtime's sleep function.

mod lag;
mod stall;

pub use lag::{LagMonitor, LagMonitorBuilder, LagSnapshot};
#[cfg(feature = "tokio")]
pub use stall::WatchedRuntime;
#[cfg(feature = "tokio")]
pub use stall::spawn_named;
pub use stall::{
    Frame, Instrumented, StallBacktrace, StallCause, StallDetector, StallDetectorBuilder,
    StallKind, StallPhase, StallReport, StallReports, StallReportsIter, TaskLabel, WatchGuard,
    WorkerHooks, beat, instrument,
};
