//! The watchdog: an OS thread that, every tick, reads when each watched
//! thread last showed progress, follows stalls through their episodes
//! (`episode.rs`), diagnoses them (`classify.rs`, `capture.rs`) and sends
//! the reports.

use super::capture;
use super::classify::{self, CpuSample, StallCause};
use super::detector::{self, Detector};
use super::episode::{Episode, Seen, Step, ThreadView};
use super::report::{StallBacktrace, StallPhase, StallReport};
use super::task;
use super::thread::Slot;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Why a thread is stalled and where: read from `/proc` first, then the
/// stack (the signal that captures it disturbs what `/proc` shows).
struct Diagnosis {
    cause: StallCause,
    backtrace: StallBacktrace,
}

/// Per-group progress read from probes: the time each core last changed.
#[derive(Default)]
struct CoreProgress {
    last: Vec<u64>,
    changed_at: Vec<u64>,
}

/// A token bucket for new reports.
struct RateLimit {
    per_minute: u64,
    /// In micro-tokens.
    tokens: u64,
    last_refill: u64,
    /// Stalls not reported since the last report.
    suppressed: u64,
}

const TOKEN: u64 = 1_000_000;

impl RateLimit {
    fn new(per_minute: u32) -> Self {
        let per_minute = u64::from(per_minute);
        RateLimit {
            per_minute,
            tokens: per_minute * TOKEN,
            last_refill: 0,
            suppressed: 0,
        }
    }

