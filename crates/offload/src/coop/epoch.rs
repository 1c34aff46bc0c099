//! The shared epoch: a counter that a background thread, the *clock*,
//! advances every [`PERIOD`] while slice budgets are ticking. A tick of a
//! slice budget compares it with the value it saw at its last clock read:
//! one load from a cache line that changes once per period, so the tick
//! stays cheap, and a change tells the budget to read the real clock
//! whatever it had guessed about the loop's speed. See `README.md` beside
//! this file for why a thread, why this period, and what it costs.
//!
//! # The clock's life
//!
//! - Started by the first slice budget that reads the real clock (never by
//!   `Budget::every`, never by creating a budget).
//! - Ticks while budgets visit their slow path: every budget that reads the
//!   clock marks [`VISITED`]; the clock clears the mark each period.
//! - Parks (no timer, no wake-up, no CPU) once no budget has visited for
//!   [`LINGER`] periods. A budget that reads the clock while it is parked
//!   wakes it. A budget that went quiet mid-slice and comes back sees an
//!   epoch that moved while the clock lingered, reads the real clock, and
//!   wakes it then.
//! - If the thread cannot be spawned, budgets run without it: they fall
//!   back on their own clock-read schedule (see `slice.rs`) and a warning is
//!   logged once.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How often the clock advances the epoch while budgets tick: the bound on
/// how late a slice can end when the loop's steps change cost (plus one
/// step). Measured choice: see `README.md`.
pub(crate) const PERIOD: Duration = Duration::from_millis(1);

/// Periods without any budget reading the clock before the clock parks.
const LINGER: u32 = 20;

/// A value alone on its cache lines (128 bytes: two lines, since x86
/// prefetches lines in pairs): the epoch is read by every tick of every
/// slice budget, and must not share its line with anything written often.
#[repr(align(128))]
struct Padded<T>(T);

/// The epoch: advanced by the clock every [`PERIOD`] while it ticks.
static EPOCH: Padded<AtomicU64> = Padded(AtomicU64::new(0));
/// Set by a budget that read the real clock; cleared by the clock every
/// period. The clock parks after [`LINGER`] periods without it.
static VISITED: Padded<AtomicBool> = Padded(AtomicBool::new(false));
/// The clock is parked (or about to park): the next visitor must wake it.
static PARKED: AtomicBool = AtomicBool::new(false);
/// The clock thread, spawned at the first visit; `None` if spawning failed.
static CLOCK: OnceLock<Option<Thread>> = OnceLock::new();

/// The current epoch. The hot path of every slice-budget tick.
#[inline(always)]
pub(crate) fn now() -> u64 {
    EPOCH.0.load(Ordering::Relaxed)
}

/// Called by a budget each time it reads the real clock: keeps the clock
/// ticking, starts it the first time, wakes it if it parked.
///
/// Costs a load in the common case (another visit already marked this
/// period); a store and an uncontended `unpark` once per period at most.
pub(crate) fn visit() {
    let Some(clock) = CLOCK.get_or_init(spawn) else {
        return;
    };
    if !VISITED.0.load(Ordering::Relaxed) {
        // SeqCst pairs with the clock's `PARKED` store then `VISITED` load
        // (a Dekker handshake): either the clock sees this mark and stays
        // awake, or this visit sees `PARKED` and wakes it.
        VISITED.0.store(true, Ordering::SeqCst);
    }
    if PARKED.load(Ordering::SeqCst) && PARKED.swap(false, Ordering::SeqCst) {
        clock.unpark();
    }
}

/// The clock thread's name (tests and the lab's benchmark find it by name
/// in `/proc` to watch it park).
pub(crate) const THREAD_NAME: &str = "offload-coop";

fn spawn() -> Option<Thread> {
    let spawned = std::thread::Builder::new()
        .name(THREAD_NAME.to_owned())
        // It only sleeps and bumps a counter.
        .stack_size(64 * 1024)
        .spawn(run);
    match spawned {
        Ok(handle) => Some(handle.thread().clone()),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "offload::coop: could not start the clock thread; slice budgets \
                 fall back on their own clock reads (a slice may end late when \
                 step costs change)"
            );
            None
        }
    }
}

/// The clock thread: advance, sleep, park when nobody is looking.
fn run() {
    let mut quiet = 0u32;
    let mut next = Instant::now() + PERIOD;
    loop {
        // Sleep to an absolute schedule, so that the sleep's overshoot (tens
        // of microseconds) does not add up over the periods.
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        EPOCH.0.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        next = (next + PERIOD).max(now + PERIOD / 2);

        if VISITED.0.swap(false, Ordering::SeqCst) {
            quiet = 0;
            continue;
        }
        quiet += 1;
        if quiet < LINGER {
            continue;
        }
        // Nobody has read the clock for LINGER periods: no budget is
        // ticking. Park until a visit wakes us (see `visit` for the
        // handshake that makes sure a visit is never missed).
        PARKED.store(true, Ordering::SeqCst);
        if VISITED.0.load(Ordering::SeqCst) {
            PARKED.store(false, Ordering::SeqCst);
            quiet = 0;
            continue;
        }
        while PARKED.load(Ordering::SeqCst) {
            // Returns at an unpark (or spuriously: the loop re-checks).
            std::thread::park();
        }
        quiet = 0;
        next = Instant::now() + PERIOD;
    }
}
