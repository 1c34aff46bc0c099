//! What a stall report says: which thread and task, for how long, where
//! (backtrace) and why (CPU, a syscall, or a starved machine), with the fix
//! that fits.

use super::classify::{StallCause, StallKind};
use super::task::TaskLabel;
use std::fmt;
use std::time::Duration;

/// Where a report falls in the life of a stall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StallPhase {
    /// The first report: the thread has just passed the threshold.
    Started,
    /// A repeat while the stall lasts (the `n`-th report, `n >= 2`), sent at
    /// growing intervals.
    Ongoing(u32),
    /// The stall is over: the thread made progress, parked, exited, or
    /// turned out not to hold a worker any more (it gave it away with
    /// `block_in_place`); [`StallReport::duration`] is its total length.
    Ended,
}

/// One frame of a stalled thread's stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub(crate) ip: usize,
    pub(crate) function: Option<String>,
    pub(crate) file: Option<String>,
    pub(crate) line: Option<u32>,
}

impl Frame {
    /// The instruction pointer.
    pub fn ip(&self) -> usize {
        self.ip
    }

    /// The demangled function name, when symbols are available.
    pub fn function(&self) -> Option<&str> {
        self.function.as_deref()
    }

    /// The source file, when debug info is available.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// The source line, when debug info is available.
    pub fn line(&self) -> Option<u32> {
        self.line
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.function {
            Some(name) => f.write_str(name)?,
            None => write!(f, "{:#x}", self.ip)?,
        }
        if let (Some(file), Some(line)) = (&self.file, self.line) {
            write!(f, " at {file}:{line}")?;
        }
        Ok(())
    }
}

/// The stack of the stalled thread, captured while it was stalled, or why
/// there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StallBacktrace {
    pub(crate) frames: Vec<Frame>,
    pub(crate) unavailable: Option<String>,
}

impl StallBacktrace {
    pub(crate) fn unavailable(why: impl Into<String>) -> Self {
        StallBacktrace {
            frames: Vec::new(),
            unavailable: Some(why.into()),
        }
    }

    /// The frames, innermost first (empty when unavailable).
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Why no backtrace was captured (non-Linux, capture disabled, thread
    /// in uninterruptible sleep, ...), or `None` when there is one.
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// Whether some frame's function name contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.frames
            .iter()
            .any(|f| f.function.as_deref().is_some_and(|n| n.contains(needle)))
    }
}

/// Frames shown by `Display`; the full list stays in [`StallBacktrace::frames`].
const SHOWN_FRAMES: usize = 24;

impl fmt::Display for StallBacktrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = &self.unavailable {
            return write!(f, "  (no backtrace: {why})");
        }
        for (i, frame) in self.frames.iter().take(SHOWN_FRAMES).enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  {i:>2}: {frame}")?;
        }
        if self.frames.len() > SHOWN_FRAMES {
            write!(f, "\n  ... {} more", self.frames.len() - SHOWN_FRAMES)?;
        }
        Ok(())
    }
}

/// A report about a stalled thread: produced while the stall lasts, and
/// once more when it ends.
///
/// `Display` renders it as a multi-line message (what the default
/// `tracing::warn!` prints).
#[derive(Debug, Clone)]
pub struct StallReport {
    pub(crate) phase: StallPhase,
    pub(crate) thread_name: String,
    pub(crate) tid: Option<i32>,
    pub(crate) task: Option<TaskLabel>,
    pub(crate) duration: Duration,
    pub(crate) threshold: Duration,
    pub(crate) cause: StallCause,
    pub(crate) backtrace: StallBacktrace,
    pub(crate) suppressed: u64,
}

impl StallReport {
    /// First, repeat or final report.
    pub fn phase(&self) -> StallPhase {
        self.phase
    }

    /// The stalled thread's name (or its `ThreadId` when unnamed).
    pub fn thread_name(&self) -> &str {
        &self.thread_name
    }

    /// The kernel's id of the stalled thread (Linux).
    pub fn tid(&self) -> Option<i32> {
        self.tid
    }

    /// The instrumented task being polled, if the stall happened inside one
    /// (see [`instrument`](crate::monitor::instrument)).
    pub fn task(&self) -> Option<&TaskLabel> {
        self.task.as_ref()
    }

    /// How long the thread has been stalled so far, or in total for
    /// [`StallPhase::Ended`]. Accurate to the watchdog's tick (a twentieth
    /// of the threshold).
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The detector's threshold.
    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// Why: CPU-bound, blocking or starved, with the scheduler's figures.
    /// For [`StallPhase::Ended`], the diagnosis of the last report.
    pub fn cause(&self) -> &StallCause {
        &self.cause
    }

    /// Where: the stalled thread's stack, captured during the stall. For a
    /// starved thread it is context (where it waited for a CPU), not the
    /// cause. For [`StallPhase::Ended`], the stack of the last report.
    pub fn backtrace(&self) -> &StallBacktrace {
        &self.backtrace
    }

    /// The fix that fits the cause.
    pub fn advice(&self) -> &'static str {
        self.cause.advice()
    }

    /// How many other stalls went unreported since the previous report
    /// because of the rate limit.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

impl fmt::Display for StallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tid = self.tid.map(|t| format!(" (tid {t})")).unwrap_or_default();
        let (name, length, threshold) = (&self.thread_name, self.duration, self.threshold);
        match (self.phase, self.cause.kind()) {
            (StallPhase::Ended, StallKind::BlockingInPlace) => write!(
                f,
                "blocking in place ended: thread '{name}'{tid} was inside block_in_place \
                 for {length:?}"
            )?,
            (StallPhase::Ended, StallKind::Starved) => write!(
                f,
                "event loop delay ended: thread '{name}'{tid} went {length:?} without \
                 returning to the scheduler, starved of CPU (threshold {threshold:?})"
            )?,
            (StallPhase::Ended, _) => write!(
                f,
                "event loop stall ended: thread '{name}'{tid} was stalled for {length:?} \
                 (threshold {threshold:?})"
            )?,
            (_, StallKind::BlockingInPlace) => write!(
                f,
                "blocking in place, not a stall: thread '{name}'{tid} has been inside \
                 block_in_place for {length:?} (threshold {threshold:?})"
            )?,
            (_, StallKind::Starved) => write!(
                f,
                "event loop delayed by the machine: thread '{name}'{tid} has not returned \
                 to the scheduler for {length:?} (threshold {threshold:?})"
            )?,
            _ => write!(
                f,
                "event loop stalled: thread '{name}'{tid} has not returned to the scheduler \
                 for {length:?} (threshold {threshold:?})"
            )?,
        }
        if let Some(task) = &self.task {
            write!(f, "\n  task: {task}")?;
        }
        write!(f, "\n  cause: {}", self.cause)?;
        write!(f, "\n  advice: {}", self.advice())?;
        if self.suppressed > 0 {
            write!(
                f,
                "\n  ({} other episodes of this kind not reported: rate limit)",
                self.suppressed
            )?;
        }
        if self.phase != StallPhase::Ended {
            if self.cause.kind() == StallKind::Starved {
                write!(
                    f,
                    "\n  backtrace (context: where it waited for a CPU, not the cause):\n{}",
                    self.backtrace
                )?;
            } else {
                write!(f, "\n  backtrace:\n{}", self.backtrace)?;
            }
        }
        Ok(())
    }
}
