//! `offload-lab bench coop`: the seed's `cpu_workaround.py`, measured.
//!
//! A CPU countdown (about 1 s of work when bare, ~1 ns per step) runs as a
//! spawned task on a tokio current-thread runtime beside a ticker task that
//! sleeps 1 ms in a loop and records how late each wake-up is. For every
//! setting (no yielding, a count budget for N in 10..1M, a slice budget of
//! 100 µs, 1 ms, 10 ms) we report the countdown's throughput against the bare
//! loop and the ticker's lag against the timer's own floor (the same ticker,
//! measured idle in the same run).
//!
//! - Budgets run the countdown through `Budget::for_each` and yield with
//!   `tokio::task::yield_now` (`Budget::yield_with`, as the library advises
//!   on tokio). Two more settings show the alternatives:
//!   `slice_1ms_tick_loop` (a hand-written loop awaiting `tick()` each step)
//!   and `slice_1ms_agnostic` (the runtime-agnostic `yield_now`, which
//!   tokio's `event_interval` delays).
//! - `heavy_*` cases do the same work in items of 8 steps (8 times fewer
//!   ticks): the N that suited the light items no longer does; the slice
//!   still does.
//! - The machine is shared, so throughput is per CPU time of the runtime
//!   thread and a wake-up's lateness leaves out the time the OS kept that
//!   thread waiting for a CPU (both from `/proc/thread-self/schedstat`;
//!   wall time where it is missing).
//! - Cases run in rounds, alternately; each throughput is the median of its
//!   rounds, lags pool the samples of all rounds.
//! - Last, the cost of one non-yielding tick against a bare loop step, in a
//!   hand-written loop and through `for_each`.

mod shifting;
mod ticker;

use super::BenchArgs;
use crate::report::{self, BenchLine, Better};
use offload::coop::Budget;
use shifting::shifting;
use std::hint::black_box;
use std::time::{Duration, Instant};
use ticker::{Schedstat, beside_ticker};

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

    /// Runs the countdown as this setting says, `K` steps per item (per
    /// tick). Budgets yield with tokio's `yield_now` (as the library's docs
    /// advise on tokio) unless the setting says otherwise.
    async fn countdown<const K: usize>(self, items: u64) -> u64 {
        let tokio_yield = |b: Budget| b.yield_with(tokio::task::yield_now);
        match self {
            Setting::Bare => bare_countdown::<K>(items).await,
            Setting::Every(n) => {
                for_each_countdown::<K>(items, tokio_yield(Budget::every(n))).await
            }
            Setting::Slice(d) => {
                for_each_countdown::<K>(items, tokio_yield(Budget::slice(d))).await
            }
            Setting::SliceTickLoop(d) => {
                tick_countdown::<K>(items, tokio_yield(Budget::slice(d))).await
            }
            Setting::SliceAgnostic(d) => for_each_countdown::<K>(items, Budget::slice(d)).await,
        }
    }
}

/// One benchmark case: a setting on the light countdown (one step per item)
/// or on the heavy one (`HEAVY` steps per item: same work, fewer ticks).
#[derive(Debug, Clone, Copy)]
struct Case {
    setting: Setting,
    heavy: bool,
}

/// Steps per item of the heavy countdown.
const HEAVY: usize = 8;

impl Case {
    fn name(self) -> String {
        let name = self.setting.name();
        if self.heavy {
            format!("heavy_{name}")
        } else {
            name
        }
    }

    /// Runs the countdown of `steps` steps.
    async fn run(self, steps: u64) -> u64 {
        if self.heavy {
            self.setting.countdown::<HEAVY>(steps / HEAVY as u64).await
        } else {
            self.setting.countdown::<1>(steps).await
        }
    }
}

/// One step of the countdown: an xor and a multiply on a running value
/// (a chain of dependent instructions, about 1 ns), which the compiler can
/// neither fold, vectorise nor reassociate across steps.
///
/// `black_box` guards the input and the result, not each step: a
/// `black_box` inside the loop is a compiler barrier over all memory, which
/// would force the budget's counter through memory on every step, a cost no
/// real loop body pays.
#[inline(always)]
fn step(x: u64, n: u64) -> u64 {
    (x ^ n).wrapping_mul(0x5851_f42d_4c95_7f2d)
}

/// The work of one item: `K` steps.
#[inline(always)]
fn item<const K: usize>(mut x: u64, n: u64) -> u64 {
    for _ in 0..K {
        x = step(x, n);
    }
    x
}

/// The countdown with no yield point: the peer of every setting. An async
/// fn like the others, so that they differ by the budget only.
async fn bare_countdown<const K: usize>(items: u64) -> u64 {
    let mut x = 0;
    for n in (0..black_box(items)).rev() {
        x = item::<K>(x, n);
    }
    black_box(x)
}

/// The countdown through `Budget::for_each`.
async fn for_each_countdown<const K: usize>(items: u64, mut budget: Budget) -> u64 {
    let mut x = 0;
    budget
        .for_each((0..black_box(items)).rev(), |n| x = item::<K>(x, n))
        .await;
    black_box(x)
}

