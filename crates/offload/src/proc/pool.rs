//! [`ProcessPool`]: typed calls to registered tasks in worker processes.
//!
//! Each call is a job on an internal [`ThreadPool`] of *driver threads*:
//! the thread pool brings the queue, backpressure, cancellation of queued
//! calls and the shutdown modes; a driver encodes the input, hands it to
//! its lane's worker (`supervisor.rs`), waits for the reply and decodes it.

use crate::sync::lock;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use super::builder::ProcessPoolBuilder;
use super::call::{Call, CallOptions, CancelSwitch, ReplyCell};
use super::caller_writes::BytesCall;
use super::codec::{self, Encoded};
use super::protocol::Body;
use super::supervisor::{Stats, Supervisor};
use super::task::{Task, fingerprint};
use crate::error::{Error, Payload, TryRunError};
use crate::pool::{PoolMetrics, Shutdown as DrainCalls, ShutdownTimeout, ThreadPool};

/// Room kept in a frame for a call's header besides the task's name.
const CALL_HEAD_ROOM: usize = 48;

/// Worker processes serving registered, typed tasks: the counterpart of
/// Python's `ProcessPoolExecutor`, without its two worst traits (one crashed
/// worker breaks the whole pool; a running call can never be stopped).
///
/// # Examples
///
/// ```no_run
/// use offload::proc::{ProcessPool, Registry, Task};
///
/// struct Sum;
/// impl Task for Sum {
///     const NAME: &'static str = "sum";
///     type Input = Vec<u64>;
///     type Output = u64;
///     fn run(v: Vec<u64>) -> u64 { v.iter().sum() }
/// }
///
/// fn registry() -> Registry {
///     Registry::new().with::<Sum>()
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     offload::proc::run_worker_if_child(&registry()); // first line of main
///     let pool = ProcessPool::builder().workers(2).registry(registry()).build()?;
///     let total = futures::executor::block_on(pool.call::<Sum>(vec![1, 2, 3]))?;
///     assert_eq!(total, 6);
///     Ok(())
/// }
/// ```
///
/// # Failures
///
/// Every failure is an [`Error`] for the one call it concerns:
/// [`is_remote_panic`](Error::is_remote_panic) (the worker survives),
/// [`is_worker_lost`](Error::is_worker_lost) with the exit code or signal
/// (the worker is replaced), [`is_timeout`](Error::is_timeout) (the worker
/// was killed and replaced), [`is_too_large`](Error::is_too_large),
/// [`is_codec`](Error::is_codec), [`is_unknown_task`](Error::is_unknown_task),
/// [`is_version_mismatch`](Error::is_version_mismatch),
/// [`is_protocol`](Error::is_protocol), [`is_worker_start`](Error::is_worker_start).
/// Other calls go on. A call is never run twice: when a worker dies, the
/// calls queued behind the one it was running had not started, and only
/// they are sent again.
///
/// # Handles, dropping and waiting
///
/// A `ProcessPool` is a cheap [`Clone`] handle (put it in a web
/// framework's state as is). Dropping the last handle never waits: it
/// closes the pool, the calls already queued still run and their callers
/// still get their results, and the workers exit and are reaped in the
/// background (within a second of their last call). To wait, say so:
/// [`shutdown`](Self::shutdown)`.await` in async code,
/// [`shutdown_blocking`](Self::shutdown_blocking) in sync code and tests.
/// When `main` returns right after a drop, the workers see their parent
/// gone and exit at once.
#[derive(Clone)]
pub struct ProcessPool {
    drivers: ThreadPool,
    supervisor: Arc<Supervisor>,
    max_frame: usize,
    /// Workers started at build: all of them, or `min_workers` for an
    /// elastic pool; what [`ready`](Self::ready) waits for.
    started_at_build: usize,
}

/// A snapshot of a process pool: its call queue and its workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcMetrics {
    /// The call queue and driver threads (one per call in flight).
    pub calls: PoolMetrics,
    /// Worker processes alive now (started and not yet reaped).
    pub workers: usize,
    /// Worker processes started so far (first starts and replacements).
    pub started: u64,
    /// Calls that failed because their worker died.
    pub lost: u64,
    /// Calls killed by their timeout.
    pub timeouts: u64,
    /// Workers replaced because they passed the soft memory limit
    /// ([`max_memory_per_worker`](ProcessPoolBuilder::max_memory_per_worker)).
    pub recycled: u64,
    /// Calls written to workers and not answered yet. Calls carried by
    /// drivers show in `calls.running` too; small
    /// [`call_bytes`](ProcessPool::call_bytes) calls that their caller
    /// wrote itself show only here.
    pub in_flight: usize,
}

