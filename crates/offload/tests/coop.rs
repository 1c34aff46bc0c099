//! Behaviour of `offload::coop`: `yield_now`, `Budget` and its adaptors, on
//! tokio (current-thread and multi-thread) and `futures::executor::block_on`.
//! No test asserts a speed; every wait is bounded.

use futures::task::{ArcWake, noop_waker};
use offload::coop::{Budget, Budgeted, Tick, YieldNow, yield_now};
use std::future::Future;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Bound on any wait for something that should take milliseconds.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `fut` until it is `Ready` with a no-op waker; returns how many
/// polls returned `Pending`.
fn pendings<F: Future>(fut: F) -> usize {
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

/// Counts the polls of a future, to check it completed after exactly two.
struct CountPolls<F> {
    inner: F,
    polls: usize,
}

impl<F: Future<Output = ()> + Unpin> Future for CountPolls<F> {
    type Output = usize;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        self.polls += 1;
        match Pin::new(&mut self.inner).poll(cx) {
            Poll::Ready(()) => Poll::Ready(self.polls),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn count_polls(inner: YieldNow) -> CountPolls<YieldNow> {
    CountPolls { inner, polls: 0 }
}

/// Runs `f` on its own thread under `futures::executor::block_on` and waits
/// for it at most `TIMEOUT`.
fn block_on_bounded<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(futures::executor::block_on(fut));
    });
    rx.recv_timeout(TIMEOUT).expect("block_on timed out")
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn smoke() {
    let sum = block_on_bounded(async {
        yield_now().await;
        let mut budget = Budget::slice(Duration::from_millis(1));
        let mut sum = 0u64;
        for i in 0..100_000u64 {
            sum += i;
            budget.tick().await;
        }
        sum
    });
    assert_eq!(sum, 4_999_950_000);
}

// ---- yield_now ------------------------------------------------------------

#[derive(Default)]
struct CountWakes(AtomicUsize);

impl ArcWake for CountWakes {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn yield_now_is_pending_once_and_wakes_itself() {
    let wakes = Arc::new(CountWakes::default());
    let waker = futures::task::waker(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = yield_now();
    assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        1,
        "woke itself before Pending"
    );
    assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
}

#[test]
fn yield_now_on_block_on() {
    assert_eq!(block_on_bounded(count_polls(yield_now())), 2);
}

#[test]
fn yield_now_on_tokio_current_thread() {
    let polls = current_thread().block_on(async {
        let task = tokio::spawn(count_polls(yield_now()));
        tokio::time::timeout(TIMEOUT, task).await
    });
    assert_eq!(polls.expect("timed out").expect("task"), 2);
}

#[test]
fn yield_now_on_tokio_multi_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let polls = rt.block_on(async {
        let task = tokio::spawn(count_polls(yield_now()));
        tokio::time::timeout(TIMEOUT, task).await
    });
    assert_eq!(polls.expect("timed out").expect("task"), 2);
}

#[test]
fn yield_now_lets_another_task_run_on_current_thread() {
    // Two tasks that only ever yield alternate: neither starves the other.
    let log = current_thread().block_on(async {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let log = log.clone();
                tokio::spawn(async move {
                    for _ in 0..3 {
                        log.lock().unwrap().push(name);
                        yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            tokio::time::timeout(TIMEOUT, t)
                .await
                .expect("timed out")
                .expect("task");
        }
        Arc::try_unwrap(log).unwrap().into_inner().unwrap()
    });
    assert_eq!(log, ["a", "b", "a", "b", "a", "b"]);
}

#[test]
fn yield_now_refills_tokios_coop_budget() {
    // Tokio grants a task a fresh budget on every poll; returning Pending
    // ends the poll, so after our yield tokio's resources are usable again.
    let refilled = current_thread().block_on(async {
        let task = tokio::spawn(async {
            let mut spent = 0;
            while tokio::task::coop::has_budget_remaining() && spent < 10_000 {
                tokio::task::consume_budget().await;
                spent += 1;
            }
            assert!(
                !tokio::task::coop::has_budget_remaining(),
                "budget never ran out"
            );
            yield_now().await;
            tokio::task::coop::has_budget_remaining()
        });
        tokio::time::timeout(TIMEOUT, task).await
    });
    assert!(refilled.expect("timed out").expect("task"));
}

// ---- Budget::every ---------------------------------------------------------

/// Ticks `budget` `ticks` times and returns the (1-based) ticks that yielded.
fn yielding_ticks(budget: &mut Budget, ticks: usize) -> Vec<usize> {
    (1..=ticks)
        .filter(|_| {
            let p = pendings(budget.tick());
            assert!(p <= 1, "a tick yields at most once");
            p == 1
        })
        .collect()
}

#[test]
fn every_n_yields_exactly_every_n_ticks() {
    for n in [1u32, 2, 7, 100, 1000] {
        let mut budget = Budget::every(n);
        let n = n as usize;
        let got = yielding_ticks(&mut budget, 10 * n + n - 1);
        let want: Vec<usize> = (1..=10).map(|k| k * n).collect();
        assert_eq!(got, want, "every({n})");
    }
}

#[test]
#[should_panic(expected = "n > 0")]
fn every_zero_panics() {
    let _ = Budget::every(0);
}

#[test]
fn reset_starts_a_fresh_count() {
    let mut budget = Budget::every(3);
    assert_eq!(yielding_ticks(&mut budget, 2), Vec::<usize>::new());
    budget.reset();
    assert_eq!(yielding_ticks(&mut budget, 3), [3]);
}

#[test]
fn should_yield_is_the_decision_of_tick() {
    let mut budget = Budget::every(4);
    let got: Vec<bool> = (0..8).map(|_| budget.should_yield()).collect();
    assert_eq!(got, [false, false, false, true, false, false, false, true]);
}

#[test]
fn a_tick_dropped_mid_yield_does_not_skip_the_next_yield() {
    let mut budget = Budget::every(1);
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    {
        let mut tick = budget.tick();
        assert!(Pin::new(&mut tick).poll(&mut cx).is_pending());
        // Dropped here, half-way through its yield.
    }
    assert_eq!(pendings(budget.tick()), 1);
}

#[test]
fn yield_with_uses_the_given_yield() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let mut budget = Budget::every(2).yield_with(|| {
        CALLS.fetch_add(1, Ordering::SeqCst);
        yield_now()
    });
    assert_eq!(yielding_ticks(&mut budget, 10), [2, 4, 6, 8, 10]);
    assert_eq!(CALLS.load(Ordering::SeqCst), 5);
}

// ---- Budget::slice ---------------------------------------------------------

#[test]
fn zero_slice_yields_on_every_tick() {
    let mut budget = Budget::slice(Duration::ZERO);
    assert_eq!(
        yielding_ticks(&mut budget, 50),
        (1..=50).collect::<Vec<_>>()
    );
}

#[test]
fn slice_yields_by_time_not_on_every_tick() {
    // ~50 ms of tight ticks with a 1 ms slice: a few dozen yields (a loaded
    // machine makes slices end sooner in wall time, never later), and far
    // fewer yields than ticks.
    let mut budget = Budget::slice(Duration::from_millis(1));
    let start = Instant::now();
    let (mut ticks, mut yields) = (0u64, 0u64);
    while start.elapsed() < Duration::from_millis(50) {
        for _ in 0..1000 {
            black_box(ticks);
            ticks += 1;
            yields += pendings(budget.tick()) as u64;
        }
    }
    assert!(yields >= 5, "{yields} yields in 50 ms of 1 ms slices");
    assert!(yields * 100 <= ticks, "{yields} yields for {ticks} ticks");
}

#[test]
fn slice_restarts_after_a_yield() {
    // The time a task waits after yielding is not charged to its next slice.
    let mut budget = Budget::slice(Duration::from_millis(20));
    let spin = |d: Duration| {
        let t = Instant::now();
        while t.elapsed() < d {}
    };
    // Spend the first slice: a tick after 25 ms of work yields.
    assert_eq!(pendings(budget.tick()), 0);
    spin(Duration::from_millis(25));
    assert_eq!(pendings(budget.tick()), 1);
    // Waiting (in the run queue, say) 25 ms: the next tick starts a slice.
    std::thread::sleep(Duration::from_millis(25));
    assert_eq!(pendings(budget.tick()), 0);
}

/// A 10 ms ticker beside a ~400 ms CPU loop on a current-thread runtime:
/// returns the ticker's wake-up times during the loop and the loop's steps.
fn ticker_beside_cpu_loop(cpu_in_block_on: bool, budget: Budget) -> (Vec<Instant>, u64) {
    const RUN: Duration = Duration::from_millis(400);
    let cpu_loop = |mut budget: Budget| async move {
        let start = Instant::now();
        let mut steps = 0u64;
        while start.elapsed() < RUN {
            for _ in 0..100 {
                steps = black_box(steps + 1);
            }
            budget.tick().await;
        }
        steps
    };
    current_thread().block_on(async move {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = {
            let done = done.clone();
            tokio::spawn(async move {
                let mut ticks = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.push(Instant::now());
                }
                ticks
            })
        };
        tokio::task::yield_now().await; // let the ticker start sleeping
        let steps = if cpu_in_block_on {
            tokio::time::timeout(TIMEOUT, cpu_loop(budget))
                .await
                .expect("timed out")
        } else {
            let task = tokio::spawn(cpu_loop(budget));
            tokio::time::timeout(TIMEOUT, task)
                .await
                .expect("timed out")
                .expect("task")
        };
        done.store(true, Ordering::Relaxed);
        let ticks = tokio::time::timeout(TIMEOUT, ticker)
            .await
            .expect("timed out")
            .expect("ticker");
        (ticks, steps)
    })
}

fn assert_ticker_kept_running(ticks: &[Instant], steps: u64) {
    assert!(steps > 0);
    // 400 ms of 10 ms sleeps: ~35 ticks on an idle machine; ask for 10.
    assert!(ticks.len() >= 10, "ticker ran only {} times", ticks.len());
    let max_gap = ticks
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        max_gap < Duration::from_millis(100),
        "ticker stalled {max_gap:?}"
    );
}

