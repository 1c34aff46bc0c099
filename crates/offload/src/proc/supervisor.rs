//! Supervision of a pool's workers: which driver thread feeds which
//! worker, starting and replacing workers (with a back-off when they die
//! at start-up), sending a call and sending it again when its worker died
//! before starting it, and the counts the pool reports.
//!
//! A pool has `workers` *lanes*; each lane holds at most one worker
//! process at a time and has `depth` driver threads seated at it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};

use super::call::CancelSwitch;
use super::child::{CallError, Hooks, Launch, WorkerProc};
use super::codec::Encoded;
use super::protocol::{Body, TaskInfo};
use crate::error::Error;
use crate::sync::lock;

/// How many times a call is sent before giving up, when each time its
/// worker died on its own (crashed, failed to start) before starting it.
const MAX_SENDS: usize = 4;

/// How many times a call is sent again because its worker left, before
/// starting it, for a reason that is no fault of the call (another call's
/// timeout or cancel stopped it, another call crashed it, or it was
/// retired): a designed path, so it does not use up [`MAX_SENDS`]; this
/// bound only keeps a call from waiting forever behind a stream of calls
/// that each end their worker in front of it.
const MAX_RESENDS_ON_PURPOSE: usize = 64;

/// The longest a pool waits between start attempts after repeated failures.
const MAX_COOLDOWN: Duration = Duration::from_secs(30);

thread_local! {
    /// The lane this driver thread feeds. Dropped when the thread exits;
    /// the last driver of a lane to go takes its worker with it, so idle
    /// reaping and shutdown need no extra code.
    static SEAT: RefCell<Option<Seat>> = const { RefCell::new(None) };
}

/// A driver thread's place at one lane.
struct Seat {
    supervisor: Arc<Supervisor>,
    lane: usize,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let left = {
            let mut seated = lock(&self.supervisor.seated);
            seated[self.lane] -= 1;
            seated[self.lane]
        };
        if left == 0 {
            let worker = lock(&self.supervisor.lanes[self.lane].worker).take();
            // Closing its channel lets the worker exit; the reaper collects it.
            drop(worker);
        }
    }
}

/// One lane: its worker, if it has one.
#[derive(Default)]
struct Lane {
    /// Held only to look at or swap the worker, never across a start, so
    /// a caller writing its own call (`caller_writes.rs`) never waits on it
    /// for long.
    worker: Mutex<Option<Arc<WorkerProc>>>,
    /// Held while a worker starts, so the other drivers of the lane wait
    /// for it instead of starting another.
    starting: Mutex<()>,
}

/// The process pool's metrics in the `metrics` facade (feature `metrics`):
/// `offload_proc_*{pool="<name>"}`, beside the driver pool's own
/// `offload_pool_*{pool="<name>-drv"}` (queue, running calls, wait and run
/// times, rejected, cancelled).
#[cfg(feature = "metrics")]
struct ProcExport {
    workers: metrics::Gauge,
    starts: metrics::Counter,
    lost: metrics::Counter,
    timeouts: metrics::Counter,
    recycled: metrics::Counter,
    remote_panics: metrics::Counter,
    out_of_memory: metrics::Counter,
}

#[cfg(feature = "metrics")]
impl ProcExport {
    fn new(pool: &str) -> Self {
        use crate::metrics_export::Family::Proc;
        ProcExport {
            workers: Proc.gauge("workers", pool),
            starts: Proc.counter("worker_starts_total", pool),
            lost: Proc.counter("worker_lost_total", pool),
            timeouts: Proc.counter("timeouts_total", pool),
            recycled: Proc.counter("recycled_total", pool),
            remote_panics: Proc.counter("remote_panics_total", pool),
            out_of_memory: Proc.counter("out_of_memory_total", pool),
        }
    }
}

/// What happened to a pool's workers or calls, for the counts.
#[derive(Debug, Clone, Copy)]
enum Event {
    Started,
    Reaped,
    Lost,
    Timeout,
    Recycled,
    RemotePanic,
    OutOfMemory,
}

