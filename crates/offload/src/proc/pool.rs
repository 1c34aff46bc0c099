//! [`ProcessPool`]: typed calls to registered tasks in worker processes.
//!
//! Each worker process is driven by one thread of an internal
//! [`ThreadPool`]: the thread owns its worker (in a thread-local), writes a
//! call, blocks reading the reply, and replaces the worker when it dies. The
//! thread pool brings the queue, backpressure, cancellation of queued calls
//! and the shutdown modes; this file adds what is specific to processes.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::child::{CallError, Launch, WorkerProc};
use super::task::{Registry, Task};
use super::wire::DEFAULT_MAX_FRAME;
use super::worker::WORKER_ENV;
use crate::error::{BuildError, Error, TryRunError};
use crate::executor::Run;
use crate::pool::{PoolMetrics, Shutdown, ShutdownTimeout, ThreadPool};

thread_local! {
    /// The slot (worker process) this driver thread feeds. Dropped when the
    /// thread exits; the last driver of a slot to go takes its worker with
    /// it, so idle reaping and shutdown need no extra code.
    static SEAT: RefCell<Option<Seat>> = const { RefCell::new(None) };
}

/// A driver thread's place at one worker.
struct Seat {
    shared: Arc<ProcShared>,
    slot: usize,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let left = {
            let mut drivers = lock(&self.shared.drivers);
            drivers[self.slot] -= 1;
            drivers[self.slot]
        };
        if left == 0 {
            let worker = lock(&self.shared.slots[self.slot]).take();
            drop(worker);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts shared by the pool and its workers (a worker updates them when
/// it is dropped, which may be after the pool's last handle is gone).
#[derive(Debug, Default)]
struct Stats {
    /// Live workers by name → pid.
    pids: Mutex<BTreeMap<String, u32>>,
    started: AtomicU64,
    lost: AtomicU64,
    timeouts: AtomicU64,
    live: AtomicUsize,
}

/// A worker and the counts it is part of; dropping the last reference
/// reaps the process and then updates the counts.
struct Tracked {
    proc: Option<WorkerProc>,
    stats: Arc<Stats>,
}

impl Tracked {
    fn get(&self) -> &WorkerProc {
        self.proc
            .as_ref()
            .expect("a Tracked worker holds its process until dropped")
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(w) = self.proc.take() {
            // Unlist the pid *before* reaping: once reaped, the kernel may
            // give the pid to another process, and a user who signals the
            // pids of `worker_pids()` would hit that process instead.
            // A replacement under the same name may already be listed:
            // remove the entry only if it is still this worker's.
            let mut pids = lock(&self.stats.pids);
            if pids.get(&w.name) == Some(&w.pid) {
                pids.remove(&w.name);
            }
            drop(pids);
            drop(w);
            self.stats.live.fetch_sub(1, Relaxed);
        }
    }
}

/// What to do with a running call whose future is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDrop {
    /// Kill its worker (the work stops now); a fresh worker replaces it.
    #[default]
    Kill,
    /// Let it finish and throw the result away; the worker stays busy until then.
    Detach,
}

/// Per-call settings for [`ProcessPool::call_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    timeout: Option<Duration>,
    on_drop: OnDrop,
}

impl CallOptions {
    /// The pool's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// A hard timeout for this call, counted from when a worker starts it:
    /// past it, the worker is killed and the call fails with
    /// [`Error::is_timeout`]. Overrides the pool's default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// What dropping the call's future does once the call is running.
    pub fn on_drop(mut self, on_drop: OnDrop) -> Self {
        self.on_drop = on_drop;
        self
    }
}

/// Start-up failures, to back off instead of fork-bombing the machine when
/// workers die as soon as they start.
#[derive(Debug, Default)]
struct StartGuard {
    consecutive_failures: u32,
    /// No start is tried before this instant.
    cooldown_until: Option<Instant>,
    last_error: String,
}

/// The longest a pool waits between start attempts after repeated failures.
const MAX_COOLDOWN: Duration = Duration::from_secs(30);

struct ProcShared {
    launch: Launch,
    /// Worker name prefix (`offload-proc`): workers are `{prefix}-{slot}`.
    prefix: String,
    default_timeout: Option<Duration>,
    max_tasks_per_child: Option<u64>,
    start: Mutex<StartGuard>,
    /// One entry per worker process: its current worker, replaced when it
    /// dies or retires.
    slots: Vec<Mutex<Option<Arc<Tracked>>>>,
    /// Driver threads attached to each slot.
    drivers: Mutex<Vec<usize>>,
    stats: Arc<Stats>,
}

/// Calls that find their worker dead before they started are sent again;
/// this bounds how often, so a pool whose workers die at once cannot loop.
const MAX_SENDS: u32 = 4;

impl ProcShared {
    /// Starts a worker for the calling driver thread, retrying twice with a
    /// short back-off; after that, fails fast until a cooldown passes.
    fn start_worker(&self, slot: usize) -> Result<WorkerProc, Error> {
        let name = format!("{}-{slot}", self.prefix);
        for attempt in 0..3u32 {
            {
                let guard = self.start.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(until) = guard.cooldown_until {
                    if Instant::now() < until {
                        return Err(Error::worker_start(format!(
                            "workers die at start-up ({}); next attempt in {:?}",
                            guard.last_error,
                            until - Instant::now()
                        )));
                    }
                }
            }
            match WorkerProc::start(&self.launch, &name, self.max_tasks_per_child) {
                Ok(w) => {
                    *lock(&self.start) = StartGuard::default();
                    self.stats.started.fetch_add(1, Relaxed);
                    // Counted down by `Tracked::drop`.
                    self.stats.live.fetch_add(1, Relaxed);
                    lock(&self.stats.pids).insert(w.name.clone(), w.pid);
                    return Ok(w);
                }
                Err(e) if e.is_protocol() => return Err(e),
                Err(e) => {
                    let mut guard = self.start.lock().unwrap_or_else(|e| e.into_inner());
                    guard.consecutive_failures += 1;
                    guard.last_error = e.to_string();
                    if attempt == 2 {
                        let exp = guard.consecutive_failures.min(10);
                        let cooldown =
                            (Duration::from_millis(250) * 2u32.pow(exp)).min(MAX_COOLDOWN);
                        guard.cooldown_until = Some(Instant::now() + cooldown);
                        tracing::warn!(worker = %name, error = %e, ?cooldown, "offload: workers die at start-up; backing off");
                        return Err(e);
                    }
                    drop(guard);
                    std::thread::sleep(Duration::from_millis(50) * 2u32.pow(attempt));
                }
            }
        }
        unreachable!("the loop returns on its third attempt")
    }

