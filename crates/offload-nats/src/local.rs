//! [`LocalServer`]: a `nats-server` of its own on a free loopback port,
//! with JetStream in a temporary directory, for tests, demos and
//! benchmarks. Killed and cleaned up when dropped.

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The environment variable naming a `nats-server` executable to use.
pub const SERVER_ENV: &str = "OFFLOAD_NATS_SERVER";

/// What to tell someone whose machine lacks `nats-server`.
pub const INSTALL_HINT: &str = "install it with `sudo apt-get install -y nats-server` \
     (Debian/Ubuntu; `scripts/test.sh` does it for you), or point OFFLOAD_NATS_SERVER \
     at a nats-server executable";

/// Finds `nats-server`: `$OFFLOAD_NATS_SERVER`, then `PATH`, then the
/// sbin directories Debian installs it to (not on a user's `PATH`).
///
/// # Errors
///
/// [`io::ErrorKind::NotFound`], with a message that says how to install it.
pub fn find_server() -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os(SERVER_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{SERVER_ENV}={} is not a file; {INSTALL_HINT}", p.display()),
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(
        [
            "/usr/sbin",
            "/usr/local/sbin",
            "/sbin",
            "/usr/local/bin",
            "/usr/bin",
        ]
        .iter()
        .map(PathBuf::from),
    );
    for dir in dirs {
        let p = dir.join("nats-server");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("nats-server not found on PATH nor in /usr/sbin; {INSTALL_HINT}"),
    ))
}

/// A `nats-server` child process on `127.0.0.1:<free port>` with
/// JetStream storing in a fresh temporary directory. Dropping it kills
/// the server, reaps it and removes the directory.
#[derive(Debug)]
pub struct LocalServer {
    program: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl LocalServer {
    /// Starts a server and waits (up to 10 s) until it accepts connections.
    ///
    /// # Errors
    ///
    /// `nats-server` is missing (the message says how to install it), or
    /// did not start.
    pub fn start() -> io::Result<LocalServer> {
        let program = find_server()?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "offload-nats-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut last = None;
        // A free port can be taken by someone else before the server binds
        // it: try a few.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut server = LocalServer {
                program: program.clone(),
                port,
                dir: dir.clone(),
                child: None,
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    // Keep the directory for the next attempt.
                    server.dir = PathBuf::new();
                    last = Some(e);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last.unwrap_or_else(|| io::Error::other("nats-server did not start")))
    }

    fn launch(&mut self) -> io::Result<()> {
        let log = std::fs::File::create(self.dir.join("server.log"))?;
        // A name no other server has: readiness is this server's INFO line
        // carrying it, not merely "something accepts on the port" (another
        // test's server that took the port, or a TCP self-connect, which
        // Linux allows when the source port chosen equals the destination
        // and which then keeps our server from binding: seen in CI).
        static LAUNCH: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "offload-local-{}-{}-{}",
            std::process::id(),
            self.port,
            LAUNCH.fetch_add(1, Ordering::Relaxed)
        );
        let mut child = Command::new(&self.program)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-n",
                &name,
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run {}: {e}", self.program.display()),
                )
            })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if greets_as(self.port, &name) && matches!(child.try_wait(), Ok(None)) {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(io::Error::other(format!(
                    "nats-server exited at start ({status}); see {}",
                    self.dir.join("server.log").display()
                )));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "nats-server did not accept connections within 10 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream storage directory (kept across [`restart`](Self::restart)).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL) and reaps it; the port and the stored
    /// streams stay for [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port with the same storage.
    ///
    /// # Errors
    ///
    /// The server did not start (the port was taken meanwhile, say).
    pub fn start_again(&mut self) -> io::Result<()> {
        self.stop();
        // The port may be held for a moment: a client reconnecting while
        // the server was down can connect to itself (Linux TCP
        // simultaneous open when its source port happens to be this one)
        // and hold the port until it gives up on that connection. Try for
        // a few seconds before reporting the port taken.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline || e.kind() == io::ErrorKind::NotFound => {
                    return Err(e);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again).
    ///
    /// # Errors
    ///
    /// As [`start_again`](Self::start_again).
    pub fn restart(&mut self) -> io::Result<()> {
        self.start_again()
    }
}

/// Whether the server listening on `port` greets with an INFO line that
/// names it `name`. A NATS server sends INFO first thing on a connection.
fn greets_as(port: u16, name: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .is_err()
    {
        return false;
    }
    let want = format!("\"server_name\":\"{name}\"");
    let mut info = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    // The INFO line ends at CRLF; it is a few hundred bytes.
    while info.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => info.extend_from_slice(&buf[..n]),
        }
        if let Some(end) = info.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&info[..end]);
            return line.starts_with("INFO ") && line.contains(&want);
        }
    }
    false
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_that_accepts_but_is_not_our_server_is_not_ready() {
        // Something listens (the kernel completes the handshake) but never
        // greets: not a NATS server.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        assert!(!greets_as(port, "anyone"));
        drop(silent);
        // Nobody listens.
        assert!(!greets_as(port, "anyone"));
    }

    #[test]
    fn another_server_on_the_port_is_not_ours() {
        let server = LocalServer::start().unwrap_or_else(|e| panic!("{e}"));
        // It greets, but under its own name.
        assert!(!greets_as(server.port(), "someone-else"));
        // A second server cannot take the same port: launching one on a
        // copy of its settings fails instead of taking the first for its own.
        let mut twin = LocalServer {
            program: server.program.clone(),
            port: server.port(),
            dir: std::env::temp_dir().join(format!("offload-nats-twin-{}", std::process::id())),
            child: None,
        };
        std::fs::create_dir_all(&twin.dir).unwrap();
        let e = twin.launch().unwrap_err();
        assert!(e.to_string().contains("exited at start"), "{e}");
    }
}
