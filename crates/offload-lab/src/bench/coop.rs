//! `offload-lab bench coop`: the seed's `cpu_workaround.py`, measured.
//!
//! A CPU countdown (about 1 s of work when bare) runs as a spawned task on a
//! tokio current-thread runtime beside a ticker task that sleeps 1 ms in a
//! loop and records how late each wake-up is. For every setting (no yielding,
//! a count budget for N in 10..1M, a slice budget of 100 µs, 1 ms, 10 ms) we
//! report the countdown's throughput against the bare loop and the ticker's
//! lag against the timer's own floor (the same ticker, measured idle in the
//! same run). Budgets yield with `tokio::task::yield_now` (through
//! `Budget::yield_with`, as the library advises on tokio); one more setting,
//! `slice_1ms_agnostic`, yields with the runtime-agnostic `yield_now` to show
//! what tokio's `event_interval` does to it. Settings run in rounds,
//! alternately; each figure is the median of its rounds (lags pool the
//! samples of all rounds). Last, the cost of one non-yielding tick against a
//! bare loop step.

use super::BenchArgs;
use crate::report::{self, BenchLine, Better};
use offload::coop::Budget;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SUITE: &str = "coop";
/// The ticker's period.
const TICK: Duration = Duration::from_millis(1);

/// How the countdown yields.
#[derive(Debug, Clone, Copy)]
enum Setting {
    /// No yielding at all: the seed's `cpu.py`.
    Bare,
    /// `Budget::every(n)`: the seed's `cpu_workaround.py`.
    Every(u32),
    /// `Budget::slice(d)`.
    Slice(Duration),
    /// `Budget::slice(d)` in a hand-written loop awaiting `tick()` each step
    /// (instead of `for_each`).
    SliceTickLoop(Duration),
    /// `Budget::slice(d)` yielding with the runtime-agnostic `yield_now`
    /// instead of tokio's: shows tokio's `event_interval` at work.
    SliceAgnostic(Duration),
}

impl Setting {
    fn name(self) -> String {
        let slice = |d: Duration| {
            if d.as_micros() % 1000 == 0 {
                format!("slice_{}ms", d.as_millis())
            } else {
                format!("slice_{}us", d.as_micros())
            }
        };
        match self {
            Setting::Bare => "bare_loop".to_owned(),
            Setting::Every(n) => format!("every_{n}"),
            Setting::Slice(d) => slice(d),
            Setting::SliceTickLoop(d) => format!("{}_tick_loop", slice(d)),
            Setting::SliceAgnostic(d) => format!("{}_agnostic", slice(d)),
        }
    }

    /// Runs the countdown as this setting says. Budgets yield with tokio's
    /// `yield_now` (as the library's docs advise on tokio) unless the
    /// setting says otherwise.
    async fn countdown(self, steps: u64) -> u64 {
        let tokio_yield = |b: Budget| b.yield_with(tokio::task::yield_now);
        match self {
            Setting::Bare => bare_countdown(steps).await,
            Setting::Every(n) => for_each_countdown(steps, tokio_yield(Budget::every(n))).await,
            Setting::Slice(d) => for_each_countdown(steps, tokio_yield(Budget::slice(d))).await,
            Setting::SliceTickLoop(d) => tick_countdown(steps, tokio_yield(Budget::slice(d))).await,
            Setting::SliceAgnostic(d) => for_each_countdown(steps, Budget::slice(d)).await,
        }
    }
}

/// One step of the countdown: a xorshift of a running value (about 7
/// dependent instructions, 1 to 2 ns), which the compiler can neither fold
/// nor vectorise.
///
/// `black_box` guards the input and the result, not each step: a
/// `black_box` inside the loop is a compiler barrier over all memory, which
/// would force the budget's counter through memory on every step, a cost no
/// real loop body pays.
#[inline(always)]
fn step(mut x: u64, n: u64) -> u64 {
    x ^= n;
    x ^= x << 13;
    x ^= x >> 7;
    x ^ (x << 17)
}

/// The countdown with no yield point: the peer of every setting. An async
/// fn like the others, so that they differ by the budget only.
async fn bare_countdown(steps: u64) -> u64 {
    let mut x = 0;
    for n in (0..black_box(steps)).rev() {
        x = step(x, n);
    }
    black_box(x)
}

