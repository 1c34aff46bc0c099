//! Backpressure: `run` waits for a queue slot, `try_run` fails at once and
//! hands the closure back, `Executor::execute` on a full pool rejects.
//!
//! A `run` that finds the queue full waits in a line behind it, from which
//! each job taken moves the next one in. The line keeps the order of the
//! calls, never holds a job whose caller gave up, and is refused as a
//! whole when the pool closes.

mod common;

use std::sync::{Arc, Mutex};

use offload::{Executor, ThreadPool};

async fn smoke() {
    let pool = ThreadPool::builder()
        .threads(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    assert_eq!(pool.run(|| 1).await.unwrap(), 1);
}

async fn try_run_on_a_full_queue_returns_the_closure() {
    let pool = ThreadPool::builder()
        .threads(1)
        .queue_capacity(2)
        .build()
        .unwrap();
    let (gate, blocker) = common::occupy(&pool);
    let a = pool.try_run(|| "a").unwrap();
    let b = pool.try_run(|| "b").unwrap();
    let secret = String::from("handed back");
    let err = pool.try_run(move || secret).unwrap_err();
    assert!(err.is_full());
    assert_eq!((err.into_inner())(), "handed back");
    assert_eq!(pool.metrics().rejected, 1);
    gate.open();
    blocker.await.unwrap();
    assert_eq!((a.await.unwrap(), b.await.unwrap()), ("a", "b"));
}

async fn run_waits_for_a_slot_then_proceeds() {
    let (pool, gate, blocker, filler) = common::full_pool();
    let mut waiting = pool.run(|| 2);
    assert!(common::poll_once(&mut waiting).is_pending());
    assert_eq!(
        pool.metrics().queued,
        1,
        "the waiting job is not queued beyond capacity"
    );
    gate.open();
    assert_eq!(waiting.await.unwrap(), 2);
    assert_eq!(filler.await.unwrap(), 1);
    blocker.await.unwrap();
}

async fn execute_on_a_full_pool_rejects() {
    let (pool, gate, blocker, filler) = common::full_pool();
    // A job handed to `execute` directly (no waiting path) is rejected.
    struct Direct<'a>(&'a ThreadPool);
    impl Executor for Direct<'_> {
        fn execute(&self, job: offload::Job) {
            self.0.execute(job)
        }
    }
    let err = offload::run_in_executor(&Direct(&pool), || 5)
        .await
        .unwrap_err();
    assert!(err.is_rejected(), "{err}");
    gate.open();
    blocker.await.unwrap();
    filler.await.unwrap();
}

/// Waiting jobs are queued, and run, in the order of the calls, and count
/// as submitted only once they enter the queue.
async fn waiting_jobs_run_in_the_order_of_the_calls() {
    let pool = ThreadPool::builder()
        .threads(1)
        .queue_capacity(2)
        .build()
        .unwrap();
    let (gate, blocker) = common::occupy(&pool);
    let order = Arc::new(Mutex::new(Vec::new()));
    let runs: Vec<_> = (0..200)
        .map(|i| {
            let order = order.clone();
            pool.run(move || order.lock().unwrap().push(i))
        })
        .collect();
    let m = pool.metrics();
    assert_eq!((m.queued, m.submitted), (2, 3), "{m:?}");
    gate.open();
    blocker.await.unwrap();
    for r in futures::future::join_all(runs).await {
        r.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..200).collect::<Vec<_>>());
    pool.shutdown().await;
    let m = pool.metrics();
    assert_eq!((m.submitted, m.completed, m.queued), (201, 201, 0), "{m:?}");
}

