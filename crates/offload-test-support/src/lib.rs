//! Helpers the offload test suites share, so that no test can hang CI and
//! no process a test starts outlives it:
//!
//! - [`eventually`]: poll a condition, with a bound;
//! - [`block_on`]: run a future on a current-thread tokio runtime, failing
//!   the test if it does not finish within a bound;
//! - [`ChildGuard`] and [`wait_bounded`]: a spawned process is killed and
//!   reaped when the test is done with it, pass or fail;
//! - [`alive`], [`sigkill`], [`sigstop`]: processes seen and signalled from
//!   outside, without `unsafe` (the shell's `kill` builtin).

#[cfg(feature = "metrics")]
pub mod metrics;

use std::future::Future;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How long [`block_on`] lets a future run before it fails the test.
pub const HANG: Duration = Duration::from_secs(60);

/// Polls `cond` every 5 ms until it holds or `within` passes; returns
/// whether it held.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `f` to completion on a fresh current-thread tokio runtime.
///
/// # Panics
///
/// If `f` takes longer than [`HANG`]: the test fails instead of hanging.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
        .block_on(async {
            tokio::time::timeout(HANG, f)
                .await
                .unwrap_or_else(|_| panic!("hung: no result within {HANG:?}"))
        })
}

/// Waits for `child` to exit for at most `within`; past that it is killed.
/// Always reaps it. Returns its status if it exited on its own.
pub fn wait_bounded(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// A spawned process that is killed and reaped when the guard drops, so a
/// failing assertion cannot leave it behind.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(Some(_))) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Whether process `pid` is running (a zombie counts as dead).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Whether process `pid` is gone entirely: exited and reaped (a zombie's
/// `/proc` entry stays until it is reaped).
pub fn reaped(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("kill -s {sig} \"$1\""),
            "sh",
            &pid.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// SIGKILLs `pid` from outside.
pub fn sigkill(pid: u32) {
    signal(pid, "KILL");
}

/// SIGSTOPs `pid`: it stays alive but runs nothing (a wedged process).
pub fn sigstop(pid: u32) {
    signal(pid, "STOP");
}

/// The calling thread's scheduling policy from `/proc/thread-self/stat`
/// (0 `SCHED_OTHER`, 3 `SCHED_BATCH`, 5 `SCHED_IDLE`; Linux).
pub fn thread_policy() -> Option<u32> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 41.
    rest.split_whitespace().nth(38)?.parse().ok()
}

/// Whether this process may take a thread at nice +10 out of the idle
/// scheduling class (Linux): asks the kernel, as the library does, by
/// running `nice -n 10 chrt --idle 0 chrt --other 0 true` (util-linux),
/// which fails where leaving the class is refused (no `CAP_SYS_NICE` in
/// the initial user namespace, `RLIMIT_NICE` below 10). Where `chrt`
/// cannot run, reads `CapEff` and `RLIMIT_NICE` from `/proc/self`
/// instead. Where it may not, `Priority::Background` is nice +10 alone.
pub fn may_leave_idle_class() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        let asked = std::process::Command::new("nice")
            .args([
                "-n", "10", "chrt", "--idle", "0", "chrt", "--other", "0", "true",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        match asked {
            Ok(status) => status.success(),
            Err(_) => may_leave_idle_class_by_proc(),
        }
    })
}

fn may_leave_idle_class_by_proc() -> bool {
    const CAP_SYS_NICE: u32 = 23;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let rlimit_nice = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max nice priority"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    caps & (1 << CAP_SYS_NICE) != 0 || rlimit_nice >= 10
}

/// The scheduling policy `Priority::Background` gives a thread here: the
/// idle class where [`may_leave_idle_class`], else `SCHED_OTHER` (0).
pub fn background_policy() -> u32 {
    if may_leave_idle_class() {
        SCHED_IDLE
    } else {
        0
    }
}

/// Keeps the CPU busy on the calling thread, reading its scheduling
/// policy as it goes, until the policy is `policy` (returns how long that
/// took) or `limit` has passed (`None`).
pub fn spin_until_policy(policy: u32, limit: std::time::Duration) -> Option<std::time::Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if thread_policy() == Some(policy) {
            return Some(start.elapsed());
        }
        // A little work between readings, so that the thread wants a core
        // most of the time rather than sits in the kernel.
        let mut x = 0u64;
        for i in 0..20_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
    None
}

/// Threads at the caller's priority that keep every core busy until
/// dropped: a neighbour's CPU work.
#[derive(Debug)]
pub struct Hogs {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hogs {
    /// One spinning thread per core.
    pub fn on_every_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Hogs { stop, threads }
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `SCHED_IDLE`, as [`thread_policy`] reports it.
pub const SCHED_IDLE: u32 = 5;

/// The calling thread's nice level, from `/proc/thread-self/stat`
/// (Linux; `None` elsewhere or if it cannot be read).
pub fn thread_nice() -> Option<i32> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, nice field 19.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(16)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guarded_child_is_reaped_on_drop() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        drop(ChildGuard(child));
        assert!(reaped(pid));
    }

    #[test]
    fn a_late_child_is_killed_and_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(wait_bounded(&mut child, Duration::from_millis(50)).is_none());
        assert!(reaped(pid));
        let mut quick = std::process::Command::new("true").spawn().unwrap();
        assert!(wait_bounded(&mut quick, Duration::from_secs(10)).is_some_and(|s| s.success()));
    }

    #[test]
    fn eventually_is_bounded() {
        assert!(!eventually(Duration::from_millis(20), || false));
        assert!(eventually(Duration::from_millis(20), || true));
        assert!(alive(std::process::id()));
    }
}