/// The countdown through `Budget::for_each`.
async fn for_each_countdown(steps: u64, mut budget: Budget) -> u64 {
    let mut x = 0;
    budget
        .for_each((0..black_box(steps)).rev(), |n| x = step(x, n))
        .await;
    black_box(x)
}

/// The countdown as a hand-written loop awaiting a tick per step.
async fn tick_countdown(steps: u64, mut budget: Budget) -> u64 {
    let mut x = 0;
    for n in (0..black_box(steps)).rev() {
        x = step(x, n);
        budget.tick().await;
    }
    black_box(x)
}

/// What one run of a setting measured.
#[derive(Debug)]
struct Run {
    /// Countdown steps per second (wall clock, yields included).
    steps_per_s: f64,
    /// How late each ticker wake-up that overlapped the countdown was, in ms.
    lags_ms: Vec<f64>,
}

/// One ticker sample: when it went to sleep, when it woke, how late (ms).
type Sample = (Instant, Instant, f64);

/// Spawns the ticker: sleeps `TICK` in a loop and records every wake-up.
fn spawn_ticker(stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        let mut samples = Vec::with_capacity(4096);
        while !stop.load(Ordering::Relaxed) {
            let from = Instant::now();
            tokio::time::sleep(TICK).await;
            let woke = Instant::now();
            let late = woke.saturating_duration_since(from).saturating_sub(TICK);
            samples.push((from, woke, late.as_secs_f64() * 1e3));
        }
        samples
    })
}

/// Runs the countdown (or, with `steps == 0`, nothing for `idle`) beside the
/// ticker on a fresh current-thread runtime.
fn run_one(setting: Setting, steps: u64, idle: Duration) -> anyhow::Result<Run> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = spawn_ticker(stop.clone());
        // Let the ticker settle into its rhythm.
        tokio::time::sleep(Duration::from_millis(20)).await;

        let start = Instant::now();
        if steps == 0 {
            tokio::time::sleep(idle).await;
        } else {
            tokio::spawn(setting.countdown(steps)).await?;
        }
        let end = Instant::now();
        // Let the ticker wake once more: its sleep may span the end.
        tokio::time::sleep(Duration::from_millis(5)).await;
        stop.store(true, Ordering::Relaxed);
        let samples = tokio::time::timeout(Duration::from_secs(5), ticker).await??;

        let lags_ms = samples
            .iter()
            .filter(|(from, woke, _)| *from < end && *woke > start)
            .map(|s| s.2)
            .collect();
        let secs = end.duration_since(start).as_secs_f64();
        Ok(Run {
            steps_per_s: steps as f64 / secs,
            lags_ms,
        })
    })
}

/// Steps of the bare countdown that take about `target`.
fn calibrate(target: Duration) -> u64 {
    let mut steps = 1_000_000u64;
    loop {
        let t = Instant::now();
        futures::executor::block_on(bare_countdown(steps));
        let took = t.elapsed();
        if took >= Duration::from_millis(50) {
            return (steps as f64 * target.as_secs_f64() / took.as_secs_f64()) as u64;
        }
        steps *= 4;
    }
}

