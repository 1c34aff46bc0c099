//! A worker's memory bounds, applied by the worker to itself.
//!
//! - Hard: `RLIMIT_DATA`, set before the registry's `init`. It bounds the
//!   private writable memory the process maps (heap, anonymous `mmap`,
//!   thread stacks), which is what a leak or a runaway allocation grows.
//!   `RLIMIT_AS` was rejected: it also counts address space that is only
//!   reserved (glibc reserves 64 MiB per malloc arena, allocators and
//!   runtimes reserve far more than they use), so a cap low enough to
//!   matter breaks healthy workers. A cgroup's `memory.max` is exact but
//!   needs a delegated, writable cgroup, which services and containers
//!   rarely have; `RLIMIT_DATA` works for any user, in any container,
//!   on Linux 4.7 and later.
//! - Soft: after each call, the resident set from `/proc/self/statm`; above
//!   the limit the worker asks to be retired (the call itself succeeds).
//! - `oom_score_adj`: raised (any process may raise its own) so that the
//!   kernel's OOM killer picks a worker before the parent.

use crate::proc::protocol::Settings;

/// Applies the hard limit and the OOM score. Failures are reported on
/// stderr and otherwise ignored: the worker runs unbounded rather than not
/// at all (the parent documents which limits hold where).
pub(crate) fn apply(name: &str, settings: &Settings) {
    if let Some(limit) = settings.hard_memory {
        let rlimit = rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        };
        if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::Data, rlimit) {
            eprintln!("{name}: cannot set RLIMIT_DATA to {limit} bytes: {e}");
        }
    }
    if let Some(adj) = settings.oom_score_adj {
        // Not every system has it (non-Linux, some sandboxes): best effort.
        let _ = std::fs::write("/proc/self/oom_score_adj", adj.to_string());
    }
}

/// This process's resident set, in bytes (`None` where `/proc` has none).
pub(crate) fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_resident_set_is_read() {
        let rss = super::resident().unwrap();
        assert!(rss > 0);
    }
}