/// The countdown as a hand-written loop awaiting a tick per item.
async fn tick_countdown<const K: usize>(items: u64, mut budget: Budget) -> u64 {
    let mut x = 0;
    for n in (0..black_box(items)).rev() {
        x = item::<K>(x, n);
        budget.tick().await;
    }
    black_box(x)
}

/// What one run of a setting measured.
#[derive(Debug)]
struct Run {
    /// Countdown steps per second of the runtime thread's CPU time (wall
    /// time where that is unknown), yields included.
    steps_per_s: f64,
    /// How late each ticker wake-up that overlapped the countdown was, in ms.
    lags_ms: Vec<f64>,
    /// CPU time of the runtime thread during the countdown (wall time where
    /// that is unknown).
    cpu: Duration,
}

/// Runs the countdown (or, with `steps == 0`, nothing for `idle`) beside the
/// ticker on a fresh current-thread runtime.
fn run_one(case: Case, steps: u64, idle: Duration) -> anyhow::Result<Run> {
    let ((start, end, cpu_start, cpu_end), samples) = beside_ticker(|| async move {
        let start = Instant::now();
        let cpu_start = thread_cpu();
        if steps == 0 {
            tokio::time::sleep(idle).await;
        } else {
            tokio::spawn(case.run(steps)).await?;
        }
        Ok((start, Instant::now(), cpu_start, thread_cpu()))
    })?;
    let lags_ms = samples
        .iter()
        .filter(|s| s.from < end && s.woke > start)
        .map(|s| s.late_ms)
        .collect();
    // On-CPU time of the runtime's only thread (this one) when Linux tells
    // it: other processes sharing the machine then do not count.
    let secs = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64(),
        _ => end.duration_since(start).as_secs_f64(),
    };
    Ok(Run {
        steps_per_s: steps as f64 / secs,
        lags_ms,
        cpu: Duration::from_secs_f64(secs),
    })
}

/// Time this thread has spent on a CPU (Linux); `None` elsewhere.
fn thread_cpu() -> Option<Duration> {
    Schedstat::open()?.on_cpu()
}

