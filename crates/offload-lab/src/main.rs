//! `offload-lab`: the seed's experiments, measured, and benchmarks of every
//! executor against its peers.
//!
//! The seed (a lesson on Python asyncio's `run_in_executor`) shows its
//! point with three scripts and a ticker whose printed timestamps show
//! gaps when the loop is blocked. Here each experiment runs on a
//! current-thread tokio runtime (one thread, like asyncio's loop) beside a
//! [lag probe](ticker) and reports measured figures: the longest gap
//! between ticks, the p99 lateness of a tick, the work done per second,
//! and a verdict. `demo` runs them all and answers the seed's questions.
//!
//! Experiments print a table, or with `--json` one object per line
//! ([`experiments::Row`]); benchmarks print [`report::BenchLine`]s.

mod bench;
mod chaos;
mod cluster;
mod demo;
mod experiments;
mod http;
mod options;
mod report;
mod summary;
mod tasks;
mod ticker;

use clap::{Parser, Subcommand};

/// The offload laboratory: the seed's experiments, measured.
///
/// Every experiment runs on a current-thread tokio runtime (one thread,
/// like asyncio's event loop) beside a ticker that measures how late the
/// loop wakes up. A row is `loop blocked` when a tick wakes up more than
/// `--threshold` (100 ms) late. Modes: `blocking` (inline), `default`
/// (offload::run), `thread` (an offload::ThreadPool), `coop` (yield every N
/// steps or time slice), `process` (an offload::proc::ProcessPool whose
/// workers are this executable).
#[derive(Debug, Parser)]
#[command(name = "offload-lab", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every experiment in short form, a summary with verdicts, and the
    /// seed's four questions answered from the figures.
    Demo(demo::DemoArgs),
    /// The seed's io.py: blocking HTTP GETs against a slow local service.
    Io(experiments::io::IoArgs),
    /// The seed's cpu.py and cpu_workaround.py: a countdown, inline,
    /// offloaded, or yielding.
    Cpu(experiments::cpu::CpuArgs),
    /// Walk every key of a generated multi-megabyte JSON document.
    Json(experiments::json::JsonArgs),
    /// The yield trade-off: throughput vs loop lag for N steps and time
    /// slices; writes a CSV and an SVG plot.
    Sweep(experiments::sweep::SweepArgs),
    /// Run the slow HTTP service alone; prints its URL on stdout.
    Serve(http::ServeArgs),
    /// Benchmarks: ours against peers, measured in the same process, alternately.
    Bench(bench::BenchArgs),
    /// The CPU experiment through NATS: a local nats-server (or --nats URL)
    /// and worker programs on this machine, one more per row.
    Cluster(cluster::ClusterArgs),
    /// Reliability: kill workers, panic, time out, flood, kill the parent, shut down under load.
    Chaos(chaos::ChaosArgs),
}

fn main() -> anyhow::Result<()> {
    // This executable is also the lab's process-pool worker and the
    // ping-pong peer of `bench procs`: become one if started as one.
    offload::proc::run_worker_if_child(&tasks::registry());
    bench::procs::run_pingpong_if_child();
    chaos::run_child_if_requested();
    cluster::run_child_if_requested();
    exit_quietly_on_broken_pipe();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Io(args) => {
            let rows = experiments::io::run(&args)?;
            summary::print_rows(&rows, args.common.json);
            Ok(())
        }
        Command::Cpu(args) => {
            let rows = experiments::cpu::run(&args)?;
            summary::print_rows(&rows, args.common.json);
            Ok(())
        }
        Command::Json(args) => {
            let rows = experiments::json::run(&args)?;
            summary::print_rows(&rows, args.common.json);
            Ok(())
        }
        Command::Sweep(args) => experiments::sweep::run(&args),
        Command::Serve(args) => http::serve(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Cluster(args) => {
            let rows = cluster::run(&args)?;
            summary::print_rows(&rows, args.common.json);
            Ok(())
        }
        Command::Chaos(args) => chaos::run(&args),
    }
}

/// `offload-lab demo | head` closes our stdout early; `println!` then
/// panics with "failed printing to stdout: Broken pipe". For a command-line
/// tool that is a normal way to stop, not a crash: exit quietly instead.
fn exit_quietly_on_broken_pipe() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
}
