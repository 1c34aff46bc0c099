//! `axum-service`: an HTTP service that uses offload the way a production
//! service would (see `README.md`).
//!
//! The start-up order is the point of this file:
//!
//! 1. logging (`tracing-subscriber`), so everything after it can log;
//! 2. the Prometheus recorder, **before any offload pool exists**: a pool
//!    registers its `offload_pool_*` handles with the recorder installed
//!    when the pool is built, and the default pools are built on first use;
//! 3. the stall detector, which builds (and so watches) the tokio runtime;
//! 4. on the runtime: the lag monitor, the shutdown signals, the listener,
//!    the warm-up that turns `/ready` green, and the server;
//! 5. on Ctrl-C or SIGTERM: `/ready` turns red, the server stops accepting
//!    and finishes in-flight requests, the pools drain with their async
//!    shutdown (on the loop, never blocking it), and the runtime is dropped
//!    outside of it.
//!
//! `--self-test` runs the same service on a free port, calls every endpoint
//! (`self_test.rs`), shuts down the same way and exits 0, or non-zero with
//! the reason.

mod app;
mod self_test;
mod tasks;

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use offload::monitor::{LagMonitor, StallDetector};
use tracing::{info, warn};

type BoxError = Box<dyn Error + Send + Sync>;

const USAGE: &str = "\
usage: axum-service [--addr HOST:PORT] [--file PATH] [--self-test]

  --addr HOST:PORT  where to listen (default 127.0.0.1:3000)
  --file PATH       the file GET /file serves (default /etc/hosts)
  --self-test       listen on 127.0.0.1:0, call every endpoint, shut down;
                    exit 0 if every check passed
  RUST_LOG          log filter (default info)
";

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_REQUESTS: Duration = Duration::from_secs(20);
/// How long queued and running offloaded jobs get to finish after that.
const DRAIN_POOLS: Duration = Duration::from_secs(10);

/// The command line.
struct Args {
    addr: SocketAddr,
    file: PathBuf,
    self_test: bool,
}

/// `Ok(None)` for `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
        file: PathBuf::from("/etc/hosts"),
        self_test: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                let value = args.next().ok_or("--addr needs HOST:PORT")?;
                parsed.addr = value.parse().map_err(|e| format!("--addr {value}: {e}"))?;
            }
            "--file" => parsed.file = args.next().ok_or("--file needs a path")?.into(),
            "--self-test" => parsed.self_test = true,
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if parsed.self_test {
        parsed.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    }
    Ok(Some(parsed))
}

