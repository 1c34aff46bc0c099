//! The detector's public face ([`StallDetector`], its builder, the
//! [`WatchGuard`] of `enter`, heartbeats, report subscriptions) and
//! [`Detector`], the state the handle, its hooks and its watchdog share.

use super::nudge::Nudges;
use super::reports::{ReportQueue, StallReports};
use super::setup::Setup;
use super::thread::{self, Clock, Slot};
use super::watchdog::Watchdog;
use super::{capture, report::StallReport, symbols};
use crate::error::BuildError;
use crate::sync::lock;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// The callback type of [`StallDetectorBuilder::on_report`].
type Callback = Arc<dyn Fn(&StallReport) + Send + Sync>;

/// Reads per-worker progress counters of one runtime (see `tokio_rt.rs`).
pub(crate) type Probe = Box<dyn FnMut(&mut Vec<u64>) + Send>;

static NEXT_DETECTOR: AtomicU64 = AtomicU64::new(1);

/// Settings fixed at build time.
pub(crate) struct Config {
    pub(crate) threshold: Duration,
    /// The watchdog's period: bounds the detection delay and the precision
    /// of the coarse clock threads stamp their progress with.
    pub(crate) tick: Duration,
    pub(crate) on_report: Option<Callback>,
    pub(crate) log: bool,
    pub(crate) backtraces: bool,
    pub(crate) reports_per_minute: u32,
    pub(crate) starved_per_minute: u32,
    pub(crate) report_block_in_place: bool,
}

impl Config {
    /// How long a heartbeat waits between beats while its runtime is
    /// idle: an eighth of the threshold.
    pub(crate) fn heartbeat_interval(&self) -> Duration {
        self.threshold / 8
    }
}

/// What a detector's handle, hooks and watchdog share.
pub(crate) struct Detector {
    /// Distinguishes this detector's slots in the thread-local lists.
    pub(crate) id: u64,
    pub(crate) clock: Arc<Clock>,
    pub(crate) config: Config,
    /// Every registered thread (the watchdog drops dead ones).
    pub(crate) threads: Mutex<Vec<Arc<Slot>>>,
    /// Progress probes by hook group (tokio's per-worker metrics).
    pub(crate) probes: Mutex<Vec<(u64, Probe)>>,
    pub(crate) next_group: AtomicU64,
    /// The heartbeats, for the watchdog to wake (`nudge.rs`).
    pub(crate) nudges: Nudges,
    /// Report subscriptions ([`StallDetector::reports`]).
    subscribers: Mutex<Vec<Weak<ReportQueue>>>,
    /// How the detector was wired to runtimes, to tell a half-installed
    /// set-up in a log line.
    pub(crate) setup: Setup,
    stop: AtomicBool,
}

