//! Rate limits for new reports: a token bucket per kind of episode, so
//! a burst of one kind (starved episodes on a busy machine) cannot crowd
//! out another (real stalls). Repeats and ends of a reported episode are
//! not limited; the episodes a limit suppressed are counted and the count
//! rides on the next report of that kind.

/// A token bucket for new reports of one class.
pub(super) struct RateLimit {
    per_minute: u64,
    /// In micro-tokens.
    tokens: u64,
    last_refill: u64,
    /// Episodes not reported since the last report of this class.
    suppressed: u64,
}

const TOKEN: u64 = 1_000_000;

impl RateLimit {
    pub(super) fn new(per_minute: u32) -> Self {
        let per_minute = u64::from(per_minute);
        RateLimit {
            per_minute,
            tokens: per_minute * TOKEN,
            last_refill: 0,
            suppressed: 0,
        }
    }

    /// Whether a token is there (refilled up to `now`), without taking it.
    pub(super) fn available(&mut self, now: u64) -> bool {
        let elapsed = now.saturating_sub(self.last_refill);
        self.last_refill = now;
        // per_minute tokens per 60e6 µs.
        self.tokens = (self.tokens + elapsed * self.per_minute / 60).min(self.per_minute * TOKEN);
        self.tokens >= TOKEN
    }

    /// Takes a token if there is one; counts a suppressed episode if not.
    pub(super) fn allow(&mut self, now: u64) -> bool {
        let available = self.available(now);
        self.spend(available);
        available
    }

    /// Spends the token seen by `available`, or counts a suppressed episode.
    pub(super) fn spend(&mut self, available: bool) {
        if available {
            self.tokens -= TOKEN;
        } else {
            self.suppressed += 1;
        }
    }

    /// The count of suppressed episodes, for the report that goes out now.
    pub(super) fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;

    #[test]
    fn a_burst_then_one_per_period() {
        let mut limit = RateLimit::new(2);
        assert!(limit.allow(0));
        assert!(limit.allow(1));
        assert!(!limit.allow(2));
        assert_eq!(limit.take_suppressed(), 1);
        assert_eq!(limit.take_suppressed(), 0);
        // Two per minute: one more after 30 s.
        assert!(!limit.allow(29_000_000));
        assert!(limit.allow(31_000_000));
    }

    #[test]
    fn zero_per_minute_reports_nothing() {
        let mut limit = RateLimit::new(0);
        assert!(!limit.available(u64::MAX / 2));
        assert!(!limit.allow(1));
    }

    #[test]
    fn a_look_without_a_report_keeps_the_token() {
        let mut limit = RateLimit::new(1);
        assert!(limit.available(0));
        assert!(limit.available(0));
        limit.spend(true);
        assert!(!limit.available(0));
    }
}
