//! The watchdog: an OS thread that, every tick, reads when each watched
//! thread last showed progress (`episode.rs`), what the runtimes' own
//! counters prove about which threads can hold a stuck worker
//! (`roles.rs`), decides what each quiet thread is doing (`classify.rs`,
//! `capture.rs`) and sends the reports (`emit.rs`).

use super::classify::{self, StallCause, StallKind};
use super::detector::{self, Detector};
use super::episode::{Episode, Held, Role, Seen, Step, ThreadView};
use super::limit::RateLimit;
use super::report::{StallBacktrace, StallPhase};
use super::roles::{CoreProgress, conclusive, in_place, not_a_worker, runs_scheduler};
use super::sched;
use super::symbols;
use super::task;
use super::thread::Slot;
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a first report is held for its stack's names, on a runtime
/// where they decide whether the thread holds a worker at all (past it,
/// the report goes out, and its names follow on the reporting thread).
const UNRESOLVED_PATIENCE: Duration = Duration::from_secs(1);

pub(super) struct Watchdog {
    pub(super) detector: Arc<Detector>,
    views: HashMap<usize, (Arc<Slot>, ThreadView)>,
    /// Per-core progress of each runtime that has a probe, by hook group.
    cores: HashMap<u64, CoreProgress>,
    scratch: Vec<u64>,
    /// New code stalls (CPU-bound, blocking, unknown).
    stalls: RateLimit,
    /// New starved episodes.
    starved: RateLimit,
    /// New `block_in_place` episodes (informational, opt-in).
    in_place: RateLimit,
    /// The time of the previous tick.
    prev_now: u64,
}

impl Watchdog {
    pub(super) fn new(detector: Arc<Detector>) -> Self {
        let config = &detector.config;
        Watchdog {
            stalls: RateLimit::new(config.reports_per_minute),
            starved: RateLimit::new(config.starved_per_minute),
            in_place: RateLimit::new(config.reports_per_minute),
            detector,
            views: HashMap::new(),
            cores: HashMap::new(),
            scratch: Vec::new(),
            prev_now: 0,
        }
    }

    pub(super) fn run(mut self) {
        detector::warm_up_symbols(&self.detector);
        while !self.detector.stopped() {
            let now = self.detector.clock.advance();
            self.tick(now);
            self.detector.setup.check();
            self.prev_now = now;
            std::thread::park_timeout(self.detector.config.tick);
        }
    }

    fn threshold(&self) -> u64 {
        duration_us(self.detector.config.threshold)
    }

    fn tick(&mut self, now: u64) {
        self.poll_probes();
        self.sync_views();
        let late = now.saturating_sub(self.prev_now) > 2 * duration_us(self.detector.config.tick);
        let threshold = self.threshold();
        let (mut ongoing, mut suspects) = (Vec::new(), Vec::new());
        // Whether a worker went a quarter threshold without evidence.
        let mut any_quiet = false;
        let keys: Vec<usize> = self.views.keys().copied().collect();
        for key in keys {
            let Some((slot, mut view)) = self.views.remove(&key) else {
                continue;
            };
            let seen = Seen::read(&slot);
            match view.observe(&seen, now, late, threshold) {
                Step::Quiet => {}
                Step::Sample => {
                    view.set_baseline(seen.stamp, slot.tid.and_then(sched::sample), now);
                }
                Step::Ended { episode, length } => self.emit_end(&slot, &episode, length),
                Step::Ongoing { age } => ongoing.push((key, age)),
                Step::Suspect { age } => {
                    let worker = view.role(seen.evidence) == Role::Worker;
                    suspects.push((key, age, worker));
                }
            }
            let measured = view.baseline(seen.stamp).is_some();
            let quiet_worker = measured && !seen.parked && view.role(seen.evidence) == Role::Worker;
            slot.set_quiet(quiet_worker);
            any_quiet |= quiet_worker;
            if quiet_worker {
                if let Some(tid) = slot.tid {
                    view.note(now, sched::on_cpu(tid), sched::state(tid));
                }
            }
            if !view.finished(seen.dead) {
                self.views.insert(key, (slot, view));
            }
        }
        if any_quiet {
            // Busy or stuck: a heartbeat from the shared queue tells which
            // before the threshold (`nudge.rs`).
            self.detector.nudges.nudge_all();
        }
        let unexplained = self.unexplained(now);
        // Episodes first: each holds on to a core the counters leave
        // unexplained, so a thread that gave its worker away (inside
        // `block_in_place`, or back in the blocking pool) is not blamed for
        // a stall that another thread already accounts for.
        for (key, age) in ongoing {
            self.follow(key, age, now, &unexplained);
        }
        let mut budget: HashMap<u64, usize> = unexplained
            .iter()
            .map(|(&g, &k)| (g, k.saturating_sub(self.episodes_in(g))))
            .collect();
        // Watched workers first, the most recent progress first.
        let (workers, others): (Vec<_>, Vec<_>) =
            suspects.into_iter().partition(|&(_, _, worker)| worker);
        let mut workers = workers;
        workers.sort_by_key(|&(_, age, _)| age);
        for (key, age, _) in workers {
            self.suspect(key, age, now, &unexplained, &mut budget);
        }
        if others.is_empty() {
            return;
        }
        // A thread not known as a worker (one that gave its worker away,
        // or a blocking-pool thread) is looked at only for a stuck core
        // that no watched worker can account for: not even one still short
        // of the threshold, whose stall may have begun after the other
        // thread's last progress.
        let window = duration_us(self.detector.config.threshold) / 2;
        for (group, left) in &mut budget {
            *left = left.saturating_sub(self.young_workers(*group, now, window));
        }
        let mut others = others;
        others.sort_by_key(|&(_, age, _)| age);
        for (key, age, _) in others {
            self.identify(key, age, now, &unexplained, &budget);
        }
    }

