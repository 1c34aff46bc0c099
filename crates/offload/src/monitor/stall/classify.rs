//! Why a thread has not returned to its scheduler: it used the time
//! (CPU-bound), slept in the kernel (a blocking syscall), or was runnable
//! but not running (starved: the OS scheduler or a CPU quota kept it off
//! the CPU). The evidence is the scheduler's own accounting over the
//! stalled interval (`sched.rs`), not a fixed CPU-share cut-off.

use super::sched::{self, SchedSample, Throttling};
use std::time::Duration;

/// What a stalled thread is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StallKind {
    /// The thread used the time itself, running code: a CPU-bound loop.
    /// Reported even on a busy machine once the thread's own time (on a
    /// CPU, or asleep in the kernel) reaches the threshold.
    CpuBound,
    /// The thread sleeps in the kernel (state `S` or `D`): blocking I/O, a
    /// `std::thread::sleep`, a lock or a blocking channel.
    Blocking,
    /// The thread was runnable but not running for most of the interval:
    /// the machine (or the container's CPU quota) had no CPU for it. Its
    /// own time stayed under the threshold, so the task it was polling is
    /// not the cause: the loop was delayed by the machine.
    Starved,
    /// Not a stall: the thread is inside tokio's `block_in_place`, which
    /// hands its worker's queue to another thread while it blocks. Only
    /// reported with `StallDetectorBuilder::report_block_in_place`.
    BlockingInPlace,
    /// Not known: no `/proc` (non-Linux) or it could not be read.
    Unknown,
}

impl StallKind {
    /// The fix that fits this kind of stall.
    pub fn advice(self) -> &'static str {
        match self {
            StallKind::CpuBound => {
                "CPU-bound work on the event loop: move it to a thread pool \
                 (offload::run, spawn_blocking, rayon) or yield regularly \
                 (offload::coop::Budget with a time slice)"
            }
            StallKind::Blocking => {
                "a blocking call on the event loop: move it to a thread pool \
                 (offload::run, spawn_blocking) or use its async equivalent"
            }
            StallKind::Starved => {
                "not a defect of the task shown: the loop thread was ready to run but \
                 got no CPU. Give the service more CPU, run fewer busy threads than \
                 cores (runtime workers plus pools), or run background pools at a \
                 lower priority"
            }
            StallKind::BlockingInPlace => {
                "informational: block_in_place keeps the runtime going by handing this \
                 worker's queue to another thread; spawn_blocking or offload::run do \
                 without the hand-off"
            }
            StallKind::Unknown => "no diagnosis available on this platform",
        }
    }

    /// Whether this kind blames the code the thread runs (CPU-bound,
    /// blocking, or unknown), as opposed to the machine (starved) or
    /// nothing at all (blocking in place).
    pub fn is_code_stall(self) -> bool {
        matches!(
            self,
            StallKind::CpuBound | StallKind::Blocking | StallKind::Unknown
        )
    }
}

const THROTTLED_ADVICE: &str = "not a defect of the task shown: the container's CPU quota \
     ran out. Raise the quota (cpu.max, cpu.cfs_quota_us), or size the runtime's workers \
     and the pools to the quota rather than to the host's cores";

/// The diagnosis of a stalled thread, from the scheduler's accounting.
#[derive(Debug, Clone, PartialEq)]
pub struct StallCause {
    pub(crate) kind: StallKind,
    pub(crate) state: Option<char>,
    pub(crate) syscall: Option<i64>,
    /// The part of the stall the figures below cover.
    pub(crate) measured: Option<Duration>,
    pub(crate) on_cpu: Option<Duration>,
    pub(crate) run_queue_wait: Option<Duration>,
    /// The cgroup's throttling over the measured part, when any.
    pub(crate) throttled: Option<Throttling>,
}

impl StallCause {
    pub(crate) fn unknown() -> Self {
        StallCause {
            kind: StallKind::Unknown,
            state: None,
            syscall: None,
            measured: None,
            on_cpu: None,
            run_queue_wait: None,
            throttled: None,
        }
    }

    pub(crate) fn in_place() -> Self {
        StallCause {
            kind: StallKind::BlockingInPlace,
            ..StallCause::unknown()
        }
    }

    /// CPU-bound, blocking, starved, blocking in place, or unknown.
    pub fn kind(&self) -> StallKind {
        self.kind
    }

    /// The kernel's scheduling state letter (`R` running or runnable, `S`
    /// sleeping, `D` uninterruptible sleep, ...), when read.
    pub fn thread_state(&self) -> Option<char> {
        self.state
    }

    /// Time on a CPU divided by the wall time of the measured part of the
    /// stall (about 1.0 for a busy loop alone on its core, about 0.0 for a
    /// sleep, in between for a thread that shares a core), when measured.
    pub fn cpu_fraction(&self) -> Option<f64> {
        let (cpu, wall) = (self.on_cpu?, self.measured?);
        (!wall.is_zero()).then(|| (cpu.as_secs_f64() / wall.as_secs_f64()).min(1.0))
    }

