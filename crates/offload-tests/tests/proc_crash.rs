//! A worker that dies fails only its own call, with how it died; other
//! calls go on and the pool gets back to full size.

mod common;

use std::time::Duration;

use common::{block, eventually, fixture, rogue};
use offload_tests::*;

#[test]
fn smoke() {
    let pool = fixture().workers(1).build().unwrap();
    assert_eq!(block(pool.call::<Sum>(vec![1])).unwrap(), 1);
}

#[test]
fn exit_is_reported_with_its_code() {
    let pool = fixture().workers(1).build().unwrap();
    let err = block(pool.call::<Die>(Death::Exit(7))).unwrap_err();
    assert!(err.is_worker_lost(), "{err}");
    assert_eq!(err.exit_code(), Some(7));
    assert_eq!(block(pool.call::<Sum>(vec![5])).unwrap(), 5, "replaced");
}

#[test]
fn abort_and_segfault_are_reported_with_their_signal() {
    let pool = fixture().workers(1).build().unwrap();
    let err = block(pool.call::<Die>(Death::Abort)).unwrap_err();
    assert!(err.is_worker_lost(), "{err}");
    assert_eq!(err.signal(), Some(6));
    let err = block(pool.call::<Die>(Death::Segfault)).unwrap_err();
    assert_eq!(err.signal(), Some(11), "{err}");
    assert_eq!(block(pool.call::<Sum>(vec![1])).unwrap(), 1);
}

#[test]
fn sigkill_from_outside_fails_one_call_and_the_rest_go_on() {
    let pool = fixture().workers(2).build().unwrap();
    assert!(eventually(Duration::from_secs(10), || pool
        .worker_pids()
        .len()
        == 2));
    let victim = *pool.worker_pids().values().next().unwrap();
    let calls: Vec<_> = (0..6).map(|_| pool.call::<SleepMs>(300)).collect();
    std::thread::sleep(Duration::from_millis(100));
    sigkill(victim);
    let results = block(futures::future::join_all(calls));
    let lost: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(
        lost.len(),
        1,
        "exactly the killed worker's call fails: {results:?}"
    );
    assert!(lost[0].is_worker_lost());
    assert_eq!(lost[0].signal(), Some(9));
    assert!(results.iter().flatten().all(|&pid| pid != victim));
    assert!(
        eventually(Duration::from_secs(10), || pool.metrics().workers == 2),
        "back to full size: {:?}",
        pool.metrics()
    );
    assert!(!alive(victim));
    assert_eq!(pool.metrics().lost, 1);
}

#[test]
fn a_worker_that_dies_at_start_up_is_a_clear_error_not_a_fork_bomb() {
    let pool = rogue("die-at-start").build().unwrap();
    for _ in 0..5 {
        let err = block(pool.call::<Sum>(vec![1])).unwrap_err();
        assert!(err.is_worker_start(), "{err}");
        assert!(err.to_string().contains("exit code 3"), "{err}");
    }
    // Three attempts, then a cooldown during which calls fail fast.
    assert_eq!(pool.metrics().started, 0);
}

#[test]
fn a_call_queued_behind_the_victim_in_its_worker_is_sent_again() {
    // Depth 2: while `running` sleeps in the worker, `queued` already sits
    // in the worker's socket. Killing the worker fails only `running`.
    let pool = fixture().workers(1).pipeline_depth(2).build().unwrap();
    let victim = block(pool.call::<Pid>(())).unwrap();
    let running = pool.call::<SleepMs>(2_000);
    assert!(eventually(Duration::from_secs(10), || pool
        .metrics()
        .calls
        .running
        == 1));
    let queued = pool.call::<Pid>(());
    assert!(eventually(Duration::from_secs(10), || pool
        .metrics()
        .calls
        .running
        == 2));
    // Its driver took it from the queue; give it time to write it out.
    std::thread::sleep(Duration::from_millis(50));
    sigkill(victim);
    let err = block(running).unwrap_err();
    assert!(err.is_worker_lost(), "{err}");
    let pid = block(queued).expect("the queued call is sent again, not failed");
    assert_ne!(pid, victim, "it ran on the replacement");
    assert_eq!(pool.metrics().lost, 1);
}

#[test]
fn pipelining_can_be_turned_off() {
    let pool = fixture().workers(1).pipeline_depth(1).build().unwrap();
    assert_eq!(pool.max_in_flight(), 1);
    let calls = (0..20u64).map(|i| pool.call::<Sum>(vec![i]));
    for (i, r) in block(futures::future::join_all(calls))
        .into_iter()
        .enumerate()
    {
        assert_eq!(r.unwrap(), i as u64);
    }
}

/// A call queued behind calls that crash their worker is sent again each
/// time, and that never counts against it: each crash is blamed on the
/// call that was running (and fails it), so the call behind is not at
/// fault. (Before, four crashes in front of a call in a row failed it
/// with "found its worker gone 4 times before it could start".)
#[test]
fn calls_behind_crashing_calls_are_sent_again_without_giving_up() {
    let pool = fixture().workers(1).build().unwrap();
    // Three crashes for each quick call, all queued at once.
    common::quick_calls_behind_failing_ones(
        &pool,
        60,
        || pool.call::<Die>(Death::Exit(3)),
        offload::Error::is_worker_lost,
    );
}
