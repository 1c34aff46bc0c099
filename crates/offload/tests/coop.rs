//! Behaviour of `offload::coop`: `yield_now`, `Budget::every`, the
//! adaptors, and dropping budgets, on tokio (current-thread and
//! multi-thread) and `futures::executor::block_on`. Time-sliced budgets
//! are in `coop_slice.rs`. No test asserts a speed; every wait is bounded.

use futures::task::{ArcWake, noop_waker};
use offload::coop::{Budget, Budgeted, Tick, YieldNow, yield_now};
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

mod common;
use common::coop::{
    TIMEOUT, block_on_bounded, current_thread, pendings, spawn_slice_ticker, yielding_ticks,
};

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

#[test]
fn dropping_a_budget_mid_yield_inside_a_task() {
    // A task ticking a slice budget is aborted while it runs: the budget is
    // dropped inside async code, possibly half-way through a yield. Nothing
    // hangs and the runtime shuts down.
    current_thread().block_on(async {
        let task = spawn_slice_ticker(Duration::from_micros(100), Duration::from_micros(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
        task.abort();
        let err = tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("timed out")
            .expect_err("aborted");
        assert!(err.is_cancelled());
        // A `Budgeted` stream dropped in the middle of its yield, too.
        let mut rows = Budget::every(1).wrap(0..10);
        let mut next = pin!(rows.next());
        let waker = noop_waker();
        assert!(
            next.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
    });
}
