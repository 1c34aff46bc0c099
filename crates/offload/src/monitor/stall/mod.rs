//! The stall detector: watchdog, episodes, roles, reports, diagnosis,
//! stack capture.

mod capture;
mod classify;
mod detector;
mod emit;
mod episode;
mod heartbeat;
mod hooks;
mod limit;
mod nudge;
mod report;
mod reports;
mod roles;
mod sched;
mod setup;
mod symbols;
mod task;
mod thread;
#[cfg(feature = "tokio")]
mod tokio_rt;
mod watchdog;

pub use classify::{StallCause, StallKind};
pub use detector::{StallDetector, StallDetectorBuilder, WatchGuard};
pub use hooks::WorkerHooks;
pub use report::{Frame, StallBacktrace, StallPhase, StallReport};
pub use reports::{Iter as StallReportsIter, StallReports};
pub use task::{Instrumented, TaskLabel, instrument};
pub use thread::beat;
#[cfg(feature = "tokio")]
pub use tokio_rt::{WatchedRuntime, spawn_named};
