//! Priorities: offloaded CPU work runs below the loop's threads by default,
//! the I/O default pool and dedicated executors compete as equals, and bad
//! settings are refused at build time.
#![cfg(target_os = "linux")]

use offload::{Dedicated, Priority, ThreadPool};
use offload_test_support::{SCHED_IDLE, background_policy, block_on, thread_nice, thread_policy};

fn base() -> i32 {
    thread_nice().expect("/proc/thread-self/stat is readable")
}

fn nice_in(pool: &ThreadPool) -> i32 {
    block_on(pool.run(thread_nice)).unwrap().unwrap()
}

fn policy_in(pool: &ThreadPool) -> u32 {
    block_on(pool.run(thread_policy)).unwrap().unwrap()
}

#[test]
fn a_thread_pool_runs_in_the_background_by_default() {
    let pool = ThreadPool::builder().threads(2).build().unwrap();
    assert_eq!(nice_in(&pool), (base() + 10).min(19));
    // The idle class under the starvation guard where the guard can take a
    // starved thread out of it again; nice +10 alone where it cannot.
    // (Eventually: on a machine busy with other normal-priority work the
    // guard may have them out of the class for a while.)
    let policy = background_policy();
    let seen = block_on(pool.run(move || {
        offload_test_support::spin_until_policy(policy, std::time::Duration::from_secs(30))
    }));
    assert!(seen.unwrap().is_some(), "policy {policy}");
    // The caller's thread is untouched.
    assert_eq!(thread_policy(), Some(0));
    assert_eq!(thread_nice(), Some(base()));
}

#[test]
fn idle_is_the_idle_class_at_nice_plus_ten() {
    let pool = ThreadPool::builder()
        .threads(2)
        .priority(Priority::Idle)
        .build()
        .unwrap();
    assert_eq!(policy_in(&pool), SCHED_IDLE);
    assert_eq!(nice_in(&pool), (base() + 10).min(19));
}

#[test]
fn normal_keeps_the_builders_level_and_nice_is_absolute() {
    let normal = ThreadPool::builder()
        .priority(Priority::Normal)
        .build()
        .unwrap();
    assert_eq!(nice_in(&normal), base());
    assert_eq!(policy_in(&normal), 0);
    let lowest = ThreadPool::builder()
        .priority(Priority::Nice(19))
        .build()
        .unwrap();
    assert_eq!(nice_in(&lowest), 19);
    assert_eq!(
        policy_in(&lowest),
        0,
        "an explicit nice level is a nice level only"
    );
}

#[test]
fn every_thread_of_a_pool_gets_the_priority_not_only_the_first() {
    // Jobs that wait for each other force all four threads to start, some
    // of them from inside other jobs (threads inherit their creator's nice,
    // so a thread started from a background thread must still be set).
    let pool = ThreadPool::builder()
        .threads(4)
        .priority(Priority::Nice(7))
        .build()
        .unwrap();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let jobs: Vec<_> = (0..4)
        .map(|_| {
            let b = barrier.clone();
            pool.run(move || {
                b.wait();
                (
                    std::thread::current().name().unwrap().to_owned(),
                    thread_nice(),
                )
            })
        })
        .collect();
    let seen = block_on(futures::future::join_all(jobs));
    let mut names = std::collections::BTreeSet::new();
    for r in seen {
        let (name, nice) = r.unwrap();
        assert_eq!(nice, Some(7), "thread {name}");
        names.insert(name);
    }
    assert_eq!(names.len(), 4);
}

#[test]
fn out_of_range_nice_levels_are_refused_at_build() {
    for n in [20, -21, i8::MAX, i8::MIN] {
        let err = ThreadPool::builder()
            .priority(Priority::Nice(n))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("nice"), "{n}: {err}");
    }
}

#[test]
fn a_raise_the_os_may_refuse_still_runs_the_job() {
    // Unprivileged, nice -1 is refused: the thread warns and runs at the
    // inherited level. With CAP_SYS_NICE it is granted.
    let pool = ThreadPool::builder()
        .priority(Priority::Nice(-1))
        .build()
        .unwrap();
    let nice = nice_in(&pool);
    assert!(nice == -1 || nice == base(), "nice {nice}");
}

