//! `offload-lab bench <suite>`: each suite runs ours and its peers in the
//! same process, alternately, and reports [`BenchLine`]s.

mod coop;
mod floor;
mod foreign_load;
mod hogs;
mod monitor;
mod payload;
pub(crate) mod procs;
mod remote;
pub(crate) mod service;
mod threads;

use crate::report::{self, BenchLine};
use clap::{Args, ValueEnum};

/// Arguments of `offload-lab bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Which suite to run.
    #[arg(value_enum)]
    pub(crate) suite: Suite,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Shrink every measurement (for smoke tests); figures are then noisy.
    #[arg(long)]
    pub(crate) quick: bool,
    /// `bench threads`: queue capacity of our 2-thread pool (default: the
    /// pool's default, 1024).
    #[arg(long)]
    pub(crate) queue_capacity: Option<usize>,
}

/// The benchmark suites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Suite {
    /// Thread pools: ours against spawn_blocking, blocking::unblock, rayon,
    /// and a hand-rolled minimal pool (the floor).
    Threads,
    /// Process pool: ours against a raw socketpair and Python's ProcessPoolExecutor.
    Procs,
    /// Loop monitor: overhead of the stall detector and lag monitor, and
    /// stall detection latency.
    Monitor,
    /// Cooperative yielding: count and time-slice budgets against the bare loop.
    Coop,
    /// Remote pool on NATS: ours against raw async-nats request/reply.
    Remote,
    /// A real HTTP service (axum): `/health` latency while CPU-heavy
    /// `/walk` requests saturate every core, for each place `/walk` can
    /// run (inline, spawn_blocking, offload's pools at each priority,
    /// worker processes), against the idle floor and spawn_blocking.
    Service,
}

/// Runs the chosen suite and prints its lines.
pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let lines: Vec<BenchLine> = match args.suite {
        Suite::Threads => threads::run(args)?,
        Suite::Procs => procs::run(args)?,
        Suite::Monitor => monitor::run(args)?,
        Suite::Coop => coop::run(args)?,
        Suite::Remote => remote::run(args)?,
        Suite::Service => service::run(args)?,
    };
    report::print(&lines, args.json);
    Ok(())
}
