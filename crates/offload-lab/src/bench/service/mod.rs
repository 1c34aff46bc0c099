//! `bench service`: a real HTTP service (axum on a tokio multi-thread
//! runtime, one worker per core, on `127.0.0.1`) whose `GET /health` is
//! probed every 10 ms while four clients keep `GET /walk` (parse an 8 MB
//! JSON document and count its nodes) saturating every core. What differs
//! from mode to mode is only where `/walk` runs: inline in the handler,
//! tokio's `spawn_blocking`, offload's pools at their priorities, or
//! worker processes.
//!
//! The question is the one `Priority` answers: does the offloaded work
//! delay the loop's threads? A health check that a load balancer times
//! out kills the service, however fast `/walk` is; so each mode's probe
//! p99 is reported against the idle floor (the same server, no load,
//! measured first in the same run), and each offloaded mode's walk rate
//! against `spawn_blocking`'s, the answer most tokio services reach for.
//!
//! Everything runs in this program, bounded: the load is plain threads
//! with blocking clients (`load.rs`), every request has a timeout, every
//! thread is joined with a deadline, and the server shuts down gracefully
//! (`server.rs`) before the next mode starts.

mod load;
mod server;
mod settle;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use offload::proc::Task;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::BenchArgs;
use crate::experiments::json;
use crate::report::{BenchLine, Better, percentiles};
use load::{Load, Measured};
use server::Server;

/// Where `/walk` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// In the handler, on the runtime's worker thread: the loop blocks.
    Inline,
    /// `tokio::task::spawn_blocking`: threads at the loop's own priority.
    SpawnBlocking,
    /// `offload::run`: the I/O default pool (cpus + 4 threads, Normal).
    OffloadRun,
    /// `offload::compute`: the CPU pool (one thread per core, Background).
    CpuPool,
    /// An `offload::ThreadPool` of 2 threads at `Priority::Normal`.
    ThreadpoolNormal,
    /// An `offload::ThreadPool` of 2 threads at `Priority::Background`
    /// (the default).
    ThreadpoolBackground,
    /// An `offload::ThreadPool` of 2 threads at `Priority::Idle` (the idle
    /// scheduling class).
    ThreadpoolIdle,
    /// An `offload::proc::ProcessPool` of 2 workers at the default
    /// priority (Background).
    Processpool,
    /// An `offload::proc::ProcessPool` of 2 workers at `Priority::Idle`.
    ProcesspoolIdle,
    /// An `offload::proc::ProcessPool` of 2 workers at `Priority::Normal`.
    ProcesspoolNormal,
}

impl Mode {
    /// Every mode, in table order.
    pub(crate) const ALL: [Mode; 10] = [
        Mode::Inline,
        Mode::SpawnBlocking,
        Mode::OffloadRun,
        Mode::CpuPool,
        Mode::ThreadpoolNormal,
        Mode::ThreadpoolBackground,
        Mode::ThreadpoolIdle,
        Mode::Processpool,
        Mode::ProcesspoolIdle,
        Mode::ProcesspoolNormal,
    ];

    /// The name in the lines (`ours`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Inline => "inline",
            Mode::SpawnBlocking => "spawn_blocking",
            Mode::OffloadRun => "offload_run",
            Mode::CpuPool => "cpu_pool",
            Mode::ThreadpoolNormal => "threadpool_normal",
            Mode::ThreadpoolBackground => "threadpool_background",
            Mode::ThreadpoolIdle => "threadpool_idle",
            Mode::Processpool => "processpool",
            Mode::ProcesspoolIdle => "processpool_idle",
            Mode::ProcesspoolNormal => "processpool_normal",
        }
    }
}

/// What a document is generated from: the thread modes generate it once
/// in the parent, each process worker once for itself, from the same spec
/// and the same generator, so every mode does the same CPU work per call
/// and a call to a worker ships 16 bytes instead of megabytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DocSpec {
    /// Size of the document, bytes (at least).
    pub(crate) bytes: usize,
    /// Seed of the generator.
    pub(crate) seed: u64,
}

