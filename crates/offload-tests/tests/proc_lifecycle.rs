//! Recycling, idle reaping, two pools at once, backpressure, shutdown, and
//! dropping a pool reaps every worker.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{block, eventually, fixture};
use offload_tests::*;

#[test]
fn smoke() {
    let pool = fixture().workers(1).build().unwrap();
    assert_eq!(block(pool.call::<Sum>(vec![])).unwrap(), 0);
}

#[test]
fn workers_are_recycled_after_max_tasks() {
    let pool = fixture().workers(1).max_tasks_per_child(3).build().unwrap();
    let pids: Vec<u32> = (0..7)
        .map(|_| block(pool.call::<Pid>(())).unwrap())
        .collect();
    let distinct: BTreeSet<_> = pids.iter().collect();
    assert_eq!(distinct.len(), 3, "{pids:?}");
    assert_eq!(pids[0], pids[2]);
    assert_ne!(pids[2], pids[3]);
    assert!(!alive(pids[0]), "the retired worker was reaped");
}

#[test]
fn idle_workers_are_reaped_and_come_back() {
    let pool = fixture()
        .workers(2)
        .idle_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    assert_eq!(block(pool.call::<Sum>(vec![1])).unwrap(), 1);
    assert!(eventually(Duration::from_secs(10), || pool
        .metrics()
        .workers
        == 0));
    assert_eq!(block(pool.call::<Sum>(vec![2])).unwrap(), 2);
}

#[test]
fn idle_workers_are_reaped_down_to_min_workers() {
    let pool = fixture()
        .workers(2)
        .min_workers(1)
        .pipeline_depth(1)
        .idle_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || pool.metrics().workers == 1),
        "min_workers start with the pool: {:?}",
        pool.metrics()
    );
    let busy: Vec<_> = (0..2).map(|_| pool.call::<SleepMs>(100)).collect();
    for r in block(futures::future::join_all(busy)) {
        r.unwrap();
    }
    assert_eq!(pool.worker_pids().len(), 2, "both workers ran");
    assert!(
        eventually(Duration::from_secs(10), || pool.metrics().workers == 1),
        "back down to min_workers: {:?}",
        pool.metrics()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pool.metrics().workers, 1, "the minimum is never reaped");
    assert_eq!(block(pool.call::<Sum>(vec![2])).unwrap(), 2);
}

#[test]
fn two_pools_at_once() {
    let a = fixture().workers(1).build().unwrap();
    let b = fixture().workers(1).name("other").build().unwrap();
    let (pa, pb) = block(async { (a.call::<Pid>(()).await, b.call::<Pid>(()).await) });
    assert_ne!(pa.unwrap(), pb.unwrap());
    assert!(b.worker_pids().keys().all(|k| k.starts_with("other-")));
}

#[test]
fn dropping_the_pool_reaps_every_worker_in_the_background() {
    let pool = fixture().workers(2).build().unwrap();
    assert!(eventually(Duration::from_secs(10), || pool
        .worker_pids()
        .len()
        == 2));
    let pids: Vec<u32> = pool.worker_pids().values().copied().collect();
    assert!(pids.iter().all(|&p| alive(p)));
    drop(pool);
    // The drop did not wait; the reaper collects both within its grace.
    for p in pids {
        assert!(
            eventually(Duration::from_secs(5), || reaped(p)),
            "worker {p} left behind or a zombie"
        );
    }
}

#[test]
fn shutdown_resolves_once_every_worker_is_reaped() {
    let pool = fixture().workers(2).build().unwrap();
    assert!(eventually(Duration::from_secs(10), || pool
        .worker_pids()
        .len()
        == 2));
    let pids: Vec<u32> = pool.worker_pids().values().copied().collect();
    block(pool.shutdown());
    assert_eq!(pool.metrics().workers, 0);
    for p in pids {
        assert!(reaped(p), "worker {p} not reaped when shutdown resolved");
    }
}

