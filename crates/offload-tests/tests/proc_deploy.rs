//! A deploy that replaces the program on disk cannot break a live pool,
//! and workers that cannot start never make the pool start them in a loop.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{block, rogue, wait_bounded};
use offload_tests::*;

#[test]
fn smoke() {
    assert!(std::path::Path::new(env!("CARGO_BIN_EXE_proc_fixture")).exists());
}

#[test]
fn workers_start_from_the_running_image_after_a_deploy() {
    // A copy of the fixture replaces its own file mid-run, then needs new
    // workers: they start from the image it runs, not the file.
    let dir = std::env::temp_dir().join(format!("offload-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("fixture-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_proc_fixture"), &exe).unwrap();
    let mut child = Command::new(&exe)
        .arg("deploy")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut out);
        out
    });
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    let stdout = reader.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&stdout);
    assert!(status.is_some_and(|s| s.success()), "{status:?} {stdout}");
    assert_eq!(stdout.trim(), "sum 3 7");
}

#[test]
fn every_kind_of_start_failure_backs_off() {
    // Workers whose hello is garbage: every call fails (typed), but the
    // pool does not start a worker per call.
    let log = std::env::temp_dir().join(format!("offload-rogue-starts-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let pool = rogue("garbage-hello")
        .env_clear_with([("ROGUE_LOG", log.as_os_str())])
        .build()
        .unwrap();
    for _ in 0..20 {
        let err = block(pool.call::<Sum>(vec![1])).unwrap_err();
        assert!(err.is_protocol(), "{err}");
    }
    let starts = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    let _ = std::fs::remove_file(&log);
    assert!(starts >= 1, "the worker was never started");
    assert!(starts <= 3, "{starts} starts for 20 calls");
}
