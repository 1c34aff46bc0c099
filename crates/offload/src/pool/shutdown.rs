//! The futures and report of a pool's shutdown: drain ([`Shutdown`]) and
//! drain-with-deadline ([`ShutdownTimeout`] → [`ShutdownReport`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::shared::PoolShared;
use crate::job::wake_quietly;
use crate::sync::{lock, wait_timeout};

/// Registers `waker` to be woken when the pool is done; returns whether it
/// is done already.
fn poll_done(shared: &PoolShared, waker: &Waker) -> bool {
    let mut st = shared.lock();
    if st.is_done() {
        return true;
    }
    if !st.idle_waiters.iter().any(|w| w.will_wake(waker)) {
        st.idle_waiters.push(waker.clone());
    }
    false
}

/// The future of [`ThreadPool::shutdown`](crate::ThreadPool::shutdown):
/// resolves when every queued and running job has finished.
///
/// The pool stops taking jobs as soon as `shutdown()` is called, whether or
/// not this future is awaited.
#[must_use = "the pool is already closed; await this to wait for its jobs"]
pub struct Shutdown {
    pub(crate) shared: Arc<PoolShared>,
}

impl Future for Shutdown {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if poll_done(&self.shared, cx.waker()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown").finish_non_exhaustive()
    }
}

/// A job still running when a shutdown deadline passed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunningJob {
    /// The worker thread running it.
    pub thread: String,
    /// How long it had been running at the deadline.
    pub running_for: Duration,
}

/// What a shutdown with a deadline left unfinished.
///
/// Returned by [`ThreadPool::shutdown_timeout`](crate::ThreadPool::shutdown_timeout).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Jobs still queued at the deadline, now cancelled (their callers got
    /// [`Error::is_cancelled`](crate::Error::is_cancelled)).
    pub cancelled: usize,
    /// Jobs still running at the deadline. They go on in the background
    /// (threads cannot be stopped) and their callers still get their results.
    pub still_running: Vec<RunningJob>,
}

impl ShutdownReport {
    /// Every job finished before the deadline.
    pub fn is_complete(&self) -> bool {
        self.cancelled == 0 && self.still_running.is_empty()
    }
}

/// Wakes a [`ShutdownTimeout`] at its deadline, from a short-lived thread
/// (the pool needs no async runtime, so it has no timer of its own).
struct Timer {
    state: Mutex<TimerState>,
    cv: Condvar,
}

struct TimerState {
    waker: Option<Waker>,
    /// The future is gone: the timer thread should exit now.
    cancelled: bool,
}

impl Timer {
    fn start(deadline: Instant, waker: Waker) -> Option<Arc<Timer>> {
        let timer = Arc::new(Timer {
            state: Mutex::new(TimerState {
                waker: Some(waker),
                cancelled: false,
            }),
            cv: Condvar::new(),
        });
        let t = timer.clone();
        let spawned = std::thread::Builder::new()
            .name("offload-deadline".into())
            .spawn(move || {
                let mut st = lock(&t.state);
                loop {
                    if st.cancelled {
                        return;
                    }
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    st = wait_timeout(&t.cv, st, left).0;
                }
                let waker = st.waker.take();
                drop(st);
                if let Some(w) = waker {
                    wake_quietly(w);
                }
            });
        match spawned {
            Ok(_) => Some(timer),
            Err(err) => {
                tracing::warn!(error = %err, "offload: no deadline thread; the shutdown deadline is checked only when jobs finish");
                None
            }
        }
    }

    fn set_waker(&self, waker: &Waker) {
        let mut st = lock(&self.state);
        match &mut st.waker {
            Some(w) if w.will_wake(waker) => {}
            other => *other = Some(waker.clone()),
        }
    }

    fn cancel(&self) {
        lock(&self.state).cancelled = true;
        self.cv.notify_all();
    }
}

/// The future of [`ThreadPool::shutdown_timeout`](crate::ThreadPool::shutdown_timeout):
/// drains the pool until a deadline, then cancels what is still queued and
/// reports what is still running.
#[must_use = "the pool is already closed; await this to drain it"]
pub struct ShutdownTimeout {
    pub(crate) shared: Arc<PoolShared>,
    /// `None`: the timeout was too long to be a point in time; no deadline.
    pub(crate) deadline: Option<Instant>,
    timer: Option<Arc<Timer>>,
}

impl ShutdownTimeout {
    pub(crate) fn new(shared: Arc<PoolShared>, deadline: Option<Instant>) -> Self {
        ShutdownTimeout {
            shared,
            deadline,
            timer: None,
        }
    }
}

impl Future for ShutdownTimeout {
    type Output = ShutdownReport;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ShutdownReport> {
        if poll_done(&self.shared, cx.waker()) {
            return Poll::Ready(ShutdownReport::default());
        }
        let Some(deadline) = self.deadline else {
            // No deadline: a plain drain (registered above).
            return Poll::Pending;
        };
        let now = Instant::now();
        if now >= deadline {
            let cancelled = self.shared.close(true);
            let st = self.shared.lock();
            let still_running = st
                .seats
                .iter()
                .flatten()
                .filter_map(|w| {
                    w.busy_since.map(|since| RunningJob {
                        thread: w.name.clone(),
                        running_for: now.saturating_duration_since(since),
                    })
                })
                .collect();
            return Poll::Ready(ShutdownReport {
                cancelled,
                still_running,
            });
        }
        match &self.timer {
            Some(t) => t.set_waker(cx.waker()),
            None => self.timer = Timer::start(deadline, cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for ShutdownTimeout {
    fn drop(&mut self) {
        if let Some(t) = self.timer.take() {
            t.cancel();
        }
    }
}

impl fmt::Debug for ShutdownTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownTimeout")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
