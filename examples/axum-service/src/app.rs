//! The routes, their shared state, and the span every request runs in.
//!
//! The rule the handlers follow: nothing that can hold a thread for more
//! than a few hundred microseconds runs on the loop. CPU work goes to
//! `offload::compute` (one thread per core, background priority: the loop
//! wins most of each contended core), blocking I/O to `offload::run` (the I/O
//! pool). Both carry the caller's `tracing` span into the pool thread, so
//! a job's log lines belong to its request.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use offload::proc::{CallOptions, ProcessPool};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{Instrument as _, error, info, warn};

/// The largest document `GET /walk` generates, in KiB.
const MAX_WALK_KB: usize = 16 * 1024;
/// The largest file `GET /file` serves.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// The longest `GET /block` may block the loop.
const MAX_BLOCK_MS: u64 = 2_000;

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// What the handlers share: cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    inner: Arc<Inner>,
    /// Worker processes for `/isolated` (a `ProcessPool` is a cheap `Clone`
    /// handle: no `Arc` needed).
    procs: ProcessPool,
}

struct Inner {
    /// `STARTING` until the warm-up succeeded, `DRAINING` once shutdown began.
    phase: AtomicU8,
    /// The file `GET /file` serves.
    file: PathBuf,
    prometheus: PrometheusHandle,
}

impl AppState {
    pub(crate) fn new(prometheus: PrometheusHandle, file: PathBuf, procs: ProcessPool) -> Self {
        AppState {
            inner: Arc::new(Inner {
                phase: AtomicU8::new(STARTING),
                file,
                prometheus,
            }),
            procs,
        }
    }

    /// The worker processes, for the shutdown in `main`.
    pub(crate) fn procs(&self) -> &ProcessPool {
        &self.procs
    }

    /// `/ready` answers 503 from now on, so load balancers stop sending
    /// traffic while in-flight requests finish.
    pub(crate) fn start_draining(&self) {
        self.inner.phase.store(DRAINING, Ordering::Release);
        info!("shutting down: /ready is 503, no new connections, draining in-flight requests");
    }
}

/// Every route, each request wrapped in a `request` span.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/walk", get(walk))
        .route("/isolated", get(isolated))
        .route("/file", get(file))
        .route("/metrics", get(metrics))
        .route("/block", get(block))
        .layer(middleware::from_fn(request_span))
        .with_state(state)
}

/// Waits for the worker processes, runs one trivial job on each thread
/// pool, then marks the service ready.
///
/// `ProcessPool::ready` resolves once every worker has started and run the
/// registry's `init`; a failure there should fail the start-up (here
/// `/ready` stays 503 and the log says why). offload's thread pools have
/// no readiness signal of their own: their threads start on demand. A job
/// that comes back proves the pool accepts work and can start a thread
/// (and the first requests do not pay for the thread start).
pub(crate) async fn warm_up(state: AppState) {
    let started = Instant::now();
    if let Err(e) = state.procs.ready().await {
        error!(error = %e, "worker processes failed to start: /ready stays 503");
        return;
    }
    let io = offload::run(|| ()).await;
    let cpu = offload::compute(|| ()).await;
    match (io, cpu) {
        (Ok(()), Ok(())) => {
            // Unless shutdown began meanwhile.
            let _ = state.inner.phase.compare_exchange(
                STARTING,
                READY,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            info!(took = ?started.elapsed(), "pools warmed up: ready");
        }
        // Shutdown began first: the pools refuse new jobs, as they should.
        _ if state.inner.phase.load(Ordering::Acquire) == DRAINING => {}
        (io, cpu) => error!(?io, ?cpu, "pool warm-up failed: /ready stays 503"),
    }
}

/// Opens a `request` span around the request; handlers and the jobs they
/// offload log inside it.
async fn request_span(request: Request, next: Next) -> Response {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let span = tracing::info_span!(
        "request",
        id = NEXT_ID.fetch_add(1, Ordering::Relaxed),
        method = %request.method(),
        path = %request.uri().path(),
    );
    async move {
        let started = Instant::now();
        let response = next.run(request).await;
        info!(status = response.status().as_u16(), took = ?started.elapsed(), "served");
        response
    }
    .instrument(span)
    .await
}

/// `GET /health`: the process is up and its loop answers. Never touches a
/// pool, so it stays fast however busy they are.
async fn health() -> &'static str {
    "ok\n"
}

