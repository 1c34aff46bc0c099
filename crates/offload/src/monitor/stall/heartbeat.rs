//! The heartbeat task: evidence that a busy worker still goes round its
//! queue, on runtimes whose polls the detector cannot see (no poll hooks).
//!
//! A heartbeat marks progress on whichever thread polls it. What matters
//! is how often each busy worker polls one, and a busy runtime is slow to
//! deliver a sleeping task: a saturated tokio worker looks at its timers
//! every 61 polls and at the shared queue every 2 to 127 (every 31 on a
//! current-thread runtime), so with 10 ms polls a timer alone leaves a
//! healthy worker 600 ms without evidence: exactly what one long poll
//! looks like. Three ways round it, together:
//!
//! - **Beating through a busy stretch.** After each wake-up (and when
//!   first polled) the heartbeat stays in its worker's queue, beating once
//!   per pass (a yield between beats), for as long as other tasks run
//!   between its polls. A yield that comes straight back (nothing else to
//!   run) ends the stretch: it never spins on an idle runtime.
//! - **Nudges** (`nudge.rs`). When a worker goes a quarter threshold
//!   without evidence, the watchdog wakes the waiting heartbeats from its
//!   own thread, which puts them on the runtime's shared queue, where the
//!   quiet worker, if it is only busy, picks one up within a few polls.
//!   Four per worker (`PER_WORKER`), so that a worker that takes a batch
//!   from the shared queue leaves some for the others.
//! - **Letting go.** A heartbeat in a stretch on one worker cannot be
//!   moved to another. So a nudge ends the stretch unless the heartbeat's
//!   own thread is the quiet one (the watchdog marks it): the heartbeat
//!   goes back to waiting, and the next nudge (a tick later, if a worker is
//!   still quiet) puts it on the shared queue.
//!
//! On a current-thread runtime the only worker is the one the heartbeat
//! beats on, so the stretch lasts as long as the loop is busy. A nudge
//! cannot end a real stall: a worker stuck in a poll picks nothing up.
//!
//! Left: a runtime that turns busy while every heartbeat waits, and whose
//! queues never run dry (tasks woken by each other, never by tokio's own
//! `yield_now`, which defers until the queue is empty), looks at a woken
//! heartbeat only when it looks at its shared queue: every 31 polls on a
//! current-thread runtime, and on a multi-thread one every 61 polls until
//! a worker has timed its first 61 (it then looks every 2 to 127 polls,
//! by their length). With polls of 10 ms that is 300 to 600 ms, long
//! enough to be reported (measured: a 2-worker runtime busy from its first
//! poll with 6 such tasks, one report 0.5 to 0.75 s in, then none). Exact
//! evidence needs poll hooks (`WorkerHooks` with `tokio_unstable`) or
//! `instrument`.

use super::detector::Detector;
use super::nudge::either;
use super::thread;
use std::future::Future;
use std::sync::Weak;
use std::time::{Duration, Instant};

/// A yield that comes back sooner than this found nothing else to run.
const ALONE: Duration = Duration::from_micros(50);

/// The heartbeat loop of `weak`'s detector.
pub(crate) fn heartbeat<S, F>(
    weak: Weak<Detector>,
    mut sleep: S,
) -> impl Future<Output = ()> + Send + 'static
where
    S: FnMut(Duration) -> F + Send + 'static,
    F: Future<Output = ()> + Send,
{
    let registered = weak
        .upgrade()
        .map(|d| (d.config.heartbeat_interval(), d.nudges.register()));
    async move {
        let Some((interval, nudge)) = registered else {
            return;
        };
        let alive = || weak.upgrade().is_some_and(|d| !d.stopped());
        while alive() {
            // A stretch, at once: a runtime busy from the start would
            // deliver a first wake-up late. A nudge from before it may be
            // about this very thread: forget it.
            let _ = nudge.take();
            // Per beat, only a load: is the detector still there?
            while weak.strong_count() > 0 {
                thread::heartbeat_polled();
                let yielded = Instant::now();
                crate::coop::yield_now().await;
                if yielded.elapsed() < ALONE {
                    // Nothing else ran: not busy.
                    break;
                }
                // A worker is quiet: if not this one, go and help it (the
                // next nudge puts this heartbeat on the shared queue).
                if nudge.take() && !thread::is_quiet() {
                    break;
                }
            }
            thread::heartbeat_polled();
            either(nudge.nudged(), sleep(interval)).await;
        }
    }
}

/// How many heartbeats to run per worker thread. A tokio worker whose
/// queue runs dry takes a batch from the shared queue (its share plus
/// one), so with one heartbeat per worker the first to look takes them
/// all; with four per worker, every worker that looks finds one left.
pub(crate) const PER_WORKER: usize = 4;

/// `PER_WORKER` heartbeats per worker of a runtime of `workers` threads.
pub(crate) fn for_workers<S, F>(
    weak: &Weak<Detector>,
    workers: usize,
    sleep: S,
) -> Vec<impl Future<Output = ()> + Send + 'static + use<S, F>>
where
    S: FnMut(Duration) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send,
{
    let count = workers.max(1).saturating_mul(PER_WORKER);
    (0..count)
        .map(|_| heartbeat(weak.clone(), sleep.clone()))
        .collect()
}
