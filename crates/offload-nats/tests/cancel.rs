//! Dropping a call cancels it: running, the process that runs it is
//! killed (and the worker goes on); not yet started, it never runs.

mod common;

use std::time::Duration;

use common::tasks::{Echo, PidFile};
use common::{Fixture, alive, pool, run, server, temp_path, wait_until_async};
use offload_nats::{CallOptions, Mode, OnDrop};

async fn pid_in(path: &str) -> u32 {
    let mut pid = 0;
    let found = wait_until_async(Duration::from_secs(20), || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        pid != 0
    })
    .await;
    assert!(found, "the task never started");
    pid
}

#[test]
fn dropping_a_running_call_kills_its_process_in_each_mode() {
    let server = server();
    let w = Fixture::new(&server.url()).start();
    run(async {
        for mode in [Mode::Direct, Mode::Durable] {
            let p = pool(&server.url(), mode).await;
            let path = temp_path("cancel-running");
            let call = tokio::spawn(p.call::<PidFile>((path.clone(), 60_000)));
            let pid = pid_in(&path).await;
            assert!(alive(pid));
            call.abort();
            assert!(
                wait_until_async(Duration::from_secs(10), || !alive(pid)).await,
                "{mode:?}: the task's process {pid} still runs"
            );
            // The worker lives on and serves the next call.
            assert_eq!(p.call::<Echo>(9).await.unwrap(), 9, "{mode:?}");
            let _ = std::fs::remove_file(&path);
        }
        drop(w);
    });
}

#[test]
fn a_detached_call_runs_to_its_end() {
    let server = server();
    let _w = Fixture::new(&server.url()).start();
    run(async {
        let p = pool(&server.url(), Mode::Direct).await;
        let path = temp_path("detach");
        let call = tokio::spawn(p.call_with::<PidFile>(
            (path.clone(), 400),
            CallOptions::new().on_drop(OnDrop::Detach),
        ));
        let pid = pid_in(&path).await;
        call.abort();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(alive(pid), "a detached call is not killed");
        let _ = std::fs::remove_file(&path);
    });
}

#[test]
fn a_dropped_call_that_has_not_started_never_runs_in_each_mode() {
    let server = server();
    // One process: the second call waits behind the first.
    let _w = Fixture::new(&server.url()).arg("--processes", 1).start();
    run(async {
        for mode in [Mode::Direct, Mode::Durable] {
            let p = pool(&server.url(), mode).await;
            let (first, second) = (temp_path("cancel-first"), temp_path("cancel-second"));
            let a = tokio::spawn(p.call::<PidFile>((first.clone(), 60_000)));
            let pid = pid_in(&first).await;
            // Sent, and held (queued) by the worker behind `a`.
            let b = tokio::spawn(p.call::<PidFile>((second.clone(), 0)));
            tokio::time::sleep(Duration::from_millis(300)).await;
            b.abort();
            tokio::time::sleep(Duration::from_millis(200)).await;
            a.abort();
            assert!(wait_until_async(Duration::from_secs(10), || !alive(pid)).await);
            // Whatever ran after the cancels has run by now.
            assert_eq!(p.call::<Echo>(1).await.unwrap(), 1);
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(
                !std::path::Path::new(&second).exists(),
                "{mode:?}: the cancelled call ran"
            );
            let _ = std::fs::remove_file(&first);
        }
    });
}

#[test]
fn a_dropped_call_waiting_for_a_slot_in_the_worker_never_runs() {
    // One process at depth 1: the worker runs one call and holds the
    // others, waiting for its slot, before they reach the process.
    let server = server();
    let _w = Fixture::new(&server.url())
        .arg("--processes", 1)
        .arg("--depth", 1)
        .start();
    run(async {
        let p = pool(&server.url(), Mode::Direct).await;
        let (first, second, third) = (
            temp_path("slot-first"),
            temp_path("slot-second"),
            temp_path("slot-third"),
        );
        let a = tokio::spawn(p.call::<PidFile>((first.clone(), 1_000)));
        let pid = pid_in(&first).await;
        let b = tokio::spawn(p.call::<PidFile>((second.clone(), 0)));
        let c = tokio::spawn(p.call::<PidFile>((third.clone(), 0)));
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.abort();
        // The first finishes on its own; the third then takes the slot.
        assert_eq!(a.await.unwrap().unwrap(), pid);
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), c)
                .await
                .expect("the third call ran")
                .unwrap()
                .unwrap(),
            pid
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !std::path::Path::new(&second).exists(),
            "the cancelled call ran"
        );
        for f in [first, third] {
            let _ = std::fs::remove_file(&f);
        }
    });
}
