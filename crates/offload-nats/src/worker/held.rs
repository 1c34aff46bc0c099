//! The calls a worker holds, and how to stop each: by its caller's cancel,
//! or by the worker's shutdown.
//!
//! One lock over the holders and the recent cancels, so that a cancel
//! racing a call's arrival either finds the holder or is found by it.
//! A reply subject may be held twice at once: JetStream may deliver a job
//! again to the same worker while a first delivery still runs (it delivers
//! at least once), and each holder keeps its own stop switch and lets go of
//! its own. (Keyed by subject alone, the second holder replaced the first's
//! switch and the first's release removed the second's: both read a
//! dropped switch as a cancel and acked the job without a result.)
//!
//! The worker's shutdown closes the calls: a handler that reaches `hold`
//! after [`HeldCalls::stop_all`] is refused, so it hands its call back
//! (durable: nak; direct: "busy") instead of starting it on processes
//! about to be stopped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Why a held call is stopped before it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Its caller cancelled it.
    Cancelled,
    /// The worker is shutting down and the grace period is over.
    Shutdown,
}

/// Recently cancelled calls we did not hold (yet): a cancel may overtake
/// its call (durable: the job is fetched after the cancel was sent).
#[derive(Debug, Default)]
struct Recent {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Recent {
    const CAP: usize = 10_000;

    fn insert(&mut self, id: String) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > Self::CAP {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// Why [`HeldCalls::hold`] refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its caller cancelled it before it arrived.
    Cancelled,
    /// The worker is shutting down: hand it back untouched.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    /// Set by `stop_all`: no call is taken any more.
    closed: bool,
    /// By reply subject: each holder's token and stop switch.
    holders: HashMap<String, Vec<(u64, oneshot::Sender<Stop>)>>,
    next_token: u64,
    cancelled: Recent,
}

/// One holder of a call: give it back to [`HeldCalls::release`].
#[derive(Debug)]
#[must_use = "a hold is let go of with `release`"]
pub(crate) struct Hold {
    token: u64,
}

/// The calls a worker holds.
#[derive(Debug, Default)]
pub(crate) struct HeldCalls {
    state: Mutex<State>,
}

impl HeldCalls {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes call `id`: the hold, and the switch that says why it must
    /// stop; refused if its caller cancelled it already or the worker
    /// stopped taking calls.
    pub(crate) fn hold(&self, id: &str) -> Result<(Hold, oneshot::Receiver<Stop>), Refused> {
        let mut st = self.state();
        if st.closed {
            return Err(Refused::Closed);
        }
        if st.cancelled.set.contains(id) {
            return Err(Refused::Cancelled);
        }
        let (tx, rx) = oneshot::channel();
        let token = st.next_token;
        st.next_token += 1;
        st.holders
            .entry(id.to_owned())
            .or_default()
            .push((token, tx));
        Ok((Hold { token }, rx))
    }

    /// Lets go of `hold` on call `id` (and of no other holder of it).
    pub(crate) fn release(&self, id: &str, hold: Hold) {
        let mut st = self.state();
        if let Some(holders) = st.holders.get_mut(id) {
            holders.retain(|(t, _)| *t != hold.token);
            if holders.is_empty() {
                st.holders.remove(id);
            }
        }
    }

    /// Stops every holder of call `id` as cancelled, or remembers the
    /// cancel for a call not held yet.
    pub(crate) fn cancel(&self, id: String) {
        let mut st = self.state();
        match st.holders.remove(&id) {
            Some(holders) => {
                for (_, tx) in holders {
                    let _ = tx.send(Stop::Cancelled);
                }
            }
            None => st.cancelled.insert(id),
        }
    }

    /// Stops every holder for the worker's shutdown, and refuses calls
    /// from now on.
    pub(crate) fn stop_all(&self) {
        let holders: Vec<_> = {
            let mut st = self.state();
            st.closed = true;
            st.holders.drain().collect()
        };
        for (_, tx) in holders.into_iter().flat_map(|(_, h)| h) {
            let _ = tx.send(Stop::Shutdown);
        }
    }

    /// How many holders there are.
    pub(crate) fn count(&self) -> usize {
        self.state().holders.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_holders_of_one_call_keep_their_own_switches() {
        let held = HeldCalls::default();
        let (first, mut first_stop) = held.hold("a").unwrap();
        let (second, mut second_stop) = held.hold("a").unwrap();
        assert_eq!(held.count(), 2);
        // The first lets go: the second is still held, its switch alive.
        held.release("a", first);
        assert!(matches!(
            first_stop.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(matches!(
            second_stop.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert_eq!(held.count(), 1);
        held.stop_all();
        assert_eq!(second_stop.try_recv(), Ok(Stop::Shutdown));
        held.release("a", second);
        assert_eq!(held.count(), 0);
    }

    #[test]
    fn a_cancel_stops_every_holder_and_one_that_came_first_refuses_the_call() {
        let held = HeldCalls::default();
        let (_a, mut a) = held.hold("x").unwrap();
        let (_b, mut b) = held.hold("x").unwrap();
        held.cancel("x".into());
        assert_eq!(a.try_recv(), Ok(Stop::Cancelled));
        assert_eq!(b.try_recv(), Ok(Stop::Cancelled));
        assert_eq!(held.count(), 0);
        // A cancel that overtook its call.
        held.cancel("y".into());
        assert_eq!(held.hold("y").err(), Some(Refused::Cancelled));
        assert!(held.hold("z").is_ok());
    }

    #[test]
    fn after_stop_all_no_call_is_taken() {
        let held = HeldCalls::default();
        let (_a, mut a) = held.hold("a").unwrap();
        held.stop_all();
        assert_eq!(a.try_recv(), Ok(Stop::Shutdown));
        // A handler that comes late hands its call back, whatever it is.
        assert_eq!(held.hold("b").err(), Some(Refused::Closed));
        held.cancel("c".into());
        assert_eq!(held.hold("c").err(), Some(Refused::Closed));
        assert_eq!(held.count(), 0);
    }
}
