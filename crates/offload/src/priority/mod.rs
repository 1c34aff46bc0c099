//! [`Priority`]: offloaded work loses the contest for a core against the
//! event loop, and still runs at full speed on an idle core.
//!
//! Three ways to lower a thread, measured in `offload-lab bench service` (2
//! cores saturated by a pool parsing 8 MB documents, `/health` probed every
//! 10 ms; figures in the README):
//!
//! - **nice +10**: the loop's `/health` p99 at 4.2–5.2 ms over a floor of
//!   0.5–0.7 ms, against 7.5–16 ms at normal priority: the kernel lets a
//!   running pool thread finish its slice before a waking loop thread of
//!   higher weight gets the core. Under foreign CPU load the pool keeps a
//!   proportional share.
//! - **the idle class** (`SCHED_IDLE`, [`Priority::Idle`]): a waking normal
//!   thread preempts at once; the p99 is within 1 ms of the floor in most
//!   runs. But it has no floor: under foreign CPU load an idle-class pool
//!   gets almost nothing (`bench threads`, `foreign_load`: 785 trivial
//!   jobs/s against 14,223 at nice +10).
//! - **the idle class under a starvation guard** ([`Priority::Background`],
//!   the default where the OS lets a thread leave the idle class): the
//!   idle class's tail, and a thread that the idle class starves competes
//!   at nice +10 until the load goes away (`guard.rs` says how it is
//!   judged). Where the OS will not let a thread leave the idle class
//!   (unprivileged: no `CAP_SYS_NICE`, `RLIMIT_NICE` 0), `Background` is
//!   nice +10 alone.
//!
//! `SCHED_BATCH` and a 100 µs EEVDF slice (`sched_setattr`) changed nothing
//! measurable against nice 10; nice 19 no more than nice 10.

use crate::error::BuildError;

/// How hard a pool's threads (or worker processes) compete for a core with
/// the rest of the program, above all with the event loop's threads.
///
/// A priority is set by each pool thread on itself before its first job
/// (scheduling is per thread on Linux), or by each worker process on
/// itself before it runs the registry's `init` (its threads, and any
/// subprocess a task starts, inherit it). Lowering a priority never needs
/// privileges, so every variant but a negative [`Nice`](Self::Nice) works
/// unprivileged and in containers; a negative nice level needs
/// `CAP_SYS_NICE` (or an `RLIMIT_NICE` that allows it). Where the OS
/// refuses, the thread logs one warning and runs at the priority it
/// inherited.
///
/// On other Unix systems scheduling is per process: thread pools ignore the
/// setting (renicing the process would slow the loop too) and worker
/// processes apply the nice level. Elsewhere it is ignored.
///
/// Defaults: [`ThreadPool`](crate::ThreadPool),
/// [`compute`](crate::compute)'s pool and the process pool's workers run at
/// [`Background`](Self::Background); the I/O default pool behind
/// [`run`](crate::run) and [`Dedicated`](crate::Dedicated) run at
/// [`Normal`](Self::Normal) (their threads mostly wait, and a finished read
/// should get its core back at once).
///
/// # Examples
///
/// ```
/// use offload::{Priority, ThreadPool};
///
/// // CPU work that yields the core to the loop (the default):
/// let cpu = ThreadPool::builder().name("cpu").threads(2).priority(Priority::Background).build()?;
/// // Worker processes that always yield, even to a neighbour's work, on a
/// // machine whose CPUs the service owns:
/// let procs = offload::proc::ProcessPool::builder().priority(Priority::Idle);
/// // Work that competes as an equal:
/// let io = ThreadPool::builder().name("io").priority(Priority::Normal).build()?;
/// # Ok::<(), offload::BuildError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Priority {
    /// Yields the core to the loop at once, and never starves: ten nice
    /// levels below the thread that built the pool (at most 19), in the
    /// idle scheduling class (`SCHED_IDLE`, Linux) under a starvation
    /// guard.
    ///
    /// In the idle class any waking normal thread (the loop's) takes the
    /// core at once, and idle cores still run the work at full speed. The
    /// guard, one thread per process, looks every 100 ms at how each
    /// background thread fared: one that wanted a core and got less than a
    /// fifth of it (a neighbour's normal-priority work holds the cores)
    /// leaves the idle class and competes at its nice level, a tenth of a
    /// normal thread's weight, until it runs freely again. In `bench
    /// service` the loop's `/health` p99 stays within 1 ms of its idle
    /// floor; under foreign load the pool keeps the throughput of nice +10
    /// (figures in the README). Threads of a worker process are guarded
    /// too, including threads a task starts; a subprocess a task starts
    /// inherits the idle class and is not guarded.
    ///
    /// Leaving the idle class needs `CAP_SYS_NICE` or an `RLIMIT_NICE` of
    /// at least the thread's nice level (`ulimit -e`), which most
    /// unprivileged programs and default containers lack. The pool tries
    /// once per process; where the OS would not let a thread out,
    /// `Background` is nice +10 alone: the loop wins most of a contended
    /// core but may wait up to a scheduler slice (`/health` p99 4.2–5.2 ms
    /// in `bench service`, against 7.5–16 ms at [`Normal`](Self::Normal)).
    /// Off Linux, nice +10 alone.
    #[default]
    Background,
    /// The idle scheduling class (`SCHED_IDLE`) on Linux for good, plus ten
    /// nice levels below the builder's thread (the only part that applies
    /// off Linux): any waking normal thread takes the core at once, and no
    /// guard takes the work out of the class.
    ///
    /// For a machine (or container) whose CPUs the service owns and whose
    /// offloaded work may wait behind anything: idle-class work yields to
    /// *every* normal thread on its CPUs, not only the loop's (with two
    /// normal-priority threads spinning on 2 cores, an idle-class pool ran
    /// 785 trivial jobs/s against 14,223 at nice +10). Programs in other
    /// containers (other CPU cgroups) do not count: the scheduler shares
    /// between groups first.
    Idle,
    /// The nice level of the thread that built the pool: competes with the
    /// loop as an equal.
    Normal,
    /// This nice level, from -20 (highest priority) to 19 (lowest).
    Nice(i8),
}

