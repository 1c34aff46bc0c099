//! Issue 10 #3: every user-given duration saturates: `Duration::MAX` means
//! "never", it does not panic on `Instant` overflow.

mod common;

use std::time::Duration;

use offload::{Dedicated, ThreadPool};

async fn smoke() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    let report = pool.shutdown_timeout(Duration::from_secs(5)).await;
    assert!(report.is_complete());
}

async fn shutdown_timeout_max_is_a_plain_drain() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    let (gate, blocker) = common::occupy(&pool);
    let queued = pool.try_run(|| 3).unwrap();
    let mut shutdown = pool.shutdown_timeout(Duration::MAX);
    assert!(common::poll_once(&mut shutdown).is_pending());
    gate.open();
    let report = shutdown.await;
    assert!(report.is_complete(), "{report:?}");
    blocker.await.unwrap();
    assert_eq!(queued.await.unwrap(), 3);
}

async fn keep_alive_max_is_never() {
    let pool = ThreadPool::builder()
        .threads(1)
        .keep_alive(Duration::MAX)
        .build()
        .unwrap();
    assert_eq!(pool.run(|| 1).await.unwrap(), 1);
    assert_eq!(pool.run(|| 2).await.unwrap(), 2);
    assert_eq!(pool.metrics().threads, 1);
    let report = pool.shutdown_timeout(Duration::MAX).await;
    assert!(report.is_complete());
}

async fn dedicated_shutdown_timeout_max() {
    let d = Dedicated::builder().build(|| 1u8).unwrap();
    assert_eq!(d.run(|n: &mut u8| *n).await.unwrap(), 1);
    assert!(d.shutdown_timeout(Duration::MAX).await.is_complete());
}

on_every_runtime!(
    smoke,
    shutdown_timeout_max_is_a_plain_drain,
    keep_alive_max_is_never,
    dedicated_shutdown_timeout_max,
);
