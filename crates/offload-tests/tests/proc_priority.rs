//! Worker processes run in the background by default: each sets nice +10
//! and the idle scheduling class (guarded where the OS allows leaving it;
//! for good with `Priority::Idle`) on itself before `init`, so the threads
//! that run calls (and any subprocess a task starts) inherit it.
#![cfg(target_os = "linux")]

mod common;

use common::{block, fixture};
use offload::Priority;
use offload_test_support::{SCHED_IDLE, background_policy, thread_nice};
use offload_tests::*;

fn base() -> i32 {
    thread_nice().expect("/proc/thread-self/stat is readable")
}

#[test]
fn workers_run_in_the_background_by_default() {
    let pool = fixture().workers(2).build().unwrap();
    for _ in 0..4 {
        // On a machine busy with other normal-priority work the guard may
        // have the worker out of the idle class for a while: wait for it
        // (bounded), then look at once.
        let back = block(pool.call::<SpinUntilPolicy>((background_policy(), 30_000, false)));
        assert!(back.unwrap().is_some());
        let (nice, policy, child) = block(pool.call::<Niceness>(())).unwrap();
        assert_eq!(nice, Some((base() + 10).min(19)));
        // The idle class under the starvation guard where the guard can
        // work; nice +10 alone where it cannot. A task's subprocess
        // inherits the class (and is not guarded: it is not the worker).
        assert_eq!(policy, Some(background_policy()));
        assert_eq!(child, Some(background_policy()));
    }
}

#[test]
fn idle_workers_and_their_subprocesses_are_in_the_idle_class() {
    let pool = fixture()
        .workers(1)
        .priority(Priority::Idle)
        .build()
        .unwrap();
    let (nice, policy, child) = block(pool.call::<Niceness>(())).unwrap();
    assert_eq!(nice, Some((base() + 10).min(19)));
    assert_eq!(policy, Some(SCHED_IDLE));
    assert_eq!(child, Some(SCHED_IDLE), "a task's subprocess inherits it");
}

#[test]
fn normal_and_absolute_levels_reach_the_worker() {
    let normal = fixture()
        .workers(1)
        .priority(Priority::Normal)
        .build()
        .unwrap();
    assert_eq!(
        block(normal.call::<Niceness>(())).unwrap(),
        (Some(base()), Some(0), Some(0))
    );
    let lowest = fixture()
        .workers(1)
        .priority(Priority::Nice(19))
        .build()
        .unwrap();
    assert_eq!(block(lowest.call::<Niceness>(())).unwrap().0, Some(19));
}

#[test]
fn a_replacement_worker_gets_the_same_priority() {
    let pool = fixture()
        .workers(1)
        .priority(Priority::Nice(13))
        .build()
        .unwrap();
    let first = block(pool.call::<Pid>(())).unwrap();
    assert!(block(pool.call::<Die>(Death::Exit(3))).is_err());
    let second = block(pool.call::<Pid>(())).unwrap();
    assert_ne!(first, second, "the worker was replaced");
    assert_eq!(block(pool.call::<Niceness>(())).unwrap().0, Some(13));
}

#[test]
fn an_out_of_range_level_is_refused_at_build() {
    let err = fixture().priority(Priority::Nice(25)).build().unwrap_err();
    assert!(err.to_string().contains("nice"), "{err}");
}