impl ProcessPool {
    /// A builder; see [`ProcessPoolBuilder`] for the settings and defaults.
    ///
    /// The workers re-execute the current program, so
    /// [`run_worker_if_child`](super::run_worker_if_child) must be the
    /// first line of `main`, before argument parsing: a worker is started
    /// with no arguments of yours, and must become a worker before your
    /// code looks at them.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::default()
    }

    pub(crate) fn new(
        drivers: ThreadPool,
        supervisor: Arc<Supervisor>,
        max_frame: usize,
        started_at_build: usize,
    ) -> Self {
        ProcessPool {
            drivers,
            supervisor,
            max_frame,
            started_at_build,
        }
    }

    /// Resolves once the workers started at build (all of them for a
    /// fixed-size pool, [`min_workers`](ProcessPoolBuilder::min_workers)
    /// for an elastic one) have started, run the registry's `init` and
    /// said hello, so a service can await it before it takes traffic and
    /// its first requests do not pay for start-up. [`build`](ProcessPoolBuilder::build)
    /// itself returns at once (it starts workers on the driver threads).
    ///
    /// # Errors
    ///
    /// The first start failure ([`Error::is_worker_start`] for a worker
    /// that dies or cannot be spawned, [`Error::is_protocol`] for a wrong
    /// or late hello): a service should fail its start-up.
    pub fn ready(&self) -> Ready {
        Ready {
            supervisor: self.supervisor.clone(),
            wanted: self.started_at_build,
        }
    }

    /// Calls task `T` with `input` in a worker process; waits for a queue
    /// slot if the queue is full. The input is encoded on a driver thread,
    /// not in the caller (for a call whose caller writes it itself, see
    /// [`call_bytes`](Self::call_bytes)).
    ///
    /// # Errors
    ///
    /// See [the type's docs](ProcessPool#failures).
    ///
    /// # Cancellation
    ///
    /// See [`Call`].
    pub fn call<T: Task>(&self, input: T::Input) -> Call<T::Output> {
        self.call_with::<T>(input, CallOptions::default())
    }

    /// [`call`](Self::call) with per-call options (timeout, drop behaviour).
    pub fn call_with<T: Task>(&self, input: T::Input, options: CallOptions) -> Call<T::Output> {
        let (job, mut call) = self.prepare::<T::Input, T::Output>(
            T::NAME.into(),
            Some(fingerprint::<T>()),
            options,
            |input, max| codec::encode(input, Payload::Input, max),
            |body| codec::decode(body.into_input(), Payload::Output),
        );
        call.job = Some(self.drivers.run(move || job(input)));
        call
    }

    /// Calls the task named `task` with its already encoded `input`
    /// (postcard of the task's input type), and resolves to its encoded
    /// output: for transports that carry calls as bytes (a worker serving
    /// calls that arrive over a message system). `fingerprint`, if given,
    /// must match the worker's [`fingerprint`](super::fingerprint) of the
    /// task, or the call fails with
    /// [`Error::is_version_mismatch`] before it is sent.
    ///
    /// # How it travels
    ///
    /// A small input (up to 16 KiB) to a fixed-size pool (no
    /// [`idle_timeout`](ProcessPoolBuilder::idle_timeout)) whose worker
    /// has room now (fewer than `pipeline_depth` calls in flight) is
    /// written by the calling thread itself, with one non-blocking
    /// `sendmsg`, and completed by whichever thread reads its reply: no
    /// driver thread carries it, so it takes no place in the driver queue
    /// and shows in [`ProcMetrics::in_flight`], not in `calls`. This never
    /// blocks the caller (a socket that will not take the frame at once,
    /// or another thread's blocking write to it, sends the call the other
    /// way). Otherwise it goes through a driver, as [`call`](Self::call)
    /// does. The promises are the same either way: cancellation on drop,
    /// timeouts, a call whose worker died before starting it sent again,
    /// [`shutdown`](Self::shutdown) waiting for it.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call); an input that is not the task's input type
    /// fails with [`Error::is_codec`] in the worker.
    pub fn call_bytes(
        &self,
        task: &str,
        fingerprint: Option<u64>,
        input: Vec<u8>,
        options: CallOptions,
    ) -> Call<Vec<u8>> {
        let input = match self.call_bytes_from_caller(task, fingerprint, input, options) {
            Ok(call) => return call,
            Err(input) => input,
        };
        let (job, mut call) = self.prepare::<Vec<u8>, Vec<u8>>(
            task.to_owned(),
            fingerprint,
            options,
            |input, max| {
                if input.len() > max {
                    return Err(Error::too_large(
                        Payload::Input,
                        Some(input.len() as u64),
                        max as u64,
                    ));
                }
                Ok(Encoded {
                    prefix: Vec::new(),
                    bytes: input,
                })
            },
            |body| Ok(body.into_vec()),
        );
        call.job = Some(self.drivers.run(move || job(input)));
        call
    }

    /// The first way of [`call_bytes`](Self::call_bytes): the caller
    /// writes a small call itself to a worker with room, and the reader of
    /// its reply completes it (`caller_writes.rs`); no driver thread is
    /// woken. Hands the input back when that cannot be done at once.
    fn call_bytes_from_caller(
        &self,
        task: &str,
        fingerprint: Option<u64>,
        input: Vec<u8>,
        options: CallOptions,
    ) -> Result<Call<Vec<u8>>, Vec<u8>> {
        if !self.supervisor.callers_write
            || input.len() > super::child::CALLER_MAX_FRAME
            || self.drivers.is_shutdown()
        {
            return Err(input);
        }
        let reply = Arc::new(ReplyCell::new());
        let switch = Arc::new(CancelSwitch::default());
        let call = Arc::new(BytesCall {
            task: task.to_owned(),
            fingerprint,
            input: Encoded {
                prefix: Vec::new(),
                bytes: input,
            },
            timeout: options.timeout.or(self.supervisor.default_timeout),
            span: tracing::Span::current().id().map(|id| id.into_u64()),
        });
        match self.supervisor.call_from_caller(call, &reply, &switch) {
            Ok(()) => Ok(Call {
                reply,
                job: None,
                switch,
                on_drop: options.on_drop,
                done: false,
            }),
            // Its completion, which shared it, is gone: it is ours alone.
            Err(call) => Err(Arc::try_unwrap(call)
                .map(|c| c.input.bytes)
                .unwrap_or_else(|shared| shared.input.bytes.clone())),
        }
    }

    /// Queues a call if there is room now; otherwise hands the input back.
    ///
    /// # Errors
    ///
    /// [`TryRunError::Full`] or [`TryRunError::Shutdown`], with the input.
    pub fn try_call<T: Task>(
        &self,
        input: T::Input,
    ) -> Result<Call<T::Output>, TryRunError<T::Input>> {
        let (job, mut call) = self.prepare::<T::Input, T::Output>(
            T::NAME.into(),
            Some(fingerprint::<T>()),
            CallOptions::default(),
            |input, max| codec::encode(input, Payload::Input, max),
            |body| codec::decode(body.into_input(), Payload::Output),
        );
        match self.drivers.try_run_with(input, job) {
            Ok(handle) => {
                // A JobHandle has the same cancellation semantics as `run`;
                // adapt it to the `Run` the call future polls.
                call.job = Some(crate::executor::run_from_handle(handle));
                Ok(call)
            }
            Err(refused) => {
                // Never queued: nothing to cancel when the call drops.
                call.done = true;
                Err(refused)
            }
        }
    }

    /// Builds the driver job and the call future: the job encodes the
    /// input with `encode` (given the largest input that fits in a frame),
    /// runs the call, and decodes the output with `decode`.
    fn prepare<I: Send + 'static, O: Send + 'static>(
        &self,
        task: String,
        fingerprint: Option<u64>,
        options: CallOptions,
        encode: impl FnOnce(I, usize) -> Result<Encoded, Error> + Send + 'static,
        decode: impl FnOnce(Body) -> Result<O, Error> + Send + 'static,
    ) -> (impl FnOnce(I) + Send + 'static, Call<O>) {
        let reply = Arc::new(ReplyCell::new());
        let switch = Arc::new(CancelSwitch::default());
        let supervisor = self.supervisor.clone();
        let timeout = options.timeout.or(self.supervisor.default_timeout);
        let max_input = self.max_frame.saturating_sub(CALL_HEAD_ROOM + task.len());
        let (job_reply, job_switch) = (reply.clone(), switch.clone());
        let job = move |input: I| {
            // The driver runs inside the caller's span (the thread pool
            // carries it); its id travels with the call to the worker.
            let span = tracing::Span::current().id().map(|id| id.into_u64());
            let result = encode(input, max_input).and_then(|bytes| {
                supervisor
                    .call(&task, fingerprint, &bytes, timeout, span, &job_switch)
                    .and_then(decode)
            });
            job_reply.send(result);
            supervisor.after_call();
        };
        let call = Call {
            reply,
            job: None,
            switch,
            on_drop: options.on_drop,
            done: false,
        };
        (job, call)
    }

    /// Stops taking calls; resolves when every queued and running call has
    /// finished and every worker process has exited and been reaped.
    pub fn shutdown(&self) -> Shutdown {
        Shutdown {
            calls: Some(self.drivers.shutdown()),
            stats: self.supervisor.stats.clone(),
        }
    }

    /// Stops taking calls, drains the queue, and blocks the calling thread
    /// until every call has finished and every worker process has been
    /// reaped: the waiting counterpart of dropping the pool, for sync
    /// code, `main` and tests.
    ///
    /// # Blocking
    ///
    /// For as long as the queued and running calls take, plus up to a
    /// second per worker that does not exit when asked. Never call it from
    /// async code: use [`shutdown`](Self::shutdown)`.await` there (with the
    /// `tokio` feature, a call on a tokio runtime thread logs a warning).
    pub fn shutdown_blocking(&self) {
        crate::pool::warn_if_async("ProcessPool::shutdown_blocking", &self.supervisor.prefix);
        self.drivers.shutdown_blocking();
        // Workers are let go as their last driver exits; the reaper gives
        // each at most a second.
        let stats = &self.supervisor.stats;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while stats.live.load(Relaxed) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops taking calls and cancels queued ones; running calls finish.
    /// Returns how many were cancelled (calls that their callers wrote
    /// themselves, see [`call_bytes`](Self::call_bytes), are running, never
    /// queued).
    pub fn shutdown_now(&self) -> usize {
        self.drivers.shutdown_now()
    }

    /// Drains for at most `timeout`, then cancels queued calls and reports
    /// the running ones that drivers carry (calls written by their callers
    /// show in [`ProcMetrics::in_flight`]; they finish, and the workers
    /// with them).
    pub fn shutdown_timeout(&self, timeout: Duration) -> ShutdownTimeout {
        self.drivers.shutdown_timeout(timeout)
    }

    /// Queue, workers and failure counts.
    pub fn metrics(&self) -> ProcMetrics {
        let stats = &self.supervisor.stats;
        ProcMetrics {
            calls: self.drivers.metrics(),
            workers: stats.live.load(Relaxed),
            started: stats.started.load(Relaxed),
            lost: stats.lost.load(Relaxed),
            timeouts: stats.timeouts.load(Relaxed),
            recycled: stats.recycled.load(Relaxed),
            in_flight: self.supervisor.in_flight(),
        }
    }

    /// The most calls in flight at once: workers × pipeline depth. This is
    /// also the most calls `metrics().calls.running` and a shutdown
    /// report's `still_running` can show: a call sent to a worker that is
    /// still finishing the one before it counts as running. Small
    /// [`call_bytes`](Self::call_bytes) calls written by their callers
    /// take a worker's room too, up to `pipeline_depth` per worker; when
    /// driver calls arrive on top of them, a worker may briefly hold up to
    /// twice that.
    pub fn max_in_flight(&self) -> usize {
        self.drivers.max_threads()
    }

    /// Process ids of the live workers, by worker name.
    ///
    /// A worker's pid is unlisted before its process is reaped, so a pid
    /// in this map was never handed to another process *when the map was
    /// taken*; a worker may still die and be reaped after that, so signal
    /// these pids only while the pool is alive and expect `ESRCH`.
    pub fn worker_pids(&self) -> BTreeMap<String, u32> {
        lock(&self.supervisor.stats.pids).clone()
    }
}

