//! `offload-lab cpu`: the seed's `cpu.py` (a countdown in a loop, inline or
//! offloaded) and `cpu_workaround.py` (the countdown yields every N steps).
//!
//! # The countdown's scale
//!
//! The seed counts 50,000,000 down to zero, which takes CPython a few
//! seconds; a Rust build does it far faster (each step goes through
//! [`black_box`] so the loop is not optimised away). So the lab measures its
//! own speed first and sizes one countdown to take about `--countdown`
//! (by default a third of `--duration`, at most the seed's ~4 s), and
//! states the scale: `steps = s × 50,000,000`. This also keeps debug builds
//! (tests) quick: the work follows the time budget, not a fixed count.

use std::fmt;
use std::hint::black_box;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use offload::coop::Budget;
use offload::proc::Task;
use serde::{Deserialize, Serialize};

use super::{Label, Offloader, Probe, Row, loop_until, measure, process_pool};
use crate::options::{Common, parse_duration, short};

/// The seed's countdown: `counter = 50000000`.
pub(crate) const SEED_STEPS: u64 = 50_000_000;

/// How the countdown runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CpuMode {
    /// Inline in the async task, which never awaits: the seed's `blocking_worker`.
    Blocking,
    /// `offload::run(countdown)`: the default pool.
    Default,
    /// `pool.run(countdown)` on an `offload::ThreadPool` of `--threads` threads.
    Thread,
    /// Inline, yielding every `--every` steps or `--slice` (the seed's
    /// `cpu_workaround.py`).
    Coop,
    /// `pool.call::<Countdown>(..)` on an `offload::proc::ProcessPool` of
    /// `--threads` worker processes (the seed's `ProcessPoolExecutor`).
    Process,
}

impl CpuMode {
    /// Every mode, in table order.
    pub(crate) const ALL: [CpuMode; 5] = [
        CpuMode::Blocking,
        CpuMode::Default,
        CpuMode::Thread,
        CpuMode::Coop,
        CpuMode::Process,
    ];

    fn name(self) -> &'static str {
        match self {
            CpuMode::Blocking => "blocking",
            CpuMode::Default => "default",
            CpuMode::Thread => "thread",
            CpuMode::Coop => "coop",
            CpuMode::Process => "process",
        }
    }
}

/// Arguments of `offload-lab cpu`.
#[derive(Debug, Args)]
pub(crate) struct CpuArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Modes to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) mode: Vec<CpuMode>,
    /// `coop`: yield every N steps (the seed: 1000) [default: 1000].
    #[arg(long, conflicts_with = "slice")]
    pub(crate) every: Option<u64>,
    /// `coop`: yield once this much time has passed since the last yield.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) slice: Option<Duration>,
    /// Concurrent tasks, each counting down in a loop.
    #[arg(long, default_value_t = 2)]
    pub(crate) tasks: usize,
    /// Threads of the `thread` mode's pool (the seed: `ThreadPoolExecutor(2)`),
    /// and worker processes of the `process` mode's pool.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
    /// How long one countdown should take here [default: duration / 3, at
    /// most 4s].
    #[arg(long, value_parser = parse_duration)]
    pub(crate) countdown: Option<Duration>,
}

/// The seed's `blocking_task`: counts `n` down to zero.
///
/// Never inlined, so that the calibration and every mode run the very same
/// machine code (a loop's speed can depend on where it lands).
#[inline(never)]
pub(crate) fn countdown(n: u64) -> f64 {
    let mut c = n;
    while c > 0 {
        c = black_box(c) - 1;
    }
    1.0
}

/// The countdown as a process-pool task: one countdown of `steps` steps
/// in a worker process (only the step count crosses the socket).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Countdown {
    /// Steps to count down.
    pub(crate) steps: u64,
}

impl Task for Countdown {
    const NAME: &'static str = "lab-countdown";
    type Input = Countdown;
    type Output = f64;
    fn run(input: Countdown) -> f64 {
        countdown(input.steps)
    }
}

/// When the `coop` mode yields: the seed's every N steps, or our time
/// slice. Made into an [`offload::coop::Budget`] by [`Policy::budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Every `n` steps (the seed's `if counter % N == 0`).
    Every(u64),
    /// Once `d` has passed since the last yield.
    Slice(Duration),
}

