//! Helpers shared by the `coop` tests (`coop.rs`, `coop_slice.rs`).

use offload::coop::Budget;
use std::future::Future;
use std::pin::pin;
use std::sync::mpsc;
use std::task::Context;
use std::time::{Duration, Instant};

use futures::task::noop_waker;

/// Bound on any wait for something that should take milliseconds.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `fut` until it is `Ready` with a no-op waker; returns how many
/// polls returned `Pending`.
pub fn pendings<F: Future>(fut: F) -> usize {
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    let mut pending = 0;
    while fut.as_mut().poll(&mut cx).is_pending() {
        pending += 1;
        assert!(pending < 1_000_000, "future never completes");
    }
    pending
}

/// Runs `f` on its own thread under `futures::executor::block_on` and waits
/// for it at most `TIMEOUT`.
pub fn block_on_bounded<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(futures::executor::block_on(fut));
    });
    rx.recv_timeout(TIMEOUT).expect("block_on timed out")
}

pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Ticks `budget` `ticks` times and returns the (1-based) ticks that yielded.
pub fn yielding_ticks(budget: &mut Budget, ticks: usize) -> Vec<usize> {
    (1..=ticks)
        .filter(|_| {
            let p = pendings(budget.tick());
            assert!(p <= 1, "a tick yields at most once");
            p == 1
        })
        .collect()
}

/// Burns `d` of CPU: a step of known cost.
pub fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Spawns, on the current tokio runtime, a task that ticks a slice budget
/// of `slice` (yielding through tokio) after steps of `step` CPU, forever:
/// a task to abort mid-slice.
pub fn spawn_slice_ticker(slice: Duration, step: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut budget = Budget::slice(slice).yield_with(tokio::task::yield_now);
        loop {
            spin(step);
            budget.tick().await;
        }
    })
}