impl Detector {
    pub(crate) fn add_slot(&self, slot: Arc<Slot>) {
        let mut threads = lock(&self.threads);
        if !threads.iter().any(|s| Arc::ptr_eq(s, &slot)) {
            threads.push(slot);
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Hands a report to every live subscription.
    pub(crate) fn publish(&self, report: &StallReport) {
        let mut subscribers = lock(&self.subscribers);
        subscribers.retain(|w| match w.upgrade() {
            Some(q) => {
                q.push(report);
                true
            }
            None => false,
        });
    }

    /// Registers the current thread as a watched worker of `group`; returns
    /// whether this call registered it (a nested `enter` did not).
    pub(crate) fn enter(&self, group: u64) -> bool {
        match thread::register(self.id, group, &self.clock, false) {
            Some((slot, new)) => {
                slot.mark_worker();
                slot.set_parked(false);
                self.add_slot(slot);
                new
            }
            None => false,
        }
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
    starved_per_minute: u32,
    report_block_in_place: bool,
}

impl fmt::Debug for StallDetectorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StallDetectorBuilder")
            .field("threshold", &self.threshold)
            .field("on_report", &self.on_report.is_some())
            .field("log", &self.log)
            .field("backtraces", &self.backtraces)
            .field("reports_per_minute", &self.reports_per_minute)
            .field("starved_per_minute", &self.starved_per_minute)
            .field("report_block_in_place", &self.report_block_in_place)
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

    /// Calls `f` with every report, in order, on the process's reporting
    /// thread (`offload-stall-reports`, which resolves the stacks' symbols
    /// off the watchdog; keep `f` short: later reports wait for it). A
    /// panicking `f` loses that one report. Reports are also logged with
    /// `tracing::warn!` unless [`log(false)`](Self::log), and go to every
    /// [`StallDetector::reports`] subscription.
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
    /// signal, see the module docs). Default `true`. The stack is also how
    /// a thread inside `block_in_place` is told from a stalled worker when
    /// the runtime's counters cannot tell.
    pub fn backtraces(mut self, capture: bool) -> Self {
        self.backtraces = capture;
        self
    }

    /// At most this many new stalls (CPU-bound, blocking) are reported per
    /// minute (a burst of as many is allowed); the others are counted and
    /// the count is shown in the next report. Repeats and ends of a
    /// reported stall are not limited (repeats already space out by
    /// doubling). Default 12.
    pub fn max_reports_per_minute(mut self, n: u32) -> Self {
        self.reports_per_minute = n;
        self
    }

    /// At most this many starved episodes are reported per minute, with a
    /// rate limit of their own, so a busy machine cannot crowd out reports
    /// of real stalls. A starved episode is a real delay of the loop (its
    /// thread was ready but got no CPU for longer than the threshold), but
    /// not a defect of the code it ran, so by default they are reported,
    /// sparingly: 6 per minute. `0` turns starved reports off (they are
    /// still told apart from stalls, so they never count as one).
    pub fn max_starved_reports_per_minute(mut self, n: u32) -> Self {
        self.starved_per_minute = n;
        self
    }

    /// Whether to report threads blocking inside tokio's `block_in_place`
    /// for longer than the threshold, as [`StallKind::BlockingInPlace`]
    /// (informational: the runtime handed the worker's queue to another
    /// thread, so the loop is not stalled). Finding out costs a stack
    /// capture of that thread (a signal, which may interrupt its blocking
    /// call; see the module docs). Default `false`: such threads are
    /// simply not reported. Limited like stalls.
    ///
    /// [`StallKind::BlockingInPlace`]: super::StallKind::BlockingInPlace
    pub fn report_block_in_place(mut self, report: bool) -> Self {
        self.report_block_in_place = report;
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
        let tick =
            (self.threshold / 20).clamp(Duration::from_micros(500), Duration::from_millis(50));
        let detector = Arc::new(Detector {
            id: NEXT_DETECTOR.fetch_add(1, Ordering::Relaxed),
            clock: Arc::new(Clock::new()),
            config: Config {
                threshold: self.threshold,
                tick,
                on_report: self.on_report,
                log: self.log,
                backtraces: self.backtraces,
                reports_per_minute: self.reports_per_minute,
                starved_per_minute: self.starved_per_minute,
                report_block_in_place: self.report_block_in_place,
            },
            threads: Mutex::new(Vec::new()),
            probes: Mutex::new(Vec::new()),
            next_group: AtomicU64::new(1),
            nudges: Nudges::default(),
            subscribers: Mutex::new(Vec::new()),
            setup: Setup::default(),
            stop: AtomicBool::new(false),
        });
        detector.clock.advance();
        // The counters exist from the start, at 0, so that a dashboard or
        // an alert can tell "no stalls" from "no detector".
        #[cfg(feature = "metrics")]
        {
            metrics::counter!("offload_loop_stalls_total").increment(0);
            metrics::counter!("offload_loop_starved_total").increment(0);
        }
        let for_watchdog = Arc::clone(&detector);
        let thread = std::thread::Builder::new()
            .name("offload-stall-watchdog".to_owned())
            .spawn(move || Watchdog::new(for_watchdog).run())
            .map_err(BuildError::Spawn)?;
        Ok(StallDetector {
            running: Arc::new(Running {
                detector,
                thread: Some(thread),
            }),
        })
    }
}

/// The watchdog thread, stopped when the last owner lets go: the
/// [`StallDetector`] and any watched runtime made from it.
pub(crate) struct Running {
    pub(crate) detector: Arc<Detector>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.detector.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
        for slot in lock(&self.detector.threads).drain(..) {
            slot.kill();
        }
        for queue in lock(&self.detector.subscribers).drain(..) {
            if let Some(q) = queue.upgrade() {
                q.close();
            }
        }
    }
}

/// Reports event-loop threads that run for too long without returning to
/// their scheduler, while they are still stuck: which thread and task,
/// where (a backtrace on Linux) and why: CPU-bound, a blocking syscall, or
/// starved of CPU by the machine.
///
/// The detector learns when each watched thread is idle (parked) and when
/// it makes progress through hooks ([`WorkerHooks`](super::WorkerHooks)), a
/// guard for the current thread ([`enter`](Self::enter)) and heartbeats.
/// With the `tokio` feature, `StallDetector::watch` does all of it for a
/// tokio runtime in one call. Its watchdog is an OS thread of its own, so
/// it sees stalls however stuck the runtime is. It stops when the detector
/// and every runtime `watch` returned are dropped.
///
/// See the [module docs](crate::monitor) for an example.
pub struct StallDetector {
    pub(crate) running: Arc<Running>,
}

impl fmt::Debug for StallDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.running.detector;
        let threads = d.threads.lock().map_or(0, |t| t.len());
        f.debug_struct("StallDetector")
            .field("threshold", &d.config.threshold)
            .field("watched_threads", &threads)
            .finish()
    }
}

