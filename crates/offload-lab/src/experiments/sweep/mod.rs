//! `offload-lab sweep`: the yield trade-off of the seed's
//! `cpu_workaround.py`. Yield too often and the loop slows down; too rarely
//! and the loop lags. A countdown task yields every N steps
//! (N = 10 … 1,000,000) or every time slice (100 µs, 1 ms, 10 ms); each
//! setting runs for `--duration` beside the ticker, on three loops:
//!
//! - **light**: a countdown, one tick per ~1.4 ns step;
//! - **heavy**: the same countdown in items of [`HEAVY_STEPS`] steps, one
//!   tick per item (the same work, a thousand times fewer ticks);
//! - **shifting**: steps whose cost changes under the budget's feet: trivial,
//!   then 20 µs, then 2 ms, then trivial again (a quarter of the run each).
//!
//! The N that keeps the light loop fast makes the heavy one lag, the N that
//! keeps the heavy one responsive slows the light one, and no N suits the
//! shifting loop; a time slice holds on all three. Writes `sweep.csv` and
//! `sweep.svg` (throughput against loop lag p99, one panel per loop).
//!
//! Throughput is per CPU time of the loop's thread (wall time off Linux),
//! relative to the same loop with no yield check at all. The
//! loops run under `budget.for_each`, whose steps between two budget checks
//! run in a plain loop: what separates a point from 100 % is the cost of the
//! yields themselves (large for small N: a trip through tokio's scheduler
//! costs far more than a hundred 1.4 ns steps).

use std::fmt::{self, Write as _};
use std::future::Future;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use clap::Args;

mod plot;

use super::cpu::Policy;
use super::{Label, Probe, Row, loop_until, measure};
use crate::options::Common;
use plot::plot;

/// Arguments of `offload-lab sweep`.
#[derive(Debug, Args)]
pub(crate) struct SweepArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Directory for `sweep.csv` and `sweep.svg`.
    #[arg(long, default_value = "target/offload-lab")]
    pub(crate) out: PathBuf,
}

/// Countdown steps in one item of the heavy loop.
pub(crate) const HEAVY_STEPS: u64 = 1_000;

/// The loops every setting runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// One tick per trivial countdown step.
    Light,
    /// One tick per item of [`HEAVY_STEPS`] countdown steps.
    Heavy,
    /// Steps of changing cost: trivial, 20 µs, 2 ms, trivial.
    Shifting,
}

impl Workload {
    /// Every loop, in panel order.
    pub(crate) const ALL: [Workload; 3] = [Workload::Light, Workload::Heavy, Workload::Shifting];

    fn name(self) -> &'static str {
        match self {
            Workload::Light => "light",
            Workload::Heavy => "heavy",
            Workload::Shifting => "shifting",
        }
    }

    /// The panel's caption.
    fn caption(self) -> String {
        match self {
            Workload::Light => "light steps: a tick per ~1.4 ns step".to_owned(),
            Workload::Heavy => format!("heavy steps: a tick per {HEAVY_STEPS} steps (~1.4 µs)"),
            Workload::Shifting => "shifting: trivial → 20 µs → 2 ms → trivial".to_owned(),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One point of the sweep: a yield policy on a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Point {
    /// The loop.
    pub(crate) workload: Workload,
    /// How it yields.
    pub(crate) policy: Policy,
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.workload, self.policy)
    }
}

/// The policies swept on each loop, in order: counts, then time slices.
fn policies() -> Vec<Policy> {
    let mut v: Vec<Policy> = [10, 100, 1_000, 10_000, 100_000, 1_000_000]
        .into_iter()
        .map(Policy::Every)
        .collect();
    v.extend(
        [100, 1_000, 10_000]
            .into_iter()
            .map(|us| Policy::Slice(Duration::from_micros(us))),
    );
    v
}

