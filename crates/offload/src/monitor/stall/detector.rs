//! The stall detector: a watchdog OS thread that reads, every tick, when
//! each watched thread last showed progress, and reports a thread that has
//! shown none for longer than the threshold while not parked.

use super::capture;
use super::classify::{self, CpuSample, StallCause};
use super::report::{Frame, StallBacktrace, StallPhase, StallReport};
use super::task;
use super::thread::{self, Clock, Slot};
use crate::error::BuildError;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// The callback type of [`StallDetectorBuilder::on_report`].
type Callback = Arc<dyn Fn(&StallReport) + Send + Sync>;

/// Reads per-worker progress counters of one runtime (see `tokio.rs`).
pub(crate) type Probe = Box<dyn FnMut(&mut Vec<u64>) + Send>;

static NEXT_DETECTOR: AtomicU64 = AtomicU64::new(1);

/// Settings fixed at build time.
struct Config {
    threshold: Duration,
    tick: Duration,
    on_report: Option<Callback>,
    log: bool,
    backtraces: bool,
    reports_per_minute: u32,
}

/// State shared by the detector handle, its hooks and its watchdog.
pub(crate) struct Shared {
    /// Distinguishes this detector's slots in the thread-local lists.
    pub(crate) id: u64,
    pub(crate) clock: Arc<Clock>,
    config: Config,
    /// Every registered thread (the watchdog drops dead ones).
    threads: Mutex<Vec<Arc<Slot>>>,
    /// Progress probes by hook group (tokio's per-worker metrics).
    probes: Mutex<Vec<(u64, Probe)>>,
    next_group: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    pub(crate) fn add_slot(&self, slot: Arc<Slot>) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if !threads.iter().any(|s| Arc::ptr_eq(s, &slot)) {
            threads.push(slot);
        }
    }

    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn add_probe(&self, group: u64, probe: Probe) {
        self.probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((group, probe));
    }

    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn threshold(&self) -> Duration {
        self.config.threshold
    }

    /// The live threads registered by hooks of `group`.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn group_threads(&self, group: u64) -> Vec<Arc<Slot>> {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads
            .iter()
            .filter(|s| s.group == group && !s.is_dead())
            .cloned()
            .collect()
    }

    /// Warms the symbolizer up with the stack of a task running on a
    /// worker (tokio's poll path), so the first report is not late.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn warm_up_from_here(&self) {
        if self.config.backtraces {
            capture::warm_up(capture::own_stack());
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Configures a [`StallDetector`]; see [`StallDetector::builder`].
#[must_use]
pub struct StallDetectorBuilder {
    threshold: Duration,
    on_report: Option<Callback>,
    log: bool,
    backtraces: bool,
    reports_per_minute: u32,
}

impl fmt::Debug for StallDetectorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StallDetectorBuilder")
            .field("threshold", &self.threshold)
            .field("on_report", &self.on_report.is_some())
            .field("log", &self.log)
            .field("backtraces", &self.backtraces)
            .field("reports_per_minute", &self.reports_per_minute)
            .finish()
    }
}

impl StallDetectorBuilder {
    /// How long a thread may run without returning to its scheduler before
    /// it counts as stalled. Default 100 ms; at least 1 ms.
    pub fn threshold(mut self, threshold: Duration) -> Self {
        self.threshold = threshold;
        self
    }

    /// Calls `f` with every report, on the watchdog thread (keep it short:
    /// the watchdog waits for it). Reports are also logged with
    /// `tracing::warn!` unless [`log(false)`](Self::log).
    pub fn on_report(mut self, f: impl Fn(&StallReport) + Send + Sync + 'static) -> Self {
        self.on_report = Some(Arc::new(f));
        self
    }

    /// Whether to log each report with `tracing::warn!` (target
    /// `offload::monitor`). Default `true`.
    pub fn log(mut self, log: bool) -> Self {
        self.log = log;
        self
    }

    /// Whether to capture the stalled thread's stack (Linux: a real-time
    /// signal, see the module docs). Default `true`.
    pub fn backtraces(mut self, capture: bool) -> Self {
        self.backtraces = capture;
        self
    }

    /// At most this many new stalls are reported per minute (a burst of as
    /// many is allowed); the others are counted and the count is shown in
    /// the next report. Repeats and ends of a reported stall are not
    /// limited (repeats already space out by doubling). Default 12.
    pub fn max_reports_per_minute(mut self, n: u32) -> Self {
        self.reports_per_minute = n;
        self
    }

