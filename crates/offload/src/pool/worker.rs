//! The worker thread: take a job, run it, repeat; sleep when the queue is
//! empty; exit after `keep_alive` without work or once the pool is closed
//! and drained.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use super::metrics::Counters;
use super::shared::{Phase, Shared, State, WorkerSlot, next_submitter};
use crate::error::Error;
use crate::job::Outcome;

thread_local! {
    /// Address of the pool this thread works for (0: none). Lets a pool
    /// dropped from inside one of its own jobs skip waiting for itself.
    static CURRENT_POOL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether the calling thread is one of `shared`'s workers.
pub(crate) fn is_worker_of(shared: &Shared) -> bool {
    CURRENT_POOL.get() == shared as *const Shared as usize
}

/// Starts one worker. The caller has already counted it in `threads`.
///
/// If the OS refuses the thread, the count is given back and the pool goes
/// on with the threads it has; if it has none, the queued jobs fail with
/// [`Error::is_spawn`] instead of waiting for a thread that will never come.
pub(crate) fn spawn(shared: &Shared) {
    let Some(arc) = shared.me.upgrade() else {
        return;
    };
    let (slot, name) = {
        let mut st = shared.lock();
        let name = format!("{}-{}", shared.config.name, st.next_thread);
        st.next_thread += 1;
        let slot_info = WorkerSlot {
            name: name.clone(),
            busy_since: None,
        };
        let slot = match st.workers.iter().position(Option::is_none) {
            Some(i) => {
                st.workers[i] = Some(slot_info);
                i
            }
            None => {
                st.workers.push(Some(slot_info));
                st.workers.len() - 1
            }
        };
        (slot, name)
    };
    let mut builder = std::thread::Builder::new().name(name.clone());
    if let Some(size) = shared.config.stack_size {
        builder = builder.stack_size(size);
    }
    let result = builder.spawn(move || {
        let mut guard = ExitGuard {
            shared: arc.clone(),
            slot,
            armed: true,
        };
        let st = run(&arc, slot);
        guard.armed = false;
        exit(&arc, st, slot);
    });
    if let Err(err) = result {
        tracing::warn!(thread = %name, error = %err, "offload: could not start a worker thread; continuing with fewer");
        let mut st = shared.lock();
        st.threads -= 1;
        st.workers[slot] = None;
        let orphans: Vec<_> = if st.threads == 0 {
            st.queue.drain(..).collect()
        } else {
            Vec::new()
        };
        shared.sync_hint(&st);
        let idle = shared.take_idle_waiters_if_done(&mut st);
        let last = st.threads == 0;
        drop(st);
        if last {
            shared.exited.notify_all();
        }
        idle.into_iter().for_each(Waker::wake);
        for q in orphans {
            q.job.abandon(Error::spawn(std::io::Error::new(
                err.kind(),
                err.to_string(),
            )));
        }
    }
}

/// Gives the thread's place back if the worker loop unwinds (it should
/// not: jobs and hooks run under `catch_unwind`), so the pool's count of
/// threads stays true.
struct ExitGuard {
    shared: Arc<Shared>,
    slot: usize,
    armed: bool,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if self.armed {
            exit(&self.shared, self.shared.lock(), self.slot);
        }
    }
}

/// Removes this worker from the pool's count. Called with the lock held
/// since the worker decided to exit: a job queued in between would
/// otherwise see a thread that is about to vanish and start no other.
fn exit(shared: &Shared, mut st: MutexGuard<'_, State>, slot: usize) {
    st.threads -= 1;
    st.workers[slot] = None;
    let last = st.threads == 0;
    drop(st);
    if last {
        shared.exited.notify_all();
    }
}

/// The worker loop. Returns, still holding the lock, when the thread should
/// exit.
fn run(shared: &Shared, slot: usize) -> MutexGuard<'_, State> {
    CURRENT_POOL.set(shared as *const Shared as usize);
    if let Some(hook) = &shared.config.on_start {
        if catch_unwind(AssertUnwindSafe(|| hook())).is_err() {
            tracing::warn!(
                pool = %shared.config.name,
                "offload: the pool's on_start hook panicked; the thread serves jobs anyway"
            );
        }
    }
    let counters = &shared.counters;
    let mut st = shared.lock();
    // Whether this worker already spun since it last found work.
    let mut spun = false;
    loop {
        if let Some(queued) = st.queue.pop_front() {
            shared.sync_hint(&st);
            st.running += 1;
            let started = Instant::now();
            if let Some(w) = st.workers[slot].as_mut() {
                w.busy_since = Some(started);
            }
            let next = next_submitter(&mut st);
            drop(st);
            spun = false;
            if let Some(w) = next {
                w.wake();
            }
            counters.queue_wait.record(started - queued.since);
            queued.job.run_then(&mut |outcome| match outcome {
                Outcome::Completed => {
                    counters.run_time.record(started.elapsed());
                    Counters::add(&counters.completed, 1);
                }
                Outcome::Panicked => {
                    counters.run_time.record(started.elapsed());
                    Counters::add(&counters.panicked, 1);
                }
                Outcome::Skipped => Counters::add(&counters.cancelled, 1),
            });
            st = shared.lock();
            st.running -= 1;
            if let Some(w) = st.workers[slot].as_mut() {
                w.busy_since = None;
            }
            if st.phase == Phase::Closed {
                let idle = shared.take_idle_waiters_if_done(&mut st);
                if !idle.is_empty() {
                    drop(st);
                    idle.into_iter().for_each(Waker::wake);
                    st = shared.lock();
                }
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
                st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
                false
            }
            Some(keep_alive) => {
                let (guard, res) = shared
                    .work
                    .wait_timeout(st, keep_alive)
                    .unwrap_or_else(|e| e.into_inner());
                st = guard;
                res.timed_out()
            }
        };
        st.sleeping -= 1;
        st.notified = st.notified.saturating_sub(1);
        if timed_out
            && st.queue.is_empty()
            && st.phase == Phase::Open
            && st.threads > shared.config.min_threads
        {
            return st;
        }
    }
}

/// How long an idle worker looks for new work before it sleeps: a few
/// busy-wait rounds, then rounds that yield the CPU (on a machine with
/// fewer cores than threads, the thread that would submit the next job may
/// need this one's core).
const SPIN_ROUNDS: u32 = 8;
const YIELD_ROUNDS: u32 = 32;

/// Spins until a job is queued or the rounds run out. Lock-free: reads the
/// queue-length hint only.
fn spin_for_work(shared: &Shared) {
    shared.spinning.fetch_add(1, Ordering::SeqCst);
    for round in 0..SPIN_ROUNDS + YIELD_ROUNDS {
        if shared.queued_hint.load(Ordering::Acquire) > 0 {
            break;
        }
        if round < SPIN_ROUNDS {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
    }
    shared.spinning.fetch_sub(1, Ordering::SeqCst);
}