/// Counts shared by the pool and its workers (a worker updates them when
/// it is reaped, which may be after the pool's last handle is gone).
#[derive(Default)]
pub(crate) struct Stats {
    /// Live workers by name → pid.
    pub(crate) pids: Mutex<BTreeMap<String, u32>>,
    pub(crate) started: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    /// Workers replaced because they passed the soft memory limit.
    pub(crate) recycled: AtomicU64,
    /// Workers started and not yet reaped.
    pub(crate) live: AtomicUsize,
    /// Woken when `live` drops to zero (a shutdown waiting for the reaper).
    pub(crate) gone_waiters: Mutex<Vec<Waker>>,
    #[cfg(feature = "metrics")]
    export: Option<ProcExport>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("live", &self.live)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl Stats {
    fn new(_pool: &str) -> Self {
        Stats {
            #[cfg(feature = "metrics")]
            export: Some(ProcExport::new(_pool)),
            ..Stats::default()
        }
    }

    /// Counts `event` here and in the exported metrics.
    fn count(&self, event: Event) {
        let n = match event {
            Event::Started => {
                self.live.fetch_add(1, Relaxed);
                &self.started
            }
            Event::Reaped => {
                if self.live.fetch_sub(1, Relaxed) == 1 {
                    let waiters = std::mem::take(&mut *lock(&self.gone_waiters));
                    waiters.into_iter().for_each(Waker::wake);
                }
                #[cfg(feature = "metrics")]
                self.export_event(event);
                return;
            }
            Event::Lost => &self.lost,
            Event::Timeout => &self.timeouts,
            Event::Recycled => &self.recycled,
            Event::RemotePanic | Event::OutOfMemory => {
                #[cfg(feature = "metrics")]
                self.export_event(event);
                return;
            }
        };
        n.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        self.export_event(event);
    }

    #[cfg(feature = "metrics")]
    fn export_event(&self, event: Event) {
        let Some(x) = &self.export else { return };
        match event {
            Event::Started => {
                x.starts.increment(1);
                x.workers.increment(1.0);
            }
            Event::Reaped => x.workers.decrement(1.0),
            Event::Lost => x.lost.increment(1),
            Event::Timeout => x.timeouts.increment(1),
            Event::Recycled => x.recycled.increment(1),
            Event::RemotePanic => x.remote_panics.increment(1),
            Event::OutOfMemory => x.out_of_memory.increment(1),
        }
    }
}

/// Which lanes have had a worker up at least once, and the first start
/// failure: what [`ProcessPool::ready`](super::ProcessPool::ready) waits on.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    pub(crate) started: std::collections::BTreeSet<usize>,
    pub(crate) failed: Option<Error>,
    pub(crate) waiters: Vec<Waker>,
}

/// Start-up failures, to back off instead of fork-bombing the machine when
/// workers die as soon as they start.
#[derive(Debug, Default)]
struct StartGuard {
    consecutive_failures: u32,
    /// No start is tried before this instant.
    cooldown_until: Option<Instant>,
    last_error: String,
    /// The last failure broke the protocol (a wrong or late hello), as
    /// opposed to a worker that died or could not be spawned: calls
    /// refused during the cooldown keep that kind.
    last_was_protocol: bool,
}

/// How many lanes a pool has, and how its calls reach them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// Lanes: worker processes at most.
    pub(crate) workers: usize,
    /// Calls in flight per worker (`pipeline_depth`).
    pub(crate) depth: usize,
    /// Whether callers may write small bytes calls themselves
    /// (`caller_writes.rs`).
    pub(crate) callers_write: bool,
}