    /// Starts the watchdog thread.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] for a threshold under 1 ms,
    /// [`BuildError::Spawn`] if the watchdog thread will not start.
    pub fn build(self) -> Result<StallDetector, BuildError> {
        if self.threshold < Duration::from_millis(1) {
            return Err(BuildError::Invalid(
                "the stall threshold must be at least 1 ms",
            ));
        }
        // The tick bounds both the detection delay and the precision of
        // the coarse clock threads stamp their progress with.
        let tick =
            (self.threshold / 20).clamp(Duration::from_micros(500), Duration::from_millis(50));
        let shared = Arc::new(Shared {
            id: NEXT_DETECTOR.fetch_add(1, Ordering::Relaxed),
            clock: Arc::new(Clock::new()),
            config: Config {
                threshold: self.threshold,
                tick,
                on_report: self.on_report,
                log: self.log,
                backtraces: self.backtraces,
                reports_per_minute: self.reports_per_minute,
            },
            threads: Mutex::new(Vec::new()),
            probes: Mutex::new(Vec::new()),
            next_group: AtomicU64::new(1),
            stop: AtomicBool::new(false),
        });
        shared.clock.advance();
        let for_watchdog = Arc::clone(&shared);
        let watchdog = std::thread::Builder::new()
            .name("offload-stall-watchdog".to_owned())
            .spawn(move || Watchdog::new(for_watchdog).run())
            .map_err(BuildError::Spawn)?;
        Ok(StallDetector {
            shared,
            watchdog: Some(watchdog),
        })
    }
}

/// Reports event-loop threads that run for too long without returning to
/// their scheduler, while they are still stuck: which thread and task,
/// where (a backtrace on Linux) and why (CPU or a blocking syscall).
///
/// The detector learns when each watched thread is idle (parked) and when
/// it makes progress through hooks ([`WorkerHooks`]), a guard for the
/// current thread ([`enter`](Self::enter)) and heartbeats. Its watchdog is
/// an OS thread of its own, so it sees stalls however stuck the runtime is.
/// Dropping the detector stops the watchdog.
///
/// See the [module docs](crate::monitor) for an example.
pub struct StallDetector {
    shared: Arc<Shared>,
    watchdog: Option<JoinHandle<()>>,
}

impl fmt::Debug for StallDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let threads = self.shared.threads.lock().map_or(0, |t| t.len());
        f.debug_struct("StallDetector")
            .field("threshold", &self.shared.config.threshold)
            .field("watched_threads", &threads)
            .finish()
    }
}

impl StallDetector {
    /// A builder with the defaults: 100 ms threshold, `tracing::warn!`
    /// reports, backtraces on, 12 new stalls reported per minute at most.
    pub fn builder() -> StallDetectorBuilder {
        StallDetectorBuilder {
            threshold: Duration::from_millis(100),
            on_report: None,
            log: true,
            backtraces: true,
            reports_per_minute: 12,
        }
    }

    /// The threshold.
    pub fn threshold(&self) -> Duration {
        self.shared.config.threshold
    }

    /// Hooks to install on a runtime's worker threads (thread start, stop,
    /// park, unpark; optionally task poll). Each call makes a new group:
    /// use one `WorkerHooks` (cloned as needed) per runtime.
    pub fn hooks(&self) -> WorkerHooks {
        WorkerHooks {
            shared: Arc::clone(&self.shared),
            group: self.shared.next_group.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Watches the current thread until the guard is dropped: the way to
    /// watch a current-thread runtime, whose worker is the thread that
    /// calls `block_on`. The thread counts as busy from now on; install
    /// [`hooks`](Self::hooks) on the runtime too, so that it counts as idle
    /// while parked, and run a [`heartbeat`](Self::heartbeat) on it.
    pub fn enter(&self) -> WatchGuard {
        if let Some(slot) = thread::register(self.shared.id, 0, &self.shared.clock, false) {
            slot.mark_worker();
            slot.set_parked(false);
            self.shared.add_slot(slot);
        }
        WatchGuard {
            detector: self.shared.id,
            _not_send: PhantomData,
        }
    }

    /// How often [`heartbeat`](Self::heartbeat) beats: an eighth of the
    /// threshold.
    pub fn heartbeat_interval(&self) -> Duration {
        self.shared.config.threshold / 8
    }

    /// A task to spawn on the watched runtime: it marks progress on
    /// whichever thread polls it, then sleeps for
    /// [`heartbeat_interval`](Self::heartbeat_interval) with the `sleep`
    /// function you pass (e.g. `tokio::time::sleep`). A current-thread
    /// runtime that is busy but healthy never parks: the heartbeat is what
    /// tells the detector it still goes round. It ends when the detector
    /// is dropped.
    pub fn heartbeat<S, F>(&self, sleep: S) -> impl Future<Output = ()> + Send + 'static
    where
        S: FnMut(Duration) -> F + Send + 'static,
        F: Future<Output = ()> + Send,
    {
        heartbeat(Arc::downgrade(&self.shared), Duration::ZERO, sleep)
    }
}

/// The heartbeat loop, first sleeping `offset` so several heartbeats of one
/// runtime fire at different times (and so land on different workers).
pub(crate) fn heartbeat<S, F>(
    weak: Weak<Shared>,
    offset: Duration,
    mut sleep: S,
) -> impl Future<Output = ()> + Send + 'static
where
    S: FnMut(Duration) -> F + Send + 'static,
    F: Future<Output = ()> + Send,
{
    let interval = weak
        .upgrade()
        .map_or(Duration::from_millis(10), |s| s.config.threshold / 8);
    async move {
        if !offset.is_zero() {
            sleep(offset).await;
        }
        while alive(&weak) {
            thread::heartbeat_polled();
            sleep(interval).await;
        }
    }
}

fn alive(weak: &Weak<Shared>) -> bool {
    weak.upgrade().is_some_and(|s| !s.stopped())
}

impl Drop for StallDetector {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.thread().unpark();
            let _ = watchdog.join();
        }
        for slot in self
            .shared
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            slot.kill();
        }
    }
}

