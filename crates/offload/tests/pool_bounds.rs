//! The pool's bounds hold under stress: never more threads running jobs than
//! configured, never more jobs queued than the capacity, even when callers
//! give up on jobs mid-way.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use futures::future::join_all;
use offload::ThreadPool;

async fn smoke() {
    let pool = ThreadPool::builder().threads(2).build().unwrap();
    assert_eq!(pool.run(|| 1 + 1).await.unwrap(), 2);
}

/// Many callers at once, some of which drop their futures early: the
/// running count never exceeds `threads` and the queue never exceeds its
/// capacity, as seen both from inside the jobs and by a sampler thread.
async fn bounds_never_exceeded() {
    const THREADS: usize = 3;
    const CAPACITY: usize = 5;
    const JOBS: usize = 300;
    let pool = Arc::new(
        ThreadPool::builder()
            .threads(THREADS)
            .queue_capacity(CAPACITY)
            .build()
            .unwrap(),
    );
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));

    let sampler = {
        let (pool, done) = (pool.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut max_threads, mut max_queued, mut max_running) = (0, 0, 0);
            while !done.load(SeqCst) {
                let m = pool.metrics();
                max_threads = max_threads.max(m.threads);
                max_queued = max_queued.max(m.queued);
                max_running = max_running.max(m.running);
                std::thread::yield_now();
            }
            (max_threads, max_queued, max_running)
        })
    };

    let futures = (0..JOBS).map(|i| {
        let (active, peak) = (active.clone(), peak.clone());
        let fut = pool.run(move || {
            let now = active.fetch_add(1, SeqCst) + 1;
            peak.fetch_max(now, SeqCst);
            std::thread::sleep(Duration::from_micros(200));
            active.fetch_sub(1, SeqCst);
            i
        });
        async move {
            if i % 7 == 0 {
                // This caller gives up after one poll: queued → cancelled,
                // started → detached (still counted until it ends).
                let mut fut = fut;
                let _ = common::poll_once(&mut fut);
                None
            } else {
                Some(fut.await.expect("job result"))
            }
        }
    });
    let results = join_all(futures).await;
    for (i, r) in results.iter().enumerate() {
        if i % 7 != 0 {
            assert_eq!(*r, Some(i));
        }
    }
    pool.shutdown().await;
    done.store(true, SeqCst);
    let (max_threads, max_queued, max_running) = sampler.join().unwrap();

    assert!(
        peak.load(SeqCst) <= THREADS,
        "peak concurrency {}",
        peak.load(SeqCst)
    );
    assert!(max_threads <= THREADS, "threads {max_threads}");
    assert!(max_running <= THREADS, "running {max_running}");
    assert!(max_queued <= CAPACITY, "queued {max_queued}");
    let m = pool.metrics();
    // Every queued job either ran or was cancelled; callers that gave up
    // while still waiting for a slot never queued anything.
    assert_eq!(m.completed + m.cancelled, m.submitted, "{m:?}");
    assert!(m.completed >= (JOBS - JOBS.div_ceil(7)) as u64, "{m:?}");
    assert_eq!(m.running, 0);
    assert_eq!(m.queued, 0);
}

/// Threads are started on demand, named after the pool, and exit after
/// `keep_alive` without work.
async fn threads_start_on_demand_and_idle_out() {
    let pool = ThreadPool::builder()
        .name("bounds")
        .threads(2)
        .keep_alive(Duration::from_millis(50))
        .build()
        .unwrap();
    assert_eq!(pool.metrics().threads, 0, "no thread before the first job");
    let name = pool
        .run(|| std::thread::current().name().map(str::to_owned))
        .await
        .unwrap()
        .unwrap();
    assert!(name.starts_with("bounds-"), "{name}");
    assert!(
        common::eventually(Duration::from_secs(10), || pool.metrics().threads == 0),
        "idle threads exit after keep_alive: {:?}",
        pool.metrics()
    );
    // And come back when work does.
    assert_eq!(pool.run(|| 7).await.unwrap(), 7);
}

/// `min_threads` are started with the pool and survive `keep_alive`; the
/// threads above them idle out.
async fn min_threads_start_at_build_and_stay() {
    let pool = ThreadPool::builder()
        .threads(3)
        .min_threads(1)
        .keep_alive(Duration::from_millis(50))
        .build()
        .unwrap();
    assert!(
        common::eventually(Duration::from_secs(10), || pool.metrics().threads == 1),
        "one thread at build: {:?}",
        pool.metrics()
    );
    let gate = common::Gate::new();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let g = gate.clone();
            pool.try_run(move || g.wait()).unwrap()
        })
        .collect();
    assert!(common::eventually(Duration::from_secs(10), || pool
        .metrics()
        .running
        == 3));
    gate.open();
    for h in handles {
        h.await.unwrap();
    }
    assert!(
        common::eventually(Duration::from_secs(10), || pool.metrics().threads == 1),
        "back down to min_threads: {:?}",
        pool.metrics()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pool.metrics().threads, 1, "the minimum never idles out");
}

on_every_runtime!(
    smoke,
    bounds_never_exceeded,
    threads_start_on_demand_and_idle_out,
    min_threads_start_at_build_and_stay,
);
