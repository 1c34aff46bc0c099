//! Task labels: which task a stalled thread was polling, by name and spawn
//! location, for tasks wrapped with [`instrument`] (or spawned with
//! `spawn_named` under the `tokio` feature).

use crate::sync::lock;
use std::collections::HashMap;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// The name and spawn location of an instrumented task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLabel {
    name: Option<Arc<str>>,
    location: &'static Location<'static>,
}

impl TaskLabel {
    /// The name given at spawn time, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Where the task was created (`#[track_caller]`).
    pub fn location(&self) -> &'static Location<'static> {
        self.location
    }
}

impl std::fmt::Display for TaskLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "'{name}' (spawned at {})", self.location),
            None => write!(f, "spawned at {}", self.location),
        }
    }
}

/// Labels of live instrumented tasks, by id. Touched at task creation and
/// drop, and by the watchdog when it reports: never on the poll path.
static LABELS: Mutex<Option<HashMap<u64, TaskLabel>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The label of a live task, if it is still alive.
pub(crate) fn lookup(id: u64) -> Option<TaskLabel> {
    if id == 0 {
        return None;
    }
    let labels = lock(&LABELS);
    labels.as_ref()?.get(&id).cloned()
}

/// A future whose polls are visible to stall detectors: each poll marks
/// progress on its thread and names the task in reports.
///
/// Created by [`instrument`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Instrumented<F> {
    id: u64,
    // Boxed so this wrapper is `Unpin` without any pin projection code.
    inner: Pin<Box<F>>,
}

/// Wraps a future so that stall reports name it: `name` and the caller's
/// location appear in a report about a thread stalled while polling it.
/// Each poll also counts as progress (the thread went through the
/// scheduler), which makes detection exact for instrumented tasks.
///
/// Cost: one allocation and a short global lock when created and dropped;
/// per poll, two thread-local writes and two relaxed atomic stores per
/// detector watching the thread.
///
/// ```
/// let task = offload::monitor::instrument("load-config", async { 42 });
/// # let _ = futures::executor::block_on(task);
/// ```
#[track_caller]
pub fn instrument<F: Future>(name: impl Into<Arc<str>>, future: F) -> Instrumented<F> {
    let label = TaskLabel {
        name: Some(name.into()),
        location: Location::caller(),
    };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    lock(&LABELS)
        .get_or_insert_with(HashMap::new)
        .insert(id, label);
    Instrumented {
        id,
        inner: Box::pin(future),
    }
}

impl<F> Instrumented<F> {
    /// The label reports will show for this task.
    pub fn label(&self) -> Option<TaskLabel> {
        lookup(self.id)
    }
}

/// Restores the previous label even if the poll panics.
struct Restore(u64);

impl Drop for Restore {
    fn drop(&mut self) {
        super::thread::swap_label(self.0);
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let _restore = Restore(super::thread::swap_label(this.id));
        this.inner.as_mut().poll(cx)
    }
}

impl<F> Drop for Instrumented<F> {
    fn drop(&mut self) {
        let mut labels = lock(&LABELS);
        if let Some(map) = labels.as_mut() {
            map.remove(&self.id);
        }
    }
}
