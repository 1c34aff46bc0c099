//! `offload-lab io`: the seed's `io.py`. Tasks on the loop under test GET a
//! slow HTTP service in a loop with a blocking client (`ureq`), inline or
//! offloaded, while the ticker measures the loop.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{Label, Offloader, Probe, Row, loop_until, measure};
use crate::http::SlowServer;
use crate::options::{Common, parse_duration};

/// How the blocking GET runs. (`process` needs the process pool: not built
/// yet.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum IoMode {
    /// Inline in the async task, which never awaits: the seed's `blocking_worker`.
    Blocking,
    /// `offload::run(get)`: the default pool, like `run_in_executor(None, get)`.
    Default,
    /// `pool.run(get)` on an `offload::ThreadPool` of `--threads` threads.
    Thread,
}

impl IoMode {
    /// Every mode, in table order.
    pub(crate) const ALL: [IoMode; 3] = [IoMode::Blocking, IoMode::Default, IoMode::Thread];

    fn name(self) -> &'static str {
        match self {
            IoMode::Blocking => "blocking",
            IoMode::Default => "default",
            IoMode::Thread => "thread",
        }
    }
}

/// Arguments of `offload-lab io`.
#[derive(Debug, Args)]
pub(crate) struct IoArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Modes to run, comma-separated (default: all). `process` (a process
    /// pool) is not built yet.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) mode: Vec<IoMode>,
    #[command(flatten)]
    pub(crate) config: IoConfig,
}

/// The shape of the I/O workload.
#[derive(Debug, Clone, Args)]
pub(crate) struct IoConfig {
    /// Concurrent tasks, each GETting in a loop.
    #[arg(long, default_value_t = 8)]
    pub(crate) tasks: usize,
    /// Threads of the `thread` mode's pool.
    #[arg(long, default_value_t = 8)]
    pub(crate) threads: usize,
    /// Latency of the slow service the lab starts.
    #[arg(long, value_parser = parse_duration, default_value = "50ms")]
    pub(crate) latency: Duration,
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig {
            tasks: 8,
            threads: 8,
            latency: Duration::from_millis(50),
        }
    }
}

/// A slow service and a client for it, shared by the rows of a run.
#[derive(Debug)]
pub(crate) struct IoBench {
    /// Kept alive for the rows; stops when dropped.
    server: SlowServer,
    agent: ureq::Agent,
    config: IoConfig,
}

impl IoBench {
    /// Starts the slow service on an ephemeral port and builds a client
    /// that keeps one pooled connection per task.
    pub(crate) fn start(config: IoConfig) -> anyhow::Result<IoBench> {
        let server = SlowServer::start(config.latency, 0)?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .max_idle_connections(config.tasks.max(1))
            .max_idle_connections_per_host(config.tasks.max(1))
            .build()
            .into();
        Ok(IoBench {
            server,
            agent,
            config,
        })
    }

    /// Measures one mode for `duration`.
    pub(crate) fn row(
        &self,
        mode: IoMode,
        probe: &Probe,
        duration: Duration,
    ) -> anyhow::Result<Row> {
        let c = &self.config;
        let offloader = Arc::new(match mode {
            IoMode::Blocking => Offloader::Inline,
            IoMode::Default => Offloader::Default,
            IoMode::Thread => Offloader::pool("io", c.threads)?,
        });
        let setting = match mode {
            IoMode::Thread => format!("tasks={} threads={}", c.tasks, c.threads),
            _ => format!("tasks={}", c.tasks),
        };
        let label = Label {
            experiment: "io",
            mode: mode.name(),
            setting,
            unit: "requests",
        };
        let (agent, url, tasks) = (self.agent.clone(), self.server.url(), c.tasks);
        measure(probe, label, duration, move |deadline| {
            loop_until(tasks, deadline, move || {
                let (offloader, agent, url) = (offloader.clone(), agent.clone(), url.clone());
                async move { offloader.run(move || get(&agent, &url)).await? }
            })
        })
    }
}

/// The seed's `blocking_task`: one blocking GET, body read to the end.
fn get(agent: &ureq::Agent, url: &str) -> anyhow::Result<f64> {
    agent.get(url).call()?.body_mut().read_to_string()?;
    Ok(1.0)
}

/// `offload-lab io`: measures the chosen modes and prints them.
pub(crate) fn run(args: &IoArgs) -> anyhow::Result<Vec<Row>> {
    let probe = Probe::from(&args.common);
    let duration = args.common.duration_or(Duration::from_secs(3));
    let bench = IoBench::start(args.config.clone())?;
    let modes = if args.mode.is_empty() {
        IoMode::ALL.to_vec()
    } else {
        args.mode.clone()
    };
    if !args.common.json {
        println!(
            "io: {} tasks GET {} (latency {} ms) with a blocking client, beside a {} ms ticker",
            args.config.tasks,
            bench.server.url(),
            args.config.latency.as_millis(),
            args.common.tick.as_millis()
        );
    }
    modes
        .into_iter()
        .map(|m| bench.row(m, &probe, duration))
        .collect()
}
