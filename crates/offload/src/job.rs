//! A job and its result cell.
//!
//! Submitting a closure allocates one [`JobCell`], shared by two owners:
//! the executor holds it as a type-erased [`Job`] and runs it; the caller
//! holds it as a typed [`JobHandle`] and awaits the result. All state lives
//! behind one small mutex in the cell, so the protocol between the two
//! sides is a plain state machine:
//!
//! ```text
//!  Queued(work) ──run──> Running ──done──> Done(result) ──poll──> Taken
//!     │                     │
//!     │ handle dropped      │ handle dropped
//!     v                     v
//!  Cancelled             Detached (result discarded when the job ends)
//! ```
//!
//! A job dropped by its executor without running moves `Queued → Done(Err)`
//! so its caller gets a cancelled error instead of waiting forever.
//!
//! The queued work is a *value* and a *body* that consumes it
//! ([`Work`]): the body is the pool's own wrapping (none for a plain
//! closure, "lend the thread's resource" for a dedicated executor, "send
//! the input to a worker process" for a process pool) and the value is what
//! the caller gave. A submission that cannot be queued takes the value back
//! out of the cell ([`try_submit`]) and hands it to its caller, whatever
//! the body is: one path for every `try_*` method.
//!
//! User code that runs here (the closure, its captures' destructors, the
//! result's destructor, a panic payload's destructor, the caller's waker)
//! always runs under `catch_unwind`: a panic in any of it must not unwind
//! into a worker thread and leave the pool's counts wrong.

use crate::sync::lock;
use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};

use crate::error::{CancelReason, Error, TryRunError};

/// Queued work: the caller's `value` and the `body` that consumes it.
struct Work<V, B> {
    value: V,
    body: B,
}

/// The state of one job, shared by the executor side and the caller side.
enum Stage<V, B, T> {
    /// Waiting in a queue; holds the work.
    Queued(Work<V, B>),
    /// A worker took the work and is running it.
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

struct CellState<V, B, T> {
    stage: Stage<V, B, T>,
    /// The caller's waker, registered while the result is not ready.
    waker: Option<Waker>,
}

/// The one allocation behind a job: work, result, waker, and the caller's
/// tracing span.
struct JobCell<V, B, T> {
    state: Mutex<CellState<V, B, T>>,
    /// The queue holding the job, told when the caller cancels so that its
    /// place in the queue is freed at once instead of when a worker skips
    /// the job. Set once, before the first push; outside the mutex so that
    /// setting it costs no lock on the submission path.
    owner: OnceLock<Weak<dyn QueueOwner>>,
    /// The span the job was submitted in, entered while it runs; `None`
    /// when no subscriber is interested (then it costs nothing).
    span: Option<tracing::Span>,
}

impl<V, B, T> JobCell<V, B, T> {
    fn lock(&self) -> MutexGuard<'_, CellState<V, B, T>> {
        // Nothing user-supplied runs while this lock is held, so it cannot be
        // poisoned by a job's panic; recover anyway rather than propagate.
        lock(&self.state)
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
    /// Whether its caller gave up before it started (it will never run).
    fn is_cancelled(&self) -> bool;
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
///
/// A job submitted inside a [`tracing`] span runs inside that span, on
/// whichever thread runs it.
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

    /// Whether its caller gave up before it started: running it would do
    /// nothing, and dropping it touches no user code.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cell.as_ref().is_none_or(|c| c.is_cancelled())
    }

    /// The identity of the job's cell, compared against
    /// [`QueueOwner::remove_cancelled`]'s argument.
    pub(crate) fn cell_ptr(&self) -> *const () {
        self.cell
            .as_ref()
            .map_or(std::ptr::null(), |c| Arc::as_ptr(c) as *const ())
    }