/// Keeps the current thread watched; see [`StallDetector::enter`]. Not
/// `Send`: drop it on the thread that created it.
#[derive(Debug)]
#[must_use = "the thread is watched only while the guard lives"]
pub struct WatchGuard {
    detector: u64,
    _not_send: PhantomData<*const ()>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        thread::unregister(self.detector);
    }
}

/// Hooks that tell a [`StallDetector`] what a runtime's threads do. Plain
/// methods: call them from the runtime's thread hooks, e.g. tokio's
/// `Builder::on_thread_start` (or let `install` do it, with the `tokio`
/// feature).
///
/// tokio also starts its blocking-pool threads with `on_thread_start`, and
/// those may block as long as they like, so a thread started through these
/// hooks is watched only once it is known to be a worker: from its first
/// unpark or heartbeat, or at once for the workers of a multi-thread
/// runtime attached (`WorkerHooks::attach`, feature `tokio`) right after it was built.
#[derive(Clone)]
pub struct WorkerHooks {
    pub(crate) shared: Arc<Shared>,
    pub(crate) group: u64,
}

impl fmt::Debug for WorkerHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHooks")
            .field("detector", &self.shared.id)
            .field("group", &self.group)
            .finish()
    }
}

impl WorkerHooks {
    /// Call on thread start: registers the thread, idle until it unparks.
    pub fn on_thread_start(&self) {
        // Registered busy but unconfirmed: the watchdog watches it once it
        // is known to be a worker (`Slot::mark_worker`).
        if let Some(slot) = thread::register(self.shared.id, self.group, &self.shared.clock, false)
        {
            self.shared.add_slot(slot);
        }
    }

    /// Call on thread stop: unregisters the thread.
    pub fn on_thread_stop(&self) {
        thread::unregister(self.shared.id);
    }

    /// Call before the thread parks (goes idle): an idle thread is never
    /// stalled.
    #[inline]
    pub fn on_thread_park(&self) {
        thread::with_slot(self.shared.id, |s| s.set_parked(true));
    }

    /// Call after the thread unparks: it is busy from now on, and watched.
    #[inline]
    pub fn on_thread_unpark(&self) {
        thread::with_slot(self.shared.id, |s| {
            s.mark_worker();
            s.set_parked(false);
        });
    }

    /// Call before each task poll (tokio: `on_before_task_poll`, behind
    /// `--cfg tokio_unstable`): makes detection exact.
    #[inline]
    pub fn on_before_task_poll(&self) {
        thread::beat();
    }

    /// Call after each task poll (tokio: `on_after_task_poll`).
    #[inline]
    pub fn on_after_task_poll(&self) {
        thread::beat();
    }
}

/// The watchdog's private view of one slot.
#[derive(Default)]
struct Track {
    /// The raw stamp seen at the previous tick.
    seen: Option<u64>,
    /// When the last progress happened, as far as the watchdog can tell:
    /// the stamp itself, or the time the watchdog saw it change if the
    /// watchdog was late (threads stamp with the coarse clock, which stands
    /// still while the watchdog does not run).
    effective: u64,
    /// CPU reading taken half-way to the threshold, and the progress stamp
    /// it belongs to.
    baseline: Option<(u64, CpuSample)>,
    episode: Option<Episode>,
}

