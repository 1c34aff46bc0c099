//! The lag probe: the seed's `ticker`, measured.
//!
//! The seed's `ticker()` prints the time and sleeps one second; a gap of
//! more than a second between two printed timestamps means the event loop
//! was blocked. This ticker sleeps a fixed, shorter interval (10 ms by
//! default) on the loop under test and records, for every wake-up, the gap
//! since the previous one and how late it is (`gap - interval`). When the
//! probe stops, the gap still open (time since the last tick) counts too:
//! a loop blocked until the very end must not look idle.
//!
//! Lag is measured with tokio's timer, whose resolution is 1 ms: an idle
//! loop shows lags of 0 to ~1 ms, not 0.
//!
//! (Lab-local until `offload::monitor::LagMonitor` lands; the integrator
//! swaps it in here.)

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::report::percentiles;

/// Where the ticker prints its timestamps, if it does (`--ticks`).
#[derive(Debug, Clone)]
pub(crate) struct TickPrint {
    /// Label printed with each tick, e.g. `io/blocking`.
    pub(crate) label: String,
    /// One JSON object per tick instead of a text line.
    pub(crate) json: bool,
}

/// What the probe saw, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct LagStats {
    /// Wake-ups that happened.
    pub(crate) ticks: u64,
    /// Longest time between two ticks (or from the last tick to the end).
    pub(crate) max_gap_ms: f64,
    /// Median lateness of a wake-up.
    pub(crate) p50_lag_ms: f64,
    /// 99th percentile of the lateness of a wake-up.
    pub(crate) p99_lag_ms: f64,
}

/// Samples shared between the ticker task and whoever stops it.
#[derive(Debug)]
struct Samples {
    /// When the ticker last woke up (or started).
    last: Instant,
    /// `gap - interval` of every wake-up, in ms.
    lags_ms: Vec<f64>,
    /// Longest gap so far, in ms.
    max_gap_ms: f64,
}

/// A running lag probe on the current tokio runtime. Stop it with
/// [`Ticker::finish`].
#[derive(Debug)]
pub(crate) struct Ticker {
    interval: Duration,
    samples: Arc<Mutex<Samples>>,
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    /// Spawns the probe on the current runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with the time driver enabled.
    pub(crate) fn spawn(interval: Duration, print: Option<TickPrint>) -> Ticker {
        let samples = Arc::new(Mutex::new(Samples {
            last: Instant::now(),
            lags_ms: Vec::new(),
            max_gap_ms: 0.0,
        }));
        let shared = samples.clone();
        let task = tokio::spawn(async move {
            // Like the seed's ticker, print once before the first sleep: a
            // loop blocked from the start shows this line and no other.
            if let Some(p) = &print {
                print_tick(p, Duration::ZERO);
            }
            loop {
                tokio::time::sleep(interval).await;
                let now = Instant::now();
                let gap = {
                    let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    let gap = now - s.last;
                    s.last = now;
                    s.record(gap, interval);
                    gap
                };
                if let Some(p) = &print {
                    print_tick(p, gap);
                }
            }
        });
        Ticker {
            interval,
            samples,
            task,
        }
    }

    /// Stops the probe and summarises what it saw, counting the gap still
    /// open since the last tick.
    pub(crate) fn finish(self) -> LagStats {
        self.task.abort();
        let mut s = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let open = s.last.elapsed();
        if open > self.interval {
            s.record(open, self.interval);
        }
        let ticks = s.lags_ms.len() as u64;
        let max_gap_ms = s.max_gap_ms;
        let (p50_lag_ms, p99_lag_ms) = percentiles(&mut s.lags_ms);
        LagStats {
            ticks,
            max_gap_ms,
            p50_lag_ms,
            p99_lag_ms,
        }
    }
}

impl Samples {
    fn record(&mut self, gap: Duration, interval: Duration) {
        let gap_ms = ms(gap);
        self.max_gap_ms = self.max_gap_ms.max(gap_ms);
        self.lags_ms.push(ms(gap.saturating_sub(interval)));
    }
}

/// A duration in (fractional) milliseconds.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Prints one tick the way the seed does (`print(datetime.datetime.now())`),
/// in UTC, with the gap since the previous tick.
fn print_tick(p: &TickPrint, gap: Duration) {
    let at = humantime::format_rfc3339_micros(SystemTime::now());
    if p.json {
        let line = serde_json::json!({
            "kind": "tick", "label": p.label, "at": at.to_string(), "gap_ms": ms(gap),
        });
        println!("{line}");
    } else {
        println!("{at}  {:<18} gap {:>8.1} ms", p.label, ms(gap));
    }
}
