//! The state every handle and worker of one pool shares, and the operations
//! on it. One mutex guards the queue and all gauges; see `README.md` in this
//! folder for the protocol.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use super::builder::Config;
use super::metrics::Counters;
use crate::error::{CancelReason, Error};
use crate::job::{Job, QueueOwner};

/// Where the pool is in its life. Moves forward only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepting jobs.
    Open,
    /// Shut down: no new jobs; queued ones still run (drain) unless
    /// `shutdown_now` emptied the queue. Workers exit when the queue is empty.
    Closed,
}

/// A job waiting for a thread, with when it was queued (for metrics).
pub(crate) struct Queued {
    pub(crate) job: Job,
    pub(crate) since: Instant,
}

/// What a worker is doing, for shutdown reports.
pub(crate) struct WorkerSlot {
    pub(crate) name: String,
    /// When its current job started; `None` while idle.
    pub(crate) busy_since: Option<Instant>,
}

pub(crate) struct State {
    pub(crate) phase: Phase,
    pub(crate) queue: VecDeque<Queued>,
    /// Live worker threads.
    pub(crate) threads: usize,
    /// Workers blocked on the condvar.
    pub(crate) sleeping: usize,
    /// Wake-ups sent to sleeping workers and not yet consumed; a new job
    /// wakes a worker only if `sleeping > notified`, so a burst of jobs does
    /// not issue a futex wake per job.
    pub(crate) notified: usize,
    /// Jobs being run right now.
    pub(crate) running: usize,
    /// Per-worker slots, indexed by a worker's slot number; `None` = free.
    pub(crate) workers: Vec<Option<WorkerSlot>>,
    /// Counter for thread names.
    pub(crate) next_thread: usize,
    /// Callers of `run` waiting for a queue slot, keyed by a ticket taken
    /// on arrival: the first entry is the longest waiting. A map, not a
    /// list, because tens of thousands may wait and each must be found,
    /// updated or removed in O(log n).
    pub(crate) submit_waiters: BTreeMap<u64, Waker>,
    pub(crate) next_waiter: u64,
    /// Futures waiting for the pool to become idle after shutdown.
    pub(crate) idle_waiters: Vec<Waker>,
}

pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Workers sleep here waiting for jobs.
    pub(crate) work: Condvar,
    /// Signalled when the last worker exits (blocking waits in `Drop`).
    pub(crate) exited: Condvar,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    /// `queue.len()`, mirrored outside the lock so that a worker can spin on
    /// it briefly before going to sleep (see `worker::spin_for_work`).
    pub(crate) queued_hint: AtomicUsize,
    /// Workers spinning for work right now; a new job that such a worker
    /// will pick up needs no futex wake-up.
    pub(crate) spinning: AtomicUsize,
    /// Handed to each queued job so that a cancelling caller can remove it.
    pub(crate) me: Weak<Shared>,
}

