//! Hard timeouts really stop the work, and dropping a running call kills
//! its worker unless told to let it finish.

mod common;

use std::time::{Duration, Instant};

use common::{block, eventually, fixture};
use offload::proc::{CallOptions, OnDrop};
use offload_tests::*;

#[test]
fn smoke() {
    let pool = fixture()
        .workers(1)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    assert_eq!(block(pool.call::<Sum>(vec![4])).unwrap(), 4);
}

#[test]
fn a_runaway_task_is_killed_at_its_timeout() {
    let pool = fixture().workers(1).build().unwrap();
    let before = block(pool.call::<Pid>(())).unwrap();
    let start = Instant::now();
    let err =
        block(pool.call_with::<Spin>((), CallOptions::new().timeout(Duration::from_millis(200))))
            .unwrap_err();
    let took = start.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(!alive(before), "the spinning worker was killed");
    let after = block(pool.call::<Pid>(())).unwrap();
    assert_ne!(after, before, "a fresh worker took its place");
    assert_eq!(pool.metrics().timeouts, 1);
}

#[test]
fn the_pool_default_timeout_applies() {
    let pool = fixture()
        .workers(1)
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    assert!(block(pool.call::<SleepMs>(5_000)).unwrap_err().is_timeout());
    assert!(block(pool.call::<SleepMs>(1)).is_ok());
}

#[test]
fn dropping_a_running_call_kills_its_worker() {
    let pool = fixture().workers(1).build().unwrap();
    let pid = block(pool.call::<Pid>(())).unwrap();
    // Wait until the task itself runs (it marks a file), not only until
    // its driver took it: a call dropped before it is sent never starts,
    // and then there is nothing to kill.
    let marks = std::env::temp_dir().join(format!("offload-drop-kill-{}", std::process::id()));
    let _ = std::fs::remove_file(&marks);
    let task = (
        marks.to_string_lossy().into_owned(),
        "long".to_owned(),
        60_000,
    );
    let mut call = pool.call::<Record>(task);
    assert!(futures::FutureExt::now_or_never(&mut call).is_none());
    assert!(eventually(Duration::from_secs(10), || recorded(&marks)
        .contains_key("long")));
    let _ = std::fs::remove_file(&marks);
    drop(call);
    assert!(
        eventually(Duration::from_secs(10), || !alive(pid)),
        "killed on drop"
    );
    let next = block(pool.call::<Pid>(())).unwrap();
    assert_ne!(next, pid);
}

#[test]
fn a_detached_call_finishes_in_its_worker() {
    let pool = fixture().workers(1).build().unwrap();
    let pid = block(pool.call::<Pid>(())).unwrap();
    let mut call = pool.call_with::<SleepMs>(300, CallOptions::new().on_drop(OnDrop::Detach));
    assert!(futures::FutureExt::now_or_never(&mut call).is_none());
    assert!(eventually(Duration::from_secs(10), || pool
        .metrics()
        .calls
        .running
        == 1));
    drop(call);
    assert!(alive(pid), "not killed");
    // The next call waits for the detached one, then runs on the same worker.
    assert_eq!(block(pool.call::<Pid>(())).unwrap(), pid);
}

#[test]
fn dropping_a_call_queued_in_the_worker_does_not_kill_the_running_one() {
    // Depth 2: the second call is already in the worker's socket, behind
    // the first. Giving up on it must not kill the worker under the first.
    let pool = fixture().workers(1).pipeline_depth(2).build().unwrap();
    let pid = block(pool.call::<Pid>(())).unwrap();
    let first = pool.call::<SleepMs>(300);
    assert!(eventually(Duration::from_secs(10), || pool
        .metrics()
        .calls
        .running
        == 1));
    let mut second = pool.call::<SleepMs>(1);
    assert!(futures::FutureExt::now_or_never(&mut second).is_none());
    assert!(eventually(Duration::from_secs(10), || pool
        .metrics()
        .calls
        .running
        == 2));
    drop(second);
    assert_eq!(
        block(first).unwrap(),
        pid,
        "the running call finished on its worker"
    );
    assert!(alive(pid));
}

#[test]
fn absurd_timeouts_saturate_instead_of_overflowing() {
    // `Duration::MAX` cannot be added to an instant: it means "no
    // timeout", for a call and for the pool, and the worker stays usable.
    let pool = fixture().workers(1).timeout(Duration::MAX).build().unwrap();
    assert_eq!(block(pool.call::<Sum>(vec![1])).unwrap(), 1);
    let opts = CallOptions::new().timeout(Duration::MAX);
    assert!(block(pool.call_with::<SleepMs>(20, opts)).is_ok());
    assert_eq!(block(pool.call::<Sum>(vec![2])).unwrap(), 2);
    // A zero timeout is a timeout that has passed when the call starts.
    let zero = CallOptions::new().timeout(Duration::ZERO);
    assert!(
        block(pool.call_with::<SleepMs>(1_000, zero))
            .unwrap_err()
            .is_timeout()
    );
    assert_eq!(block(pool.call::<Sum>(vec![3])).unwrap(), 3);
}

/// A call queued behind calls that time out is sent again each time their
/// worker is stopped, and that never counts against it: the budget of
/// re-sends is for workers that die on their own. (The chaos scenario
/// `timeout-race` once failed a call with "found its worker gone 4 times
/// before it could start" on one worker where most calls time out.)
#[test]
fn calls_behind_timed_out_calls_are_sent_again_without_giving_up() {
    let pool = fixture().workers(1).build().unwrap();
    let short = || CallOptions::new().timeout(Duration::from_millis(30));
    // Three runaways for each quick call, all queued at once.
    common::quick_calls_behind_failing_ones(
        &pool,
        120,
        || {
            let call = pool.call_with::<SleepMs>(60_000, short());
            async move { call.await.map(|_| ()) }
        },
        offload::Error::is_timeout,
    );
}
