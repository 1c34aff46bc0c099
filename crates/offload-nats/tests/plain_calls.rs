//! A direct call with no timeout and the default heartbeat (the common
//! call) goes without NATS headers, and its `ok` result comes back
//! without them: the subject names the task and its fingerprint already.
//! Everything else a direct call promises must hold on that path too:
//! errors and heartbeats still carry their kind, a timeout still travels
//! (with headers), and a worker that dies is still a typed worker loss
//! that names it.

mod common;

use std::time::{Duration, Instant};

use common::tasks::{Boom, Echo, PidFile};
use common::{Fixture, alive, run, server, temp_path, wait_until_async};
use futures::StreamExt;
use offload_nats::{CallOptions, RemotePool};

/// A pool with the default heartbeat: its calls without a timeout are
/// plain.
async fn plain_pool(url: &str) -> RemotePool {
    RemotePool::builder()
        .url(url)
        .build()
        .await
        .expect("the pool connects")
}

#[test]
fn plain_calls_carry_no_headers_and_keep_results_and_errors_typed() {
    let server = server();
    let _w = Fixture::new(&server.url()).start();
    run(async {
        // An observer sees every call and every reply (a plain
        // subscription gets a copy of what the workers' queue group gets).
        let observer = async_nats::connect(server.url()).await.unwrap();
        let mut seen = observer.subscribe(">").await.unwrap();
        observer.flush().await.unwrap();
        let p = plain_pool(&server.url()).await;

        assert_eq!(p.call::<Echo>(7).await.unwrap(), 7);
        let e = p.call::<Boom>("plain".into()).await.unwrap_err();
        assert!(e.is_remote_panic() || e.is_panic(), "{e}");
        // A timeout is a header: that call carries them.
        let timed = CallOptions::new().timeout(Duration::from_secs(30));
        assert_eq!(p.call_with::<Echo>(8, timed).await.unwrap(), 8);

        // Calls are on `offload.…` subjects; a call's reply goes to its
        // reply subject.
        let mut calls = Vec::new();
        let mut replies = std::collections::HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while calls.len() < 3 || replies.len() < 3 {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, seen.next())
                .await
                .expect("the observer saw the three calls and their replies")
                .unwrap();
            if m.subject.starts_with("offload.") && m.reply.is_some() {
                calls.push(m);
            } else if m.subject.starts_with("_INBOX") || m.subject.contains("INBOX") {
                // A heartbeat may come before a reply (its first beat is
                // due a quarter interval in: a slow panic on a loaded
                // machine gets one); it is not the reply.
                let beat = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Offload-Kind"))
                    .is_some_and(|v| v.as_str() == "hb");
                if !beat {
                    replies.entry(m.subject.to_string()).or_insert(m);
                }
            }
        }
        let reply_to = |call: &async_nats::Message| {
            replies
                .get(call.reply.as_ref().unwrap().as_str())
                .expect("the reply of each call was seen")
        };
        // Echo(7): plain both ways.
        assert!(calls[0].headers.is_none(), "{:?}", calls[0].headers);
        assert!(reply_to(&calls[0]).headers.is_none());
        // Boom: a plain call, but an error reply says so in its headers.
        assert!(calls[1].headers.is_none());
        let err = reply_to(&calls[1])
            .headers
            .as_ref()
            .expect("err has a kind");
        assert_eq!(
            err.get("Offload-Kind").map(|v| v.as_str()),
            Some("err"),
            "{err:?}"
        );
        // Echo(8) with a timeout: headers both ways.
        let h = calls[2].headers.as_ref().expect("the timeout travels");
        assert_eq!(
            h.get("Offload-Timeout-Ms").map(|v| v.as_str()),
            Some("30000")
        );
        assert!(reply_to(&calls[2]).headers.is_some());
        p.shutdown().await;
    });
}

#[test]
fn a_plain_call_whose_worker_dies_is_a_worker_loss_that_names_it() {
    let server = server();
    let mut w = Fixture::new(&server.url()).start();
    run(async {
        let p = plain_pool(&server.url()).await;
        let path = temp_path("kill-plain");
        let call = tokio::spawn(p.call::<PidFile>((path.clone(), 60_000)));
        let mut task_pid = 0;
        assert!(
            wait_until_async(Duration::from_secs(20), || {
                task_pid = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                task_pid != 0
            })
            .await,
            "the task never started"
        );
        // After the first heartbeat (a quarter of the default second),
        // which names the worker.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let killed = Instant::now();
        w.kill();
        let e = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("a plain call resolves without a timeout of its own")
            .unwrap()
            .unwrap_err();
        assert!(e.is_worker_lost(), "{e}");
        assert_eq!(e.worker(), Some(w.name.as_str()), "{e}");
        // Two default heartbeats and a second of slack, with room for a
        // loaded machine.
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "{:?}",
            killed.elapsed()
        );
        assert!(wait_until_async(Duration::from_secs(10), || !alive(task_pid)).await);
        let _ = std::fs::remove_file(&path);
    });
}