    /// A thread not known as a worker, while a stuck core is unaccounted
    /// for: its stack (once per stretch without progress) says whether it
    /// runs a scheduler. If it does, it is a worker from now on, and the
    /// next tick judges it like one.
    fn identify(
        &mut self,
        key: usize,
        age: u64,
        now: u64,
        unexplained: &HashMap<u64, usize>,
        budget: &HashMap<u64, usize>,
    ) {
        let Some((slot, mut view)) = self.views.remove(&key) else {
            return;
        };
        let open = budget.get(&slot.group).is_some_and(|&b| b > 0);
        let cleared = view.role(slot.worker_evidence()) == Role::Cleared;
        if unexplained.get(&slot.group) == Some(&0) || !open {
            if cleared {
                self.check_in_place(&slot, &mut view, age, now);
            }
        } else if let Some(backtrace) = self.look(&slot, &mut view) {
            match not_a_worker(&backtrace) {
                Some(true) => {
                    view.clear(slot.worker_evidence(), true);
                    self.start_in_place(&slot, &mut view, age, now, backtrace);
                }
                Some(false) => view.clear(slot.worker_evidence(), false),
                None if runs_scheduler(&backtrace) => slot.mark_worker(),
                None => {}
            }
        }
        self.views.insert(key, (slot, view));
    }

    /// A role check's stack, once per stretch without progress: captured
    /// now, or, if its names were not resolved in time, looked up again at
    /// later ticks (without signalling the thread again). `None` until
    /// there is something to decide on.
    fn look(&self, slot: &Slot, view: &mut ThreadView) -> Option<StallBacktrace> {
        let stamp = view.stamp();
        if !view.unchecked(stamp) {
            return None;
        }
        let backtrace = match view.awaited() {
            Some(ips) => StallBacktrace {
                frames: symbols::resolved(ips)?,
                unavailable: None,
            },
            None => self.capture(slot),
        };
        if conclusive(&backtrace) {
            view.checked(stamp);
            Some(backtrace)
        } else {
            view.await_names(backtrace.frames.iter().map(|f| f.ip).collect());
            None
        }
    }

    /// Watched workers of `group` without an episode, not parked, that
    /// have shown no progress for `window` or more: each may be the one on
    /// a stuck core.
    fn young_workers(&self, group: u64, now: u64, window: u64) -> usize {
        self.views
            .values()
            .filter(|(s, v)| {
                let (parked, _) = s.read();
                s.group == group
                    && !parked
                    && !s.is_dead()
                    && v.episode.is_none()
                    && v.role(s.worker_evidence()) == Role::Worker
                    && now.saturating_sub(v.since()) >= window
            })
            .count()
    }