    /// The slot this driver thread feeds, taking the least crowded one on
    /// first use.
    fn seat(self: &Arc<Self>) -> usize {
        SEAT.with(|seat| {
            let mut seat = seat.borrow_mut();
            if let Some(s) = seat.as_ref() {
                return s.slot;
            }
            let slot = {
                let mut drivers = lock(&self.drivers);
                let slot = (0..drivers.len()).min_by_key(|&i| drivers[i]).unwrap_or(0);
                drivers[slot] += 1;
                slot
            };
            *seat = Some(Seat {
                shared: self.clone(),
                slot,
            });
            slot
        })
    }

    /// The slot's worker, starting a fresh one if it has none, or a dead or
    /// retired one. Only one driver starts it; the others of the slot wait.
    fn worker(&self, slot: usize) -> Result<Arc<Tracked>, Error> {
        let mut current = lock(&self.slots[slot]);
        if let Some(w) = current.as_ref() {
            if w.get().is_usable() {
                return Ok(w.clone());
            }
        }
        let old = current.take();
        let fresh = Arc::new(Tracked {
            proc: Some(self.start_worker(slot)?),
            stats: self.stats.clone(),
        });
        *current = Some(fresh.clone());
        drop(current);
        // A retired worker finishes what it was sent, then exits when its
        // last caller lets go of it.
        drop(old);
        Ok(fresh)
    }

