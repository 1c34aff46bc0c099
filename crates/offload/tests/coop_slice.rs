//! Behaviour of time-sliced budgets (`Budget::slice`): yields by time,
//! a ticker kept running beside CPU loops, slices that hold when a step's
//! cost jumps, absurd slices, and the clock thread behind them. No test
//! asserts a speed; every wait is bounded.

use futures::task::noop_waker;
use offload::coop::Budget;
use std::future::Future;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::task::Context;
use std::time::{Duration, Instant};

mod common;
use common::coop::{TIMEOUT, current_thread, pendings, spawn_slice_ticker, spin, yielding_ticks};

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
    // The time a task waits after yielding is not charged to its next
    // slice; the step after the yield is.
    let mut budget = Budget::slice(Duration::from_millis(20));
    // Spend the first slice: a tick after 25 ms of work yields.
    assert_eq!(pendings(budget.tick()), 0);
    spin(Duration::from_millis(25));
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    {
        let mut tick = budget.tick();
        assert!(Pin::new(&mut tick).poll(&mut cx).is_pending());
        // Waiting 25 ms in the run queue before being polled again.
        std::thread::sleep(Duration::from_millis(25));
        assert!(Pin::new(&mut tick).poll(&mut cx).is_ready());
    }
    // A fresh slice: the next tick does not yield...
    assert_eq!(pendings(budget.tick()), 0);
    // ...and one 25 ms step after the yield spends it.
    spin(Duration::from_millis(25));
    assert_eq!(pendings(budget.tick()), 1);
}

#[test]
fn steps_longer_than_the_slice_yield_after_each_step() {
    // With 3 ms steps and a 1 ms slice, every tick yields: the step right
    // after a yield counts in the new slice.
    let mut budget = Budget::slice(Duration::from_millis(1));
    assert_eq!(pendings(budget.tick()), 0, "the first tick opens the slice");
    for step in 0..5 {
        spin(Duration::from_millis(3));
        assert_eq!(pendings(budget.tick()), 1, "step {step}");
    }
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

// ---- Budget::slice when step costs change ------------------------------------
/// Ticks `budget` after trivial steps for `trivial` (long enough to learn a
/// long clock-read stride), then after steps 10,000 times costlier for
/// `heavy_for`. Returns the cost of a heavy step and the longest time
/// between two yields (or from the start of the heavy phase to the first
/// yield, or from the last yield to its end) during the heavy phase.
fn jump_10_000x(
    budget: &mut Budget,
    trivial: Duration,
    heavy_for: Duration,
) -> (Duration, Duration) {
    let start = Instant::now();
    let mut ticks = 0u64;
    while start.elapsed() < trivial {
        for _ in 0..1_000 {
            ticks = black_box(ticks + 1);
            pendings(budget.tick());
        }
    }
    // What one trivial step (the tick included) costs in this build.
    let heavy = (start.elapsed() / u32::try_from(ticks).unwrap_or(u32::MAX)) * 10_000;
    let heavy = heavy.max(Duration::from_micros(10));
    let phase = Instant::now();
    let (mut last, mut worst) = (phase, Duration::ZERO);
    while phase.elapsed() < heavy_for {
        spin(heavy);
        if pendings(budget.tick()) == 1 {
            let now = Instant::now();
            worst = worst.max(now - last);
            last = now;
        }
    }
    (heavy, worst.max(last.elapsed()))
}

#[test]
fn slice_holds_when_the_step_cost_jumps_10_000_times() {
    // A budget that only learned the loop's rate would read the clock next
    // after the stride it learned on trivial steps: thousands of heavy steps
    // later, seconds here. The budget reads the clock when the epoch moves
    // (every millisecond), so the slice ends one period and one step late at
    // most. The bound is generous for a loaded machine; the failure it
    // catches is the whole heavy phase without a yield.
    let slice = Duration::from_millis(2);
    let mut budget = Budget::slice(slice);
    let (heavy, worst) = jump_10_000x(
        &mut budget,
        Duration::from_millis(200),
        Duration::from_millis(600),
    );
    let bound = slice + heavy + Duration::from_millis(100);
    assert!(
        worst < bound,
        "{worst:?} without a yield (steps of {heavy:?}; bound {bound:?})"
    );
}

#[test]
fn slice_budgets_on_many_threads_all_hold_when_step_costs_jump() {
    // Four loops on four threads (two cores here), each with its own budget:
    // the one clock thread serves them all.
    let slice = Duration::from_millis(2);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut budget = Budget::slice(slice);
                let _ = tx.send(jump_10_000x(
                    &mut budget,
                    Duration::from_millis(150),
                    Duration::from_millis(600),
                ));
            });
            rx
        })
        .collect();
    for rx in threads {
        let (heavy, worst) = rx.recv_timeout(TIMEOUT).expect("thread timed out");
        // Wall time: four threads share two cores, so a thread may also wait
        // for a CPU just before its yield; still far below the heavy phase.
        let bound = slice + heavy + Duration::from_millis(250);
        assert!(worst < bound, "{worst:?} without a yield (bound {bound:?})");
    }
}

