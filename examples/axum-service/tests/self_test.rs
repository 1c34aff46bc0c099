//! Runs the example's binary: `--self-test` (every endpoint, then the
//! graceful shutdown), and, on Unix, a real SIGTERM sent to a running
//! service. Every wait is bounded: a hung service is killed and the test
//! fails with its output.

use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_axum-service");

/// The self-test bounds itself at 30 s; start-up and shutdown come on top,
/// and a debug build on a loaded machine is slow.
const LIMIT: Duration = Duration::from_secs(90);

/// Starts the binary with `args`, logging at `info` whatever `RUST_LOG`
/// the test runner has, its output piped.
fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example's binary starts")
}

/// Reads `pipe` line by line on a thread of its own (so a full pipe never
/// blocks the child), sending each line.
fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Everything `rx` gets until its pipe closes (the child exited, or was
/// killed), or `limit` passes.
fn collect(rx: &mpsc::Receiver<String>, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut out = String::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Waits for `child` until `deadline`; kills it past that.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn self_test_passes() {
    let mut child = spawn(&["--self-test"]);
    let stdout = lines(child.stdout.take().expect("piped"));
    let stderr = lines(child.stderr.take().expect("piped"));
    let status = wait_until(&mut child, Instant::now() + LIMIT);
    let out = collect(&stdout, Duration::from_secs(5));
    let err = collect(&stderr, Duration::from_secs(5));
    let status = status.unwrap_or_else(|| {
        panic!("--self-test still running after {LIMIT:?}: killed\n{out}\n{err}")
    });
    assert!(
        status.success(),
        "--self-test failed ({status})\n{out}\n{err}"
    );
    assert!(out.contains("self-test passed"), "{out}\n{err}");
}

/// The real shutdown path: SIGTERM while serving drains and exits 0.
#[cfg(unix)]
#[test]
fn sigterm_shuts_down_gracefully() {
    let mut child = spawn(&["--addr", "127.0.0.1:0"]);
    let stdout = lines(child.stdout.take().expect("piped"));
    let stderr = lines(child.stderr.take().expect("piped"));
    let deadline = Instant::now() + LIMIT;

    // The address, from the log line "listening on http://ADDR".
    let mut out = String::new();
    let addr = loop {
        let Ok(line) = stdout.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no 'listening on' line\n{out}\n{}",
                collect(&stderr, Duration::from_secs(1))
            );
        };
        out.push_str(&line);
        out.push('\n');
        if let Some((_, rest)) = line.split_once("listening on http://") {
            break rest.split_whitespace().next().unwrap_or("").to_owned();
        }
    };

    // It serves.
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reply");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: kill(2) only sends a signal; it touches no memory of ours.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0, "kill: {}", std::io::Error::last_os_error());

    let status = wait_until(&mut child, deadline);
    out.push_str(&collect(&stdout, Duration::from_secs(5)));
    let err = collect(&stderr, Duration::from_secs(5));
    let status =
        status.unwrap_or_else(|| panic!("still running {LIMIT:?} after SIGTERM\n{out}\n{err}"));
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{out}\n{err}"
    );
    for expected in [
        "SIGTERM received",
        r#"pool drained pool="offload-run""#,
        r#"pool drained pool="offload-cpu""#,
    ] {
        assert!(out.contains(expected), "no {expected:?} in\n{out}\n{err}");
    }
}
