//! The seed's experiments, measured: a workload runs on a loop under test
//! while the [ticker](crate::ticker) measures how late that loop wakes up.
//!
//! # The loop under test
//!
//! Every measurement runs on a fresh **current-thread** tokio runtime: one
//! thread runs every task, like asyncio's single event loop, so a task that
//! blocks that thread visibly blocks the ticker beside it. (On a
//! multi-thread runtime another worker would pick the ticker up and hide
//! part of the damage, not all of it.)
//!
//! # Modes
//!
//! A mode is how a workload runs its blocking step: one enum variant per
//! experiment and one function (see [`Offloader`] for the shared ones):
//! - `blocking`: called inline in the async task, which never awaits between
//!   calls, exactly like the seed's `blocking_worker` (`while True:
//!   blocking_task()`): the loop is blocked for the whole run;
//! - `default`: `offload::run(f).await`, the seed's `run_in_executor(None, f)`;
//! - `thread`: `pool.run(f).await` on an `offload::ThreadPool`;
//! - `coop` (CPU only): the step runs inline but yields every N steps or
//!   time slice (the seed's `cpu_workaround.py`), with an
//!   `offload::coop::Budget` (see [`cpu::Policy`]);
//! - `process`: `pool.call::<Task>(input).await` on an
//!   `offload::proc::ProcessPool` (the seed's `ProcessPoolExecutor`) of as
//!   many worker processes as the `thread` mode has threads. The work is a
//!   registered [`offload::proc::Task`] (see `tasks::registry`):
//!   its input and output cross a socket, serialised; the worker is this
//!   very executable, re-executed (see [`process_pool`]).

pub(crate) mod cpu;
pub(crate) mod io;
pub(crate) mod json;
pub(crate) mod sweep;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offload::proc::ProcessPool;

use serde::Serialize;

use crate::options::Common;
use crate::ticker::{LagStats, TickPrint, Ticker, ms};

/// How a measurement probes its loop.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// Ticker interval.
    pub(crate) tick: Duration,
    /// A tick later than this (a gap above `tick + threshold`) means
    /// "loop blocked".
    pub(crate) threshold: Duration,
    /// Print every tick (`--ticks`).
    pub(crate) print_ticks: bool,
    /// Print ticks as JSON.
    pub(crate) json: bool,
}

impl From<&Common> for Probe {
    fn from(c: &Common) -> Probe {
        Probe {
            tick: c.tick,
            threshold: c.threshold,
            print_ticks: c.ticks,
            json: c.json,
        }
    }
}

/// What a row measures: names for the table and the unit of its work.
#[derive(Debug, Clone)]
pub(crate) struct Label {
    /// `io`, `cpu`, `json`, `sweep`.
    pub(crate) experiment: &'static str,
    /// `blocking`, `default`, `thread`, `coop`, `process`.
    pub(crate) mode: &'static str,
    /// The mode's parameters, e.g. `tasks=8 threads=8`, `every=1000`.
    pub(crate) setting: String,
    /// What one unit of work is: `requests`, `countdowns`, `documents`.
    pub(crate) unit: &'static str,
}

/// The verdict on a row: was the loop blocked?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Verdict {
    /// No tick was more than the threshold late.
    #[serde(rename = "loop responsive")]
    Responsive,
    /// Some tick was more than the threshold late.
    #[serde(rename = "loop blocked")]
    Blocked,
}

impl Verdict {
    /// The text printed in tables and JSON.
    pub(crate) fn text(self) -> &'static str {
        match self {
            Verdict::Responsive => "loop responsive",
            Verdict::Blocked => "loop blocked",
        }
    }
}

/// One measured row: a JSON line with `--json`, a table line otherwise.
/// Figures that were not measured are NaN (JSON `null`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// Always `"row"` (tells rows from ticks and answers in JSON lines).
    pub(crate) kind: &'static str,
    /// See [`Label::experiment`].
    pub(crate) experiment: &'static str,
    /// See [`Label::mode`].
    pub(crate) mode: &'static str,
    /// See [`Label::setting`].
    pub(crate) setting: String,
    /// Wall time of the run, seconds.
    pub(crate) elapsed_s: f64,
    /// Ticker wake-ups during the run.
    pub(crate) ticks: u64,
    /// Longest gap between two ticks, ms.
    pub(crate) max_gap_ms: f64,
    /// Median lateness of a tick, ms.
    pub(crate) p50_lag_ms: f64,
    /// 99th percentile lateness of a tick, ms.
    pub(crate) p99_lag_ms: f64,
    /// Units of work done.
    pub(crate) work: f64,
    /// See [`Label::unit`].
    pub(crate) unit: &'static str,
    /// `work / elapsed_s`.
    pub(crate) work_per_s: f64,
    /// The verdict threshold, ms: blocked iff `max_gap_ms > tick_ms + threshold_ms`.
    pub(crate) threshold_ms: f64,
    /// The ticker's interval, ms.
    pub(crate) tick_ms: f64,
    /// `loop responsive` or `loop blocked`.
    pub(crate) verdict: Verdict,
    /// CPU rows: steps in one countdown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) countdown_steps: Option<u64>,
}