/// Steps of the bare countdown that take about `target`.
fn calibrate(target: Duration) -> u64 {
    let mut steps = 1_000_000u64;
    loop {
        let t = Instant::now();
        futures::executor::block_on(bare_countdown::<1>(steps));
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

/// `offload-coop` (the slice budgets' clock thread) in `/proc/self/task`:
/// its CPU time and voluntary context switches (= wake-ups), Linux only.
fn clock_thread() -> Option<(Duration, u64)> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != "offload-coop" {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
        let cpu = Duration::from_nanos(stat.split_whitespace().next()?.parse().ok()?);
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let wakeups = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
            .trim()
            .parse()
            .ok()?;
        return Some((cpu, wakeups));
    }
    None
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

    let light = |setting| Case {
        setting,
        heavy: false,
    };
    let heavy = |setting| Case {
        setting,
        heavy: true,
    };
    let ms = Duration::from_millis;
    let mut cases = vec![light(Setting::Bare)];
    cases.extend([10, 100, 1_000, 10_000, 100_000, 1_000_000].map(|n| light(Setting::Every(n))));
    cases.extend([100, 1_000, 10_000].map(|us| light(Setting::Slice(Duration::from_micros(us)))));
    cases.push(light(Setting::SliceTickLoop(ms(1))));
    cases.push(light(Setting::SliceAgnostic(ms(1))));
    // The same work in heavier items: the N that suited the light items
    // now lets the loop run 8 times longer between yields; the slice does not.
    cases.push(heavy(Setting::Bare));
    cases.extend([100_000, 1_000_000].map(|n| heavy(Setting::Every(n))));
    cases.push(heavy(Setting::Slice(ms(1))));

    // Rounds: the idle floor and every case, alternately.
    let mut floor: Vec<f64> = Vec::new();
    let mut speed: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut lags: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    // The clock thread's CPU is summed over the `slice_1ms` runs.
    let mut clock_cpu = Duration::ZERO;
    let mut clock_wakeups = 0;
    let mut clock_watched = Duration::ZERO;
    for _ in 0..rounds {
        floor.extend(run_one(light(Setting::Bare), 0, idle)?.lags_ms);
        for (i, &case) in cases.iter().enumerate() {
            let watch = !case.heavy && matches!(case.setting, Setting::Slice(d) if d == ms(1));
            let before = clock_thread();
            let r = run_one(case, steps, idle)?;
            if let (true, Some(b), Some(a)) = (watch, before, clock_thread()) {
                clock_cpu += a.0.saturating_sub(b.0);
                clock_wakeups += a.1.saturating_sub(b.1);
                clock_watched += r.cpu;
            }
            speed[i].push(r.steps_per_s);
            lags[i].extend(r.lags_ms);
        }
    }

    let mut lines = Vec::new();
    let (floor_p50, floor_p99) = report::percentiles(&mut floor);
    let floor_max = max(&floor);
    let bare_of = |heavy: bool| {
        let i = cases
            .iter()
            .position(|c| c.heavy == heavy && matches!(c.setting, Setting::Bare))
            .unwrap_or(0);
        (median(speed[i].clone()) / 1e6, cases[i].name())
    };
    eprintln!(
        "coop: {steps} steps/run, {rounds} round(s), speed per {} time, lag {}; idle timer \
         floor p50 {floor_p50:.3} ms, p99 {floor_p99:.3} ms, max {floor_max:.3} ms",
        if thread_cpu().is_some() {
            "CPU"
        } else {
            "wall"
        },
        if thread_cpu().is_some() {
            "minus run-queue waits"
        } else {
            "in wall time"
        }
    );
    eprintln!(
        "{:<26} {:>9} {:>13} {:>13} {:>13} {:>8}",
        "case", "speed", "lag p50-floor", "lag p99-floor", "lag max-floor", "samples"
    );
    for (i, &case) in cases.iter().enumerate() {
        let name = case.name();
        let (bare, bare_name) = bare_of(case.heavy);
        let ours = median(speed[i].clone()) / 1e6;
        let (p50, p99) = report::percentiles(&mut lags[i]);
        let worst = max(&lags[i]);
        eprintln!(
            "{name:<26} {:>8.1}% {:>10.3} ms {:>10.3} ms {:>10.3} ms {:>8}",
            100.0 * ours / bare,
            p50 - floor_p50,
            p99 - floor_p99,
            worst - floor_max,
            lags[i].len()
        );
        if matches!(case.setting, Setting::Bare) {
            continue;
        }
        let line = |case: &str, peer: &str, unit, o, p, better| {
            BenchLine::new(SUITE, case, &name, peer, unit, o, p, better)
        };
        lines.push(line(
            &format!("{name}_throughput"),
            &bare_name,
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

    // The shifting loop: step costs change under the budget's feet.
    let (phase, shift_rounds) = if args.quick {
        (Duration::from_millis(40), 1)
    } else {
        (Duration::from_millis(500), 2)
    };
    lines.extend(shifting(
        calibrate(phase),
        phase,
        shift_rounds,
        // The idle ticker's p99 gap: the timer's own floor, without the
        // rare outlier that an idle run's maximum can be.
        floor_p99 + TICK.as_secs_f64() * 1e3,
    )?);

    // What the slice budgets' clock thread cost: its CPU time against the
    // CPU time of the loops it watched, and whether it parked afterwards.
    if clock_watched > Duration::ZERO {
        let watched = clock_watched.as_secs_f64() * 1e3;
        let clock_ms = clock_cpu.as_secs_f64() * 1e3;
        eprintln!(
            "clock thread: {clock_ms:.1} ms of CPU and {clock_wakeups} wake-ups while the \
             slice_1ms cases ran ({watched:.0} ms of loop CPU)"
        );
        lines.push(BenchLine::new(
            SUITE,
            "clock_cpu_slice_1ms",
            "clock_thread",
            "slice_1ms_loop",
            "ms",
            clock_ms,
            watched,
            Better::Lower,
        ));
    }
    if let Some((cpu0, wake0)) = clock_thread() {
        std::thread::sleep(Duration::from_millis(300));
        if let Some((cpu1, wake1)) = clock_thread() {
            eprintln!(
                "clock thread with no budget ticking, 300 ms: {:.3} ms of CPU, {} wake-ups",
                cpu1.saturating_sub(cpu0).as_secs_f64() * 1e3,
                wake1.saturating_sub(wake0)
            );
        }
    }

    // The cost of a tick that does not yield: budgets that never run out,
    // in a hand-written loop awaiting `tick()` and through `for_each`.
    use futures::executor::block_on;
    let tick_steps = steps / 4;
    let tick_rounds = if args.quick { 1 } else { 5 };
    let never = Duration::from_secs(3600);
    let bare_ns = ns_per_step(tick_rounds, tick_steps, |n| {
        block_on(bare_countdown::<1>(n));
    });
    let costs = [
        ("tick_cost_every", "every_tick_loop", {
            ns_per_step(tick_rounds, tick_steps, |n| {
                block_on(tick_countdown::<1>(n, Budget::every(u32::MAX)));
            })
        }),
        ("tick_cost_slice", "slice_tick_loop", {
            ns_per_step(tick_rounds, tick_steps, |n| {
                block_on(tick_countdown::<1>(n, Budget::slice(never)));
            })
        }),
        ("tick_cost_every_for_each", "every_for_each", {
            ns_per_step(tick_rounds, tick_steps, |n| {
                block_on(for_each_countdown::<1>(n, Budget::every(u32::MAX)));
            })
        }),
        ("tick_cost_slice_for_each", "slice_for_each", {
            ns_per_step(tick_rounds, tick_steps, |n| {
                block_on(for_each_countdown::<1>(n, Budget::slice(never)));
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
