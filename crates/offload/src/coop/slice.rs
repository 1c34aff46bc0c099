//! The clock reads behind [`Budget::slice`](super::Budget::slice).
//!
//! A slice budget must notice when its slice is spent, but reading the clock
//! (`Instant::now`, 20 to 30 ns) costs more than a step of a tight loop (can
//! be under a nanosecond). So a tick reads the clock only when one of two
//! things says so:
//!
//! - **The epoch moved** (see `epoch.rs`): the clock thread advances it
//!   every millisecond while budgets tick. This alone bounds how late a
//!   slice ends, whatever the loop did before: one period plus one step.
//! - **The stride ran out**: a countdown of ticks learned from the loop's
//!   own rate so that a read comes about every `slice / 8`, and the last one
//!   is aimed at the slice's end. In a steady loop this makes a slice end
//!   on time (within a small fraction of it) rather than on the next epoch,
//!   and it is the whole mechanism if the clock thread could not start.
//!
//! The stride is learned at each read from the ticks since the previous read
//! and the time they took: grown by at most 4× per read (one noisy fast
//! interval cannot push the next read far out), shrunk at once when an
//! interval overran. A yield that ends (its future polled to `Ready`) opens
//! a fresh slice: time spent waiting in the run queue is not charged to the
//! task, and the step after the yield is.
//!
//! The reasoning and the measurements behind this are in `README.md`.

use super::epoch;
use std::time::{Duration, Instant};

/// A slice is split into this many check intervals.
const CHECKS_PER_SLICE: u64 = 8;
/// The stride may grow by at most this factor per check.
const MAX_GROWTH: u64 = 4;

/// State of a time-slice budget, touched only when its tick countdown runs
/// out or the epoch moves.
#[derive(Debug, Clone)]
pub(crate) struct SliceClock {
    /// Length of a slice, in nanoseconds.
    slice_ns: u64,
    /// Desired time between two clock checks: `slice / 8`, at least 1 ns.
    check_ns: u64,
    /// Learned number of ticks per check interval (at least 1).
    stride: u32,
    /// Number of ticks armed at the previous check (what we measure against).
    armed: u32,
    /// When the current slice began; `None` right after a yield (and before
    /// the first tick): the next check starts a new slice.
    slice_start: Option<Instant>,
    /// When the clock was last read.
    last_check: Instant,
    /// The epoch at the last clock read: a tick that finds another one
    /// reads the clock.
    seen: u64,
}

impl SliceClock {
    pub(crate) fn new(slice: Duration) -> Self {
        let slice_ns = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
        SliceClock {
            slice_ns,
            check_ns: (slice_ns / CHECKS_PER_SLICE).max(1),
            stride: 1,
            armed: 1,
            slice_start: None,
            last_check: Instant::now(),
            seen: epoch::now(),
        }
    }

