//! Waits for the machine to go quiet between modes, so that work a mode
//! leaves behind (a parse still running on an abandoned thread, worker
//! processes exiting) does not fall into the next mode's window.

use std::time::{Duration, Instant};

/// Busy share of all CPUs under which the machine counts as quiet.
const QUIET: f64 = 0.10;
/// The window over which the busy share is read.
const WINDOW: Duration = Duration::from_millis(100);
/// The longest wait; a machine busy with something else is reported, not
/// waited for.
const LIMIT: Duration = Duration::from_secs(5);

/// `(busy, total)` jiffies of all CPUs, from the first line of `/proc/stat`
/// (`None` off Linux).
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle, total))
}

/// Waits until the CPUs were at most [`QUIET`] busy over one [`WINDOW`],
/// or [`LIMIT`]; returns how long it waited and whether it got quiet.
pub(super) fn settle() -> (Duration, bool) {
    let start = Instant::now();
    let Some(mut last) = cpu_jiffies() else {
        return (Duration::ZERO, true);
    };
    while start.elapsed() < LIMIT {
        std::thread::sleep(WINDOW);
        let Some(now) = cpu_jiffies() else {
            break;
        };
        let (busy, total) = (now.0 - last.0, now.1 - last.1);
        last = now;
        if total > 0 && (busy as f64) <= QUIET * total as f64 {
            return (start.elapsed(), true);
        }
    }
    (start.elapsed(), false)
}