    /// Drops the job without failing it: used when the work is about to be
    /// taken back out of the cell and handed to the caller.
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

/// Wakes `waker`, catching a panic in it: a waker is the caller's code, and
/// a panic there must not unwind into a worker thread or a pool's
/// bookkeeping. The caller is then never woken (its waker is broken), but
/// everything else goes on.
pub(crate) fn wake_quietly(waker: Waker) {
    if catch_unwind(AssertUnwindSafe(move || waker.wake())).is_err() {
        tracing::warn!("offload: a waker panicked; the task it belongs to was not woken");
    }
}

/// Drops `value` (user data), catching a panic in its destructor. A panic
/// payload that itself panics when dropped is leaked: that is the only way
/// to be sure nothing unwinds.
pub(crate) fn drop_quietly<X>(value: X) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
        drop_payload(payload);
    }
}

/// Drops a panic payload, leaking it if its destructor panics too.
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// Turns a caught panic into the caller's error. The payload is the user's
/// value and may panic in its destructor: read its message, then drop it
/// quietly.
pub(crate) fn panic_error(payload: Box<dyn Any + Send>) -> Error {
    let error = Error::panic(&*payload);
    drop_payload(payload);
    error
}

impl<V, B, T> Runnable for JobCell<V, B, T>
where
    V: Send,
    B: FnOnce(V) -> T + Send,
    T: Send,
{
    fn run(&self, on_end: &mut dyn FnMut(Outcome)) {
        let work = {
            let mut st = self.lock();
            match std::mem::replace(&mut st.stage, Stage::Running) {
                Stage::Queued(work) => work,
                other => {
                    st.stage = other;
                    drop(st);
                    on_end(Outcome::Skipped);
                    return;
                }
            }
        };
        let _entered = self.span.as_ref().map(tracing::Span::enter);
        let (result, outcome) = match catch_unwind(AssertUnwindSafe(move || {
            let Work { value, body } = work;
            body(value)
        })) {
            Ok(v) => (Ok(v), Outcome::Completed),
            Err(payload) => (Err(panic_error(payload)), Outcome::Panicked),
        };
        on_end(outcome);
        let mut st = self.lock();
        if matches!(st.stage, Stage::Detached) {
            drop(st);
            // Nobody wants the result. Its destructor is user code.
            drop_quietly(result);
        } else {
            st.stage = Stage::Done(result);
            let waker = st.waker.take();
            drop(st);
            if let Some(w) = waker {
                wake_quietly(w);
            }
        }
    }

    fn abandon(&self, error: Error) -> bool {
        let mut st = self.lock();
        if !matches!(st.stage, Stage::Queued(_)) {
            return false;
        }
        let old = std::mem::replace(&mut st.stage, Stage::Done(Err(error)));
        let waker = st.waker.take();
        drop(st);
        // The work holds the user's closure: its destructor is user code.
        drop_quietly(old);
        if let Some(w) = waker {
            wake_quietly(w);
        }
        true
    }

    fn set_owner(&self, owner: Weak<dyn QueueOwner>) {
        // A job is adopted by one queue, once; a second call is a no-op.
        let _ = self.owner.set(owner);
    }

    fn is_cancelled(&self) -> bool {
        matches!(self.lock().stage, Stage::Cancelled)
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

impl<V, B, T> Completion<T> for JobCell<V, B, T>
where
    V: Send,
    B: FnOnce(V) -> T + Send,
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
                    registered => *registered = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    fn cancel(&self) -> Option<Weak<dyn QueueOwner>> {
        let mut st = self.lock();
        let waker = st.waker.take();
        let owner = match std::mem::replace(&mut st.stage, Stage::Cancelled) {
            Stage::Queued(work) => {
                let owner = self.owner.get().cloned();
                drop(st);
                // The closure's captures are user code: never let their
                // destructor unwind out of a `Drop`.
                drop_quietly(work);
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
        };
        drop_quietly(waker);
        owner
    }

    fn is_finished(&self) -> bool {
        matches!(self.lock().stage, Stage::Done(_) | Stage::Taken)
    }
}

/// The tracing span a new job should run in: the caller's current span, or
/// `None` when it is disabled (no subscriber, or none interested), so that
/// a program without tracing pays one thread-local read per job.
fn current_span() -> Option<tracing::Span> {
    let span = tracing::Span::current();
    (!span.is_disabled()).then_some(span)
}

/// Allocates a cell for `body(value)` and returns its three views.
fn cell<V, B, T>(value: V, body: B) -> (Arc<JobCell<V, B, T>>, Job, JobHandle<T>)
where
    V: Send + 'static,
    B: FnOnce(V) -> T + Send + 'static,
    T: Send + 'static,
{
    let cell = Arc::new(JobCell {
        state: Mutex::new(CellState {
            stage: Stage::Queued(Work { value, body }),
            waker: None,
        }),
        owner: OnceLock::new(),
        span: current_span(),
    });
    let job = Job {
        cell: Some(cell.clone()),
    };
    let handle = JobHandle {
        cell: Some(cell.clone()),
    };
    (cell, job, handle)
}

/// Creates a job for `f` and the handle that awaits its result.
pub(crate) fn new_job<F, T>(f: F) -> (Job, JobHandle<T>)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (_, job, handle) = cell(f, |f: F| f());
    (job, handle)
}

/// Why a queue refused a job, as [`try_submit`] needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No room now.
    Full,
    /// The executor takes no more work.
    Shutdown,
}

