//! [`yield_now`]: give the executor one chance to run something else.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Yields to the executor once: the returned future is `Pending` on its first
/// poll and `Ready` on the next.
///
/// It wakes its own task before returning `Pending`
/// (`cx.waker().wake_by_ref()`), so it needs no timer, no reactor and no
/// runtime: it works the same on any executor (tested: tokio and
/// `futures::executor::block_on`). The executor puts the task back in its run
/// queue and runs whatever else is ready first.
///
/// Prefer a [`Budget`](super::Budget) in loops: yielding on every step costs
/// a trip through the scheduler each time.
///
/// # On tokio
///
/// The task goes to the back of tokio's run queue at once. Tokio polls its
/// timer and I/O driver between tasks only every `event_interval` (61)
/// scheduler ticks while tasks stay runnable, whereas
/// `tokio::task::yield_now` defers the wake-up until after the driver has been
/// polled. On a current-thread runtime a *spawned* task that keeps yielding
/// with this function therefore lets other runnable tasks run, but delays
/// timers and sockets by up to 61 yields; see the [module
/// docs](super#on-tokio) for when to use tokio's own yield instead.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// let mut sum = 0u64;
/// for i in 0..10_000u64 {
///     sum += i;
///     if i % 1_000 == 0 {
///         offload::coop::yield_now().await; // let other tasks run
///     }
/// }
/// assert_eq!(sum, 49_995_000);
/// # });
/// ```
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// The future of [`yield_now`].
#[derive(Debug, Clone)]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct YieldNow {
    /// Whether the `Pending` has been returned already.
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        // Wake before returning Pending: we are ready again right away, we
        // only want the executor to look at its other tasks first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
