//! The service under test: axum on its own tokio multi-thread runtime
//! (default worker count: one per core, as a service would run), listening
//! on an ephemeral port of `127.0.0.1`. `GET /health` answers "ok" at once;
//! `GET /walk` parses and walks the document where the mode says.
//!
//! Each mode gets a fresh runtime and fresh pools, so that no thread of one
//! mode (a spawn_blocking thread kept alive, a pool at another priority)
//! competes with the next. The global pools behind `offload::run` and
//! `offload::compute` live as long as the process, as they do in a service;
//! their threads idle while other modes run.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use offload::proc::{CallOptions, ProcessPool};
use offload::{Priority, ThreadPool};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

use super::{Doc, Mode, ServiceWalk, walk_nodes};

/// How long the server's graceful shutdown, the runtime's shutdown and
/// each pool's drain may take before the mode fails (nothing is left
/// running by then: the clients stopped first).
const GRACE: Duration = Duration::from_secs(5);

/// Threads of the `threadpool_*` pools and workers of the process pools:
/// one per core of the 2-core machines this suite is written for, as many
/// as the CPU pool has there.
const POOL_SIZE: usize = 2;

/// Where `/walk` runs.
enum Offloader {
    Inline,
    SpawnBlocking,
    OffloadRun,
    Compute,
    Threads(ThreadPool),
    Processes(ProcessPool),
}

impl Offloader {
    /// Builds the mode's pool on the calling (main) thread, so that
    /// `Background` means ten nice levels below the program's own.
    fn new(mode: Mode, doc: &Doc) -> anyhow::Result<Offloader> {
        let threads = |priority| -> anyhow::Result<Offloader> {
            let pool = ThreadPool::builder()
                .name("lab-service")
                .threads(POOL_SIZE)
                .priority(priority)
                .build()?;
            Ok(Offloader::Threads(pool))
        };
        Ok(match mode {
            Mode::Inline => Offloader::Inline,
            Mode::SpawnBlocking => Offloader::SpawnBlocking,
            Mode::OffloadRun => Offloader::OffloadRun,
            Mode::CpuPool => {
                // Created before serving, as the thread pool modes' pools
                // are (and as a service warms its pools for readiness),
                // not by the first request.
                let _ = offload::compute_pool();
                Offloader::Compute
            }
            Mode::ThreadpoolNormal => threads(Priority::Normal)?,
            Mode::ThreadpoolBackground => threads(Priority::Background)?,
            Mode::ThreadpoolIdle => threads(Priority::Idle)?,
            // `processpool` leaves the priority alone: the default is
            // what it measures.
            Mode::Processpool => Offloader::Processes(process_pool(None, doc)?),
            Mode::ProcesspoolIdle => Offloader::Processes(process_pool(Some(Priority::Idle), doc)?),
            Mode::ProcesspoolNormal => {
                Offloader::Processes(process_pool(Some(Priority::Normal), doc)?)
            }
        })
    }
}

/// A process pool of [`POOL_SIZE`] lab workers, started, each holding its
/// copy of the document, so the measurement starts with warm workers.
fn process_pool(priority: Option<Priority>, doc: &Doc) -> anyhow::Result<ProcessPool> {
    let mut builder = ProcessPool::builder()
        .name("lab-service")
        .workers(POOL_SIZE)
        .registry(crate::tasks::registry());
    if let Some(p) = priority {
        builder = builder.priority(p);
    }
    let pool = builder.build()?;
    // `ready` is bounded by the pool's hello timeout.
    futures::executor::block_on(pool.ready())?;
    // One call per worker at once (each holds its driver, so every worker
    // gets one): each generates its document now, not in the measurement.
    // Bounded: a debug build generates and walks 8 MB in a few seconds.
    let warm = CallOptions::new().timeout(Duration::from_secs(60));
    let calls = (0..POOL_SIZE).map(|_| pool.call_with::<ServiceWalk>(doc.spec, warm));
    for found in futures::executor::block_on(futures::future::join_all(calls)) {
        let found = found?.map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            found == doc.nodes,
            "a worker walked {found} nodes, expected {}",
            doc.nodes
        );
    }
    Ok(pool)
}

