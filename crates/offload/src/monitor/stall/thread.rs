//! The watched threads: one [`Slot`] per (thread, detector), written only by
//! its own thread (atomic stores, nothing else on the hot path) and read by
//! the watchdog.
//!
//! A thread finds its slots through a thread-local list, so evidence of
//! progress ([`beat`]) costs a thread-local read and one relaxed store per
//! detector watching the thread (usually one).

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// A coarse clock, advanced by the watchdog at every tick, so threads can
/// time-stamp their progress with one relaxed load instead of reading the
/// system clock.
#[derive(Debug)]
pub(crate) struct Clock {
    epoch: Instant,
    now_us: AtomicU64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            epoch: Instant::now(),
            now_us: AtomicU64::new(0),
        }
    }

    /// The coarse time, in microseconds since the epoch.
    pub(crate) fn coarse(&self) -> u64 {
        self.now_us.load(Ordering::Relaxed)
    }

    /// Reads the real clock and publishes it as the coarse time.
    pub(crate) fn advance(&self) -> u64 {
        let now = self.precise();
        self.now_us.fetch_max(now, Ordering::Relaxed);
        now
    }

    /// The real time, in microseconds since the epoch.
    pub(crate) fn precise(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// `Slot::state` packs the time of the last evidence of progress (coarse
/// microseconds, shifted left by one) and the parked bit.
const PARKED: u64 = 1;

/// One watched thread, as seen by one detector.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Which detector owns this slot.
    pub(crate) detector: u64,
    /// Which group of hooks registered it (a runtime), 0 for `enter()`.
    pub(crate) group: u64,
    /// The kernel's thread id (signal target and `/proc` key).
    pub(crate) tid: Option<i32>,
    /// The thread's name, for reports.
    pub(crate) name: String,
    clock: Arc<Clock>,
    /// `last_progress_us << 1 | parked`; written only by the owning thread.
    state: AtomicU64,
    /// The label id of the instrumented task being polled (0: none).
    label: AtomicU64,
    /// Set when the thread exits or unregisters; the watchdog then drops it.
    dead: AtomicBool,
    /// How often the thread showed it is a runtime worker: it parked or
    /// unparked through the hooks, polled a heartbeat, or was marked by
    /// `attach` or `enter` (0: never; tokio's blocking-pool threads start
    /// like workers but never park). The watchdog compares counts to tell
    /// whether a thread it cleared has acted as a worker since.
    worker_evidence: AtomicU64,
    /// Set by the watchdog while the thread, a worker, has gone a quarter
    /// threshold without evidence; read by a heartbeat beating on it
    /// (`heartbeat.rs`).
    quiet: AtomicBool,
}

impl Slot {
    /// Evidence that the thread is between tasks or inside a short one:
    /// refresh the time stamp, keep the parked bit.
    #[inline]
    fn beat(&self) {
        let parked = self.state.load(Ordering::Relaxed) & PARKED;
        self.state
            .store(self.clock.coarse() << 1 | parked, Ordering::Relaxed);
    }

    /// Parks or unparks, stamped with the precise clock: these are idle
    /// transitions, not the poll path, and the watchdog counts on the time
    /// a thread parked being exact (the coarse clock stands still while
    /// the watchdog is late, and a park stamped with it would look older
    /// than it is: see `roles.rs`).
    #[inline]
    pub(crate) fn set_parked(&self, parked: bool) {
        self.state.store(
            self.clock.precise() << 1 | u64::from(parked),
            Ordering::Relaxed,
        );
    }

    /// `(parked, last progress in coarse microseconds)`.
    pub(crate) fn read(&self) -> (bool, u64) {
        let s = self.state.load(Ordering::Relaxed);
        (s & PARKED != 0, s >> 1)
    }

    pub(crate) fn label(&self) -> u64 {
        self.label.load(Ordering::Relaxed)
    }

    /// Evidence that the thread holds a runtime worker right now.
    pub(crate) fn mark_worker(&self) {
        // An RMW: `attach` marks from another thread. Only park, unpark
        // and heartbeats call it on the thread itself, never a task poll.
        self.worker_evidence.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn worker_evidence(&self) -> u64 {
        self.worker_evidence.load(Ordering::Relaxed)
    }

    /// See `quiet`: written by the watchdog each tick.
    pub(crate) fn set_quiet(&self, quiet: bool) {
        self.quiet.store(quiet, Ordering::Relaxed);
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    pub(crate) fn kill(&self) {
        self.dead.store(true, Ordering::Relaxed);
    }
}

/// The slots of the current thread; marks them dead when the thread exits.
struct Local {
    slots: RefCell<Vec<Arc<Slot>>>,
    /// The label of the instrumented task being polled on this thread.
    label: Cell<u64>,
    /// The alternate signal stack the capture handler runs on, while the
    /// thread is watched by any detector (see `capture.rs`).
    alt_stack: RefCell<Option<super::capture::AltStack>>,
}

impl Drop for Local {
    fn drop(&mut self) {
        for slot in self.slots.get_mut().drain(..) {
            slot.kill();
        }
    }
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            slots: RefCell::new(Vec::new()),
            label: Cell::new(0),
            alt_stack: RefCell::new(None),
        }
    };
}

