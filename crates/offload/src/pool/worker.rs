//! The worker thread: take a job, run it, repeat; sleep when the queue is
//! empty; exit after `keep_alive` without work or once the pool is closed
//! and drained.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use super::shared::{Phase, PoolShared, PoolState};
use crate::job::{Outcome, wake_quietly};
use crate::sync::{wait, wait_timeout};

thread_local! {
    /// Address of the pool this thread works for (0: none). Lets a pool
    /// waited for from inside one of its own jobs skip waiting for itself.
    static CURRENT_POOL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether the calling thread is one of `shared`'s workers.
pub(crate) fn is_worker_of(shared: &PoolShared) -> bool {
    CURRENT_POOL.get() == shared as *const PoolShared as usize
}

/// Starts one worker. The caller has already claimed it
/// ([`PoolShared::claim_thread`]).
///
/// If the OS refuses the thread, the claim is given back and the pool goes
/// on with the threads it has; if it has none, the queued jobs fail with
/// [`Error::is_spawn`](crate::Error::is_spawn) instead of waiting for a
/// thread that will never come. Returns the OS error in that case.
pub(crate) fn spawn(shared: &PoolShared) -> Result<(), std::io::Error> {
    let Some(arc) = shared.me_upgrade() else {
        return Ok(());
    };
    let (seat, name) = shared.seat_worker();
    let mut builder = std::thread::Builder::new().name(name.clone());
    if let Some(size) = shared.config.stack_size {
        builder = builder.stack_size(size);
    }
    let result = test_spawn_gate(shared).and_then(|()| {
        builder.spawn(move || {
            // Dropped when the thread ends, after it has counted itself out.
            let _guarded = arc
                .config
                .sched
                .and_then(|sched| sched.apply_to_current_thread(&arc.config.name));
            let mut guard = ExitGuard {
                shared: arc.clone(),
                seat,
                armed: true,
            };
            let mut st = run(&arc, seat);
            if let (Phase::Closed, Some(hook)) = (st.phase, &arc.config.on_exit) {
                // Closed is final (nothing can be queued any more), so the
                // lock may be let go while the hook runs user code (a
                // resource's `Drop`) before this thread counts itself out.
                drop(st);
                if catch_unwind(AssertUnwindSafe(|| hook())).is_err() {
                    tracing::warn!(pool = %arc.config.name, "offload: the pool's exit hook panicked");
                }
                st = arc.lock();
            }
            guard.armed = false;
            arc.thread_exits(st, seat);
        })
    });
    match result {
        Ok(_) => Ok(()),
        Err(err) => {
            tracing::warn!(thread = %name, error = %err, "offload: could not start a worker thread; continuing with fewer");
            shared.thread_not_started(seat, &err);
            Err(err)
        }
    }
}

/// Unit tests make thread starts fail (or wait) through the pool's
/// `spawn_gate`: there is no honest way to make the OS refuse one thread
/// at a chosen moment. Outside tests this is `Ok(())`.
#[cfg(test)]
fn test_spawn_gate(shared: &PoolShared) -> std::io::Result<()> {
    match &shared.config.spawn_gate {
        Some(gate) => gate(),
        None => Ok(()),
    }
}

#[cfg(not(test))]
#[inline]
fn test_spawn_gate(_: &PoolShared) -> std::io::Result<()> {
    Ok(())
}

/// Gives the thread's place back if the worker loop unwinds (it should
/// not: jobs, hooks and wakers run under `catch_unwind`), so the pool's
/// count of threads stays true.
struct ExitGuard {
    shared: Arc<PoolShared>,
    seat: usize,
    armed: bool,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if self.armed {
            self.shared.thread_exits(self.shared.lock(), self.seat);
        }
    }
}

/// Runs the pool's start hook on this thread. A failing hook (a dedicated
/// executor's initialiser) fails the pool for good; a panicking one is
/// logged and the thread serves jobs anyway.
fn start_hook(shared: &PoolShared) {
    let Some(hook) = &shared.config.on_start else {
        return;
    };
    match catch_unwind(AssertUnwindSafe(|| hook())) {
        Ok(Ok(())) => {}
        Ok(Err(message)) => {
            shared.fail(message);
        }
        Err(payload) => {
            crate::job::drop_quietly(payload);
            tracing::warn!(
                pool = %shared.config.name,
                "offload: the pool's on_start hook panicked; the thread serves jobs anyway"
            );
        }
    }
}

