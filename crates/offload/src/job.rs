//! A job and its result slot.
//!
//! Submitting a closure allocates one [`JobCell`], shared by two owners:
//! the executor holds it as a type-erased [`Job`] and runs it; the caller
//! holds it as a typed [`JobHandle`] and awaits the result. All state lives
//! behind one small mutex in the cell, so the protocol between the two
//! sides is a plain state machine:
//!
//! ```text
//!  Queued(f) ──run──> Running ──done──> Done(result) ──poll──> Taken
//!     │                  │
//!     │ handle dropped   │ handle dropped
//!     v                  v
//!  Cancelled          Detached (result discarded when the job ends)
//! ```
//!
//! A job dropped by its executor without running moves `Queued → Done(Err)`
//! so its caller gets a cancelled error instead of waiting forever.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use crate::error::{CancelReason, Error};

/// The state of one job, shared by the executor side and the caller side.
enum Stage<F, T> {
    /// Waiting in a queue; holds the closure.
    Queued(F),
    /// A worker took the closure and is running it.
    Running,
    /// Finished (or failed before running); the result waits for the caller.
    Done(Result<T, Error>),
    /// The caller took the result.
    Taken,
    /// The caller gave up before the job started; it will never run.
    Cancelled,
    /// The caller gave up while the job was running; its result is discarded.
    Detached,
}

struct CellState<F, T> {
    stage: Stage<F, T>,
    /// The caller's waker, registered while the result is not ready.
    waker: Option<Waker>,
    /// The queue holding the job, told when the caller cancels so the queue
    /// slot is freed at once instead of when a worker skips the job.
    owner: Option<Weak<dyn QueueOwner>>,
}

/// The one allocation behind a job: closure, result and waker.
struct JobCell<F, T> {
    state: Mutex<CellState<F, T>>,
}

impl<F, T> JobCell<F, T> {
    fn lock(&self) -> MutexGuard<'_, CellState<F, T>> {
        // Nothing user-supplied runs while this lock is held, so it cannot be
        // poisoned by a job's panic; recover anyway rather than propagate.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What happened when a worker picked up a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The closure returned normally.
    Completed,
    /// The closure panicked; the caller gets the panic as an error.
    Panicked,
    /// The caller had cancelled; the closure was not run.
    Skipped,
}

/// The executor's view of a job: run it, or fail it.
trait Runnable: Send + Sync {
    /// Runs the job; `on_end` hears the outcome before the caller can see
    /// the result, so that counters are up to date when the caller wakes.
    fn run(&self, on_end: &mut dyn FnMut(Outcome));
    /// Fails a job that will never run. Returns whether it was still queued.
    fn abandon(&self, error: Error) -> bool;
    fn set_owner(&self, owner: Weak<dyn QueueOwner>);
}

/// Told when a queued job is cancelled by its caller.
pub(crate) trait QueueOwner: Send + Sync {
    /// Removes the job whose cell lives at `cell` from the queue, if present.
    fn remove_cancelled(&self, cell: *const ());
}

/// A unit of work handed to an [`Executor`](crate::Executor).
///
/// An executor must eventually either call [`run`](Job::run) on some thread
/// or drop the job. Dropping it without running makes its caller's future
/// resolve to an error for which [`Error::is_cancelled`] is true, so a job
/// can never be lost silently. Running it is always safe: panics are caught
/// and delivered to the caller, and a job whose caller has gone away returns
/// at once.
pub struct Job {
    cell: Option<Arc<dyn Runnable>>,
}

impl Job {
    /// Runs the job on the current thread (blocking it until the closure
    /// returns) and delivers the result to whoever awaits it.
    ///
    /// Never panics: a panic in the closure is caught and becomes the
    /// caller's error.
    pub fn run(mut self) {
        if let Some(cell) = self.cell.take() {
            cell.run(&mut |_| {});
        }
    }

    /// Like [`run`](Job::run), and tells `on_end` what happened before the
    /// caller can see the result (for pool metrics).
    pub(crate) fn run_then(mut self, on_end: &mut dyn FnMut(Outcome)) {
        match self.cell.take() {
            Some(cell) => cell.run(on_end),
            None => on_end(Outcome::Skipped),
        }
    }

    /// Fails the job with `error`. Returns whether it was still queued
    /// (`false` when its caller had already cancelled it).
    pub(crate) fn abandon(mut self, error: Error) -> bool {
        match self.cell.take() {
            Some(cell) => cell.abandon(error),
            None => false,
        }
    }

    /// Registers the queue that holds this job, for eager removal on cancel.
    pub(crate) fn set_owner(&self, owner: Weak<dyn QueueOwner>) {
        if let Some(cell) = &self.cell {
            cell.set_owner(owner);
        }
    }

    /// The identity of the job's cell, compared against
    /// [`QueueOwner::remove_cancelled`]'s argument.
    pub(crate) fn cell_ptr(&self) -> *const () {
        self.cell
            .as_ref()
            .map_or(std::ptr::null(), |c| Arc::as_ptr(c) as *const ())
    }

