//! The [`Executor`] trait, [`run_in_executor`], and the compile-time guard
//! against handing a blocking pool a closure that returns a future.

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
/// coroutine that never runs. Here the same mistake is a compile error: a
/// thread cannot drive a future, so run async code with `.await` instead.
/// See [`Blocking`] for the guard and its one explicit escape.
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

/// The bound that keeps a closure returning a future out of a blocking pool.
///
/// A blocking thread cannot drive a future: a closure that *returns* one
/// (`|| async { .. }`, or a call to an `async fn`) would hand back a future
/// that never ran its body. Python's `run_in_executor` accepts that mistake
/// silently (it builds a coroutine and never runs it); here it does not
/// compile.
///
/// Every type implements `Blocking<M>` for one marker `M`, and futures for
/// a second one. The blocking entry points ([`run`](crate::run),
/// [`run_in_executor`], [`ThreadPool::run`](crate::ThreadPool::run),
/// [`try_run`](crate::ThreadPool::try_run),
/// [`Dedicated::run`](crate::Dedicated::run), …) require
/// `T: Blocking<OutputIsNotAFuture>` of the closure's output `T` and let the
/// compiler infer the marker: for an ordinary value exactly one impl applies
/// and the call compiles; for a future both apply, the marker cannot be
/// inferred, and the call fails ("type annotations needed … cannot infer
/// type of the type parameter `OutputIsNotAFuture`").
///
/// The markers cannot be named outside this crate (and the trait cannot be
/// implemented there), so following the compiler's hint to name the
/// parameter leads nowhere. To return a future from a blocking closure on
/// purpose, wrap it in [`Unpolled`], the one documented way.
///
/// Generic code that offloads a closure with a generic output passes the
/// bound on: `fn f<T, M>(..) where T: Blocking<M>`.
///
/// ```compile_fail
/// # futures::executor::block_on(async {
/// let _ = offload::run(|| async { 1 }).await; // error: cannot infer `OutputIsNotAFuture`
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
///
/// ```compile_fail
/// let pool = offload::ThreadPool::builder().build().unwrap();
/// let _ = pool.run(|| async { 1 });
/// ```
///
/// ```compile_fail
/// let pool = offload::ThreadPool::builder().build().unwrap();
/// let _ = pool.try_run(|| async { 1 });
/// ```
///
/// ```compile_fail
/// let conn = offload::Dedicated::builder().build(|| 0u8).unwrap();
/// let _ = conn.run(|c: &mut u8| async { 1 });
/// ```
///
/// Naming the marker, as the compiler suggests, does not compile either:
///
/// ```compile_fail
/// let _ = offload::run::<_, _, offload::NotAFuture>(|| async { 1 });
/// ```
///
/// ```compile_fail
/// let _ = offload::run::<_, _, ()>(|| async { 1 });
/// ```
///
/// The explicit escape, and a generic caller:
///
/// ```
/// # futures::executor::block_on(async {
/// let unpolled = offload::run(|| offload::Unpolled(async { 1 })).await?;
/// assert_eq!(unpolled.into_inner().await, 1);
///
/// async fn offload_any<T: Send + 'static, M>(f: impl FnOnce() -> T + Send + 'static) -> T
/// where
///     T: offload::Blocking<M>,
/// {
///     offload::run(f).await.unwrap()
/// }
/// assert_eq!(offload_any(|| 2).await, 2);
/// # Ok::<(), offload::Error>(())
/// # }).unwrap();
/// ```
pub trait Blocking<Marker>: marker::Sealed<Marker> {}

/// The markers of [`Blocking`], unnameable outside this crate.
mod marker {
    /// Keeps [`Blocking`](super::Blocking) implemented here only.
    pub trait Sealed<M> {}

    /// Marker of the impl that every type has.
    #[derive(Debug)]
    pub enum NotAFuture {}

    /// Marker of the impl that only futures have.
    #[derive(Debug)]
    pub enum IsAFuture {}

    impl<T> Sealed<NotAFuture> for T {}
    impl<T: std::future::Future> Sealed<IsAFuture> for T {}
}

impl<T> Blocking<marker::NotAFuture> for T {}
impl<T: Future> Blocking<marker::IsAFuture> for T {}

/// A future returned, unpolled, from a blocking closure: the one way to
/// do that on purpose (see [`Blocking`]). It is not a future itself, so
/// the blocking entry points accept it; take the future out with
/// [`into_inner`](Self::into_inner) and await it in async code.
///
/// Building a future on a blocking thread is rarely what you want: it
/// makes sense when constructing it is itself blocking (it opens a file, or
/// connects, before returning the future).
#[derive(Debug)]
pub struct Unpolled<F>(pub F);

impl<F> Unpolled<F> {
    /// The future, still unpolled.
    pub fn into_inner(self) -> F {
        self.0
    }
}