/// The one "hand the value back" path of every non-waiting submission
/// (`ThreadPool::try_run`, `Dedicated::try_run`, `ProcessPool::try_call`).
///
/// Queues `body(value)` with `push`; if `push` refuses the job, takes
/// `value` back out of the cell (the job is disarmed, so its caller side is
/// never failed or woken) and returns it in the [`TryRunError`]. One
/// allocation either way; `body` is dropped with the refused job.
///
/// `push` must either queue the job (`Ok`) or give it back untouched
/// (`Err`): a job it ran or dropped could no longer hand `value` back.
pub(crate) fn try_submit<V, B, T>(
    value: V,
    body: B,
    push: impl FnOnce(Job) -> Result<(), (Job, Refusal)>,
) -> Result<JobHandle<T>, TryRunError<V>>
where
    V: Send + 'static,
    B: FnOnce(V) -> T + Send + 'static,
    T: Send + 'static,
{
    let (cell, job, handle) = cell(value, body);
    match push(job) {
        Ok(()) => Ok(handle),
        Err((job, why)) => {
            job.disarm();
            let mut st = cell.lock();
            let Stage::Queued(work) = std::mem::replace(&mut st.stage, Stage::Cancelled) else {
                unreachable!("a job that was never queued still holds its work");
            };
            drop(st);
            // The handle is now cancelled: dropping it does nothing.
            drop(handle);
            let Work { value, body } = work;
            drop(body);
            Err(match why {
                Refusal::Full => TryRunError::Full(value),
                Refusal::Shutdown => TryRunError::Shutdown(value),
            })
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
/// runs, and its place in the queue is freed at once. Dropping it after the job
/// started detaches the job: a thread cannot be stopped from outside, so the
/// closure runs to the end, keeps its thread (and its place in the pool's
/// bounds) until then, and its result is dropped.
///
/// Dropping a queued job's handle drops its closure on the dropping thread
/// (the closure's captures are the caller's own values); nothing else in a
/// handle blocks.
#[must_use = "dropping a JobHandle cancels the job if it has not started"]
pub struct JobHandle<T> {
    cell: Option<Arc<dyn Completion<T>>>,
}

impl<T> JobHandle<T> {
    /// Whether the job has finished (its result, or its error, is ready).
    ///
    /// Never blocks (it takes the job's own short lock).
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
            crate::lone_caller::result_taken(Arc::as_ptr(cell) as *const ());
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
