//! Why a thread is stalled: burning CPU, or sleeping in a syscall.
//!
//! Reads `/proc/self/task/<tid>/stat` (state, utime + stime),
//! `/proc/self/task/<tid>/schedstat` (nanosecond CPU time, where present)
//! and `/proc/self/task/<tid>/syscall` (the syscall it sleeps in, where
//! readable). Everything here is plain file reading: no `unsafe`.

use std::time::{Duration, Instant};

/// What a stalled thread is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StallKind {
    /// The thread runs code: its CPU time grows with the wall clock, or the
    /// kernel reports it running or runnable. A CPU-bound loop.
    CpuBound,
    /// The thread sleeps in the kernel (state `S` or `D`): blocking I/O, a
    /// `std::thread::sleep`, a lock or a blocking channel.
    Blocking,
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
            StallKind::Unknown => "no diagnosis available on this platform",
        }
    }
}

/// The diagnosis of a stalled thread, as read from `/proc`.
#[derive(Debug, Clone, PartialEq)]
pub struct StallCause {
    pub(crate) kind: StallKind,
    pub(crate) state: Option<char>,
    pub(crate) cpu_fraction: Option<f64>,
    pub(crate) syscall: Option<i64>,
}

impl StallCause {
    pub(crate) fn unknown() -> Self {
        StallCause {
            kind: StallKind::Unknown,
            state: None,
            cpu_fraction: None,
            syscall: None,
        }
    }

    /// CPU-bound, blocking, or unknown.
    pub fn kind(&self) -> StallKind {
        self.kind
    }

    /// The kernel's scheduling state letter (`R` running, `S` sleeping,
    /// `D` uninterruptible sleep, ...), when read.
    pub fn thread_state(&self) -> Option<char> {
        self.state
    }

    /// CPU time the thread used over the observed part of the stall,
    /// divided by the wall time of that part (about 1.0 for a busy loop,
    /// about 0.0 for a sleep), when measured.
    pub fn cpu_fraction(&self) -> Option<f64> {
        self.cpu_fraction
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
        self.kind.advice()
    }
}

impl std::fmt::Display for StallCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            StallKind::CpuBound => f.write_str("burning CPU")?,
            StallKind::Blocking => f.write_str("sleeping in the kernel")?,
            StallKind::Unknown => f.write_str("unknown")?,
        }
        if let Some(state) = self.state {
            write!(f, " (state {state}")?;
            if let Some(cpu) = self.cpu_fraction {
                write!(f, ", cpu {:.0}%", cpu * 100.0)?;
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

/// One reading of a thread's CPU time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    at: Instant,
    cpu: Duration,
}

/// Reads the CPU time thread `tid` has used so far.
pub(crate) fn sample(tid: i32) -> Option<CpuSample> {
    let at = Instant::now();
    let cpu = read_schedstat(tid).or_else(|| read_stat(tid).map(|s| s.cpu))?;
    Some(CpuSample { at, cpu })
}

/// Diagnoses thread `tid`, using `since` (a CPU sample taken earlier in the
/// stall) to measure how much CPU it burnt meanwhile.
pub(crate) fn classify(tid: i32, since: Option<CpuSample>) -> StallCause {
    let Some(stat) = read_stat(tid) else {
        return StallCause::unknown();
    };
    let now = sample(tid);
    let cpu_fraction = match (since, now) {
        (Some(a), Some(b)) if b.at > a.at + Duration::from_millis(5) => {
            let wall = (b.at - a.at).as_secs_f64();
            Some((b.cpu.saturating_sub(a.cpu).as_secs_f64() / wall).min(1.0))
        }
        _ => None,
    };
    let syscall = if matches!(stat.state, 'S' | 'D') {
        read_syscall(tid)
    } else {
        None
    };
    // A thread that used most of the wall time is CPU-bound whatever its
    // state at this instant; otherwise the kernel's state decides. A
    // runnable thread with little CPU is CPU-bound but starved by the
    // machine (the report shows the low fraction).
    let kind = match (cpu_fraction, stat.state) {
        (Some(f), _) if f >= 0.5 => StallKind::CpuBound,
        (_, 'S' | 'D') => StallKind::Blocking,
        (_, 'R') => StallKind::CpuBound,
        _ => StallKind::Unknown,
    };
    StallCause {
        kind,
        state: Some(stat.state),
        cpu_fraction,
        syscall,
    }
}

struct Stat {
    state: char,
    cpu: Duration,
}

fn task_path(tid: i32, file: &str) -> String {
    format!("/proc/self/task/{tid}/{file}")
}

/// `/proc/<tid>/stat`: `pid (comm) state ... utime stime ...`; the command
/// may contain spaces and parentheses, so parse after the last `)`.
fn read_stat(tid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(task_path(tid, "stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: [0] state, [11] utime, [12] stime (fields 3, 14, 15).
    let state = fields.first()?.chars().next()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI we target.
    let cpu = Duration::from_millis((utime + stime) * 10);
    Some(Stat { state, cpu })
}

/// `/proc/<tid>/schedstat`: `on_cpu_ns run_queue_wait_ns timeslices`.
fn read_schedstat(tid: i32) -> Option<Duration> {
    let text = std::fs::read_to_string(task_path(tid, "schedstat")).ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// `/proc/<tid>/syscall`: the number first, or `running`, or `-1` when
/// blocked outside a syscall.
fn read_syscall(tid: i32) -> Option<i64> {
    let text = std::fs::read_to_string(task_path(tid, "syscall")).ok()?;
    let nr: i64 = text.split_whitespace().next()?.parse().ok()?;
    (nr >= 0).then_some(nr)
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
