//! Shared test harness: run one async scenario on each of the three
//! runtimes the crate promises to work on, with a hard timeout so that a
//! bug shows up as a failure, never as a hung CI job.
#![allow(dead_code, unreachable_pub)]

pub mod coop;

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

/// The longest any single scenario may take: far above what a loaded
/// 2-core machine needs, short enough to fail fast.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// The runtimes a scenario can run on.
#[derive(Debug, Clone, Copy)]
pub enum Rt {
    TokioMulti,
    TokioCurrent,
    BlockOn,
}

/// Runs `scenario` on `rt` in a fresh thread and fails the test if it does
/// not finish within [`SCENARIO_TIMEOUT`]. A panic inside is re-raised.
pub fn run_on<F, Fut>(rt: Rt, scenario: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("scenario-{rt:?}"))
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match rt {
                Rt::TokioMulti => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime")
                    .block_on(scenario()),
                Rt::TokioCurrent => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime")
                    .block_on(scenario()),
                Rt::BlockOn => futures::executor::block_on(scenario()),
            }));
            let _ = tx.send(result);
        })
        .expect("spawn scenario thread");
    match rx.recv_timeout(SCENARIO_TIMEOUT) {
        Ok(Ok(())) => {
            let _ = thread.join();
        }
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("scenario on {rt:?} did not finish within {SCENARIO_TIMEOUT:?}: hung"),
    }
}

/// Declares one `#[test]` per scenario and runtime:
/// `on_every_runtime!(smoke, panics);` makes `tokio_multi::smoke`,
/// `tokio_current::smoke`, `block_on::smoke`, … from `async fn smoke()`.
#[macro_export]
macro_rules! on_every_runtime {
    ($($name:ident),* $(,)?) => {
        mod tokio_multi {
            $( #[test] fn $name() { $crate::common::run_on($crate::common::Rt::TokioMulti, super::$name) } )*
        }
        mod tokio_current {
            $( #[test] fn $name() { $crate::common::run_on($crate::common::Rt::TokioCurrent, super::$name) } )*
        }
        mod block_on {
            $( #[test] fn $name() { $crate::common::run_on($crate::common::Rt::BlockOn, super::$name) } )*
        }
    };
}

/// Polls `cond` until it holds or `within` passes; returns whether it held.
/// For waiting on effects of other threads without a runtime timer.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A latch a job can block on until the test opens it; opening is final.
/// Waits are bounded so a test bug cannot hang a worker thread forever.
#[derive(Clone, Default)]
pub struct Gate {
    inner: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn open(&self) {
        *self.inner.0.lock().unwrap() = true;
        self.inner.1.notify_all();
    }

    /// Blocks until opened (at most [`SCENARIO_TIMEOUT`]).
    pub fn wait(&self) {
        let guard = self.inner.0.lock().unwrap();
        let _ = self
            .inner
            .1
            .wait_timeout_while(guard, SCENARIO_TIMEOUT, |open| !*open)
            .unwrap();
    }
}

/// Polls a future once with a no-op waker; returns whether it was ready.
pub fn poll_once<F: Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    std::pin::Pin::new(f).poll(&mut cx)
}

/// Blocks a pool's single thread on a gate: returns the gate (open it to
/// release the thread) and the blocking job's handle, once the job runs.
pub fn occupy(pool: &offload::ThreadPool) -> (Gate, offload::JobHandle<()>) {
    let gate = Gate::new();
    let g = gate.clone();
    let handle = pool.try_run(move || g.wait()).expect("queue has room");
    assert!(
        eventually(Duration::from_secs(10), || pool.metrics().running == 1),
        "the blocking job did not start"
    );
    (gate, handle)
}

/// A pool of one thread and one queue slot, with the thread blocked on a
/// gate (see [`occupy`]) and the slot taken by a job returning 1: the next
/// submission finds the queue full.
pub fn full_pool() -> (
    offload::ThreadPool,
    Gate,
    offload::JobHandle<()>,
    offload::JobHandle<i32>,
) {
    let pool = offload::ThreadPool::builder()
        .threads(1)
        .queue_capacity(1)
        .build()
        .expect("valid pool");
    let (gate, blocker) = occupy(&pool);
    let filler = pool.try_run(|| 1).expect("the queue slot is free");
    (pool, gate, blocker, filler)
}
