//! The lag monitor: a ticker done right. A task sleeps a fixed
//! interval, again and again, and records how late each wake-up is.

use crate::error::BuildError;
use crate::histogram::{Figures, Histogram};
use crate::sync::lock;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Configures a [`LagMonitor`]; see [`LagMonitor::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct LagMonitorBuilder {
    interval: Duration,
    threshold: Duration,
    timer_floor: Duration,
    log: bool,
}

impl LagMonitorBuilder {
    /// How long the ticker sleeps between measurements. Default 100 ms
    /// (a ticker printing every second misses shorter stalls). At least
    /// 1 ms ([`build`](Self::build) refuses less).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Lags above this are counted in [`LagSnapshot::over_threshold`].
    /// Default 50 ms.
    pub fn threshold(mut self, threshold: Duration) -> Self {
        self.threshold = threshold;
        self
    }

    /// Whether a wake-up later than the threshold emits a `tracing` warning
    /// (target `offload::monitor::lag`, fields `lag_ms` and
    /// `threshold_ms`). Default on: a ticker's warning, for log pipelines.
    pub fn log(mut self, log: bool) -> Self {
        self.log = log;
        self
    }

    /// The lateness the timer itself adds on an idle loop, subtracted from
    /// every measurement. Default 1 ms: tokio's timer has millisecond
    /// granularity and rounds deadlines up to the next tick.
    pub fn timer_floor(mut self, floor: Duration) -> Self {
        self.timer_floor = floor;
        self
    }

    /// Checks the settings and creates the monitor. It measures nothing
    /// until its [`ticker`](LagMonitor::ticker) runs on the loop to watch.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] for an interval under 1 ms (the timers this
    /// measures have millisecond granularity).
    pub fn build(self) -> Result<LagMonitor, BuildError> {
        if self.interval < Duration::from_millis(1) {
            return Err(BuildError::Invalid(
                "the lag monitor's interval must be at least 1 ms",
            ));
        }
        Ok(LagMonitor {
            shared: Arc::new(LagShared {
                config: self,
                histogram: Histogram::new(),
                over: AtomicU64::new(0),
                stop: AtomicBool::new(false),
                since: std::sync::Mutex::new(Instant::now()),
            }),
        })
    }

    /// Creates the monitor and spawns its ticker on a tokio runtime (which
    /// needs its timer: `enable_time`).
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn start(self, handle: &tokio::runtime::Handle) -> Result<LagMonitor, BuildError> {
        let monitor = self.build()?;
        handle.spawn(monitor.ticker(tokio::time::sleep));
        Ok(monitor)
    }
}

struct LagShared {
    config: LagMonitorBuilder,
    histogram: Histogram,
    over: AtomicU64,
    stop: AtomicBool,
    /// Start of the current measurement window (reset by `reset`).
    since: std::sync::Mutex<Instant>,
}

/// Measures event-loop lag continuously: how late a timer wake-up comes
/// beyond the interval asked for. A loop that is blocked (a stall) shows
/// as large lag; a loop that is merely busy shows as small, steady lag.
///
/// The monitor is a cheap handle (clone it freely); its ticker task is
/// what measures. Snapshots give count, p50, p99, max and how many
/// wake-ups were later than the threshold. The ticker stops when
/// [`stop`](Self::stop) is called or every handle is dropped.
///
/// ```
/// # #[cfg(feature = "tokio")] {
/// use offload::monitor::LagMonitor;
/// use std::time::Duration;
///
/// let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
/// let lag = LagMonitor::builder().interval(Duration::from_millis(10)).start(rt.handle())?;
/// rt.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
/// let snapshot = lag.snapshot();
/// assert!(snapshot.count() > 0);
/// println!("{snapshot}");
/// # }
/// # Ok::<(), offload::BuildError>(())
/// ```
#[derive(Clone)]
pub struct LagMonitor {
    shared: Arc<LagShared>,
}

impl fmt::Debug for LagMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LagMonitor")
            .field("config", &self.shared.config)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl LagMonitor {
    /// A builder with the defaults: 100 ms interval, 50 ms threshold, 1 ms
    /// timer floor, a `tracing` warning per late wake-up.
    pub fn builder() -> LagMonitorBuilder {
        LagMonitorBuilder {
            interval: Duration::from_millis(100),
            threshold: Duration::from_millis(50),
            timer_floor: Duration::from_millis(1),
            log: true,
        }
    }

    /// The measuring task: spawn it on the loop to watch, with that
    /// runtime's sleep function (e.g. `tokio::time::sleep`,
    /// `|d| async move { async_io::Timer::after(d).await; }`).
    pub fn ticker<S, F>(&self, mut sleep: S) -> impl Future<Output = ()> + Send + 'static
    where
        S: FnMut(Duration) -> F + Send + 'static,
        F: Future<Output = ()> + Send,
    {
        let weak: Weak<LagShared> = Arc::downgrade(&self.shared);
        let interval = self.shared.config.interval;
        async move {
            loop {
                let start = Instant::now();
                sleep(interval).await;
                let lag = start.elapsed().saturating_sub(interval);
                let Some(shared) = weak.upgrade() else { break };
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                let lag = lag.saturating_sub(shared.config.timer_floor);
                shared.histogram.record(lag);
                #[cfg(feature = "metrics")]
                metrics::histogram!("offload_loop_lag_seconds").record(lag.as_secs_f64());
                if lag > shared.config.threshold {
                    shared.over.fetch_add(1, Ordering::Relaxed);
                    if shared.config.log {
                        tracing::warn!(
                            target: "offload::monitor::lag",
                            lag_ms = lag.as_secs_f64() * 1e3,
                            threshold_ms = shared.config.threshold.as_secs_f64() * 1e3,
                            "event loop woke up late: it was blocked"
                        );
                    }
                }
            }
        }
    }

    /// The figures so far.
    pub fn snapshot(&self) -> LagSnapshot {
        self.read(false)
    }

    /// The figures so far, and starts a new window.
    pub fn reset(&self) -> LagSnapshot {
        self.read(true)
    }

    /// Stops the ticker at its next wake-up.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    fn read(&self, reset: bool) -> LagSnapshot {
        let mut since = lock(&self.shared.since);
        let window = since.elapsed();
        if reset {
            *since = Instant::now();
        }
        let figures = self.shared.histogram.read(reset);
        let over = if reset {
            self.shared.over.swap(0, Ordering::Relaxed)
        } else {
            self.shared.over.load(Ordering::Relaxed)
        };
        LagSnapshot {
            figures,
            over,
            window,
            interval: self.shared.config.interval,
            threshold: self.shared.config.threshold,
            timer_floor: self.shared.config.timer_floor,
        }
    }
}