/// Every point, in order: each loop with every policy.
pub(crate) fn settings() -> Vec<Point> {
    Workload::ALL
        .into_iter()
        .flat_map(|workload| {
            policies()
                .into_iter()
                .map(move |policy| Point { workload, policy })
        })
        .collect()
}

/// The sweep's rows and where it wrote them.
#[derive(Debug)]
pub(crate) struct Sweep {
    /// One row per point (`work_per_s` in million countdown steps per
    /// second of the loop thread's CPU time; a spun step counts as the
    /// countdown steps that fit in it).
    pub(crate) rows: Vec<Row>,
    /// Each loop's speed without any yield check, M steps/s.
    pub(crate) bare_msteps_per_s: [f64; 3],
    /// The CSV file.
    pub(crate) csv: PathBuf,
    /// The SVG plot.
    pub(crate) svg: PathBuf,
}

/// Steps between two deadline checks of the light and heavy loops.
const DEADLINE_EVERY: u64 = 1 << 16;

/// The heavy loop: items of [`HEAVY_STEPS`] countdown steps, a tick after
/// each item, until `deadline` (checked every few thousand items). Returns
/// the steps done.
async fn heavy_countdown(policy: Policy, deadline: Instant) -> u64 {
    let mut budget = policy.budget();
    let items = DEADLINE_EVERY / 16;
    let mut x = 0;
    let mut done = 0;
    loop {
        budget.for_each(0..items, |n| x = heavy_item(x, n)).await;
        done += items * HEAVY_STEPS;
        if Instant::now() >= deadline {
            black_box(x);
            return done;
        }
    }
}

/// One step of the light and heavy loops: an xor and a multiply on a
/// running value, a chain of dependent instructions (about 1.4 ns here)
/// that the compiler can neither fold nor vectorise. Loop overhead and the
/// budget's checks run beside the chain, as they would beside real work;
/// a `black_box` per step instead would make the loop's bookkeeping the
/// work, and the figures a measure of code alignment.
#[inline(always)]
fn step(x: u64, n: u64) -> u64 {
    (x ^ n).wrapping_mul(0x5851_f42d_4c95_7f2d)
}

/// One item of the heavy loop: [`HEAVY_STEPS`] steps.
#[inline(always)]
fn heavy_item(mut x: u64, n: u64) -> u64 {
    for _ in 0..HEAVY_STEPS {
        x = step(x, n);
    }
    x
}

/// The light loop: one tick per step, until `deadline` (checked every
/// 2^16 steps). Returns the steps done.
async fn light_countdown(policy: Policy, deadline: Instant) -> u64 {
    let mut budget = policy.budget();
    let mut x = 0;
    let mut done = 0;
    loop {
        budget
            .for_each((0..DEADLINE_EVERY).rev(), |n| x = step(x, n))
            .await;
        done += DEADLINE_EVERY;
        if Instant::now() >= deadline {
            black_box(x);
            return done;
        }
    }
}

/// Burns `d` of CPU: a step of known cost.
fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// The shifting loop from `start` to `deadline`: a quarter each of trivial
/// steps, 20 µs steps, 2 ms steps and trivial steps, one tick per step.
/// Returns the work done in countdown steps (a spun step counts as the
/// countdown steps that fit in its time at full speed).
async fn shifting(policy: Policy, start: Instant, deadline: Instant) -> f64 {
    let quarter = deadline.saturating_duration_since(start) / 4;
    let mut budget = policy.budget();
    let rate = bare_speeds()[0] * 1e6;
    let mut work = 0.0;
    for (phase, cost) in [
        Duration::ZERO,
        Duration::from_micros(20),
        Duration::from_millis(2),
        Duration::ZERO,
    ]
    .into_iter()
    .enumerate()
    {
        let end = start + quarter * (phase as u32 + 1);
        if cost.is_zero() {
            let mut x = 0;
            while Instant::now() < end {
                budget
                    .for_each((0..DEADLINE_EVERY).rev(), |n| x = step(x, n))
                    .await;
                work += DEADLINE_EVERY as f64;
            }
            black_box(x);
        } else {
            let mut steps = 0u64;
            let until_end = std::iter::from_fn(|| (Instant::now() < end).then_some(()));
            budget
                .for_each(until_end, |()| {
                    spin(cost);
                    steps += 1;
                })
                .await;
            work += steps as f64 * cost.as_secs_f64() * rate;
        }
    }
    work
}

