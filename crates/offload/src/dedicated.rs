//! [`Dedicated`]: one thread that owns a resource created on it.

use crate::sync::lock;
use std::any::Any;
use std::cell::RefCell;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::error::{BuildError, Error, TryRunError};
use crate::executor::{Blocking, Run};
use crate::job::{JobHandle, drop_quietly, panic_error, wake_quietly};
use crate::pool::{
    ExitHook, PoolMetrics, Shutdown, ShutdownTimeout, StartHook, ThreadPool, ThreadPoolBuilder,
};

thread_local! {
    /// The resource of the dedicated executor this thread belongs to. A
    /// dedicated thread belongs to exactly one executor, so one per thread
    /// is enough; it is dropped on this thread when the thread exits.
    static RESOURCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// An executor of one thread that owns a resource `R`, created on that
/// thread and never moved off it, so `R` need not be `Send` or `Sync`.
///
/// This is how to use a sync-only, non-thread-safe client from async code:
/// an ERP connector handle, a SQLite connection, a GUI toolkit object.
/// Callers send closures that get `&mut R`; they run one at a time, in
/// submission order. The queue is bounded: [`run`](Self::run) waits for
/// room, [`try_run`](Self::try_run) hands the closure back.
///
/// Building one never blocks: the resource's `init` runs on the new
/// thread, and calls queued meanwhile run once it is done. Await
/// [`ready`](Self::ready) to know it is up (and fail a service's start-up
/// if it is not); a failed `init` also fails every call with
/// [`Error::is_init`].
///
/// A `Dedicated` is a cheap handle: [`Clone`] it to share the thread.
///
/// # Examples
///
/// ```
/// use std::rc::Rc; // not Send: could never cross threads
///
/// # futures::executor::block_on(async {
/// let conn = offload::Dedicated::builder()
///     .name("erp")
///     .build(|| Rc::new(String::from("connection")))?;
/// conn.ready().await?; // optional: calls wait for `init` anyway
///
/// let len = conn.run(|c: &mut Rc<String>| c.len()).await?;
/// assert_eq!(len, 10);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
///
/// # Panics in jobs
///
/// A panicking job fails its own call with [`Error::is_panic`]; the thread
/// and the resource survive. The resource may have been left half-updated
/// by the panicking job, as with any `&mut` across a panic.
///
/// # Dropping and blocking
///
/// Dropping the last handle never waits: queued calls still run and
/// deliver their results, then the resource is dropped on its thread and
/// the thread exits. [`shutdown`](Self::shutdown)`.await` waits for that
/// without blocking; [`shutdown_blocking`](Self::shutdown_blocking) blocks
/// the calling thread for it (sync code and tests only). No other method
/// blocks: each takes the pool's lock for well under a microsecond.
pub struct Dedicated<R> {
    pool: ThreadPool,
    ready: Arc<Readiness>,
    /// `R` lives only on the pool's thread; the handle never holds one, so
    /// it is `Send + Sync` whatever `R` is.
    _resource: PhantomData<fn(&mut R)>,
}

impl<R> Clone for Dedicated<R> {
    /// Another handle to the same thread and resource.
    fn clone(&self) -> Self {
        Dedicated {
            pool: self.pool.clone(),
            ready: self.ready.clone(),
            _resource: PhantomData,
        }
    }
}

/// Builds a [`Dedicated`] executor. Create one with [`Dedicated::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct DedicatedBuilder {
    name: String,
    queue_capacity: usize,
    stack_size: Option<usize>,
}

/// How the resource's `init` went: `None` while it runs.
#[derive(Default)]
struct Readiness {
    state: Mutex<ReadyState>,
}

#[derive(Default)]
struct ReadyState {
    outcome: Option<Result<(), String>>,
    wakers: Vec<Waker>,
}

impl Readiness {
    fn lock(&self) -> MutexGuard<'_, ReadyState> {
        lock(&self.state)
    }

    fn settle(&self, outcome: Result<(), String>) {
        let mut st = self.lock();
        st.outcome = Some(outcome);
        let wakers = std::mem::take(&mut st.wakers);
        drop(st);
        wakers.into_iter().for_each(wake_quietly);
    }
}