/// Why a job could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    Full,
    Shutdown,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Arc<Self> {
        Arc::new_cyclic(|me| Shared {
            state: Mutex::new(State {
                phase: Phase::Open,
                queue: VecDeque::with_capacity(config.queue_capacity.min(4096)),
                threads: 0,
                sleeping: 0,
                notified: 0,
                running: 0,
                workers: Vec::new(),
                next_thread: 0,
                submit_waiters: BTreeMap::new(),
                next_waiter: 0,
                idle_waiters: Vec::new(),
            }),
            work: Condvar::new(),
            exited: Condvar::new(),
            config,
            counters: Counters::new(),
            queued_hint: AtomicUsize::new(0),
            spinning: AtomicUsize::new(0),
            me: me.clone(),
        })
    }

    /// Locks the state. User code never runs under this lock, so poisoning
    /// cannot come from a job; recover rather than propagate a panic.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job` if there is room, starting or waking a worker for it.
    /// On failure the job comes back untouched.
    pub(crate) fn try_push(&self, job: Job) -> Result<(), (Job, PushError)> {
        self.adopt(&job);
        self.push(job, None)
    }

    /// Tells `job` which queue will hold it, so that its caller's
    /// cancellation can remove it. Once per job, before its first push.
    pub(crate) fn adopt(&self, job: &Job) {
        let owner: Weak<dyn QueueOwner> = self.me.clone();
        job.set_owner(owner);
    }

    /// Whether the queue looks full, without taking the lock (a hint: the
    /// push decides under the lock).
    pub(crate) fn looks_full(&self) -> bool {
        self.queued_hint.load(Ordering::Relaxed) >= self.config.queue_capacity
    }

    /// Like [`try_push`](Self::try_push), but when the queue is full,
    /// registers `waker` under ticket `ticket` (taking one if it has none)
    /// to be woken when a slot frees, in the same critical section, so a
    /// slot freed in between cannot be missed. On success, any registration
    /// left is removed. The job must have been [adopted](Self::adopt).
    pub(crate) fn push_or_wait(
        &self,
        job: Job,
        ticket: &mut Option<u64>,
        waker: &Waker,
    ) -> Result<(), (Job, PushError)> {
        self.push(job, Some((ticket, waker)))
    }

    fn push(
        &self,
        job: Job,
        waiter: Option<(&mut Option<u64>, &Waker)>,
    ) -> Result<(), (Job, PushError)> {
        let since = Instant::now();
        let mut st = self.lock();
        if st.phase != Phase::Open {
            return Err((job, PushError::Shutdown));
        }
        if st.queue.len() >= self.config.queue_capacity {
            if let Some((ticket, waker)) = waiter {
                // A waiter woken for a slot that someone else took re-enters
                // with its old ticket, so it keeps its place in line.
                let t = *ticket.get_or_insert_with(|| {
                    st.next_waiter += 1;
                    st.next_waiter
                });
                match st.submit_waiters.get_mut(&t) {
                    Some(w) => w.clone_from(waker),
                    None => {
                        st.submit_waiters.insert(t, waker.clone());
                    }
                }
            }
            return Err((job, PushError::Full));
        }
        if let Some((ticket, _)) = waiter {
            if let Some(t) = ticket.take() {
                st.submit_waiters.remove(&t);
            }
        }
        st.queue.push_back(Queued { job, since });
        self.sync_hint(&st);
        Counters::add(&self.counters.submitted, 1);
        let spawn = if st.queue.len() <= self.spinning.load(Ordering::SeqCst) {
            // A spinning worker will see it (it re-checks the queue under
            // the lock before it sleeps, so this cannot be missed).
            false
        } else if st.sleeping > st.notified {
            st.notified += 1;
            self.work.notify_one();
            false
        } else if st.threads < self.config.max_threads {
            // Be eager: nobody is idle, so a new thread is the quickest way
            // to start this job.
            st.threads += 1;
            true
        } else {
            false
        };
        drop(st);
        if spawn {
            super::worker::spawn(self);
        }
        Ok(())
    }

    /// Mirrors the queue length into [`Shared::queued_hint`]; call after
    /// every change to the queue, under the lock.
    pub(crate) fn sync_hint(&self, st: &State) {
        self.queued_hint.store(st.queue.len(), Ordering::Release);
    }

    /// A waiting submitter gave up. If it had been woken for a slot it did
    /// not use, pass the wake-up on so no other waiter is stranded.
    pub(crate) fn forget_waiter(&self, id: u64) {
        let mut st = self.lock();
        if st.submit_waiters.remove(&id).is_some() {
            // Still waiting: it held no wake-up to pass on.
        } else if st.queue.len() < self.config.queue_capacity {
            let next = next_submitter(&mut st);
            drop(st);
            if let Some(w) = next {
                w.wake();
            }
        }
    }

    /// Closes the pool: no new jobs. With `cancel_queued`, also empties the
    /// queue, failing each job with a cancelled error. Returns how many
    /// queued jobs were cancelled.
    pub(crate) fn close(&self, cancel_queued: bool) -> usize {
        let mut st = self.lock();
        st.phase = Phase::Closed;
        let drained: Vec<Queued> = if cancel_queued {
            st.queue.drain(..).collect()
        } else {
            Vec::new()
        };
        self.sync_hint(&st);
        let submitters: Vec<Waker> = std::mem::take(&mut st.submit_waiters)
            .into_values()
            .collect();
        let idle = self.take_idle_waiters_if_done(&mut st);
        drop(st);
        // Wake sleeping workers so they see the new phase and exit once the
        // queue is empty.
        self.work.notify_all();
        // Fail jobs outside the lock: their wakers are user code.
        let mut cancelled = 0;
        for q in drained {
            if q.job.abandon(Error::cancelled(CancelReason::Shutdown)) {
                cancelled += 1;
            }
        }
        Counters::add(&self.counters.cancelled, cancelled as u64);
        submitters.into_iter().for_each(Waker::wake);
        idle.into_iter().for_each(Waker::wake);
        cancelled
    }

    /// The pool is closed and every job has finished or been cancelled.
    pub(crate) fn is_done(st: &State) -> bool {
        st.phase == Phase::Closed && st.queue.is_empty() && st.running == 0
    }

    /// Takes the shutdown waiters if the pool is done; wake them after
    /// unlocking.
    pub(crate) fn take_idle_waiters_if_done(&self, st: &mut State) -> Vec<Waker> {
        if Self::is_done(st) {
            std::mem::take(&mut st.idle_waiters)
        } else {
            Vec::new()
        }
    }

    /// Blocks the calling thread until every worker has exited, or until
    /// `deadline` if one is given. Returns whether all exited.
    pub(crate) fn wait_exited(&self, deadline: Option<Duration>) -> bool {
        let start = Instant::now();
        let mut st = self.lock();
        while st.threads > 0 {
            match deadline {
                None => st = self.exited.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let Some(left) = d.checked_sub(start.elapsed()) else {
                        return false;
                    };
                    st = self
                        .exited
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        true
    }
}

/// The longest-waiting submitter, to wake (after unlocking) because a
/// queue slot just freed.
pub(crate) fn next_submitter(st: &mut State) -> Option<Waker> {
    st.submit_waiters.pop_first().map(|(_, w)| w)
}

impl QueueOwner for Shared {
    fn remove_cancelled(&self, cell: *const ()) {
        let mut st = self.lock();
        // Search from the back: a caller that gives up quickly usually
        // cancels a recent job.
        let Some(pos) = st.queue.iter().rposition(|q| q.job.cell_ptr() == cell) else {
            // A worker took it first; it will see the cancellation and skip it.
            return;
        };
        let removed = st.queue.remove(pos);
        self.sync_hint(&st);
        Counters::add(&self.counters.cancelled, 1);
        let next = next_submitter(&mut st);
        let idle = self.take_idle_waiters_if_done(&mut st);
        drop(st);
        // Already cancelled, so this only releases the cell.
        drop(removed);
        next.into_iter().chain(idle).for_each(Waker::wake);
    }
}