    /// Drops the job without failing it: used when the closure is about to
    /// be taken back out of the cell and handed to the caller.
    fn disarm(mut self) {
        self.cell = None;
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(cell) = self.cell.take() {
            cell.abandon(Error::cancelled(CancelReason::Dropped));
        }
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

impl<F, T> Runnable for JobCell<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    fn run(&self, on_end: &mut dyn FnMut(Outcome)) {
        let f = {
            let mut st = self.lock();
            match std::mem::replace(&mut st.stage, Stage::Running) {
                Stage::Queued(f) => {
                    st.owner = None;
                    f
                }
                other => {
                    st.stage = other;
                    drop(st);
                    on_end(Outcome::Skipped);
                    return;
                }
            }
        };
        let (result, outcome) = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => (Ok(v), Outcome::Completed),
            Err(payload) => {
                let err = Error::panic(payload);
                (Err(err), Outcome::Panicked)
            }
        };
        on_end(outcome);
        let mut st = self.lock();
        if matches!(st.stage, Stage::Detached) {
            drop(st);
            // Nobody wants the result. Its destructor is user code: keep a
            // panic there from unwinding into the worker.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(result)));
        } else {
            st.stage = Stage::Done(result);
            let waker = st.waker.take();
            drop(st);
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    fn abandon(&self, error: Error) -> bool {
        let mut st = self.lock();
        if !matches!(st.stage, Stage::Queued(_)) {
            return false;
        }
        let old = std::mem::replace(&mut st.stage, Stage::Done(Err(error)));
        st.owner = None;
        let waker = st.waker.take();
        drop(st);
        drop(old);
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    fn set_owner(&self, owner: Weak<dyn QueueOwner>) {
        self.lock().owner = Some(owner);
    }
}

/// The caller's side of a job, as the executor sees the types.
trait Completion<T>: Send + Sync {
    fn poll_result(&self, cx: &mut Context<'_>) -> Poll<Result<T, Error>>;
    /// The caller gave up. Returns the owning queue when the job was still
    /// queued (it will now never run).
    fn cancel(&self) -> Option<Weak<dyn QueueOwner>>;
    fn is_finished(&self) -> bool;
}

impl<F, T> Completion<T> for JobCell<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    fn poll_result(&self, cx: &mut Context<'_>) -> Poll<Result<T, Error>> {
        let mut st = self.lock();
        match std::mem::replace(&mut st.stage, Stage::Taken) {
            Stage::Done(result) => Poll::Ready(result),
            Stage::Taken => panic!("offload::JobHandle polled after it returned Ready"),
            other => {
                st.stage = other;
                match &mut st.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    fn cancel(&self) -> Option<Weak<dyn QueueOwner>> {
        let mut st = self.lock();
        st.waker = None;
        match std::mem::replace(&mut st.stage, Stage::Cancelled) {
            Stage::Queued(f) => {
                let owner = st.owner.take();
                drop(st);
                // The closure's captures are user code: never let their
                // destructor unwind out of a `Drop`.
                let _ = catch_unwind(AssertUnwindSafe(move || drop(f)));
                owner
            }
            Stage::Running => {
                st.stage = Stage::Detached;
                None
            }
            other => {
                st.stage = other;
                None
            }
        }
    }

    fn is_finished(&self) -> bool {
        matches!(self.lock().stage, Stage::Done(_) | Stage::Taken)
    }
}

/// Creates a job for `f` and the handle that awaits its result.
pub(crate) fn new_job<F, T>(f: F) -> (Job, JobHandle<T>)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (_, job, handle) = Reclaimable::new(f);
    (job, handle)
}

/// A typed reference to a job's cell, so that the closure can be taken back
/// when the job cannot be queued (`try_run` hands it to the caller).
pub(crate) struct Reclaimable<F, T> {
    cell: Arc<JobCell<F, T>>,
}

impl<F, T> Reclaimable<F, T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    /// Allocates the cell once and returns its three views.
    pub(crate) fn new(f: F) -> (Self, Job, JobHandle<T>) {
        let cell = Arc::new(JobCell {
            state: Mutex::new(CellState {
                stage: Stage::Queued(f),
                waker: None,
                owner: None,
            }),
        });
        let job = Job {
            cell: Some(cell.clone()),
        };
        let handle = JobHandle {
            cell: Some(cell.clone()),
        };
        (Reclaimable { cell }, job, handle)
    }

    /// Takes the closure back from a job that was never queued. The job is
    /// disarmed (its drop no longer fails the caller) and the handle is
    /// left cancelled, so dropping it afterwards does nothing.
    pub(crate) fn reclaim(self, job: Job) -> Option<F> {
        job.disarm();
        let mut st = self.cell.lock();
        match std::mem::replace(&mut st.stage, Stage::Cancelled) {
            Stage::Queued(f) => Some(f),
            other => {
                st.stage = other;
                None
            }
        }
    }
}

/// A submitted job: await it for the closure's result.
///
/// Returned by [`ThreadPool::try_run`](crate::ThreadPool::try_run).
///
/// # Cancellation
///
/// Dropping the handle while the job is still queued means the job never
/// runs, and its queue slot is freed at once. Dropping it after the job
/// started detaches the job: a thread cannot be stopped from outside, so the
/// closure runs to the end, keeps its thread (and its place in the pool's
/// bounds) until then, and its result is dropped.
#[must_use = "dropping a JobHandle cancels the job if it has not started"]
pub struct JobHandle<T> {
    cell: Option<Arc<dyn Completion<T>>>,
}

impl<T> JobHandle<T> {
    /// Whether the job has finished (its result, or its error, is ready).
    pub fn is_finished(&self) -> bool {
        self.cell.as_ref().is_none_or(|c| c.is_finished())
    }
}

impl<T> Future for JobHandle<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let cell = self
            .cell
            .as_ref()
            .expect("offload::JobHandle polled after it returned Ready");
        let res = cell.poll_result(cx);
        if res.is_ready() {
            self.cell = None;
        }
        res
    }
}

impl<T> Drop for JobHandle<T> {
    fn drop(&mut self) {
        if let Some(cell) = self.cell.take() {
            if let Some(owner) = cell.cancel().and_then(|w| w.upgrade()) {
                owner.remove_cancelled(Arc::as_ptr(&cell) as *const ());
            }
        }
    }
}

impl<T> std::fmt::Debug for JobHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}