/// The worker loop. Returns, still holding the lock, when the thread should
/// exit.
fn run(shared: &PoolShared, seat: usize) -> MutexGuard<'_, PoolState> {
    CURRENT_POOL.set(shared as *const PoolShared as usize);
    start_hook(shared);
    let counters = shared.counters();
    let mut st = shared.lock();
    // Whether this worker already spun since it last found work.
    let mut spun = false;
    // When the last job ended: the start of the next one if the queue has
    // one (saves a clock read per job on a busy pool).
    let mut last_end: Option<Instant> = None;
    loop {
        let now = last_end.take().unwrap_or_else(Instant::now);
        if let Some(queued) = shared.take_job(&mut st, seat, now) {
            drop(st);
            spun = false;
            let started = now;
            let mut outcome = Outcome::Skipped;
            queued.job.run_then(&mut |o| {
                outcome = o;
                counters.ended(o);
            });
            // The caller has its result: the clock and the histograms are
            // off its path now.
            let ended = Instant::now();
            counters.timed(
                outcome,
                started.saturating_duration_since(queued.since),
                ended.saturating_duration_since(started),
            );
            last_end = Some(ended);
            st = shared.lock();
            let idle = shared.job_done(&mut st, seat);
            if !idle.is_empty() {
                drop(st);
                idle.into_iter().for_each(wake_quietly);
                st = shared.lock();
            }
            continue;
        }
        if st.phase == Phase::Closed {
            return st;
        }
        if !spun {
            // Before paying for a sleep and a futex wake-up, look for work
            // for a few microseconds: a caller awaiting jobs one at a time
            // submits the next one right after it gets a result.
            drop(st);
            spin_for_work(shared);
            spun = true;
            st = shared.lock();
            continue;
        }
        spun = false;
        st.sleeping += 1;
        let timed_out = match shared.config.keep_alive {
            None => {
                st = wait(&shared.work, st);
                false
            }
            Some(keep_alive) => {
                let (guard, res) = wait_timeout(&shared.work, st, keep_alive);
                st = guard;
                res.timed_out()
            }
        };
        st.sleeping -= 1;
        st.notified = st.notified.saturating_sub(1);
        if timed_out
            && st.queue.is_empty()
            && st.phase == Phase::Open
            && st.threads() > shared.config.min_threads
        {
            return st;
        }
    }
}

/// Rounds between two looks at the clock while spinning.
const SPIN_CLOCK_EVERY: u32 = 64;
/// Rounds that yield the CPU after the busy-wait: on a machine with fewer
/// cores than threads, the thread that would submit the next job may need
/// this one's core.
const YIELD_ROUNDS: u32 = 8;

/// Looks for new work for up to the pool's `spin` (see
/// [`ThreadPoolBuilder::spin`](crate::ThreadPoolBuilder::spin)) before the
/// worker sleeps: busy-waits, checking the queue-length hint on every
/// round (a job is seen within tens of nanoseconds), then yields a few
/// times. Lock-free: reads the hint only. Returns at once when `spin` is
/// zero.
fn spin_for_work(shared: &PoolShared) {
    let budget = shared.config.spin;
    if budget.is_zero() {
        return;
    }
    shared.spinning.fetch_add(1, Ordering::SeqCst);
    let start = std::time::Instant::now();
    let mut found = false;
    let mut round: u32 = 0;
    loop {
        if shared.queued_hint.load(Ordering::Acquire) > 0 {
            found = true;
            break;
        }
        std::hint::spin_loop();
        round = round.wrapping_add(1);
        if round % SPIN_CLOCK_EVERY == 0 && start.elapsed() >= budget {
            break;
        }
    }
    if !found {
        for _ in 0..YIELD_ROUNDS {
            if shared.queued_hint.load(Ordering::Acquire) > 0 {
                break;
            }
            std::thread::yield_now();
        }
    }
    shared.spinning.fetch_sub(1, Ordering::SeqCst);
}
