//! Backpressure: the future that waits for a queue slot, used by
//! [`ThreadPool::run`](crate::ThreadPool::run) when the queue is full.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::metrics::Counters;
use super::shared::{PushError, Shared};
use crate::error::Error;
use crate::job::Job;

/// Retries the push each time a slot frees up.
///
/// Waiters are woken one at a time, oldest first, so a freed slot costs one
/// wake-up, not one per waiting caller. A waiter that is woken and then
/// dropped passes its wake-up on (see [`Shared::forget_waiter`]).
pub(crate) struct SlotWait {
    pub(crate) shared: Arc<Shared>,
    pub(crate) job: Option<Job>,
    /// Our entry in the pool's waiter list, once registered.
    pub(crate) waiter: Option<u64>,
}

impl Future for SlotWait {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(job) = this.job.take() else {
            return Poll::Ready(Ok(()));
        };
        match this.shared.push_or_wait(job, &mut this.waiter, cx.waker()) {
            Ok(()) => Poll::Ready(Ok(())),
            Err((_job, PushError::Shutdown)) => {
                this.waiter = None;
                Counters::add(&this.shared.counters.rejected, 1);
                Poll::Ready(Err(Error::shutdown()))
            }
            Err((job, PushError::Full)) => {
                // Registered under the lock that saw the queue full.
                this.job = Some(job);
                Poll::Pending
            }
        }
    }
}

impl Drop for SlotWait {
    fn drop(&mut self) {
        if let (Some(id), Some(_)) = (self.waiter, &self.job) {
            self.shared.forget_waiter(id);
        }
    }
}