#[test]
fn slice_budget_keeps_a_ticker_running_on_current_thread() {
    // The recommended shape on tokio: a spawned task, tokio's own yield.
    let budget = Budget::slice(Duration::from_millis(1)).yield_with(tokio::task::yield_now);
    let (ticks, steps) = ticker_beside_cpu_loop(false, budget);
    assert_ticker_kept_running(&ticks, steps);
}

#[test]
fn agnostic_yield_keeps_a_ticker_running_from_block_on() {
    // The runtime-agnostic yield, in the future given to `block_on`: its
    // wake-up makes the runtime poll its timers before polling it again.
    let (ticks, steps) = ticker_beside_cpu_loop(true, Budget::slice(Duration::from_millis(1)));
    assert_ticker_kept_running(&ticks, steps);
}

#[test]
fn agnostic_yield_lets_tasks_run_when_spawned_on_current_thread() {
    // Spawned with the runtime-agnostic yield, tokio polls its timers only
    // every 61 scheduler ticks (`event_interval`): with a 100 µs slice the
    // ticker is late by ~6 ms, not stalled for the whole loop.
    let (ticks, steps) = ticker_beside_cpu_loop(false, Budget::slice(Duration::from_micros(100)));
    assert_ticker_kept_running(&ticks, steps);
}

