//! What a worker's loops and call handlers share: the calls held (see
//! `held.rs`), slots, and the count of running handlers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use async_nats::Client;
use tokio::sync::{Semaphore, oneshot, watch};

use crate::subjects::Subjects;

use super::held::{HeldCalls, Hold, Refused, Stop};
use super::{Runner, TaskEntry, outbox};

/// What a worker's loops and handlers share.
pub(crate) struct Shared {
    pub(crate) client: Client,
    /// Direct replies, published in batches (see `outbox.rs`).
    pub(crate) outbox: outbox::Outbox,
    pub(crate) runner: Runner,
    pub(crate) name: String,
    /// The service API's instance id.
    pub(crate) id: String,
    pub(crate) subjects: Subjects,
    pub(crate) tasks: Vec<TaskEntry>,
    /// Direct calls held (capacity + queue).
    pub(crate) direct_slots: Arc<Semaphore>,
    /// Calls in the runner (capacity): a direct call waits for one before
    /// it goes to the runner; durable jobs are pulled only with one.
    pub(crate) run_slots: Arc<Semaphore>,
    pub(crate) capacity: usize,
    pub(crate) queue: usize,
    /// The calls held, and how to stop each (see `held.rs`).
    pub(crate) held: HeldCalls,
    /// Call handlers still running.
    pub(crate) handlers: AtomicUsize,
    pub(crate) max_payload: std::sync::atomic::AtomicUsize,
    pub(crate) started: SystemTime,
    pub(crate) ack_wait: Duration,
    pub(crate) max_deliver: i64,
    pub(crate) stopping: watch::Receiver<bool>,
}

impl Shared {
    /// Takes call `id` (see [`HeldCalls::hold`]).
    pub(crate) fn hold(&self, id: &str) -> Result<(Hold, oneshot::Receiver<Stop>), Refused> {
        self.held.hold(id)
    }

    /// Lets go of `hold` on call `id`.
    pub(crate) fn release(&self, id: &str, hold: Hold) {
        self.held.release(id, hold);
    }

    pub(super) fn cancel(&self, id: String) {
        self.held.cancel(id);
    }

    pub(super) fn stop_all(&self) {
        self.held.stop_all();
    }

    pub(crate) fn held_count(&self) -> usize {
        self.held.count()
    }

    /// The largest output that fits in a reply.
    pub(crate) fn max_output(&self) -> usize {
        crate::subjects::max_payload(&self.client, &self.max_payload)
            .saturating_sub(crate::subjects::HEADER_ROOM)
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}

/// Counts a running call handler for the shutdown's wait.
pub(crate) struct HandlerGuard<'a>(&'a AtomicUsize);

impl<'a> HandlerGuard<'a> {
    pub(crate) fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Relaxed);
        HandlerGuard(n)
    }
}

impl Drop for HandlerGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