/// Everything the driver threads of one pool share.
pub(crate) struct Supervisor {
    pub(crate) launch: Launch,
    /// Worker name prefix (`offload-proc`): workers are `{prefix}-{lane}`.
    pub(crate) prefix: String,
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) max_tasks_per_child: Option<u64>,
    /// The tasks the pool's registry declares, to check workers against.
    pub(crate) expected: Option<Vec<TaskInfo>>,
    /// Whether a worker that disagrees with `expected` was reported.
    warned: AtomicBool,
    start: Mutex<StartGuard>,
    lanes: Vec<Lane>,
    /// Drivers seated at each lane: chosen and counted under one lock, so
    /// drivers starting together spread over the lanes.
    seated: Mutex<Vec<usize>>,
    /// Lanes whose workers started, and start failures, for `ready()`.
    pub(crate) readiness: Mutex<Readiness>,
    pub(crate) stats: Arc<Stats>,
    /// Calls in flight per worker (`pipeline_depth`): the most a caller
    /// writing its own call may find there (`caller_writes.rs`).
    pub(crate) depth: usize,
    /// Where the next call written by its caller looks first.
    pub(crate) next_lane: AtomicUsize,
    /// Whether callers may write their own calls: only in a fixed-size
    /// pool. In an elastic one a lane's worker lives as long as its
    /// drivers, which such calls would not keep busy: the worker would be
    /// let go and started again every `idle_timeout` under load.
    pub(crate) callers_write: bool,
}

impl Supervisor {
    pub(crate) fn new(
        launch: Launch,
        prefix: String,
        default_timeout: Option<Duration>,
        max_tasks_per_child: Option<u64>,
        expected: Option<Vec<TaskInfo>>,
        shape: Shape,
    ) -> Self {
        let Shape {
            workers,
            depth,
            callers_write,
        } = shape;
        Supervisor {
            stats: Arc::new(Stats::new(&prefix)),
            launch,
            prefix,
            default_timeout,
            max_tasks_per_child,
            expected,
            warned: AtomicBool::new(false),
            start: Mutex::new(StartGuard::default()),
            lanes: (0..workers).map(|_| Lane::default()).collect(),
            seated: Mutex::new(vec![0; workers]),
            readiness: Mutex::new(Readiness::default()),
            depth,
            next_lane: AtomicUsize::new(0),
            callers_write,
        }
    }

    /// How many lanes (workers at most) the pool has.
    pub(crate) fn lane_count(&self) -> usize {
        self.lanes.len()
    }

    /// Lane `lane`'s worker as it is now, if it has one (the lock is held
    /// only for a look or a swap, never across a start).
    pub(crate) fn lane_worker_now(&self, lane: usize) -> Option<Arc<WorkerProc>> {
        lock(&self.lanes[lane].worker).clone()
    }

