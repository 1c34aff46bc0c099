//! [`ThreadPoolBuilder`]: every knob of a [`ThreadPool`], validated once.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use super::ThreadPool;
use crate::error::BuildError;
use crate::priority::{Priority, Sched};

/// A hook run on each new worker thread before it takes any job. An
/// `Err` fails the pool for good (a dedicated executor's initialiser): its
/// queued and later jobs fail with [`Error::is_init`](crate::Error::is_init)
/// and that message.
pub(crate) type StartHook = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// See [`Config::on_exit`].
pub(crate) type ExitHook = Arc<dyn Fn() + Send + Sync>;

/// Test seam: called before each thread start; an `Err` is taken as the
/// OS refusing the thread (see `worker::test_spawn_gate`).
#[cfg(test)]
pub(crate) type SpawnGate = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// The validated configuration a pool runs with.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) max_threads: usize,
    /// Threads started at build and never idled out.
    pub(crate) min_threads: usize,
    pub(crate) queue_capacity: usize,
    /// `None`: idle threads never exit.
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) stack_size: Option<usize>,
    /// How long an idle thread looks for work before it sleeps.
    pub(crate) spin: Duration,
    pub(crate) priority: Priority,
    /// `priority` resolved against the thread that built the pool (`None`
    /// where nice levels do not exist).
    pub(crate) sched: Option<Sched>,
    pub(crate) on_start: Option<StartHook>,
    /// Run on a worker thread that leaves a closed pool, before it counts
    /// itself out (a dedicated executor drops its resource here, so that
    /// `shutdown_blocking` returns only once the resource is gone).
    pub(crate) on_exit: Option<ExitHook>,
    #[cfg(test)]
    pub(crate) spawn_gate: Option<SpawnGate>,
}

/// The default of [`ThreadPoolBuilder::spin`].
const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// The longest [`ThreadPoolBuilder::spin`]: a spinning thread notices a
/// closed pool only when it stops looking, so a shutdown may wait this
/// long for it.
pub(crate) const MAX_SPIN: Duration = Duration::from_millis(10);

/// Python's default for `ThreadPoolExecutor`: `min(32, cpus + 4)`.
pub(crate) fn default_thread_count() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    (cpus + 4).min(32)
}

/// Builds a [`ThreadPool`]. Create one with [`ThreadPool::builder`].
///
/// | setting | default |
/// |---|---|
/// | [`threads`](Self::threads) | `min(32, cpus + 4)`, like Python's `ThreadPoolExecutor` |
/// | [`min_threads`](Self::min_threads) | 0: threads start on demand |
/// | [`queue_capacity`](Self::queue_capacity) | 1024 |
/// | [`name`](Self::name) | `"offload"`: threads are `offload-0`, `offload-1`, … |
/// | [`keep_alive`](Self::keep_alive) | 10 s |
/// | [`stack_size`](Self::stack_size) | the Rust default (2 MiB) |
/// | [`spin`](Self::spin) | 50 µs |
/// | [`priority`](Self::priority) | [`Priority::Background`]: the idle class under a starvation guard (nice +10 where the OS will not let a thread out of it): the loop takes a contended core at once |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let pool = offload::ThreadPool::builder()
///     .name("io")
///     .threads(8)
///     .queue_capacity(1024)
///     .keep_alive(Duration::from_secs(30))
///     .build()?;
/// # Ok::<(), offload::BuildError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct ThreadPoolBuilder {
    config: Config,
}

impl Default for ThreadPoolBuilder {
    fn default() -> Self {
        ThreadPoolBuilder {
            config: Config {
                name: "offload".to_owned(),
                max_threads: default_thread_count(),
                min_threads: 0,
                queue_capacity: 1024,
                keep_alive: Some(Duration::from_secs(10)),
                stack_size: None,
                spin: DEFAULT_SPIN,
                priority: Priority::Background,
                sched: None,
                on_start: None,
                on_exit: None,
                #[cfg(test)]
                spawn_gate: None,
            },
        }
    }
}

impl ThreadPoolBuilder {
    /// The most threads the pool runs at once. Threads start on demand and
    /// exit after [`keep_alive`](Self::keep_alive) without work.
    ///
    /// Must be at least 1 ([`build`](Self::build) fails otherwise).
    pub fn threads(mut self, n: usize) -> Self {
        self.config.max_threads = n;
        self
    }

    /// Threads started when the pool is built and kept even when idle
    /// (default 0: every thread starts on demand and idles out). At most
    /// [`threads`](Self::threads).
    pub fn min_threads(mut self, n: usize) -> Self {
        self.config.min_threads = n;
        self
    }

    /// How long a thread that ran out of work looks for the next job
    /// before it sleeps (default 50 µs; at most 10 ms).
    ///
    /// A caller that awaits jobs one at a time submits the next one a
    /// microsecond after its result; a thread still looking takes it at
    /// once, without a futex wake-up (several microseconds, and a context
    /// switch on both sides). The price is CPU: while it looks, the thread
    /// holds a core. Where the pool's threads and whatever feeds them
    /// outnumber the cores (a NATS worker's loop, its server and its pool
    /// on two cores), that core is the one the feeder needs: set
    /// `Duration::ZERO` there, and a thread sleeps as soon as the queue is
    /// empty. A caller with nothing else in flight whose job goes to a
    /// spinning thread waits for that thread to take it (about 1 µs at most; see
    /// [`ThreadPool`]'s "Blocking"); with no spinning there is no such wait.
    pub fn spin(mut self, spin: Duration) -> Self {
        self.config.spin = spin;
        self
    }

