//! [`WorkerHooks`]: what a runtime's threads tell the detector.

use super::detector::Detector;
use super::thread;
use std::fmt;
use std::sync::Arc;

/// Hooks that tell a [`StallDetector`](super::StallDetector) what a
/// runtime's threads do. Plain methods: call them from the runtime's thread
/// hooks, e.g. tokio's `Builder::on_thread_start` (or let `install` do it,
/// with the `tokio` feature).
///
/// tokio also starts its blocking-pool threads with `on_thread_start`, and
/// those may block as long as they like, so a thread started through these
/// hooks is watched only once it is known to be a worker: from its first
/// unpark or heartbeat, or at once for the workers of a multi-thread
/// runtime attached (`WorkerHooks::attach`, feature `tokio`) right after it
/// was built.
#[derive(Clone)]
pub struct WorkerHooks {
    pub(crate) detector: Arc<Detector>,
    pub(crate) group: u64,
}

impl fmt::Debug for WorkerHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHooks")
            .field("detector", &self.detector.id)
            .field("group", &self.group)
            .finish()
    }
}

impl WorkerHooks {
    /// Call on thread start: registers the thread, idle until it unparks.
    pub fn on_thread_start(&self) {
        // Registered busy but unconfirmed: the watchdog watches it once it
        // is known to be a worker (`Slot::mark_worker`).
        if let Some((slot, _)) =
            thread::register(self.detector.id, self.group, &self.detector.clock, false)
        {
            self.detector.add_slot(slot);
        }
    }

    /// Call on thread stop: unregisters the thread.
    pub fn on_thread_stop(&self) {
        thread::unregister(self.detector.id);
    }

    /// Call before the thread parks (goes idle): an idle thread is never
    /// stalled. Only a runtime's workers park, so this also tells the
    /// detector the thread holds one.
    #[inline]
    pub fn on_thread_park(&self) {
        let found = thread::with_slot(self.detector.id, |s| {
            s.mark_worker();
            s.set_parked(true);
        });
        if !found {
            self.detector.setup.unwatched_park();
        }
    }

    /// Call after the thread unparks: it is busy from now on, and watched.
    #[inline]
    pub fn on_thread_unpark(&self) {
        let found = thread::with_slot(self.detector.id, |s| {
            s.mark_worker();
            s.set_parked(false);
        });
        if !found {
            self.detector.setup.unwatched_park();
        }
    }

    /// Call before each task poll (tokio: `on_before_task_poll`, behind
    /// `--cfg tokio_unstable`): makes detection exact.
    #[inline]
    pub fn on_before_task_poll(&self) {
        thread::beat();
    }

    /// Call after each task poll (tokio: `on_after_task_poll`).
    #[inline]
    pub fn on_after_task_poll(&self) {
        thread::beat();
    }
}
