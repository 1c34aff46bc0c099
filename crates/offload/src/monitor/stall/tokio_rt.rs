//! Conveniences for tokio (feature `tokio`): watch a runtime in one call
//! ([`StallDetector::watch`]), or step by step: install the hooks on a
//! runtime builder, attach heartbeats and tokio's own per-worker counters
//! to a built runtime; spawn named tasks.

use super::detector::{self, Detector, Probe, Running, WatchGuard};
use super::heartbeat;
use super::setup::Setup;
use super::thread::Slot;
use super::{StallDetector, WorkerHooks};
use crate::sync::lock;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::{Builder, Handle, Runtime, RuntimeFlavor};

/// What only the tokio conveniences need from the shared detector state.
impl Detector {
    fn add_probe(&self, group: u64, probe: Probe) {
        lock(&self.probes).push((group, probe));
    }

    /// The live threads registered by hooks of `group`.
    fn group_threads(&self, group: u64) -> Vec<Arc<Slot>> {
        let threads = lock(&self.threads);
        threads
            .iter()
            .filter(|s| s.group == group && !s.is_dead())
            .cloned()
            .collect()
    }
}

impl Setup {
    /// `WorkerHooks::install` put the hooks of `group` on a builder.
    fn installed(&self, group: u64) {
        self.lock().push((group, Instant::now(), false));
    }

    /// `WorkerHooks::attach` attached `group`'s runtime.
    fn attached(&self, group: u64) {
        for entry in self.lock().iter_mut().filter(|e| e.0 == group) {
            entry.2 = true;
        }
    }
}

impl StallDetector {
    /// Builds a tokio runtime from `builder` (either flavour) and watches
    /// it: the detector's hooks installed, its heartbeats and tokio's
    /// per-worker counters attached, and on a current-thread runtime the
    /// thread running [`WatchedRuntime::block_on`] watched while it runs
    /// it. One call instead of hooks, install, build, attach and enter;
    /// the step-by-step way ([`hooks`](Self::hooks)) remains for runtimes
    /// built elsewhere.
    ///
    /// It enables the runtime's timer (`enable_time`: the heartbeats sleep)
    /// and replaces thread start, stop, park and unpark hooks set on the
    /// builder before. The watchdog keeps running while the returned
    /// runtime lives, even if this `StallDetector` is dropped first.
    ///
    /// ```
    /// use offload::monitor::{StallDetector, StallPhase};
    /// use std::time::Duration;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let detector = StallDetector::builder().log(false).build()?;
    /// let reports = detector.reports();
    /// let rt = detector.watch(&mut tokio::runtime::Builder::new_current_thread())?;
    /// rt.block_on(async {
    ///     tokio::time::sleep(Duration::from_millis(20)).await; // healthy
    ///     std::thread::sleep(Duration::from_millis(300)); // a stall
    /// });
    /// let first = reports.recv_timeout(Duration::from_secs(5)).expect("a report");
    /// assert_eq!(first.phase(), StallPhase::Started);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The error of `builder.build()`.
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn watch(&self, builder: &mut Builder) -> std::io::Result<WatchedRuntime> {
        let hooks = self.hooks();
        let runtime = hooks.install(builder).enable_time().build()?;
        hooks.attach(runtime.handle());
        Ok(WatchedRuntime {
            runtime: Some(runtime),
            group: hooks.group,
            running: Arc::clone(&self.running),
        })
    }
}

/// A tokio runtime watched by a stall detector: see
/// [`StallDetector::watch`].
///
/// Use its [`block_on`](Self::block_on) rather than the inner runtime's:
/// on a current-thread runtime, the thread that calls `block_on` is the
/// worker, and only this one watches it. Dropping it shuts the runtime
/// down like dropping a `Runtime` (so not from inside an async context),
/// then lets go of the detector.
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct WatchedRuntime {
    /// `Some` until dropped: the runtime goes first, the detector after.
    runtime: Option<Runtime>,
    group: u64,
    running: Arc<Running>,
}

impl fmt::Debug for WatchedRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedRuntime")
            .field("flavor", &self.handle().runtime_flavor())
            .field("detector", &self.running.detector.id)
            .finish()
    }
}

impl WatchedRuntime {
    fn rt(&self) -> &Runtime {
        self.runtime.as_ref().expect("present until dropped")
    }

