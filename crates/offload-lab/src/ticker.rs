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
//! # Built on `offload::monitor::LagMonitor`
//!
//! The probe *is* a [`LagMonitor`] ticker: the monitor sleeps, measures
//! each wake-up's lateness and keeps the histogram behind the count, p50
//! and p99 (log-linear buckets: a quantile reads up to 12.5 % above the
//! true value). Its timer floor is set to zero, so a lag here is the raw
//! lateness (`gap - interval`), as the lab has always reported it.
//!
//! Two things the lab needs that `LagMonitor` does not give are done here,
//! in the sleep function handed to [`LagMonitor::ticker`], which runs at
//! every wake-up: the **gap** between two wake-ups (the verdict is on the
//! longest one, measured exactly, not bucketed) and the **timestamps** of
//! `--ticks`. And `LagMonitor` only records a wake-up that happens: a loop
//! blocked until the very end shows no late tick at all. So
//! [`Ticker::finish`] counts the gap still open into the longest gap, and,
//! if the ticker is overdue, lets the loop run for a moment so that the
//! monitor records that late wake-up too.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use offload::monitor::LagMonitor;
use serde::Serialize;

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

/// Gaps between wake-ups, shared between the ticker task and whoever
/// stops it (the lags themselves are in the [`LagMonitor`]).
#[derive(Debug)]
struct Gaps {
    /// When the ticker last woke up (or started).
    last: Instant,
    /// Longest gap so far, in ms.
    max_gap_ms: f64,
}

/// A running lag probe on the current tokio runtime. Stop it with
/// [`Ticker::finish`].
#[derive(Debug)]
pub(crate) struct Ticker {
    interval: Duration,
    monitor: LagMonitor,
    gaps: Arc<Mutex<Gaps>>,
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    /// Spawns the probe on the current runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with the time driver enabled.
    pub(crate) fn spawn(interval: Duration, print: Option<TickPrint>) -> Ticker {
        // The lab's intervals are 1 ms or more (`--interval` is checked
        // when parsed), which the lag monitor accepts.
        let monitor = LagMonitor::builder()
            .interval(interval.max(Duration::from_millis(1)))
            .timer_floor(Duration::ZERO)
            .build()
            .expect("an interval of at least 1 ms builds");
        let gaps = Arc::new(Mutex::new(Gaps {
            last: Instant::now(),
            max_gap_ms: 0.0,
        }));
        let shared = gaps.clone();
        let mut first = true;
        // The monitor's sleep: sleeps, then notes the gap and prints the tick.
        let sleep = move |d: Duration| {
            let (shared, print) = (shared.clone(), print.clone());
            // Like the seed's ticker, print once before the first sleep: a
            // loop blocked from the start shows this line and no other.
            if std::mem::take(&mut first) {
                if let Some(p) = &print {
                    print_tick(p, Duration::ZERO);
                }
            }
            async move {
                tokio::time::sleep(d).await;
                let now = Instant::now();
                let gap = {
                    let mut g = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    let gap = now - g.last;
                    g.last = now;
                    g.max_gap_ms = g.max_gap_ms.max(ms(gap));
                    gap
                };
                if let Some(p) = &print {
                    print_tick(p, gap);
                }
            }
        };
        let task = tokio::spawn(monitor.ticker(sleep));
        Ticker {
            interval,
            monitor,
            gaps,
            task,
        }
    }

    /// Stops the probe and summarises what it saw, counting the gap still
    /// open since the last tick.
    pub(crate) async fn finish(self) -> LagStats {
        let overdue = || {
            let g = self.gaps.lock().unwrap_or_else(PoisonError::into_inner);
            g.last.elapsed() > self.interval
        };
        if overdue() {
            // The loop was blocked until now: its timer is due, so the next
            // pass of the timer driver wakes the ticker, and the monitor
            // records that late wake-up. A sleep shorter than the interval
            // makes that pass happen.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.task.abort();
        self.monitor.stop();
        let max_gap_ms = {
            let g = self.gaps.lock().unwrap_or_else(PoisonError::into_inner);
            let open = g.last.elapsed();
            if open > self.interval {
                g.max_gap_ms.max(ms(open))
            } else {
                g.max_gap_ms
            }
        };
        let lag = self.monitor.snapshot();
        let (p50_lag_ms, p99_lag_ms) = if lag.count() == 0 {
            (f64::NAN, f64::NAN)
        } else {
            (ms(lag.p50()), ms(lag.p99()))
        };
        LagStats {
            ticks: lag.count(),
            max_gap_ms,
            p50_lag_ms,
            p99_lag_ms,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_blocked_until_the_end_shows_its_gap_and_its_lag() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let stats = rt.block_on(async {
            let ticker = Ticker::spawn(Duration::from_millis(10), None);
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(300)); // blocks the loop
            ticker.finish().await
        });
        assert!(stats.max_gap_ms >= 290.0, "{stats:?}");
        // The overdue wake-up reached the monitor's histogram too.
        assert!(stats.ticks >= 1, "{stats:?}");
        assert!(stats.p99_lag_ms >= 200.0, "{stats:?}");
    }
}