/// Registers the current thread with a detector (once per detector), in the
/// given parked state. Returns the slot, and whether it is new.
pub(crate) fn register(
    detector: u64,
    group: u64,
    clock: &Arc<Clock>,
    parked: bool,
) -> Option<(Arc<Slot>, bool)> {
    LOCAL
        .try_with(|local| {
            let mut slots = local.slots.borrow_mut();
            slots.retain(|s| !s.is_dead());
            if let Some(s) = slots.iter().find(|s| s.detector == detector) {
                return (Arc::clone(s), false);
            }
            let thread = std::thread::current();
            let slot = Arc::new(Slot {
                detector,
                group,
                tid: super::capture::current_tid(),
                name: thread
                    .name()
                    .map_or_else(|| format!("{:?}", thread.id()), str::to_owned),
                clock: Arc::clone(clock),
                state: AtomicU64::new(clock.precise() << 1 | u64::from(parked)),
                label: AtomicU64::new(local.label.get()),
                dead: AtomicBool::new(false),
                worker_evidence: AtomicU64::new(0),
                quiet: AtomicBool::new(false),
            });
            slots.push(Arc::clone(&slot));
            let mut alt_stack = local.alt_stack.borrow_mut();
            if alt_stack.is_none() {
                *alt_stack = super::capture::alt_stack_for_this_thread();
            }
            (slot, true)
        })
        .ok()
}

/// Removes the current thread's slot of a detector.
pub(crate) fn unregister(detector: u64) {
    let _ = LOCAL.try_with(|local| {
        let mut slots = local.slots.borrow_mut();
        slots.retain(|s| {
            let keep = s.detector != detector;
            if !keep {
                s.kill();
            }
            keep
        });
        if slots.is_empty() {
            // No detector watches this thread any more: give the previous
            // signal stack back.
            local.alt_stack.borrow_mut().take();
        }
    });
}

/// Runs `f` on the current thread's slot of a detector, if registered;
/// returns whether it was.
#[inline]
pub(crate) fn with_slot(detector: u64, f: impl FnOnce(&Slot)) -> bool {
    LOCAL
        .try_with(|local| {
            let Ok(slots) = local.slots.try_borrow() else {
                // Borrowed by this very thread (a hook inside a hook): it
                // is registered, the update is just skipped.
                return true;
            };
            match slots
                .iter()
                .find(|s| s.detector == detector && !s.is_dead())
            {
                Some(s) => {
                    f(s);
                    true
                }
                None => false,
            }
        })
        .unwrap_or(true)
}

/// Tells every detector watching the current thread that it made progress:
/// it is between two task polls, or in a poll that started a moment ago.
///
/// Heartbeats, instrumented tasks and poll hooks call this; call it
/// yourself from long cooperative loops that yield through other means.
/// Costs a thread-local read and one relaxed atomic store per detector
/// watching this thread (none when no detector does).
#[inline]
pub fn beat() {
    let _ = LOCAL.try_with(|local| {
        if let Ok(slots) = local.slots.try_borrow() {
            for s in slots.iter() {
                s.beat();
            }
        }
    });
}

/// Whether the watchdog last saw this thread (a watched worker) a quarter
/// threshold without evidence: a heartbeat beating here is needed here.
pub(crate) fn is_quiet() -> bool {
    LOCAL
        .try_with(|local| {
            local
                .slots
                .try_borrow()
                .is_ok_and(|slots| slots.iter().any(|s| s.quiet.load(Ordering::Relaxed)))
        })
        .unwrap_or(false)
}

/// A heartbeat task is being polled on this thread: the thread is a
/// runtime worker (only workers poll tasks), busy right now, and making
/// progress. This is how a worker that has never parked yet gets watched.
pub(crate) fn heartbeat_polled() {
    let _ = LOCAL.try_with(|local| {
        if let Ok(slots) = local.slots.try_borrow() {
            for s in slots.iter() {
                s.mark_worker();
                s.set_parked(false);
            }
        }
    });
}

/// Sets the label of the task polled on this thread (0: none), returns the
/// previous one, and beats.
pub(crate) fn swap_label(label: u64) -> u64 {
    LOCAL
        .try_with(|local| {
            let prev = local.label.replace(label);
            if let Ok(slots) = local.slots.try_borrow() {
                for s in slots.iter() {
                    s.label.store(label, Ordering::Relaxed);
                    s.beat();
                }
            }
            prev
        })
        .unwrap_or(0)
}