    /// Runs `future` to completion on the runtime, like
    /// `Runtime::block_on`; on a current-thread runtime the calling thread
    /// is watched as its worker meanwhile.
    ///
    /// # Panics
    ///
    /// Like `Runtime::block_on`: when called from inside an async context.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let rt = self.rt();
        if rt.handle().runtime_flavor() == RuntimeFlavor::CurrentThread {
            let detector = &self.running.detector;
            let _guard = WatchGuard::new(detector.id, detector.enter(self.group));
            rt.block_on(future)
        } else {
            rt.block_on(future)
        }
    }

    /// The runtime's handle.
    pub fn handle(&self) -> &Handle {
        self.rt().handle()
    }

    /// Spawns a task on the runtime, like `Runtime::spawn`.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt().spawn(future)
    }

    /// The inner runtime. Its own `block_on` is not watched on a
    /// current-thread runtime: use [`block_on`](Self::block_on).
    pub fn runtime(&self) -> &Runtime {
        self.rt()
    }

    /// Shuts the runtime down, waiting at most `timeout` for its blocking
    /// threads, like `Runtime::shutdown_timeout`.
    pub fn shutdown_timeout(mut self, timeout: Duration) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(timeout);
        }
    }
}

impl Drop for WatchedRuntime {
    fn drop(&mut self) {
        drop(self.runtime.take());
    }
}

impl WorkerHooks {
    /// Installs these hooks as the builder's `on_thread_start`,
    /// `on_thread_stop`, `on_thread_park` and `on_thread_unpark` (replacing
    /// hooks set before). Then build the runtime and [`attach`](Self::attach)
    /// it (or let [`StallDetector::watch`] do all of it).
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn install<'b>(&self, builder: &'b mut Builder) -> &'b mut Builder {
        self.detector.setup.installed(self.group);
        let (a, b, c, d) = (self.clone(), self.clone(), self.clone(), self.clone());
        builder
            .on_thread_start(move || a.on_thread_start())
            .on_thread_stop(move || b.on_thread_stop())
            .on_thread_park(move || c.on_thread_park())
            .on_thread_unpark(move || d.on_thread_unpark())
    }

    /// Attaches a built runtime (it needs its timer: `enable_time`):
    /// spawns four heartbeats per worker and, on a multi-thread
    /// runtime, lets the watchdog read tokio's stable per-worker busy-time
    /// counters. A worker publishes those counters every 61 scheduler ticks
    /// but never from inside a stuck poll, so "every core's counter moved,
    /// except those of parked workers" proves no worker is stuck, whichever
    /// worker the heartbeats landed on, and whichever thread holds it after
    /// a `block_in_place` hand-off.
    ///
    /// Call it right after `build()`, before the runtime runs blocking work:
    /// it waits (up to a second) for the workers to start and marks the
    /// threads started so far as workers, watched from now on. If none of
    /// the runtime's threads ran the hooks, it logs a warning: they were
    /// not installed on its builder.
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn attach(&self, handle: &Handle) {
        self.detector.setup.attached(self.group);
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
            if threads.is_empty() {
                tracing::warn!(
                    target: "offload::monitor",
                    "stall detector half-installed: WorkerHooks::attach found no thread of \
                     this runtime that ran the detector's hooks; install them on the builder \
                     before build (WorkerHooks::install), or use StallDetector::watch"
                );
            }
            // Workers were spawned first: the lowest thread ids.
            threads.sort_by_key(|s| s.tid);
            for slot in threads.iter().take(workers) {
                slot.mark_worker();
            }
        }
        let weak = Arc::downgrade(&self.detector);
        for beat in heartbeat::for_workers(&weak, workers, tokio::time::sleep) {
            handle.spawn(beat);
        }
        // Stacks like the ones reports and role checks will look at, each
        // recorded where it runs (cheap) and resolved in the background
        // (slow, once): a worker polling a task, and a blocking-pool
        // thread (where a thread that gave its worker away ends up).
        let weak = Arc::downgrade(&self.detector);
        handle.spawn(async move {
            if let Some(detector) = weak.upgrade() {
                detector::warm_up_symbols(&detector);
            }
        });
        let weak = Arc::downgrade(&self.detector);
        drop(handle.spawn_blocking(move || {
            if let Some(detector) = weak.upgrade() {
                detector::warm_up_symbols(&detector);
            }
        }));
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
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub fn spawn_named<F>(name: impl Into<Arc<str>>, future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(super::task::instrument(name, future))
}