fn main() -> ExitCode {
    // First, before parsing arguments: in a worker process this serves
    // tasks and never returns.
    offload::proc::run_worker_if_child(&tasks::registry());
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("axum-service: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_tracing(args.self_test);
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("axum-service: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stdout, filtered by `RUST_LOG` (default `info`), with thread
/// names: they show which work ran on the loop (tokio's worker threads)
/// and which on offload's pools (`offload-run-N`, `offload-cpu-N`).
///
/// The self-test checks that a request's span reaches the pool thread, so
/// it keeps this crate's spans on whatever `RUST_LOG` says.
fn init_tracing(self_test: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;

    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if self_test {
        filter = filter.add_directive("axum_service=info".parse().expect("a valid directive"));
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_thread_names(true)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
}

/// Steps 2 and 3 (see the crate docs), then the service on the runtime.
fn start(args: Args) -> Result<(), BoxError> {
    // Before anything touches `offload::run` or `offload::compute`.
    let prometheus = PrometheusBuilder::new().install_recorder()?;

    // One call: hooks on the builder, heartbeats and tokio's per-worker
    // counters attached. Reports go to the log (`tracing::warn!`, target
    // `offload::monitor`) and to `offload_loop_stalls_total`.
    let detector = StallDetector::builder()
        .threshold(Duration::from_millis(100))
        .build()?;
    let runtime = detector.watch(tokio::runtime::Builder::new_multi_thread().enable_all())?;

    let result = runtime.block_on(serve(args, prometheus));
    // Outside the runtime now; bound the wait for its blocking threads.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// Step 4 and 5: serves until a shutdown signal (or the end of the
/// self-test), then drains requests and pools.
async fn serve(args: Args, prometheus: PrometheusHandle) -> Result<(), BoxError> {
    // Timer lag of the loop, every 100 ms: `offload_loop_lag_seconds`.
    let _lag = LagMonitor::builder()
        .interval(Duration::from_millis(100))
        .start(&tokio::runtime::Handle::current())?;

    // Without an HTTP listener of its own, the exporter leaves its periodic
    // upkeep (draining histogram samples) to us.
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });

    // Registered before the listener exists, so a signal that comes early
    // is seen, not fatal (the default action of SIGTERM kills).
    let stop_signal = stop_signals()?;

    let fixture = if args.self_test {
        Some(self_test::Fixture::create().await?)
    } else {
        None
    };
    let file = fixture.as_ref().map_or(args.file, |f| f.path().to_owned());
    // Two worker processes at background priority (the default, nice
    // +10): busy workers yield most of a contended core to the loop
    // (`Priority::Idle` would yield it all, where the service owns its CPUs). `build` returns at once;
    // `warm_up` awaits `ready()`.
    let procs = offload::proc::ProcessPool::builder()
        .name("svc-proc")
        .workers(2)
        .registry(tasks::registry())
        .build()?;
    let state = app::AppState::new(prometheus, file, procs);

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    info!("listening on http://{addr}");
    tokio::spawn(app::warm_up(state.clone()));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let draining = state.clone();
    let procs = state.procs().clone();
    let server = tokio::spawn(
        axum::serve(listener, app::router(state))
            .with_graceful_shutdown(async move {
                // A send, or the sender dropped: either way, stop.
                let _ = stop_rx.await;
                draining.start_draining();
            })
            .into_future(),
    );

    let outcome: Result<(), BoxError> = match &fixture {
        Some(fixture) => tokio::select! {
            checked = fixture.run(addr) => checked.map_err(Into::into),
            signal = stop_signal => Err(format!("{signal} received during the self-test").into()),
        },
        None => {
            info!("{} received: shutting down", stop_signal.await);
            Ok(())
        }
    };

    // Stop accepting; in-flight requests finish (bounded).
    let _ = stop_tx.send(());
    let served: Result<(), BoxError> = match tokio::time::timeout(DRAIN_REQUESTS, server).await {
        Ok(Ok(served)) => served.map_err(Into::into),
        Ok(Err(panicked)) => Err(panicked.into()),
        Err(_) => {
            warn!("requests still running after {DRAIN_REQUESTS:?}; leaving them");
            Ok(())
        }
    };
    drain_pools(&procs).await;
    let outcome = outcome.and(served);
    if outcome.is_ok() && fixture.is_some() {
        info!("self-test passed");
    }
    outcome
}

/// Ctrl-C or SIGTERM, whichever comes first; registered at once.
#[cfg(unix)]
fn stop_signals() -> std::io::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => "Ctrl-C (SIGINT)",
            _ = terminate.recv() => "SIGTERM",
        }
    })
}

/// Ctrl-C, where there is no SIGTERM.
#[cfg(not(unix))]
fn stop_signals() -> std::io::Result<impl Future<Output = &'static str>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    })
}

/// Drains both default pools with their async shutdown: no new jobs, queued
/// ones still run, bounded by [`DRAIN_POOLS`]. Awaited on the loop, which
/// stays free meanwhile (a helper thread keeps the deadline).
///
/// The default pools live as long as the process and `offload::run` fails
/// with `is_shutdown` after this; here the server has stopped, so nothing
/// calls them any more.
async fn drain_pools(procs: &offload::proc::ProcessPool) {
    let (io, cpu) = (offload::default_pool(), offload::compute_pool());
    let (io_report, cpu_report, procs_report) = tokio::join!(
        io.shutdown_timeout(DRAIN_POOLS),
        cpu.shutdown_timeout(DRAIN_POOLS),
        procs.shutdown_timeout(DRAIN_POOLS)
    );
    if procs_report.is_complete() {
        info!(pool = "svc-proc", "pool drained");
    } else {
        warn!(
            pool = "svc-proc",
            cancelled = procs_report.cancelled,
            "pool not drained within {DRAIN_POOLS:?}"
        );
    }
    for (pool, report) in [(io, io_report), (cpu, cpu_report)] {
        if report.is_complete() {
            info!(pool = pool.name(), "pool drained");
        } else {
            warn!(
                pool = pool.name(),
                cancelled = report.cancelled,
                still_running = report.still_running.len(),
                "pool not drained within {DRAIN_POOLS:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn arguments() {
        let args = parse(&[]).unwrap().unwrap();
        assert_eq!(args.addr.port(), 3000);
        assert!(!args.self_test);
        let args = parse(&["--addr", "0.0.0.0:8080", "--file", "/tmp/x"])
            .unwrap()
            .unwrap();
        assert_eq!(args.addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(args.file, PathBuf::from("/tmp/x"));
        let args = parse(&["--self-test"]).unwrap().unwrap();
        assert_eq!(args.addr.port(), 0, "the self-test takes a free port");
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--addr"]).is_err());
        assert!(parse(&["--addr", "nowhere"]).is_err());
        assert!(parse(&["--verbose"]).is_err());
    }
}