/// Nanoseconds per step of `steps` steps of `f`, best of `rounds`.
fn ns_per_step(rounds: usize, steps: u64, mut f: impl FnMut(u64)) -> f64 {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f(steps);
            t.elapsed().as_nanos() as f64 / steps as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn median(mut v: Vec<f64>) -> f64 {
    report::percentiles(&mut v).0
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<Vec<BenchLine>> {
    let (work, rounds, idle) = if args.quick {
        (Duration::from_millis(60), 1, Duration::from_millis(100))
    } else {
        (Duration::from_secs(1), 3, Duration::from_millis(500))
    };
    let steps = calibrate(work);

    let mut settings = vec![Setting::Bare];
    settings.extend([10, 100, 1_000, 10_000, 100_000, 1_000_000].map(Setting::Every));
    settings.extend([100, 1_000, 10_000].map(|us| Setting::Slice(Duration::from_micros(us))));
    settings.push(Setting::SliceTickLoop(Duration::from_millis(1)));
    settings.push(Setting::SliceAgnostic(Duration::from_millis(1)));

    // Rounds: the idle floor and every setting, alternately.
    let mut floor: Vec<f64> = Vec::new();
    let mut speed: Vec<Vec<f64>> = vec![Vec::new(); settings.len()];
    let mut lags: Vec<Vec<f64>> = vec![Vec::new(); settings.len()];
    for _ in 0..rounds {
        floor.extend(run_one(Setting::Bare, 0, idle)?.lags_ms);
        for (i, &s) in settings.iter().enumerate() {
            let r = run_one(s, steps, idle)?;
            speed[i].push(r.steps_per_s);
            lags[i].extend(r.lags_ms);
        }
    }

    let mut lines = Vec::new();
    let (floor_p50, floor_p99) = report::percentiles(&mut floor);
    let floor_max = max(&floor);
    let bare = median(speed[0].clone()) / 1e6;
    eprintln!(
        "coop: {steps} steps/run, {rounds} round(s); idle timer floor p50 {floor_p50:.3} ms, \
         p99 {floor_p99:.3} ms, max {floor_max:.3} ms"
    );
    eprintln!(
        "{:<14} {:>9} {:>13} {:>13} {:>13} {:>8}",
        "setting", "speed", "lag p50-floor", "lag p99-floor", "lag max-floor", "samples"
    );
    for (i, &s) in settings.iter().enumerate() {
        let name = s.name();
        let ours = median(speed[i].clone()) / 1e6;
        let (p50, p99) = report::percentiles(&mut lags[i]);
        let worst = max(&lags[i]);
        eprintln!(
            "{name:<14} {:>8.1}% {:>10.3} ms {:>10.3} ms {:>10.3} ms {:>8}",
            100.0 * ours / bare,
            p50 - floor_p50,
            p99 - floor_p99,
            worst - floor_max,
            lags[i].len()
        );
        if i == 0 {
            continue;
        }
        let line = |case: &str, peer: &str, unit, o, p, better| {
            BenchLine::new(SUITE, case, &name, peer, unit, o, p, better)
        };
        lines.push(line(
            &format!("{name}_throughput"),
            "bare_loop",
            "Msteps/s",
            ours,
            bare,
            Better::Higher,
        ));
        for (what, o, p) in [
            ("p50", p50, floor_p50),
            ("p99", p99, floor_p99),
            ("max", worst, floor_max),
        ] {
            lines.push(line(
                &format!("{name}_lag_{what}"),
                "idle_timer_floor",
                "ms",
                o,
                p,
                Better::Lower,
            ));
        }
    }

    // The cost of a tick that does not yield: budgets that never run out,
    // in a hand-written loop awaiting `tick()` and through `for_each`.
    use futures::executor::block_on;
    let tick_steps = steps / 4;
    let tick_rounds = if args.quick { 1 } else { 5 };
    let never = Duration::from_secs(3600);
    let bare_ns = ns_per_step(tick_rounds, tick_steps, |n| {
        block_on(bare_countdown(n));
    });
    let costs = [
        ("tick_cost_every", "every_tick_loop", {
            ns_per_step(tick_rounds, tick_steps, |n| {
                block_on(tick_countdown(n, Budget::every(u32::MAX)));
            })
        }),
        ("tick_cost_slice", "slice_tick_loop", {
            ns_per_step(tick_rounds, tick_steps, |n| {
                block_on(tick_countdown(n, Budget::slice(never)));
            })
        }),
        ("tick_cost_every_for_each", "every_for_each", {
            ns_per_step(tick_rounds, tick_steps, |n| {
                block_on(for_each_countdown(n, Budget::every(u32::MAX)));
            })
        }),
        ("tick_cost_slice_for_each", "slice_for_each", {
            ns_per_step(tick_rounds, tick_steps, |n| {
                block_on(for_each_countdown(n, Budget::slice(never)));
            })
        }),
    ];
    for (case, ours, ns) in costs {
        eprintln!(
            "{case:<26} {ns:.3} ns/step vs bare {bare_ns:.3} ns/step: {:+.3} ns per tick",
            ns - bare_ns
        );
        lines.push(BenchLine::new(
            SUITE,
            case,
            ours,
            "bare_loop_step",
            "ns/step",
            ns,
            bare_ns,
            Better::Lower,
        ));
    }
    Ok(lines)
}
