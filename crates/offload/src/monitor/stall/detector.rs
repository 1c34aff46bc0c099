//! The detector's public face ([`StallDetector`], its builder, the
//! [`WatchGuard`] of `enter`, heartbeats) and [`Detector`], the state the
//! handle, its hooks and its watchdog share.

use super::thread::{self, Clock, Slot};
use super::watchdog::Watchdog;
use super::{capture, report::StallReport};
use crate::error::BuildError;
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
    stop: AtomicBool,
}

impl Detector {
    pub(crate) fn add_slot(&self, slot: Arc<Slot>) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if !threads.iter().any(|s| Arc::ptr_eq(s, &slot)) {
            threads.push(slot);
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
            },
            threads: Mutex::new(Vec::new()),
            probes: Mutex::new(Vec::new()),
            next_group: AtomicU64::new(1),
            stop: AtomicBool::new(false),
        });
        detector.clock.advance();
        let for_watchdog = Arc::clone(&detector);
        let watchdog = std::thread::Builder::new()
            .name("offload-stall-watchdog".to_owned())
            .spawn(move || Watchdog::new(for_watchdog).run())
            .map_err(BuildError::Spawn)?;
        Ok(StallDetector {
            detector,
            watchdog: Some(watchdog),
        })
    }
}

/// Reports event-loop threads that run for too long without returning to
/// their scheduler, while they are still stuck: which thread and task,
/// where (a backtrace on Linux) and why (CPU or a blocking syscall).
///
/// The detector learns when each watched thread is idle (parked) and when
/// it makes progress through hooks ([`WorkerHooks`](super::WorkerHooks)), a
/// guard for the current thread ([`enter`](Self::enter)) and heartbeats.
/// Its watchdog is an OS thread of its own, so it sees stalls however stuck
/// the runtime is. Dropping the detector stops the watchdog.
///
/// See the [module docs](crate::monitor) for an example.
pub struct StallDetector {
    pub(crate) detector: Arc<Detector>,
    watchdog: Option<JoinHandle<()>>,
}

impl fmt::Debug for StallDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let threads = self.detector.threads.lock().map_or(0, |t| t.len());
        f.debug_struct("StallDetector")
            .field("threshold", &self.detector.config.threshold)
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
        self.detector.config.threshold
    }

    /// Hooks to install on a runtime's worker threads (thread start, stop,
    /// park, unpark; optionally task poll). Each call makes a new group:
    /// use one `WorkerHooks` (cloned as needed) per runtime.
    pub fn hooks(&self) -> super::WorkerHooks {
        super::WorkerHooks {
            detector: Arc::clone(&self.detector),
            group: self.detector.next_group.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Watches the current thread until the guard is dropped: the way to
    /// watch a current-thread runtime, whose worker is the thread that
    /// calls `block_on`. The thread counts as busy from now on; install
    /// [`hooks`](Self::hooks) on the runtime too, so that it counts as idle
    /// while parked, and run a [`heartbeat`](Self::heartbeat) on it.
    pub fn enter(&self) -> WatchGuard {
        if let Some(slot) = thread::register(self.detector.id, 0, &self.detector.clock, false) {
            slot.mark_worker();
            slot.set_parked(false);
            self.detector.add_slot(slot);
        }
        WatchGuard {
            detector: self.detector.id,
            _not_send: PhantomData,
        }
    }

    /// How often [`heartbeat`](Self::heartbeat) beats: an eighth of the
    /// threshold.
    pub fn heartbeat_interval(&self) -> Duration {
        self.detector.config.threshold / 8
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
        heartbeat(Arc::downgrade(&self.detector), Duration::ZERO, sleep)
    }
}

/// The heartbeat loop, first sleeping `offset` so several heartbeats of one
/// runtime fire at different times (and so land on different workers).
pub(crate) fn heartbeat<S, F>(
    weak: Weak<Detector>,
    offset: Duration,
    mut sleep: S,
) -> impl Future<Output = ()> + Send + 'static
where
    S: FnMut(Duration) -> F + Send + 'static,
    F: Future<Output = ()> + Send,
{
    let interval = weak
        .upgrade()
        .map_or(Duration::from_millis(10), |d| d.config.threshold / 8);
    async move {
        if !offset.is_zero() {
            sleep(offset).await;
        }
        while weak.upgrade().is_some_and(|d| !d.stopped()) {
            thread::heartbeat_polled();
            sleep(interval).await;
        }
    }
}

impl Drop for StallDetector {
    fn drop(&mut self) {
        self.detector.stop.store(true, Ordering::Relaxed);
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.thread().unpark();
            let _ = watchdog.join();
        }
        for slot in self
            .detector
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

/// Warms the symbolizer up with the calling thread's stack, on a helper
/// thread, when the detector captures backtraces.
pub(crate) fn warm_up_symbols(detector: &Detector) {
    if detector.config.backtraces {
        capture::warm_up(capture::own_stack());
    }
}
