//! The adaptive clock check behind [`Budget::slice`](super::Budget::slice).
//!
//! # The problem
//!
//! A time-slice budget must notice when its slice is spent, but reading the
//! clock (`Instant::now`, about 20 ns through the vDSO) costs more than one
//! step of a tight loop (which can take less than a nanosecond). Reading it on
//! every tick would make the budget the most expensive part of the loop.
//!
//! # The mechanism
//!
//! The budget reads the clock only every `stride` ticks, and learns `stride`
//! from the loop itself:
//!
//! - **Target.** A check should come about every `slice / 8` (the *check
//!   interval*): often enough that a slice is overrun by a small fraction at
//!   most, rarely enough that one clock read per check interval costs next to
//!   nothing (20 ns per 125 µs for a 1 ms slice: 0.016 %).
//! - **Measure.** At each check the budget knows how many ticks it let pass
//!   since the previous check and how long they took, hence the loop's rate,
//!   and sets `stride = ticks × check interval / time taken`.
//! - **Grow slowly, shrink at once.** The stride grows by at most 4× per
//!   check, so one noisy fast interval cannot make the next check come far too
//!   late; it shrinks in one step, as far as needed, when a check finds that
//!   its interval overran (the steps became slower). From a stride of 1 it
//!   reaches a million ticks per check in ten checks.
//! - **Aim at the deadline.** When less than one check interval of the slice
//!   is left, the next check is armed for the ticks that fill the rest of the
//!   slice at the measured rate, so the slice ends on time instead of up to a
//!   check interval late. These shortened intervals do not teach the stride
//!   (they are too short to measure well) unless they overran.
//! - **Restart.** After a yield the next tick starts a fresh slice: the time
//!   the task spent waiting in the scheduler is not charged to it. The stride
//!   is kept: the loop usually runs at the same rate after a yield.
//!
//! So a steady loop reads the clock about 8 to 10 times per slice whatever its
//! speed, and a loop whose steps suddenly become slower is caught at its next
//! check, which then re-learns the rate. That check comes late by the ratio
//! of the slowdown (1000 times slower steps: 1000 check intervals): the one
//! thing a budget that does not read the clock cannot know.

use std::time::{Duration, Instant};

/// A slice is split into this many check intervals.
const CHECKS_PER_SLICE: u64 = 8;
/// The stride may grow by at most this factor per check.
const MAX_GROWTH: u64 = 4;

/// State of a time-slice budget, touched only when the tick countdown of its
/// [`Budget`](super::Budget) reaches zero.
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
        }
    }

    /// Forgets the current slice: the next check starts a new one.
    pub(crate) fn restart(&mut self) {
        self.slice_start = None;
    }

    /// Called when the countdown reaches zero. Reads the clock, updates the
    /// stride, and returns `(yield now?, ticks until the next check)`.
    pub(crate) fn check(&mut self) -> (bool, u32) {
        let now = Instant::now();
        let Some(start) = self.slice_start else {
            // First tick after a yield (or ever): open a new slice. With a
            // zero-length slice it is spent already.
            self.slice_start = Some(now);
            self.last_check = now;
            if self.slice_ns == 0 {
                self.slice_start = None;
                return (true, 1);
            }
            self.armed = self.stride;
            return (false, self.armed);
        };

        let since_check = nanos(now.saturating_duration_since(self.last_check)).max(1);
        self.last_check = now;
        let ticks = u64::from(self.armed);
        // Learn from full intervals, and from any interval that overran.
        if self.armed == self.stride || since_check > self.check_ns {
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
                if self.countdown == 0 {
                    checks += 1;
                    let (y, next) = self.clock.check();
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
        // The interval armed for fast steps runs out (late: that is the
        // price of not reading the clock), then one check re-learns.
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