/// `GET /ready`: 200 once the pools are warmed up, 503 while starting or
/// draining; the body shows the pools' live figures (`ThreadPool::metrics`).
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (status, code) = match state.inner.phase.load(Ordering::Acquire) {
        READY => ("ready", StatusCode::OK),
        STARTING => ("starting", StatusCode::SERVICE_UNAVAILABLE),
        _ => ("draining", StatusCode::SERVICE_UNAVAILABLE),
    };
    let pools: serde_json::Map<String, Value> = [offload::default_pool(), offload::compute_pool()]
        .into_iter()
        .map(|pool| {
            let m = pool.metrics();
            let figures = json!({
                "threads": m.threads,
                "idle": m.idle,
                "queued": m.queued,
                "running": m.running,
                "completed": m.completed,
            });
            (pool.name().to_owned(), figures)
        })
        .collect();
    (code, Json(json!({ "status": status, "pools": pools })))
}

#[derive(Deserialize)]
struct WalkParams {
    /// Size of the generated document, in KiB.
    kb: usize,
}

/// `GET /walk?kb=N`: generates an N KiB JSON document, parses it with
/// serde_json and walks it, on the compute pool. A few MiB take tens of
/// milliseconds of CPU (more in a debug build): on the loop, that would
/// stall every other request on this worker.
async fn walk(Query(params): Query<WalkParams>) -> Result<Json<Value>, AppError> {
    let kb = params.kb;
    if !(1..=MAX_WALK_KB).contains(&kb) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            format!("kb must be within 1..={MAX_WALK_KB}"),
        ));
    }
    let stats = offload::compute(move || walk_document(kb))
        .await
        .map_err(AppError::offload)?
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(stats))
}

/// `GET /isolated?kb=N`: the same work as `/walk`, in a worker process
/// (`tasks::WalkDocument`): for native code that may crash, leak or run
/// away, at the price of a process hop. A crash fails this request only
/// (500, or 503 when it is worth retrying) and the pool replaces the
/// worker; the 10 s timeout kills a runaway.
async fn isolated(
    State(state): State<AppState>,
    Query(params): Query<WalkParams>,
) -> Result<Json<Value>, AppError> {
    let kb = params.kb;
    if !(1..=MAX_WALK_KB).contains(&kb) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            format!("kb must be within 1..={MAX_WALK_KB}"),
        ));
    }
    let options = CallOptions::new().timeout(Duration::from_secs(10));
    let walked = state
        .procs
        .call_with::<crate::tasks::WalkDocument>(kb, options)
        .await
        .map_err(AppError::offload)?;
    Ok(Json(json!({ "nodes": walked.nodes, "pid": walked.pid })))
}

/// The CPU-bound part of `/walk`; runs on an `offload-cpu-N` thread,
/// inside the request's span.
fn walk_document(kb: usize) -> Result<Value, serde_json::Error> {
    let started = Instant::now();
    let document = generate_document(kb * 1024);
    let parsed: Value = serde_json::from_str(&document)?;
    let mut counts = Counts::default();
    counts.visit(&parsed, 1);
    let elapsed = started.elapsed();
    info!(bytes = document.len(), nodes = counts.nodes, took = ?elapsed, "parsed and walked");
    // Shown in the answer so the self-test can check where the job ran.
    let thread = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned();
    let span = tracing::Span::current()
        .metadata()
        .map_or("none", |m| m.name());
    Ok(json!({
        "bytes": document.len(),
        "nodes": counts.nodes,
        "objects": counts.objects,
        "max_depth": counts.max_depth,
        "ms": elapsed.as_secs_f64() * 1e3,
        "thread": thread,
        "span": span,
    }))
}

/// A JSON array of small records, at least `target` bytes long.
pub(crate) fn generate_document(target: usize) -> String {
    let mut doc = String::with_capacity(target + 256);
    doc.push('[');
    let mut i = 0u64;
    while doc.len() < target {
        if i > 0 {
            doc.push(',');
        }
        write!(
            doc,
            r#"{{"id":{i},"name":"item-{i}","score":{},"tags":["alpha","beta","gamma"],"owner":{{"team":"t{}","active":{}}}}}"#,
            i as f64 * 0.5,
            i % 7,
            i % 2 == 0,
        )
        .expect("writing to a String cannot fail");
        i += 1;
    }
    doc.push(']');
    doc
}

