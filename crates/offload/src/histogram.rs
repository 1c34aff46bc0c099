//! A lock-free log-linear histogram of durations, cheap enough to record on
//! every job (three relaxed atomic operations), shared by the pools'
//! metrics and the lag monitor.
//!
//! Values (nanoseconds) below 16 get a bucket each; above, each power of two
//! is split into 8 buckets, so any reported quantile is within 12.5% of the
//! true value. 496 buckets cover the whole `u64` range.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = 496;

pub(crate) struct Histogram {
    counts: Box<[AtomicU64]>,
    /// Sum of all values, in nanoseconds (saturating in practice: 584 years).
    sum: AtomicU64,
    max: AtomicU64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("max_ns", &self.max.load(Relaxed))
            .finish_non_exhaustive()
    }
}

fn bucket_of(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros() as u64;
    let sub = (v >> (msb - SUB_BITS as u64)) & (SUB - 1);
    ((msb - SUB_BITS as u64) * SUB + sub + SUB) as usize
}

/// The smallest value that lands in bucket `b`.
fn lower_bound(b: usize) -> u64 {
    let b = b as u64;
    if b < 2 * SUB {
        return b;
    }
    let msb = (b - SUB) / SUB + SUB_BITS as u64;
    let sub = (b - SUB) % SUB;
    (1 << msb) | (sub << (msb - SUB_BITS as u64))
}

/// The largest value that lands in bucket `b`.
fn upper_bound(b: usize) -> u64 {
    if b + 1 < BUCKETS {
        lower_bound(b + 1) - 1
    } else {
        u64::MAX
    }
}

/// A copy of a histogram's figures at one moment (values in nanoseconds).
#[derive(Debug, Clone, Default)]
pub(crate) struct Figures {
    pub(crate) count: u64,
    pub(crate) sum: u64,
    pub(crate) max: u64,
    buckets: Vec<u64>,
}

impl Figures {
    /// The `q` quantile (0..=1): the upper bound of its bucket, so at most
    /// 12.5% above the true value, and never above the true maximum.
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (b, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_nanos(upper_bound(b).min(self.max));
            }
        }
        Duration::from_nanos(self.max)
    }

    /// The mean, or zero when empty.
    pub(crate) fn mean(&self) -> Duration {
        Duration::from_nanos(self.sum.checked_div(self.count).unwrap_or(0))
    }
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(ns)].fetch_add(1, Relaxed);
        self.sum.fetch_add(ns, Relaxed);
        // Most values are not a new maximum: a plain load spares the
        // read-modify-write (and the cache-line transfer it costs when two
        // threads record at once).
        if ns > self.max.load(Relaxed) {
            self.max.fetch_max(ns, Relaxed);
        }
    }

    /// Reads the figures; with `reset`, zeroes them as it goes (a value
    /// recorded meanwhile lands in one read or the next; the count is the
    /// bucket total, so quantiles always agree with it).
    pub(crate) fn read(&self, reset: bool) -> Figures {
        let take = |a: &AtomicU64| {
            if reset {
                a.swap(0, Relaxed)
            } else {
                a.load(Relaxed)
            }
        };
        let buckets: Vec<u64> = self.counts.iter().map(take).collect();
        Figures {
            count: buckets.iter().sum(),
            sum: take(&self.sum),
            max: take(&self.max),
            buckets,
        }
    }

    /// Count, p50, p99 and max, for metrics snapshots.
    pub(crate) fn summary(&self) -> LatencySummary {
        let f = self.read(false);
        LatencySummary {
            count: f.count,
            p50: f.quantile(0.50),
            p99: f.quantile(0.99),
            max: Duration::from_nanos(f.max),
        }
    }
}

/// Quantiles of a duration histogram (each at most 12.5% above the true
/// value; `max` is exact).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencySummary {
    /// How many durations were recorded.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest recorded.
    pub max: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_round_trip() {
        let mut prev = 0;
        for b in 0..BUCKETS {
            let lo = lower_bound(b);
            assert!(b == 0 || lo > prev, "bucket {b}");
            assert_eq!(bucket_of(lo), b);
            assert_eq!(bucket_of(upper_bound(b)), b);
            prev = lo;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_within_precision() {
        let h = Histogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        let p50 = s.p50.as_micros() as f64;
        let p99 = s.p99.as_micros() as f64;
        assert!((p50 - 500.0).abs() / 500.0 < 0.125, "p50 = {p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.125, "p99 = {p99}");
        assert_eq!(s.max, Duration::from_micros(1000));
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(Histogram::new().summary(), LatencySummary::default());
        assert_eq!(Histogram::new().read(false).mean(), Duration::ZERO);
    }

    #[test]
    fn read_with_reset_starts_a_new_window() {
        let h = Histogram::new();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let f = h.read(true);
        assert_eq!(f.count, 100);
        assert_eq!(f.quantile(1.0), Duration::from_millis(100));
        assert_eq!(f.mean(), Duration::from_micros(50_500));
        let p50 = f.quantile(0.5).as_millis();
        assert!((50..=57).contains(&p50), "p50 {p50}");
        assert_eq!(h.read(false).count, 0);
    }
}