    /// The part of the stall the figures cover: from the watchdog's first
    /// reading, taken a quarter of the threshold into the stall, to the
    /// report.
    pub fn measured(&self) -> Option<Duration> {
        self.measured
    }

    /// Time the thread ran on a CPU during [`measured`](Self::measured).
    pub fn on_cpu(&self) -> Option<Duration> {
        self.on_cpu
    }

    /// Time the thread was runnable but waiting on a run queue for a CPU
    /// during [`measured`](Self::measured) (Linux `schedstat`).
    pub fn run_queue_wait(&self) -> Option<Duration> {
        self.run_queue_wait
    }

    /// How long the container's CPU quota throttled the process's cgroup
    /// during [`measured`](Self::measured) (its `cpu.stat`, capped at the
    /// measured time), when it did.
    pub fn throttled(&self) -> Option<Duration> {
        let t = self.throttled?;
        let time = self.measured.map_or(t.time, |m| t.time.min(m));
        (t.periods > 0).then_some(time)
    }

    /// In how many quota periods the cgroup was throttled during
    /// [`measured`](Self::measured), when it was.
    pub fn throttled_periods(&self) -> Option<u64> {
        self.throttled.map(|t| t.periods).filter(|&p| p > 0)
    }

    /// The number of the syscall the thread sleeps in, when the kernel
    /// tells (`/proc/self/task/<tid>/syscall`).
    pub fn syscall(&self) -> Option<i64> {
        self.syscall
    }

    /// The name of that syscall, for the common blocking ones (x86_64 only).
    pub fn syscall_name(&self) -> Option<&'static str> {
        self.syscall.and_then(syscall_name)
    }

    /// The fix that fits.
    pub fn advice(&self) -> &'static str {
        if self.kind == StallKind::Starved && self.throttled().is_some() {
            THROTTLED_ADVICE
        } else {
            self.kind.advice()
        }
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

