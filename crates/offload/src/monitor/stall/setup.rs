//! A half-installed detector says so. Wiring a runtime by hand takes
//! several steps (hooks on the builder, `attach` after `build`, `enter` on
//! a current-thread runtime's `block_on` thread); forgetting one does not
//! fail, it silently watches less than the user thinks. The hooks and the
//! watchdog note what they see here, and the watchdog logs each kind of
//! gap once per detector (`tracing::warn!`, target `offload::monitor`).

use crate::sync::lock;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// How long after `install` an `attach` may come before we say it is
/// missing (building a runtime takes milliseconds).
const ATTACH_GRACE: Duration = Duration::from_secs(1);

const UNWATCHED_PARK: u8 = 1;
const NOT_ATTACHED: u8 = 2;
const ENTERED_WITHOUT_HOOKS: u8 = 4;

/// What the wiring looks like so far.
#[derive(Debug, Default)]
pub(crate) struct Setup {
    /// Hook groups installed on a tokio builder: (group, when, attached);
    /// written by the tokio conveniences (`tokio_rt.rs`).
    pub(super) installed: Mutex<Vec<(u64, Instant, bool)>>,
    /// A park hook ran on a thread this detector does not watch.
    unwatched_park: AtomicBool,
    /// The warnings already logged.
    warned: AtomicU8,
}

impl Setup {
    /// A park or unpark hook ran on a thread without a slot. Cheap: the
    /// hooks call it only when they find no slot.
    pub(crate) fn unwatched_park(&self) {
        if !self.unwatched_park.load(Ordering::Relaxed) {
            self.unwatched_park.store(true, Ordering::Relaxed);
        }
    }

    /// A thread watched through `enter` looks stalled but has shown no
    /// progress at all since (no park hook, heartbeat or beat): it may
    /// simply be an idle runtime without the hooks.
    pub(crate) fn entered_without_hooks(&self, thread: &str) {
        self.warn_once(ENTERED_WITHOUT_HOOKS, || {
            format!(
                "stall detector: thread '{thread}' is watched (StallDetector::enter) but has \
                 run no park hook and no heartbeat, so an idle runtime on it looks stalled: \
                 install the detector's hooks on that runtime and spawn its heartbeat, or \
                 build the runtime with StallDetector::watch"
            )
        });
    }

    /// Logs the gaps seen so far (each once); called by the watchdog.
    pub(crate) fn check(&self) {
        if self.unwatched_park.load(Ordering::Relaxed) {
            self.warn_once(UNWATCHED_PARK, || {
                "stall detector half-installed: a runtime thread runs the detector's park \
                 hooks but is not watched. On a current-thread runtime the thread that calls \
                 block_on is the worker: watch it with StallDetector::enter for as long as it \
                 runs the runtime, or build the runtime with StallDetector::watch"
                    .to_owned()
            });
        }
        let unattached = self
            .lock()
            .iter()
            .any(|(_, at, attached)| !attached && at.elapsed() >= ATTACH_GRACE);
        if unattached {
            self.warn_once(NOT_ATTACHED, || {
                "stall detector half-installed: hooks were installed on a tokio runtime \
                 builder, but WorkerHooks::attach was not called on the runtime built from \
                 it: no heartbeats and no worker counters, so a busy but healthy loop may be \
                 reported and block_in_place cannot be told apart. Call \
                 hooks.attach(runtime.handle()) after build, or build the runtime with \
                 StallDetector::watch"
                    .to_owned()
            });
        }
    }

    fn warn_once(&self, what: u8, message: impl FnOnce() -> String) {
        if self.warned.fetch_or(what, Ordering::Relaxed) & what == 0 {
            tracing::warn!(target: "offload::monitor", "{}", message());
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Instant, bool)>> {
        lock(&self.installed)
    }
}
