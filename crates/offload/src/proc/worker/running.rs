//! Which call a worker is running, decided in one place.
//!
//! The parent cannot know which call its worker is running: a reply may be
//! written and unread while the worker has already started the next call.
//! So a cancellation or a timeout is decided *here*, in the worker, under
//! one lock that the executor thread also takes before it starts and after
//! it finishes each call:
//!
//! - cancel of the running call, or its deadline passing: the worker
//!   *stops* (tells the parent which call, then kills itself) while the
//!   executor is still inside that call, so no later call can start;
//! - cancel of a call not started yet: it is skipped when reached;
//! - cancel of a finished call: ignored (its reply is on its way).

use crate::sync::{lock, wait, wait_timeout};
use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::proc::protocol::Stop;
use crate::proc::wire::deadline_after;

/// The running call, as the executor thread announced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Current {
    pub(crate) id: u64,
    /// When its timeout passes (`None`: no timeout).
    pub(crate) deadline: Option<Instant>,
}

#[derive(Debug, Default)]
struct Calls {
    current: Option<Current>,
    /// The highest id started so far; ids grow in the order calls arrive.
    last_started: u64,
    /// Calls cancelled before they started.
    skip: BTreeSet<u64>,
    /// The worker is stopping: nothing may start or answer any more.
    stopping: bool,
}

/// What the executor should do with the call it just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begin {
    Run,
    /// The caller gave up before the call started: answer "cancelled".
    Skip,
}

/// The state shared by the executor thread (which runs calls) and the
/// control and deadline threads (which may stop them).
#[derive(Debug, Default)]
pub(crate) struct Running {
    calls: Mutex<Calls>,
    /// Signalled when a call with a deadline starts or the worker stops.
    changed: Condvar,
}

impl Running {
    fn lock(&self) -> MutexGuard<'_, Calls> {
        lock(&self.calls)
    }

    /// The executor is about to run call `id`. Never returns once the
    /// worker is stopping (the kill is on its way).
    pub(crate) fn begin(&self, id: u64, timeout: Option<Duration>) -> Begin {
        let mut st = self.lock();
        if st.stopping {
            drop(st);
            park_forever();
        }
        st.last_started = st.last_started.max(id);
        if st.skip.remove(&id) {
            return Begin::Skip;
        }
        let deadline = timeout.and_then(|t| deadline_after(Instant::now(), t));
        st.current = Some(Current { id, deadline });
        drop(st);
        if deadline.is_some() {
            self.changed.notify_all();
        }
        Begin::Run
    }

    /// The executor finished the running call and may answer it. Never
    /// returns if the worker decided to stop in that call: its answer must
    /// not be sent, and no later call may start.
    pub(crate) fn end(&self) {
        let mut st = self.lock();
        if st.stopping {
            drop(st);
            park_forever();
        }
        st.current = None;
    }

    /// The parent cancelled call `id`. If it is running, `stop` is called
    /// with the lock held (so the executor cannot move on) and should not
    /// return.
    pub(crate) fn cancel(&self, id: u64, stop: impl FnOnce(u64, Stop)) {
        let mut st = self.lock();
        if st.stopping {
            return;
        }
        if st.current.map(|c| c.id) == Some(id) {
            st.stopping = true;
            stop(id, Stop::Cancelled);
        } else if id > st.last_started {
            st.skip.insert(id);
        }
        // Otherwise it finished: its reply is on its way; nothing to do.
    }

    /// Whether a call is running now.
    pub(crate) fn is_busy(&self) -> bool {
        self.lock().current.is_some()
    }

    /// The deadline thread's loop: waits for the running call's deadline
    /// and calls `stop` (with the lock held) when one passes. Returns only
    /// if the worker is stopping for another reason.
    pub(crate) fn watch_deadlines(&self, stop: impl Fn(u64, Stop)) {
        let mut st = self.lock();
        loop {
            if st.stopping {
                return;
            }
            match st.current {
                Some(Current {
                    id,
                    deadline: Some(at),
                }) => {
                    let now = Instant::now();
                    if now >= at {
                        st.stopping = true;
                        stop(id, Stop::Timeout);
                        return;
                    }
                    st = wait_timeout(&self.changed, st, at - now).0;
                }
                _ => st = wait(&self.changed, st),
            }
        }
    }
}

/// Waits for the kill that a stopping worker has asked for.
fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_cancel_applies_only_to_the_call_it_names() {
        let r = Running::default();
        // Not started yet: skipped when reached.
        r.cancel(2, |_, _| panic!("2 is not running"));
        assert_eq!(r.begin(1, None), Begin::Run);
        // Finished calls and unknown old ids are ignored.
        r.end();
        r.cancel(1, |_, _| panic!("1 has finished"));
        assert_eq!(r.begin(2, None), Begin::Skip);
        assert_eq!(r.begin(3, None), Begin::Run);
        let mut stopped = None;
        r.cancel(3, |id, why| stopped = Some((id, why)));
        assert_eq!(stopped, Some((3, Stop::Cancelled)));
        // Stopping is once: a second cancel or a deadline does nothing.
        r.cancel(3, |_, _| panic!("already stopping"));
    }

    #[test]
    fn a_deadline_stops_the_call_that_is_running_at_it() {
        let r = Arc::new(Running::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let watcher = {
            let r = r.clone();
            std::thread::spawn(move || r.watch_deadlines(|id, why| tx.send((id, why)).unwrap()))
        };
        // A call that ends before its deadline is never stopped.
        assert_eq!(r.begin(1, Some(Duration::from_millis(30))), Begin::Run);
        r.end();
        // An absurd timeout saturates: no deadline, no overflow.
        assert_eq!(r.begin(2, Some(Duration::MAX)), Begin::Run);
        r.end();
        assert_eq!(r.begin(3, Some(Duration::from_millis(50))), Begin::Run);
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, (3, Stop::Timeout));
        assert!(rx.try_recv().is_err());
        watcher.join().unwrap();
    }
}
