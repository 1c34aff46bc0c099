//! [`RemotePool`]: typed calls to tasks served by [`Worker`](crate::Worker)s
//! anywhere NATS reaches, awaited like a [`ProcessPool`](offload::proc::ProcessPool) call.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::jetstream;
use offload::proc::{Task, fingerprint};
use offload::{Error, TryRunError};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::router::Router;
use crate::subjects::Subjects;
pub use builder::RemotePoolBuilder;
pub use offload::proc::CallOptions;

mod builder;

/// How a pool's calls travel. Chosen per pool; every [`Worker`](crate::Worker)
/// serves both (durable only if built with JetStream, the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Core NATS request/reply through a queue group: the lowest latency,
    /// **at most once**. The worker heartbeats while it holds the call, so
    /// a dead worker is reported ([`Error::is_worker_lost`]) after two
    /// heartbeat intervals and a second of silence, not at the call's
    /// timeout.
    #[default]
    Direct,
    /// A JetStream work-queue stream with explicit acks: **at least
    /// once**. A worker that dies mid-call (or shuts down) hands the job
    /// back and another worker runs it again, so a task may run more
    /// than once; the caller still gets exactly one result. Needs a
    /// server with JetStream enabled.
    Durable,
}

/// A snapshot of a remote pool's calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteMetrics {
    /// Calls holding an in-flight slot now (sent, or encoding).
    pub in_flight: usize,
    /// The bound on `in_flight`.
    pub max_in_flight: usize,
    /// Calls that resolved (ok or not).
    pub completed: u64,
    /// Calls that resolved with an error.
    pub failed: u64,
    /// Calls whose worker was lost (direct: heartbeats stopped).
    pub worker_lost: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Calls nobody served (no worker, unknown task, version mismatch).
    pub unserved: u64,
    /// Direct calls sent again because the worker was full.
    pub busy_retries: u64,
    /// Durable results that came from a second or later delivery: the
    /// task ran (or was at least handed to a worker) more than once.
    pub redelivered: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) worker_lost: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) unserved: AtomicU64,
    pub(crate) busy_retries: AtomicU64,
    pub(crate) redelivered: AtomicU64,
}

/// A cancelled call, for the background canceller.
#[derive(Debug)]
pub(crate) struct Cancel {
    /// The call's reply subject (its id in cancels).
    pub(crate) reply: String,
    /// Durable: the job's stream sequence, to withdraw it.
    pub(crate) seq: Option<u64>,
}

/// What the calls of one pool share.
pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) js: Option<jetstream::Context>,
    pub(crate) stream: Option<jetstream::stream::Stream<()>>,
    pub(crate) subjects: Subjects,
    pub(crate) router: Arc<Router>,
    pub(crate) mode: Mode,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) max_in_flight: usize,
    pub(crate) heartbeat: Duration,
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) probe_timeout: Duration,
    /// The server's `max_payload` once known (see `subjects::max_payload`).
    pub(crate) max_payload: std::sync::atomic::AtomicUsize,
    pub(crate) canceller: mpsc::UnboundedSender<Cancel>,
    /// (task, fingerprint) → when a worker last confirmed it serves it.
    pub(crate) presence: Mutex<HashMap<(String, u64), Instant>>,
    pub(crate) stats: Stats,
    pub(crate) closed: AtomicBool,
    /// Woken whenever a call gives back its slot (for `shutdown`).
    pub(crate) slot_freed: Notify,
    /// Dropping it stops the inbox task.
    pub(crate) _stop: oneshot::Sender<()>,
}