impl StallDetector {
    /// A builder with the defaults: 100 ms threshold, `tracing::warn!`
    /// reports, backtraces on, 12 new stalls and 6 starved episodes
    /// reported per minute at most, `block_in_place` not reported.
    pub fn builder() -> StallDetectorBuilder {
        StallDetectorBuilder {
            threshold: Duration::from_millis(100),
            on_report: None,
            log: true,
            backtraces: true,
            reports_per_minute: 12,
            starved_per_minute: 6,
            report_block_in_place: false,
        }
    }

    pub(crate) fn detector(&self) -> &Arc<Detector> {
        &self.running.detector
    }

    /// The threshold.
    pub fn threshold(&self) -> Duration {
        self.detector().config.threshold
    }

    /// Hooks to install on a runtime's worker threads (thread start, stop,
    /// park, unpark; optionally task poll). Each call makes a new group:
    /// use one `WorkerHooks` (cloned as needed) per runtime.
    pub fn hooks(&self) -> super::WorkerHooks {
        let detector = Arc::clone(self.detector());
        let group = detector.next_group.fetch_add(1, Ordering::Relaxed);
        super::WorkerHooks { detector, group }
    }

    /// Watches the current thread until the guard is dropped: the way to
    /// watch a current-thread runtime, whose worker is the thread that
    /// calls `block_on`. The thread counts as busy from now on; install
    /// [`hooks`](Self::hooks) on the runtime too, so that it counts as idle
    /// while parked, and run a [`heartbeat`](Self::heartbeat) on it (with
    /// the `tokio` feature, `StallDetector::watch` does all three).
    pub fn enter(&self) -> WatchGuard {
        WatchGuard::new(self.detector().id, self.detector().enter(0))
    }

    /// Every report from now on, as a channel or a `Stream` (see
    /// [`StallReports`]), besides the [`on_report`] callback and the log.
    ///
    /// [`on_report`]: StallDetectorBuilder::on_report
    pub fn reports(&self) -> StallReports {
        let queue = ReportQueue::new(256);
        let d = self.detector();
        lock(&d.subscribers).push(Arc::downgrade(&queue));
        if d.stopped() {
            queue.close();
        }
        StallReports::new(queue)
    }

