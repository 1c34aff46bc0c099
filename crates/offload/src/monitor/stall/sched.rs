//! What the kernel's scheduler says about a thread: time on a CPU, time
//! waiting for one, its state and syscall, and whether the process's
//! cgroup was throttled by its CPU quota. Plain file reading (Linux
//! `/proc` and `/sys/fs/cgroup`); elsewhere every reading is `None`.
//!
//! - `/proc/self/task/<tid>/schedstat`: `on_cpu_ns run_queue_wait_ns
//!   timeslices` (kernels with `CONFIG_SCHED_INFO`, which distributions
//!   enable). The kernel adds a wait to `run_queue_wait_ns` only when it
//!   ends, when the thread gets a CPU: a thread starved right now shows
//!   none of its current wait, so the watchdog also notes when each thread
//!   last ran (its on-CPU time moved) and counts the time since as waiting
//!   if the thread is runnable (`classify.rs`).
//! - `/proc/self/task/<tid>/stat`: state letter, `utime + stime` (10 ms
//!   ticks: the fallback for CPU time).
//! - `/proc/self/task/<tid>/syscall`: the syscall a sleeping thread is in.
//! - the cgroup's `cpu.stat`: `nr_throttled` with `throttled_usec` (v2) or
//!   `throttled_time` in ns (v1), for the process's cgroup and each of its
//!   ancestors (a quota set on a parent throttles the children through
//!   the parent's counters).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One reading of a thread's scheduling counters.
#[derive(Debug, Clone)]
pub(crate) struct SchedSample {
    pub(crate) at: Instant,
    /// Time spent running on a CPU.
    pub(crate) on_cpu: Duration,
    /// Time spent runnable, waiting on a run queue (`None` without
    /// `schedstat`).
    pub(crate) run_queue_wait: Option<Duration>,
    /// The cgroup's throttling counters (`None` outside a cgroup with a
    /// CPU controller).
    pub(crate) throttling: Option<Throttling>,
}

/// Cumulative CPU-quota throttling of the process's cgroup: the largest
/// of its own and its ancestors' counters (the one whose quota bites).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Throttling {
    /// Periods in which the cgroup ran out of quota.
    pub(crate) periods: u64,
    /// Time its run queues spent throttled (summed over CPUs).
    pub(crate) time: Duration,
}

impl Throttling {
    /// What happened between `self` (earlier) and `later`, per file.
    pub(crate) fn since(self, later: Throttling) -> Throttling {
        Throttling {
            periods: later.periods.saturating_sub(self.periods),
            time: later.time.saturating_sub(self.time),
        }
    }
}

/// Reads thread `tid`'s counters now.
pub(crate) fn sample(tid: i32) -> Option<SchedSample> {
    let at = Instant::now();
    let (on_cpu, run_queue_wait) = match read_schedstat(tid) {
        Some((cpu, wait)) => (cpu, Some(wait)),
        None => (read_stat(tid)?.cpu, None),
    };
    Some(SchedSample {
        at,
        on_cpu,
        run_queue_wait,
        throttling: cgroup_throttling(),
    })
}

/// The time thread `tid` has run on a CPU so far (one small read: called
/// every tick for threads in a long stretch without progress).
pub(crate) fn on_cpu(tid: i32) -> Option<Duration> {
    read_schedstat(tid)
        .map(|(cpu, _)| cpu)
        .or_else(|| read_stat(tid).map(|s| s.cpu))
}

/// The scheduler's state letter for thread `tid` (`R`, `S`, `D`, ...).
pub(crate) fn state(tid: i32) -> Option<char> {
    read_stat(tid).map(|s| s.state)
}

/// The syscall thread `tid` is blocked in, when the kernel tells.
pub(crate) fn syscall(tid: i32) -> Option<i64> {
    let text = std::fs::read_to_string(task_path(tid, "syscall")).ok()?;
    let nr: i64 = text.split_whitespace().next()?.parse().ok()?;
    (nr >= 0).then_some(nr)
}

struct Stat {
    state: char,
    cpu: Duration,
}

fn task_path(tid: i32, file: &str) -> String {
    format!("/proc/self/task/{tid}/{file}")
}

/// `stat`: `pid (comm) state ... utime stime ...`; the command may contain
/// spaces and parentheses, so parse after the last `)`.
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

/// `schedstat`: on-CPU and run-queue wait, in nanoseconds.
fn read_schedstat(tid: i32) -> Option<(Duration, Duration)> {
    let text = std::fs::read_to_string(task_path(tid, "schedstat")).ok()?;
    let mut fields = text.split_whitespace();
    let cpu: u64 = fields.next()?.parse().ok()?;
    let wait: u64 = fields.next()?.parse().ok()?;
    Some((Duration::from_nanos(cpu), Duration::from_nanos(wait)))
}

/// A `cpu.stat` file and the unit of its throttled time.
struct CpuStatFile {
    path: PathBuf,
    /// `throttled_usec` (v2) or `throttled_time` (v1, nanoseconds).
    key: &'static str,
    nanos_per_unit: u64,
}

/// The `cpu.stat` files that can show this process being throttled,
/// found once.
fn cpu_stat_files() -> &'static [CpuStatFile] {
    static FILES: OnceLock<Vec<CpuStatFile>> = OnceLock::new();
    FILES.get_or_init(|| {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        find_cpu_stat_files(&cgroups, &mounts)
    })
}

