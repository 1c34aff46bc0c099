//! Issue 18: our own API never blocks the event loop. Each row runs beside
//! a 5 ms ticker on a current-thread tokio runtime (the loop is this one
//! thread, so anything that blocks it delays the ticker) and fails if the
//! ticker's worst gap around the call exceeds a generous 50 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use offload::{Dedicated, ThreadPool};

/// The longest tolerated ticker gap: ten ticks, far above scheduling noise
/// on a loaded machine, far below the 300–500 ms of a blocking call.
const MAX_GAP: Duration = Duration::from_millis(50);

/// Runs `call` on a current-thread runtime beside a 5 ms ticker; returns
/// the worst gap between two ticks whose interval overlaps the call (only
/// those: a loaded machine may delay a tick anywhere, and what is measured
/// is whether the call held the loop).
fn worst_gap_around<F, Fut>(call: F) -> Duration
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let ticker = tokio::spawn(async move {
            let mut gaps = Vec::new();
            let mut last = Instant::now();
            while !s.load(SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let now = Instant::now();
                gaps.push((last, now));
                last = now;
            }
            gaps
        });
        // Let the ticker start ticking.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let start = Instant::now();
        call().await;
        let end = Instant::now();
        tokio::time::sleep(Duration::from_millis(30)).await;
        stop.store(true, SeqCst);
        let gaps = ticker.await.unwrap();
        gaps.iter()
            .filter(|(from, to)| *from <= end && *to >= start)
            .map(|(from, to)| *to - *from)
            .max()
            .expect("the ticker ticked around the call")
    })
}

/// Awaits `fut` on a helper thread, failing the test after 30 s.
fn within<T: Send + 'static>(fut: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let _ = tx.send(futures::executor::block_on(fut));
    });
    let out = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("did not finish within 30 s");
    t.join().unwrap();
    out
}

#[test]
fn smoke() {
    let gap = worst_gap_around(|| async {});
    assert!(gap < Duration::from_secs(10));
}

#[test]
fn dropping_a_pool_with_a_500ms_job_running_does_not_hold_the_loop() {
    let (tx, rx) = std::sync::mpsc::channel();
    let gap = worst_gap_around(|| async move {
        let pool = ThreadPool::builder().threads(1).build().unwrap();
        let job = pool
            .try_run(|| std::thread::sleep(Duration::from_millis(500)))
            .unwrap();
        // Let the job start, then drop the pool (its only handle).
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(pool);
        tx.send(job).unwrap();
    });
    // The job still finishes (and its thread exits) after the drop.
    let job = rx.recv().unwrap();
    within(job).expect("the running job still delivers");
    assert!(gap <= MAX_GAP, "the loop was held for {gap:?}");
}

#[test]
fn building_a_dedicated_executor_with_a_300ms_init_does_not_hold_the_loop() {
    let (tx, rx) = std::sync::mpsc::channel();
    let gap = worst_gap_around(|| async move {
        let conn = Dedicated::builder()
            .name("slow-init")
            .build(|| {
                std::thread::sleep(Duration::from_millis(300));
                String::from("connection")
            })
            .unwrap();
        tx.send(conn).unwrap();
    });
    assert!(gap <= MAX_GAP, "the loop was held for {gap:?}");
    let conn = rx.recv().unwrap();
    let c = conn.clone();
    within(async move {
        c.ready().await.expect("init succeeded");
        assert_eq!(c.run(|c: &mut String| c.len()).await.unwrap(), 10);
    });
    conn.shutdown_blocking();
}

#[test]
fn dropping_a_dedicated_executor_with_a_500ms_call_running_does_not_hold_the_loop() {
    let (tx, rx) = std::sync::mpsc::channel();
    let gap = worst_gap_around(|| async move {
        let conn = Dedicated::builder().build(|| 0u32).unwrap();
        let call = conn
            .try_run(|n: &mut u32| {
                std::thread::sleep(Duration::from_millis(500));
                *n += 1;
                *n
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(conn);
        tx.send(call).unwrap();
    });
    let call = rx.recv().unwrap();
    assert_eq!(within(call).unwrap(), 1);
    assert!(gap <= MAX_GAP, "the loop was held for {gap:?}");
}
