//! Episode tracking: the watchdog's view of one watched thread, tick by
//! tick. It turns the thread's progress stamp into "how long without
//! progress" and follows a stall from its start through its repeats to its
//! end. Pure bookkeeping: no `/proc`, no signals, no reports (the watchdog
//! does those with what [`ThreadView::observe`] tells it).

use super::classify::{CpuSample, StallCause};
use super::report::StallBacktrace;
use super::task::TaskLabel;

/// The watchdog's private view of one watched thread.
#[derive(Default)]
pub(super) struct ThreadView {
    /// The raw stamp seen at the previous tick.
    seen: Option<u64>,
    /// When the last progress happened, as far as the watchdog can tell:
    /// the stamp itself, or the time the watchdog saw it change if the
    /// watchdog was late (threads stamp with the coarse clock, which stands
    /// still while the watchdog does not run).
    effective: u64,
    /// CPU reading taken half-way to the threshold, and the progress stamp
    /// it belongs to.
    pub(super) baseline: Option<(u64, CpuSample)>,
    pub(super) episode: Option<Episode>,
}

/// An ongoing stall.
pub(super) struct Episode {
    /// The stamp of the last progress before the stall (its start).
    pub(super) start: u64,
    /// Reports sent so far (0 when suppressed by the rate limit).
    pub(super) reports: u32,
    /// Age, in microseconds, at which the next repeat is due.
    pub(super) next_at: u64,
    pub(super) cause: StallCause,
    pub(super) backtrace: StallBacktrace,
    pub(super) task: Option<TaskLabel>,
}

/// What one thread's state at a tick asks of the watchdog.
pub(super) enum Step {
    /// Nothing to do.
    Quiet,
    /// No progress for `age` µs, half-way or more to the threshold, and no
    /// stall yet: time for a baseline CPU sample, if none was taken since
    /// the last progress.
    Halfway,
    /// No progress for `age` µs, at least the threshold: a stall starts,
    /// unless the watchdog finds out it is not one.
    Suspect { age: u64 },
    /// A reported stall is due for a repeat.
    Repeat { age: u64 },
    /// The stall is over (progress, park or exit) after `length` µs.
    Ended { episode: Episode, length: u64 },
}

/// The state of the watched thread read at one tick.
pub(super) struct Seen {
    /// The thread's last progress stamp (coarse µs).
    pub(super) stamp: u64,
    pub(super) parked: bool,
    pub(super) dead: bool,
    /// Known to be a runtime worker (only workers are watched).
    pub(super) worker: bool,
}

impl ThreadView {
    /// Updates the view with what the thread shows at `now`; `late` says the
    /// watchdog itself ran late this tick.
    pub(super) fn observe(&mut self, seen: &Seen, now: u64, late: bool, threshold: u64) -> Step {
        let progressed = self.seen.is_some_and(|s| s != seen.stamp);
        if self.seen.is_none() || progressed {
            self.effective = if progressed && late { now } else { seen.stamp };
            self.seen = Some(seen.stamp);
        }
        let age = now.saturating_sub(self.effective);
        if let Some(ep) = &self.episode {
            if seen.parked || seen.dead || progressed {
                let end = if seen.dead {
                    now
                } else {
                    self.effective.max(ep.start)
                };
                let episode = self.episode.take().expect("checked above");
                let length = end - episode.start;
                return Step::Ended { episode, length };
            }
            return if ep.reports > 0 && age >= ep.next_at {
                Step::Repeat { age }
            } else {
                Step::Quiet
            };
        }
        if seen.parked || seen.dead || !seen.worker {
            Step::Quiet
        } else if age >= threshold {
            Step::Suspect { age }
        } else if age >= threshold / 2 && self.baseline.is_none_or(|b| b.0 != seen.stamp) {
            Step::Halfway
        } else {
            Step::Quiet
        }
    }

    /// The CPU sample taken since the last progress, if any.
    pub(super) fn current_baseline(&self, stamp: u64) -> Option<CpuSample> {
        self.baseline.filter(|b| b.0 == stamp).map(|b| b.1)
    }

    /// The start of the current stretch without progress.
    pub(super) fn since(&self) -> u64 {
        self.effective
    }

    /// Whether the view can be dropped: its thread is gone and no stall is
    /// left to close.
    pub(super) fn finished(&self, dead: bool) -> bool {
        dead && self.episode.is_none()
    }
}

impl Episode {
    /// A stall starting at `start`, its first report due now.
    pub(super) fn new(start: u64, threshold: u64, task: Option<TaskLabel>) -> Self {
        Episode {
            start,
            reports: 0,
            next_at: threshold.saturating_mul(2),
            cause: StallCause::unknown(),
            backtrace: StallBacktrace::unavailable("not captured"),
            task,
        }
    }

    /// Counts one more report and schedules the next one at twice the age.
    pub(super) fn reported(&mut self) -> u32 {
        if self.reports > 0 {
            self.next_at = self.next_at.saturating_mul(2);
        }
        self.reports += 1;
        self.reports
    }
}
