//! Which threads hold a runtime's workers: what a runtime's own per-worker
//! counters prove about its threads.
//!
//! A multi-thread tokio runtime has a fixed number of workers ("cores").
//! The thread that holds a core polls its tasks; `block_in_place` hands
//! the core to another thread, and the thread that gave it away may end
//! up back in the blocking pool. No stable hook says which thread holds
//! which core, so the watchdog counts instead (see the design note):
//!
//! - a core whose counter (`worker_total_busy_duration`) has not moved
//!   over a window is idle or stuck: a worker publishes it between polls,
//!   every 61 scheduler ticks and when it parks, never inside a poll;
//! - a thread parked (by the park hook) throughout the window holds an
//!   idle core of its own, whose counter cannot have moved in it;
//! - so the unmoved cores that parked threads do not account for are the
//!   only ones that can hold a stuck worker. None left over proves that no
//!   thread of the runtime is stuck in a poll, whatever it looks like.
//!
//! When the count cannot clear a thread, its stack can: inside tokio's
//! `block_in_place`, or a blocking-pool thread running no scheduler, it
//! holds no worker (the functions at the end of this file).

use super::report::StallBacktrace;

/// One runtime's per-core progress counters, as last read, and when each
/// last changed (watchdog time, µs).
#[derive(Debug, Default)]
pub(super) struct CoreProgress {
    last: Vec<u64>,
    changed_at: Vec<u64>,
}

impl CoreProgress {
    /// Takes a new reading of the counters. A change seen now happened
    /// some time after the previous reading, at `since`: it is dated
    /// `since`, the earliest it can have been, so a late reading (the
    /// watchdog descheduled on a loaded machine) can only make a core look
    /// unmoved for longer, which only ever makes the answer "not proven".
    pub(super) fn update(&mut self, values: &[u64], since: u64) {
        self.last.resize(values.len(), 0);
        self.changed_at.resize(values.len(), since);
        for (i, &v) in values.iter().enumerate() {
            if self.last[i] != v {
                self.last[i] = v;
                self.changed_at[i] = since;
            }
        }
    }

    /// How many cores may hold a stuck worker: cores unmoved over the
    /// `window` before `now`, minus the threads parked throughout it.
    /// `parked_since` gives, for each parked thread of the runtime, the
    /// time it parked; `margin` covers the time between the park hook and
    /// the counter's update, and the watchdog's reading granularity.
    pub(super) fn unexplained(
        &self,
        parked_since: impl Iterator<Item = u64>,
        now: u64,
        window: u64,
        margin: u64,
    ) -> usize {
        let window_start = now.saturating_sub(window);
        let unmoved = self
            .changed_at
            .iter()
            .filter(|&&t| t <= window_start)
            .count();
        let parked = parked_since
            .filter(|&since| since.saturating_add(margin) <= window_start)
            .count();
        unmoved.saturating_sub(parked)
    }
}

// What a thread's stack says about its role. tokio's own frames, by name:
// a user's function of the same name does not count. Names need the
// stack's symbols resolved; `conclusive` says whether they were.

/// Whether the stack shows the thread inside tokio's `block_in_place`
/// (tokio's own frames, so a user's function of that name does not count).
pub(super) fn in_place(backtrace: &StallBacktrace) -> bool {
    has_frame(backtrace, |n| {
        n.starts_with("tokio::") && n.contains("block_in_place")
    })
}

/// Whether the stack shows a thread that holds no worker: inside
/// `block_in_place` (`Some(true)`), or a blocking-pool thread that runs no
/// scheduler (`Some(false)`: idle in the pool after giving its worker away,
/// or running a `spawn_blocking` job). tokio's workers run as blocking-pool
/// jobs, so a worker's stack shows both the pool and the scheduler.
pub(super) fn not_a_worker(backtrace: &StallBacktrace) -> Option<bool> {
    if in_place(backtrace) {
        return Some(true);
    }
    let pool = has_frame(backtrace, |n| {
        n.starts_with("tokio::runtime::blocking::pool")
    });
    let scheduler = has_frame(backtrace, |n| n.starts_with("tokio::runtime::scheduler"));
    (pool && !scheduler).then_some(false)
}

/// Whether a stack can say what its thread does: it was captured and its
/// names resolved, or it could not be captured at all (asking again would
/// not help).
pub(super) fn conclusive(backtrace: &StallBacktrace) -> bool {
    backtrace.unavailable.is_some() || backtrace.frames.iter().any(|f| f.function.is_some())
}

/// Whether the stack shows a tokio scheduler loop (a worker, or a
/// current-thread runtime's `block_on`).
pub(super) fn runs_scheduler(backtrace: &StallBacktrace) -> bool {
    has_frame(backtrace, |n| n.starts_with("tokio::runtime::scheduler"))
}

fn has_frame(backtrace: &StallBacktrace, f: impl Fn(&str) -> bool) -> bool {
    backtrace
        .frames
        .iter()
        .any(|frame| frame.function.as_deref().is_some_and(&f))
}

#[cfg(test)]
mod tests {
    use super::CoreProgress;

    fn progress(changes: &[(u64, &[u64])]) -> CoreProgress {
        let mut p = CoreProgress::default();
        for (now, values) in changes {
            p.update(values, *now);
        }
        p
    }

    #[test]
    fn cores_that_move_explain_themselves() {
        let p = progress(&[(0, &[1, 1]), (90, &[2, 3])]);
        assert_eq!(p.unexplained(std::iter::empty(), 100, 50, 10), 0);
    }

    #[test]
    fn a_core_unmoved_without_a_parked_thread_may_be_stuck() {
        let p = progress(&[(0, &[1, 1]), (90, &[2, 1])]);
        assert_eq!(p.unexplained(std::iter::empty(), 100, 50, 10), 1);
        // A thread parked since 10 holds the unmoved core.
        assert_eq!(p.unexplained([10].into_iter(), 100, 50, 10), 0);
        // One parked too recently proves nothing: its core may have moved
        // when it parked, inside the window.
        assert_eq!(p.unexplained([45].into_iter(), 100, 50, 10), 1);
    }

    #[test]
    fn a_thread_that_gave_its_core_away_is_not_counted() {
        // Two cores, both idle and parked by two threads: a third thread
        // (inside block_in_place, or back in the blocking pool) cannot
        // hold one, whatever its own stamp says.
        let p = progress(&[(0, &[5, 7])]);
        assert_eq!(p.unexplained([0, 20].into_iter(), 100, 50, 10), 0);
    }
}