    /// Runs one call on this driver thread's worker, sending it again if
    /// its worker died before it started. `switch` lets the caller kill the
    /// worker while the call runs.
    fn call(
        self: &Arc<Self>,
        task: &str,
        input: &[u8],
        timeout: Option<Duration>,
        switch: &KillSwitch,
    ) -> Result<Vec<u8>, Error> {
        let slot = self.seat();
        for _ in 0..MAX_SENDS {
            let worker = self.worker(slot)?;
            let w = worker.get();
            if !w.hello.tasks.iter().any(|t| t == task) {
                return Err(Error::unknown_task(task));
            }
            if switch.fired() {
                return Err(Error::cancelled(crate::error::CancelReason::Dropped));
            }
            let id = match w.send(task, input, timeout) {
                Ok(id) => id,
                Err(CallError::Retry) => continue,
                Err(CallError::Failed(e)) => return Err(e),
            };
            switch.arm(worker.clone(), id);
            let result = w.wait(id);
            switch.disarm();
            match result {
                Ok(bytes) => return Ok(bytes),
                Err(CallError::Failed(e)) => {
                    if e.is_timeout() {
                        self.stats.timeouts.fetch_add(1, Relaxed);
                    } else if e.is_worker_lost() {
                        self.stats.lost.fetch_add(1, Relaxed);
                    }
                    return Err(e);
                }
                Err(CallError::Retry) => continue,
            }
        }
        Err(Error::worker_start(format!(
            "the call found its worker gone {MAX_SENDS} times before it could start"
        )))
    }

    /// After a call: replace a dead worker at once, so the pool is back at
    /// full size before the next call arrives.
    fn after_call(self: &Arc<Self>) {
        let slot = self.seat();
        let dead = lock(&self.slots[slot])
            .as_ref()
            .is_some_and(|w| w.get().is_dead());
        if dead {
            // An error is recorded in the start guard; the next call reports it.
            let _ = self.worker(slot);
        }
    }
}

/// Lets a caller that drops a running call kill the worker running it.
#[derive(Default)]
struct KillSwitch {
    state: Mutex<KillState>,
}

#[derive(Default)]
struct KillState {
    /// The caller gave up (with [`OnDrop::Kill`]).
    fired: bool,
    /// The worker the call was sent to, and the call's id, while it runs.
    call: Option<(Arc<Tracked>, u64)>,
}

impl KillSwitch {
    fn fired(&self) -> bool {
        lock(&self.state).fired
    }

    /// The call was sent as `id` to `worker`. If the caller gave up in the
    /// meantime, stop it now.
    fn arm(&self, worker: Arc<Tracked>, id: u64) {
        let mut st = lock(&self.state);
        if st.fired {
            drop(st);
            worker.get().cancel(id);
            return;
        }
        st.call = Some((worker, id));
    }

    /// The call ended.
    fn disarm(&self) {
        lock(&self.state).call = None;
    }