impl Row {
    fn measured(label: Label, elapsed: Duration, lag: LagStats, work: f64, probe: &Probe) -> Row {
        let (threshold_ms, tick_ms) = (ms(probe.threshold), ms(probe.tick));
        // The gap includes the tick's own sleep: judge how late it was.
        let verdict = if lag.max_gap_ms - tick_ms > threshold_ms {
            Verdict::Blocked
        } else {
            Verdict::Responsive
        };
        let secs = elapsed.as_secs_f64();
        Row {
            kind: "row",
            experiment: label.experiment,
            mode: label.mode,
            setting: label.setting,
            elapsed_s: secs,
            ticks: lag.ticks,
            max_gap_ms: lag.max_gap_ms,
            p50_lag_ms: lag.p50_lag_ms,
            p99_lag_ms: lag.p99_lag_ms,
            work,
            unit: label.unit,
            work_per_s: if secs > 0.0 { work / secs } else { f64::NAN },
            threshold_ms,
            tick_ms,
            verdict,
            countdown_steps: None,
        }
    }
}

/// Runs `workload` on a fresh current-thread runtime beside a ticker and
/// returns the row. `workload` gets the deadline (`now + duration`) and
/// returns the units of work it did; it should stop starting new work at
/// the deadline (work in progress may finish after it, and counts: the
/// rate divides by the real elapsed time).
pub(crate) fn measure<F, Fut>(
    probe: &Probe,
    label: Label,
    duration: Duration,
    workload: F,
) -> anyhow::Result<Row>
where
    F: FnOnce(Instant) -> Fut,
    Fut: Future<Output = anyhow::Result<f64>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    rt.block_on(async {
        let print = probe.print_ticks.then(|| TickPrint {
            label: format!("{}/{}", label.experiment, label.mode),
            json: probe.json,
        });
        let ticker = Ticker::spawn(probe.tick, print);
        // Let the ticker arm its first sleep before the workload starts.
        tokio::task::yield_now().await;
        let start = Instant::now();
        let work = workload(start + duration).await?;
        let elapsed = start.elapsed();
        let lag = ticker.finish().await;
        Ok(Row::measured(label, elapsed, lag, work, probe))
    })
}

/// Runs `tasks` tasks on the loop under test, each calling `step` in a loop
/// until `deadline`, and returns the units of work they did in total.
///
/// If `step` never awaits anything pending (the `blocking` mode), the
/// first task holds the loop until the deadline and the others find the
/// deadline passed: the seed's `blocking_worker`, which never awaits.
pub(crate) async fn loop_until<F, Fut>(
    tasks: usize,
    deadline: Instant,
    step: F,
) -> anyhow::Result<f64>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<f64>> + Send + 'static,
{
    let step = Arc::new(step);
    let handles: Vec<_> = (0..tasks.max(1))
        .map(|_| {
            let step = step.clone();
            tokio::spawn(async move {
                let mut done = 0.0;
                while Instant::now() < deadline {
                    done += step().await?;
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let mut total = 0.0;
    for h in handles {
        total += h.await??;
    }
    Ok(total)
}

/// Where a blocking step runs: inline on the loop, on the default pool, or
/// on a thread pool of its own. The shared half of the `blocking`,
/// `default` and `thread` modes.
#[derive(Debug)]
pub(crate) enum Offloader {
    /// Called inline: blocks the loop.
    Inline,
    /// `offload::run(f)`: the default pool (`run_in_executor(None, f)`).
    Default,
    /// `pool.run(f)` on an `offload::ThreadPool`.
    Pool(offload::ThreadPool),
}

impl Offloader {
    /// A thread pool named `lab-<name>` with `threads` threads.
    pub(crate) fn pool(name: &str, threads: usize) -> anyhow::Result<Offloader> {
        let pool = offload::ThreadPool::builder()
            .name(format!("lab-{name}"))
            .threads(threads.max(1))
            .build()?;
        Ok(Offloader::Pool(pool))
    }

    /// Runs the blocking closure `f` where this offloader says.
    pub(crate) async fn run<F, T, M>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        // `T` is generic here, so the guard against closures that return a
        // future is passed on to the callers (see `offload::Blocking`).
        T: offload::Blocking<M> + Send + 'static,
    {
        Ok(match self {
            Offloader::Inline => f(),
            Offloader::Default => offload::run_in_executor(offload::default_pool(), f).await?,
            Offloader::Pool(pool) => offload::run_in_executor(pool, f).await?,
        })
    }
}

/// A process pool named `lab-<name>` of `workers` worker processes (this
/// executable, re-executed: `main` serves the lab's registry), returned
/// once every worker has said hello, so that starting processes is not
/// charged to the row that uses it. Give up after 20 s.
///
/// Drop it outside the loop under test: dropping waits until every worker
/// has been reaped.
pub(crate) fn process_pool(name: &str, workers: usize) -> anyhow::Result<Arc<ProcessPool>> {
    let workers = workers.max(1);
    let pool = ProcessPool::builder()
        .name(format!("lab-{name}"))
        .workers(workers)
        .registry(crate::tasks::registry())
        .build()?;
    let start = Instant::now();
    while pool.metrics().workers < workers {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(20),
            "{} of {workers} worker processes started in 20 s",
            pool.metrics().workers
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(Arc::new(pool))
}
