//! What the starvation guard (`guard.rs`) reads from `/proc`: each
//! guarded thread's `schedstat` and state, the process's threads, and the
//! machine's CPU times by priority. Parsing only; the judging is the
//! guard's.

use std::time::Instant;

use super::sys::Tid;

/// One reading of a thread's `schedstat`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    pub(super) at: Instant,
    /// Nanoseconds on a core.
    pub(super) run_ns: u64,
    /// Nanoseconds runnable, waiting for a core. The kernel adds a wait
    /// when the wait ends (the thread gets a core), so a thread starved
    /// for a whole tick may show none yet: hence `runnable`.
    pub(super) wait_ns: u64,
    /// Running or waiting for a core at the reading (state `R`).
    pub(super) runnable: bool,
}

/// The ids of this process's threads now (`/proc/self/task`; none if it
/// cannot be read).
pub(super) fn threads_of_this_process() -> impl Iterator<Item = Tid> {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<Tid>().ok())
}

/// The machine's CPU times (all CPUs, clock ticks), from `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CpuTimes {
    /// User and system time of normal-priority work (nice 0 or below),
    /// interrupts included.
    pub(super) normal: u64,
    /// Everything, idle included.
    pub(super) total: u64,
}

pub(super) fn read_cpu_times() -> Option<CpuTimes> {
    parse_cpu_times(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is
    // already in user and nice).
    let [user, nice, system, idle, iowait, irq, softirq, steal] = *fields.get(..8)? else {
        return None;
    };
    Some(CpuTimes {
        normal: user + system + irq + softirq,
        total: user + nice + system + idle + iowait + irq + softirq + steal,
    })
}

/// The share of all CPUs that normal-priority work used between two
/// readings.
pub(super) fn normal_share(prev: CpuTimes, now: CpuTimes) -> Option<f64> {
    let total = now.total.checked_sub(prev.total)?;
    let normal = now.normal.checked_sub(prev.normal)?;
    (total > 0).then(|| normal as f64 / total as f64)
}

/// `/proc/self/task/<tid>/schedstat` (time on a core, time waiting for
/// one, in nanoseconds; slices) and the state in `.../stat`.
pub(super) fn read_schedstat(tid: Tid) -> Option<Sample> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses and may
    // hold anything.
    let state = stat[stat.rfind(')')? + 1..].split_whitespace().next()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some(Sample {
        at: Instant::now(),
        run_ns: fields.next()??,
        wait_ns: fields.next()??,
        runnable: state == "R",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machines_normal_load_comes_from_proc_stat() {
        let a = parse_cpu_times("cpu  100 50 20 800 5 1 2 3 0 0\ncpu0 1 2 3\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                normal: 123,
                total: 981
            }
        );
        let b = CpuTimes {
            normal: a.normal + 50,
            total: a.total + 100,
        };
        assert_eq!(normal_share(a, b), Some(0.5));
        assert_eq!(normal_share(b, a), None, "a clock that went back");
        assert_eq!(normal_share(a, a), None);
        assert_eq!(parse_cpu_times("cpu0 1 2 3"), None);
        assert_eq!(parse_cpu_times("cpu  1 2 x 4 5 6 7 8"), None);
    }
}