/// From `/proc/self/cgroup` and `/proc/self/mountinfo`: the `cpu.stat` of
/// the process's cgroup and of its ancestors up to the mount's root, for
/// the v1 `cpu` controller if mounted, else the v2 hierarchy.
fn find_cpu_stat_files(cgroups: &str, mounts: &str) -> Vec<CpuStatFile> {
    // (hierarchy is v2, cgroup path)
    let v1 = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "cpu")
            .then(|| path.to_owned())
    });
    let v2 = cgroups
        .lines()
        .find_map(|line| line.strip_prefix("0::").map(str::to_owned));
    let (path, key, nanos_per_unit, mount) = match (v1, v2) {
        (Some(path), _) => (path, "throttled_time", 1, find_mount(mounts, Some("cpu"))),
        (None, Some(path)) => (path, "throttled_usec", 1000, find_mount(mounts, None)),
        (None, None) => return Vec::new(),
    };
    let Some((root, mount_point)) = mount else {
        return Vec::new();
    };
    // The cgroup path as seen from the mount: strip the mount's own root
    // (a container sees its cgroup as "/" with the mount rooted there).
    let relative = path.strip_prefix(root.as_str()).unwrap_or(&path);
    let mut dir = PathBuf::from(mount_point);
    let mut files = vec![];
    let mut dirs = vec![dir.clone()];
    for part in relative.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
        dirs.push(dir.clone());
    }
    for dir in dirs.into_iter().rev() {
        let path = dir.join("cpu.stat");
        if path.exists() {
            files.push(CpuStatFile {
                path,
                key,
                nanos_per_unit,
            });
        }
    }
    files
}

/// The (root, mount point) of the cgroup v1 hierarchy with `controller`,
/// or of the v2 hierarchy when `controller` is `None`.
fn find_mount(mounts: &str, controller: Option<&str>) -> Option<(String, String)> {
    mounts.lines().find_map(|line| {
        // id parent major:minor root mount-point options ... - fstype source super-options
        let (left, right) = line.split_once(" - ")?;
        let left: Vec<&str> = left.split_whitespace().collect();
        let right: Vec<&str> = right.split_whitespace().collect();
        let (root, point) = (left.get(3)?, left.get(4)?);
        let fstype = right.first()?;
        let options = right.get(2).copied().unwrap_or("");
        let fits = match controller {
            Some(c) => *fstype == "cgroup" && options.split(',').any(|o| o == c),
            None => *fstype == "cgroup2",
        };
        fits.then(|| ((*root).to_owned(), (*point).to_owned()))
    })
}

/// The throttling counters of the cgroup file whose counters are largest
/// (the level whose quota is the one that bites).
fn cgroup_throttling() -> Option<Throttling> {
    let files = cpu_stat_files();
    if files.is_empty() {
        return None;
    }
    files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(&f.path).ok()?;
            parse_cpu_stat(&text, f.key, f.nanos_per_unit)
        })
        .max_by_key(|t| (t.time, t.periods))
}

fn parse_cpu_stat(text: &str, key: &str, nanos_per_unit: u64) -> Option<Throttling> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse::<u64>().ok())?
        })
    };
    Some(Throttling {
        periods: field("nr_throttled")?,
        time: Duration::from_nanos(field(key)?.saturating_mul(nanos_per_unit)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_in_a_container() {
        let cgroups = "0::/\n";
        let mounts = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        let files = find_cpu_stat_files(cgroups, mounts);
        // Whether the file exists on this machine decides the list; the
        // path shape is what we check when it does.
        for f in &files {
            assert!(f.path.starts_with("/sys/fs/cgroup"), "{:?}", f.path);
            assert_eq!(f.key, "throttled_usec");
        }
    }

    #[test]
    fn cpu_stat_units() {
        let v2 = "usage_usec 10\nnr_periods 5\nnr_throttled 3\nthrottled_usec 2500\n";
        let t = parse_cpu_stat(v2, "throttled_usec", 1000).unwrap();
        assert_eq!(t.periods, 3);
        assert_eq!(t.time, Duration::from_micros(2500));
        let v1 = "nr_periods 5\nnr_throttled 2\nthrottled_time 7000000\n";
        let t = parse_cpu_stat(v1, "throttled_time", 1).unwrap();
        assert_eq!(
            t,
            Throttling {
                periods: 2,
                time: Duration::from_millis(7)
            }
        );
        assert!(parse_cpu_stat("usage_usec 1\n", "throttled_usec", 1000).is_none());
    }

    #[test]
    fn v1_cpu_controller_wins_and_strips_the_mount_root() {
        let cgroups = "4:cpu,cpuacct:/docker/abc\n0::/\n";
        let mounts = "40 31 0:37 /docker /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let (root, point) = find_mount(mounts, Some("cpu")).unwrap();
        assert_eq!(
            (root.as_str(), point.as_str()),
            ("/docker", "/sys/fs/cgroup/cpu,cpuacct")
        );
        // No such directories here, so no files; the lookup must not panic.
        assert!(find_cpu_stat_files(cgroups, mounts).is_empty());
    }

    #[test]
    fn own_thread_has_counters() {
        if let Some(tid) = super::super::capture::current_tid() {
            let s = sample(tid).expect("a sample of this thread");
            assert!(s.at <= Instant::now());
            assert!(state(tid).is_some());
        }
    }
}
