//! [`ProcessPoolBuilder`]: every setting of a [`ProcessPool`], checked once.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::child::{Launch, WorkerOutput};
use super::pool::ProcessPool;
use super::supervisor::{Shape, Supervisor};
use super::task::Registry;
use super::wire::{self, DEFAULT_MAX_FRAME};
use super::worker::marker;
use crate::error::BuildError;
use crate::pool::ThreadPool;
use crate::priority::Priority;

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
    output: WorkerOutput,
    soft_memory: Option<u64>,
    hard_memory: Option<u64>,
    oom_score_adj: Option<i16>,
    priority: Priority,
    spin: Duration,
}

impl Default for ProcessPoolBuilder {
    fn default() -> Self {
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
            output: WorkerOutput::default(),
            soft_memory: None,
            hard_memory: None,
            oom_score_adj: Some(1000),
            priority: Priority::Background,
            spin: wire::SPIN,
        }
    }
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

    /// The tasks the parent expects. `build` checks that their names are
    /// unique, and each worker's hello is checked against them: a worker
    /// that lacks one of them, or serves it under another
    /// [`fingerprint`](super::fingerprint), is reported once in a `tracing`
    /// warning, and calls of that task fail with
    /// [`Error::is_unknown_task`](crate::Error::is_unknown_task) or
    /// [`Error::is_version_mismatch`](crate::Error::is_version_mismatch)
    /// before they are sent.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Default hard timeout of every call (none by default; see
    /// [`CallOptions::timeout`](super::CallOptions::timeout)).
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

    /// How long a new worker has to say hello, for the whole of its hello
    /// (default 10 s; must be positive).
    pub fn hello_timeout(mut self, timeout: Duration) -> Self {
        self.hello_timeout = timeout;
        self
    }

    /// Largest message either side may send (default 64 MiB; at least
    /// 1 KiB, at most 4 GiB − 1). A bigger input or output fails its call
    /// with [`Error::is_too_large`](crate::Error::is_too_large) (an input
    /// before it is sent, its encoding stopped at the limit); a bigger
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

    /// Where the workers' stdout and stderr go (default:
    /// [`WorkerOutput::Prefixed`], each line to our stderr).
    pub fn output(mut self, output: WorkerOutput) -> Self {
        self.output = output;
        self
    }

    /// Recycle a worker whose resident memory is above `bytes` after a
    /// call (like Celery's `worker_max_memory_per_child`): the call
    /// completes normally, the worker takes no more calls, and a fresh one
    /// replaces it; no call fails because of it. Counted in
    /// [`ProcMetrics::recycled`](super::ProcMetrics::recycled). Checked
    /// after each call by the worker (`/proc/self/statm`, a few
    /// microseconds); not checked when unset (the default).
    pub fn max_memory_per_worker(mut self, bytes: u64) -> Self {
        self.soft_memory = Some(bytes);
        self
    }

    /// A limit the kernel enforces on each worker's memory (none by
    /// default): the worker sets `RLIMIT_DATA` on itself before its
    /// `init`, bounding its heap, anonymous mappings and thread stacks.
    /// An allocation past it fails; a Rust task then aborts, and its call
    /// fails with [`Error::is_out_of_memory`](crate::Error::is_out_of_memory)
    /// (only that call; the worker is replaced). Native code that does not
    /// check `malloc` may crash instead (`is_worker_lost`, signal 11).
    ///
    /// Works for any user and in containers, on Linux 4.7 and later; on
    /// other systems the limit may be ignored (the worker reports it on
    /// stderr and runs unbounded). The limit counts mappings, not
    /// resident pages: leave room for the worker's own threads (a few
    /// MiB) and for what its allocator reserves. To detect the abort, the
    /// workers' stderr passes through the parent whatever
    /// [`output`](Self::output) says. Must be at least 16 MiB.
    pub fn hard_memory_limit(mut self, bytes: u64) -> Self {
        self.hard_memory = Some(bytes);
        self
    }

    /// The `oom_score_adj` each worker gives itself (default `Some(1000)`:
    /// when the machine runs out of memory, the kernel's OOM killer takes a
    /// worker, never the parent first; a call whose worker it takes fails
    /// with [`Error::is_out_of_memory`](crate::Error::is_out_of_memory)).
    /// `None` leaves the inherited score. Raising one's own score needs no
    /// privilege; lowering it below the parent's does, and is then ignored.
    pub fn oom_score_adj(mut self, adj: Option<i16>) -> Self {
        self.oom_score_adj = adj;
        self
    }

    /// How the workers compete for a core with the parent's threads
    /// (default [`Priority::Background`], set by each worker on itself
    /// before the registry's `init`: busy workers yield a contended core to
    /// the parent's event loop at once, still use idle cores fully, and
    /// keep the share of nice +10 when other CPU load would starve them).
    /// [`Priority::Idle`] yields to every other thread for good, at the
    /// price of no share at all under other CPU load. The parent's threads
    /// that carry calls to the workers keep the builder's priority. See
    /// [`Priority`] for what happens where the OS refuses.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// How long the threads that carry calls, and each worker process, look
    /// for the next frame before they block on the socket (default 50 µs;
    /// at most 10 ms).
    ///
    /// Looking saves a sleep and a wake-up on each side of a call when
    /// calls come one after another (the round trip of a tiny call).
    /// The price is CPU, yielded between looks but spent: where the pool,
    /// its workers and whatever feeds them outnumber the cores (a NATS
    /// worker program with its server on two cores), set `Duration::ZERO`:
    /// each side then blocks at once.
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Checks the settings and starts the workers, without waiting for
    /// them: await [`ProcessPool::ready`] for that.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] for a bad setting, a duplicate task name, or
    /// when called inside a worker process (`run_worker_if_child` must come
    /// first in `main`, or every worker would start a pool of its own).
    pub fn build(self) -> Result<ProcessPool, BuildError> {
        if marker::is_worker() {
            return Err(BuildError::Invalid(
                "ProcessPool built inside a worker process: call offload::proc::run_worker_if_child \
                 first in main, before argument parsing and anything else",
            ));
        }
        if let Some(r) = &self.registry {
            if !r.duplicates().is_empty() {
                return Err(BuildError::Invalid(
                    "the registry has two tasks with the same name",
                ));
            }
        }
        if self.max_frame < 1024 || u32::try_from(self.max_frame).is_err() {
            return Err(BuildError::Invalid(
                "max_frame_bytes must be at least 1024 and less than 4 GiB",
            ));
        }
        if self.workers == 0 || self.depth == 0 {
            return Err(BuildError::Invalid(
                "workers and pipeline_depth must be at least 1",
            ));
        }
        if self.min_workers > self.workers {
            return Err(BuildError::Invalid("min_workers must not exceed workers"));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(BuildError::Invalid(
                "max_tasks_per_child must be at least 1",
            ));
        }
        if self
            .oom_score_adj
            .is_some_and(|a| !(-1000..=1000).contains(&a))
        {
            return Err(BuildError::Invalid(
                "oom_score_adj must be within -1000..=1000",
            ));
        }
        if self.hard_memory.is_some_and(|b| b < 16 << 20) {
            return Err(BuildError::Invalid(
                "hard_memory_limit must be at least 16 MiB",
            ));
        }
        self.priority.validate()?;
        if self.hello_timeout.is_zero() {
            return Err(BuildError::Invalid("hello_timeout must be positive"));
        }
        if self.spin > wire::MAX_SPIN {
            return Err(BuildError::Invalid("spin must be at most 10 ms"));
        }
        let Some(threads) = self.workers.checked_mul(self.depth) else {
            return Err(BuildError::Invalid("workers × pipeline_depth is too large"));
        };
        let same_binary = self.program.is_none();
        let program = match self.program {
            Some(p) => p,
            None => std::env::current_exe().map_err(BuildError::Spawn)?,
        };
        let supervisor = Arc::new(Supervisor::new(
            Launch {
                program,
                args: self.args,
                same_binary,
                hello_timeout: self.hello_timeout,
                max_frame: self.max_frame,
                env: self.env,
                output: self.output,
                soft_memory: self.soft_memory,
                hard_memory: self.hard_memory,
                oom_score_adj: self.oom_score_adj,
                sched: self.priority.resolve(),
                spin: self.spin,
            },
            self.name.clone(),
            self.timeout,
            self.max_tasks_per_child,
            self.registry.as_ref().map(Registry::task_infos),
            Shape {
                workers: self.workers,
                depth: self.depth,
                callers_write: self.idle_timeout.is_none(),
            },
        ));
        let hook = supervisor.clone();
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
            .spin(self.spin)
            .queue_capacity(self.queue_capacity)
            .keep_alive(self.idle_timeout)
            // The drivers carry calls: they are on the caller's latency path.
            .priority(Priority::Normal)
            .on_start(move || {
                // Take a seat at a worker and start it before the first
                // call needs it.
                let lane = hook.seat();
                let _ = hook.worker(lane);
            })
            .build()?;
        let started_at_build = match self.idle_timeout {
            None => self.workers,
            Some(_) => self.min_workers,
        };
        Ok(ProcessPool::new(
            drivers,
            supervisor,
            self.max_frame,
            started_at_build,
        ))
    }
}