    fn fire(&self) {
        let call = {
            let mut st = lock(&self.state);
            st.fired = true;
            st.call.take()
        };
        if let Some((worker, id)) = call {
            worker.get().cancel(id);
        }
    }
}

/// The result of a call, handed from the driver thread to the caller as
/// soon as it is known (before the driver replaces a dead worker).
struct Reply<O> {
    /// The result once sent, and the caller's waker while it waits.
    state: Mutex<ReplyState<O>>,
}

type ReplyState<O> = (Option<Result<O, Error>>, Option<Waker>);

impl<O> Reply<O> {
    fn send(&self, result: Result<O, Error>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = Some(result);
        let waker = st.1.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<O, Error>> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match st.0.take() {
            Some(r) => Poll::Ready(r),
            None => {
                match &mut st.1 {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

/// The future of a process call: resolves to the task's output.
///
/// # Cancellation
///
/// Dropping it before a worker starts the call means the call never runs.
/// Dropping it while the call runs kills the worker (the default,
/// [`OnDrop::Kill`]) or lets the call finish unobserved ([`OnDrop::Detach`]).
#[must_use = "dropping a Call cancels it"]
pub struct Call<O> {
    reply: Arc<Reply<O>>,
    /// The job on the driver pool; polled for submission (backpressure) and
    /// for failures before the call ran (shutdown, cancellation).
    job: Option<Run<()>>,
    switch: Arc<KillSwitch>,
    on_drop: OnDrop,
    done: bool,
}

impl<O> Future for Call<O> {
    type Output = Result<O, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(r) = self.reply.poll(cx) {
            self.done = true;
            return Poll::Ready(r);
        }
        if let Some(job) = self.job.as_mut() {
            match Pin::new(job).poll(cx) {
                Poll::Pending => {}
                Poll::Ready(res) => {
                    self.job = None;
                    // The job ended; it always replies first unless it never ran.
                    if let Poll::Ready(r) = self.reply.poll(cx) {
                        self.done = true;
                        return Poll::Ready(r);
                    }
                    self.done = true;
                    return Poll::Ready(Err(match res {
                        Err(e) => e,
                        Ok(()) => Error::protocol("the call ended without a reply"),
                    }));
                }
            }
        }
        Poll::Pending
    }
}

impl<O> Drop for Call<O> {
    fn drop(&mut self) {
        if !self.done && self.on_drop == OnDrop::Kill {
            self.switch.fire();
        }
    }
}

impl<O> fmt::Debug for Call<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("done", &self.done)
            .field("on_drop", &self.on_drop)
            .finish()
    }
}

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
/// was killed and replaced), [`is_codec`](Error::is_codec),
/// [`is_unknown_task`](Error::is_unknown_task), [`is_protocol`](Error::is_protocol),
/// [`is_worker_start`](Error::is_worker_start). Other calls go on.
pub struct ProcessPool {
    drivers: Option<ThreadPool>,
    shared: Arc<ProcShared>,
    max_frame: usize,
}

/// Builds a [`ProcessPool`]. Create one with [`ProcessPool::builder`].
#[must_use = "a builder does nothing until `build` is called"]
#[derive(Debug)]
pub struct ProcessPoolBuilder {
    workers: usize,
    min_workers: usize,
    depth: usize,
    queue_capacity: usize,
    name: String,
    program: Option<PathBuf>,
    args: Vec<OsString>,
    registry: Option<Registry>,
    timeout: Option<Duration>,
    max_tasks_per_child: Option<u64>,
    idle_timeout: Option<Duration>,
    hello_timeout: Duration,
    max_frame: usize,
    env: Option<Vec<(OsString, OsString)>>,
}

impl ProcessPoolBuilder {
    /// How many worker processes run at once (default: the number of CPUs).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// How many calls each worker has in flight (default 2): one running,
    /// the others already in its socket, so it never waits for the parent
    /// between calls. A worker that dies fails only the call it was running;
    /// the calls queued behind it are sent again to its replacement. 1
    /// turns pipelining off. Must be at least 1.
    pub fn pipeline_depth(mut self, depth: usize) -> Self {
        self.depth = depth;
        self
    }

    /// How many calls may wait for a worker (default 1024).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Worker name prefix (default `offload-proc`): workers and their driver
    /// threads are `offload-proc-0`, `offload-proc-1`, …
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Run this program as the worker instead of re-executing the current
    /// executable. It must call [`run_worker_if_child`](super::run_worker_if_child)
    /// first thing in its `main`.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Arguments for the worker program.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// The tasks the parent expects; `build` checks their names are unique.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Default hard timeout of every call (none by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Replace a worker after it has served `n` calls (like Python's
    /// `max_tasks_per_child`), to bound leaks in native code it calls.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// Workers kept when idle, with [`idle_timeout`](Self::idle_timeout)
    /// (default 0). They start with the pool. At most `workers`.
    pub fn min_workers(mut self, n: usize) -> Self {
        self.min_workers = n;
        self
    }

    /// Stop workers idle for this long (they restart on demand), down to
    /// [`min_workers`](Self::min_workers). Default: never, so the pool keeps
    /// a fixed size, all workers started at build.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// How long a new worker has to say hello (default 10 s).
    pub fn hello_timeout(mut self, timeout: Duration) -> Self {
        self.hello_timeout = timeout;
        self
    }

    /// Largest message either side may send (default 64 MiB). A bigger
    /// input or output fails its call with [`Error::is_codec`]; a bigger
    /// frame from a worker is a protocol error and the worker is killed.
    /// Nothing larger is ever allocated.
    pub fn max_frame_bytes(mut self, n: usize) -> Self {
        self.max_frame = n;
        self
    }

    /// Start workers with exactly this environment instead of inheriting
    /// the parent's (the worker variables offload needs are added).
    pub fn env_clear_with<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// Checks the settings and starts the workers.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] for a bad setting, a duplicate task name, or
    /// when called inside a worker process (`run_worker_if_child` must come
    /// first in `main`, or every worker would start a pool of its own).
    pub fn build(self) -> Result<ProcessPool, BuildError> {
        if std::env::var_os(WORKER_ENV).is_some() {
            return Err(BuildError::Invalid(
                "ProcessPool built inside a worker process: call offload::proc::run_worker_if_child first in main",
            ));
        }
        if let Some(r) = &self.registry {
            if !r.duplicates().is_empty() {
                return Err(BuildError::Invalid(
                    "the registry has two tasks with the same name",
                ));
            }
        }
        if self.max_frame < 1024 {
            return Err(BuildError::Invalid("max_frame_bytes must be at least 1024"));
        }
        if self.workers == 0 || self.depth == 0 {
            return Err(BuildError::Invalid(
                "workers and pipeline_depth must be at least 1",
            ));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(BuildError::Invalid(
                "max_tasks_per_child must be at least 1",
            ));
        }
        let same_binary = self.program.is_none();
        let program = match self.program {
            Some(p) => p,
            None => std::env::current_exe().map_err(BuildError::Spawn)?,
        };
        let shared = Arc::new(ProcShared {
            launch: Launch {
                program,
                args: self.args,
                same_binary,
                hello_timeout: self.hello_timeout,
                max_frame: self.max_frame,
                env: self.env,
            },
            prefix: self.name.clone(),
            default_timeout: self.timeout,
            max_tasks_per_child: self.max_tasks_per_child,
            start: Mutex::new(StartGuard::default()),
            slots: (0..self.workers).map(|_| Mutex::new(None)).collect(),
            drivers: Mutex::new(vec![0; self.workers]),
            stats: Arc::new(Stats::default()),
        });
        let hook_shared = shared.clone();
        let threads = self.workers * self.depth;
        // Drivers started at build (and their workers, by the start hook):
        // all of them for a fixed-size pool, the minimum for an elastic one.
        let min_drivers = match self.idle_timeout {
            None => threads,
            Some(_) => self.min_workers * self.depth,
        };
        let drivers = ThreadPool::builder()
            .name(format!("{}-drv", self.name))
            .threads(threads)
            .min_threads(min_drivers)
            .queue_capacity(self.queue_capacity)
            .keep_alive(self.idle_timeout)
            .on_start(move || {
                // Take a seat at a worker and start it before the first
                // call needs it.
                let slot = hook_shared.seat();
                let _ = hook_shared.worker(slot);
            })
            .build()?;
        Ok(ProcessPool {
            drivers: Some(drivers),
            shared,
            max_frame: self.max_frame,
        })
    }
}

/// A snapshot of a process pool: its call queue and its workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcMetrics {
    /// The call queue and driver threads (one per worker).
    pub calls: PoolMetrics,
    /// Worker processes alive now.
    pub workers: usize,
    /// Worker processes started so far (first starts and replacements).
    pub started: u64,
    /// Calls that failed because their worker died.
    pub lost: u64,
    /// Calls killed by their timeout.
    pub timeouts: u64,
}

impl ProcessPool {
    /// A builder; see [`ProcessPoolBuilder`] for the settings and defaults.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            min_workers: 0,
            depth: 2,
            queue_capacity: 1024,
            name: "offload-proc".to_owned(),
            program: None,
            args: Vec::new(),
            registry: None,
            timeout: None,
            max_tasks_per_child: None,
            idle_timeout: None,
            hello_timeout: Duration::from_secs(10),
            max_frame: DEFAULT_MAX_FRAME,
            env: None,
        }
    }