    /// How long a [`heartbeat`](Self::heartbeat) waits between beats
    /// while its runtime is idle: an eighth of the threshold (a busy
    /// runtime sees one beat per pass through its queue).
    pub fn heartbeat_interval(&self) -> Duration {
        self.detector().config.heartbeat_interval()
    }

    /// A task to spawn on the watched runtime: it marks progress on
    /// whichever thread polls it, then sleeps for
    /// [`heartbeat_interval`](Self::heartbeat_interval) with the `sleep`
    /// function you pass (e.g. `tokio::time::sleep`). A runtime that is
    /// busy but healthy never parks: the heartbeat is what tells the
    /// detector it still goes round. While the runtime stays busy it beats
    /// once per pass through its worker's queue, and the detector wakes it
    /// early when a worker goes quiet. It ends when the detector is
    /// dropped.
    ///
    /// One is enough for a single-threaded executor; for a runtime with
    /// several worker threads use [`heartbeats`](Self::heartbeats).
    pub fn heartbeat<S, F>(&self, sleep: S) -> impl Future<Output = ()> + Send + 'static
    where
        S: FnMut(Duration) -> F + Send + 'static,
        F: Future<Output = ()> + Send,
    {
        super::heartbeat::heartbeat(Arc::downgrade(self.detector()), sleep)
    }

    /// The heartbeats for a runtime of `workers` threads: spawn each of
    /// them on it. Four per worker, so that every busy worker finds one
    /// when it looks at the runtime's shared queue (a tokio worker whose
    /// queue runs dry takes a batch from it: with one heartbeat per worker,
    /// the first to look would take them all).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let detector = offload::monitor::StallDetector::builder().build()?;
    /// let hooks = detector.hooks();
    /// let (a, b, c, d) = (hooks.clone(), hooks.clone(), hooks.clone(), hooks);
    /// let rt = tokio::runtime::Builder::new_multi_thread()
    ///     .worker_threads(2)
    ///     .enable_time()
    ///     .on_thread_start(move || a.on_thread_start())
    ///     .on_thread_stop(move || b.on_thread_stop())
    ///     .on_thread_park(move || c.on_thread_park())
    ///     .on_thread_unpark(move || d.on_thread_unpark())
    ///     .build()?;
    /// for beat in detector.heartbeats(2, tokio::time::sleep) {
    ///     rt.spawn(beat);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn heartbeats<S, F>(
        &self,
        workers: usize,
        sleep: S,
    ) -> Vec<impl Future<Output = ()> + Send + 'static + use<S, F>>
    where
        S: FnMut(Duration) -> F + Clone + Send + 'static,
        F: Future<Output = ()> + Send,
    {
        super::heartbeat::for_workers(&Arc::downgrade(self.detector()), workers, sleep)
    }
}

/// Keeps the current thread watched; see [`StallDetector::enter`]. Not
/// `Send`: drop it on the thread that created it. A nested `enter` on a
/// thread already watched by the same detector leaves the watching to the
/// outer guard.
#[derive(Debug)]
#[must_use = "the thread is watched only while the guard lives"]
pub struct WatchGuard {
    detector: u64,
    registered: bool,
    _not_send: PhantomData<*const ()>,
}

impl WatchGuard {
    /// A guard for a thread `Detector::enter` just handled; it unregisters
    /// the thread on drop only if that call registered it.
    pub(crate) fn new(detector: u64, registered: bool) -> Self {
        WatchGuard {
            detector,
            registered,
            _not_send: PhantomData,
        }
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if self.registered {
            thread::unregister(self.detector);
        }
    }
}

/// Loads the debug information ahead of the first report (see
/// `symbols.rs`): resolves the calling thread's stack, a stack like the
/// ones reports will show, in the background, when the detector captures
/// backtraces.
pub(crate) fn warm_up_symbols(detector: &Detector) {
    if detector.config.backtraces {
        symbols::warm_up(capture::own_stack());
    }
}