/// Callers that give up while their job waits for room (drop the future,
/// polled or not, in any order) leave nothing behind: their jobs never
/// run and are not counted; the others still run, in order.
async fn a_waiting_job_whose_caller_gave_up_never_runs() {
    let pool = ThreadPool::builder()
        .threads(1)
        .queue_capacity(4)
        .build()
        .unwrap();
    let (gate, blocker) = common::occupy(&pool);
    let ran = Arc::new(Mutex::new(Vec::new()));
    let mut runs: Vec<Option<_>> = (0..1000)
        .map(|i| {
            let ran = ran.clone();
            Some(pool.run(move || ran.lock().unwrap().push(i)))
        })
        .collect();
    // Poll some of them once (a polled and an unpolled wait are dropped
    // alike), then drop every job but each seventh, scattered.
    for r in runs.iter_mut().step_by(3) {
        let _ = common::poll_once(r.as_mut().unwrap());
    }
    let mut kept = Vec::new();
    for (i, r) in runs.iter_mut().enumerate() {
        if i % 7 == 0 {
            kept.push((i, r.take().unwrap()));
        } else {
            drop(r.take());
        }
    }
    gate.open();
    blocker.await.unwrap();
    for (_, r) in &mut kept {
        r.await.unwrap();
    }
    let expected: Vec<usize> = kept.iter().map(|(i, _)| *i).collect();
    assert_eq!(*ran.lock().unwrap(), expected);
    pool.shutdown().await;
    let m = pool.metrics();
    // The blocker and each kept job ran. A job dropped while queued (the
    // first four, and those admitted from the line while still wanted,
    // then dropped) counts as submitted and cancelled; one dropped while
    // waiting for room counts nowhere.
    assert_eq!(m.completed, 1 + expected.len() as u64, "{m:?}");
    assert_eq!(m.submitted, m.completed + m.cancelled, "{m:?}");
    assert!(m.cancelled >= 3 && m.submitted < 1000, "{m:?}");
}

/// Closing the pool refuses the jobs still waiting for room (they were
/// never accepted); the queued ones drain.
async fn closing_refuses_the_waiting_jobs_and_drains_the_queue() {
    let pool = ThreadPool::builder()
        .threads(1)
        .queue_capacity(2)
        .build()
        .unwrap();
    let (gate, blocker) = common::occupy(&pool);
    let queued: Vec<_> = (0..2).map(|i| pool.run(move || i)).collect();
    let waiting: Vec<_> = (0..50).map(|i| pool.run(move || i)).collect();
    let mut shutdown = pool.shutdown();
    assert!(common::poll_once(&mut shutdown).is_pending());
    for w in waiting {
        let err = w.await.unwrap_err();
        assert!(err.is_shutdown(), "{err}");
    }
    gate.open();
    blocker.await.unwrap();
    for (i, q) in queued.into_iter().enumerate() {
        assert_eq!(q.await.unwrap(), i);
    }
    shutdown.await;
    let m = pool.metrics();
    assert_eq!((m.submitted, m.completed, m.rejected), (3, 3, 50), "{m:?}");
}

/// `shutdown_now` cancels the queued jobs and refuses the waiting ones;
/// the running one finishes.
async fn shutdown_now_cancels_the_queue_and_refuses_the_line() {
    let pool = ThreadPool::builder()
        .threads(1)
        .queue_capacity(2)
        .build()
        .unwrap();
    let (gate, blocker) = common::occupy(&pool);
    let queued: Vec<_> = (0..2).map(|i| pool.run(move || i)).collect();
    let waiting: Vec<_> = (0..20).map(|i| pool.run(move || i)).collect();
    assert_eq!(pool.shutdown_now(), 2);
    for q in queued {
        let err = q.await.unwrap_err();
        assert!(err.is_cancelled(), "{err}");
    }
    for w in waiting {
        let err = w.await.unwrap_err();
        assert!(err.is_shutdown(), "{err}");
    }
    gate.open();
    blocker.await.unwrap();
    pool.shutdown().await;
    let m = pool.metrics();
    assert_eq!(
        (m.submitted, m.completed, m.cancelled, m.rejected),
        (3, 1, 2, 20),
        "{m:?}"
    );
}

on_every_runtime!(
    smoke,
    shutdown_now_cancels_the_queue_and_refuses_the_line,
    waiting_jobs_run_in_the_order_of_the_calls,
    a_waiting_job_whose_caller_gave_up_never_runs,
    closing_refuses_the_waiting_jobs_and_drains_the_queue,
    try_run_on_a_full_queue_returns_the_closure,
    run_waits_for_a_slot_then_proceeds,
    execute_on_a_full_pool_rejects,
);
