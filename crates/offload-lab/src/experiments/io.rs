//! `offload-lab io`: the seed's `io.py`. Tasks on the loop under test GET a
//! slow HTTP service in a loop with a blocking client (`ureq`), inline or
//! offloaded, while the ticker measures the loop.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::{Args, ValueEnum};
use offload::proc::Task;
use serde::{Deserialize, Serialize};

use super::{Label, Offloader, Probe, Row, loop_until, measure, process_pool};
use crate::http::SlowServer;
use crate::options::{Common, parse_duration};

/// How the blocking GET runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum IoMode {
    /// Inline in the async task, which never awaits: the seed's `blocking_worker`.
    Blocking,
    /// `offload::run(get)`: the default pool, like `run_in_executor(None, get)`.
    Default,
    /// `pool.run(get)` on an `offload::ThreadPool` of `--threads` threads.
    Thread,
    /// `pool.call::<HttpGet>(..)` on an `offload::proc::ProcessPool` of
    /// `--threads` worker processes (the seed's `ProcessPoolExecutor`).
    Process,
}

impl IoMode {
    /// Every mode, in table order.
    pub(crate) const ALL: [IoMode; 4] = [
        IoMode::Blocking,
        IoMode::Default,
        IoMode::Thread,
        IoMode::Process,
    ];

    fn name(self) -> &'static str {
        match self {
            IoMode::Blocking => "blocking",
            IoMode::Default => "default",
            IoMode::Thread => "thread",
            IoMode::Process => "process",
        }
    }
}

/// Arguments of `offload-lab io`.
#[derive(Debug, Args)]
pub(crate) struct IoArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Modes to run, comma-separated (default: all).
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
    /// Threads of the `thread` mode's pool, and worker processes of the
    /// `process` mode's pool.
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
        let agent = agent(config.tasks);
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
        let setting = match mode {
            IoMode::Thread => format!("tasks={} threads={}", c.tasks, c.threads),
            IoMode::Process => format!("tasks={} workers={}", c.tasks, c.threads),
            _ => format!("tasks={}", c.tasks),
        };
        let label = Label {
            experiment: "io",
            mode: mode.name(),
            setting,
            unit: "requests",
        };
        let (agent, url, tasks) = (self.agent.clone(), self.server.url(), c.tasks);
        if mode == IoMode::Process {
            let pool = process_pool("io", c.threads)?;
            let shared = pool.clone();
            let row = measure(probe, label, duration, move |deadline| {
                loop_until(tasks, deadline, move || {
                    let (pool, url) = (shared.clone(), url.clone());
                    async move {
                        let got = pool.call::<HttpGet>(HttpGet { url }).await?;
                        got.map_err(|e| anyhow::anyhow!("GET in a worker process: {e}"))
                    }
                })
            })?;
            // The last handle: dropping it reaps the workers, off the loop.
            drop(pool);
            return Ok(row);
        }
        let offloader = Arc::new(match mode {
            IoMode::Blocking => Offloader::Inline,
            IoMode::Default => Offloader::Default,
            _ => Offloader::pool("io", c.threads)?,
        });
        measure(probe, label, duration, move |deadline| {
            loop_until(tasks, deadline, move || {
                let (offloader, agent, url) = (offloader.clone(), agent.clone(), url.clone());
                async move { offloader.run(move || get(&agent, &url)).await? }
            })
        })
    }
}

/// The GET as a process-pool task: the URL goes to a worker process, which
/// GETs it with its own client (one per process, keeping its connections
/// alive like the parent's) and sends back 1.0, or the error as text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HttpGet {
    /// What to GET.
    pub(crate) url: String,
}

impl Task for HttpGet {
    const NAME: &'static str = "lab-http-get";
    type Input = HttpGet;
    type Output = Result<f64, String>;
    fn run(input: HttpGet) -> Result<f64, String> {
        static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
        let agent = AGENT.get_or_init(|| agent(1));
        get(agent, &input.url).map_err(|e| e.to_string())
    }
}

/// A blocking client that keeps up to `connections` idle connections.
fn agent(connections: usize) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .max_idle_connections(connections.max(1))
        .max_idle_connections_per_host(connections.max(1))
        .build()
        .into()
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
