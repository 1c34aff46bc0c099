//! The OS calls behind [`Priority`](super::Priority): nice levels through
//! `rustix`, and the idle scheduling class through `libc`, because no
//! safe wrapper in our tree offers `sched_setscheduler`.
//!
//! Besides `monitor/stall/capture.rs`, this is the only file of the crate
//! with `unsafe` code: the system calls below.
#![allow(unsafe_code)]

/// The calling thread's nice level (Linux), the process's elsewhere.
#[cfg(unix)]
pub(super) fn current_nice() -> Option<i32> {
    rustix::process::getpriority_process(None).ok()
}

/// `setpriority(PRIO_PROCESS, 0, n)`: on Linux the calling thread only.
#[cfg(unix)]
pub(super) fn set_current_nice(n: i32) -> std::io::Result<()> {
    rustix::process::setpriority_process(None, n).map_err(Into::into)
}

/// Puts the calling thread in the idle scheduling class (`SCHED_IDLE`).
#[cfg(target_os = "linux")]
pub(super) fn enter_idle_class() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` reads one `sched_param` through the
    // pointer during the call and keeps nothing; `param` is initialised
    // and lives on this stack frame until the call returns. Pid 0 is the
    // calling thread; SCHED_IDLE requires priority 0, which it has.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Takes the calling thread out of the idle scheduling class, if it is in
/// it (a thread inherits its creator's class: a pool thread started from a
/// background job is born idle). Unprivileged, the kernel allows it only
/// where `RLIMIT_NICE` allows the thread's nice level.
#[cfg(target_os = "linux")]
pub(super) fn leave_idle_class() -> std::io::Result<()> {
    // SAFETY: `sched_getscheduler` takes a pid by value and touches no
    // memory of ours.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy != libc::SCHED_IDLE {
        return Ok(());
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as in `enter_idle_class`; SCHED_OTHER requires priority 0.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A thread of this process, by its kernel id (`gettid`).
#[cfg(target_os = "linux")]
pub(super) type Tid = i32;

/// The calling thread's kernel id.
#[cfg(target_os = "linux")]
pub(super) fn current_tid() -> Tid {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// Moves thread `tid` of this process into (`idle`) or out of the idle
/// scheduling class; its nice level is kept either way. The guard calls
/// this on pool threads that are registered with it (so alive).
#[cfg(target_os = "linux")]
pub(super) fn set_idle_class_of(tid: Tid, idle: bool) -> std::io::Result<()> {
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as in `enter_idle_class`: the pointer is read during the call
    // only; both policies require priority 0. `tid` names a thread by
    // value; a thread that has just exited gives ESRCH, nothing else.
    let rc = unsafe { libc::sched_setscheduler(tid, policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Off Linux there is no idle class to leave.
#[cfg(not(target_os = "linux"))]
pub(super) fn leave_idle_class() -> std::io::Result<()> {
    Ok(())
}

/// Off Linux there is no idle class to enter; `resolve` never asks for it.
#[cfg(not(target_os = "linux"))]
pub(super) fn enter_idle_class() -> std::io::Result<()> {
    Ok(())
}

#[cfg(not(unix))]
pub(super) fn current_nice() -> Option<i32> {
    None
}

#[cfg(not(unix))]
pub(super) fn set_current_nice(_: i32) -> std::io::Result<()> {
    Ok(())
}