impl Policy {
    /// A fresh budget with this policy. It yields with
    /// `tokio::task::yield_now`, which lets tokio poll its timer driver
    /// before the task runs again: offload's runtime-agnostic yield would
    /// leave the ticker's timer unpolled for up to 61 yields of a spawned
    /// task on a current-thread runtime (see `offload::coop`, "On tokio").
    pub(crate) fn budget(self) -> Budget {
        match self {
            Policy::Every(n) => Budget::every(u32::try_from(n.max(1)).unwrap_or(u32::MAX)),
            Policy::Slice(d) => Budget::slice(d),
        }
        .yield_with(tokio::task::yield_now)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Every(n) => write!(f, "every={n}"),
            Policy::Slice(d) => write!(f, "slice={}", short(*d)),
        }
    }
}

/// Steps between two deadline checks of [`countdown_coop`].
const DEADLINE_EVERY: u64 = 1 << 16;

/// The seed's `cpu_workaround.py` countdown: counts `n` down, ticking the
/// budget every step, and stops early at `deadline` (checked every 2^16
/// steps). Returns the steps done.
///
/// The steps run under [`Budget::for_each`]: between two budget checks
/// they run in a plain loop, with the counter in a register, so a tick
/// that does not yield costs what it should (a decrement), not a store and
/// a load through the future's memory as `budget.tick().await` in the
/// loop's body would.
pub(crate) async fn countdown_coop(n: u64, policy: Policy, deadline: Instant) -> u64 {
    let mut budget = policy.budget();
    let mut c = n;
    while c > 0 {
        // The iterator is the counter (`c - 1` down to `c - chunk`): it
        // lives in a register inside `for_each`, where a counter captured
        // by the closure would be stored and reloaded around every
        // `black_box`, halving the speed.
        let chunk = c.min(DEADLINE_EVERY);
        budget
            .for_each((c - chunk..c).rev(), |i| {
                black_box(i);
            })
            .await;
        c -= chunk;
        if Instant::now() >= deadline {
            break;
        }
    }
    n - c
}

/// Countdown steps per second in this build, measured once per process.
///
/// The fastest of many short samples (about 60 ms in all): on a machine
/// shared with other work, a slow sample means we were preempted, not
/// that the countdown is slow.
pub(crate) fn steps_per_sec() -> f64 {
    static RATE: OnceLock<f64> = OnceLock::new();
    *RATE.get_or_init(|| {
        const CHUNK: u64 = 1 << 20;
        countdown(CHUNK); // warm up
        let start = Instant::now();
        let mut best = Duration::MAX;
        while start.elapsed() < Duration::from_millis(60) {
            let t = Instant::now();
            countdown(black_box(CHUNK));
            best = best.min(t.elapsed());
        }
        CHUNK as f64 / best.as_secs_f64().max(1e-9)
    })
}

/// One countdown's size, and how it compares with the seed's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    /// Steps in one countdown.
    pub(crate) steps: u64,
    /// Countdown steps per second in this build.
    pub(crate) rate: f64,
}

impl Scale {
    /// A countdown that takes about `target` here.
    pub(crate) fn for_time(target: Duration) -> Scale {
        let rate = steps_per_sec();
        let steps = (rate * target.as_secs_f64()).max(1.0) as u64;
        Scale { steps, rate }
    }

    /// The default target: a third of the run, between 10 ms and 4 s (the
    /// seed's countdown takes CPython about that long).
    pub(crate) fn for_duration(duration: Duration) -> Scale {
        Scale::for_time((duration / 3).clamp(Duration::from_millis(10), Duration::from_secs(4)))
    }

    /// `steps / 50,000,000`.
    pub(crate) fn factor(&self) -> f64 {
        self.steps as f64 / SEED_STEPS as f64
    }

    /// One line stating the scale.
    pub(crate) fn describe(&self) -> String {
        format!(
            "countdown: {} steps = {:.2} × the seed's 50,000,000, ≈ {:.0} ms each here \
             (this build counts 50,000,000 in {:.0} ms; CPython needs a few seconds)",
            group(self.steps),
            self.factor(),
            self.steps as f64 / self.rate * 1e3,
            SEED_STEPS as f64 / self.rate * 1e3,
        )
    }
}

