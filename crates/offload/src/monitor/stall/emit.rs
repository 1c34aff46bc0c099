//! The watchdog's sending side: a stalled thread's stack, and its
//! episode turned into [`StallReport`]s handed to the reporting thread
//! (`symbols.rs`), which names the frames and delivers them.

use super::capture;
use super::episode::{Episode, ThreadView};
use super::report::{StallBacktrace, StallPhase, StallReport};
use super::sched;
use super::symbols;
use super::thread::Slot;
use super::watchdog::Watchdog;
use std::time::Duration;

/// How long the watchdog waits for a stalled thread to run the capture
/// handler: 50 ms, and up to half a second more while the thread is
/// runnable (it has the signal but no CPU yet, on a loaded machine; its
/// stack is what tells a thread inside `block_in_place` from a stalled
/// worker, so it is worth waiting for).
const CAPTURE_PATIENCE: capture::Patience = capture::Patience {
    timeout: Duration::from_millis(50),
    more_if_runnable: Duration::from_millis(500),
};

/// How long the watchdog waits for a stack's names (see `symbols.rs`):
/// enough for a cached stack; a cold one is looked up again at later ticks
/// (or its report held), and reports get their names on the reporting
/// thread anyway.
const RESOLVE_BUDGET: Duration = Duration::from_millis(20);

impl Watchdog {
    /// The stalled thread's stack (Linux), or why there is none; with
    /// names if they resolve within a budget (see `symbols.rs`).
    pub(super) fn capture(&self, slot: &Slot) -> StallBacktrace {
        let Some(tid) = slot.tid else {
            return StallBacktrace::unavailable("thread ids are available on Linux only");
        };
        if !self.detector.config.backtraces {
            return StallBacktrace::unavailable("backtraces disabled");
        }
        let runnable = || sched::state(tid) == Some('R');
        match capture::capture(tid, CAPTURE_PATIENCE, &runnable) {
            Ok(ips) => StallBacktrace {
                frames: symbols::resolve_within(&ips, RESOLVE_BUDGET),
                unavailable: None,
            },
            Err(why) => StallBacktrace::unavailable(why),
        }
    }

    /// Sends the report of the view's episode; an `Ongoing(0)` phase means
    /// "the next repeat".
    pub(super) fn report(
        &self,
        slot: &Slot,
        view: &mut ThreadView,
        phase: StallPhase,
        age: u64,
        suppressed: u64,
    ) {
        let ep = view.episode.as_mut().expect("an episode to report");
        let n = ep.reported(age);
        let phase = match phase {
            StallPhase::Ongoing(_) => StallPhase::Ongoing(n),
            other => other,
        };
        let ep = view.episode.as_ref().expect("an episode to report");
        self.emit(slot, phase, age, ep, suppressed);
    }

    pub(super) fn emit_end(&self, slot: &Slot, episode: &Episode, length: u64) {
        if let Some(held) = episode.held {
            // It ended before its stack's names resolved: its start and end
            // go together, once the reporting thread has the names and has
            // looked at whether the thread held a worker at all.
            let started = self.make(
                slot,
                StallPhase::Started,
                held.age,
                episode,
                held.suppressed,
            );
            let ended = self.make(slot, StallPhase::Ended, length, episode, 0);
            symbols::deliver_verified(&self.detector, vec![started, ended]);
        } else if episode.reports > 0 {
            self.emit(slot, StallPhase::Ended, length, episode, 0);
        }
    }

    pub(super) fn emit(
        &self,
        slot: &Slot,
        phase: StallPhase,
        age_us: u64,
        episode: &Episode,
        suppressed: u64,
    ) {
        let report = self.make(slot, phase, age_us, episode, suppressed);
        symbols::deliver(&self.detector, report);
    }

    fn make(
        &self,
        slot: &Slot,
        phase: StallPhase,
        age_us: u64,
        episode: &Episode,
        suppressed: u64,
    ) -> StallReport {
        StallReport {
            phase,
            thread_name: slot.name.clone(),
            tid: slot.tid,
            task: episode.task.clone(),
            duration: Duration::from_micros(age_us),
            threshold: self.detector.config.threshold,
            cause: episode.cause.clone(),
            backtrace: episode.backtrace.clone(),
            suppressed,
        }
    }
}