impl DocSpec {
    /// The document: the `json` experiment's generator (nested records of
    /// numbers, strings, arrays and objects), one generator for the lab.
    pub(crate) fn generate(self) -> Vec<u8> {
        json::generate(self.bytes, self.seed)
    }
}

/// Parses `bytes` into a `serde_json::Value` and counts its nodes (every
/// object, array, string, number, bool and null): `/walk`'s work.
pub(crate) fn walk_nodes(bytes: &[u8]) -> anyhow::Result<u64> {
    let doc: Value = serde_json::from_slice(bytes)?;
    // An explicit stack: no recursion limit to worry about.
    let mut stack = vec![&doc];
    let mut nodes = 0u64;
    while let Some(v) = stack.pop() {
        nodes += 1;
        match v {
            Value::Object(map) => stack.extend(map.values()),
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    Ok(nodes)
}

/// `/walk` as a process-pool task: the worker generates the document from
/// its spec on the first call and keeps it for its lifetime (a
/// `OnceLock`: one document per worker), then parses and walks it on every
/// call. Returns the node count, or the error as text.
#[derive(Debug)]
pub(crate) struct ServiceWalk;

impl Task for ServiceWalk {
    const NAME: &'static str = "lab-service-walk";
    type Input = DocSpec;
    type Output = Result<u64, String>;
    fn run(spec: DocSpec) -> Result<u64, String> {
        static DOC: OnceLock<(DocSpec, Vec<u8>)> = OnceLock::new();
        let (built, bytes) = DOC.get_or_init(|| (spec, spec.generate()));
        // One bench run uses one spec; a worker asked for another one
        // would parse the wrong document and skew the figures: refuse.
        if *built != spec {
            return Err(format!(
                "this worker holds the document of {built:?}, asked for {spec:?}"
            ));
        }
        walk_nodes(bytes).map_err(|e| e.to_string())
    }
}

/// The generated document, shared by the server's handlers.
#[derive(Debug, Clone)]
pub(crate) struct Doc {
    /// What it was generated from (what process workers get).
    pub(crate) spec: DocSpec,
    /// The JSON text.
    pub(crate) bytes: Arc<Vec<u8>>,
    /// Its node count: what every walk must find.
    pub(crate) nodes: u64,
}

impl Doc {
    fn new(spec: DocSpec) -> anyhow::Result<Doc> {
        let bytes = spec.generate();
        let nodes = walk_nodes(&bytes)?;
        Ok(Doc {
            spec,
            bytes: Arc::new(bytes),
            nodes,
        })
    }
}

/// How long each phase lasts.
#[derive(Debug, Clone, Copy)]
struct Timing {
    warmup: Duration,
    measure: Duration,
}

/// `/walk` clients, each sending its next request as soon as the last
/// one is answered: twice the cores of the 2-core machines this runs on,
/// so every core stays busy even while a client reads its response.
const CLIENTS: usize = 4;

/// Set in the child process that measures one mode: the mode's name, or
/// `idle`.
const ONE_MODE_ENV: &str = "OFFLOAD_SERVICE_MODE";

/// The longest a child may take to measure its mode (its own waits are
/// bounded well below this).
const CHILD_LIMIT: Duration = Duration::from_secs(120);

/// Measures `mode` in a fresh process of this program, as a service runs
/// one configuration: in one process, after several other servers had
/// come and gone, in-process thread pools showed probe stalls of ~30 ms
/// that no pair of modes reproduced on its own (not leftover CPU work:
/// the CPUs were quiet before each mode; not the starvation guard: it
/// moved no thread).
fn measure_in_child(mode: Option<Mode>, quick: bool) -> anyhow::Result<Measured> {
    use anyhow::Context as _;
    let name = mode.map_or("idle", Mode::name);
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["bench", "service"]);
    if quick {
        cmd.arg("--quick");
    }
    let mut child = cmd
        .env(ONE_MODE_ENV, name)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("bench service: starting the child for a mode")?;
    let deadline = std::time::Instant::now() + CHILD_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("bench service: mode {name} took longer than {CHILD_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        std::io::Read::read_to_string(&mut stdout, &mut out)?;
    }
    anyhow::ensure!(
        status.success(),
        "bench service: mode {name} failed ({status})"
    );
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .with_context(|| format!("bench service: mode {name} printed {out:?}"))
}

/// The child's half of [`measure_in_child`]: measures the mode named by
/// [`ONE_MODE_ENV`] and prints what it measured as one JSON line.
fn measure_here(name: &str, doc: &Doc, timing: Timing) -> anyhow::Result<()> {
    let mode = match name {
        "idle" => None,
        _ => Some(
            Mode::ALL
                .into_iter()
                .find(|m| m.name() == name)
                .ok_or_else(|| anyhow::anyhow!("bench service: no mode {name}"))?,
        ),
    };
    let measured = measure(mode, doc, timing)?;
    println!("{}", serde_json::to_string(&measured)?);
    Ok(())
}

/// Runs a server in `mode` (or, for `None`, the idle floor: the same
/// server with no `/walk` load) and measures it.
fn measure(mode: Option<Mode>, doc: &Doc, timing: Timing) -> anyhow::Result<Measured> {
    let name = mode.map_or("idle", Mode::name);
    let (waited, quiet) = settle::settle();
    if !quiet || waited > Duration::from_millis(500) {
        eprintln!(
            "service: waited {waited:.1?} for the CPUs to go quiet before {name}{}",
            if quiet { "" } else { " (they did not)" }
        );
    }
    let server = Server::start(mode.unwrap_or(Mode::Inline), doc)?;
    let clients = if mode.is_some() { CLIENTS } else { 0 };
    let measured = Load::start(server.url(), clients).and_then(|load| load.run(timing));
    // Shut down whatever happened to the load: no server outlives its mode.
    let shutdown = server.shutdown();
    let measured = measured.map_err(|e| e.context(format!("bench service: mode {name}")))?;
    shutdown.map_err(|e| e.context(format!("bench service: shutting down mode {name}")))?;
    Ok(measured)
}

/// `offload-lab bench service`: the idle floor and every mode, in rounds
/// that alternate the order (a neighbour's burst, or the machine warming
/// up, then falls on every mode a little instead of on one mode a lot);
/// each mode's probes from all rounds make its percentiles.
pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<Vec<BenchLine>> {
    // Quick runs are smoke tests in debug builds, where an unoptimised
    // parse of 8 MB takes about a second: a small document keeps several
    // walks inside even a short window.
    let (bytes, timing, rounds) = if args.quick {
        let t = Timing {
            warmup: Duration::from_millis(200),
            measure: Duration::from_millis(600),
        };
        (500_000, t, 1)
    } else {
        let t = Timing {
            warmup: Duration::from_millis(500),
            measure: Duration::from_millis(1500),
        };
        (8_000_000, t, 3)
    };
    let doc = Doc::new(DocSpec {
        bytes,
        seed: json::SEED,
    })?;
    if let Ok(name) = std::env::var(ONE_MODE_ENV) {
        measure_here(&name, &doc, timing)?;
        // The parent reads the one line; no table from a child.
        std::process::exit(0);
    }
    eprintln!(
        "service: axum on a {}-worker tokio runtime; /walk parses a {:.1} MB document \
         ({} nodes); {CLIENTS} clients back to back; /health probed every {} ms; \
         {rounds} round(s) of {:?} per mode, alternating the order, each in a fresh process",
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        doc.bytes.len() as f64 / 1e6,
        doc.nodes,
        load::PROBE_EVERY.as_millis(),
        timing.measure,
    );

    let mut modes = Mode::ALL.to_vec();
    // For profiling one mode: `OFFLOAD_BENCH_ONLY=cpu_pool,processpool`
    // keeps those whose name contains one of the words.
    if let Ok(only) = std::env::var("OFFLOAD_BENCH_ONLY") {
        modes.retain(|m| only.split(',').any(|w| m.name().contains(w)));
    }

    // Slot 0 is the idle floor (no load), measured in every round too.
    let slots: Vec<Option<Mode>> = std::iter::once(None)
        .chain(modes.iter().copied().map(Some))
        .collect();
    let mut probes: Vec<Vec<f64>> = vec![Vec::new(); slots.len()];
    let mut timeouts = vec![0usize; slots.len()];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); slots.len()];
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..slots.len()).collect()
        } else {
            (0..slots.len()).rev().collect()
        };
        for i in order {
            let m = measure_in_child(slots[i], args.quick)?;
            probes[i].extend(m.health_ms);
            timeouts[i] += m.probe_timeouts;
            rates[i].push(m.walks_per_sec);
        }
    }

    let (idle_p50, idle_p99) = percentiles(&mut probes[0]);
    eprintln!(
        "service: idle health p50 {idle_p50:.2} ms, p99 {idle_p99:.2} ms ({} probes)",
        probes[0].len()
    );
    let mut results = Vec::new();
    for (i, mode) in slots.iter().enumerate().skip(1) {
        let mode = mode.expect("slots after the first are modes");
        let (p50, p99) = percentiles(&mut probes[i]);
        let rate = rates[i].iter().sum::<f64>() / rates[i].len() as f64;
        eprintln!(
            "service: {:<22} health p50 {p50:8.2} ms, p99 {p99:8.2} ms ({} probes, {} timed out); \
             /walk {rate:7.2} req/s",
            mode.name(),
            probes[i].len(),
            timeouts[i],
        );
        results.push((mode, p50, p99, rate));
    }

    Ok(lines(&results, idle_p50, idle_p99))
}