/// An ongoing stall.
struct Episode {
    /// The stamp of the last progress before the stall (its start).
    start: u64,
    /// Reports sent so far (0 when suppressed by the rate limit).
    reports: u32,
    /// Age, in microseconds, at which the next repeat is due.
    next_at: u64,
    cause: StallCause,
    backtrace: StallBacktrace,
    task: Option<task::TaskLabel>,
}

/// Per-group progress read from probes: the time each core last changed.
struct GroupProgress {
    last: Vec<u64>,
    changed_at: Vec<u64>,
}

struct Watchdog {
    shared: Arc<Shared>,
    tracks: HashMap<usize, (Arc<Slot>, Track)>,
    groups: HashMap<u64, GroupProgress>,
    scratch: Vec<u64>,
    /// Token bucket for new reports, in micro-tokens.
    tokens: u64,
    last_refill: u64,
    suppressed: u64,
    /// The time of the previous tick.
    prev_now: u64,
}

const TOKEN: u64 = 1_000_000;

impl Watchdog {
    fn new(shared: Arc<Shared>) -> Self {
        let burst = u64::from(shared.config.reports_per_minute);
        Watchdog {
            shared,
            tracks: HashMap::new(),
            groups: HashMap::new(),
            scratch: Vec::new(),
            tokens: burst * TOKEN,
            last_refill: 0,
            suppressed: 0,
            prev_now: 0,
        }
    }

    fn run(mut self) {
        if self.shared.config.backtraces {
            capture::warm_up(capture::own_stack());
        }
        while !self.shared.stopped() {
            let now = self.shared.clock.advance();
            self.poll_probes(now);
            self.check(now);
            self.prev_now = now;
            std::thread::park_timeout(self.shared.config.tick);
        }
    }

