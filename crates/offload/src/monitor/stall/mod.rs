//! The stall detector: watchdog, reports, diagnosis, stack capture.

mod capture;
mod classify;
mod detector;
mod report;
mod task;
mod thread;
#[cfg(feature = "tokio")]
mod tokio_rt;

pub use classify::{StallCause, StallKind};
pub use detector::{StallDetector, StallDetectorBuilder, WatchGuard, WorkerHooks};
pub use report::{Frame, StallBacktrace, StallPhase, StallReport};
pub use task::{Instrumented, TaskLabel, instrument};
pub use thread::beat;
#[cfg(feature = "tokio")]
pub use tokio_rt::spawn_named;