    fn poll_probes(&mut self) {
        let since = self.prev_now;
        let mut probes = lock(&self.detector.probes);
        for (group, probe) in probes.iter_mut() {
            probe(&mut self.scratch);
            self.cores
                .entry(*group)
                .or_default()
                .update(&self.scratch, since);
        }
    }

    /// Adds views for newly registered threads; forgets dead slots in the
    /// shared list (their views live on until their episode is closed).
    fn sync_views(&mut self) {
        let mut threads = lock(&self.detector.threads);
        for slot in threads.iter() {
            self.views
                .entry(Arc::as_ptr(slot) as usize)
                .or_insert_with(|| (Arc::clone(slot), ThreadView::default()));
        }
        threads.retain(|s| !s.is_dead());
    }

    /// For each runtime with counters: how many of its cores may hold a
    /// stuck worker over the last half threshold (see `roles.rs`).
    fn unexplained(&self, now: u64) -> HashMap<u64, usize> {
        let config = &self.detector.config;
        let window = duration_us(config.threshold) / 2;
        let margin = 2 * duration_us(config.tick);
        self.cores
            .iter()
            .map(|(&group, progress)| {
                let parked = self
                    .views
                    .values()
                    .filter(|(s, _)| s.group == group && !s.is_dead())
                    .map(|(s, _)| s.read())
                    .filter(|&(parked, _)| parked)
                    .map(|(_, since)| since);
                (group, progress.unexplained(parked, now, window, margin))
            })
            .collect()
    }

    /// Stall episodes open in `group`: each holds one of the cores that
    /// may be stuck. Starved episodes hold none: a starved thread may run a
    /// little between two readings (its core then moves) while its
    /// episode goes on, and must not hide a real stall elsewhere.
    fn episodes_in(&self, group: u64) -> usize {
        self.views
            .values()
            .filter(|(s, v)| {
                s.group == group && v.episode.as_ref().is_some_and(|e| e.kind().is_code_stall())
            })
            .count()
    }

    /// An episode goes on: end it if its thread changed role, flip a
    /// starved one to a stall once the evidence says so, repeat it when due.
    fn follow(&mut self, key: usize, age: u64, now: u64, unexplained: &HashMap<u64, usize>) {
        let Some((slot, mut view)) = self.views.remove(&key) else {
            return;
        };
        let ep = view.episode.as_ref().expect("an ongoing episode");
        let kind = ep.kind();
        let due = ep.due(age);
        if let Some(held) = ep.held {
            // The report waits for its stack's names; its verdict stays
            // current meanwhile (a starved start may turn into a stall).
            if kind == StallKind::Starved {
                if let Some(cause) = self.reclassify(&slot, &view, age, now) {
                    if cause.kind.is_code_stall() {
                        view.episode.as_mut().expect("ongoing").cause = cause;
                    }
                }
            }
            self.release(&slot, &mut view, held, now);
        } else if kind != StallKind::BlockingInPlace && unexplained.get(&slot.group) == Some(&0) {
            // No core of this runtime can be stuck: the thread is not
            // holding a stalled worker any more (it gave it away, or went
            // back to the blocking pool): the episode ends with its cause.
            if let Some((episode, length)) = view.end(now) {
                self.emit_end(&slot, &episode, length);
            }
            view.clear(slot.worker_evidence(), false);
        } else if kind == StallKind::BlockingInPlace {
            if due {
                let backtrace = self.capture(&slot);
                if in_place(&backtrace) {
                    let ep = view.episode.as_mut().expect("an ongoing episode");
                    ep.backtrace = backtrace;
                    self.report(&slot, &mut view, StallPhase::Ongoing(0), age, 0);
                } else if let Some((episode, length)) = view.end(now) {
                    self.emit_end(&slot, &episode, length);
                }
            }
        } else {
            let fresh = self.reclassify(&slot, &view, age, now);
            let flips = kind == StallKind::Starved
                && fresh.as_ref().is_some_and(|c| c.kind.is_code_stall());
            if flips || due {
                let cause = match fresh {
                    // Once the code is to blame, it stays to blame; the
                    // figures are brought up to date.
                    Some(c) if !c.kind.is_code_stall() && kind.is_code_stall() => {
                        StallCause { kind, ..c }
                    }
                    Some(c) => c,
                    None => view.episode.as_ref().expect("ongoing").cause.clone(),
                };
                self.update(&slot, &mut view, cause, age, now, flips);
            }
        }
        self.views.insert(key, (slot, view));
    }