/// Lag figures over a window: how late the ticker's wake-ups were, beyond
/// the interval and the timer's own floor.
#[derive(Debug, Clone)]
pub struct LagSnapshot {
    figures: Figures,
    over: u64,
    window: Duration,
    interval: Duration,
    threshold: Duration,
    timer_floor: Duration,
}

impl LagSnapshot {
    /// Number of wake-ups measured.
    pub fn count(&self) -> u64 {
        self.figures.count
    }

    /// Median lag (bucketed: within 12.5 % above the true value).
    pub fn p50(&self) -> Duration {
        self.figures.quantile(0.5)
    }

    /// 99th percentile lag (bucketed like [`p50`](Self::p50)).
    pub fn p99(&self) -> Duration {
        self.figures.quantile(0.99)
    }

    /// Any quantile `q` in `0.0..=1.0`.
    pub fn quantile(&self, q: f64) -> Duration {
        self.figures.quantile(q)
    }

    /// The largest lag (exact).
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.figures.max)
    }

    /// The mean lag (exact).
    pub fn mean(&self) -> Duration {
        self.figures.mean()
    }

    /// How many wake-ups were later than the threshold.
    pub fn over_threshold(&self) -> u64 {
        self.over
    }

    /// The time the window covers.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The ticker's interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The threshold.
    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// The timer floor subtracted from each measurement.
    pub fn timer_floor(&self) -> Duration {
        self.timer_floor
    }
}

impl fmt::Display for LagSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loop lag over {:?}: {} wake-ups, p50 {:?}, p99 {:?}, max {:?}, {} over {:?} \
             (beyond a {:?} timer floor)",
            self.window,
            self.count(),
            self.p50(),
            self.p99(),
            self.max(),
            self.over,
            self.threshold,
            self.timer_floor
        )
    }
}