impl DedicatedBuilder {
    /// The thread's name (default `offload-dedicated`; the thread is
    /// `{name}-0`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many calls may wait (default 1024; at least 1).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Stack size of the thread, in bytes (default: the Rust default,
    /// 2 MiB). Sync SDKs with deep call chains sometimes need more.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Starts the thread, which creates the resource with `init` and then
    /// serves calls. Returns at once: `init` runs on the new thread, and
    /// calls made meanwhile wait in the queue until it is done.
    ///
    /// Never blocks the caller, however slow `init` is (opening a
    /// connection, logging in): the only work done here is starting one
    /// thread.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] for a bad setting, [`BuildError::Spawn`] if
    /// the thread cannot be started. A panic in `init` is not a build
    /// error: it surfaces on [`Dedicated::ready`] and on every call, as
    /// [`Error::is_init`].
    pub fn build<R, I>(self, init: I) -> Result<Dedicated<R>, BuildError>
    where
        R: 'static,
        I: FnOnce() -> R + Send + 'static,
    {
        self.try_build(move || Ok::<R, Infallible>(init()))
    }

    /// Like [`build`](Self::build), for an `init` that can fail. Its error
    /// (or panic) surfaces on [`Dedicated::ready`] and on every call, as
    /// [`Error::is_init`] with the error's message.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn try_build<R, E, I>(self, init: I) -> Result<Dedicated<R>, BuildError>
    where
        R: 'static,
        E: fmt::Display,
        I: FnOnce() -> Result<R, E> + Send + 'static,
    {
        let ready = Arc::new(Readiness::default());
        let on_thread = ready.clone();
        let once = Mutex::new(Some(init));
        let hook: StartHook = Arc::new(move || {
            // The pool's start hook runs once per thread, and a dedicated
            // pool starts exactly one thread that never idles out.
            let Some(init) = lock(&once).take() else {
                return Ok(());
            };
            let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(init)) {
                Ok(Ok(resource)) => {
                    RESOURCE.with(|cell| *cell.borrow_mut() = Some(Box::new(resource)));
                    Ok(())
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(payload) => Err(panic_error(payload).to_string()),
            };
            on_thread.settle(outcome.clone());
            // An `Err` fails the pool: queued and later calls get it.
            outcome
        });
        // Drop the resource on its thread before the thread counts itself
        // out, so that `shutdown_blocking` returns only once it is gone (a
        // thread-local's destructor would run after, and abort the process
        // if the resource's `Drop` panicked).
        let on_exit: ExitHook = Arc::new(|| {
            let resource = RESOURCE.with(|cell| cell.borrow_mut().take());
            drop_quietly(resource);
        });
        let builder = ThreadPoolBuilder::dedicated(
            self.name,
            self.queue_capacity,
            self.stack_size,
            hook,
            on_exit,
        )
        .min_threads(1);
        let pool = builder.build()?;
        Ok(Dedicated {
            pool,
            ready,
            _resource: PhantomData,
        })
    }
}

/// Wraps a caller's closure so that it runs against the thread's resource.
fn with_resource<R: 'static, T, F: FnOnce(&mut R) -> T>(f: F) -> T {
    RESOURCE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let resource = cell
            .as_mut()
            .and_then(|r| r.downcast_mut::<R>())
            .expect("a dedicated thread serves calls only once it holds its resource");
        f(resource)
    })
}

impl Dedicated<()> {
    /// A builder: name the thread, size the queue, then
    /// [`build`](DedicatedBuilder::build) with the resource's initialiser.
    pub fn builder() -> DedicatedBuilder {
        DedicatedBuilder {
            name: "offload-dedicated".to_owned(),
            queue_capacity: 1024,
            stack_size: None,
        }
    }
}

