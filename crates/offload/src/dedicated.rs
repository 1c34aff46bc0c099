//! [`Dedicated`]: one thread that owns a resource created on it.

use std::any::Any;
use std::cell::RefCell;
use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use crate::error::{BuildError, Error, TryRunError};
use crate::executor::{Blocking, Run};
use crate::job::JobHandle;
use crate::pool::{PoolMetrics, Shutdown, ShutdownTimeout, ThreadPool, ThreadPoolBuilder};

thread_local! {
    /// The resource of the dedicated executor this thread belongs to. A
    /// dedicated thread belongs to exactly one executor, so one slot per
    /// thread is enough; it is dropped on this thread when the thread exits.
    static RESOURCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// An executor of one thread that owns a resource `R`, created on that
/// thread and never moved off it, so `R` need not be `Send` or `Sync`.
///
/// This is how to use a sync-only, non-thread-safe client from async code:
/// an ERP connector handle, a SQLite connection, a GUI toolkit object.
/// Callers send closures that get `&mut R`; they run one at a time, in
/// submission order. The queue is bounded: [`run`](Self::run) waits for a
/// slot, [`try_run`](Self::try_run) hands the closure back.
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
pub struct Dedicated<R> {
    pool: ThreadPool,
    /// `R` lives only on the pool's thread; the handle never holds one, so
    /// it is `Send + Sync` whatever `R` is.
    _resource: PhantomData<fn(&mut R)>,
}

/// Builds a [`Dedicated`] executor. Create one with [`Dedicated::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct DedicatedBuilder {
    name: String,
    queue_capacity: usize,
}

impl DedicatedBuilder {
    /// The thread's name (default `offload-dedicated`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many calls may wait (default 1024; at least 1).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Starts the thread, runs `init` on it to create the resource, and
    /// waits for it.
    ///
    /// Blocks the calling thread while `init` runs: from async code, build
    /// it inside [`offload::run`](crate::run) if `init` is slow.
    ///
    /// # Errors
    ///
    /// [`BuildError::Init`] if `init` panics, [`BuildError::Spawn`] if the
    /// thread cannot start, [`BuildError::Invalid`] for a bad setting.
    pub fn build<R, I>(self, init: I) -> Result<Dedicated<R>, BuildError>
    where
        R: 'static,
        I: FnOnce() -> R + Send + 'static,
    {
        self.try_build(move || Ok::<R, Infallible>(init()))
    }

    /// Like [`build`](Self::build), for an `init` that can fail.
    ///
    /// # Errors
    ///
    /// [`BuildError::Init`] with `init`'s error message if it fails or panics.
    pub fn try_build<R, E, I>(self, init: I) -> Result<Dedicated<R>, BuildError>
    where
        R: 'static,
        E: fmt::Display,
        I: FnOnce() -> Result<R, E> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel::<Result<(), String>>(1);
        let once = Mutex::new(Some((init, tx)));
        let hook = Arc::new(move || {
            let Some((init, tx)) = once.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                return;
            };
            let outcome = match catch_unwind(AssertUnwindSafe(init)) {
                Ok(Ok(resource)) => {
                    RESOURCE.with(|slot| *slot.borrow_mut() = Some(Box::new(resource)));
                    Ok(())
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(payload) => Err(Error::panic(payload).to_string()),
            };
            let _ = tx.send(outcome);
        });
        let pool = ThreadPoolBuilder::dedicated(self.name, self.queue_capacity, hook).build()?;
        pool.prestart(1);
        // The hook always sends exactly once before the thread serves jobs;
        // a closed channel means the thread never started.
        match rx.recv() {
            Ok(Ok(())) => Ok(Dedicated {
                pool,
                _resource: PhantomData,
            }),
            Ok(Err(msg)) => Err(BuildError::Init(msg)),
            Err(_) => Err(BuildError::Spawn(std::io::Error::other(
                "the dedicated thread did not start",
            ))),
        }
    }
}

/// Wraps a caller's closure so that it runs against the thread's resource.
fn with_resource<R: 'static, T>(f: impl FnOnce(&mut R) -> T) -> impl FnOnce() -> T {
    move || {
        RESOURCE.with(|slot| {
            let mut slot = slot.borrow_mut();
            let resource = slot
                .as_mut()
                .and_then(|r| r.downcast_mut::<R>())
                .expect("a dedicated thread always holds its resource");
            f(resource)
        })
    }
}

impl Dedicated<()> {
    /// A builder: name the thread, size the queue, then
    /// [`build`](DedicatedBuilder::build) with the resource's initialiser.
    pub fn builder() -> DedicatedBuilder {
        DedicatedBuilder {
            name: "offload-dedicated".to_owned(),
            queue_capacity: 1024,
        }
    }
}

impl<R: 'static> Dedicated<R> {
    /// Runs `f` with the resource on its thread and resolves to the result.
    /// Waits for a queue slot if the queue is full. Calls run in the order
    /// they were queued.
    ///
    /// # Errors
    ///
    /// As [`ThreadPool::run`]: panics, cancellation by `shutdown_now`,
    /// submission after shutdown.
    pub fn run<F, T, OutputIsNotAFuture>(&self, f: F) -> Run<T>
    where
        F: FnOnce(&mut R) -> T + Send + 'static,
        T: Blocking<OutputIsNotAFuture> + Send + 'static,
    {
        self.pool.run(with_resource(f))
    }

    /// Queues `f` if there is room now; otherwise hands it back.
    ///
    /// # Errors
    ///
    /// [`TryRunError::Full`] or [`TryRunError::Shutdown`], with `f`.
    pub fn try_run<F, T, OutputIsNotAFuture>(&self, f: F) -> Result<JobHandle<T>, TryRunError<F>>
    where
        F: FnOnce(&mut R) -> T + Send + 'static,
        T: Blocking<OutputIsNotAFuture> + Send + 'static,
    {
        // Queue a closure that holds `f` in a slot we can take back from.
        let slot = Arc::new(Mutex::new(Some(f)));
        let taken = slot.clone();
        let job = move |r: &mut R| {
            let f = taken
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .expect("a queued dedicated job runs once");
            f(r)
        };
        self.pool.try_run(with_resource(job)).map_err(|e| {
            let f = slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .expect("an unqueued job still holds its closure");
            if e.is_full() {
                TryRunError::Full(f)
            } else {
                TryRunError::Shutdown(f)
            }
        })
    }

    /// Drains the queue and resolves when the last call has finished; the
    /// resource is then dropped on its thread.
    pub fn shutdown(&self) -> Shutdown {
        self.pool.shutdown()
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

impl<R> fmt::Debug for Dedicated<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedicated")
            .field("resource", &std::any::type_name::<R>())
            .field("pool", &self.pool)
            .finish()
    }
}
