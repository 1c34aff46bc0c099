//! Dropping a process pool never holds the event loop, handles clone, and
//! waiting is explicit (`shutdown().await`, `shutdown_blocking()`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::{block, eventually, fixture};
use offload_tests::*;

/// The longest tolerated ticker gap: ten ticks, far above scheduling noise
/// on a loaded machine, far below a 500 ms call.
const MAX_GAP: Duration = Duration::from_millis(50);

#[test]
fn smoke() {
    let pool = fixture().workers(1).build().unwrap();
    let clone = pool.clone();
    assert_eq!(block(clone.call::<Sum>(vec![1])).unwrap(), 1);
}

#[test]
fn dropping_a_pool_with_a_500ms_call_running_does_not_hold_the_loop() {
    let pool = fixture().workers(1).build().unwrap();
    block(pool.ready()).unwrap();
    let pid = block(pool.call::<Pid>(())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (gap, result) = rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let ticker = tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut last = Instant::now();
            while !s.load(SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                worst = worst.max(last.elapsed());
                last = Instant::now();
            }
            worst
        });
        let call = pool.call::<SleepMs>(500);
        let running = tokio::spawn(call);
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(pool);
        // The call still finishes and its caller gets the result.
        let result = tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .expect("hung")
            .unwrap();
        stop.store(true, SeqCst);
        (ticker.await.unwrap(), result)
    });
    assert!(gap < MAX_GAP, "the loop was held for {gap:?}");
    assert!(result.is_ok(), "{result:?}");
    // The worker is reaped in the background.
    assert!(eventually(Duration::from_secs(5), || reaped(pid)));
}

#[test]
fn the_last_handle_closes_the_pool_and_clones_keep_it_open() {
    let pool = fixture().workers(1).build().unwrap();
    let clone = pool.clone();
    drop(pool);
    // Still open through the clone.
    assert_eq!(block(clone.call::<Sum>(vec![2, 3])).unwrap(), 5);
    let pid = block(clone.call::<Pid>(())).unwrap();
    drop(clone);
    assert!(eventually(Duration::from_secs(5), || reaped(pid)));
}

#[test]
fn shutdown_blocking_waits_for_calls_and_workers() {
    let pool = fixture().workers(2).build().unwrap();
    block(pool.ready()).unwrap();
    let pids: Vec<u32> = pool.worker_pids().into_values().collect();
    let call = pool.call::<SleepMs>(200);
    let started = Instant::now();
    // From a plain thread: blocking is allowed here.
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.shutdown_blocking())
    };
    assert!(block(call).is_ok());
    waiter.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(pool.metrics().workers, 0);
    assert!(pids.iter().all(|&p| reaped(p)));
    assert!(block(pool.call::<Sum>(vec![1])).unwrap_err().is_shutdown());
}
