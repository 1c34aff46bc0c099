//! The state every handle and worker of one pool shares, and the
//! operations on it. One mutex guards the queue and all gauges; see
//! `README.md` in this folder for the protocol.
//!
//! The invariants (thread count ≤ `max_threads`, queue ≤ capacity, every
//! accepted job counted once) are kept by the methods here: other files
//! call them and never write a count themselves.

use crate::sync::{lock, wait};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::Waker;
use std::time::Instant;

use super::builder::Config;
use super::metrics::Counters;
use crate::error::{CancelReason, Error};
use crate::job::{Job, QueueOwner, Refusal, wake_quietly};

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

/// What one worker thread is doing, for shutdown reports. Each live worker
/// owns one seat, by index, in [`PoolState::seats`].
pub(crate) struct WorkerSeat {
    pub(crate) name: String,
    /// When its current job started; `None` while idle.
    pub(crate) busy_since: Option<Instant>,
}

pub(crate) struct PoolState {
    pub(crate) phase: Phase,
    /// Set when the pool failed for good (a dedicated executor whose
    /// initialiser failed): refused and abandoned jobs get this error's
    /// message as [`Error::is_init`] instead of a plain shutdown.
    pub(crate) failure: Option<String>,
    pub(crate) queue: VecDeque<Queued>,
    /// Worker threads counted against `max_threads`: live ones and ones
    /// being started.
    threads: usize,
    /// Workers blocked on the condvar.
    pub(crate) sleeping: usize,
    /// Wake-ups sent to sleeping workers and not yet consumed; a new job
    /// wakes a worker only if `sleeping > notified`, so a burst of jobs does
    /// not issue a futex wake per job.
    pub(crate) notified: usize,
    /// Jobs being run right now.
    running: usize,
    /// One seat per live worker, indexed by seat number; `None` = free.
    pub(crate) seats: Vec<Option<WorkerSeat>>,
    /// Counter for thread names.
    next_thread: usize,
    /// Callers of `run` waiting for room in the queue, keyed by a ticket
    /// taken on arrival: the first entry is the longest waiting. A map, not
    /// a list, because tens of thousands may wait and each must be found,
    /// updated or removed in O(log n).
    submit_waiters: BTreeMap<u64, Waker>,
    next_ticket: u64,
    /// Futures waiting for the pool to become idle after shutdown.
    pub(crate) idle_waiters: Vec<Waker>,
}

impl PoolState {
    /// Worker threads counted against the bound (live or starting).
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Jobs running now.
    pub(crate) fn running(&self) -> usize {
        self.running
    }

    /// The pool is closed and every job has finished or been cancelled.
    pub(crate) fn is_done(&self) -> bool {
        self.phase == Phase::Closed && self.queue.is_empty() && self.running == 0
    }

    /// The error for a job refused or abandoned because the pool is closed.
    fn closed_error(&self) -> Error {
        match &self.failure {
            Some(msg) => Error::init(msg.clone()),
            None => Error::shutdown(),
        }
    }

    /// The longest-waiting submitter, to wake (after unlocking) because
    /// room in the queue just freed.
    fn next_submitter(&mut self) -> Option<Waker> {
        self.submit_waiters.pop_first().map(|(_, w)| w)
    }
}

pub(crate) struct PoolShared {
    state: Mutex<PoolState>,
    /// Workers sleep here waiting for jobs.
    pub(crate) work: Condvar,
    /// Signalled when the last worker exits (`shutdown_blocking`).
    exited: Condvar,
    pub(crate) config: Config,
    counters: Counters,
    /// `queue.len()`, mirrored outside the lock so that a worker can spin on
    /// it briefly before going to sleep (see `worker::spin_for_work`).
    pub(crate) queued_hint: AtomicUsize,
    /// Workers spinning for work right now; a new job that such a worker
    /// will pick up needs no futex wake-up.
    pub(crate) spinning: AtomicUsize,
    /// Live [`ThreadPool`](super::ThreadPool) handles; the last one to go
    /// closes the pool.
    handles: AtomicUsize,
    /// Handed to each queued job so that a cancelling caller can remove it.
    me: Weak<PoolShared>,
}

/// Why a job could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    Full,
    Shutdown,
}