    fn poll_probes(&mut self, now: u64) {
        let mut probes = self.shared.probes.lock().unwrap_or_else(|e| e.into_inner());
        for (group, probe) in probes.iter_mut() {
            probe(&mut self.scratch);
            let g = self.groups.entry(*group).or_insert_with(|| GroupProgress {
                last: Vec::new(),
                changed_at: Vec::new(),
            });
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
        let window_start = now.saturating_sub(duration_us(self.shared.config.threshold) / 2);
        let tick = duration_us(self.shared.config.tick);
        let unmoved = g.changed_at.iter().filter(|&&t| t <= window_start).count();
        let parked = self
            .tracks
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
        let threshold = duration_us(self.shared.config.threshold);
        let late = now.saturating_sub(self.prev_now) > 2 * duration_us(self.shared.config.tick);
        {
            let mut threads = self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for slot in threads.iter() {
                self.tracks
                    .entry(Arc::as_ptr(slot) as usize)
                    .or_insert_with(|| (Arc::clone(slot), Track::default()));
            }
            threads.retain(|s| !s.is_dead());
        }
        let keys: Vec<usize> = self.tracks.keys().copied().collect();
        for key in keys {
            let Some((slot, mut track)) = self.tracks.remove(&key) else {
                continue;
            };
            let dead = slot.is_dead();
            self.step(&slot, &mut track, (now, late), threshold, dead);
            if !(dead && track.episode.is_none()) {
                self.tracks.insert(key, (slot, track));
            }
        }
    }

    fn step(
        &mut self,
        slot: &Arc<Slot>,
        track: &mut Track,
        (now, late): (u64, bool),
        threshold: u64,
        dead: bool,
    ) {
        let (parked, stamp) = slot.read();
        let progressed = track.seen.is_some_and(|seen| seen != stamp);
        if track.seen.is_none() || progressed {
            track.effective = if progressed && late { now } else { stamp };
            track.seen = Some(stamp);
        }
        let age = now.saturating_sub(track.effective);
        if let Some(ep) = &mut track.episode {
            if parked || dead || progressed {
                let end = if dead {
                    now
                } else {
                    track.effective.max(ep.start)
                };
                let ep = track.episode.take().expect("checked above");
                if ep.reports > 0 {
                    let report = (StallPhase::Ended, end - ep.start, ep.cause, ep.backtrace);
                    self.emit(slot, report, ep.task, 0);
                }
                return;
            }
            if ep.reports > 0 && age >= ep.next_at {
                ep.reports += 1;
                ep.next_at = ep.next_at.saturating_mul(2);
                let phase = StallPhase::Ongoing(ep.reports);
                let (cause, backtrace) = self.diagnose(slot, track.baseline.map(|b| b.1));
                track.baseline = slot.tid.and_then(classify::sample).map(|s| (stamp, s));
                let ep = track.episode.as_mut().expect("checked above");
                ep.cause = cause.clone();
                ep.backtrace = backtrace.clone();
                let task = task::lookup(slot.label()).or_else(|| ep.task.clone());
                self.emit(slot, (phase, age, cause, backtrace), task, 0);
            }
            return;
        }
        if parked || dead || !slot.is_worker() {
            return;
        }
        if age >= threshold {
            if self.group_all_clear(slot.group, now) {
                return;
            }
            let baseline = track.baseline.filter(|b| b.0 == stamp).map(|b| b.1);
            if is_starved(slot, baseline) {
                // Runnable but barely running: the machine is out of CPU,
                // the loop is not stuck in user code. Keep the baseline
                // and look again next tick.
                return;
            }
            let allowed = self.take_token(now);
            let mut ep = Episode {
                start: track.effective,
                reports: 0,
                next_at: threshold.saturating_mul(2),
                cause: StallCause::unknown(),
                backtrace: StallBacktrace::unavailable("not captured"),
                task: task::lookup(slot.label()),
            };
            if allowed {
                let (cause, backtrace) = self.diagnose(slot, baseline);
                track.baseline = slot.tid.and_then(classify::sample).map(|s| (stamp, s));
                ep.reports = 1;
                ep.cause = cause.clone();
                ep.backtrace = backtrace.clone();
                let suppressed = std::mem::take(&mut self.suppressed);
                let task = ep.task.clone();
                self.emit(
                    slot,
                    (StallPhase::Started, age, cause, backtrace),
                    task,
                    suppressed,
                );
            } else {
                self.suppressed += 1;
            }
            track.episode = Some(ep);
        } else if age >= threshold / 2 && track.baseline.is_none_or(|b| b.0 != stamp) {
            track.baseline = slot.tid.and_then(classify::sample).map(|s| (stamp, s));
        }
    }

    fn take_token(&mut self, now: u64) -> bool {
        let per_minute = u64::from(self.shared.config.reports_per_minute);
        let elapsed = now.saturating_sub(self.last_refill);
        self.last_refill = now;
        // per_minute tokens per 60e6 us.
        self.tokens = (self.tokens + elapsed * per_minute / 60).min(per_minute * TOKEN);
        if self.tokens >= TOKEN {
            self.tokens -= TOKEN;
            true
        } else {
            false
        }
    }

    /// Classifies first (before the signal disturbs the thread), then
    /// captures and resolves the stack.
    fn diagnose(&self, slot: &Slot, baseline: Option<CpuSample>) -> (StallCause, StallBacktrace) {
        let Some(tid) = slot.tid else {
            return (
                StallCause::unknown(),
                StallBacktrace::unavailable("thread ids are available on Linux only"),
            );
        };
        let cause = classify::classify(tid, baseline);
        let backtrace = if !self.shared.config.backtraces {
            StallBacktrace::unavailable("backtraces disabled")
        } else {
            match capture::capture(tid, Duration::from_millis(50)).map(|ips| capture::resolve(&ips))
            {
                Ok(frames) => StallBacktrace {
                    frames: frames
                        .into_iter()
                        .map(|(ip, function, file, line)| Frame {
                            ip,
                            function,
                            file,
                            line,
                        })
                        .collect(),
                    unavailable: None,
                },
                Err(why) => StallBacktrace::unavailable(why),
            }
        };
        (cause, backtrace)
    }

    fn emit(
        &self,
        slot: &Slot,
        (phase, age_us, cause, backtrace): (StallPhase, u64, StallCause, StallBacktrace),
        task: Option<task::TaskLabel>,
        suppressed: u64,
    ) {
        let report = StallReport {
            phase,
            thread_name: slot.name.clone(),
            tid: slot.tid,
            task,
            duration: Duration::from_micros(age_us),
            threshold: self.shared.config.threshold,
            cause,
            backtrace,
            suppressed,
        };
        if self.shared.config.log {
            tracing::warn!(target: "offload::monitor", "{report}");
        }
        #[cfg(feature = "metrics")]
        match report.phase {
            StallPhase::Started => metrics::counter!("offload_loop_stalls_total").increment(1),
            StallPhase::Ended => metrics::histogram!("offload_loop_stall_seconds")
                .record(report.duration.as_secs_f64()),
            StallPhase::Ongoing(_) => {}
        }
        if let Some(f) = &self.shared.config.on_report {
            // A panicking callback must not kill the watchdog.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&report)));
        }
    }
}

fn duration_us(d: Duration) -> u64 {
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
