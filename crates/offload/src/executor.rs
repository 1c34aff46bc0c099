//! The [`Executor`] trait, [`run_in_executor`], and the compile-time guard
//! against the seed's pitfall (a closure that returns a future).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::error::Error;
use crate::job::{Job, JobHandle, new_job};

/// Somewhere to run blocking jobs: the counterpart of subclassing Python's
/// `concurrent.futures.Executor`.
///
/// Implement one method, [`execute`](Executor::execute), that runs a
/// [`Job`] somewhere (a thread, a pool, a queue you drain later).
/// [`run_in_executor`] then gives your executor everything else for free: the
/// awaitable result, panic capture, and cancellation of jobs that have not
/// started.
///
/// # Examples
///
/// An executor that runs every job on a fresh thread:
///
/// ```
/// use offload::{Executor, Job};
///
/// struct ThreadPerJob;
///
/// impl Executor for ThreadPerJob {
///     fn execute(&self, job: Job) {
///         // If the thread cannot start, `job` is dropped and its caller
///         // gets a cancelled error: nothing waits forever.
///         let _ = std::thread::Builder::new()
///             .name("thread-per-job".into())
///             .spawn(move || job.run());
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let n = offload::run_in_executor(&ThreadPerJob, || 6 * 7).await?;
/// assert_eq!(n, 42);
/// # Ok::<(), offload::Error>(())
/// # }).unwrap();
/// ```
pub trait Executor {
    /// Runs `job` somewhere, eventually, by calling [`Job::run`]; or drops
    /// it, which fails its caller with a cancelled error.
    ///
    /// Must not block for long: it is called from async code.
    fn execute(&self, job: Job);

    /// Hands `job` over, waiting for room if the executor has a bounded
    /// queue. [`run_in_executor`] calls this.
    ///
    /// The default calls [`execute`](Executor::execute) at once. Executors
    /// with backpressure (like [`ThreadPool`](crate::ThreadPool)) override it.
    fn submit(&self, job: Job) -> Submit {
        self.execute(job);
        Submit::done(Ok(()))
    }
}

impl<E: Executor + ?Sized> Executor for &E {
    fn execute(&self, job: Job) {
        (**self).execute(job)
    }
    fn submit(&self, job: Job) -> Submit {
        (**self).submit(job)
    }
}

impl<E: Executor + ?Sized> Executor for Arc<E> {
    fn execute(&self, job: Job) {
        (**self).execute(job)
    }
    fn submit(&self, job: Job) -> Submit {
        (**self).submit(job)
    }
}

impl<E: Executor + ?Sized> Executor for Box<E> {
    fn execute(&self, job: Job) {
        (**self).execute(job)
    }
    fn submit(&self, job: Job) -> Submit {
        (**self).submit(job)
    }
}

/// The future of [`Executor::submit`]: resolves once the job is queued
/// (or could not be).
///
/// It does not borrow the executor, so the future of
/// [`run_in_executor`] is `'static` and can be spawned.
#[must_use = "a Submit does nothing unless awaited"]
pub struct Submit {
    inner: SubmitInner,
}

enum SubmitInner {
    Done(Option<Result<(), Error>>),
    Waiting(Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>),
}

impl Submit {
    /// A submission that has already finished, successfully or not.
    pub fn done(result: Result<(), Error>) -> Self {
        Submit {
            inner: SubmitInner::Done(Some(result)),
        }
    }

    /// A submission that finishes when `fut` does (for example once a
    /// queue slot frees up).
    pub fn waiting(fut: impl Future<Output = Result<(), Error>> + Send + 'static) -> Self {
        Submit {
            inner: SubmitInner::Waiting(Box::pin(fut)),
        }
    }
}

impl Future for Submit {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            SubmitInner::Done(r) => Poll::Ready(r.take().unwrap_or(Ok(()))),
            SubmitInner::Waiting(f) => f.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for Submit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.inner {
            SubmitInner::Done(_) => "done",
            SubmitInner::Waiting(_) => "waiting",
        };
        f.debug_struct("Submit").field("state", &state).finish()
    }
}