    /// How many jobs may wait for a thread. When the queue is full,
    /// [`ThreadPool::run`] waits for room and [`ThreadPool::try_run`]
    /// fails, handing the closure back. Must be at least 1.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.config.queue_capacity = n;
        self
    }

    /// Thread name prefix: threads are called `{name}-{n}`. Keep it short:
    /// Linux shows only the first 15 bytes of a thread name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// How long an idle thread waits for work before it exits (`None`:
    /// threads never exit until the pool shuts down). Any length works:
    /// `Duration::MAX` is as good as `None`.
    pub fn keep_alive(mut self, keep_alive: impl Into<Option<Duration>>) -> Self {
        self.config.keep_alive = keep_alive.into();
        self
    }

    /// Stack size of each worker thread, in bytes.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.config.stack_size = Some(bytes);
        self
    }

    /// How the pool's threads compete for a core with the loop's threads
    /// (default [`Priority::Background`]: a busy pool yields a contended
    /// core to the loop at once, still uses idle cores fully, and keeps the
    /// share of nice +10 when other CPU load would starve it). See
    /// [`Priority`] for the measured choices, what happens where the OS
    /// refuses, and off Linux.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.config.priority = priority;
        self
    }

    /// Runs `hook` on each new worker thread before it takes its first job
    /// (to set thread-locals, priorities, or a tracing span).
    ///
    /// A panic in the hook is caught and logged; the thread still serves jobs.
    pub fn on_start(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.config.on_start = Some(Arc::new(move || {
            hook();
            Ok(())
        }));
        self
    }

    /// Checks the settings and creates the pool, starting
    /// [`min_threads`](Self::min_threads) threads (none by default: threads
    /// start when jobs arrive).
    ///
    /// Does not block: starting a thread takes tens of microseconds, and
    /// the `on_start` hook runs on the new thread, not here.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] if `threads` or `queue_capacity` is 0,
    /// `min_threads` exceeds `threads`, `keep_alive` is zero, the name
    /// contains a NUL byte, or a [`Priority::Nice`] level is outside
    /// -20..=19. [`BuildError::Spawn`] if none of the
    /// `min_threads` threads could be started (if some could, the pool
    /// goes on with those and logs a warning).
    pub fn build(mut self) -> Result<ThreadPool, BuildError> {
        self.config.validate()?;
        self.config.sched = self.config.priority.resolve();
        let min = self.config.min_threads;
        let pool = ThreadPool::from_config(self.config);
        pool.prestart(min).map_err(BuildError::Spawn)?;
        Ok(pool)
    }

    /// A builder for a dedicated executor's pool: one thread that never
    /// idles out, whose `init` runs first on it.
    pub(crate) fn dedicated(
        name: String,
        queue_capacity: usize,
        stack_size: Option<usize>,
        init: StartHook,
        on_exit: ExitHook,
    ) -> Self {
        let mut b = ThreadPool::builder()
            .name(name)
            .threads(1)
            .queue_capacity(queue_capacity)
            .keep_alive(None)
            .priority(Priority::Normal);
        b.config.stack_size = stack_size;
        b.config.on_start = Some(init);
        b.config.on_exit = Some(on_exit);
        b
    }

    /// Test seam: see [`SpawnGate`].
    #[cfg(test)]
    pub(crate) fn spawn_gate(mut self, gate: SpawnGate) -> Self {
        self.config.spawn_gate = Some(gate);
        self
    }
}

impl Config {
    /// The one place where every pool setting is checked, so that every
    /// builder built on it (thread pools, dedicated executors, the process
    /// pool's driver pool) rejects bad settings alike.
    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        let c = self;
        if c.max_threads == 0 {
            return Err(BuildError::Invalid("threads must be at least 1"));
        }
        if c.min_threads > c.max_threads {
            return Err(BuildError::Invalid("min_threads must not exceed threads"));
        }
        if c.queue_capacity == 0 {
            return Err(BuildError::Invalid("queue_capacity must be at least 1"));
        }
        if c.name.contains('\0') {
            return Err(BuildError::Invalid("name must not contain NUL bytes"));
        }
        c.priority.validate()?;
        if c.spin > MAX_SPIN {
            return Err(BuildError::Invalid("spin must be at most 10 ms"));
        }
        if c.keep_alive == Some(Duration::ZERO) {
            return Err(BuildError::Invalid(
                "keep_alive must be positive (or None for threads that never exit)",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("max_threads", &self.max_threads)
            .field("min_threads", &self.min_threads)
            .field("queue_capacity", &self.queue_capacity)
            .field("keep_alive", &self.keep_alive)
            .field("stack_size", &self.stack_size)
            .field("spin", &self.spin)
            .field("priority", &self.priority)
            .field("on_start", &self.on_start.is_some())
            .finish()
    }
}

impl fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.config.fmt(f)
    }
}
