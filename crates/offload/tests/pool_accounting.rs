//! Every accepted job is counted exactly once when it ends: completed,
//! panicked or cancelled (by its caller, `shutdown_now`, a deadline, or a
//! draining close). Once the pool is idle,
//! `submitted == completed + panicked + cancelled`.

mod common;

use std::time::Duration;

use offload::{PoolMetrics, ThreadPool};

fn balanced(m: &PoolMetrics) -> bool {
    m.submitted == m.completed + m.panicked + m.cancelled
}

async fn smoke() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    pool.run(|| ()).await.unwrap();
    pool.shutdown().await;
    assert!(balanced(&pool.metrics()));
}

async fn every_end_is_counted_once() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    pool.run(|| ()).await.unwrap();
    let _ = pool.run(|| -> () { panic!("counted") }).await;
    let (gate, blocker) = common::occupy(&pool);
    // Cancelled by its caller while queued.
    drop(pool.try_run(|| ()).unwrap());
    // Queued during a draining close, then cancelled by its caller.
    let drained_away = pool.try_run(|| ()).unwrap();
    let kept = pool.try_run(|| ()).unwrap();
    let mut shutdown = pool.shutdown();
    drop(drained_away);
    assert!(common::poll_once(&mut shutdown).is_pending());
    gate.open();
    shutdown.await;
    blocker.await.unwrap();
    kept.await.unwrap();
    let m = pool.metrics();
    assert_eq!(
        (m.submitted, m.completed, m.panicked, m.cancelled),
        (6, 3, 1, 2),
        "{m:?}"
    );
    assert!(balanced(&m), "{m:?}");
}

async fn cancelled_by_shutdown_now_and_deadline_are_counted() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    let (gate, blocker) = common::occupy(&pool);
    let a = pool.try_run(|| ()).unwrap();
    let report = pool.shutdown_timeout(Duration::from_millis(20)).await;
    assert_eq!(report.cancelled, 1);
    assert!(a.await.unwrap_err().is_cancelled());
    gate.open();
    blocker.await.unwrap();
    pool.shutdown().await;
    let m = pool.metrics();
    assert_eq!((m.submitted, m.completed, m.cancelled), (2, 1, 1), "{m:?}");
    assert!(balanced(&m), "{m:?}");
}

/// A caller that reads the metrics right after its result sees its own
/// job counted; the latency histograms are recorded after the caller is
/// woken (off the result's path), so they catch up by the time the pool is
/// idle.
async fn a_result_is_counted_before_its_caller_wakes() {
    let pool = ThreadPool::builder().threads(2).build().unwrap();
    for i in 1..=200u64 {
        pool.run(|| ()).await.unwrap();
        let m = pool.metrics();
        assert_eq!((m.submitted, m.completed), (i, i), "{m:?}");
    }
    let _ = pool.run(|| -> () { panic!("counted") }).await;
    assert_eq!(pool.metrics().panicked, 1);
    pool.shutdown().await;
    let m = pool.metrics();
    assert_eq!(m.run_time.count, 201, "{m:?}");
    assert_eq!(m.queue_wait.count, 201, "{m:?}");
}

on_every_runtime!(
    smoke,
    a_result_is_counted_before_its_caller_wakes,
    every_end_is_counted_once,
    cancelled_by_shutdown_now_and_deadline_are_counted,
);