    /// A verdict over the stretch this tick observed (if the thread has
    /// moved on since, the next tick sees it); none without a reading of
    /// that stretch, or while the evidence does not decide.
    fn reclassify(&self, slot: &Slot, view: &ThreadView, age: u64, now: u64) -> Option<StallCause> {
        let since = view.baseline(view.stamp())?;
        let stretch = classify::Stretch {
            since: Some(since),
            age: Duration::from_micros(age),
            not_run_for: view.not_run_for(now),
            slept: view.slept(),
        };
        classify::classify(slot.tid?, stretch, self.detector.config.threshold)
    }

    /// A held first report: sent once its stack's names resolve (or after
    /// `UNRESOLVED_PATIENCE`), unless they show a thread that holds no
    /// worker, whose episode then ends without a word.
    fn release(&mut self, slot: &Slot, view: &mut ThreadView, held: Held, now: u64) {
        let ep = view.episode.as_mut().expect("an ongoing episode");
        let ips: Vec<usize> = ep.backtrace.frames.iter().map(|f| f.ip).collect();
        match symbols::resolved(&ips) {
            Some(frames) => ep.backtrace.frames = frames,
            None if now.saturating_sub(held.since) < duration_us(UNRESOLVED_PATIENCE) => return,
            None => {}
        }
        ep.held = None;
        if let Some(in_place) = not_a_worker(&ep.backtrace) {
            view.episode = None;
            view.clear(slot.worker_evidence(), in_place);
            return;
        }
        self.report(slot, view, StallPhase::Started, held.age, held.suppressed);
    }

    /// A repeat, or a starved episode turning out to be a stall: a fresh
    /// stack, then the report.
    fn update(
        &mut self,
        slot: &Slot,
        view: &mut ThreadView,
        cause: StallCause,
        age: u64,
        now: u64,
        flips: bool,
    ) {
        let backtrace = self.capture(slot);
        if let Some(in_place) = not_a_worker(&backtrace) {
            // It gave its worker away after all: not a stall.
            if let Some((episode, length)) = view.end(now) {
                self.emit_end(slot, &episode, length);
            }
            view.clear(slot.worker_evidence(), in_place);
            return;
        }
        if let Some(t) = task::lookup(slot.label()) {
            view.episode.as_mut().expect("ongoing").task = Some(t);
        }
        let ep = view.episode.as_mut().expect("ongoing");
        ep.cause = cause;
        ep.backtrace = backtrace;
        if flips && ep.reports == 0 {
            // Its starved start went unreported: this is the stall's start.
            if self.stalls.allow(now) {
                let suppressed = self.stalls.take_suppressed();
                self.report(slot, view, StallPhase::Started, age, suppressed);
            }
        } else if ep.reports > 0 {
            #[cfg(feature = "metrics")]
            if flips {
                metrics::counter!("offload_loop_stalls_total").increment(1);
            }
            self.report(slot, view, StallPhase::Ongoing(0), age, 0);
        }
    }

    /// A thread without progress for `age`, at least the threshold: find
    /// out whether it is stalled, starved, not a worker, or undecided yet.
    fn suspect(
        &mut self,
        key: usize,
        age: u64,
        now: u64,
        unexplained: &HashMap<u64, usize>,
        budget: &mut HashMap<u64, usize>,
    ) {
        let Some((slot, mut view)) = self.views.remove(&key) else {
            return;
        };
        self.decide(&slot, &mut view, age, now, unexplained, budget);
        self.views.insert(key, (slot, view));
    }

