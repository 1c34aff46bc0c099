//! Every shutdown mode: drain, cancel queued, deadline with a report, drop
//! starts a drain without waiting; and submitting afterwards is a clear error, never a hang.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use offload::ThreadPool;

async fn smoke() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    pool.shutdown().await;
    assert!(pool.is_shutdown());
}

async fn shutdown_drains_queued_work() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    let (gate, blocker) = common::occupy(&pool);
    let count = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..5)
        .map(|_| {
            let c = count.clone();
            pool.try_run(move || c.fetch_add(1, SeqCst)).unwrap()
        })
        .collect();
    let mut shutdown = pool.shutdown();
    assert!(pool.is_shutdown(), "closed at the call, before any poll");
    assert!(
        common::poll_once(&mut shutdown).is_pending(),
        "work is still queued"
    );
    gate.open();
    shutdown.await;
    assert_eq!(count.load(SeqCst), 5, "drain runs every queued job");
    blocker.await.unwrap();
    for h in handles {
        h.await.unwrap();
    }
}

async fn shutdown_now_cancels_queued_and_lets_running_finish() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    let (gate, blocker) = common::occupy(&pool);
    let handles: Vec<_> = (0..5).map(|i| pool.try_run(move || i).unwrap()).collect();
    assert_eq!(pool.shutdown_now(), 5);
    for h in handles {
        let err = h.await.unwrap_err();
        assert!(err.is_cancelled(), "{err}");
    }
    gate.open();
    blocker.await.expect("the running job finishes normally");
    pool.shutdown().await;
    let m = pool.metrics();
    assert_eq!((m.cancelled, m.completed), (5, 1), "{m:?}");
}

async fn shutdown_timeout_reports_what_did_not_finish() {
    let pool = ThreadPool::builder().name("dl").threads(1).build().unwrap();
    let (gate, blocker) = common::occupy(&pool);
    let queued: Vec<_> = (0..2).map(|i| pool.try_run(move || i).unwrap()).collect();
    let report = pool.shutdown_timeout(Duration::from_millis(100)).await;
    assert!(!report.is_complete());
    assert_eq!(report.cancelled, 2);
    assert_eq!(report.still_running.len(), 1);
    assert!(
        report.still_running[0].thread.starts_with("dl-"),
        "{report:?}"
    );
    assert!(report.still_running[0].running_for >= Duration::from_millis(100));
    for h in queued {
        assert!(h.await.unwrap_err().is_cancelled());
    }
    gate.open();
    blocker
        .await
        .expect("the running job still delivers its result");
}

async fn shutdown_timeout_completes_early_when_work_ends() {
    let pool = ThreadPool::builder().threads(2).build().unwrap();
    let h = pool
        .try_run(|| std::thread::sleep(Duration::from_millis(20)))
        .unwrap();
    let report = pool.shutdown_timeout(Duration::from_secs(30)).await;
    assert!(report.is_complete(), "{report:?}");
    h.await.unwrap();
}

async fn drop_never_waits_and_queued_work_still_runs() {
    let count = Arc::new(AtomicUsize::new(0));
    let pool = ThreadPool::builder().threads(2).build().unwrap();
    let (gate, blocker) = common::occupy(&pool);
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let c = count.clone();
            pool.try_run(move || c.fetch_add(1, SeqCst)).unwrap()
        })
        .collect();
    let watcher = pool.clone();
    drop(pool);
    // The drop returned while a job is still blocked on the gate: it did
    // not wait. (A drop that waited would never return: the gate opens
    // only below.)
    assert!(!blocker.is_finished());
    assert!(!watcher.is_shutdown(), "a clone is still alive");
    drop(watcher);
    gate.open();
    blocker.await.unwrap();
    for h in handles {
        h.await
            .expect("queued work still runs after the last handle went");
    }
    assert_eq!(count.load(SeqCst), 20);
}

async fn submit_after_shutdown_is_an_error() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    pool.shutdown().await;
    let err = pool.run(|| 1).await.unwrap_err();
    assert!(err.is_shutdown(), "{err}");
    let back = pool.try_run(|| 41 + 1).unwrap_err();
    assert!(back.is_shutdown());
    assert_eq!((back.into_inner())(), 42, "try_run hands the closure back");
    let err = offload::run_in_executor(&pool, || 1).await.unwrap_err();
    assert!(err.is_shutdown());
    assert!(pool.metrics().rejected >= 3);
}

async fn waiting_submitters_are_released_by_shutdown() {
    let (pool, gate, blocker, filler) = common::full_pool();
    let mut waiting = pool.run(|| 1);
    assert!(common::poll_once(&mut waiting).is_pending());
    pool.shutdown_now();
    let err = waiting.await.unwrap_err();
    assert!(err.is_shutdown(), "{err}");
    assert!(filler.await.unwrap_err().is_cancelled());
    gate.open();
    blocker.await.unwrap();
}

on_every_runtime!(
    smoke,
    shutdown_drains_queued_work,
    shutdown_now_cancels_queued_and_lets_running_finish,
    shutdown_timeout_reports_what_did_not_finish,
    shutdown_timeout_completes_early_when_work_ends,
    drop_never_waits_and_queued_work_still_runs,
    submit_after_shutdown_is_an_error,
    waiting_submitters_are_released_by_shutdown,
);
