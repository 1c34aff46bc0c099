//! Nudges: the watchdog wakes the sleeping heartbeats when a worker has
//! gone a quarter of the threshold without evidence of progress.
//!
//! A heartbeat woken by its timer lands on the worker that processed the
//! timer, and a saturated worker processes timers only every 61 polls:
//! with 5 ms polls that is 300 ms, three thresholds, during which a busy
//! but healthy worker that never received a heartbeat shows no evidence
//! at all and, with enough CPU, looks exactly like one long poll. A
//! heartbeat woken from the watchdog's thread is woken from outside the
//! runtime, so the runtime puts it on its shared (injection) queue, which
//! every busy tokio worker looks at every few polls (every 2 when polls
//! take a millisecond or more). The worker that goes quiet picks one up
//! within a few polls: one that is stuck inside a poll never does, so a
//! nudge can end a false suspicion but never hide a real stall.

use crate::sync::lock;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

/// The heartbeats of one detector that can be nudged.
#[derive(Default)]
pub(crate) struct Nudges {
    slots: Mutex<Vec<Weak<NudgeSlot>>>,
}

/// One heartbeat's side: a flag the watchdog sets, and the waker to call.
#[derive(Default)]
pub(crate) struct NudgeSlot {
    nudged: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Nudges {
    /// A slot for a new heartbeat; it stops being nudged when dropped.
    pub(crate) fn register(&self) -> Arc<NudgeSlot> {
        let slot = Arc::new(NudgeSlot::default());
        lock(&self.slots).push(Arc::downgrade(&slot));
        slot
    }

    /// Wakes every heartbeat that waits; returns how many were woken.
    /// The wakers run after the lock is released: waking schedules a task
    /// on its runtime, which is not code to run under our lock.
    pub(crate) fn nudge_all(&self) -> usize {
        let wakers: Vec<Waker> = {
            let mut slots = lock(&self.slots);
            slots.retain(|w| w.strong_count() > 0);
            slots
                .iter()
                .filter_map(Weak::upgrade)
                .filter_map(|s| {
                    s.nudged.store(true, Ordering::Release);
                    lock(&s.waker).take()
                })
                .collect()
        };
        let woken = wakers.len();
        wakers.into_iter().for_each(Waker::wake);
        woken
    }
}

impl NudgeSlot {
    /// Whether a nudge came since the last one was taken (and takes it).
    pub(crate) fn take(&self) -> bool {
        self.nudged.swap(false, Ordering::Acquire)
    }

    /// Resolves at the next nudge (a nudge that came before this call, and
    /// was not consumed yet, counts).
    pub(crate) fn nudged(&self) -> Nudged<'_> {
        Nudged { slot: self }
    }
}

/// The future of [`NudgeSlot::nudged`].
pub(crate) struct Nudged<'a> {
    slot: &'a NudgeSlot,
}

impl Future for Nudged<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let slot = self.slot;
        if slot.take() {
            return Poll::Ready(());
        }
        *lock(&slot.waker) = Some(cx.waker().clone());
        // A nudge between the check and the store found no waker to take:
        // look at the flag again, now that the waker is in place.
        if slot.take() {
            lock(&slot.waker).take();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Resolves when either future does (the first one polled first).
pub(crate) async fn either<A: Future, B: Future>(a: A, b: B) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    std::future::poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once(f: Pin<&mut impl Future>, count: &Arc<Count>) -> Poll<()> {
        let waker = Waker::from(Arc::clone(count));
        f.poll(&mut Context::from_waker(&waker)).map(|_| ())
    }

    #[test]
    fn a_nudge_wakes_the_waiting_heartbeat_once_and_is_consumed() {
        let nudges = Nudges::default();
        let slot = nudges.register();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let mut wait = std::pin::pin!(slot.nudged());
        assert!(poll_once(wait.as_mut(), &count).is_pending());
        assert_eq!(nudges.nudge_all(), 1);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(poll_once(wait.as_mut(), &count).is_ready());
        // Consumed: the next wait waits again.
        let mut again = std::pin::pin!(slot.nudged());
        assert!(poll_once(again.as_mut(), &count).is_pending());
    }

    #[test]
    fn a_nudge_before_the_wait_is_not_lost() {
        let nudges = Nudges::default();
        let slot = nudges.register();
        // Nobody waits yet: nothing to wake, but the flag stays set.
        assert_eq!(nudges.nudge_all(), 0);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        assert!(poll_once(std::pin::pin!(slot.nudged()), &count).is_ready());
    }

    #[test]
    fn dropped_heartbeats_are_forgotten() {
        let nudges = Nudges::default();
        let slot = nudges.register();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        assert!(poll_once(std::pin::pin!(slot.nudged()), &count).is_pending());
        drop(slot);
        assert_eq!(nudges.nudge_all(), 0);
        assert!(lock(&nudges.slots).is_empty());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }
}
