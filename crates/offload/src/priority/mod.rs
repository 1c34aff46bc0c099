//! [`Priority`]: offloaded work loses the contest for a core against the
//! event loop, and still runs at full speed on an idle core.
//!
//! Two ways to lower a thread, measured in `offload-lab bench service` (2
//! cores saturated by a pool parsing 8 MB documents, `/health` probed every
//! 10 ms; idle floor p99 0.5–0.7 ms; figures in the README):
//!
//! - **nice +10** ([`Priority::Background`], the default): the loop's
//!   `/health` p99 at 4.2–5.2 ms for the compute pool and the process pool,
//!   run after run, against 7.5–16 ms at normal priority: the kernel lets
//!   a running pool thread finish its slice before a waking loop thread of
//!   higher weight gets the core. Under foreign CPU load the pool keeps a
//!   proportional share.
//! - **the idle class** (`SCHED_IDLE`, [`Priority::Idle`]): a waking
//!   normal thread preempts at once; the p99 was within 1 ms of the floor
//!   in most runs (0.5–3 ms, once 4.6). But it has no floor: under foreign
//!   CPU load an idle-class pool gets almost nothing (`bench threads`,
//!   `foreign_load`: 590 trivial jobs/s against 7,888 at nice +10). A
//!   default should not fall off a cliff when a neighbour gets busy, so
//!   the idle class is an opt-in.
//!
//! Freshly built thread pools showed occasional p99 spikes (8–38 ms) in
//! both classes; the cause is not confirmed.
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
/// privileges, so [`Background`](Self::Background), [`Idle`](Self::Idle)
/// and [`Normal`](Self::Normal) work unprivileged and in containers. A
/// negative [`Nice`](Self::Nice) needs `CAP_SYS_NICE` (or an `RLIMIT_NICE`
/// that allows it); where the OS refuses, the thread logs one warning and
/// runs at the priority it inherited.
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
/// // Worker processes that never delay the loop, on a machine whose CPUs
/// // the service owns:
/// let procs = offload::proc::ProcessPool::builder().priority(Priority::Idle);
/// // Work that competes as an equal:
/// let io = ThreadPool::builder().name("io").priority(Priority::Normal).build()?;
/// # Ok::<(), offload::BuildError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Priority {
    /// Ten nice levels below the thread that built the pool (at most 19):
    /// a weight of about a tenth of the loop's, so the loop's threads win
    /// most of each contended core and the pool keeps a proportional share
    /// against any other CPU load; idle cores run the work at full speed.
    /// The loop may still wait up to a scheduler slice for a core while the
    /// pool is busy (`/health` p99 4.2–5.2 ms in `bench service`, against
    /// 7.5–16 ms at [`Normal`](Self::Normal)).
    #[default]
    Background,
    /// The idle scheduling class (`SCHED_IDLE`) on Linux, plus ten nice
    /// levels below the builder's thread (the only part that applies off
    /// Linux): any waking normal thread takes the core at once.
    ///
    /// For a machine (or container) whose CPUs the service owns: in
    /// `bench service` the loop's p99 was within 1 ms of its idle floor in
    /// most runs, against 4–5 ms at [`Background`](Self::Background). The
    /// price: idle-class work yields to *every* normal thread on its CPUs,
    /// not only the loop's (with two normal-priority threads spinning on 2
    /// cores, an idle-class pool ran 590 trivial jobs/s against 7,888 at
    /// `Background`). Programs in other containers (other CPU cgroups) do
    /// not count: the scheduler shares between groups first.
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
        Some(match self {
            Priority::Background => Sched {
                nice: (base + BACKGROUND_STEP).min(NICE_MAX),
                idle: false,
            },
            Priority::Idle => Sched {
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
        assert!(!background.idle);
        let idle = Priority::Idle.resolve().unwrap();
        assert_eq!(idle.nice, (base + 10).min(19));
        assert_eq!(idle.idle, cfg!(target_os = "linux"));
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
