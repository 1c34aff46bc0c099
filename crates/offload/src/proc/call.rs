//! One call to a process pool: its options, the future the caller awaits,
//! the cell its result arrives in, and the switch that cancels it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::child::WorkerProc;
use crate::error::Error;
use crate::executor::Run;
use crate::sync::lock;

/// What to do with a running call whose future is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnDrop {
    /// Stop it: its worker is killed (the work stops now) and a fresh
    /// worker replaces it. A call still waiting in the worker's queue is
    /// skipped instead. Only the dropped call is affected, never the one
    /// before or after it.
    #[default]
    Kill,
    /// Let it finish and throw the result away; the worker stays busy until then.
    Detach,
}

/// Per-call settings for [`ProcessPool::call_with`](super::ProcessPool::call_with).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) on_drop: OnDrop,
}

impl CallOptions {
    /// The pool's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// A hard timeout for this call, counted from when its worker starts
    /// it: past it, the worker is killed and the call fails with
    /// [`Error::is_timeout`]. Overrides the pool's default.
    /// `Duration::MAX` (or anything too far to represent) means no
    /// timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// What dropping the call's future does once the call is running.
    pub fn on_drop(mut self, on_drop: OnDrop) -> Self {
        self.on_drop = on_drop;
        self
    }

    /// The timeout set with [`timeout`](Self::timeout), if any (for other
    /// executors that take these options, like a remote pool).
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The drop behaviour set with [`on_drop`](Self::on_drop).
    pub fn get_on_drop(&self) -> OnDrop {
        self.on_drop
    }
}

/// The result of a call, handed from the driver thread to the caller as
/// soon as it is known (before the driver replaces a dead worker).
pub(crate) struct ReplyCell<O> {
    state: Mutex<ReplyState<O>>,
}

struct ReplyState<O> {
    result: Option<Result<O, Error>>,
    /// The caller's waker while it waits.
    waker: Option<Waker>,
}

impl<O> ReplyCell<O> {
    pub(crate) fn new() -> Self {
        ReplyCell {
            state: Mutex::new(ReplyState {
                result: None,
                waker: None,
            }),
        }
    }

    pub(crate) fn send(&self, result: Result<O, Error>) {
        let mut st = lock(&self.state);
        st.result = Some(result);
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<O, Error>> {
        let mut st = lock(&self.state);
        match st.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                match &mut st.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

/// Lets a caller that drops its call stop it in its worker.
#[derive(Default)]
pub(crate) struct CancelSwitch {
    state: Mutex<SwitchState>,
}

#[derive(Default)]
struct SwitchState {
    /// The caller gave up (with [`OnDrop::Kill`]).
    fired: bool,
    /// The worker the call was sent to, and its id there, while in flight.
    sent: Option<(Arc<WorkerProc>, u64)>,
}

impl CancelSwitch {
    pub(crate) fn fired(&self) -> bool {
        lock(&self.state).fired
    }

    /// The call was sent as `id` to `worker`. If the caller gave up in the
    /// meantime, cancel it now.
    pub(crate) fn arm(&self, worker: &Arc<WorkerProc>, id: u64) {
        let mut st = lock(&self.state);
        if st.fired {
            drop(st);
            worker.cancel(id);
            return;
        }
        st.sent = Some((worker.clone(), id));
    }

    /// The call ended.
    pub(crate) fn disarm(&self) {
        let sent = lock(&self.state).sent.take();
        drop(sent);
    }

    /// The caller gave up: the worker stops the call if it runs, skips it
    /// if it waits. Never blocks (it runs in the caller's `drop`).
    fn fire(&self) {
        let sent = {
            let mut st = lock(&self.state);
            st.fired = true;
            st.sent.take()
        };
        if let Some((worker, id)) = sent {
            worker.cancel(id);
        }
    }
}

/// The future of a process call: resolves to the task's output.
///
/// # Cancellation
///
/// Dropping it before the call is sent means the call never runs.
/// Dropping it after, with the default [`OnDrop::Kill`], stops the call:
/// if the worker is running it, the worker is killed (and replaced); if
/// the call still waits in the worker's queue, it is skipped. The decision
/// is the worker's, so a drop that races the call's end never affects
/// another call. With [`OnDrop::Detach`] the call finishes unobserved.
#[must_use = "dropping a Call cancels it"]
pub struct Call<O> {
    pub(crate) reply: Arc<ReplyCell<O>>,
    /// The job on the driver pool; polled for submission (backpressure) and
    /// for failures before the call ran (shutdown, cancellation).
    pub(crate) job: Option<Run<()>>,
    pub(crate) switch: Arc<CancelSwitch>,
    pub(crate) on_drop: OnDrop,
    pub(crate) done: bool,
}

impl<O> Future for Call<O> {
    type Output = Result<O, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(r) = self.reply.poll(cx) {
            self.done = true;
            return Poll::Ready(r);
        }
        if let Some(job) = self.job.as_mut() {
            if let Poll::Ready(res) = Pin::new(job).poll(cx) {
                self.job = None;
                // The job ended; it always replies first unless it never ran.
                if let Poll::Ready(r) = self.reply.poll(cx) {
                    self.done = true;
                    return Poll::Ready(r);
                }
                self.done = true;
                return Poll::Ready(Err(match res {
                    Err(e) => e,
                    Ok(()) => Error::protocol("the call ended without a reply"),
                }));
            }
        }
        Poll::Pending
    }
}

impl<O> Drop for Call<O> {
    fn drop(&mut self) {
        if !self.done && self.on_drop == OnDrop::Kill {
            self.switch.fire();
        }
    }
}

impl<O> fmt::Debug for Call<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("done", &self.done)
            .field("on_drop", &self.on_drop)
            .finish()
    }
}