/// The handlers' state.
struct App {
    offloader: Offloader,
    doc: Doc,
}

impl App {
    /// Parses and walks the document where the mode says; the node count.
    async fn walk(&self) -> anyhow::Result<u64> {
        let bytes = self.doc.bytes.clone();
        let work = move || walk_nodes(&bytes);
        match &self.offloader {
            Offloader::Inline => work(),
            Offloader::SpawnBlocking => tokio::task::spawn_blocking(work).await?,
            Offloader::OffloadRun => offload::run(work).await?,
            Offloader::Compute => offload::compute(work).await?,
            Offloader::Threads(pool) => pool.run(work).await?,
            Offloader::Processes(pool) => pool
                .call::<ServiceWalk>(self.doc.spec)
                .await?
                .map_err(anyhow::Error::msg),
        }
    }
}

async fn health() -> &'static str {
    "ok"
}

/// `GET /walk`: the node count, or a 500 with the reason (a wrong count
/// too, so the clients notice and the run fails instead of reporting the
/// speed of a broken walk).
async fn walk(State(app): State<Arc<App>>) -> Result<String, (StatusCode, String)> {
    match app.walk().await {
        Ok(n) if n == app.doc.nodes => Ok(n.to_string()),
        Ok(n) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("walked {n} nodes, expected {}", app.doc.nodes),
        )),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))),
    }
}

/// A running service. [`shutdown`](Self::shutdown) stops it and reports
/// how that went; dropping it stops it too, quietly (error paths).
pub(super) struct Server {
    addr: SocketAddr,
    app: Arc<App>,
    rt: Option<Runtime>,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Builds the mode's pool, a runtime, and starts serving. Returns once
    /// the socket listens (the caller waits for a first answer).
    pub(super) fn start(mode: Mode, doc: &Doc) -> anyhow::Result<Server> {
        let app = Arc::new(App {
            offloader: Offloader::new(mode, doc)?,
            doc: doc.clone(),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .thread_name("lab-service-rt")
            .enable_all()
            .build()?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .context("bind 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let router = Router::new()
            .route("/health", get(health))
            .route("/walk", get(walk))
            .with_state(app.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = rt.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    // A dropped sender stops the server as well.
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Server {
            addr,
            app,
            rt: Some(rt),
            stop: Some(stop),
            serving: Some(serving),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub(super) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful shutdown (stop accepting, finish open requests, close
    /// connections), then the runtime, then the mode's pool, each within
    /// [`GRACE`]. Call it once the clients have stopped.
    pub(super) fn shutdown(mut self) -> anyhow::Result<()> {
        let served = self.stop_serving();
        let drained = self.drain_pool();
        served.and(drained)
        // `self` drops here: with it the last handle on a process pool,
        // whose drop reaps the (already exited) workers.
    }

    fn stop_serving(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(rt) = self.rt.take() else {
            return Ok(());
        };
        let served = self
            .serving
            .take()
            .map(|s| rt.block_on(async { tokio::time::timeout(GRACE, s).await }));
        // Bounded even if a handler still runs: its thread is abandoned,
        // not waited for.
        rt.shutdown_timeout(GRACE);
        match served {
            None => Ok(()),
            Some(Err(_)) => anyhow::bail!("graceful shutdown took longer than {GRACE:?}"),
            Some(Ok(joined)) => Ok(joined.context("the server task")??),
        }
    }

    fn drain_pool(&self) -> anyhow::Result<()> {
        let report = match &self.app.offloader {
            Offloader::Threads(pool) => pool.shutdown_timeout(GRACE),
            Offloader::Processes(pool) => pool.shutdown_timeout(GRACE),
            _ => return Ok(()),
        };
        let report = futures::executor::block_on(report);
        anyhow::ensure!(
            report.is_complete(),
            "the pool did not drain within {GRACE:?}: {report:?}"
        );
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only on error paths (shutdown() already took everything).
        let _ = self.stop_serving();
    }
}