/// How many nice levels [`Priority::Background`] and [`Priority::Idle`]
/// add: a weight of about a tenth of the loop's.
const BACKGROUND_STEP: i32 = 10;

/// Linux's nice range.
const NICE_MIN: i32 = -20;
const NICE_MAX: i32 = 19;

impl Priority {
    /// Refuses a nice level outside -20..=19, at build time.
    pub(crate) fn validate(self) -> Result<(), BuildError> {
        match self {
            Priority::Nice(n) if !(NICE_MIN..=NICE_MAX).contains(&i32::from(n)) => Err(
                BuildError::Invalid("priority: a nice level must be within -20..=19"),
            ),
            _ => Ok(()),
        }
    }

    /// What this priority means for a pool built on the calling thread.
    /// `None` where nice levels cannot be read (not Unix).
    pub(crate) fn resolve(self) -> Option<Sched> {
        let base = sys::current_nice()?;
        let lowered = (base + BACKGROUND_STEP).min(NICE_MAX);
        Some(match self {
            Priority::Background => Sched {
                nice: lowered,
                class: if cfg!(target_os = "linux") {
                    Class::Guarded
                } else {
                    Class::Normal
                },
            },
            Priority::Idle => Sched {
                nice: lowered,
                class: if cfg!(target_os = "linux") {
                    Class::Idle
                } else {
                    Class::Normal
                },
            },
            Priority::Normal => Sched {
                nice: base,
                class: Class::Normal,
            },
            Priority::Nice(n) => Sched {
                nice: i32::from(n),
                class: Class::Normal,
            },
        })
    }
}

/// A resolved priority, ready to be applied to a thread or sent to a
/// worker process (in its settings frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Sched {
    /// The nice level.
    pub(crate) nice: i32,
    /// The scheduling class (Linux).
    pub(crate) class: Class,
}

