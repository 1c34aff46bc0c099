//! A lock-free log-linear histogram of durations, cheap enough to record on
//! every job (two relaxed atomic adds and a `fetch_max`).
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
    max: AtomicU64,
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

/// A bucket's representative value: the middle of its range.
fn midpoint(b: usize) -> u64 {
    let lo = lower_bound(b);
    let hi = if b + 1 < BUCKETS {
        lower_bound(b + 1)
    } else {
        u64::MAX
    };
    lo + (hi - lo) / 2
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(ns)].fetch_add(1, Relaxed);
        self.max.fetch_max(ns, Relaxed);
    }

    /// A consistent-enough copy: counts recorded during the copy may or may
    /// not be included, which is fine for monitoring.
    pub(crate) fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let max = self.max.load(Relaxed);
        let quantile = |q: f64| -> Duration {
            if total == 0 {
                return Duration::ZERO;
            }
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for (b, &c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Duration::from_nanos(midpoint(b).min(max));
                }
            }
            Duration::from_nanos(max)
        };
        LatencySummary {
            count: total,
            p50: quantile(0.50),
            p99: quantile(0.99),
            max: Duration::from_nanos(max),
        }
    }
}

/// Quantiles of a duration histogram (each within 12.5% of the true value;
/// `max` is exact).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
    }
}
