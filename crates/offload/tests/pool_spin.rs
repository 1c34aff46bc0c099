//! `ThreadPoolBuilder::spin`: how long an idle thread looks for the next
//! job before it sleeps. Zero means it sleeps at once (and spends no CPU
//! between jobs); the default looks for 50 µs; more than 10 ms is refused
//! (a spinning thread notices a shutdown only when it stops looking).

#![cfg(target_os = "linux")]

use std::time::Duration;

use offload::{BuildError, ThreadPool};

/// CPU time the calling thread has run, in ns (`/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("schedstat of this thread")
}

/// CPU the pool's only thread spent across `gaps` idle pauses of 1 ms
/// between one-at-a-time jobs (each job reads its own thread's CPU time).
fn cpu_across_idle_gaps(pool: &ThreadPool, gaps: usize) -> u64 {
    let first = futures::executor::block_on(pool.run(thread_cpu_ns)).unwrap();
    let mut last = first;
    for _ in 0..gaps {
        std::thread::sleep(Duration::from_millis(1));
        last = futures::executor::block_on(pool.run(thread_cpu_ns)).unwrap();
    }
    last - first
}

#[test]
fn a_pool_without_spin_sleeps_between_jobs_and_one_with_spin_looks_first() {
    let build = |spin| {
        ThreadPool::builder()
            .threads(1)
            .min_threads(1)
            .spin(spin)
            .build()
            .unwrap()
    };
    let still = build(Duration::ZERO);
    let spinning = build(Duration::from_millis(2));
    // Alternate, so that a busy moment of the machine hits both alike.
    let (mut zero, mut looked) = (0, 0);
    for _ in 0..4 {
        zero += cpu_across_idle_gaps(&still, 50);
        looked += cpu_across_idle_gaps(&spinning, 50);
    }
    // The spinning thread looks for up to 2 ms after each job, longer
    // than each 1 ms gap: it is on the CPU for most of the 200 gaps
    // (~200 ms), while the other only wakes up for each job.
    assert!(
        zero * 3 < looked,
        "without spin: {zero} ns of CPU; with 2 ms of spin: {looked} ns"
    );
    still.shutdown_blocking();
    spinning.shutdown_blocking();
}

#[test]
fn a_pool_without_spin_runs_every_job() {
    let pool = ThreadPool::builder()
        .threads(2)
        .spin(Duration::ZERO)
        .build()
        .unwrap();
    let sum: u64 = futures::executor::block_on(async {
        let runs = (0..1000u64).map(|i| pool.run(move || i));
        futures::future::join_all(runs)
            .await
            .into_iter()
            .map(Result::unwrap)
            .sum()
    });
    assert_eq!(sum, 999 * 1000 / 2);
    pool.shutdown_blocking();
    assert_eq!(pool.metrics().completed, 1000);
}

#[test]
fn spin_longer_than_10_ms_is_refused() {
    let err = ThreadPool::builder()
        .spin(Duration::from_millis(11))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::Invalid(m) if m.contains("spin")),
        "{err}"
    );
    let err = ThreadPool::builder()
        .spin(Duration::MAX)
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::Invalid(_)), "{err}");
    ThreadPool::builder()
        .spin(Duration::from_millis(10))
        .build()
        .unwrap()
        .shutdown_blocking();
}
