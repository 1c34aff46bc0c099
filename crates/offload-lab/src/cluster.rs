//! `offload-lab cluster`: the seed's CPU experiment, run through NATS on
//! worker processes (`offload_nats::Worker`s) beside the ticker.
//!
//! It starts a local `nats-server` (or uses `--nats URL`) and worker
//! programs on this machine (this executable, re-executed in a hidden
//! mode, see [`run_child_if_requested`]), one more for each row: the
//! countdowns go over NATS, the loop under test only awaits them, and the
//! work done per second grows with the workers while the ticker stays on
//! time.
//!
//! The bench `remote` and the `remote-*` chaos scenarios start their
//! workers and servers with the helpers here.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use offload_nats::{LocalServer, Mode, RemotePool, Worker};

use crate::experiments::cpu::{Countdown, Scale};
use crate::experiments::{Label, Probe, Row, loop_until, measure};
use crate::options::Common;

/// Selects the hidden child mode (`worker`, `worker-in-process` or `responder`).
const CHILD_ENV: &str = "OFFLOAD_LAB_NATS_CHILD";
/// The server a child connects to.
const URL_ENV: &str = "OFFLOAD_LAB_NATS_URL";
/// A worker child's ack wait, in ms.
const ACK_WAIT_ENV: &str = "OFFLOAD_LAB_NATS_ACK_WAIT_MS";
/// The subject raw request/reply peers answer on.
pub(crate) const RAW_SUBJECT: &str = "lab.raw.echo";

/// Arguments of `offload-lab cluster`.
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Use this running server instead of starting one (`nats://host:port`).
    #[arg(long)]
    pub(crate) nats: Option<String>,
    /// Worker programs to go up to, one more for each row (each runs one
    /// worker process).
    #[arg(long, default_value_t = 2)]
    pub(crate) workers: usize,
    /// Countdowns in flight per worker.
    #[arg(long, default_value_t = 2)]
    pub(crate) tasks_per_worker: usize,
    /// How long one countdown should take here [default: duration / 3, at most 4s].
    #[arg(long, value_parser = crate::options::parse_duration)]
    pub(crate) countdown: Option<Duration>,
}

/// If this process was started as a NATS child (a worker or a raw
/// request/reply responder), serve until killed or SIGTERM, then exit.
/// Call near the top of `main`, after `run_worker_if_child`.
pub(crate) fn run_child_if_requested() {
    let Some(mode) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let url = std::env::var(URL_ENV).unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("offload-lab: no runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = rt.block_on(async {
        match mode.to_str() {
            Some("worker") => serve_worker(&url, false, false).await,
            Some("worker-balanced") => serve_worker(&url, false, true).await,
            Some("worker-in-process") => serve_worker(&url, true, false).await,
            Some("responder") => serve_raw(&url).await,
            _ => {
                eprintln!("unknown NATS child mode {mode:?}");
                2
            }
        }
    });
    std::process::exit(code);
}

/// A worker of one process (or thread); `balanced`: it holds only what it
/// can run and turns away the rest (`queue(0)`), which spreads few long
/// calls over the workers (see `WorkerBuilder::queue`).
async fn serve_worker(url: &str, in_process: bool, balanced: bool) -> i32 {
    let ack_wait = std::env::var(ACK_WAIT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_millis);
    let mut builder = Worker::builder()
        .url(url)
        .registry(crate::tasks::registry());
    builder = if in_process {
        builder.in_process(1)
    } else {
        builder.processes(1)
    };
    if balanced {
        // Long calls: hold only what the process starts next (one
        // running, one ready), turn the rest away to an idle worker.
        builder = builder.queue(0).pipeline_depth(2);
    }
    let built = builder
        .ack_wait(ack_wait)
        .max_deliver(10)
        .shutdown_grace(Duration::from_secs(2))
        .connect_options(
            offload_nats::async_nats::ConnectOptions::new()
                .reconnect_delay_callback(|_| Duration::from_millis(100)),
        )
        .build()
        .await;
    match built {
        Ok(w) => {
            println!("ready {}", w.name());
            w.serve().await;
            0
        }
        Err(e) => {
            eprintln!("offload-lab worker: {e}");
            1
        }
    }
}