    /// Starts a worker for lane `lane`, retrying twice with a short
    /// back-off; after that, fails fast until a cooldown passes. Every
    /// kind of start failure counts (a worker that dies, one whose hello
    /// is wrong or late): none can make the pool start workers in a loop.
    fn start_worker(&self, lane: usize) -> Result<WorkerProc, Error> {
        let name = format!("{}-{lane}", self.prefix);
        for attempt in 0..3u32 {
            {
                let guard = lock(&self.start);
                if let Some(until) = guard.cooldown_until {
                    let now = Instant::now();
                    if now < until {
                        let msg = format!(
                            "workers fail at start-up ({}); next attempt in {:?}",
                            guard.last_error,
                            until - now
                        );
                        return Err(if guard.last_was_protocol {
                            Error::protocol(msg)
                        } else {
                            Error::worker_start(msg)
                        });
                    }
                }
            }
            let stats = self.stats.clone();
            let unlist_stats = self.stats.clone();
            let unlist_name = name.clone();
            let pid_cell = Arc::new(AtomicU64::new(0));
            let unlist_pid = pid_cell.clone();
            let hooks = Hooks {
                // Unlist the pid *before* reaping: once reaped, the kernel
                // may give the pid to another process. A replacement under
                // the same name may already be listed: remove the entry
                // only if it is still this worker's.
                unlist: Box::new(move || {
                    let mut pids = lock(&unlist_stats.pids);
                    let pid = unlist_pid.load(Relaxed) as u32;
                    if pids.get(&unlist_name) == Some(&pid) {
                        pids.remove(&unlist_name);
                    }
                }),
                reaped: Box::new(move || stats.count(Event::Reaped)),
            };
            match WorkerProc::start(&self.launch, &name, self.max_tasks_per_child, hooks) {
                Ok(w) => {
                    *lock(&self.start) = StartGuard::default();
                    pid_cell.store(u64::from(w.pid), Relaxed);
                    self.stats.count(Event::Started);
                    lock(&self.stats.pids).insert(w.name.clone(), w.pid);
                    self.check_tasks(&w);
                    return Ok(w);
                }
                Err(e) => {
                    let mut guard = lock(&self.start);
                    guard.consecutive_failures += 1;
                    guard.last_error = e.to_string();
                    guard.last_was_protocol = e.is_protocol();
                    if attempt == 2 || e.is_protocol() {
                        let exp = guard.consecutive_failures.min(10);
                        let cooldown =
                            (Duration::from_millis(250) * 2u32.pow(exp)).min(MAX_COOLDOWN);
                        guard.cooldown_until = Some(Instant::now() + cooldown);
                        tracing::warn!(worker = %name, error = %e, ?cooldown, "offload: workers fail at start-up; backing off");
                        drop(guard);
                        self.readied(lane, Some(&e));
                        return Err(e);
                    }
                    drop(guard);
                    std::thread::sleep(Duration::from_millis(50) * 2u32.pow(attempt));
                }
            }
        }
        unreachable!("the loop returns on its third attempt")
    }

