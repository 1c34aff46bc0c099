//! The slow HTTP service the `io` experiment calls: the seed's `io.py` GETs
//! `https://docs.python.org/3/`; we have no internet, so the lab starts its
//! own service on `127.0.0.1` (an ephemeral port) that answers every GET
//! after a fixed latency. `offload-lab serve` runs it alone.
//!
//! It is plain `std`: an accept thread plus one thread per connection
//! (keep-alive, so a client's pooled connection is served by one thread).
//! It never runs on the loop under test, so only the client side can block
//! that loop.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use clap::Args;

use crate::options::parse_duration;

/// The response body.
const BODY: &str = "offload-lab slow service\n";

/// An idle keep-alive connection is closed after this long, so that no
/// connection thread outlives its client by much.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running slow HTTP service. Dropping it stops accepting connections.
#[derive(Debug)]
pub(crate) struct SlowServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl SlowServer {
    /// Listens on `127.0.0.1:port` (`0`: an ephemeral port) and answers
    /// every request after `latency`.
    pub(crate) fn start(latency: Duration, port: u16) -> io::Result<SlowServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let accept = thread::Builder::new()
            .name("lab-http-accept".into())
            .spawn(move || {
                for (i, conn) in listener.incoming().enumerate() {
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    // A connection we cannot serve is dropped (the client
                    // sees a reset), the service carries on.
                    let _ = thread::Builder::new()
                        .name(format!("lab-http-{i}"))
                        .spawn(move || {
                            let _ = serve_connection(conn, latency);
                        });
                }
            })?;
        Ok(SlowServer {
            addr,
            stop,
            accept: Some(accept),
        })
    }

    /// The service's URL, `http://127.0.0.1:PORT/`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for SlowServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept thread with one last connection, so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Serves requests on one connection until the client closes it, asks to
/// close it, or leaves it idle for [`IDLE_TIMEOUT`].
fn serve_connection(conn: TcpStream, latency: Duration) -> io::Result<()> {
    conn.set_read_timeout(Some(IDLE_TIMEOUT))?;
    conn.set_nodelay(true)?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        // Request line and headers, up to the blank line.
        let mut content_length = 0usize;
        let mut close = false;
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(()); // the client closed the connection
            }
            let l = line.trim_end();
            if l.is_empty() {
                if first {
                    continue; // tolerate stray blank lines between requests
                }
                break;
            }
            first = false;
            if let Some((name, value)) = l.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                }
            }
        }
        // Discard a request body, if any.
        io::copy(
            &mut (&mut reader).take(content_length as u64),
            &mut io::sink(),
        )?;
        // The slow part: a remote service thinking.
        thread::sleep(latency);
        write!(
            writer,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{}",
            BODY.len(),
            if close { "Connection: close\r\n" } else { "" },
            BODY
        )?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

/// Arguments of `offload-lab serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// How long each response takes.
    #[arg(long, value_parser = parse_duration, default_value = "50ms")]
    pub(crate) latency: Duration,
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub(crate) port: u16,
    /// Stop after this long (default: run until killed).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Print the address as a JSON object instead of a bare URL.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `offload-lab serve`: runs the slow service alone. The first line on
/// stdout is its URL (or a JSON object with `url` and `port`).
pub(crate) fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let server = SlowServer::start(args.latency, args.port)?;
    if args.json {
        let line = serde_json::json!({
            "kind": "serve", "url": server.url(), "port": server.port(),
            "latency_ms": args.latency.as_secs_f64() * 1e3,
        });
        println!("{line}");
    } else {
        println!("{}", server.url());
        eprintln!(
            "serving GET with {} ms latency; Ctrl-C to stop",
            args.latency.as_millis()
        );
    }
    io::stdout().flush()?;
    match args.duration {
        Some(d) => thread::sleep(d),
        None => loop {
            thread::park();
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_two_requests_on_one_connection() {
        let server = SlowServer::start(Duration::from_millis(1), 0).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    }
}
