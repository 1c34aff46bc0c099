//! Cancellation: dropping the future of queued work means it never runs and
//! frees its slot at once; dropping it after the start detaches the job,
//! which runs to the end and keeps its thread until then.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use common::Gate;
use offload::ThreadPool;

async fn smoke() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    let h = pool.try_run(|| 5).unwrap();
    assert_eq!(h.await.unwrap(), 5);
}

async fn dropped_queued_job_never_runs() {
    let pool = ThreadPool::builder()
        .threads(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let (gate, blocker) = common::occupy(&pool);

    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let queued = pool.try_run(move || r.store(true, SeqCst)).unwrap();
    assert_eq!(pool.metrics().queued, 1);
    drop(queued);
    // The slot is free at once, not when a worker gets round to it.
    assert_eq!(pool.metrics().queued, 0);
    assert_eq!(pool.metrics().cancelled, 1);
    let again = pool
        .try_run(|| 3)
        .expect("the cancelled job's slot is free");

    gate.open();
    blocker.await.unwrap();
    assert_eq!(again.await.unwrap(), 3);
    pool.shutdown().await;
    assert!(!ran.load(SeqCst), "a cancelled job must never run");
}

async fn dropped_run_future_while_waiting_for_a_slot_never_runs() {
    let (pool, gate, blocker, filler) = common::full_pool();

    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let mut waiting = pool.run(move || r.store(true, SeqCst));
    assert!(
        common::poll_once(&mut waiting).is_pending(),
        "queue is full: run waits"
    );
    drop(waiting);

    gate.open();
    blocker.await.unwrap();
    assert_eq!(filler.await.unwrap(), 1);
    pool.shutdown().await;
    assert!(!ran.load(SeqCst));
}

async fn dropped_running_job_is_detached_and_keeps_its_thread() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    let gate = Gate::new();
    let finished = Arc::new(AtomicBool::new(false));
    let (g, f) = (gate.clone(), finished.clone());
    let handle = pool
        .try_run(move || {
            g.wait();
            f.store(true, SeqCst);
        })
        .unwrap();
    assert!(common::eventually(Duration::from_secs(10), || pool
        .metrics()
        .running
        == 1));
    drop(handle);
    // Still running, still counted: the bound stays true.
    assert_eq!(pool.metrics().running, 1);
    gate.open();
    pool.shutdown().await;
    assert!(finished.load(SeqCst), "a detached job runs to the end");
    assert_eq!(pool.metrics().completed, 1);
}

/// An executor that drops a job fails its caller with a cancelled error
/// instead of leaving it waiting forever.
async fn job_dropped_by_executor_fails_its_caller() {
    struct Blackhole;
    impl offload::Executor for Blackhole {
        fn execute(&self, job: offload::Job) {
            drop(job);
        }
    }
    let err = offload::run_in_executor(&Blackhole, || 1)
        .await
        .unwrap_err();
    assert!(err.is_cancelled(), "{err}");
}

on_every_runtime!(
    smoke,
    dropped_queued_job_never_runs,
    dropped_run_future_while_waiting_for_a_slot_never_runs,
    dropped_running_job_is_detached_and_keeps_its_thread,
    job_dropped_by_executor_fails_its_caller,
);