    fn decide(
        &mut self,
        slot: &Arc<Slot>,
        view: &mut ThreadView,
        age: u64,
        now: u64,
        unexplained: &HashMap<u64, usize>,
        budget: &mut HashMap<u64, usize>,
    ) {
        let stamp = view.stamp();
        let evidence = slot.worker_evidence();
        if unexplained.get(&slot.group) == Some(&0) {
            // The runtime's counters prove no worker is stuck: this thread
            // gave its worker away, or runs short polls nobody saw.
            view.clear(evidence, false);
            self.check_in_place(slot, view, age, now);
            return;
        }
        if budget.get(&slot.group) == Some(&0) {
            // Other threads account for every core that may be stuck.
            return;
        }
        if slot.group == 0 && evidence == 1 && !view.ever_moved() {
            self.detector.setup.entered_without_hooks(&slot.name);
        }
        if slot.tid.is_none() {
            // No thread ids (non-Linux): no scheduler readings either.
            self.start(slot, view, StallCause::unknown(), age, now, budget);
            return;
        }
        if view.baseline(stamp).is_none() {
            // No reading yet in this stretch (the thread was confirmed as
            // a worker only now, or the watchdog was late): measure first.
            view.set_baseline(stamp, slot.tid.and_then(sched::sample), now);
            return;
        }
        if let Some(cause) = self.reclassify(slot, view, age, now) {
            self.start(slot, view, cause, age, now, budget);
        }
    }

    /// Starts a stall or starved episode, reported if its rate limit
    /// allows (with a stack) and counted against the runtime's cores.
    fn start(
        &mut self,
        slot: &Slot,
        view: &mut ThreadView,
        cause: StallCause,
        age: u64,
        now: u64,
        budget: &mut HashMap<u64, usize>,
    ) {
        let starved = cause.kind == StallKind::Starved;
        let available = self.limit(starved).available(now);
        let backtrace = if available {
            self.capture(slot)
        } else {
            StallBacktrace::unavailable("not captured: rate limit")
        };
        if let Some(in_place) = not_a_worker(&backtrace) {
            // Not a worker: tokio handed its queue to another thread.
            view.clear(slot.worker_evidence(), in_place);
            if in_place {
                self.start_in_place(slot, view, age, now, backtrace);
            }
            return;
        }
        self.limit(starved).spend(available);
        if let Some(b) = budget.get_mut(&slot.group) {
            *b = b.saturating_sub(1);
        }
        let mut episode = Episode::new(
            view.since(),
            self.threshold(),
            cause,
            backtrace,
            task::lookup(slot.label()),
        );
        if available {
            let suppressed = self.limit(starved).take_suppressed();
            if !conclusive(&episode.backtrace) && budget.contains_key(&slot.group) {
                // On this runtime a thread can be inside `block_in_place`
                // or back in the blocking pool, and only the stack's names
                // can tell: hold the report until they resolve (`follow`).
                episode.held = Some(Held {
                    age,
                    suppressed,
                    since: now,
                });
                view.episode = Some(episode);
                return;
            }
            view.episode = Some(episode);
            self.report(slot, view, StallPhase::Started, age, suppressed);
        } else {
            view.episode = Some(episode);
        }
    }

    fn limit(&mut self, starved: bool) -> &mut RateLimit {
        if starved {
            &mut self.starved
        } else {
            &mut self.stalls
        }
    }

    /// With `report_block_in_place`, looks (once per stretch, once the
    /// names resolve) whether a thread cleared by the counters is inside
    /// `block_in_place`, and starts an informational episode if it is.
    fn check_in_place(&mut self, slot: &Slot, view: &mut ThreadView, age: u64, now: u64) {
        if !self.detector.config.report_block_in_place {
            return;
        }
        if let Some(backtrace) = self.look(slot, view) {
            if in_place(&backtrace) {
                view.clear(slot.worker_evidence(), true);
                self.start_in_place(slot, view, age, now, backtrace);
            }
        }
    }

    /// Starts an informational `block_in_place` episode, when asked for.
    fn start_in_place(
        &mut self,
        slot: &Slot,
        view: &mut ThreadView,
        age: u64,
        now: u64,
        backtrace: StallBacktrace,
    ) {
        if !self.detector.config.report_block_in_place {
            return;
        }
        view.episode = Some(Episode::new(
            view.since(),
            self.threshold(),
            StallCause::in_place(),
            backtrace,
            task::lookup(slot.label()),
        ));
        if self.in_place.allow(now) {
            let suppressed = self.in_place.take_suppressed();
            self.report(slot, view, StallPhase::Started, age, suppressed);
        }
    }
}

pub(super) fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