    fn drivers(&self) -> &ThreadPool {
        self.drivers
            .as_ref()
            .expect("the driver pool lives as long as the ProcessPool")
    }

    /// Calls task `T` with `input` in a worker process; waits for a queue
    /// slot if the queue is full.
    ///
    /// # Errors
    ///
    /// See [the type's docs](ProcessPool#failures).
    pub fn call<T: Task>(&self, input: T::Input) -> Call<T::Output> {
        self.call_with::<T>(input, CallOptions::default())
    }

    /// [`call`](Self::call) with per-call options (timeout, drop behaviour).
    pub fn call_with<T: Task>(&self, input: T::Input, options: CallOptions) -> Call<T::Output> {
        let (job, mut call) = self.prepare::<T>(input, options);
        call.job = Some(self.drivers().run(job));
        call
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
        let slot = Arc::new(Mutex::new(Some(input)));
        let taken = slot.clone();
        let (job, mut call) = self.prepare_with::<T>(
            move || taken.lock().unwrap_or_else(|e| e.into_inner()).take(),
            CallOptions::default(),
        );
        match self.drivers().try_run(job) {
            Ok(handle) => {
                // A JobHandle has the same cancellation semantics as `run`;
                // adapt it to the `Run` the call future polls.
                call.job = Some(crate::executor::run_from_handle(handle));
                Ok(call)
            }
            Err(e) => {
                let input = slot
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .expect("an unqueued call still holds its input");
                Err(if e.is_full() {
                    TryRunError::Full(input)
                } else {
                    TryRunError::Shutdown(input)
                })
            }
        }
    }

