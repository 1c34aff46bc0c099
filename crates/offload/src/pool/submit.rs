//! Backpressure: the future that waits for room in the queue, used by
//! [`ThreadPool::run`](crate::ThreadPool::run) when the queue is full.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::shared::{PoolShared, PushError};
use crate::error::Error;
use crate::job::Job;

/// Retries the push each time room frees up in the queue.
///
/// Waiters are woken one at a time, oldest first, so room for one job costs
/// one wake-up, not one per waiting caller. A waiter that is woken and then
/// dropped passes its wake-up on (see [`PoolShared::forget_waiter`]).
pub(crate) struct RoomWait {
    pub(crate) shared: Arc<PoolShared>,
    pub(crate) job: Option<Job>,
    /// Our ticket in the pool's line of waiting submitters, once registered.
    pub(crate) ticket: Option<u64>,
}

impl Future for RoomWait {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(job) = this.job.take() else {
            return Poll::Ready(Ok(()));
        };
        match this.shared.push_or_wait(job, &mut this.ticket, cx.waker()) {
            Ok(()) => Poll::Ready(Ok(())),
            Err((job, PushError::Shutdown)) => {
                this.ticket = None;
                drop(job);
                Poll::Ready(Err(this.shared.refusal_error(PushError::Shutdown)))
            }
            Err((job, PushError::Full)) => {
                // Registered under the lock that saw the queue full.
                this.job = Some(job);
                Poll::Pending
            }
        }
    }
}

impl Drop for RoomWait {
    fn drop(&mut self) {
        if let (Some(ticket), Some(_)) = (self.ticket, &self.job) {
            self.shared.forget_waiter(ticket);
        }
    }
}
