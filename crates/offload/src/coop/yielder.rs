//! How a spent [`Budget`](super::Budget) yields: [`yield_now`](super::yield_now)'s
//! way, or with the function given to
//! [`Budget::yield_with`](super::Budget::yield_with).
//!
//! The yield in progress lives here, inside the budget, so that the future
//! of a tick is a single (possibly null) reference: a non-yielding tick then
//! builds nothing bigger than a pointer, which keeps the hot loop free of
//! stack copies.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

/// A yield future made by a [`Budget::yield_with`](super::Budget::yield_with) function.
type BoxedYield = Pin<Box<dyn Future<Output = ()> + Send>>;
/// A [`Budget::yield_with`](super::Budget::yield_with) function.
type MakeYield = Arc<dyn Fn() -> BoxedYield + Send + Sync>;

/// Where a yield stands.
enum State {
    /// No yield in progress.
    Idle,
    /// The runtime-agnostic yield returned `Pending` (and woke the task).
    Woke,
    /// A custom yield future, polled until `Ready`.
    Custom(BoxedYield),
}

/// The yielding part of a budget.
pub(crate) struct Yielder {
    /// The custom yield; `None` for the runtime-agnostic one.
    make: Option<MakeYield>,
    /// The yield in progress. A `Mutex` only so that budgets stay `Sync`
    /// with a `Send`-only future inside: it is reached through `&mut` with
    /// `get_mut`, never locked, so it costs nothing and cannot be poisoned.
    state: Mutex<State>,
}

impl Yielder {
    pub(crate) const fn agnostic() -> Self {
        Yielder {
            make: None,
            state: Mutex::new(State::Idle),
        }
    }

    pub(crate) fn custom<F, Fut>(yield_fn: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Yielder {
            make: Some(Arc::new(move || Box::pin(yield_fn()))),
            state: Mutex::new(State::Idle),
        }
    }

    /// Prepares a new yield, forgetting one that was abandoned half-way
    /// (a tick future dropped while pending).
    pub(crate) fn begin(&mut self) {
        *self.state.get_mut().unwrap_or_else(PoisonError::into_inner) = State::Idle;
    }

    /// Polls the yield begun by [`begin`](Yielder::begin).
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Yielder { make, state } = self;
        let state = state.get_mut().unwrap_or_else(PoisonError::into_inner);
        match state {
            State::Idle => match make {
                None => {
                    *state = State::Woke;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(make) => {
                    let mut fut = make();
                    if fut.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                    *state = State::Custom(fut);
                    Poll::Pending
                }
            },
            State::Woke => {
                *state = State::Idle;
                Poll::Ready(())
            }
            State::Custom(fut) => {
                if fut.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *state = State::Idle;
                Poll::Ready(())
            }
        }
    }
}

impl Clone for Yielder {
    /// The same way of yielding, with no yield in progress.
    fn clone(&self) -> Self {
        Yielder {
            make: self.make.clone(),
            state: Mutex::new(State::Idle),
        }
    }
}

impl fmt::Debug for Yielder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.make {
            None => "yield_now",
            Some(_) => "yield_with(..)",
        })
    }
}