impl<R: 'static> Dedicated<R> {
    /// Resolves once the resource's `init` has run: `Ok` if it created the
    /// resource, [`Error::is_init`] with its message if it failed or
    /// panicked. Calls do not need this (they wait in the queue for
    /// `init`); a service awaits it to fail its start-up early.
    ///
    /// # Errors
    ///
    /// [`Error::is_init`] if `init` failed or panicked.
    pub fn ready(&self) -> DedicatedReady {
        DedicatedReady {
            ready: self.ready.clone(),
        }
    }

    /// Runs `f` with the resource on its thread and resolves to the result.
    /// Waits for room in the queue if it is full. Calls run in the order
    /// they were queued.
    ///
    /// # Errors
    ///
    /// As [`ThreadPool::run`]: panics, cancellation by `shutdown_now`,
    /// submission after shutdown; and [`Error::is_init`] if the resource's
    /// `init` failed.
    pub fn run<F, T, OutputIsNotAFuture>(&self, f: F) -> Run<T>
    where
        F: FnOnce(&mut R) -> T + Send + 'static,
        T: Blocking<OutputIsNotAFuture> + Send + 'static,
    {
        self.pool.run(move || with_resource(f))
    }

    /// Queues `f` if there is room now; otherwise hands it back.
    ///
    /// # Errors
    ///
    /// [`TryRunError::Full`] or [`TryRunError::Shutdown`], with `f`
    /// (`Shutdown` also when `init` failed).
    pub fn try_run<F, T, OutputIsNotAFuture>(&self, f: F) -> Result<JobHandle<T>, TryRunError<F>>
    where
        F: FnOnce(&mut R) -> T + Send + 'static,
        T: Blocking<OutputIsNotAFuture> + Send + 'static,
    {
        self.pool.try_run_with(f, with_resource::<R, T, F>)
    }

    /// Drains the queue and resolves when the last call has finished; the
    /// resource is then dropped on its thread.
    pub fn shutdown(&self) -> Shutdown {
        self.pool.shutdown()
    }

    /// Drains the queue and blocks the calling thread until the thread has
    /// dropped the resource and exited. For sync code and tests; see
    /// [`ThreadPool::shutdown_blocking`] for what is detected when it is
    /// called from async code.
    ///
    /// # Blocking
    ///
    /// For as long as the queued calls and the resource's `Drop` take.
    pub fn shutdown_blocking(&self) {
        self.pool.shutdown_blocking()
    }

    /// Cancels queued calls; the running one finishes. Returns how many
    /// were cancelled.
    pub fn shutdown_now(&self) -> usize {
        self.pool.shutdown_now()
    }

    /// Drains until `timeout`, then cancels and reports (see
    /// [`ThreadPool::shutdown_timeout`]).
    pub fn shutdown_timeout(&self, timeout: Duration) -> ShutdownTimeout {
        self.pool.shutdown_timeout(timeout)
    }

    /// The executor's metrics (one thread).
    pub fn metrics(&self) -> PoolMetrics {
        self.pool.metrics()
    }
}

/// The future of [`Dedicated::ready`].
#[must_use = "a DedicatedReady does nothing unless awaited"]
pub struct DedicatedReady {
    ready: Arc<Readiness>,
}

impl Future for DedicatedReady {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.ready.lock();
        match &st.outcome {
            Some(Ok(())) => Poll::Ready(Ok(())),
            Some(Err(msg)) => Poll::Ready(Err(Error::init(msg.clone()))),
            None => {
                if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    st.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl fmt::Debug for DedicatedReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settled = self.ready.lock().outcome.is_some();
        f.debug_struct("DedicatedReady")
            .field("settled", &settled)
            .finish()
    }
}

impl<R> fmt::Debug for Dedicated<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match &self.ready.lock().outcome {
            None => "initialising",
            Some(Ok(())) => "ready",
            Some(Err(_)) => "init failed",
        };
        f.debug_struct("Dedicated")
            .field("resource", &std::any::type_name::<R>())
            .field("state", &outcome)
            .field("pool", &self.pool)
            .finish()
    }
}