    /// Takes a token if there is one; counts a suppressed report if not.
    fn allow(&mut self, now: u64) -> bool {
        let elapsed = now.saturating_sub(self.last_refill);
        self.last_refill = now;
        // per_minute tokens per 60e6 µs.
        self.tokens = (self.tokens + elapsed * self.per_minute / 60).min(self.per_minute * TOKEN);
        if self.tokens >= TOKEN {
            self.tokens -= TOKEN;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

pub(super) struct Watchdog {
    detector: Arc<Detector>,
    views: HashMap<usize, (Arc<Slot>, ThreadView)>,
    groups: HashMap<u64, CoreProgress>,
    scratch: Vec<u64>,
    limit: RateLimit,
    /// The time of the previous tick.
    prev_now: u64,
}

impl Watchdog {
    pub(super) fn new(detector: Arc<Detector>) -> Self {
        let limit = RateLimit::new(detector.config.reports_per_minute);
        Watchdog {
            detector,
            views: HashMap::new(),
            groups: HashMap::new(),
            scratch: Vec::new(),
            limit,
            prev_now: 0,
        }
    }

    pub(super) fn run(mut self) {
        detector::warm_up_symbols(&self.detector);
        while !self.detector.stopped() {
            let now = self.detector.clock.advance();
            self.poll_probes(now);
            self.check(now);
            self.prev_now = now;
            std::thread::park_timeout(self.detector.config.tick);
        }
    }

    fn poll_probes(&mut self, now: u64) {
        let mut probes = self
            .detector
            .probes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (group, probe) in probes.iter_mut() {
            probe(&mut self.scratch);
            let g = self.groups.entry(*group).or_default();
            g.last.resize(self.scratch.len(), 0);
            g.changed_at.resize(self.scratch.len(), now);
            for (i, &v) in self.scratch.iter().enumerate() {
                if g.last[i] != v {
                    g.last[i] = v;
                    g.changed_at[i] = now;
                }
            }
        }
    }

    /// Whether a runtime's own counters prove that no worker of `group` is
    /// stuck: over the last half threshold, every core whose counter did
    /// not move is explained by a worker parked throughout. (A stuck core
    /// has not moved since the stall began, a threshold ago; the margins
    /// only ever make the answer "not proven".)
    fn group_all_clear(&self, group: u64, now: u64) -> bool {
        let Some(g) = self.groups.get(&group) else {
            return false;
        };
        let config = &self.detector.config;
        let window_start = now.saturating_sub(duration_us(config.threshold) / 2);
        let tick = duration_us(config.tick);
        let unmoved = g.changed_at.iter().filter(|&&t| t <= window_start).count();
        let parked = self
            .views
            .values()
            .filter(|(s, _)| s.group == group && s.is_worker() && !s.is_dead())
            .filter(|(s, _)| {
                let (parked, stamp) = s.read();
                parked && stamp + 2 * tick <= window_start
            })
            .count();
        unmoved <= parked
    }

    fn check(&mut self, now: u64) {
        let late = now.saturating_sub(self.prev_now) > 2 * duration_us(self.detector.config.tick);
        {
            let mut threads = self
                .detector
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for slot in threads.iter() {
                self.views
                    .entry(Arc::as_ptr(slot) as usize)
                    .or_insert_with(|| (Arc::clone(slot), ThreadView::default()));
            }
            threads.retain(|s| !s.is_dead());
        }
        let keys: Vec<usize> = self.views.keys().copied().collect();
        for key in keys {
            let Some((slot, mut view)) = self.views.remove(&key) else {
                continue;
            };
            let dead = slot.is_dead();
            self.step(&slot, &mut view, now, late);
            if !view.finished(dead) {
                self.views.insert(key, (slot, view));
            }
        }
    }

    fn step(&mut self, slot: &Arc<Slot>, view: &mut ThreadView, now: u64, late: bool) {
        let threshold = duration_us(self.detector.config.threshold);
        let (parked, stamp) = slot.read();
        let seen = Seen {
            stamp,
            parked,
            dead: slot.is_dead(),
            worker: slot.is_worker(),
        };
        match view.observe(&seen, now, late, threshold) {
            Step::Quiet => {}
            Step::Halfway => view.baseline = sample(slot).map(|s| (stamp, s)),
            Step::Ended { episode, length } => {
                if episode.reports > 0 {
                    self.emit(slot, StallPhase::Ended, length, &episode, 0);
                }
            }
            Step::Repeat { age } => {
                let diagnosis = self.examine(slot, view, stamp);
                let ep = view.episode.as_mut().expect("a repeat has an episode");
                let n = ep.reported();
                ep.cause = diagnosis.cause;
                ep.backtrace = diagnosis.backtrace;
                if let Some(task) = task::lookup(slot.label()) {
                    ep.task = Some(task);
                }
                let ep = view.episode.as_ref().expect("just updated");
                self.emit(slot, StallPhase::Ongoing(n), age, ep, 0);
            }
            Step::Suspect { age } => {
                if self.group_all_clear(slot.group, now) {
                    return;
                }
                if is_starved(slot, view.current_baseline(stamp)) {
                    // Runnable but barely running: the machine is out of
                    // CPU, the loop is not stuck in user code. Keep the
                    // baseline and look again next tick.
                    return;
                }
                let mut ep = Episode::new(view.since(), threshold, task::lookup(slot.label()));
                if self.limit.allow(now) {
                    let diagnosis = self.examine(slot, view, stamp);
                    ep.reported();
                    ep.cause = diagnosis.cause;
                    ep.backtrace = diagnosis.backtrace;
                    let suppressed = std::mem::take(&mut self.limit.suppressed);
                    self.emit(slot, StallPhase::Started, age, &ep, suppressed);
                }
                view.episode = Some(ep);
            }
        }
    }

    /// Diagnoses the thread over the time since its baseline sample, then
    /// takes a new baseline, so the next report measures from this one.
    fn examine(&self, slot: &Slot, view: &mut ThreadView, stamp: u64) -> Diagnosis {
        let diagnosis = self.diagnose(slot, view.current_baseline(stamp));
        view.baseline = sample(slot).map(|s| (stamp, s));
        diagnosis
    }

    /// Classifies first (before the signal disturbs the thread), then
    /// captures and resolves the stack.
    fn diagnose(&self, slot: &Slot, baseline: Option<CpuSample>) -> Diagnosis {
        let Some(tid) = slot.tid else {
            return Diagnosis {
                cause: StallCause::unknown(),
                backtrace: StallBacktrace::unavailable("thread ids are available on Linux only"),
            };
        };
        let cause = classify::classify(tid, baseline);
        let backtrace = if !self.detector.config.backtraces {
            StallBacktrace::unavailable("backtraces disabled")
        } else {
            match capture::capture(tid, Duration::from_millis(50)) {
                Ok(ips) => StallBacktrace {
                    frames: capture::resolve(&ips),
                    unavailable: None,
                },
                Err(why) => StallBacktrace::unavailable(why),
            }
        };
        Diagnosis { cause, backtrace }
    }

    fn emit(
        &self,
        slot: &Slot,
        phase: StallPhase,
        age_us: u64,
        episode: &Episode,
        suppressed: u64,
    ) {
        let config = &self.detector.config;
        let report = StallReport {
            phase,
            thread_name: slot.name.clone(),
            tid: slot.tid,
            task: episode.task.clone(),
            duration: Duration::from_micros(age_us),
            threshold: config.threshold,
            cause: episode.cause.clone(),
            backtrace: episode.backtrace.clone(),
            suppressed,
        };
        if config.log {
            tracing::warn!(target: "offload::monitor", "{report}");
        }
        #[cfg(feature = "metrics")]
        match report.phase {
            StallPhase::Started => metrics::counter!("offload_loop_stalls_total").increment(1),
            StallPhase::Ended => metrics::histogram!("offload_loop_stall_seconds")
                .record(report.duration.as_secs_f64()),
            StallPhase::Ongoing(_) => {}
        }
        if let Some(f) = &config.on_report {
            // A panicking callback must not kill the watchdog.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&report)));
        }
    }
}

fn sample(slot: &Slot) -> Option<CpuSample> {
    slot.tid.and_then(classify::sample)
}

pub(super) fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A thread that has been runnable (state `R`) but got less than a quarter
/// of the CPU since the baseline sample is waiting for a CPU, not stuck in
/// its own code: on an overloaded machine every thread "stalls" that way.
/// Reporting it would blame the task for the machine's load, so a stall
/// starts only once the thread runs (or sleeps in the kernel).
fn is_starved(slot: &Slot, baseline: Option<CpuSample>) -> bool {
    const STARVED_BELOW: f64 = 0.25;
    let Some(tid) = slot.tid else { return false };
    if baseline.is_none() {
        return false;
    }
    let cause = classify::classify(tid, baseline);
    cause.thread_state() == Some('R') && cause.cpu_fraction().is_some_and(|f| f < STARVED_BELOW)
}