/// The shape of the CPU workload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuConfig {
    /// Concurrent tasks.
    pub(crate) tasks: usize,
    /// Threads of the `thread` pool.
    pub(crate) threads: usize,
    /// The `coop` mode's yield policy.
    pub(crate) policy: Policy,
    /// One countdown's size.
    pub(crate) scale: Scale,
}

/// Measures one mode for `duration`.
pub(crate) fn row(
    mode: CpuMode,
    c: CpuConfig,
    probe: &Probe,
    duration: Duration,
) -> anyhow::Result<Row> {
    let setting = match mode {
        CpuMode::Thread => format!("tasks={} threads={}", c.tasks, c.threads),
        CpuMode::Process => format!("tasks={} workers={}", c.tasks, c.threads),
        CpuMode::Coop => format!("tasks={} {}", c.tasks, c.policy),
        _ => format!("tasks={}", c.tasks),
    };
    let label = Label {
        experiment: "cpu",
        mode: mode.name(),
        setting,
        unit: "countdowns",
    };
    let n = c.scale.steps;
    let mut row = match mode {
        CpuMode::Blocking | CpuMode::Default | CpuMode::Thread => {
            let offloader = Arc::new(match mode {
                CpuMode::Blocking => Offloader::Inline,
                CpuMode::Default => Offloader::Default,
                _ => Offloader::pool("cpu", c.threads)?,
            });
            measure(probe, label, duration, move |deadline| {
                loop_until(c.tasks, deadline, move || {
                    let offloader = offloader.clone();
                    async move { offloader.run(move || countdown(n)).await }
                })
            })?
        }
        CpuMode::Coop => measure(probe, label, duration, move |deadline| {
            // Countdowns cut short at the deadline count as fractions.
            loop_until(c.tasks, deadline, move || async move {
                Ok(countdown_coop(n, c.policy, deadline).await as f64 / n as f64)
            })
        })?,
        CpuMode::Process => {
            let pool = process_pool("cpu", c.threads)?;
            let shared = pool.clone();
            let row = measure(probe, label, duration, move |deadline| {
                loop_until(c.tasks, deadline, move || {
                    let pool = shared.clone();
                    async move { Ok(pool.call::<Countdown>(Countdown { steps: n }).await?) }
                })
            })?;
            // The last handle: dropping it reaps the workers, off the loop.
            drop(pool);
            row
        }
    };
    row.countdown_steps = Some(n);
    Ok(row)
}

/// `offload-lab cpu`: measures the chosen modes and prints them.
pub(crate) fn run(args: &CpuArgs) -> anyhow::Result<Vec<Row>> {
    let probe = Probe::from(&args.common);
    let duration = args.common.duration_or(Duration::from_secs(3));
    let scale = match args.countdown {
        Some(t) => Scale::for_time(t),
        None => Scale::for_duration(duration),
    };
    let policy = match (args.every, args.slice) {
        (_, Some(d)) => Policy::Slice(d),
        (n, None) => Policy::Every(n.unwrap_or(1000).max(1)),
    };
    let config = CpuConfig {
        tasks: args.tasks,
        threads: args.threads,
        policy,
        scale,
    };
    if !args.common.json {
        println!("{}", scale.describe());
    }
    let modes = if args.mode.is_empty() {
        CpuMode::ALL.to_vec()
    } else {
        args.mode.clone()
    };
    modes
        .into_iter()
        .map(|m| row(m, config, &probe, duration))
        .collect()
}

/// `31250000` → `31,250,000`.
pub(crate) fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coop_countdown_counts_every_step_or_stops_at_the_deadline() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let later = Instant::now() + Duration::from_secs(3600);
            for policy in [Policy::Every(10), Policy::Slice(Duration::from_millis(1))] {
                assert_eq!(countdown_coop(200_001, policy, later).await, 200_001);
            }
            let past = Instant::now();
            assert_eq!(
                countdown_coop(u64::MAX, Policy::Every(1000), past).await,
                DEADLINE_EVERY
            );
        });
    }
}
