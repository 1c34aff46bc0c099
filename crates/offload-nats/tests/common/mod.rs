//! What every test file shares: a real `nats-server` per test, fixture
//! worker programs that are killed and reaped even when a test fails, and
//! bounded waits.
#![allow(dead_code, unreachable_pub)] // Each test binary uses some of these.

#[path = "../../src/bin/fixture/tasks.rs"]
pub mod tasks;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use offload_nats::{LocalServer, Mode, RemotePool};

/// The bound on any whole test body.
pub const TEST_BOUND: Duration = Duration::from_secs(90);

/// A fresh server. A missing `nats-server` fails the test with the
/// install command: these tests never skip.
pub fn server() -> LocalServer {
    LocalServer::start().unwrap_or_else(|e| panic!("cannot start nats-server: {e}"))
}

/// A fixture worker program; SIGKILLed and reaped on drop.
pub struct WorkerProc {
    child: Option<Child>,
    pub name: String,
}

/// Starting a fixture worker.
pub struct Fixture {
    args: Vec<String>,
    skew: bool,
}

impl Fixture {
    pub fn new(url: &str) -> Self {
        Fixture {
            args: vec!["--url".into(), url.into()],
            skew: false,
        }
    }

    pub fn arg(mut self, flag: &str, value: impl ToString) -> Self {
        self.args.push(flag.into());
        self.args.push(value.to_string());
        self
    }

    pub fn flag(mut self, flag: &str) -> Self {
        self.args.push(flag.into());
        self
    }

    /// Serve `echo` at another version.
    pub fn skew(mut self) -> Self {
        self.skew = true;
        self
    }

    /// Starts it and waits (up to 30 s) until it serves.
    pub fn start(self) -> WorkerProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_offload-nats-fixture"));
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if self.skew {
            cmd.env("OFFLOAD_NATS_FIXTURE_SKEW", "1");
        }
        let mut child = cmd.spawn().expect("the fixture worker starts");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut w = WorkerProc {
            child: Some(child),
            name: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with("ready ") => w.name = line[6..].to_owned(),
            other => panic!("the fixture worker did not get ready: {other:?}"),
        }
        w
    }
}

impl WorkerProc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL, reaped.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (a graceful shutdown).
    pub fn terminate(&self) {
        signal("TERM", self.pid());
    }

    /// Waits up to `within` for the program to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends a signal with the shell's `kill` builtin.
pub fn signal(name: &str, pid: u32) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -s {name} {pid}")])
        .status();
}

/// Whether process `pid` is alive (a zombie counts as dead).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|s| s != 'Z' && s != 'X'),
        Err(_) => false,
    }
}

/// Polls `cond` every 10 ms for up to `within`.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Async [`wait_until`].
pub async fn wait_until_async(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A pool with a short heartbeat (200 ms), so losses show fast.
pub async fn pool(url: &str, mode: Mode) -> RemotePool {
    RemotePool::builder()
        .url(url)
        .mode(mode)
        .heartbeat(Duration::from_millis(200))
        .build()
        .await
        .expect("the pool connects")
}

/// A multi-thread runtime for one test; the body is bounded by [`TEST_BOUND`].
pub fn run<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        tokio::time::timeout(TEST_BOUND, f)
            .await
            .expect("the test finished within its bound");
    });
}

/// A unique path in the temp dir for pid files.
pub fn temp_path(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir()
        .join(format!(
            "offload-nats-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
        .to_string_lossy()
        .into_owned()
}