/// Runs `fut` and stores the CPU time the calling thread spent meanwhile
/// (the runtime's only thread: the loop and its ticker), where Linux tells it.
async fn cpu_timed<F: Future>(out: Arc<Mutex<Option<Duration>>>, fut: F) -> F::Output {
    let start = thread_cpu();
    let output = fut.await;
    if let (Some(a), Some(b)) = (start, thread_cpu()) {
        *out.lock().unwrap_or_else(PoisonError::into_inner) = Some(b.saturating_sub(a));
    }
    output
}

/// Time the calling thread has spent on a CPU (Linux); `None` elsewhere.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Steps per second of `run(n)` doing `n` steps, with no yield check:
/// the fastest of short samples over about 60 ms (a slow sample means the
/// thread was preempted, not that the loop is slow). Measured per process.
fn best_rate(cell: &OnceLock<f64>, steps: u64, run: impl Fn(u64)) -> f64 {
    *cell.get_or_init(|| {
        run(steps); // warm up
        let start = Instant::now();
        let mut best = Duration::MAX;
        while start.elapsed() < Duration::from_millis(60) {
            let t = Instant::now();
            run(black_box(steps));
            best = best.min(t.elapsed());
        }
        steps as f64 / best.as_secs_f64().max(1e-9)
    })
}

/// Each loop's speed with no yield check, M steps/s, in [`Workload::ALL`]
/// order: the same loop bodies as the points, without a budget. The
/// shifting loop's spun steps count at the light loop's speed, so its
/// no-yield speed is the light loop's.
fn bare_speeds() -> [f64; 3] {
    static LIGHT: OnceLock<f64> = OnceLock::new();
    static HEAVY: OnceLock<f64> = OnceLock::new();
    let light = best_rate(&LIGHT, 1 << 20, |steps| {
        let mut x = 0;
        for n in (0..steps).rev() {
            x = step(x, n);
        }
        black_box(x);
    });
    let heavy = best_rate(&HEAVY, (1 << 10) * HEAVY_STEPS, |steps| {
        let mut x = 0;
        for n in 0..steps / HEAVY_STEPS {
            x = heavy_item(x, n);
        }
        black_box(x);
    });
    [light / 1e6, heavy / 1e6, light / 1e6]
}

/// Runs every point for `duration` and writes `out/sweep.{csv,svg}`.
/// `progress` is called before each point with its index and label.
pub(crate) fn sweep(
    probe: &Probe,
    duration: Duration,
    out: &Path,
    mut progress: impl FnMut(usize, usize, &str),
) -> anyhow::Result<Sweep> {
    let all = settings();
    // Measured first: the shifting loop counts its spun steps with it.
    let bare = bare_speeds();
    let mut rows = Vec::new();
    for (i, point) in all.iter().copied().enumerate() {
        progress(i, all.len(), &point.to_string());
        let label = Label {
            experiment: "sweep",
            mode: "coop",
            setting: point.to_string(),
            unit: "Msteps",
        };
        let policy = point.policy;
        let cpu = Arc::new(Mutex::new(None));
        let on_cpu = cpu.clone();
        let mut row = match point.workload {
            Workload::Light => measure(probe, label, duration, move |deadline| {
                cpu_timed(
                    on_cpu,
                    loop_until(1, deadline, move || async move {
                        Ok(light_countdown(policy, deadline).await as f64 / 1e6)
                    }),
                )
            })?,
            Workload::Heavy => measure(probe, label, duration, move |deadline| {
                cpu_timed(
                    on_cpu,
                    loop_until(1, deadline, move || async move {
                        Ok(heavy_countdown(policy, deadline).await as f64 / 1e6)
                    }),
                )
            })?,
            Workload::Shifting => measure(probe, label, duration, move |deadline| {
                let start = deadline.checked_sub(duration).unwrap_or(deadline);
                cpu_timed(
                    on_cpu,
                    loop_until(1, deadline, move || async move {
                        Ok(shifting(policy, start, deadline).await / 1e6)
                    }),
                )
            })?,
        };
        // Throughput per CPU time of the loop's thread where Linux tells it:
        // other processes on a shared machine then do not count.
        let cpu = *cpu.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cpu) = cpu.filter(|d| !d.is_zero()) {
            row.work_per_s = row.work / cpu.as_secs_f64();
        }
        rows.push(row);
    }
    std::fs::create_dir_all(out)?;
    let csv = out.join("sweep.csv");
    let svg = out.join("sweep.svg");
    std::fs::write(&csv, to_csv(&all, &rows, bare))?;
    plot(&all, &rows, bare, &svg)?;
    Ok(Sweep {
        rows,
        bare_msteps_per_s: bare,
        csv,
        svg,
    })
}