    /// Records that lane `lane` has a worker up, or that starting one
    /// failed, and wakes whoever awaits readiness.
    fn readied(&self, lane: usize, failure: Option<&Error>) {
        let waiters = {
            let mut r = lock(&self.readiness);
            match failure {
                None => {
                    r.started.insert(lane);
                }
                Some(e) => {
                    if r.failed.is_none() {
                        r.failed = Some(e.duplicate());
                    }
                }
            }
            std::mem::take(&mut r.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// Reports, once per pool, a worker that does not serve the registry's
    /// tasks as the pool knows them (calls to those tasks then fail with
    /// [`Error::is_unknown_task`] or [`Error::is_version_mismatch`]).
    fn check_tasks(&self, worker: &WorkerProc) {
        let Some(expected) = &self.expected else {
            return;
        };
        let mut missing = Vec::new();
        let mut other_version = Vec::new();
        for task in expected {
            match worker.hello.fingerprint(&task.name) {
                None => missing.push(task.name.as_str()),
                Some(fp) if fp != task.fingerprint => other_version.push(task.name.as_str()),
                Some(_) => {}
            }
        }
        if (!missing.is_empty() || !other_version.is_empty()) && !self.warned.swap(true, Relaxed) {
            tracing::warn!(worker = %worker.name, ?missing, ?other_version, "offload: the worker does not serve the pool's registry; calls to these tasks will fail");
        }
    }

    /// The lane this driver thread feeds, taking the least crowded one on
    /// first use.
    pub(crate) fn seat(self: &Arc<Self>) -> usize {
        SEAT.with(|seat| {
            let mut seat = seat.borrow_mut();
            if let Some(s) = seat.as_ref() {
                return s.lane;
            }
            let lane = {
                let mut seated = lock(&self.seated);
                let lane = (0..seated.len()).min_by_key(|&i| seated[i]).unwrap_or(0);
                seated[lane] += 1;
                lane
            };
            *seat = Some(Seat {
                supervisor: self.clone(),
                lane,
            });
            lane
        })
    }

    /// The lane's worker, starting a fresh one if it has none, or a dead or
    /// retired one. Only one driver starts it; the others of the lane wait.
    pub(crate) fn worker(&self, lane: usize) -> Result<Arc<WorkerProc>, Error> {
        let usable = || {
            lock(&self.lanes[lane].worker)
                .as_ref()
                .filter(|w| w.is_usable())
                .cloned()
        };
        if let Some(w) = usable() {
            return Ok(w);
        }
        let _starting = lock(&self.lanes[lane].starting);
        // Another driver of the lane may have started one while we waited.
        if let Some(w) = usable() {
            return Ok(w);
        }
        let old = lock(&self.lanes[lane].worker).take();
        if old.as_ref().is_some_and(|w| w.is_over_memory()) {
            self.stats.count(Event::Recycled);
        }
        let fresh = Arc::new(self.start_worker(lane)?);
        fresh.start_standby();
        *lock(&self.lanes[lane].worker) = Some(fresh.clone());
        // Ready once calls can find it in its lane.
        self.readied(lane, None);
        // A retired worker finishes what it was sent, then exits when its
        // last caller lets go of it.
        drop(old);
        Ok(fresh)
    }

    /// Runs one call on this driver thread's worker, sending it again if
    /// its worker died before it started. `fingerprint` is the caller's
    /// idea of the task's version; `switch` lets the caller cancel it.
    pub(crate) fn call(
        self: &Arc<Self>,
        task: &str,
        fingerprint: Option<u64>,
        input: &Encoded,
        timeout: Option<Duration>,
        span: Option<u64>,
        switch: &CancelSwitch,
    ) -> Result<Body, Error> {
        let lane = self.seat();
        let (mut died, mut left) = (0, 0);
        while died < MAX_SENDS && left < MAX_RESENDS_ON_PURPOSE {
            let worker = self.worker(lane)?;
            match (worker.hello.fingerprint(task), fingerprint) {
                (None, _) => return Err(Error::unknown_task(task)),
                (Some(theirs), Some(ours)) if theirs != ours => {
                    return Err(Error::version_mismatch(format!(
                        "{} serves task {task:?} with fingerprint {theirs:#x}, the caller expects {ours:#x}",
                        worker.name
                    )));
                }
                _ => {}
            }
            if switch.fired() {
                return Err(Error::cancelled(crate::error::CancelReason::Dropped));
            }
            let mut again = |worker: &WorkerProc| {
                if worker.ended_on_purpose() {
                    left += 1;
                } else {
                    died += 1;
                }
            };
            let id = match worker.send(task, input, timeout, span) {
                Ok(id) => id,
                Err(CallError::Retry) => {
                    again(&worker);
                    continue;
                }
                Err(CallError::Failed(e)) => return Err(e),
            };
            switch.arm(&worker, id);
            let result = worker.wait(id);
            switch.disarm();
            match result {
                Ok(body) => return Ok(body),
                Err(CallError::Failed(e)) => {
                    self.count_failure(&e);
                    return Err(e);
                }
                Err(CallError::Retry) => again(&worker),
            }
        }
        Err(Error::worker_start(if died >= MAX_SENDS {
            format!("the call found its worker gone {MAX_SENDS} times before it could start")
        } else {
            format!(
                "the call was sent {left} times and each time its worker was stopped, \
                 retired or crashed by another call before it could start"
            )
        }))
    }

    /// Counts a call's failure by kind.
    pub(crate) fn count_failure(&self, e: &Error) {
        if e.is_timeout() {
            self.stats.count(Event::Timeout);
        } else if e.is_worker_lost() {
            self.stats.count(Event::Lost);
        } else if e.is_remote_panic() {
            self.stats.count(Event::RemotePanic);
        } else if e.is_out_of_memory() {
            self.stats.count(Event::OutOfMemory);
        }
    }

    /// After a call: replace a dead worker at once, so the pool is back at
    /// full size before the next call arrives.
    pub(crate) fn after_call(self: &Arc<Self>) {
        let lane = self.seat();
        let dead = lock(&self.lanes[lane].worker)
            .as_ref()
            .is_some_and(|w| w.is_dead());
        if dead {
            // An error is recorded in the start guard; the next call reports it.
            let _ = self.worker(lane);
        }
    }
}
