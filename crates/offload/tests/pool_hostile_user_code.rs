//! Issue 10 #13: user code that panics where nobody expects it (a waker, a
//! panic payload's destructor, a queued closure's destructor) cannot break
//! the pool: counts stay true, shutdown resolves, the thread survives.

mod common;

use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use offload::ThreadPool;

/// A waker that panics when woken.
struct PanickingWaker;

impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("waker exploded");
    }
}

/// A value whose destructor panics.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("destructor exploded");
        }
    }
}

fn poll_with<F: std::future::Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    std::pin::Pin::new(f).poll(&mut Context::from_waker(waker))
}

#[test]
fn smoke() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    assert_eq!(futures::executor::block_on(pool.run(|| 1)).unwrap(), 1);
}

#[test]
fn a_panicking_waker_does_not_break_the_count_or_shutdown() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    let gate = common::Gate::new();
    let g = gate.clone();
    let mut handle = pool.try_run(move || g.wait()).unwrap();
    // Register the panicking waker while the job is blocked, so that the
    // worker wakes it when the job ends.
    let waker = Waker::from(Arc::new(PanickingWaker));
    assert!(poll_with(&mut handle, &waker).is_pending());
    gate.open();
    assert!(
        common::eventually(Duration::from_secs(10), || handle.is_finished()),
        "the job did not finish"
    );
    assert!(
        common::eventually(Duration::from_secs(10), || pool.metrics().running == 0),
        "running was never decremented: {:?}",
        pool.metrics()
    );
    assert_eq!(pool.metrics().threads, 1, "the thread survived");
    // The pool still works, and a drain resolves.
    let (tx, rx) = std::sync::mpsc::channel();
    let p = pool.clone();
    let t = std::thread::spawn(move || {
        let r = futures::executor::block_on(p.run(|| 5));
        futures::executor::block_on(p.shutdown());
        let _ = tx.send(r.ok());
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(Some(5)));
    t.join().unwrap();
}

#[test]
fn a_panic_payload_whose_drop_panics_is_contained() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let p = pool.clone();
    let t = std::thread::spawn(move || {
        let err = futures::executor::block_on(p.run(|| -> u8 { std::panic::panic_any(Bomb) }))
            .unwrap_err();
        let after = futures::executor::block_on(p.run(|| 7));
        futures::executor::block_on(p.shutdown());
        let _ = tx.send((err.is_panic(), after.ok()));
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)),
        Ok((true, Some(7))),
        "the caller gets a panic error and the pool goes on"
    );
    t.join().unwrap();
    let m = pool.metrics();
    assert_eq!((m.panicked, m.completed, m.running), (1, 1, 0), "{m:?}");
}

#[test]
fn a_queued_closure_whose_drop_panics_does_not_unwind_out_of_shutdown_now() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    let (gate, blocker) = common::occupy(&pool);
    let bomb = Bomb;
    let doomed = pool
        .try_run(move || {
            let _keep = &bomb;
        })
        .unwrap();
    let other = pool.try_run(|| 2).unwrap();
    let cancelled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.shutdown_now()))
        .expect("shutdown_now must not unwind into its caller");
    assert_eq!(cancelled, 2);
    gate.open();
    futures::executor::block_on(async {
        blocker.await.unwrap();
        assert!(doomed.await.unwrap_err().is_cancelled());
        assert!(other.await.unwrap_err().is_cancelled());
    });
}
