//! Episode tracking: the watchdog's view of one watched thread, tick by
//! tick. It turns the thread's progress stamp into "how long without
//! progress", knows the thread's role (a worker, or a thread the runtime's
//! counters cleared), and follows an episode from its start through its
//! repeats to its end. Pure bookkeeping: no `/proc`, no signals, no
//! reports (the watchdog does those with what [`ThreadView::observe`]
//! tells it).

use super::classify::{StallCause, StallKind};
use super::report::StallBacktrace;
use super::sched::SchedSample;
use super::task::TaskLabel;
use super::thread::Slot;

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
    /// The first scheduler reading of the current stretch without
    /// progress, and the stamp it belongs to: classification measures from
    /// it.
    baseline: Option<(u64, SchedSample)>,
    /// Set when the thread was found not to hold a stuck worker while it
    /// showed no progress; holds until it shows worker evidence again.
    cleared: Option<Cleared>,
    /// The stamp of the stretch whose stack was already looked at for the
    /// thread's role, so a thread is signalled for it once per stretch.
    checked: Option<u64>,
    /// Whether the thread ever showed progress while watched.
    moved: bool,
    /// A stack captured for a role check whose names were not resolved
    /// yet: looked up again at later ticks instead of signalling again.
    awaited: Option<Vec<usize>>,
    /// When the thread was last seen getting CPU time in this stretch
    /// (watchdog µs), and its on-CPU time then.
    ran: Option<(u64, std::time::Duration)>,
    /// When its state was last read in this stretch (watchdog µs), and for
    /// how long it was seen asleep (`S` or `D`) since the first reading.
    noted: Option<u64>,
    slept: std::time::Duration,
    pub(super) episode: Option<Episode>,
}

#[derive(Clone, Copy)]
struct Cleared {
    /// The thread's worker-evidence count when it was cleared.
    evidence: u64,
    in_place: bool,
}

/// What the watchdog knows a thread to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Never seen acting as a runtime worker (e.g. a blocking-pool thread):
    /// watched only when the counters show a stuck core no known worker
    /// accounts for, and its stack shows it runs a scheduler.
    NotWorker,
    /// A runtime worker, watched.
    Worker,
    /// Was a worker, but the runtime's counters proved it held no stuck
    /// worker while it showed no progress: it gave its worker away
    /// (`block_in_place`) and may be back in the blocking pool. Watched only
    /// when the counters say a worker is stuck and no watched thread can be
    /// the one.
    Cleared,
    /// Its stack showed it inside `block_in_place`: not a worker.
    InPlace,
}

/// An episode: a stall, a starved stretch, or (informational) a
/// `block_in_place` section, from its start to its end.
pub(super) struct Episode {
    /// The stamp of the last progress before the episode (its start).
    pub(super) start: u64,
    /// Reports sent so far (0 when suppressed by the rate limit).
    pub(super) reports: u32,
    /// Age, in microseconds, at which the next repeat is due.
    next_at: u64,
    pub(super) cause: StallCause,
    pub(super) backtrace: StallBacktrace,
    pub(super) task: Option<TaskLabel>,
    /// The first report, held until its stack's names resolve (on a
    /// runtime where the stack decides whether the thread holds a worker).
    pub(super) held: Option<Held>,
}

/// A first report waiting for its stack's names.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    /// The stall's age when it was detected: the report's duration.
    pub(super) age: u64,
    /// Suppressed episodes to carry in the report.
    pub(super) suppressed: u64,
    /// When it was held (watchdog µs).
    pub(super) since: u64,
}

/// What one thread's state at a tick asks of the watchdog.
pub(super) enum Step {
    /// Nothing to do.
    Quiet,
    /// A quarter of the threshold without progress: time for the first
    /// scheduler reading of this stretch.
    Sample,
    /// No progress for `age` µs, at least the threshold, no episode yet,
    /// and the thread may hold a worker: an episode starts, unless the
    /// watchdog finds out it is not one.
    Suspect { age: u64 },
    /// An episode goes on, `age` µs long.
    Ongoing { age: u64 },
    /// The episode is over (progress, park or exit) after `length` µs.
    Ended { episode: Box<Episode>, length: u64 },
}

/// The state of the watched thread read at one tick.
pub(super) struct Seen {
    /// The thread's last progress stamp (coarse µs).
    pub(super) stamp: u64,
    pub(super) parked: bool,
    pub(super) dead: bool,
    /// How often it showed it is a runtime worker (0: never).
    pub(super) evidence: u64,
}

impl Seen {
    /// What the watched thread of `slot` shows right now.
    pub(super) fn read(slot: &Slot) -> Self {
        let (parked, stamp) = slot.read();
        Seen {
            stamp,
            parked,
            dead: slot.is_dead(),
            evidence: slot.worker_evidence(),
        }
    }
}

