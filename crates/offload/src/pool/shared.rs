//! The state every handle and worker of one pool shares, and the
//! operations on it. One mutex guards the queue and all gauges; see
//! `README.md` in this folder for the protocol.
//!
//! The invariants (thread count ≤ `max_threads`, queue ≤ capacity, every
//! accepted job counted once) are kept by the methods here: other files
//! call them and never write a count themselves.

use crate::sync::{lock, wait};
use std::collections::VecDeque;
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
    /// Jobs of callers of `run` that found the queue full, in the order
    /// they came: the line behind the queue. Each job taken from the queue
    /// moves the first of them in (see [`PoolShared::take_job`]), so a
    /// waiting caller needs no wake-up and no second poll to get its job
    /// queued. Not yet accepted: not counted in `submitted`, refused if the
    /// pool closes first. Holds jobs only while the queue is full.
    line: VecDeque<Job>,
    /// Cancellations that may concern a job in `line` (its caller gave up
    /// while it waited). Such a job stays in the line, inert, until it is
    /// reached or the line is swept; the sweep runs when this exceeds half
    /// the line, so the line holds at most twice the live waiters.
    line_cancelled: usize,
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

    /// Room freed in the queue: moves the first live job of the line into
    /// it, queued from `now`. Returns whether one moved (and was counted
    /// as submitted by the caller of this method).
    fn admit_from_line(&mut self, now: Instant) -> bool {
        while let Some(job) = self.line.pop_front() {
            if job.is_cancelled() {
                // Its caller gave up while it waited; dropping it touches
                // no user code (the cell's work is already gone).
                self.line_cancelled = self.line_cancelled.saturating_sub(1);
                continue;
            }
            self.queue.push_back(Queued { job, since: now });
            return true;
        }
        self.line_cancelled = 0;
        false
    }

    /// A caller cancelled a job that was not in the queue: it may be in the
    /// line. Sweeps the line once cancelled entries may make up half of it.
    fn note_line_cancel(&mut self) {
        if self.line.is_empty() {
            return;
        }
        self.line_cancelled += 1;
        if self.line_cancelled * 2 > self.line.len() {
            self.line.retain(|job| !job.is_cancelled());
            self.line_cancelled = 0;
        }
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

/// The longest a submitter waits for a spinning worker to take its job
/// (see [`PoolShared::await_pickup`]).
const PICKUP_WAIT: std::time::Duration = std::time::Duration::from_micros(1);

/// Whether this process may run on more than one CPU. On one, a
/// submitter waiting for a spinning worker would only keep that worker
/// off the CPU it needs, so the hand-over wait is skipped.
fn several_cpus() -> bool {
    static SEVERAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SEVERAL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
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
                line: VecDeque::new(),
                line_cancelled: 0,
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
        self.push(job, false)
    }

    /// Queues `job`, or, if the queue is full, puts it in the line behind
    /// the queue, from which it moves in when room frees (in the order of
    /// calls). Fails only if the pool is closed.
    pub(crate) fn push_or_line_up(&self, job: Job) -> Result<(), (Job, PushError)> {
        self.adopt(&job);
        self.push(job, true)
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
    fn adopt(&self, job: &Job) {
        let owner: Weak<dyn QueueOwner> = self.me.clone();
        job.set_owner(owner);
    }

    fn push(&self, job: Job, line_up: bool) -> Result<(), (Job, PushError)> {
        // Recorded for every submission, so that a thread with other jobs
        // in flight is known not to be alone.
        let alone = crate::lone_caller::submitting(job.cell_ptr());
        let mut st = self.lock();
        if st.phase != Phase::Open {
            return Err((job, PushError::Shutdown));
        }
        if st.queue.len() >= self.config.queue_capacity || !st.line.is_empty() {
            if !line_up {
                return Err((job, PushError::Full));
            }
            // The queue is full, so every worker that can run has a job
            // and no wake-up is owed: the first job taken admits this one.
            st.line.push_back(job);
            return Ok(());
        }
        // The clock is read here, under the lock, and not before it: a
        // submitter that finds the queue full reads no clock.
        let since = Instant::now();
        st.queue.push_back(Queued { job, since });
        self.queue_changed(&st);
        self.counters.submitted();
        let (wake, spawn, handed) = if st.queue.len() <= self.spinning.load(Ordering::SeqCst) {
            // A spinning worker will see it (it re-checks the queue under
            // the lock before it sleeps, so this cannot be missed). If it
            // is the only job, its caller may wait for the hand-over.
            (false, false, st.queue.len() == 1)
        } else if st.sleeping > st.notified {
            st.notified += 1;
            (true, false, false)
        } else {
            // Be eager: nobody is idle, so a new thread is the quickest way
            // to start this job.
            (false, self.claim_thread(&mut st), false)
        };
        drop(st);
        if handed && alone && several_cpus() {
            self.await_pickup();
        }
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

    /// The job just queued is the only one, a spinning worker is about to
    /// take it, and its caller has nothing else in flight: waits until the
    /// queue is empty again (a worker took it, or `shutdown_now` emptied
    /// the queue), for about [`PICKUP_WAIT`] at most. See `README.md`, "Waiting for the
    /// hand-over".
    fn await_pickup(&self) {
        let start = Instant::now();
        let mut round: u32 = 0;
        while self.queued_hint.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
            round = round.wrapping_add(1);
            if round % 16 == 0 && start.elapsed() >= PICKUP_WAIT {
                break;
            }
        }
    }

    /// Mirrors the queue length into [`PoolShared::queued_hint`] (and the
    /// exported gauges); call after every change to the queue, under the
    /// lock.
    fn queue_changed(&self, st: &PoolState) {
        self.queued_hint.store(st.queue.len(), Ordering::Release);
        self.counters.gauges(st.queue.len(), st.running, st.threads);
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
    /// queue: the queued jobs and those in the line behind it fail with
    /// `err` (counted as accepted, then cancelled). The next submission
    /// tries to start a thread again.
    pub(crate) fn thread_not_started(&self, seat: usize, err: &std::io::Error) {
        let mut st = self.lock();
        st.threads -= 1;
        st.seats[seat] = None;
        let last = st.threads == 0;
        let orphans: Vec<Job> = if last {
            let lined = std::mem::take(&mut st.line);
            st.line_cancelled = 0;
            let queued: Vec<Job> = st.queue.drain(..).map(|q| q.job).collect();
            // Counted as accepted, so that each one's failure balances.
            lined.iter().for_each(|_| self.counters.submitted());
            queued.into_iter().chain(lined).collect()
        } else {
            Vec::new()
        };
        self.queue_changed(&st);
        let idle = self.take_idle_waiters_if_done(&mut st);
        drop(st);
        if last {
            self.exited.notify_all();
        }
        let mut failed = 0;
        for job in orphans {
            if job.abandon(Error::spawn(std::io::Error::new(
                err.kind(),
                err.to_string(),
            ))) {
                failed += 1;
            }
        }
        self.counters.cancelled(failed);
        idle.into_iter().for_each(wake_quietly);
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
    /// `started`, and moves the first job waiting in the line into the
    /// room it frees.
    pub(crate) fn take_job(
        &self,
        st: &mut PoolState,
        seat: usize,
        started: Instant,
    ) -> Option<Queued> {
        let queued = st.queue.pop_front()?;
        st.running += 1;
        if st.admit_from_line(started) {
            self.counters.submitted();
        }
        self.queue_changed(st);
        if let Some(s) = st.seats[seat].as_mut() {
            s.busy_since = Some(started);
        }
        Some(queued)
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
        // Jobs waiting in the line were never accepted: they are refused,
        // as a submission to a closed pool is.
        let lined = std::mem::take(&mut st.line);
        st.line_cancelled = 0;

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
        for job in lined {
            let refusal = match &failure {
                Some(msg) => Error::init(msg.clone()),
                None => Error::shutdown(),
            };
            if job.abandon(refusal) {
                self.reject();
            }
        }
        idle.into_iter().for_each(wake_quietly);
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
            // A worker took it first (it will see the cancellation, skip
            // the job and count it), or it waits in the line (never
            // accepted, so not counted; it is dropped when reached or
            // swept).
            st.note_line_cancel();
            return;
        };
        let removed = st.queue.remove(pos);
        if st.admit_from_line(Instant::now()) {
            self.counters.submitted();
        }
        self.queue_changed(&st);
        let idle = self.take_idle_waiters_if_done(&mut st);
        drop(st);
        self.counters.cancelled(1);
        // Already cancelled, so this only releases the cell.
        drop(removed);
        idle.into_iter().for_each(wake_quietly);
    }
}