    fn prepare<T: Task>(
        &self,
        input: T::Input,
        options: CallOptions,
    ) -> (impl FnOnce() + Send + 'static, Call<T::Output>) {
        let mut input = Some(input);
        self.prepare_with::<T>(move || input.take(), options)
    }

    /// Builds the driver job and the call future around an input source.
    fn prepare_with<T: Task>(
        &self,
        mut input: impl FnMut() -> Option<T::Input> + Send + 'static,
        options: CallOptions,
    ) -> (impl FnOnce() + Send + 'static, Call<T::Output>) {
        let reply = Arc::new(Reply {
            state: Mutex::new((None, None)),
        });
        let switch = Arc::new(KillSwitch::default());
        let shared = self.shared.clone();
        let timeout = options.timeout.or(self.shared.default_timeout);
        let max_frame = self.max_frame;
        let (job_reply, job_switch) = (reply.clone(), switch.clone());
        let job = move || {
            let Some(input) = input() else {
                job_reply.send(Err(Error::protocol("call input missing")));
                return;
            };
            let result = match postcard::to_stdvec(&input) {
                Err(e) => Err(Error::codec(format!("input: {e}"))),
                Ok(bytes) if bytes.len() > max_frame => Err(Error::codec(format!(
                    "input of {} bytes exceeds the {max_frame}-byte frame limit",
                    bytes.len()
                ))),
                Ok(bytes) => shared
                    .call(T::NAME, &bytes, timeout, &job_switch)
                    .and_then(|out| {
                        postcard::from_bytes::<T::Output>(&out)
                            .map_err(|e| Error::codec(format!("output: {e}")))
                    }),
            };
            job_reply.send(result);
            shared.after_call();
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
    /// finished. Workers exit once idle.
    pub fn shutdown(&self) -> Shutdown {
        self.drivers().shutdown()
    }

    /// Stops taking calls and cancels queued ones; running calls finish.
    /// Returns how many were cancelled.
    pub fn shutdown_now(&self) -> usize {
        self.drivers().shutdown_now()
    }

    /// Drains for at most `timeout`, then cancels queued calls and reports
    /// the running ones.
    pub fn shutdown_timeout(&self, timeout: Duration) -> ShutdownTimeout {
        self.drivers().shutdown_timeout(timeout)
    }

    /// Queue, workers and failure counts.
    pub fn metrics(&self) -> ProcMetrics {
        ProcMetrics {
            calls: self.drivers().metrics(),
            workers: self.shared.stats.live.load(Relaxed),
            started: self.shared.stats.started.load(Relaxed),
            lost: self.shared.stats.lost.load(Relaxed),
            timeouts: self.shared.stats.timeouts.load(Relaxed),
        }
    }

    /// The most calls in flight at once: workers × pipeline depth. This is
    /// also the most calls `metrics().calls.running` and a shutdown
    /// report's `still_running` can show: a call sent to a worker that is
    /// still finishing the one before it counts as running.
    pub fn max_in_flight(&self) -> usize {
        self.drivers().max_threads()
    }

    /// Process ids of the live workers, by worker name.
    ///
    /// A worker's pid is unlisted before its process is reaped, so a pid
    /// in this map was never handed to another process *when the map was
    /// taken*; a worker may still die and be reaped after that, so signal
    /// these pids only while the pool is alive and expect `ESRCH`.
    pub fn worker_pids(&self) -> BTreeMap<String, u32> {
        lock(&self.shared.stats.pids).clone()
    }
}

impl Drop for ProcessPool {
    /// Drains the queue, then waits (up to 10 s) until every worker process
    /// has been reaped: dropping a pool leaves no process behind.
    fn drop(&mut self) {
        drop(self.drivers.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.shared.stats.live.load(Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPool")
            .field("program", &self.shared.launch.program)
            .field("workers", &self.shared.stats.live.load(Relaxed))
            .field("drivers", &self.drivers)
            .finish()
    }
}