impl From<PushError> for Refusal {
    fn from(e: PushError) -> Self {
        match e {
            PushError::Full => Refusal::Full,
            PushError::Shutdown => Refusal::Shutdown,
        }
    }
}

impl PoolShared {
    pub(crate) fn new(config: Config) -> Arc<Self> {
        Arc::new_cyclic(|me| PoolShared {
            state: Mutex::new(PoolState {
                phase: Phase::Open,
                failure: None,
                queue: VecDeque::with_capacity(config.queue_capacity.min(4096)),
                threads: 0,
                sleeping: 0,
                notified: 0,
                running: 0,
                seats: Vec::new(),
                next_thread: 0,
                submit_waiters: BTreeMap::new(),
                next_ticket: 0,
                idle_waiters: Vec::new(),
            }),
            work: Condvar::new(),
            exited: Condvar::new(),
            counters: Counters::new(&config.name),
            config,
            queued_hint: AtomicUsize::new(0),
            spinning: AtomicUsize::new(0),
            handles: AtomicUsize::new(1),
            me: me.clone(),
        })
    }

    /// Locks the state. User code never runs under this lock, so poisoning
    /// cannot come from a job; recover rather than propagate a panic.
    pub(crate) fn lock(&self) -> MutexGuard<'_, PoolState> {
        lock(&self.state)
    }

    /// The pool's own `Arc`, for a new worker thread to hold.
    pub(crate) fn me_upgrade(&self) -> Option<Arc<PoolShared>> {
        self.me.upgrade()
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    // ---- handles ----

    /// A handle was cloned.
    pub(crate) fn handle_cloned(&self) {
        self.handles.fetch_add(1, Ordering::Relaxed);
    }

    /// A handle was dropped; returns whether it was the last one.
    pub(crate) fn handle_dropped(&self) -> bool {
        self.handles.fetch_sub(1, Ordering::AcqRel) == 1
    }

    // ---- submission ----

    /// Queues `job` if there is room, starting or waking a worker for it.
    /// On failure the job comes back untouched.
    pub(crate) fn try_push(&self, job: Job) -> Result<(), (Job, PushError)> {
        self.adopt(&job);
        self.push(job, None)
    }

    /// A submission was refused; counts it.
    pub(crate) fn reject(&self) {
        self.counters.rejected();
    }

    /// The error a refused submission gets, counted as rejected.
    pub(crate) fn refusal_error(&self, why: PushError) -> Error {
        self.reject();
        match why {
            PushError::Full => Error::rejected(),
            PushError::Shutdown => self.lock().closed_error(),
        }
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
    /// to be woken when room frees, in the same critical section, so room
    /// freed in between cannot be missed. On success, any registration left
    /// is removed. The job must have been [adopted](Self::adopt).
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
        let mut st = self.lock();
        if st.phase != Phase::Open {
            if let Some((ticket, _)) = waiter {
                if let Some(t) = ticket.take() {
                    st.submit_waiters.remove(&t);
                }
            }
            return Err((job, PushError::Shutdown));
        }
        if st.queue.len() >= self.config.queue_capacity {
            if let Some((ticket, waker)) = waiter {
                // A waiter woken for room that someone else took re-enters
                // with its old ticket, so it keeps its place in line.
                let t = *ticket.get_or_insert_with(|| {
                    st.next_ticket += 1;
                    st.next_ticket
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
        // The clock is read here, under the lock, and not before it: a
        // submitter that finds the queue full (and waits) reads no clock.
        let since = Instant::now();
        st.queue.push_back(Queued { job, since });
        self.queue_changed(&st);
        self.counters.submitted();
        let (wake, spawn) = if st.queue.len() <= self.spinning.load(Ordering::SeqCst) {
            // A spinning worker will see it (it re-checks the queue under
            // the lock before it sleeps, so this cannot be missed).
            (false, false)
        } else if st.sleeping > st.notified {
            st.notified += 1;
            (true, false)
        } else {
            // Be eager: nobody is idle, so a new thread is the quickest way
            // to start this job.
            (false, self.claim_thread(&mut st))
        };
        drop(st);
        if wake {
            // Outside the lock: the futex wake is a system call, and a
            // critical section that long is one a preempted pusher would
            // hold up everyone with. The sleeper counted in `sleeping` is
            // already inside `wait` (it released the lock there), so the
            // notification reaches it.
            self.work.notify_one();
        }
        if spawn {
            // A failure is handled (and logged) by `spawn`: the job waits
            // for another thread, or fails if the pool has none.
            let _ = super::worker::spawn(self);
        }
        Ok(())
    }

    /// Mirrors the queue length into [`PoolShared::queued_hint`] (and the
    /// exported gauges); call after every change to the queue, under the
    /// lock.
    fn queue_changed(&self, st: &PoolState) {
        self.queued_hint.store(st.queue.len(), Ordering::Release);
        self.counters.gauges(st.queue.len(), st.running, st.threads);
    }

    /// A waiting submitter gave up. If it had been woken for room it did
    /// not use, pass the wake-up on so no other waiter is stranded.
    pub(crate) fn forget_waiter(&self, ticket: u64) {
        let mut st = self.lock();
        if st.submit_waiters.remove(&ticket).is_some() {
            // Still waiting: it held no wake-up to pass on.
        } else if st.queue.len() < self.config.queue_capacity {
            let next = st.next_submitter();
            drop(st);
            next.into_iter().for_each(wake_quietly);
        }
    }

    // ---- threads ----

    /// Counts one more thread if the bound allows; the caller then starts
    /// it with `worker::spawn` (after unlocking).
    pub(crate) fn claim_thread(&self, st: &mut PoolState) -> bool {
        if st.threads < self.config.max_threads {
            st.threads += 1;
            true
        } else {
            false
        }
    }

    /// Names the next worker and gives it a seat. The thread has been
    /// claimed ([`claim_thread`](Self::claim_thread)).
    pub(crate) fn seat_worker(&self) -> (usize, String) {
        let mut st = self.lock();
        let name = format!("{}-{}", self.config.name, st.next_thread);
        st.next_thread += 1;
        let seat = WorkerSeat {
            name: name.clone(),
            busy_since: None,
        };
        let index = match st.seats.iter().position(Option::is_none) {
            Some(i) => {
                st.seats[i] = Some(seat);
                i
            }
            None => {
                st.seats.push(Some(seat));
                st.seats.len() - 1
            }
        };
        (index, name)
    }

    /// A claimed thread could not be started: gives its count and seat
    /// back. If it was the pool's last thread, nothing would ever run the
    /// queue: the queued jobs fail with `err`, and every submitter waiting
    /// for room is woken (it retries, which tries to start a thread again,
    /// or fails if the pool has closed meanwhile).
    pub(crate) fn thread_not_started(&self, seat: usize, err: &std::io::Error) {
        let mut st = self.lock();
        st.threads -= 1;
        st.seats[seat] = None;
        let last = st.threads == 0;
        let (orphans, waiters) = if last {
            let orphans: Vec<Queued> = st.queue.drain(..).collect();
            let waiters: Vec<Waker> = std::mem::take(&mut st.submit_waiters)
                .into_values()
                .collect();
            (orphans, waiters)
        } else {
            (Vec::new(), Vec::new())
        };
        self.queue_changed(&st);
        let idle = self.take_idle_waiters_if_done(&mut st);
        drop(st);
        if last {
            self.exited.notify_all();
        }
        let mut failed = 0;
        for q in orphans {
            if q.job.abandon(Error::spawn(std::io::Error::new(
                err.kind(),
                err.to_string(),
            ))) {
                failed += 1;
            }
        }
        self.counters.cancelled(failed);
        waiters.into_iter().chain(idle).for_each(wake_quietly);
    }

    /// A worker leaves the pool: gives its count and seat back. Called with
    /// the lock held since the worker decided to exit, so that a job queued
    /// in between sees a true count and starts another thread.
    pub(crate) fn thread_exits(&self, mut st: MutexGuard<'_, PoolState>, seat: usize) {
        st.threads -= 1;
        st.seats[seat] = None;
        self.counters.gauges(st.queue.len(), st.running, st.threads);
        let last = st.threads == 0;
        drop(st);
        if last {
            self.exited.notify_all();
        }
    }

    /// Blocks the calling thread until the pool is done (closed, queue
    /// empty, nothing running) and every worker thread has exited.
    pub(crate) fn wait_exited(&self) {
        let mut st = self.lock();
        while !(st.is_done() && st.threads == 0) {
            st = wait(&self.exited, st);
        }
    }

    // ---- jobs on a worker ----

    /// Takes the next job for worker `seat`, marking it running from
    /// `started`. Returns the submitter to wake (after unlocking) for the
    /// room it frees.
    pub(crate) fn take_job(
        &self,
        st: &mut PoolState,
        seat: usize,
        started: Instant,
    ) -> Option<(Queued, Option<Waker>)> {
        let queued = st.queue.pop_front()?;
        st.running += 1;
        self.queue_changed(st);
        if let Some(s) = st.seats[seat].as_mut() {
            s.busy_since = Some(started);
        }
        let next = st.next_submitter();
        Some((queued, next))
    }

    /// The job of worker `seat` ended. Returns the shutdown waiters to wake
    /// (after unlocking) if that made the pool done.
    pub(crate) fn job_done(&self, st: &mut PoolState, seat: usize) -> Vec<Waker> {
        st.running -= 1;
        if let Some(s) = st.seats[seat].as_mut() {
            s.busy_since = None;
        }
        self.counters.gauges(st.queue.len(), st.running, st.threads);
        self.take_idle_waiters_if_done(st)
    }

    // ---- shutdown ----

    /// Closes the pool: no new jobs. With `cancel_queued`, also empties the
    /// queue, failing each job with a cancelled error. Returns how many
    /// queued jobs were cancelled.
    pub(crate) fn close(&self, cancel_queued: bool) -> usize {
        self.close_with(cancel_queued, None)
    }

    /// Closes the pool for good because it cannot serve anything (a
    /// dedicated executor whose initialiser failed): queued jobs and later
    /// submissions fail with [`Error::is_init`] and `message`.
    pub(crate) fn fail(&self, message: String) -> usize {
        self.close_with(true, Some(message))
    }

    fn close_with(&self, cancel_queued: bool, failure: Option<String>) -> usize {
        let mut st = self.lock();
        st.phase = Phase::Closed;
        if failure.is_some() {
            st.failure = failure;
        }
        let drained: Vec<Queued> = if cancel_queued {
            st.queue.drain(..).collect()
        } else {
            Vec::new()
        };
        self.queue_changed(&st);
        let submitters: Vec<Waker> = std::mem::take(&mut st.submit_waiters)
            .into_values()
            .collect();
        let idle = self.take_idle_waiters_if_done(&mut st);
        let failure = st.failure.clone();
        drop(st);
        // Wake sleeping workers so they see the new phase and exit once the
        // queue is empty.
        self.work.notify_all();
        // Fail jobs outside the lock: their wakers are user code.
        let mut cancelled = 0;
        for q in drained {
            let error = match &failure {
                Some(msg) => Error::init(msg.clone()),
                None => Error::cancelled(CancelReason::Shutdown),
            };
            if q.job.abandon(error) {
                cancelled += 1;
            }
        }
        self.counters.cancelled(cancelled as u64);
        submitters.into_iter().chain(idle).for_each(wake_quietly);
        cancelled
    }

    /// Takes the shutdown waiters if the pool is done; wake them after
    /// unlocking.
    pub(crate) fn take_idle_waiters_if_done(&self, st: &mut PoolState) -> Vec<Waker> {
        if st.is_done() {
            std::mem::take(&mut st.idle_waiters)
        } else {
            Vec::new()
        }
    }
}

impl QueueOwner for PoolShared {
    fn remove_cancelled(&self, cell: *const ()) {
        let mut st = self.lock();
        // Search from the back: a caller that gives up quickly usually
        // cancels a recent job.
        let Some(pos) = st.queue.iter().rposition(|q| q.job.cell_ptr() == cell) else {
            // A worker took it first; it will see the cancellation and skip
            // it (and count it).
            return;
        };
        let removed = st.queue.remove(pos);
        self.queue_changed(&st);
        let next = st.next_submitter();
        let idle = self.take_idle_waiters_if_done(&mut st);
        drop(st);
        self.counters.cancelled(1);
        // Already cancelled, so this only releases the cell.
        drop(removed);
        next.into_iter().chain(idle).for_each(wake_quietly);
    }
}