/// The future of [`ProcessPool::ready`].
#[must_use = "a Ready does nothing unless awaited"]
pub struct Ready {
    supervisor: Arc<Supervisor>,
    wanted: usize,
}

impl Future for Ready {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut r = lock(&self.supervisor.readiness);
        if r.started.len() >= self.wanted {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = &r.failed {
            return Poll::Ready(Err(e.duplicate()));
        }
        if !r.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            r.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl fmt::Debug for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ready")
            .field("wanted", &self.wanted)
            .finish_non_exhaustive()
    }
}

/// The future of [`ProcessPool::shutdown`]: resolves when every call has
/// finished and every worker process has been reaped.
///
/// The pool stops taking calls as soon as `shutdown()` is called, whether
/// or not this future is awaited.
#[must_use = "the pool is already closed; await this to wait for its calls and workers"]
pub struct Shutdown {
    calls: Option<DrainCalls>,
    stats: Arc<Stats>,
}

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(calls) = self.calls.as_mut() {
            if Pin::new(calls).poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.calls = None;
        }
        // Register before looking, so a reap in between is not missed.
        let mut waiters = lock(&self.stats.gone_waiters);
        if self.stats.live.load(Relaxed) == 0 {
            return Poll::Ready(());
        }
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("calls_done", &self.calls.is_none())
            .field("workers", &self.stats.live.load(Relaxed))
            .finish()
    }
}

impl fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPool")
            .field("program", &self.supervisor.launch.program)
            .field("workers", &self.supervisor.stats.live.load(Relaxed))
            .field("drivers", &self.drivers)
            .finish()
    }
}
