//! `--self-test`: calls every endpoint of the running service over real
//! TCP with a minimal HTTP/1.1 client, and checks status codes and bodies.
//! Bounded: [`TIMEOUT`] for all of it, [`REQUEST_TIMEOUT`] per request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tracing::info;

/// The whole self-test.
const TIMEOUT: Duration = Duration::from_secs(30);
/// One request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The file `GET /file` serves during the self-test, with known content.
pub(crate) struct Fixture {
    path: PathBuf,
    content: String,
}

impl Fixture {
    /// Writes the file (with `offload::run`: `std::fs` blocks).
    pub(crate) async fn create() -> Result<Self, String> {
        let pid = std::process::id();
        let path = std::env::temp_dir().join(format!("axum-service-self-test-{pid}.txt"));
        let content = format!("read by offload::run for process {pid}\n");
        let (p, c) = (path.clone(), content.clone());
        offload::run(move || std::fs::write(p, c))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| format!("self-test: cannot write {}: {e}", path.display()))?;
        Ok(Fixture { path, content })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs every check against the service at `addr`, then removes the
    /// file. The error says which check failed and how.
    pub(crate) async fn run(&self, addr: SocketAddr) -> Result<(), String> {
        let outcome = tokio::time::timeout(TIMEOUT, self.checks(addr))
            .await
            .unwrap_or_else(|_| Err(format!("did not finish within {TIMEOUT:?}")));
        let path = self.path.clone();
        let _ = offload::run(move || std::fs::remove_file(path)).await;
        outcome.map_err(|e| format!("self-test FAILED: {e}"))
    }

    async fn checks(&self, addr: SocketAddr) -> Result<(), String> {
        let reply = get(addr, "/health").await?.expect(200)?;
        ensure(reply.body == "ok\n", "/health", &reply.body)?;

        // Ready once the warm-up jobs came back.
        let deadline = Instant::now() + Duration::from_secs(10);
        let reply = loop {
            let reply = get(addr, "/ready").await?;
            if reply.status == 200 || Instant::now() > deadline {
                break reply.expect(200)?;
            }
            reply.expect(503)?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        ensure(
            reply.body.contains(r#""status":"ready""#),
            "/ready",
            &reply.body,
        )?;
        info!("self-test: /health and /ready ok");

        // Parsed on the compute pool, inside the request's span.
        let reply = get(addr, "/walk?kb=256").await?.expect(200)?;
        let stats: Value = serde_json::from_str(&reply.body)
            .map_err(|e| format!("/walk: not JSON ({e}): {}", reply.body))?;
        let bytes = stats["bytes"].as_u64().unwrap_or(0);
        ensure(bytes >= 256 * 1024, "/walk bytes", &reply.body)?;
        ensure(
            stats["nodes"].as_u64() > Some(1000),
            "/walk nodes",
            &reply.body,
        )?;
        let thread = stats["thread"].as_str().unwrap_or("");
        ensure(
            thread.starts_with("offload-cpu"),
            "/walk thread",
            &reply.body,
        )?;
        ensure(stats["span"] == "request", "/walk span", &reply.body)?;
        for bad in ["/walk", "/walk?kb=0", "/walk?kb=lots", "/walk?kb=99999999"] {
            get(addr, bad).await?.expect(400)?;
        }
        info!("self-test: /walk ok ({bytes} bytes on {thread}, inside the request span)");

        // The same work in a worker process.
        let reply = get(addr, "/isolated?kb=64").await?.expect(200)?;
        let walked: serde_json::Value = serde_json::from_str(&reply.body)
            .map_err(|e| format!("/isolated: not JSON ({e}): {}", reply.body))?;
        ensure(
            walked["nodes"].as_u64().is_some_and(|n| n > 0),
            "/isolated nodes",
            &reply.body,
        )?;
        ensure(
            walked["pid"]
                .as_u64()
                .is_some_and(|p| p != u64::from(std::process::id())),
            "/isolated ran in a worker process",
            &reply.body,
        )?;
        get(addr, "/isolated?kb=0").await?.expect(400)?;
        info!("self-test: /isolated ok (worker pid {})", walked["pid"]);

        // Read on the I/O pool.
        let reply = get(addr, "/file").await?.expect(200)?;
        ensure(reply.body == self.content, "/file", &reply.body)?;
        info!("self-test: /file ok");

        // The loop answers while the compute pool parses 4 MiB.
        let big = tokio::spawn(get(addr, "/walk?kb=4096"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let asked = Instant::now();
        get(addr, "/health").await?.expect(200)?;
        let health = asked.elapsed();
        big.await
            .map_err(|e| format!("/walk?kb=4096: {e}"))??
            .expect(200)?;
        info!("self-test: /health answered in {health:?} during a 4 MiB /walk");

        // A deliberate stall: the detector reports it (see the log) and
        // counts it. Reports are delivered once the backtrace's symbols are
        // resolved, so poll for the counter. (On a machine too loaded to
        // give the loop a core, it is counted as starved instead.)
        get(addr, "/block?ms=300").await?.expect(200)?;
        get(addr, "/block?ms=999999").await?.expect(400)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        let metrics = loop {
            let reply = get(addr, "/metrics").await?.expect(200)?;
            let counted = reply.body.contains("offload_loop_stalls_total")
                || reply.body.contains("offload_loop_starved_total");
            if counted {
                break reply.body;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "/metrics: no offload_loop_stalls_total 15 s after GET /block:\n{}",
                    reply.body
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for series in [
            r#"offload_pool_submitted_total{pool="offload-cpu"}"#,
            r#"offload_pool_completed_total{pool="offload-cpu"}"#,
            r#"offload_pool_completed_total{pool="offload-run"}"#,
            r#"offload_pool_run_seconds"#,
            r#"offload_pool_wait_seconds"#,
            "offload_loop_lag_seconds",
        ] {
            if !metrics.contains(series) {
                return Err(format!("/metrics: no {series}:\n{metrics}"));
            }
        }
        info!("self-test: stall detected and counted; /metrics ok");

        get(addr, "/no-such-route").await?.expect(404)?;
        Ok(())
    }
}

/// Fails with what was expected and what came.
fn ensure(ok: bool, what: &str, body: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{what}: unexpected answer: {body}"))
    }
}

/// A status and a body.
struct Reply {
    path: String,
    status: u16,
    body: String,
}

impl Reply {
    fn expect(self, status: u16) -> Result<Self, String> {
        if self.status == status {
            Ok(self)
        } else {
            Err(format!(
                "GET {}: status {}, expected {status}; body: {}",
                self.path, self.status, self.body
            ))
        }
    }
}

/// `GET path` over a fresh connection (`Connection: close`: the answer
/// ends when the server closes it).
async fn get(addr: SocketAddr, path: &str) -> Result<Reply, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("GET {path}: no answer within {REQUEST_TIMEOUT:?}"))?
        .map_err(|e| format!("GET {path}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: not an HTTP response: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET {path}: no status in {head:?}"))?;
    // Every body here has a known length, so hyper sends Content-Length.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!("GET {path}: unexpected chunked answer"));
    }
    Ok(Reply {
        path: path.to_owned(),
        status,
        body: body.to_owned(),
    })
}
