//! Unit tests that need the pool's internals: thread starts that fail on
//! cue, through the builder's `spawn_gate` test seam (there is no honest
//! way to make the OS refuse one particular thread at a chosen moment).

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::task::Poll;
use std::time::Duration;

use super::ThreadPool;
use crate::error::BuildError;

/// A gate that holds every thread start until opened, then fails it.
#[derive(Default)]
struct FailingStart {
    open: Mutex<bool>,
    cv: Condvar,
    calls: AtomicUsize,
}

impl FailingStart {
    fn gate(self: &Arc<Self>) -> super::builder::SpawnGate {
        let me = self.clone();
        Arc::new(move || {
            me.calls.fetch_add(1, SeqCst);
            let open = me.open.lock().unwrap();
            let _ = me
                .cv
                .wait_timeout_while(open, Duration::from_secs(30), |o| !*o)
                .unwrap();
            Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "test: thread refused",
            ))
        })
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    std::pin::Pin::new(f).poll(&mut cx)
}

/// Issue 10 #6: when the last thread of a pool fails to start, callers
/// already waiting for room in the queue fail with a spawn error instead of
/// waiting forever.
#[test]
fn waiters_are_woken_when_the_last_thread_fails_to_start() {
    let start = Arc::new(FailingStart::default());
    let pool = ThreadPool::builder()
        .threads(1)
        .queue_capacity(1)
        .spawn_gate(start.gate())
        .build()
        .unwrap();
    // The first job fills the queue and tries to start the pool's only
    // thread, which the gate holds (on a helper thread, since the start
    // happens inside the submission).
    let (tx, rx) = mpsc::channel();
    let p = pool.clone();
    let submitter = std::thread::spawn(move || {
        let handle = p.try_run(|| 1).map_err(|_| ()).expect("room for one");
        tx.send(handle).unwrap();
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while start.calls.load(SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "no thread start");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The queue is full: these callers wait for room.
    let (done_tx, done_rx) = mpsc::channel();
    let waiters: Vec<_> = (0..3)
        .map(|i| {
            let run = pool.run(move || i);
            let done = done_tx.clone();
            std::thread::spawn(move || {
                let r = futures::executor::block_on(run);
                done.send(r.map_err(|e| e.is_spawn())).unwrap();
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    start.open();
    submitter.join().unwrap();
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let err = futures::executor::block_on(first).unwrap_err();
    assert!(err.is_spawn(), "{err}");
    for _ in 0..3 {
        let r = done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a waiting caller was never woken");
        assert_eq!(r, Err(true), "no thread can start: a spawn error");
    }
    for w in waiters {
        w.join().unwrap();
    }
    let m = pool.metrics();
    assert_eq!(m.threads, 0);
    assert_eq!(
        m.submitted, m.cancelled,
        "each failed job is counted: {m:?}"
    );
}

/// A pool whose `min_threads` cannot start any thread fails to build
/// instead of waiting or pretending.
#[test]
fn build_fails_when_no_minimum_thread_starts() {
    let start = Arc::new(FailingStart::default());
    start.open();
    let err = ThreadPool::builder()
        .threads(2)
        .min_threads(2)
        .spawn_gate(start.gate())
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::Spawn(_)), "{err}");
}

/// A submission made while the only thread is refused does not hang: the
/// queued job fails with a spawn error and the pool is usable again once
/// threads start.
#[test]
fn a_refused_thread_fails_the_queued_job_only() {
    let start = Arc::new(FailingStart::default());
    start.open();
    let pool = ThreadPool::builder()
        .threads(1)
        .spawn_gate(start.gate())
        .build()
        .unwrap();
    let mut run = pool.run(|| 1);
    match poll_once(&mut run) {
        Poll::Ready(Err(e)) => assert!(e.is_spawn(), "{e}"),
        other => panic!("expected a spawn error at once, got {other:?}"),
    }
    assert!(!pool.is_shutdown());
}

/// A lone caller waits for a spinning worker to take its job, but only for
/// a moment: if the worker it counted on does not take the job (here a
/// spinner that is not really there, as when the only spinner is preempted
/// or has just taken another job), the submission still returns at once
/// and the job runs when a thread is free. Nothing waits for the bound
/// twice, nothing is lost.
#[test]
fn a_hand_over_nobody_takes_delays_the_submitter_only_briefly() {
    let pool = ThreadPool::builder()
        .threads(1)
        .spin(Duration::ZERO)
        .build()
        .unwrap();
    // The pool's only thread is held by a job until the test lets it go.
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel();
    let held = pool.run(move || {
        started_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(Duration::from_secs(30));
        0
    });
    let held = std::thread::spawn(move || futures::executor::block_on(held));
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the holding job never started");

    // Pretend a worker spins: the next push counts on it and wakes nobody.
    pool.shared.spinning.fetch_add(1, SeqCst);
    let (tx, rx) = mpsc::channel();
    let p = pool.clone();
    let submitter = std::thread::spawn(move || {
        // A fresh thread has nothing in flight: it is a lone caller.
        let t = std::time::Instant::now();
        let run = p.run(|| 7);
        tx.send(t.elapsed()).unwrap();
        futures::executor::block_on(run)
    });
    let waited = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the submission never returned");
    // The bound is a microsecond; a loaded machine may deschedule the
    // submitter in between, hence the generous margin.
    assert!(waited < Duration::from_millis(200), "waited {waited:?}");
    pool.shared.spinning.fetch_sub(1, SeqCst);

    release_tx.send(()).unwrap();
    assert_eq!(held.join().unwrap().unwrap(), 0);
    assert_eq!(
        submitter.join().unwrap().unwrap(),
        7,
        "the queued job ran once a thread was free"
    );
}