/// Runs the blocking closure `f` in `executor` and resolves to its result:
/// the counterpart of Python's `loop.run_in_executor(executor, f)`.
///
/// The job is handed to the executor at once, as Python schedules it at
/// once; if the executor's queue is full, the returned future waits for a
/// slot when polled. It then resolves when the job finishes. It works on any
/// async runtime: nothing here needs tokio.
///
/// # Errors
///
/// [`Error::is_panic`] if `f` panicked, [`Error::is_cancelled`] if the
/// executor dropped the job or cancelled it in a shutdown,
/// [`Error::is_shutdown`] if the executor no longer takes work.
///
/// # Cancellation
///
/// Dropping the future before the job starts means it never runs. Dropping
/// it after the job started detaches the job: it runs to the end (a thread
/// cannot be stopped) and its result is dropped.
///
/// # A closure that returns a future does not compile
///
/// In Python, `run_in_executor(None, some_async_def)` silently builds a
/// coroutine that never runs. Here the same mistake is a compile error
/// (`cannot infer type of the type parameter `OutputIsNotAFuture``): a
/// thread cannot drive a future, so run async code with `.await` instead.
///
/// ```compile_fail
/// # futures::executor::block_on(async {
/// // error[E0283/E0282]: the closure returns a future
/// let _ = offload::run(|| async { 1 }).await;
/// # });
/// ```
///
/// ```compile_fail
/// # use std::future::Future;
/// # fn fetch() -> impl Future<Output = u8> { async { 1 } }
/// # futures::executor::block_on(async {
/// let _ = offload::run_in_executor(offload::default_pool(), || fetch()).await;
/// # });
/// ```
pub fn run_in_executor<E, F, T, OutputIsNotAFuture>(executor: &E, f: F) -> Run<T>
where
    E: Executor + ?Sized,
    F: FnOnce() -> T + Send + 'static,
    T: Blocking<OutputIsNotAFuture> + Send + 'static,
{
    let (job, handle) = new_job(f);
    Run {
        submit: Some(executor.submit(job)),
        handle: Some(handle),
    }
}

/// A [`Run`] for a job that is already queued.
pub(crate) fn run_from_handle<T>(handle: JobHandle<T>) -> Run<T> {
    Run {
        submit: None,
        handle: Some(handle),
    }
}

/// The future of [`run_in_executor`], [`run`](crate::run) and
/// [`ThreadPool::run`](crate::ThreadPool::run): resolves to the closure's
/// result.
///
/// See [`run_in_executor`] for errors and cancellation.
#[must_use = "dropping a Run cancels its job if it has not started"]
pub struct Run<T> {
    /// The hand-over, until the executor has the job.
    submit: Option<Submit>,
    handle: Option<JobHandle<T>>,
}

impl<T> Future for Run<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(submit) = self.submit.as_mut() {
            match Pin::new(submit).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    self.submit = None;
                    self.handle = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(())) => self.submit = None,
            }
        }
        match self.handle.as_mut() {
            Some(h) => {
                let res = Pin::new(h).poll(cx);
                if res.is_ready() {
                    self.handle = None;
                }
                res
            }
            None => panic!("offload::Run polled after it returned Ready"),
        }
    }
}

impl<T> fmt::Debug for Run<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("submitted", &self.submit.is_none())
            .field("handle", &self.handle)
            .finish()
    }
}

/// Implemented for every type that is *not* a future, with the marker
/// [`NotAFuture`]; futures implement it a second time with [`IsAFuture`].
///
/// The blocking entry points ([`run`](crate::run), [`run_in_executor`],
/// [`ThreadPool::run`](crate::ThreadPool::run), …) require
/// `T: Blocking<OutputIsNotAFuture>` of the closure's output `T` and let the
/// compiler infer the marker. For an ordinary value exactly one impl applies
/// and the marker is inferred silently. For a future both apply, the marker
/// cannot be inferred, and the call fails to compile: the seed's pitfall
/// (Python silently builds a coroutine that never runs) becomes an error.
///
/// If you really mean to compute a future on a blocking thread and get it
/// back unpolled, name the marker: `offload::run::<_, _, offload::NotAFuture>(f)`.
pub trait Blocking<Marker> {}

/// Marker of the [`Blocking`] impl that every type has.
#[derive(Debug)]
pub enum NotAFuture {}

/// Marker of the [`Blocking`] impl that only futures have.
#[derive(Debug)]
pub enum IsAFuture {}

impl<T> Blocking<NotAFuture> for T {}
impl<T: Future> Blocking<IsAFuture> for T {}