#[test]
fn for_each_holds_the_slice_when_items_become_costly() {
    // The same jump inside one `for_each`: two million trivial items (a long
    // learned stride), then items of 100 µs for half a second. `for_each`
    // looks at the clock's epoch every 8 items, so a slice ends at most a
    // period and 8 items late; the bound is generous for a loaded machine.
    let slice = Duration::from_millis(2);
    let heavy = Duration::from_micros(100);
    let heavy_from = std::cell::Cell::new(None::<Instant>);
    let mut budget = Budget::slice(slice);
    let items = (0u64..).take_while(|&i| {
        i < 2_000_000
            || heavy_from
                .get()
                .is_none_or(|t| t.elapsed() < Duration::from_millis(500))
    });
    let work = budget.for_each(items, |i| {
        if i >= 2_000_000 {
            heavy_from.set(heavy_from.get().or(Some(Instant::now())));
            spin(heavy);
        }
        black_box(i);
    });
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut work = pin!(work);
    let mut yields = Vec::new();
    while work.as_mut().poll(&mut cx).is_pending() {
        yields.push(Instant::now());
    }
    let end = Instant::now();
    let from = heavy_from.get().expect("heavy phase ran");
    let mut marks: Vec<Instant> = yields.into_iter().filter(|t| *t > from).collect();
    marks.insert(0, from);
    marks.push(end);
    let worst = marks
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let bound = slice + heavy * 8 + Duration::from_millis(100);
    assert!(worst < bound, "{worst:?} without a yield (bound {bound:?})");
}

#[test]
fn a_slice_spent_asleep_ends_at_the_next_tick() {
    // A step that blocks its thread (here: sleeps) for longer than the slice:
    // the tick after it yields, however many ticks the learned stride had
    // left.
    let mut budget = Budget::slice(Duration::from_millis(5));
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(100) {
        for _ in 0..1_000 {
            pendings(budget.tick());
        }
    }
    // Start a fresh slice, tick a little, then one step sleeps.
    budget.reset();
    for _ in 0..10 {
        assert_eq!(pendings(budget.tick()), 0);
    }
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(pendings(budget.tick()), 1, "the slice was spent asleep");
}

#[test]
fn absurd_slices_have_documented_results() {
    // Duration::MAX: a slice that never ends. It never yields and never
    // overflows, whatever the ticks, resets and pauses.
    let mut budget = Budget::slice(Duration::MAX);
    for _ in 0..200_000 {
        assert_eq!(pendings(budget.tick()), 0);
    }
    std::thread::sleep(Duration::from_millis(5));
    budget.reset();
    for _ in 0..1_000 {
        assert!(!budget.should_yield());
    }
    let mut copy = budget.clone();
    assert_eq!(
        pendings(copy.for_each(0..100_000u32, |x| {
            black_box(x);
        })),
        0
    );

    // 1 ns: shorter than a clock read. The first tick opens the slice, and
    // every later one finds it spent (each yield opens the next slice).
    let mut budget = Budget::slice(Duration::from_nanos(1));
    let yields = yielding_ticks(&mut budget, 100);
    assert_eq!(yields, (2..=100).collect::<Vec<_>>());
    // With `should_yield`, the budget does not see a yield end: the tick
    // after each yield opens the next slice.
    let mut budget = Budget::slice(Duration::from_nanos(1));
    let got: Vec<bool> = (0..6).map(|_| budget.should_yield()).collect();
    assert_eq!(got, [false, true, false, true, false, true]);
}

// ---- The clock thread -----------------------------------------------------------

