//! Dropping a pool never waits; waiting is explicit (`shutdown().await`,
//! `shutdown_blocking()`); handles clone; a pool dropped or shut down from
//! inside its own job still works.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use offload::ThreadPool;

async fn smoke() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    assert_eq!(pool.clone().run(|| 1).await.unwrap(), 1);
    drop(pool);
}

async fn dropping_one_clone_keeps_the_pool_open() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    let other = pool.clone();
    drop(pool);
    assert!(!other.is_shutdown());
    assert_eq!(other.run(|| 2).await.unwrap(), 2);
    let last = other.clone();
    drop(other);
    assert!(!last.is_shutdown());
}

async fn the_last_drop_closes_without_waiting_and_results_still_arrive() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    let (gate, blocker) = common::occupy(&pool);
    let queued = pool.try_run(|| "queued ran").unwrap();
    let spy = pool.clone();
    drop(spy);
    drop(pool);
    // Returned although the running job is blocked on the gate.
    assert!(!blocker.is_finished());
    gate.open();
    blocker.await.unwrap();
    assert_eq!(queued.await.unwrap(), "queued ran");
}

async fn a_pool_dropped_inside_its_own_job_finishes_its_work() {
    let pool = ThreadPool::builder().threads(2).build().unwrap();
    let inner = pool.clone();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let first = pool
        .try_run(move || {
            // The job holds the pool's last handle and drops it.
            drop(inner);
            c.fetch_add(1, SeqCst);
            "dropped myself"
        })
        .unwrap();
    let c = count.clone();
    let second = pool.try_run(move || c.fetch_add(1, SeqCst)).unwrap();
    drop(pool);
    assert_eq!(first.await.unwrap(), "dropped myself");
    second.await.unwrap();
    assert_eq!(count.load(SeqCst), 2);
}

async fn shutdown_blocking_inside_its_own_job_returns() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    let inner = pool.clone();
    let r = pool
        .run(move || {
            inner.shutdown_blocking();
            inner.is_shutdown()
        })
        .await
        .unwrap();
    assert!(r, "closed, without waiting for itself");
    pool.shutdown().await;
}

on_every_runtime!(
    smoke,
    dropping_one_clone_keeps_the_pool_open,
    the_last_drop_closes_without_waiting_and_results_still_arrive,
    a_pool_dropped_inside_its_own_job_finishes_its_work,
    shutdown_blocking_inside_its_own_job_returns,
);

/// `shutdown_blocking` (sync code, tests): after it returns every queued
/// job ran and every thread has exited.
#[test]
fn shutdown_blocking_drains_and_waits_for_threads() {
    let pool = ThreadPool::builder()
        .threads(2)
        .min_threads(2)
        .build()
        .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let c = count.clone();
            pool.try_run(move || {
                std::thread::sleep(Duration::from_millis(2));
                c.fetch_add(1, SeqCst);
            })
            .unwrap()
        })
        .collect();
    pool.shutdown_blocking();
    assert_eq!(count.load(SeqCst), 10);
    let m = pool.metrics();
    assert_eq!((m.threads, m.running, m.queued), (0, 0, 0), "{m:?}");
    for h in handles {
        assert!(h.is_finished());
    }
}
