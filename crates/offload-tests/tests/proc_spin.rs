//! `ProcessPoolBuilder::spin`: how long the carriers and each worker look
//! for the next frame before they block. Zero means a worker blocks at
//! once between calls (spending no CPU there) and every promise of a call
//! holds as with the default; more than 10 ms is refused.

mod common;

use std::time::Duration;

use common::{block, fixture};
use offload::BuildError;
use offload_tests::*;

/// CPU time (ns) every thread of process `pid` has run.
fn process_cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the worker's threads")
        .filter_map(|t| {
            let path = t.ok()?.path().join("schedstat");
            std::fs::read_to_string(path)
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// CPU the worker process spent across `gaps` idle pauses of 1 ms between
/// one-at-a-time calls.
fn worker_cpu_across_idle_gaps(pool: &offload::proc::ProcessPool, gaps: usize) -> u64 {
    let pid = block(pool.call::<Pid>(())).unwrap();
    let before = process_cpu_ns(pid);
    for _ in 0..gaps {
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(block(pool.call::<Pid>(())).unwrap(), pid);
    }
    process_cpu_ns(pid) - before
}

#[test]
fn a_worker_without_spin_blocks_between_calls_and_one_with_spin_looks_first() {
    let build = |spin| fixture().workers(1).spin(spin).build().unwrap();
    let still = build(Duration::ZERO);
    let looking = build(Duration::from_millis(2));
    let (mut zero, mut looked) = (0, 0);
    for _ in 0..4 {
        zero += worker_cpu_across_idle_gaps(&still, 50);
        looked += worker_cpu_across_idle_gaps(&looking, 50);
    }
    // The looking worker spends most of each 1 ms gap looking (200 gaps:
    // ~200 ms); the other wakes only for each call.
    assert!(
        zero * 3 < looked,
        "without spin: {zero} ns of worker CPU; with 2 ms of spin: {looked} ns"
    );
}

#[test]
fn a_pool_without_spin_keeps_every_promise_of_a_call() {
    let pool = fixture().workers(2).spin(Duration::ZERO).build().unwrap();
    let sums: Vec<u64> = block(futures::future::join_all(
        (0..200u64).map(|i| pool.call::<Sum>(vec![i, 1])),
    ))
    .into_iter()
    .map(Result::unwrap)
    .collect();
    assert_eq!(sums, (0..200u64).map(|i| i + 1).collect::<Vec<_>>());
    // A timeout still kills a runaway call, and the pool goes on.
    let e = block(pool.call_with::<SleepMs>(
        60_000,
        offload::proc::CallOptions::new().timeout(Duration::from_millis(200)),
    ))
    .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(block(pool.call::<Sum>(vec![2, 3])).unwrap(), 5);
}

#[test]
fn spin_longer_than_10_ms_is_refused() {
    for spin in [Duration::from_millis(11), Duration::MAX] {
        let err = fixture().spin(spin).build().unwrap_err();
        assert!(
            matches!(err, BuildError::Invalid(m) if m.contains("spin")),
            "{err}"
        );
    }
}