/// A scheduling class, on Linux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Class {
    /// `SCHED_OTHER`: the nice level decides.
    Normal,
    /// `SCHED_IDLE`, for good.
    Idle,
    /// `SCHED_IDLE` under the starvation guard (`guard.rs`), where the
    /// guard can work; the nice level alone where it cannot.
    Guarded,
}

/// Keeps a pool thread under the starvation guard; dropped at the end of
/// the thread.
#[must_use]
pub(crate) struct GuardedThread {
    #[cfg(target_os = "linux")]
    _registration: guard::Registration,
}

impl Sched {
    /// Sets the calling thread's priority, on Linux where scheduling is
    /// per thread; does nothing elsewhere. Logs (once per call) if the OS
    /// refuses. A guarded thread stays under the guard while the returned
    /// value lives.
    pub(crate) fn apply_to_current_thread(self, pool: &str) -> Option<GuardedThread> {
        #[cfg(target_os = "linux")]
        if self.class == Class::Guarded && self.guardable() {
            self.apply(pool, true);
            return guard::register_current_thread().map(|r| GuardedThread { _registration: r });
        }
        if cfg!(target_os = "linux") {
            self.apply(pool, self.class == Class::Idle);
        }
        None
    }

    /// Sets the priority of the calling thread on Linux (a worker
    /// process's main thread, before it starts the threads that run tasks,
    /// which inherit it), of the whole process on other Unix systems. A
    /// guarded worker has every idle-class thread of its process, now and
    /// later, under the guard.
    pub(crate) fn apply_to_current_process(self, pool: &str) {
        #[cfg(target_os = "linux")]
        if self.class == Class::Guarded && self.guardable() {
            self.apply(pool, true);
            guard::adopt_process();
            return;
        }
        self.apply(pool, self.class == Class::Idle);
    }

    /// Whether the guard works here for this nice level; starts it if so
    /// (before the calling thread lowers itself: the guard inherits its
    /// creator's priority).
    #[cfg(target_os = "linux")]
    fn guardable(self) -> bool {
        guard::available(self.nice) && guard::start()
    }

    fn apply(self, pool: &str, idle: bool) {
        if sys::current_nice() != Some(self.nice) {
            if let Err(e) = sys::set_current_nice(self.nice) {
                tracing::warn!(
                    pool,
                    nice = self.nice,
                    error = %e,
                    "offload: the OS refused the pool's nice level; running at the inherited one"
                );
            }
        }
        if idle {
            if let Err(e) = sys::enter_idle_class() {
                tracing::warn!(
                    pool,
                    error = %e,
                    "offload: the OS refused the idle scheduling class; running at nice {}",
                    self.nice
                );
            }
        } else if let Err(e) = sys::leave_idle_class() {
            tracing::warn!(
                pool,
                error = %e,
                "offload: this thread was started from a background thread and the OS \
                 refused to take it out of the idle scheduling class (RLIMIT_NICE); it \
                 runs in the background"
            );
        }
    }
}

#[cfg(target_os = "linux")]
mod guard;
mod readings;
mod sys;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_nice_is_refused() {
        assert!(Priority::Nice(20).validate().is_err());
        assert!(Priority::Nice(-21).validate().is_err());
        assert!(Priority::Nice(19).validate().is_ok());
        assert!(Priority::Nice(-20).validate().is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn background_is_ten_levels_below_the_builder_and_capped() {
        let base = sys::current_nice().unwrap();
        let linux = cfg!(target_os = "linux");
        let background = Priority::Background.resolve().unwrap();
        assert_eq!(background.nice, (base + 10).min(19));
        assert_eq!(background.class == Class::Guarded, linux);
        let idle = Priority::Idle.resolve().unwrap();
        assert_eq!(idle.nice, (base + 10).min(19));
        assert_eq!(idle.class == Class::Idle, linux);
        assert_eq!(
            Priority::Normal.resolve(),
            Some(Sched {
                nice: base,
                class: Class::Normal
            })
        );
        assert_eq!(Priority::Nice(3).resolve().map(|s| s.nice), Some(3));
    }
}