impl ThreadView {
    /// Updates the view with what the thread shows at `now`; `late` says the
    /// watchdog itself ran late this tick.
    pub(super) fn observe(&mut self, seen: &Seen, now: u64, late: bool, threshold: u64) -> Step {
        let progressed = self.seen.is_some_and(|s| s != seen.stamp);
        self.moved |= progressed;
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
                let episode = Box::new(self.episode.take().expect("checked above"));
                let length = end.saturating_sub(episode.start);
                return Step::Ended { episode, length };
            }
            return Step::Ongoing { age };
        }
        if seen.parked || seen.dead {
            return Step::Quiet;
        }
        // Threads not known as workers are suspects too: the watchdog
        // turns to them only when a runtime's counters show a stuck core
        // that no known worker accounts for (a thread that took a worker
        // over and has not parked since). Only workers are measured ahead
        // (`/proc` readings every tick): a runtime may have hundreds of
        // idle blocking-pool threads.
        match self.role(seen.evidence) {
            Role::InPlace => Step::Quiet,
            _ if age >= threshold => Step::Suspect { age },
            Role::Worker if age >= threshold / 4 && self.baseline(seen.stamp).is_none() => {
                Step::Sample
            }
            _ => Step::Quiet,
        }
    }

    /// The progress stamp this view saw at its last tick: what the
    /// watchdog's decisions of that tick are about (the thread may have
    /// moved on since; the next tick sees it).
    pub(super) fn stamp(&self) -> u64 {
        self.seen.unwrap_or(0)
    }

    /// The thread's role, given its current worker-evidence count.
    pub(super) fn role(&self, evidence: u64) -> Role {
        match self.cleared {
            _ if evidence == 0 => Role::NotWorker,
            Some(c) if c.evidence == evidence && c.in_place => Role::InPlace,
            Some(c) if c.evidence == evidence => Role::Cleared,
            _ => Role::Worker,
        }
    }

    /// Records that the thread holds no stuck worker (`in_place`: its
    /// stack showed `block_in_place`), until it shows worker evidence
    /// again.
    pub(super) fn clear(&mut self, evidence: u64, in_place: bool) {
        self.cleared = Some(Cleared { evidence, in_place });
    }

    /// Ends the episode now for a reason the thread's own stamp does not
    /// show (it changed role); returns it with its length.
    pub(super) fn end(&mut self, now: u64) -> Option<(Episode, u64)> {
        let episode = self.episode.take()?;
        let length = now.saturating_sub(episode.start);
        Some((episode, length))
    }

    /// The scheduler reading taken in the stretch that started with
    /// `stamp`, if any.
    pub(super) fn baseline(&self, stamp: u64) -> Option<&SchedSample> {
        self.baseline
            .as_ref()
            .filter(|(s, _)| *s == stamp)
            .map(|(_, sample)| sample)
    }

    /// Takes the stretch's first scheduler reading, at `now`.
    pub(super) fn set_baseline(&mut self, stamp: u64, sample: Option<SchedSample>, now: u64) {
        self.ran = sample.as_ref().map(|s| (now, s.on_cpu));
        self.noted = Some(now);
        self.slept = std::time::Duration::ZERO;
        self.baseline = sample.map(|s| (stamp, s));
    }

    /// Notes the thread's on-CPU time and state at `now` (every tick of a
    /// measured stretch): if its CPU time moved, it ran since the previous
    /// tick; if it is asleep in the kernel, the time since the previous
    /// tick counts as asleep (sampled: a tick's precision).
    pub(super) fn note(
        &mut self,
        now: u64,
        on_cpu: Option<std::time::Duration>,
        state: Option<char>,
    ) {
        if let (Some(cpu), Some((_, last))) = (on_cpu, self.ran) {
            if cpu != last {
                self.ran = Some((now, cpu));
            }
        }
        if let Some(prev) = self.noted.replace(now) {
            if matches!(state, Some('S' | 'D')) {
                self.slept += std::time::Duration::from_micros(now.saturating_sub(prev));
            }
        }
    }

    /// How long the thread was seen asleep in the kernel in this stretch.
    pub(super) fn slept(&self) -> std::time::Duration {
        self.slept
    }

    /// How long since the thread was last seen getting CPU time in this
    /// stretch (zero when not measured).
    pub(super) fn not_run_for(&self, now: u64) -> std::time::Duration {
        self.ran.map_or(std::time::Duration::ZERO, |(at, _)| {
            std::time::Duration::from_micros(now.saturating_sub(at))
        })
    }

    /// Whether the stretch that started with `stamp` still has to have its
    /// stack looked at (for its role).
    pub(super) fn unchecked(&self, stamp: u64) -> bool {
        self.checked != Some(stamp)
    }

    /// Records that the stretch that started with `stamp` had its stack
    /// looked at.
    pub(super) fn checked(&mut self, stamp: u64) {
        self.checked = Some(stamp);
        self.awaited = None;
    }

    /// Keeps a captured stack whose names are awaited.
    pub(super) fn await_names(&mut self, ips: Vec<usize>) {
        self.awaited = Some(ips);
    }

    /// The captured stack whose names are awaited, if any.
    pub(super) fn awaited(&self) -> Option<&[usize]> {
        self.awaited.as_deref()
    }

    /// Whether the thread ever showed progress while watched.
    pub(super) fn ever_moved(&self) -> bool {
        self.moved
    }

    /// The start of the current stretch without progress.
    pub(super) fn since(&self) -> u64 {
        self.effective
    }

    /// Whether the view can be dropped: its thread is gone and no episode
    /// is left to close.
    pub(super) fn finished(&self, dead: bool) -> bool {
        dead && self.episode.is_none()
    }
}

