//! Conveniences for tokio (feature `tokio`): install the hooks on a runtime
//! builder, attach heartbeats and tokio's own per-worker counters to a
//! built runtime, spawn named tasks.

use super::WorkerHooks;
use super::detector::{self, Detector, Probe};
use super::thread::Slot;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::{Builder, Handle, RuntimeFlavor};

/// What only the tokio conveniences need from the shared detector state.
impl Detector {
    fn add_probe(&self, group: u64, probe: Probe) {
        self.probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((group, probe));
    }

    /// The live threads registered by hooks of `group`.
    fn group_threads(&self, group: u64) -> Vec<Arc<Slot>> {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads
            .iter()
            .filter(|s| s.group == group && !s.is_dead())
            .cloned()
            .collect()
    }
}

impl WorkerHooks {
    /// Installs these hooks as the builder's `on_thread_start`,
    /// `on_thread_stop`, `on_thread_park` and `on_thread_unpark` (replacing
    /// hooks set before). Then build the runtime and [`attach`](Self::attach)
    /// it.
    pub fn install<'b>(&self, builder: &'b mut Builder) -> &'b mut Builder {
        let (a, b, c, d) = (self.clone(), self.clone(), self.clone(), self.clone());
        builder
            .on_thread_start(move || a.on_thread_start())
            .on_thread_stop(move || b.on_thread_stop())
            .on_thread_park(move || c.on_thread_park())
            .on_thread_unpark(move || d.on_thread_unpark())
    }

    /// Attaches a built runtime (it needs its timer: `enable_time`):
    /// spawns one heartbeat per worker, staggered, and, on a multi-thread
    /// runtime, lets the watchdog read tokio's stable per-worker busy-time
    /// counters. A worker publishes those counters every 61 scheduler ticks
    /// but never from inside a stuck poll, so "every core's counter moved,
    /// except those of parked workers" proves no worker is stuck, whichever
    /// worker the heartbeats landed on.
    ///
    /// Call it right after `build()`, before the runtime runs blocking work:
    /// it waits (up to a second) for the workers to start and marks the
    /// threads started so far as workers, watched from now on.
    pub fn attach(&self, handle: &Handle) {
        let workers = match handle.runtime_flavor() {
            RuntimeFlavor::CurrentThread => 1,
            _ => handle.metrics().num_workers().max(1),
        };
        if handle.runtime_flavor() == RuntimeFlavor::MultiThread {
            // tokio spawns its workers while building; their start hooks
            // may still be running.
            let deadline = Instant::now() + Duration::from_secs(1);
            let mut threads = self.detector.group_threads(self.group);
            while threads.len() < workers && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
                threads = self.detector.group_threads(self.group);
            }
            // Workers were spawned first: the lowest thread ids.
            threads.sort_by_key(|s| s.tid);
            for slot in threads.iter().take(workers) {
                slot.mark_worker();
            }
        }
        let interval = self.detector.config.threshold / 8;
        for i in 0..workers {
            let offset =
                interval * u32::try_from(i).unwrap_or(0) / u32::try_from(workers).unwrap_or(1);
            let offset = offset.max(Duration::from_millis(1));
            handle.spawn(detector::heartbeat(
                Arc::downgrade(&self.detector),
                offset,
                tokio::time::sleep,
            ));
        }
        // One task that records its own stack (cheap), and hands it to a
        // warm-up thread to resolve (slow, once).
        let weak = Arc::downgrade(&self.detector);
        handle.spawn(async move {
            if let Some(detector) = weak.upgrade() {
                detector::warm_up_symbols(&detector);
            }
        });
        #[cfg(target_has_atomic = "64")]
        if handle.runtime_flavor() == RuntimeFlavor::MultiThread {
            let metrics = handle.metrics();
            self.detector.add_probe(
                self.group,
                Box::new(move |out: &mut Vec<u64>| {
                    out.clear();
                    out.extend((0..metrics.num_workers()).map(|i| {
                        u64::try_from(metrics.worker_total_busy_duration(i).as_nanos())
                            .unwrap_or(u64::MAX)
                    }));
                }),
            );
        }
    }
}

/// Spawns a task on the current tokio runtime, [instrumented](super::instrument)
/// with `name` and the caller's location, so stall reports name it.
///
/// # Panics
///
/// Outside a tokio runtime, like `tokio::spawn`.
#[track_caller]
pub fn spawn_named<F>(name: impl Into<Arc<str>>, future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(super::task::instrument(name, future))
}