impl std::fmt::Display for StallCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            StallKind::Starved => {
                f.write_str("starved: ")?;
                if let Some(t) = self.throttled() {
                    write!(f, "throttled by the container's CPU quota for {} ms", ms(t))?;
                    if let Some(p) = self.throttled_periods() {
                        write!(f, " ({p} periods)")?;
                    }
                    f.write_str("; ")?;
                }
                if let (Some(wait), Some(wall)) = (self.run_queue_wait, self.measured) {
                    write!(
                        f,
                        "runnable but waiting for a CPU for {} of {} ms (run-queue wait)",
                        ms(wait),
                        ms(wall)
                    )?;
                }
                if self.throttled().is_none() {
                    f.write_str(", machine oversubscribed")?;
                }
                return Ok(());
            }
            StallKind::BlockingInPlace => {
                return f.write_str(
                    "blocking in place (tokio::task::block_in_place): the runtime handed \
                     this worker's queue to another thread",
                );
            }
            StallKind::CpuBound => f.write_str("burning CPU")?,
            StallKind::Blocking => f.write_str("sleeping in the kernel")?,
            StallKind::Unknown => f.write_str("unknown")?,
        }
        if let Some(state) = self.state {
            write!(f, " (state {state}")?;
            if let (Some(cpu), Some(wall)) = (self.on_cpu, self.measured) {
                write!(f, ", on CPU {} of {} ms", ms(cpu), ms(wall))?;
                if let Some(wait) = self.run_queue_wait.filter(|w| !w.is_zero()) {
                    write!(f, ", waited {} ms for a CPU", ms(wait))?;
                }
            }
            match (self.syscall, self.syscall_name()) {
                (Some(_), Some(name)) => write!(f, ", syscall {name}")?,
                (Some(nr), None) => write!(f, ", syscall #{nr}")?,
                _ => {}
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// The scheduler's accounting over the measured part of a stall.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) wall: Duration,
    pub(crate) on_cpu: Duration,
    pub(crate) run_queue_wait: Option<Duration>,
    pub(crate) throttled: Option<Throttling>,
}

impl Window {
    /// The accounting between two samples of one thread.
    pub(crate) fn between(a: &SchedSample, b: &SchedSample) -> Option<Window> {
        let wall = b.at.checked_duration_since(a.at)?;
        // Too short to say anything (and the 10 ms `stat` fallback would
        // make it noise).
        if wall < Duration::from_millis(5) {
            return None;
        }
        Some(Window {
            wall,
            on_cpu: b.on_cpu.saturating_sub(a.on_cpu).min(wall),
            run_queue_wait: match (a.run_queue_wait, b.run_queue_wait) {
                (Some(x), Some(y)) => Some(y.saturating_sub(x).min(wall)),
                _ => None,
            },
            throttled: match (a.throttling, b.throttling) {
                (Some(x), Some(y)) => Some(x.since(y)),
                _ => None,
            },
        })
    }
}

/// The verdict for a thread that has gone `age` without progress, in
/// `state`, with `window` measured over part of that time; `None` while
/// the evidence does not decide yet (look again at the next tick).
///
/// With run-queue accounting, the thread's *own* time (on a CPU, or asleep
/// in the kernel) is what a machine with a free CPU would also have seen.
/// Extrapolated from the window to the whole stall, if it reaches the
/// threshold, the code stalled the loop (CPU-bound when it ran more than it
/// slept, else blocking). If it does not and the thread spent at least as
/// long waiting for a CPU as on its own, the machine stalled the loop
/// (starved). In between (a little waiting, own time not yet at the
/// threshold) there is no verdict yet: the own time gets there within a
/// few ticks if the code is at fault. "Reaches" is within the detector's
/// precision, a tick (5 % of the threshold). A task that spins on a core
/// it shares three ways thus reads as CPU-bound once its own time reaches
/// the threshold, about 300 ms in; a healthy worker that got a third of a
/// core for 200 ms reads as starved.
pub(crate) fn verdict(
    window: Option<Window>,
    state: Option<char>,
    age: Duration,
    threshold: Duration,
) -> Option<StallKind> {
    let from_state = match state {
        Some('S' | 'D') => StallKind::Blocking,
        Some('R') => StallKind::CpuBound,
        _ => StallKind::Unknown,
    };
    let Some(w) = window else {
        return Some(from_state);
    };
    let Some(wait) = w.run_queue_wait else {
        // No run-queue accounting: CPU share and state only.
        return Some(if w.on_cpu.as_secs_f64() >= 0.5 * w.wall.as_secs_f64() {
            StallKind::CpuBound
        } else {
            from_state
        });
    };
    let asleep = w.wall.saturating_sub(w.on_cpu + wait);
    let own = w.on_cpu + asleep;
    let own_rate = own.as_secs_f64() / w.wall.as_secs_f64();
    // Within the detector's precision (a tick, a twentieth of the
    // threshold), so a spin that lost a millisecond to a neighbour is not
    // reported a tick late.
    if own_rate * age.as_secs_f64() >= 0.95 * threshold.as_secs_f64() {
        Some(if w.on_cpu >= asleep {
            StallKind::CpuBound
        } else {
            StallKind::Blocking
        })
    } else if wait >= own {
        Some(StallKind::Starved)
    } else {
        None
    }
}

/// What the watchdog measured about a thread in a stall.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stretch<'a> {
    /// The first scheduler reading of the stall.
    pub(crate) since: Option<&'a SchedSample>,
    /// How long the stall has lasted.
    pub(crate) age: Duration,
    /// How long since the thread last got CPU time, as seen tick by tick:
    /// if it is runnable now, it has been waiting that long, a wait the
    /// kernel has not accounted yet (it does when the wait ends).
    pub(crate) not_run_for: Duration,
    /// How long the thread was seen asleep in the kernel (`S`, `D`), tick
    /// by tick. Time neither on a CPU nor accounted as waiting counts as
    /// the thread's own sleep only up to this: the rest is waiting the
    /// kernel has not accounted, or short waits for a lock whose holder
    /// was itself kept off the CPU (the machine's doing, not the code's).
    pub(crate) slept: Duration,
}

/// Diagnoses thread `tid` over `stretch`; `None` while the evidence does
/// not decide yet (see [`verdict`]). Without `/proc`, the cause is
/// unknown.
pub(crate) fn classify(tid: i32, stretch: Stretch<'_>, threshold: Duration) -> Option<StallCause> {
    let Some(state) = sched::state(tid) else {
        return Some(StallCause::unknown());
    };
    let mut window = match (stretch.since, sched::sample(tid)) {
        (Some(a), Some(b)) => Window::between(a, &b),
        _ => None,
    };
    if let Some(w) = &mut window {
        if let Some(wait) = &mut w.run_queue_wait {
            let mut unaccounted = w.wall.saturating_sub(w.on_cpu + *wait);
            if state == 'R' {
                let current = stretch.not_run_for.min(unaccounted);
                *wait += current;
                unaccounted -= current;
            }
            *wait += unaccounted.saturating_sub(stretch.slept);
        }
    }
    let age = stretch.age;
    let kind = verdict(window, Some(state), age, threshold)?;
    let syscall = if matches!(state, 'S' | 'D') {
        sched::syscall(tid)
    } else {
        None
    };
    Some(StallCause {
        kind,
        state: Some(state),
        syscall,
        measured: window.map(|w| w.wall),
        on_cpu: window.map(|w| w.on_cpu),
        run_queue_wait: window.and_then(|w| w.run_queue_wait),
        throttled: window.and_then(|w| w.throttled).filter(|t| t.periods > 0),
    })
}