impl Episode {
    /// An episode starting at `start`, with its first diagnosis.
    pub(super) fn new(
        start: u64,
        threshold: u64,
        cause: StallCause,
        backtrace: StallBacktrace,
        task: Option<TaskLabel>,
    ) -> Self {
        Episode {
            start,
            reports: 0,
            next_at: threshold.saturating_mul(2),
            cause,
            backtrace,
            task,
            held: None,
        }
    }

    pub(super) fn kind(&self) -> StallKind {
        self.cause.kind
    }

    /// Whether a reported episode is due for a repeat at `age`.
    pub(super) fn due(&self, age: u64) -> bool {
        self.reports > 0 && age >= self.next_at
    }

    /// Counts one more report, made at `age`, and schedules the next one:
    /// at 2×, 4×, 8× ... the threshold, and never sooner than twice the age
    /// of this report (a first report that came late, while its stack's
    /// names were awaited, is not followed by a burst of repeats).
    pub(super) fn reported(&mut self, age: u64) -> u32 {
        if self.reports > 0 {
            self.next_at = self.next_at.saturating_mul(2);
        }
        self.next_at = self.next_at.max(age.saturating_mul(2));
        self.reports += 1;
        self.reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 100_000;

    fn seen(stamp: u64, evidence: u64) -> Seen {
        Seen {
            stamp,
            parked: false,
            dead: false,
            evidence,
        }
    }

    #[test]
    fn a_worker_without_progress_becomes_a_suspect_at_the_threshold() {
        let mut v = ThreadView::default();
        assert!(matches!(
            v.observe(&seen(0, 1), 10_000, false, T),
            Step::Quiet
        ));
        assert!(matches!(
            v.observe(&seen(0, 1), 30_000, false, T),
            Step::Sample
        ));
        assert!(matches!(
            v.observe(&seen(0, 1), 100_000, false, T),
            Step::Suspect { age: 100_000 }
        ));
    }

    #[test]
    fn a_thread_not_known_as_a_worker_is_only_a_suspect() {
        let mut v = ThreadView::default();
        assert!(matches!(
            v.observe(&seen(0, 0), 500_000, false, T),
            Step::Suspect { .. }
        ));
        assert_eq!(v.role(0), Role::NotWorker);
    }

    #[test]
    fn a_cleared_thread_is_watched_again_after_new_worker_evidence() {
        let mut v = ThreadView::default();
        v.clear(3, true);
        assert_eq!(v.role(3), Role::InPlace);
        assert!(matches!(
            v.observe(&seen(0, 3), 500_000, false, T),
            Step::Quiet
        ));
        assert_eq!(v.role(4), Role::Worker);
        v.clear(4, false);
        assert_eq!(v.role(4), Role::Cleared);
    }

    #[test]
    fn an_episode_ends_on_progress_park_or_exit_and_can_be_ended_by_role() {
        let mut v = ThreadView::default();
        let _ = v.observe(&seen(0, 1), 100_000, false, T);
        let ep = || {
            Episode::new(
                0,
                T,
                StallCause::unknown(),
                StallBacktrace::unavailable("test"),
                None,
            )
        };
        v.episode = Some(ep());
        assert!(matches!(
            v.observe(&seen(0, 1), 120_000, false, T),
            Step::Ongoing { .. }
        ));
        assert!(matches!(
            v.observe(&seen(130_000, 1), 140_000, false, T),
            Step::Ended {
                length: 130_000,
                ..
            }
        ));
        v.episode = Some(ep());
        let parked = Seen {
            parked: true,
            ..seen(130_000, 2)
        };
        assert!(matches!(
            v.observe(&parked, 150_000, false, T),
            Step::Ended { .. }
        ));
        v.episode = Some(ep());
        let (_, length) = v.end(400_000).expect("an episode to end");
        assert_eq!(length, 400_000);
        assert!(v.end(500_000).is_none());
    }

    #[test]
    fn repeats_double() {
        let mut ep = Episode::new(
            0,
            T,
            StallCause::unknown(),
            StallBacktrace::unavailable("test"),
            None,
        );
        assert!(!ep.due(10 * T));
        assert_eq!(ep.reported(T), 1);
        assert!(!ep.due(T));
        assert!(ep.due(2 * T));
        assert_eq!(ep.reported(2 * T), 2);
        assert!(!ep.due(3 * T));
        assert!(ep.due(4 * T));
    }

    #[test]
    fn a_late_first_report_is_not_followed_by_a_burst() {
        let mut ep = Episode::new(
            0,
            T,
            StallCause::unknown(),
            StallBacktrace::unavailable("test"),
            None,
        );
        assert_eq!(ep.reported(6 * T), 1);
        assert!(!ep.due(7 * T));
        assert!(ep.due(12 * T));
    }
}
