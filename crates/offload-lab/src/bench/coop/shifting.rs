//! The shifting loop of `bench coop`: steps whose cost changes under the
//! budget's feet (trivial, then 20 µs, then 2 ms, then trivial again), a
//! tick awaited after each step, beside the ticker. Reports, per setting
//! and phase, the worst ticker gap against the idle timer's floor: a count
//! budget tuned for one phase lags in another; a time slice holds in all.

use std::hint::black_box;
use std::time::{Duration, Instant};

use offload::coop::Budget;

use super::ticker::{Sample, beside_ticker};
use super::{SUITE, Setting, step};
use crate::report::{BenchLine, Better};

/// The phases of the shifting loop: name, and what one step costs (zero:
/// a trivial step, one multiply).
const PHASES: [(&str, Duration); 4] = [
    ("trivial", Duration::ZERO),
    ("20us", Duration::from_micros(20)),
    ("2ms", Duration::from_millis(2)),
    ("trivial_again", Duration::ZERO),
];

/// The settings the shifting loop runs under.
fn shift_settings() -> [Setting; 4] {
    [
        Setting::Slice(Duration::from_millis(1)),
        Setting::Every(1_000),
        Setting::Every(1_000_000),
        Setting::Bare,
    ]
}

/// Steps in each phase: `trivial` trivial steps, and as many costly steps
/// as fill `phase`.
fn shift_plan(trivial: u64, phase: Duration) -> [u64; 4] {
    PHASES.map(|(_, cost)| {
        if cost.is_zero() {
            trivial
        } else {
            u64::try_from(phase.as_nanos() / cost.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1)
        }
    })
}

/// Burns `d` of CPU: a step of known cost.
fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// The shifting loop, written as a user would: a tick awaited after every
/// step (no budget: no yield at all). Returns when each phase began, and
/// when the loop ended.
async fn shifting_loop(plan: [u64; 4], mut budget: Option<Budget>) -> Vec<Instant> {
    let mut marks = Vec::with_capacity(PHASES.len() + 1);
    let mut x = 0;
    for (&(_, cost), &steps) in PHASES.iter().zip(&plan) {
        marks.push(Instant::now());
        for n in (0..black_box(steps)).rev() {
            if !cost.is_zero() {
                spin(cost);
            }
            x = step(x, n);
            if let Some(budget) = budget.as_mut() {
                budget.tick().await;
            }
        }
    }
    marks.push(Instant::now());
    black_box(x);
    marks
}

/// Runs the shifting loop under `setting` beside the ticker, on a fresh
/// current-thread runtime; returns the phase marks and the ticker's samples.
fn run_shift(setting: Setting, plan: [u64; 4]) -> anyhow::Result<(Vec<Instant>, Vec<Sample>)> {
    let budget = match setting {
        Setting::Every(n) => Some(Budget::every(n)),
        Setting::Slice(d) => Some(Budget::slice(d)),
        _ => None,
    }
    .map(|b| b.yield_with(tokio::task::yield_now));
    beside_ticker(|| async move { Ok(tokio::spawn(shifting_loop(plan, budget)).await?) })
}

/// The ticker's worst gap within `[a, b]`, in ms: the longest stretch of
/// that window in which the ticker was asleep or waiting to run, less the
/// share of its run-queue waits (other processes) that falls in the window.
/// A loop that never yields in a phase shows the whole phase.
fn worst_gap(samples: &[Sample], a: Instant, b: Instant) -> f64 {
    samples
        .iter()
        .filter(|s| s.from < b && s.woke > a)
        .map(|s| {
            let clipped = s.woke.min(b).saturating_duration_since(s.from.max(a));
            let whole = s.woke.saturating_duration_since(s.from).as_secs_f64();
            let share = if whole > 0.0 {
                clipped.as_secs_f64() / whole
            } else {
                0.0
            };
            clipped
                .saturating_sub(s.preempted.mul_f64(share))
                .as_secs_f64()
                * 1e3
        })
        .fold(0.0, f64::max)
}

/// Runs the shifting loop under every setting (`rounds` times, alternately)
/// and returns its lines; `floor_gap` is the idle ticker's p99 gap (ms).
pub(super) fn shifting(
    trivial: u64,
    phase: Duration,
    rounds: usize,
    floor_gap: f64,
) -> anyhow::Result<Vec<BenchLine>> {
    let plan = shift_plan(trivial, phase);
    let settings = shift_settings();
    let mut worst = vec![[0.0f64; PHASES.len()]; settings.len()];
    for _ in 0..rounds {
        for (i, &setting) in settings.iter().enumerate() {
            let (marks, samples) = run_shift(setting, plan)?;
            for (p, w) in worst[i].iter_mut().enumerate() {
                *w = w.max(worst_gap(&samples, marks[p], marks[p + 1]));
            }
        }
    }
    eprintln!(
        "shifting loop ({rounds} round(s); phases of {} trivial steps, {} × 20 µs, {} × 2 ms, {} \
         trivial; a tick awaited after each step): worst ticker gap minus the idle ticker's \
         p99 gap ({floor_gap:.3} ms)",
        plan[0], plan[1], plan[2], plan[3]
    );
    eprint!("{:<26}", "setting");
    for (name, _) in PHASES {
        eprint!(" {name:>14}");
    }
    eprintln!();
    let mut lines = Vec::new();
    for (setting, worst) in settings.iter().zip(&worst) {
        let name = setting.name();
        eprint!("{name:<26}");
        for (&(phase, _), &gap) in PHASES.iter().zip(worst) {
            eprint!(" {:>11.3} ms", gap - floor_gap);
            lines.push(BenchLine::new(
                SUITE,
                &format!("shift_max_gap_{phase}"),
                &name,
                "idle_timer_floor",
                "ms",
                gap,
                floor_gap,
                Better::Lower,
            ));
        }
        eprintln!();
    }
    Ok(lines)
}