/// Names of the syscalls a blocked event loop is usually found in.
#[cfg(target_arch = "x86_64")]
fn syscall_name(nr: i64) -> Option<&'static str> {
    Some(match nr {
        0 => "read",
        1 => "write",
        7 => "poll",
        17 => "pread64",
        18 => "pwrite64",
        19 => "readv",
        20 => "writev",
        23 => "select",
        35 => "nanosleep",
        42 => "connect",
        43 => "accept",
        44 => "sendto",
        45 => "recvfrom",
        46 => "sendmsg",
        47 => "recvmsg",
        61 => "wait4",
        73 => "flock",
        74 => "fsync",
        75 => "fdatasync",
        202 => "futex",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        257 => "openat",
        270 => "pselect6",
        271 => "ppoll",
        281 => "epoll_pwait",
        288 => "accept4",
        426 => "io_uring_enter",
        _ => return None,
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn syscall_name(_nr: i64) -> Option<&'static str> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(100);

    fn w(wall: u64, cpu: u64, wait: u64) -> Option<Window> {
        Some(Window {
            wall: Duration::from_millis(wall),
            on_cpu: Duration::from_millis(cpu),
            run_queue_wait: Some(Duration::from_millis(wait)),
            throttled: None,
        })
    }

    fn age(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn a_spin_alone_on_its_core_is_cpu_bound_at_the_threshold() {
        let v = verdict(w(75, 74, 1), Some('R'), age(100), T);
        assert_eq!(v, Some(StallKind::CpuBound));
    }

    #[test]
    fn a_sleep_is_blocking_whatever_the_machine_does() {
        let v = verdict(w(75, 0, 0), Some('S'), age(100), T);
        assert_eq!(v, Some(StallKind::Blocking));
        // Woken, and waiting a while for a CPU: undecided at the
        // threshold (87 ms of its own), blocking a few ticks later.
        assert_eq!(verdict(w(75, 1, 10), Some('R'), age(100), T), None);
        let v = verdict(w(85, 1, 10), Some('R'), age(110), T);
        assert_eq!(v, Some(StallKind::Blocking));
    }

    #[test]
    fn a_worker_sharing_a_core_three_ways_is_starved() {
        let v = verdict(w(75, 25, 50), Some('R'), age(100), T);
        assert_eq!(v, Some(StallKind::Starved));
        let v = verdict(w(150, 50, 100), Some('R'), age(200), T);
        assert_eq!(v, Some(StallKind::Starved));
    }

    #[test]
    fn a_spin_sharing_a_core_becomes_cpu_bound_once_its_own_time_is_the_threshold() {
        // A third of a core: 100 ms of its own after 300 ms.
        let v = verdict(w(200, 66, 134), Some('R'), age(250), T);
        assert_eq!(v, Some(StallKind::Starved));
        let v = verdict(w(250, 84, 166), Some('R'), age(310), T);
        assert_eq!(v, Some(StallKind::CpuBound));
    }

    #[test]
    fn without_run_queue_accounting_the_cpu_share_and_state_decide() {
        let mut window = w(75, 60, 0).unwrap();
        window.run_queue_wait = None;
        let v = verdict(Some(window), Some('R'), age(100), T);
        assert_eq!(v, Some(StallKind::CpuBound));
        window.on_cpu = Duration::ZERO;
        let v = verdict(Some(window), Some('S'), age(100), T);
        assert_eq!(v, Some(StallKind::Blocking));
        assert_eq!(
            verdict(None, Some('R'), age(100), T),
            Some(StallKind::CpuBound)
        );
        assert_eq!(verdict(None, None, age(100), T), Some(StallKind::Unknown));
    }

    #[test]
    fn starved_reports_say_so_and_do_not_blame_the_task() {
        let cause = StallCause {
            kind: StallKind::Starved,
            state: Some('R'),
            syscall: None,
            measured: Some(Duration::from_millis(80)),
            on_cpu: Some(Duration::from_millis(20)),
            run_queue_wait: Some(Duration::from_millis(60)),
            throttled: None,
        };
        let text = cause.to_string();
        assert!(
            text.contains("starved: runnable but waiting for a CPU for 60 of 80 ms"),
            "{text}"
        );
        assert!(text.contains("oversubscribed"), "{text}");
        assert!(cause.advice().contains("not a defect of the task"));
        let throttled = StallCause {
            throttled: Some(Throttling {
                periods: 4,
                time: Duration::from_millis(500),
            }),
            ..cause
        };
        let text = throttled.to_string();
        assert!(
            text.contains("throttled by the container's CPU quota for 80 ms (4 periods)"),
            "capped at the measured time: {text}"
        );
        assert!(throttled.advice().contains("quota"));
    }
}
