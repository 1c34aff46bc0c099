//! Cooperative yielding, lab-local: the seed's `await asyncio.sleep(0)`
//! every N steps, and our alternative, yielding once a time slice is spent.
//!
//! This file mirrors the API planned for `offload::coop`
//! (`Budget::every(n)`, `Budget::slice(d)`, `budget.tick().await`) so that
//! the integrator can replace it with `use offload::coop::Budget;` and
//! delete the file. Until then it yields with `tokio::task::yield_now()`.

use std::fmt;
use std::time::{Duration, Instant};

use crate::options::short;

/// How often a slice budget reads the clock: every this many ticks.
/// `Instant::now()` costs ~20 ns, a countdown step well under 1 ns, so
/// reading it every tick would measure the clock, not the work; 64 steps
/// are still far below any slice we use (≥ 100 µs).
const CLOCK_EVERY: u32 = 64;

/// When to yield.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Every `n` ticks (the seed's `if counter % N == 0`).
    Every(u64),
    /// Once `d` has passed since the last yield.
    Slice(Duration),
}

impl Policy {
    /// A fresh budget with this policy: the one place that names the
    /// shim's constructors, so swapping in `offload::coop` touches only
    /// this file.
    pub(crate) fn budget(self) -> Budget {
        match self {
            Policy::Every(n) => Budget::every(n),
            Policy::Slice(d) => Budget::slice(d),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Every(n) => write!(f, "every={n}"),
            Policy::Slice(d) => write!(f, "slice={}", short(*d)),
        }
    }
}

/// Counts steps of a CPU-bound loop and yields to the scheduler when its
/// policy says so.
#[derive(Debug)]
pub(crate) struct Budget {
    policy: Policy,
    /// Ticks since the last yield (every) or the last clock read (slice).
    count: u64,
    /// When the current slice started.
    since: Instant,
    /// How many times this budget yielded.
    yields: u64,
}

impl Budget {
    /// Yields every `n` ticks (`n = 0` is treated as 1).
    pub(crate) fn every(n: u64) -> Budget {
        Budget::new(Policy::Every(n.max(1)))
    }

    /// Yields once `d` has passed since the previous yield.
    pub(crate) fn slice(d: Duration) -> Budget {
        Budget::new(Policy::Slice(d))
    }

    fn new(policy: Policy) -> Budget {
        Budget {
            policy,
            count: 0,
            since: Instant::now(),
            yields: 0,
        }
    }

    /// Counts one step; yields to the scheduler if the budget is spent.
    pub(crate) async fn tick(&mut self) {
        if self.due() {
            self.yields += 1;
            tokio::task::yield_now().await;
            self.since = Instant::now();
        }
    }

    /// How many times the budget yielded so far.
    #[cfg(test)]
    pub(crate) fn yields(&self) -> u64 {
        self.yields
    }

    /// Counts one step and says whether it is time to yield.
    #[inline]
    fn due(&mut self) -> bool {
        self.count += 1;
        match self.policy {
            Policy::Every(n) => {
                if self.count >= n {
                    self.count = 0;
                    true
                } else {
                    false
                }
            }
            Policy::Slice(d) => {
                if self.count >= u64::from(CLOCK_EVERY) {
                    self.count = 0;
                    self.since.elapsed() >= d
                } else {
                    false
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_n_yields_once_per_n_ticks() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut b = Budget::every(10);
            for _ in 0..100 {
                b.tick().await;
            }
            assert_eq!(b.yields(), 10);
            let mut s = Budget::slice(Duration::from_secs(3600));
            for _ in 0..1000 {
                s.tick().await;
            }
            assert_eq!(s.yields(), 0);
        });
    }
}
