//! What a worker's loops and call handlers share: the calls held and how
//! to stop each, recent cancels, and the count of running handlers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_nats::Client;
use tokio::sync::{Semaphore, oneshot, watch};

use crate::subjects::Subjects;

use super::{Runner, TaskEntry, outbox};

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
pub(crate) struct Recent {
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
    /// Durable jobs held (capacity).
    pub(crate) run_slots: Arc<Semaphore>,
    pub(crate) capacity: usize,
    pub(crate) queue: usize,
    /// Calls held, by reply subject: how to stop each.
    pub(super) held: Mutex<HashMap<String, oneshot::Sender<Stop>>>,
    pub(super) cancelled: Mutex<Recent>,
    /// Call handlers still running.
    pub(crate) handlers: AtomicUsize,
    pub(crate) max_payload: std::sync::atomic::AtomicUsize,
    pub(crate) started: SystemTime,
    pub(crate) ack_wait: Duration,
    pub(crate) max_deliver: i64,
    pub(crate) stopping: watch::Receiver<bool>,
}

impl Shared {
    fn held(&self) -> MutexGuard<'_, HashMap<String, oneshot::Sender<Stop>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes call `id`; `None` if it was already cancelled.
    pub(crate) fn hold(&self, id: &str) -> Option<oneshot::Receiver<Stop>> {
        if self
            .cancelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .contains(id)
        {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.held().insert(id.to_owned(), tx);
        Some(rx)
    }

    pub(crate) fn release(&self, id: &str) {
        self.held().remove(id);
    }

    pub(super) fn cancel(&self, id: String) {
        let tx = self.held().remove(&id);
        match tx {
            Some(tx) => {
                let _ = tx.send(Stop::Cancelled);
            }
            None => self
                .cancelled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id),
        }
    }

    pub(super) fn stop_all(&self) {
        let held: Vec<_> = self.held().drain().collect();
        for (_, tx) in held {
            let _ = tx.send(Stop::Shutdown);
        }
    }

    pub(crate) fn held_count(&self) -> usize {
        self.held().len()
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