/// The raw peer: echoes every request, nothing else (a queue group, so
/// several share the load like workers do).
async fn serve_raw(url: &str) -> i32 {
    use futures::StreamExt;
    let Ok(client) = offload_nats::async_nats::connect(url).await else {
        return 1;
    };
    let Ok(mut sub) = client.queue_subscribe(RAW_SUBJECT, "lab".to_owned()).await else {
        return 1;
    };
    let _ = client.flush().await;
    println!("ready responder");
    while let Some(m) = sub.next().await {
        if let Some(reply) = m.reply {
            let _ = client.publish(reply, m.payload).await;
        }
    }
    0
}

/// A child process of this lab (a worker or a responder); SIGKILLed and
/// reaped when dropped.
#[derive(Debug)]
pub(crate) struct NatsChild {
    child: Option<Child>,
}

impl NatsChild {
    /// Starts a child in `mode` and waits (up to 30 s) until it serves.
    pub(crate) fn start(mode: &str, url: &str, ack_wait: Option<Duration>) -> anyhow::Result<Self> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(CHILD_ENV, mode)
            .env(URL_ENV, url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(a) = ack_wait {
            cmd.env(ACK_WAIT_ENV, a.as_millis().to_string());
        }
        let mut child = cmd.spawn()?;
        let out = child.stdout.take();
        let mut me = NatsChild { child: Some(child) };
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = out {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l.starts_with("ready") => Ok(me),
            other => {
                me.kill();
                anyhow::bail!("the NATS {mode} did not start: {other:?}")
            }
        }
    }

    /// Its pid (0 once killed).
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL, reaped.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A local server, with the install command in the error if
/// `nats-server` is missing.
pub(crate) fn local_server() -> anyhow::Result<LocalServer> {
    LocalServer::start().map_err(|e| anyhow::anyhow!("cannot start a local nats-server: {e}"))
}

/// A multi-thread runtime (one thread) that owns NATS clients: their
/// connections live there, so any loop can await their calls.
pub(crate) fn nats_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("lab-nats")
        .enable_all()
        .build()?)
}

/// `offload-lab cluster`: one row per worker count.
pub(crate) fn run(args: &ClusterArgs) -> anyhow::Result<Vec<Row>> {
    let server = match &args.nats {
        Some(_) => None,
        None => Some(local_server()?),
    };
    let url = match (&args.nats, &server) {
        (Some(u), _) => u.clone(),
        (None, Some(s)) => s.url(),
        (None, None) => unreachable!("a server was started"),
    };
    let duration = args.common.duration_or(Duration::from_secs(3));
    let scale = match args.countdown {
        Some(t) => Scale::for_time(t),
        None => Scale::for_duration(duration),
    };
    if !args.common.json {
        println!("NATS at {url}; {}", scale.describe());
    }
    let nats = nats_runtime()?;
    let pool = Arc::new(
        nats.block_on(
            RemotePool::builder()
                .url(url.clone())
                .mode(Mode::Direct)
                .build(),
        )?,
    );
    let probe = Probe::from(&args.common);
    let mut workers = Vec::new();
    let mut rows = Vec::new();
    for n in 1..=args.workers.max(1) {
        // Long calls: workers that take only what they can run, so that
        // they share them (see `WorkerBuilder::queue`).
        workers.push(NatsChild::start("worker-balanced", &url, None)?);
        let tasks = args.tasks_per_worker.max(1) * n;
        let label = Label {
            experiment: "cpu",
            mode: "remote",
            setting: format!("tasks={tasks} workers={n}"),
            unit: "countdowns",
        };
        let steps = scale.steps;
        let shared = pool.clone();
        let mut row = measure(&probe, label, duration, move |deadline| {
            loop_until(tasks, deadline, move || {
                let pool = shared.clone();
                async move { Ok(pool.call::<Countdown>(Countdown { steps }).await?) }
            })
        })?;
        row.countdown_steps = Some(steps);
        rows.push(row);
    }
    drop(workers);
    drop(pool);
    drop(nats);
    drop(server);
    Ok(rows)
}