/// What `walk_document` found.
#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) nodes: u64,
    objects: u64,
    max_depth: usize,
}

impl Counts {
    pub(crate) fn visit(&mut self, value: &Value, depth: usize) {
        self.nodes += 1;
        self.max_depth = self.max_depth.max(depth);
        match value {
            Value::Array(items) => items.iter().for_each(|v| self.visit(v, depth + 1)),
            Value::Object(fields) => {
                self.objects += 1;
                fields.values().for_each(|v| self.visit(v, depth + 1));
            }
            _ => {}
        }
    }
}

/// `GET /file`: the configured file (at most 1 MiB), read with `std::fs`
/// on the I/O pool: a read can block on a cold page cache or a network
/// file system for as long as it likes without holding a loop thread.
async fn file(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    let path = state.inner.file.clone();
    let bytes = offload::run(move || read_capped(&path, MAX_FILE_BYTES))
        .await
        .map_err(AppError::offload)?
        .map_err(AppError::io)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes))
}

/// Reads at most `max` bytes of `path`; a longer file is an error.
fn read_capped(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("{} is larger than {max} bytes", path.display()),
        ));
    }
    info!(path = %path.display(), bytes = bytes.len(), "read");
    Ok(bytes)
}

/// `GET /metrics`: Prometheus text. `offload_pool_*{pool="offload-run"}`
/// and `{pool="offload-cpu"}` come from the pools, `offload_loop_*` from
/// the lag monitor and the stall detector. Rendering a few dozen series
/// takes microseconds: fine on the loop.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.inner.prometheus.render(),
    )
}

#[derive(Deserialize)]
struct BlockParams {
    /// How long to block, in milliseconds.
    ms: u64,
}

/// `GET /block?ms=N`: **what not to do**, here to show the stall detector
/// at work. It sleeps on the loop thread itself: past 100 ms the detector
/// logs a report (with the backtrace, naming this function, and the
/// verdict "blocking") and counts it in `offload_loop_stalls_total`.
/// Leave it out of a real service.
async fn block(Query(params): Query<BlockParams>) -> Result<String, AppError> {
    if params.ms > MAX_BLOCK_MS {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            format!("ms must be at most {MAX_BLOCK_MS}"),
        ));
    }
    std::thread::sleep(Duration::from_millis(params.ms));
    Ok(format!(
        "blocked the loop for {} ms: see the stall report in the log\n",
        params.ms
    ))
}

/// An error answer: a status and a one-line message.
struct AppError {
    status: StatusCode,
    message: String,
}

impl AppError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        AppError {
            status,
            message: message.into(),
        }
    }

    /// Maps a failure the way `Error::is_retryable` says: worth retrying
    /// (queue full, shutting down, a lost worker: 503; a timeout: 504) or
    /// permanent for this input (a panic, a codec error: 500).
    fn offload(e: offload::Error) -> Self {
        let status = match (e.is_retryable(), e.is_timeout()) {
            (true, true) => StatusCode::GATEWAY_TIMEOUT,
            (true, false) => StatusCode::SERVICE_UNAVAILABLE,
            (false, _) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error!(error = %e, "offloaded job failed");
        AppError::new(status, e.to_string())
    }

    fn io(e: std::io::Error) -> Self {
        use std::io::ErrorKind;
        let status = match e.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorKind::FileTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        warn!(error = %e, "file read failed");
        AppError::new(status, e.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (self.status, format!("{}\n", self.message)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_json_of_at_least_the_size_asked() {
        let doc = generate_document(10_000);
        assert!(doc.len() >= 10_000);
        let value: Value = serde_json::from_str(&doc).expect("valid JSON");
        let mut counts = Counts::default();
        counts.visit(&value, 1);
        assert_eq!(counts.max_depth, 4, "array > record > owner > field");
        assert_eq!(
            Some(counts.objects),
            value.as_array().map(|a| 2 * a.len() as u64)
        );
    }

    #[test]
    fn a_file_over_the_cap_is_refused() {
        let path = std::env::temp_dir().join(format!("axum-service-cap-{}", std::process::id()));
        std::fs::write(&path, [7u8; 100]).expect("write");
        assert_eq!(read_capped(&path, 100).expect("at the cap").len(), 100);
        let err = read_capped(&path, 99).expect_err("over the cap");
        assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            read_capped(&path, 99).expect_err("gone").kind(),
            std::io::ErrorKind::NotFound
        );
    }
}
