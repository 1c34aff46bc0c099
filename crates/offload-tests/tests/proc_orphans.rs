//! No orphans: when the parent dies, however it dies, its workers exit.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::eventually;
use offload_tests::{alive, sigkill};

#[test]
fn smoke() {
    assert!(alive(std::process::id()));
}

#[test]
fn workers_exit_when_the_parent_is_sigkilled() {
    let mut parent = Command::new(env!("CARGO_BIN_EXE_proc_fixture"))
        .arg("orphan-parent")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = parent.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    let pids: Vec<u32> = match &line {
        Ok(l) => l
            .strip_prefix("pids ")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    // Kill and reap the parent whatever happened, before asserting.
    sigkill(parent.id());
    let _ = parent.wait();
    assert_eq!(
        pids.len(),
        2,
        "the fixture parent printed its workers: {line:?}"
    );
    assert!(
        eventually(Duration::from_secs(2), || pids.iter().all(|&p| !alive(p))),
        "workers outlived their SIGKILLed parent: {pids:?}"
    );
}

#[test]
fn workers_in_a_long_init_exit_when_the_parent_dies() {
    // The parent is watched from before the registry's init runs.
    let dir = std::env::temp_dir().join(format!("offload-init-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut parent = Command::new(env!("CARGO_BIN_EXE_proc_fixture"))
        .arg("idle")
        .env("FIXTURE_INIT_PID_DIR", &dir)
        .env("FIXTURE_INIT_SLEEP_MS", "60000")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pids = || -> Vec<u32> {
        std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let started = eventually(Duration::from_secs(30), || pids().len() == 2);
    sigkill(parent.id());
    let _ = parent.wait();
    let workers = pids();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(started, "both workers entered init: {workers:?}");
    assert!(
        eventually(Duration::from_secs(2), || workers
            .iter()
            .all(|&p| !alive(p))),
        "workers in init outlived their SIGKILLed parent: {workers:?}"
    );
}