    /// The epoch seen at the last clock read.
    #[inline(always)]
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }

    /// Opens a new slice now: called when a yield ends, so that the step
    /// that follows it counts in the new slice while the time spent waiting
    /// to be polled again does not. Returns the ticks until the next read.
    pub(crate) fn open(&mut self) -> u32 {
        if self.slice_ns == 0 {
            return 1; // the next tick finds the (empty) slice spent
        }
        self.seen = epoch::now();
        self.open_at(Instant::now())
    }

    fn open_at(&mut self, now: Instant) -> u32 {
        epoch::visit();
        self.slice_start = Some(now);
        self.last_check = now;
        self.armed = self.stride;
        self.armed
    }

    /// Forgets the current slice: the next check starts a new one.
    pub(crate) fn restart(&mut self) {
        self.slice_start = None;
    }

    /// Reads the clock, updates the stride, and returns `(yield now?, ticks
    /// until the next read)`. `left` is what remained of the countdown: 0
    /// when it ran out, more when the epoch moved first.
    pub(crate) fn check(&mut self, left: u32) -> (bool, u32) {
        let now = Instant::now();
        self.seen = epoch::now();
        let Some(start) = self.slice_start else {
            // First tick ever, or after a yield that was not seen to end (a
            // dropped tick, `should_yield`): open a new slice. With a
            // zero-length slice it is spent already.
            if self.slice_ns == 0 {
                self.last_check = now;
                return (true, 1);
            }
            return (false, self.open_at(now));
        };
        epoch::visit();

        let since_check = nanos(now.saturating_duration_since(self.last_check)).max(1);
        self.last_check = now;
        let ticks = u64::from(self.armed.saturating_sub(left).max(1));
        // Learn from full intervals, from any interval that overran, and
        // from intervals the epoch cut short once they are long enough to
        // measure a rate.
        let full = left == 0 && self.armed == self.stride;
        let measurable = since_check >= self.check_ns / 4;
        if full || since_check > self.check_ns || (left > 0 && measurable) {
            let ideal = ticks.saturating_mul(self.check_ns) / since_check;
            let capped = ideal.min(u64::from(self.stride).saturating_mul(MAX_GROWTH));
            self.stride = clamp_u32(capped);
        }

        let elapsed = nanos(now.saturating_duration_since(start));
        if elapsed >= self.slice_ns {
            self.slice_start = None;
            // The next tick opens the new slice (after the yield).
            return (true, 1);
        }
        let remaining = self.slice_ns - elapsed;
        self.armed = if remaining < self.check_ns {
            // Ticks that fill the rest of the slice at the learned rate.
            let to_deadline = u64::from(self.stride).saturating_mul(remaining) / self.check_ns;
            clamp_u32(to_deadline)
        } else {
            self.stride
        };
        (false, self.armed)
    }

    /// The learned stride (ticks between two clock checks).
    #[cfg(test)]
    fn stride(&self) -> u32 {
        self.stride
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Clamps to `1..=u32::MAX`.
fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock and its countdown, as a `Budget` holds them.
    struct Harness {
        clock: SliceClock,
        countdown: u32,
    }

    impl Harness {
        fn new(slice: Duration) -> Self {
            Harness {
                clock: SliceClock::new(slice),
                countdown: 1,
            }
        }

        /// Runs `ticks` ticks of a loop that spins `spin` per tick; counts
        /// checks and yields.
        fn drive(&mut self, ticks: u64, spin: Duration) -> (u64, u64) {
            let (mut checks, mut yields) = (0, 0);
            for _ in 0..ticks {
                if !spin.is_zero() {
                    let t = Instant::now();
                    while t.elapsed() < spin {}
                }
                self.countdown -= 1;
                if self.countdown == 0 || epoch::now() != self.clock.seen() {
                    checks += 1;
                    let (y, next) = self.clock.check(self.countdown);
                    yields += u64::from(y);
                    self.countdown = next;
                }
            }
            (checks, yields)
        }
    }

    #[test]
    fn stride_grows_for_fast_loops() {
        let mut h = Harness::new(Duration::from_millis(5));
        let (checks, _) = h.drive(2_000_000, Duration::ZERO);
        assert!(h.clock.stride() > 100, "stride {}", h.clock.stride());
        assert!(checks < 200_000, "{checks} checks for 2M ticks");
    }

    #[test]
    fn stride_shrinks_when_steps_slow_down() {
        // 1 ms slices: with 1 µs steps the stride settles near 125 ticks.
        let mut h = Harness::new(Duration::from_millis(1));
        h.drive(1_000_000, Duration::ZERO);
        let fast = h.clock.stride();
        // The next read (the epoch moving, or the interval armed for fast
        // steps running out) finds the interval overran and re-learns.
        h.drive(u64::from(fast) + 1_000, Duration::from_micros(1));
        assert!(
            h.clock.stride() < fast / 10,
            "{} vs {fast}",
            h.clock.stride()
        );
        assert!(h.clock.stride() <= 1_000, "{}", h.clock.stride());
    }

    #[test]
    fn zero_slice_yields_every_tick() {
        let mut h = Harness::new(Duration::ZERO);
        let (checks, yields) = h.drive(100, Duration::ZERO);
        assert_eq!((checks, yields), (100, 100));
    }
}