#[test]
fn try_call_on_a_full_queue_hands_the_input_back() {
    // Depth 1: at the default 2, a second driver may take the queued call
    // into the worker's socket at once and leave room in the queue.
    let pool = fixture()
        .workers(1)
        .pipeline_depth(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let busy = pool.call::<SleepMs>(500);
    assert!(eventually(Duration::from_secs(10), || pool
        .metrics()
        .calls
        .running
        == 1));
    let queued = pool.try_call::<Sum>(vec![1]).unwrap();
    let err = pool.try_call::<Sum>(vec![4, 5, 6]).unwrap_err();
    assert!(err.is_full());
    assert_eq!(err.into_inner(), vec![4, 5, 6]);
    assert!(block(busy).is_ok());
    assert_eq!(block(queued).unwrap(), 1);
}

#[test]
fn shutdown_now_cancels_queued_calls_and_running_ones_finish() {
    // Depth 1: with the default 2, a second driver may already have sent
    // one of the "queued" calls into the worker's socket, where it counts
    // as running (and finishes) rather than queued, depending on timing.
    let pool = fixture().workers(1).pipeline_depth(1).build().unwrap();
    let running = pool.call::<SleepMs>(300);
    assert!(eventually(Duration::from_secs(10), || pool
        .metrics()
        .calls
        .running
        == 1));
    let queued: Vec<_> = (0..3).map(|_| pool.call::<Sum>(vec![1])).collect();
    assert_eq!(pool.shutdown_now(), 3);
    for q in queued {
        assert!(block(q).unwrap_err().is_cancelled());
    }
    assert!(block(running).is_ok());
    assert!(block(pool.call::<Sum>(vec![1])).unwrap_err().is_shutdown());
}

#[test]
fn shutdown_now_with_pipelining_cancels_what_is_queued_and_finishes_what_was_sent() {
    let pool = fixture().workers(1).build().unwrap();
    let running = pool.call::<SleepMs>(300);
    assert!(eventually(Duration::from_secs(10), || pool
        .metrics()
        .calls
        .running
        >= 1));
    let queued: Vec<_> = (0..3).map(|_| pool.call::<Sum>(vec![1])).collect();
    let cancelled = pool.shutdown_now();
    // A second driver may have sent one into the worker's socket already.
    assert!(matches!(cancelled, 2 | 3), "{cancelled}");
    let mut seen_cancelled = 0;
    for q in queued {
        match block(q) {
            Ok(sum) => assert_eq!(sum, 1),
            Err(e) => {
                assert!(e.is_cancelled(), "{e}");
                seen_cancelled += 1;
            }
        }
    }
    assert_eq!(
        seen_cancelled, cancelled,
        "each call either ran or was cancelled"
    );
    assert!(block(running).is_ok());
}

#[test]
fn shutdown_drains() {
    let pool = fixture().workers(2).build().unwrap();
    let calls: Vec<_> = (0..10).map(|i| pool.call::<Sum>(vec![i])).collect();
    let mut shutdown = pool.shutdown();
    let results = block(futures::future::join_all(calls));
    block(&mut shutdown);
    assert!(results.into_iter().all(|r| r.is_ok()));
}

#[test]
fn ready_resolves_once_every_worker_said_hello() {
    let pool = fixture().workers(2).build().unwrap();
    block(pool.ready()).unwrap();
    assert_eq!(pool.worker_pids().len(), 2);
    assert_eq!(pool.metrics().started, 2);
    // Ready stays ready.
    block(pool.ready()).unwrap();
}

#[test]
fn ready_fails_when_workers_cannot_start() {
    let pool = common::rogue("die-at-start").build().unwrap();
    let err = block(pool.ready()).unwrap_err();
    assert!(err.is_worker_start(), "{err}");
    let pool = common::rogue("garbage-hello").build().unwrap();
    assert!(block(pool.ready()).unwrap_err().is_protocol());
}

#[test]
fn an_elastic_pool_is_ready_with_its_minimum() {
    let pool = fixture()
        .workers(2)
        .min_workers(0)
        .idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    block(pool.ready()).unwrap();
    assert_eq!(pool.metrics().started, 0);
}
