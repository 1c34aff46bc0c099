//! Where worker output goes, and that it can neither fail a task nor grow
//! the parent without bound.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{block, fixture, wait_bounded};
use offload::proc::WorkerOutput;
use offload_tests::*;

/// This process's resident set, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn smoke() {
    let pool = fixture()
        .workers(1)
        .output(WorkerOutput::Discard)
        .build()
        .unwrap();
    assert_eq!(block(pool.call::<Print>((3, 10))).unwrap(), 33);
}

#[test]
fn every_output_mode_serves_calls() {
    for output in [
        WorkerOutput::Prefixed,
        WorkerOutput::Inherit,
        WorkerOutput::Tracing,
        WorkerOutput::Discard,
    ] {
        let pool = fixture().workers(1).output(output).build().unwrap();
        assert_eq!(block(pool.call::<Print>((2, 5))).unwrap(), 12, "{output:?}");
    }
}

#[test]
fn a_parent_whose_stderr_fails_keeps_its_workers_printing() {
    // The parent's stderr is a pipe whose reader is gone: every write to
    // it fails (EPIPE). Forwarding must go on draining, or the workers'
    // next prints would fail.
    let mut parent = Command::new(env!("CARGO_BIN_EXE_proc_fixture"))
        .arg("print-calls")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(parent.stderr.take());
    let mut out = String::new();
    let mut stdout = parent.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let status = wait_bounded(&mut parent, Duration::from_secs(60));
    let out = reader.join().unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?} {out:?}");
    assert_eq!(out.trim(), "ok 50");
}

#[test]
fn a_line_without_end_does_not_grow_the_parent() {
    // 64 MiB without a newline: the forwarder cuts it into 16 KiB pieces
    // instead of buffering it whole. (Tracing with no subscriber: the
    // pieces go nowhere, so the test's own stderr is not flooded.)
    let pool = fixture()
        .workers(1)
        .output(WorkerOutput::Tracing)
        .build()
        .unwrap();
    assert_eq!(block(pool.call::<Print>((1, 1))).unwrap(), 2);
    let before = rss();
    let len = 64 << 20;
    assert_eq!(block(pool.call::<Print>((0, len))).unwrap(), len);
    let grown = rss().saturating_sub(before);
    assert!(grown < 32 << 20, "the parent grew by {grown} bytes");
}