/// A point's speed relative to its loop with no yield check, percent.
fn relative(point: &Point, row: &Row, bare: [f64; 3]) -> f64 {
    let i = Workload::ALL
        .iter()
        .position(|w| *w == point.workload)
        .unwrap_or(0);
    100.0 * row.work_per_s / bare[i]
}

fn to_csv(points: &[Point], rows: &[Row], bare: [f64; 3]) -> String {
    let mut s = String::from(
        "workload,kind,setting,msteps_per_s,percent_of_bare,p50_lag_ms,p99_lag_ms,max_gap_ms,\
         ticks,verdict\n",
    );
    for (p, r) in points.iter().zip(rows) {
        let kind = match p.policy {
            Policy::Every(_) => "every",
            Policy::Slice(_) => "slice",
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "{},{kind},{},{:.3},{:.1},{:.3},{:.3},{:.3},{},{}",
            p.workload,
            p.policy,
            r.work_per_s,
            relative(p, r, bare),
            r.p50_lag_ms,
            r.p99_lag_ms,
            r.max_gap_ms,
            r.ticks,
            r.verdict.text()
        );
    }
    for (w, speed) in Workload::ALL.iter().zip(bare) {
        let _ = writeln!(s, "{w},none,no yield,{speed:.3},100.0,,,,,");
    }
    s
}

/// `offload-lab sweep`: runs the sweep and prints its rows and files.
pub(crate) fn run(args: &SweepArgs) -> anyhow::Result<()> {
    let probe = Probe::from(&args.common);
    let duration = args.common.duration_or(Duration::from_secs(1));
    let quiet = args.common.json;
    let s = sweep(&probe, duration, &args.out, |i, n, label| {
        if !quiet {
            eprintln!("[{}/{n}] {label}", i + 1);
        }
    })?;
    report(&s, args.common.json);
    Ok(())
}

/// Prints a sweep: its rows, the reference speeds, and the files.
pub(crate) fn report(s: &Sweep, json: bool) {
    crate::summary::print_rows(&s.rows, json);
    let [light, heavy, _] = s.bare_msteps_per_s;
    if json {
        crate::summary::print_json(&serde_json::json!({
            "kind": "files",
            "inline_msteps_per_s": light,
            "heavy_inline_msteps_per_s": heavy,
            "csv": s.csv,
            "svg": s.svg,
        }));
    } else {
        println!(
            "reference: {light:.0} M steps/s (light), {heavy:.0} M steps/s (heavy) with no yield \
             check at all; wrote {} and {}",
            s.csv.display(),
            s.svg.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_loop_gets_every_policy() {
        let all = settings();
        assert_eq!(all.len(), 27);
        for w in Workload::ALL {
            assert_eq!(all.iter().filter(|p| p.workload == w).count(), 9);
        }
    }
}
