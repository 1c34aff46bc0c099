//! `offload-lab`: the seed's experiments, measured, and benchmarks of every
//! executor against its peers.
//!
//! Benchmarks print a human table, or with `--json` one object per line in
//! the format of [`report::BenchLine`].

mod bench;
mod chaos;
mod report;
mod tasks;

use clap::{Parser, Subcommand};

/// The offload laboratory.
#[derive(Debug, Parser)]
#[command(name = "offload-lab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks: ours against peers, measured in the same process, alternately.
    Bench(bench::BenchArgs),
    /// Reliability: kill workers, panic, time out, flood, kill the parent, shut down under load.
    Chaos(chaos::ChaosArgs),
}

fn main() -> anyhow::Result<()> {
    // This executable is also the lab's process-pool worker and the
    // ping-pong peer of `bench procs`: become one if started as one.
    offload::proc::run_worker_if_child(&bench::procs::registry());
    bench::procs::run_pingpong_if_child();
    chaos::run_child_if_requested();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Chaos(args) => chaos::run(&args),
    }
}