#[test]
fn compute_runs_in_the_background_and_run_does_not() {
    let background = background_policy();
    let (name, nice, policy) = block_on(offload::compute(move || {
        (
            std::thread::current().name().unwrap().to_owned(),
            thread_nice(),
            // (Eventually: see the test above.)
            offload_test_support::spin_until_policy(background, std::time::Duration::from_secs(30)),
        )
    }))
    .unwrap();
    assert!(name.starts_with("offload-cpu-"), "{name}");
    assert_eq!(nice, Some((base() + 10).min(19)));
    assert!(policy.is_some(), "policy {background}");

    let io = block_on(offload::run(|| (thread_nice(), thread_policy()))).unwrap();
    assert_eq!(io, (Some(base()), Some(0)));
}

#[test]
fn the_compute_pool_cannot_be_replaced_once_used() {
    block_on(offload::compute(|| ())).unwrap();
    let err = offload::set_compute_pool(ThreadPool::builder()).unwrap_err();
    assert!(
        matches!(err, offload::BuildError::DefaultPoolExists),
        "{err}"
    );
}

#[test]
fn a_dedicated_executor_competes_as_an_equal() {
    let d = Dedicated::builder()
        .build(|| (thread_nice(), thread_policy()))
        .unwrap();
    let seen = block_on(d.run(|n: &mut (Option<i32>, Option<u32>)| *n)).unwrap();
    assert_eq!(seen, (Some(base()), Some(0)));
}

#[test]
fn a_normal_pool_started_from_an_idle_job_leaves_the_idle_class() {
    // Threads inherit their creator's scheduling class: this pool's thread
    // is started by a job running in the idle class.
    let background = ThreadPool::builder()
        .priority(Priority::Idle)
        .build()
        .unwrap();
    let policy = block_on(background.run(|| {
        let normal = ThreadPool::builder()
            .priority(Priority::Normal)
            .build()
            .unwrap();
        block_on(normal.run(thread_policy)).unwrap()
    }))
    .unwrap();
    // Leaving the idle class needs CAP_SYS_NICE or a permissive
    // RLIMIT_NICE; unprivileged, the thread warns and stays idle.
    let privileged = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if privileged {
        assert_eq!(policy, Some(0));
    } else {
        assert!(matches!(policy, Some(0) | Some(SCHED_IDLE)), "{policy:?}");
    }
}

/// The most `compute` jobs that ran at once, out of 6 that each sleep
/// 50 ms.
fn compute_concurrency() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NOW: AtomicUsize = AtomicUsize::new(0);
    static MAX: AtomicUsize = AtomicUsize::new(0);
    let jobs: Vec<_> = (0..6)
        .map(|_| {
            offload::compute(|| {
                let n = NOW.fetch_add(1, Ordering::SeqCst) + 1;
                MAX.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(50));
                NOW.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    for r in block_on(futures::future::join_all(jobs)) {
        r.unwrap();
    }
    MAX.load(Ordering::SeqCst)
}

/// Runs this test binary again with `OFFLOAD_COMPUTE_THREADS` set to
/// `value`, only the child half below; returns what it printed.
fn child_concurrency(value: &str) -> usize {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "compute_pool_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(offload::COMPUTE_THREADS_ENV, value)
        .env("OFFLOAD_PRIORITY_TEST_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = offload_test_support::wait_bounded(&mut child, std::time::Duration::from_secs(60))
        .expect("the child test finished in time");
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{out}");
    // The harness prints the test's name on the same line.
    out.lines()
        .find_map(|l| l.split_once("concurrency=")?.1.trim().parse().ok())
        .unwrap_or_else(|| panic!("no concurrency line in {out}"))
}

#[test]
fn the_compute_pool_is_sized_by_its_environment_variable() {
    assert_eq!(child_concurrency("3"), 3);
    // Not a positive integer: a warning and the default (one per core).
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(child_concurrency("0"), cores.min(6));
    assert_eq!(child_concurrency("lots"), cores.min(6));
}

/// The child half of the test above (does nothing in a normal run).
#[test]
fn compute_pool_child() {
    if std::env::var_os("OFFLOAD_PRIORITY_TEST_CHILD").is_none() {
        return;
    }
    println!("concurrency={}", compute_concurrency());
}