impl Inner {
    /// Waits for an in-flight slot; fails if the pool is shut down.
    pub(crate) async fn acquire(&self) -> Result<OwnedSemaphorePermit, Error> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| offload::remote::shutdown())
    }

    /// The server's connect counter: it moves when the client reconnects.
    pub(crate) fn epoch(&self) -> u64 {
        self.client.statistics().connects.load(Relaxed)
    }

    fn record(&self, result: &Result<Vec<u8>, Error>) {
        let s = &self.stats;
        s.completed.fetch_add(1, Relaxed);
        if let Err(e) = result {
            s.failed.fetch_add(1, Relaxed);
            if e.is_worker_lost() {
                s.worker_lost.fetch_add(1, Relaxed);
            } else if e.is_timeout() {
                s.timeouts.fetch_add(1, Relaxed);
            } else if e.is_no_workers() || e.is_unknown_task() || e.is_version_mismatch() {
                s.unserved.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Calls registered [`Task`]s on [`Worker`](crate::Worker)s anywhere NATS
/// reaches, and awaits them like a local
/// [`ProcessPool`](offload::proc::ProcessPool) call: switching a call from
/// one to the other changes the line that builds the pool.
///
/// ```no_run
/// # use offload::proc::Task;
/// # struct WordCount;
/// # impl Task for WordCount {
/// #     const NAME: &'static str = "word_count";
/// #     type Input = String;
/// #     type Output = usize;
/// #     fn run(t: String) -> usize { t.split_whitespace().count() }
/// # }
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// // let pool = offload::proc::ProcessPool::builder().registry(registry()).build()?;
/// let pool = offload_nats::RemotePool::builder().url("nats://10.0.0.5:4222").build().await?;
/// let n: usize = pool.call::<WordCount>("to be or not".into()).await?;
/// # Ok(()) }
/// ```
///
/// # Failures
///
/// A call fails with an [`Error`] for that call only. Those a local pool
/// gives arrive as they are (`is_remote_panic`, `is_timeout`,
/// `is_worker_lost` of a worker *process*, `is_codec`, `is_too_large`...);
/// the transport adds [`is_no_workers`](Error::is_no_workers) (nobody
/// serves the task, at once), [`is_unknown_task`](Error::is_unknown_task)
/// and [`is_version_mismatch`](Error::is_version_mismatch) (workers exist,
/// but none serves this task at this version),
/// [`is_worker_lost`](Error::is_worker_lost) (direct: the worker holding
/// the call went silent), [`is_transport`](Error::is_transport) (the
/// connection failed; the outcome is unknown),
/// [`is_too_large`](Error::is_too_large) (over the server's
/// `max_payload`, refused before sending) and
/// [`is_shutdown`](Error::is_shutdown).
///
/// # Dropping
///
/// Dropping the pool never blocks: it stops taking calls, and the calls
/// in flight go on (each holds what it needs). [`shutdown`](Self::shutdown)
/// waits for them.
pub struct RemotePool {
    inner: Arc<Inner>,
}

impl RemotePool {
    /// A builder; see [`RemotePoolBuilder`] for the settings and defaults.
    pub fn builder() -> RemotePoolBuilder {
        RemotePoolBuilder::default()
    }

    /// Calls task `T` with `input` on a worker; waits for an in-flight
    /// slot if all are taken. The input is encoded when the future is
    /// first polled.
    ///
    /// # Errors
    ///
    /// See [the type's docs](RemotePool#failures).
    ///
    /// # Cancellation
    ///
    /// See [`RemoteCall`].
    pub fn call<T: Task>(&self, input: T::Input) -> RemoteCall<T::Output> {
        self.call_with::<T>(input, CallOptions::default())
    }

    /// [`call`](Self::call) with per-call options (timeout, drop behaviour).
    pub fn call_with<T: Task>(
        &self,
        input: T::Input,
        options: CallOptions,
    ) -> RemoteCall<T::Output> {
        let inner = self.inner.clone();
        RemoteCall::new(async move {
            let permit = inner.acquire().await?;
            run_typed::<T>(inner, input, options, permit).await
        })
    }

    /// Starts a call if an in-flight slot is free now; otherwise hands the
    /// input back.
    ///
    /// # Errors
    ///
    /// [`TryRunError::Full`] or [`TryRunError::Shutdown`], with the input.
    pub fn try_call<T: Task>(
        &self,
        input: T::Input,
    ) -> Result<RemoteCall<T::Output>, TryRunError<T::Input>> {
        let permit = match self.inner.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(TryRunError::Shutdown(input)),
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(TryRunError::Full(input)),
        };
        let inner = self.inner.clone();
        Ok(RemoteCall::new(run_typed::<T>(
            inner,
            input,
            CallOptions::default(),
            permit,
        )))
    }

    /// Calls the task named `task` with its encoded input (postcard of
    /// its input type), checked against `fingerprint` (see
    /// [`offload::proc::fingerprint`]), and resolves to its encoded
    /// output: for callers that carry calls as bytes.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    pub fn call_bytes(
        &self,
        task: &str,
        fingerprint: u64,
        input: Vec<u8>,
        options: CallOptions,
    ) -> RemoteCall<Vec<u8>> {
        let inner = self.inner.clone();
        let task = task.to_owned();
        RemoteCall::new(async move {
            let permit = inner.acquire().await?;
            let r = crate::call::run(&inner, &task, fingerprint, input, options).await;
            inner.record(&r);
            release(&inner, permit);
            r
        })
    }

    /// Stops taking calls; resolves when every call in flight has
    /// resolved and what we published has reached the server.
    pub fn shutdown(&self) -> Shutdown {
        self.inner.closed.store(true, SeqCst);
        self.inner.permits.close();
        let inner = self.inner.clone();
        Shutdown {
            fut: Box::pin(async move {
                loop {
                    let freed = inner.slot_freed.notified();
                    if inner.permits.available_permits() == inner.max_in_flight
                        && inner.router.len() == 0
                    {
                        break;
                    }
                    // Bounded re-check: a slot freed between the test and
                    // the wait is caught on the next round.
                    let _ = tokio::time::timeout(Duration::from_millis(50), freed).await;
                }
                let _ = inner.client.flush().await;
            }),
        }
    }

    /// The delivery mode.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// The most calls in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight
    }

    /// The largest message the server takes (its `max_payload`), headers
    /// included; an encoded input must leave about 1 KiB of it for ours.
    pub fn max_payload(&self) -> usize {
        crate::subjects::max_payload(&self.inner.client, &self.inner.max_payload)
    }

    /// The NATS client the pool uses (for metrics of its own, or to share
    /// the connection).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Calls in flight and what became of the others.
    pub fn metrics(&self) -> RemoteMetrics {
        let s = &self.inner.stats;
        RemoteMetrics {
            in_flight: self
                .inner
                .max_in_flight
                .saturating_sub(self.inner.permits.available_permits()),
            max_in_flight: self.inner.max_in_flight,
            completed: s.completed.load(Relaxed),
            failed: s.failed.load(Relaxed),
            worker_lost: s.worker_lost.load(Relaxed),
            timeouts: s.timeouts.load(Relaxed),
            unserved: s.unserved.load(Relaxed),
            busy_retries: s.busy_retries.load(Relaxed),
            redelivered: s.redelivered.load(Relaxed),
        }
    }
}