/// The suite's lines: `health_p99` and `health_p50` for every mode against
/// the idle floor, `walk_throughput` for every offloaded mode against
/// `spawn_blocking` (when it was measured).
fn lines(results: &[(Mode, f64, f64, f64)], idle_p50: f64, idle_p99: f64) -> Vec<BenchLine> {
    let line = |case, ours: Mode, peer, unit, v, pv, better| {
        BenchLine::new("service", case, ours.name(), peer, unit, v, pv, better)
    };
    let mut out = Vec::new();
    for &(mode, _, p99, _) in results {
        out.push(line(
            "health_p99",
            mode,
            "idle",
            "ms",
            p99,
            idle_p99,
            Better::Lower,
        ));
    }
    for &(mode, p50, _, _) in results {
        out.push(line(
            "health_p50",
            mode,
            "idle",
            "ms",
            p50,
            idle_p50,
            Better::Lower,
        ));
    }
    let peer = results
        .iter()
        .find(|r| r.0 == Mode::SpawnBlocking)
        .map(|r| r.3);
    if let Some(peer_rate) = peer {
        for &(mode, _, _, rate) in results.iter().filter(|r| r.0 != Mode::Inline) {
            out.push(line(
                "walk_throughput",
                mode,
                Mode::SpawnBlocking.name(),
                "req/s",
                rate,
                peer_rate,
                Better::Higher,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_and_the_threads_walk_the_same_document() {
        let spec = DocSpec {
            bytes: 20_000,
            seed: json::SEED,
        };
        let doc = Doc::new(spec).unwrap();
        assert_eq!(ServiceWalk::run(spec), Ok(doc.nodes));
        // Every node: more than the keys the json experiment counts.
        assert!(doc.nodes > json::walk(&doc.bytes).unwrap());
        let other = DocSpec { seed: 1, ..spec };
        assert!(ServiceWalk::run(other).is_err());
    }
}
