//! [`Priority`]: offloaded work loses every contest for a core against the
//! event loop, and still runs at full speed on an idle core.
//!
//! Why a nice level: a nice-10 thread gets about a tenth of a nice-0
//! thread's share of a contended core (scheduler weights 110 against 1024),
//! so a loop thread that wakes up runs almost at once; on an idle core the
//! nice level changes nothing (the scheduler is work-conserving). It works
//! unprivileged, in containers, per thread on Linux, and through a safe
//! call (`rustix`). `SCHED_BATCH` only gives up wake-up preemption, which is
//! not the contest the loop loses; `SCHED_IDLE` (weight 3) starves the work
//! whenever anything else runs, which is more than "background" promises.
//! Figures: `offload-lab bench service` (README).

use crate::error::BuildError;

/// How hard a pool's threads (or worker processes) compete for a core with
/// the rest of the program, above all with the event loop's threads.
///
/// On Linux a priority is a nice level set on each pool thread (nice is
/// per thread there), or on each worker process before it runs the
/// registry's `init`. Raising nice never needs privileges, so
/// [`Background`](Self::Background) and [`Normal`](Self::Normal) work
/// unprivileged and in containers. A negative [`Nice`](Self::Nice) needs
/// `CAP_SYS_NICE` (or an `RLIMIT_NICE` that allows it); where the OS refuses,
/// the thread logs one warning and runs at the nice it inherited.
///
/// On other Unix systems nice is per process: thread pools ignore the
/// setting (renicing the process would slow the loop too) and worker
/// processes apply it. Elsewhere it is ignored.
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
    /// Ten nice levels below the thread that built the pool (at most 19):
    /// the loop's threads win every contended core, idle cores still run
    /// the work at full speed.
    #[default]
    Background,
    /// The nice level of the thread that built the pool: competes with the
    /// loop as an equal.
    Normal,
    /// This nice level, from -20 (highest priority) to 19 (lowest).
    Nice(i8),
}

/// How many nice levels [`Priority::Background`] adds: a weight of about a
/// tenth of the loop's (`offload-lab bench service` compares it with 19).
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

    /// The nice level this priority means for a pool built on the calling
    /// thread. `None` where nice levels cannot be read (not Unix).
    pub(crate) fn resolve(self) -> Option<Nice> {
        let base = os::current_nice()?;
        let level = match self {
            Priority::Background => (base + BACKGROUND_STEP).min(NICE_MAX),
            Priority::Normal => base,
            Priority::Nice(n) => i32::from(n),
        };
        Some(Nice(level))
    }
}

/// A resolved nice level, ready to be applied to a thread or sent to a
/// worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Nice(pub(crate) i32);

impl Nice {
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
        if os::current_nice() == Some(self.0) {
            return;
        }
        if let Err(e) = os::set_current_nice(self.0) {
            tracing::warn!(
                pool,
                nice = self.0,
                error = %e,
                "offload: the OS refused the pool's priority; running at the inherited one"
            );
        }
    }
}

#[cfg(unix)]
mod os {
    /// The calling thread's nice level (Linux), the process's elsewhere.
    pub(super) fn current_nice() -> Option<i32> {
        rustix::process::getpriority_process(None).ok()
    }

    /// `setpriority(PRIO_PROCESS, 0, n)`: on Linux the calling thread only.
    pub(super) fn set_current_nice(n: i32) -> std::io::Result<()> {
        rustix::process::setpriority_process(None, n).map_err(Into::into)
    }
}

#[cfg(not(unix))]
mod os {
    pub(super) fn current_nice() -> Option<i32> {
        None
    }

    pub(super) fn set_current_nice(_: i32) -> std::io::Result<()> {
        Ok(())
    }
}

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
        let base = os::current_nice().unwrap();
        assert_eq!(
            Priority::Background.resolve(),
            Some(Nice((base + 10).min(19)))
        );
        assert_eq!(Priority::Normal.resolve(), Some(Nice(base)));
        assert_eq!(Priority::Nice(3).resolve(), Some(Nice(3)));
    }
}
