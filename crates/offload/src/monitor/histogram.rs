//! A lock-free log-linear histogram of durations (microseconds): eight
//! sub-buckets per power of two, so any quantile is within 12.5 % of the
//! truth, from 1 µs to days, in a fixed 2.5 KiB. One writer (the ticker)
//! and any number of readers; recording is a few relaxed atomic adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Values below this are counted exactly, one bucket each.
const LINEAR: u64 = 16;
/// Sub-buckets per power of two (2^3).
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two from 2^4 up to 2^63.
const BUCKETS: usize = LINEAR as usize + (64 - 4) * SUB as usize;

pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("max_us", &self.max_us.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn index(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros(); // >= 4
    let sub = (us >> (exp - SUB_BITS)) & (SUB - 1);
    LINEAR as usize + (exp as usize - 4) * SUB as usize + sub as usize
}

/// The largest value that falls in bucket `i`.
fn upper(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let exp = (i - LINEAR as usize) as u32 / SUB as u32 + 4;
    let sub = (i - LINEAR as usize) as u64 % SUB;
    let width = 1u64 << (exp - SUB_BITS);
    ((SUB + sub) << (exp - SUB_BITS)).saturating_add(width - 1)
}

/// A copy of the histogram's figures at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Figures {
    pub(crate) count: u64,
    pub(crate) sum_us: u64,
    pub(crate) max_us: u64,
    pub(crate) buckets: Vec<u64>,
}

impl Figures {
    /// The `q` quantile (0..=1), as the upper bound of its bucket, never
    /// above the true maximum.
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(upper(i).min(self.max_us));
            }
        }
        Duration::from_micros(self.max_us)
    }
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, value: Duration) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.buckets[index(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Reads the figures; with `reset`, zeroes them as it goes (a value
    /// recorded meanwhile lands in one snapshot or the next; the count is
    /// the bucket total, so quantiles always agree with it).
    pub(crate) fn read(&self, reset: bool) -> Figures {
        let take = |a: &AtomicU64| {
            if reset {
                a.swap(0, Ordering::Relaxed)
            } else {
                a.load(Ordering::Relaxed)
            }
        };
        let buckets: Vec<u64> = self.buckets.iter().map(take).collect();
        Figures {
            count: buckets.iter().sum(),
            sum_us: take(&self.sum_us),
            max_us: take(&self.max_us),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_their_values() {
        for us in [
            0,
            1,
            15,
            16,
            17,
            31,
            32,
            100,
            1_000,
            65_535,
            1 << 40,
            u64::MAX,
        ] {
            let i = index(us);
            assert!(i < BUCKETS);
            assert!(upper(i) >= us, "{us} above bucket {i} upper {}", upper(i));
            if i > 0 {
                assert!(upper(i - 1) < us, "{us} fits an earlier bucket");
            }
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::new();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let f = h.read(true);
        assert_eq!(f.count, 100);
        let p50 = f.quantile(0.5).as_millis();
        assert!((50..=57).contains(&p50), "p50 {p50}");
        assert_eq!(f.quantile(1.0), Duration::from_millis(100));
        assert_eq!(h.read(false).count, 0);
    }
}