/// Gives a call's slot back. Only a shutting-down pool waits to hear of
/// it (`notify_waiters` takes a lock: not on every call); a slot freed
/// just as `shutdown` starts is caught by its bounded re-check.
fn release(inner: &Inner, permit: OwnedSemaphorePermit) {
    drop(permit);
    if inner.closed.load(SeqCst) {
        inner.slot_freed.notify_waiters();
    }
}

/// Encodes, calls, decodes; records the outcome.
async fn run_typed<T: Task>(
    inner: Arc<Inner>,
    input: T::Input,
    options: CallOptions,
    permit: OwnedSemaphorePermit,
) -> Result<T::Output, Error> {
    let started = Instant::now();
    let result = match postcard::to_stdvec(&input) {
        Ok(bytes) => {
            drop(input);
            crate::call::run(&inner, T::NAME, fingerprint::<T>(), bytes, options).await
        }
        Err(e) => Err(offload::remote::codec(format!(
            "input of task {:?}: {e}",
            T::NAME
        ))),
    };
    inner.record(&result);
    crate::metrics::call_done(T::NAME, inner.mode, &result, started.elapsed());
    release(&inner, permit);
    let bytes = result?;
    postcard::from_bytes(&bytes)
        .map_err(|e| offload::remote::codec(format!("output of task {:?}: {e}", T::NAME)))
}

impl Drop for RemotePool {
    /// Stops taking calls and returns at once; calls in flight go on.
    fn drop(&mut self) {
        self.inner.closed.store(true, SeqCst);
        self.inner.permits.close();
    }
}

impl fmt::Debug for RemotePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemotePool")
            .field("prefix", &self.inner.subjects.prefix())
            .field("mode", &self.inner.mode)
            .field("metrics", &self.metrics())
            .finish()
    }
}

/// The future of a remote call: resolves to the task's output.
///
/// # Cancellation
///
/// Dropping it before the call is sent means the call is never sent.
/// After, with the default [`OnDrop::Kill`](offload::proc::OnDrop::Kill), the call is withdrawn: a
/// worker that has not started it skips it (durable: the job is deleted
/// from the stream), and a worker running it kills the process that runs
/// it. With [`OnDrop::Detach`](offload::proc::OnDrop::Detach) it finishes unobserved. A cancel is a
/// message like any other: a worker that is cut off from the server
/// finishes the call.
#[must_use = "dropping a RemoteCall cancels it"]
pub struct RemoteCall<O> {
    fut: Pin<Box<dyn Future<Output = Result<O, Error>> + Send + 'static>>,
}

impl<O> RemoteCall<O> {
    fn new(fut: impl Future<Output = Result<O, Error>> + Send + 'static) -> Self {
        RemoteCall { fut: Box::pin(fut) }
    }
}

impl<O> Future for RemoteCall<O> {
    type Output = Result<O, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}

impl<O> fmt::Debug for RemoteCall<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteCall").finish_non_exhaustive()
    }
}

/// The future of [`RemotePool::shutdown`].
#[must_use = "the pool is already closed; await this to wait for its calls"]
pub struct Shutdown {
    fut: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
}

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.fut.as_mut().poll(cx)
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown").finish_non_exhaustive()
    }
}