/// Set in the child process that runs `clock_thread_child`.
#[cfg(target_os = "linux")]
const CLOCK_CHILD: &str = "OFFLOAD_COOP_CLOCK_CHILD";

/// The clock thread's state letter and voluntary context switches (its
/// wake-ups), from `/proc`; `None` while it does not exist.
#[cfg(target_os = "linux")]
fn clock_thread() -> Option<(char, u64)> {
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = task.expect("task").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != "offload-coop" {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).expect("status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .expect(name)
                .to_owned()
        };
        let state = field("State:").chars().next().expect("state");
        let wakeups = field("voluntary_ctxt_switches:").parse().expect("count");
        return Some((state, wakeups));
    }
    None
}

/// Waits until the clock thread has not woken for `quiet` (parked), at
/// most `TIMEOUT`; returns its state then.
#[cfg(target_os = "linux")]
fn clock_parked_for(quiet: Duration) -> (char, u64) {
    let start = Instant::now();
    let mut last = clock_thread().expect("clock thread");
    loop {
        std::thread::sleep(quiet);
        let now = clock_thread().expect("clock thread");
        if now.1 == last.1 {
            return now;
        }
        assert!(start.elapsed() < TIMEOUT, "the clock thread never parks");
        last = now;
    }
}

#[test]
#[cfg(target_os = "linux")]
fn the_clock_thread_sleeps_when_no_budget_ticks() {
    // Runs `clock_thread_child` alone in a child process (this test binary,
    // re-executed): other tests tick budgets concurrently in this one.
    if std::env::var_os(CLOCK_CHILD).is_some() {
        return;
    }
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "clock_thread_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CLOCK_CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child test");
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > TIMEOUT * 3 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child test timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("clock child: ok"),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The body of `the_clock_thread_sleeps_when_no_budget_ticks`, in a child
/// process of its own (does nothing otherwise).
#[test]
#[cfg(target_os = "linux")]
fn clock_thread_child() {
    if std::env::var_os(CLOCK_CHILD).is_none() {
        return;
    }
    // No slice budget has ticked yet: there is no clock thread at all, and
    // count budgets or merely creating a slice budget do not start one.
    let mut every = Budget::every(10);
    for _ in 0..1_000 {
        pendings(every.tick());
    }
    let idle = Budget::slice(Duration::from_millis(1));
    assert!(
        clock_thread().is_none(),
        "clock started before any slice tick"
    );
    drop(idle);

    // A slice budget ticking: the clock runs, waking about every millisecond.
    let mut budget = Budget::slice(Duration::from_millis(1));
    let tick_for = |budget: &mut Budget, d: Duration| {
        let start = Instant::now();
        while start.elapsed() < d {
            for _ in 0..100 {
                pendings(budget.tick());
            }
        }
    };
    tick_for(&mut budget, Duration::from_millis(20));
    let (_, before) = clock_thread().expect("clock thread started");
    tick_for(&mut budget, Duration::from_millis(100));
    let (_, after) = clock_thread().expect("clock thread");
    assert!(
        after >= before + 10,
        "{} wake-ups in 100 ms of ticking",
        after - before
    );

    // The budget stops ticking (it is still alive): the clock parks, and
    // stays parked: no wake-up, no CPU.
    let (state, parked) = clock_parked_for(Duration::from_millis(100));
    std::thread::sleep(Duration::from_millis(300));
    let (state_later, parked_later) = clock_thread().expect("clock thread");
    assert_eq!(parked_later, parked, "the parked clock woke up");
    assert_eq!((state, state_later), ('S', 'S'));

    // Ticking again wakes it.
    tick_for(&mut budget, Duration::from_millis(50));
    let (_, woken) = clock_thread().expect("clock thread");
    assert!(woken > parked, "ticking did not wake the clock");

    // A budget dropped inside async code, mid-slice (its task aborted):
    // the clock parks again.
    drop(budget);
    current_thread().block_on(async {
        let task = spawn_slice_ticker(Duration::from_millis(1), Duration::from_micros(5));
        tokio::time::sleep(Duration::from_millis(30)).await;
        task.abort();
        let _ = tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("timed out");
    });
    let (_, woke_for_task) = clock_thread().expect("clock thread");
    assert!(
        woke_for_task > woken,
        "the task's budget did not run the clock"
    );
    let (_, parked) = clock_parked_for(Duration::from_millis(100));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(clock_thread().expect("clock thread").1, parked);
    println!("clock child: ok");
}