// ---- adaptors ----------------------------------------------------------------

#[test]
fn for_each_visits_every_item_and_ticks_after_each() {
    let mut budget = Budget::every(3);
    let mut seen = Vec::new();
    let pending = pendings(budget.for_each(0..10, |x| seen.push(x)));
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    assert_eq!(pending, 3, "ticks 3, 6 and 9 yield");
    // The count carries over: one tick was taken after the last yield.
    assert_eq!(yielding_ticks(&mut budget, 3), [2]);
}

#[test]
fn for_each_on_an_empty_iterator() {
    let mut budget = Budget::every(1);
    assert_eq!(
        pendings(budget.for_each(std::iter::empty::<u8>(), |_| {})),
        0
    );
}

#[test]
fn for_each_with_a_slice_budget_on_tokio() {
    let total = current_thread().block_on(async {
        let task = tokio::spawn(async {
            let mut budget =
                Budget::slice(Duration::from_millis(1)).yield_with(tokio::task::yield_now);
            let mut total = 0u64;
            budget.for_each(0..5_000_000u64, |x| total += x & 1).await;
            total
        });
        tokio::time::timeout(TIMEOUT, task).await
    });
    assert_eq!(total.expect("timed out").expect("task"), 2_500_000);
}

#[test]
fn wrap_yields_items_in_order_with_ticks() {
    let mut items = Budget::every(2).wrap(vec!['a', 'b', 'c', 'd']);
    let mut got = Vec::new();
    let mut pending = 0;
    loop {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut next = pin!(items.next());
        let item = loop {
            match next.as_mut().poll(&mut cx) {
                Poll::Ready(item) => break item,
                Poll::Pending => pending += 1,
            }
        };
        match item {
            Some(c) => got.push(c),
            None => break,
        }
    }
    assert_eq!(got, ['a', 'b', 'c', 'd']);
    assert_eq!(pending, 2, "ticks 2 and 4 (before 'b' and 'd') yield");
}

#[test]
fn wrap_next_is_cancel_safe() {
    let mut items = Budget::every(1).wrap(0..3);
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    {
        let mut next = pin!(items.next());
        assert!(next.as_mut().poll(&mut cx).is_pending());
        // Dropped while yielding: no item may be lost.
    }
    let collected = block_on_bounded(async move {
        let mut v = Vec::new();
        while let Some(x) = items.next().await {
            v.push(x);
        }
        v
    });
    assert_eq!(collected, [0, 1, 2]);
}

#[test]
fn wrap_is_a_stream() {
    use futures::{Stream, StreamExt};
    let rows: Budgeted<_> = Budget::slice(Duration::from_millis(1)).wrap(0..1000u32);
    assert_eq!(rows.size_hint(), (1000, Some(1000)));
    let sum = block_on_bounded(rows.fold(0u64, |acc, x| async move { acc + u64::from(x) }));
    assert_eq!(sum, 499_500);
}

#[test]
fn public_types_are_send_and_sync_where_it_matters() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Budget>();
    sync::<Budget>();
    send::<Tick<'static>>();
    send::<YieldNow>();
    send::<Budgeted<std::vec::IntoIter<u8>>>();
    sync::<Budgeted<std::vec::IntoIter<u8>>>();
}
