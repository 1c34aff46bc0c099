//! `offload-lab demo`: every experiment in short form, a summary table with
//! verdicts, the yield sweep, and the seed's four questions answered for
//! Rust from the rows just measured.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use crate::experiments::cpu::{self, CpuConfig, CpuMode, Policy, Scale};
use crate::experiments::io::{IoBench, IoConfig, IoMode};
use crate::experiments::json::{Doc, JsonMode};
use crate::experiments::{Probe, Row, sweep};
use crate::options::Common;
use crate::summary;

/// Arguments of `offload-lab demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// `--duration` is per row (default 2s); each sweep point gets a
    /// quarter of it.
    #[command(flatten)]
    pub(crate) common: Common,
    /// Size of the JSON document, in MB.
    #[arg(long, default_value_t = 8.0)]
    pub(crate) size_mb: f64,
    /// Directory for the sweep's `sweep.csv` and `sweep.svg`.
    #[arg(long, default_value = "target/offload-lab")]
    pub(crate) out: PathBuf,
    /// Skip the yield sweep.
    #[arg(long)]
    pub(crate) no_sweep: bool,
}

/// A progress line on stderr: rewritten in place on a terminal, one line
/// per step otherwise (and nothing at all in JSON mode's stdout).
#[derive(Debug)]
struct Progress {
    total: usize,
    done: usize,
    tty: bool,
    started: Instant,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    fn step(&mut self, what: &str) {
        self.done += 1;
        let line = format!(
            "[{:>2}/{}] {:<40} {:>5.1}s",
            self.done,
            self.total,
            what,
            self.started.elapsed().as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
        eprintln!(
            "demo: {} steps in {:.1}s",
            self.done,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Runs the demo and prints its report.
pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let probe = Probe::from(&args.common);
    let d = args.common.duration_or(Duration::from_secs(2));
    let json = args.common.json;
    let cpu_modes = [
        (CpuMode::Blocking, Policy::Every(1000)),
        (CpuMode::Default, Policy::Every(1000)),
        (CpuMode::Thread, Policy::Every(1000)),
        (CpuMode::Coop, Policy::Every(1000)),
        (CpuMode::Coop, Policy::Slice(Duration::from_millis(1))),
        (CpuMode::Process, Policy::Every(1000)),
    ];
    let sweep_points = if args.no_sweep {
        0
    } else {
        sweep::settings().len()
    };
    let mut progress =
        Progress::new(IoMode::ALL.len() + cpu_modes.len() + JsonMode::ALL.len() + sweep_points + 1);
    let mut rows: Vec<Row> = Vec::new();

    // io: the seed's io.py.
    let io_config = IoConfig::default();
    let io = IoBench::start(io_config.clone())?;
    for mode in IoMode::ALL {
        progress.step(&format!("io {mode:?}").to_lowercase());
        rows.push(io.row(mode, &probe, d)?);
    }
    drop(io);

    // cpu: the seed's cpu.py and cpu_workaround.py.
    progress.step("cpu: measuring the countdown's speed");
    let scale = Scale::for_duration(d);
    for (mode, policy) in cpu_modes {
        progress.step(&format!("cpu {mode:?} {policy}").to_lowercase());
        let config = CpuConfig {
            tasks: 2,
            threads: 2,
            policy,
            scale,
        };
        rows.push(cpu::row(mode, config, &probe, d)?);
    }

    // json: the seed's "walk every key of a multi-megabyte JSON".
    let doc = Doc::new(args.size_mb)?;
    for mode in JsonMode::ALL {
        progress.step(&format!("json {mode:?}").to_lowercase());
        rows.push(doc.row(mode, 2, 2, &probe, d)?);
    }

    // The yield trade-off, in short form.
    let swept = if args.no_sweep {
        None
    } else {
        Some(sweep::sweep(&probe, d / 4, &args.out, |_, _, label| {
            progress.step(&format!("sweep {label}"))
        })?)
    };
    progress.finish();

    let answers = summary::answers(&rows);
    if json {
        summary::print_json(&serde_json::json!({
            "kind": "setup",
            "duration_s": d.as_secs_f64(),
            "threshold_ms": probe.threshold.as_secs_f64() * 1e3,
            "io_latency_ms": io_config.latency.as_secs_f64() * 1e3,
            "countdown_steps": scale.steps,
            "countdown_scale": scale.factor(),
            "json_doc": doc.describe(),
        }));
        summary::print_rows(&rows, true);
        if let Some(s) = &swept {
            sweep::report(s, true);
        }
        summary::print_answers(&answers, true);
        return Ok(());
    }
    println!(
        "offload-lab demo: each row runs {:.1}s on a current-thread tokio runtime beside a {} ms ticker;",
        d.as_secs_f64(),
        probe.tick.as_millis()
    );
    println!(
        "verdict: `loop blocked` when a tick wakes up more than {} ms late (max gap > {} ms).",
        probe.threshold.as_millis(),
        (probe.tick + probe.threshold).as_millis()
    );
    println!(
        "io: {} tasks GET a local service answering after {} ms (blocking client: ureq)",
        io_config.tasks,
        io_config.latency.as_millis()
    );
    println!("{}", scale.describe());
    println!("{}", doc.describe());
    println!();
    summary::print_rows(&rows, false);
    if let Some(s) = &swept {
        println!();
        println!(
            "yield trade-off (sweep, {:.2}s per setting, work/s in M countdown steps/s):",
            (d / 4).as_secs_f64()
        );
        sweep::report(s, false);
    }
    println!();
    println!("The seed's four questions, answered for Rust from the rows above:");
    summary::print_answers(&answers, false);
    Ok(())
}
