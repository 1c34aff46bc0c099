//! Backpressure: `run` waits for a queue slot, `try_run` fails at once and
//! hands the closure back, `Executor::execute` on a full pool rejects.

mod common;

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

on_every_runtime!(
    smoke,
    try_run_on_a_full_queue_returns_the_closure,
    run_waits_for_a_slot_then_proceeds,
    execute_on_a_full_pool_rejects,
);
