//! [`Priority`]: offloaded work loses every contest for a core against the
//! event loop, and still runs at full speed on an idle core.
//!
//! Why `SCHED_IDLE` on Linux: measured in `offload-lab bench service` (the
//! README has the figures), a pool of CPU-bound threads at nice 10 still
//! held the loop's `/health` p99 at 4–5 ms against an idle floor of 0.5 ms:
//! the kernel lets a running thread finish its slice (a few ms) before a
//! waking thread of higher weight gets the core. A `SCHED_IDLE` thread is
//! preempted at once by any waking normal thread, and on an idle core it
//! runs at full speed (the scheduler is work-conserving): the p99 fell to
//! within 0.2–0.7 ms of the floor with the same `/walk` throughput.
//! `SCHED_BATCH` (no wake-up preemption by the batch thread) and a 100 µs
//! EEVDF slice (`sched_setattr`) changed nothing measurable.
//!
//! The price, documented on [`Priority::Background`]: an idle-class thread
//! gets a tiny share of a core that *any* normal thread of the machine
//! wants, not only the loop's. `Nice(n)` keeps a proportional share.

use crate::error::BuildError;

/// How hard a pool's threads (or worker processes) compete for a core with
/// the rest of the program, above all with the event loop's threads.
///
/// A priority is set by each pool thread on itself before its first job
/// (scheduling is per thread on Linux), or by each worker process on
/// itself before it runs the registry's `init` (its threads, and any
/// subprocess a task starts, inherit it). Lowering a priority never needs
/// privileges, so [`Background`](Self::Background) and
/// [`Normal`](Self::Normal) work unprivileged and in containers. A
/// negative [`Nice`](Self::Nice) needs `CAP_SYS_NICE` (or an `RLIMIT_NICE`
/// that allows it); where the OS refuses, the thread logs one warning and
/// runs at the priority it inherited.
///
/// On other Unix systems scheduling is per process: thread pools ignore the
/// setting (renicing the process would slow the loop too) and worker
/// processes apply the nice level. Elsewhere it is ignored.
///
/// Defaults: [`ThreadPool`](crate::ThreadPool),
/// [`compute`](crate::compute)'s pool and the process pool run at
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
/// // CPU work that must never delay the loop (the default):
/// let cpu = ThreadPool::builder().name("cpu").threads(2).priority(Priority::Background).build()?;
/// // Work that competes as an equal:
/// let io = ThreadPool::builder().name("io").priority(Priority::Normal).build()?;
/// # Ok::<(), offload::BuildError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Priority {
    /// The idle scheduling class (`SCHED_IDLE`) on Linux, plus ten nice
    /// levels below the thread that built the pool (at most 19; the only
    /// part that applies off Linux): any waking thread of the loop takes
    /// the core at once, and idle cores still run the work at full speed.
    ///
    /// The idle class yields to every normal thread that shares its CPUs,
    /// not only the loop's: other CPU-bound threads of the program (rayon,
    /// `spawn_blocking`, a pool at [`Normal`](Self::Normal)) and other
    /// programs in the same CPU group. Measured (`offload-lab bench
    /// threads`, `foreign_load`): with two normal-priority threads spinning
    /// on 2 cores, a background pool ran 516–590 trivial jobs/s (p99
    /// 16 ms, worst 227 ms) where `Nice(10)` ran 7–8k/s (p99 4 ms). Where
    /// background work must keep a share against such load, use
    /// [`Nice`](Self::Nice)`(10)`: the loop then waits up to a scheduler
    /// slice (a few ms) for a core when the pool is busy. Programs in
    /// other containers (other CPU cgroups) do not count: the scheduler
    /// shares between groups first.
    #[default]
    Background,
    /// The nice level of the thread that built the pool: competes with the
    /// loop as an equal.
    Normal,
    /// This nice level, from -20 (highest priority) to 19 (lowest).
    Nice(i8),
}

/// How many nice levels [`Priority::Background`] adds (what holds off
/// Linux, or where the idle class is refused): a weight of about a tenth of
/// the loop's.
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
        Some(match self {
            Priority::Background => Sched {
                nice: (base + BACKGROUND_STEP).min(NICE_MAX),
                idle: cfg!(target_os = "linux"),
            },
            Priority::Normal => Sched {
                nice: base,
                idle: false,
            },
            Priority::Nice(n) => Sched {
                nice: i32::from(n),
                idle: false,
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
    /// Whether to enter the idle scheduling class (Linux).
    pub(crate) idle: bool,
}

impl Sched {
    /// Sets the calling thread's nice level, on Linux where nice is per
    /// thread; does nothing elsewhere. Logs (once per call) if the OS
    /// refuses.
    pub(crate) fn apply_to_current_thread(self, pool: &str) {
        if cfg!(target_os = "linux") {
            self.apply(pool);
        }
    }

    /// Sets the nice level of the calling thread on Linux, of the whole
    /// process on other Unix systems (for a worker process, before it
    /// starts the threads that run tasks).
    pub(crate) fn apply_to_current_process(self, pool: &str) {
        self.apply(pool);
    }

    fn apply(self, pool: &str) {
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
        if self.idle {
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
        let background = Priority::Background.resolve().unwrap();
        assert_eq!(background.nice, (base + 10).min(19));
        assert_eq!(background.idle, cfg!(target_os = "linux"));
        assert_eq!(
            Priority::Normal.resolve(),
            Some(Sched {
                nice: base,
                idle: false
            })
        );
        assert_eq!(Priority::Nice(3).resolve().map(|s| s.nice), Some(3));
    }
}
