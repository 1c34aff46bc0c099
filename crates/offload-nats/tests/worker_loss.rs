//! Workers that die or leave: SIGKILL mid-call (direct: a typed worker
//! loss long before the call's timeout; durable: the call still gets its
//! one result, from another worker), and a graceful shutdown (SIGTERM)
//! that loses nothing.

mod common;

use std::time::{Duration, Instant};

use common::tasks::{PidFile, WhoAmI};
use common::{Fixture, alive, pool, run, server, temp_path, wait_until_async};
use offload_nats::{CallOptions, Mode};

/// The parent of process `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Waits for the pid file a `PidFile` call writes; the pid in it.
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
fn direct_sigkill_of_the_worker_is_a_worker_loss_long_before_the_timeout() {
    let server = server();
    let mut w = Fixture::new(&server.url()).start();
    run(async {
        let p = pool(&server.url(), Mode::Direct).await; // heartbeat 200 ms
        let path = temp_path("kill-direct");
        let call = p.call_with::<PidFile>(
            (path.clone(), 60_000),
            CallOptions::new().timeout(Duration::from_secs(60)),
        );
        let call = tokio::spawn(call);
        let task_pid = pid_in(&path).await;
        // After the first heartbeat (50 ms), which names the worker.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let killed = Instant::now();
        w.kill();
        let e = tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("the call resolves long before its 60 s timeout")
            .unwrap()
            .unwrap_err();
        assert!(e.is_worker_lost(), "{e}");
        assert!(
            e.worker().is_some_and(|n| n == w.name),
            "{e}: {:?}",
            e.worker()
        );
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "{:?}",
            killed.elapsed()
        );
        // The task's process dies with its worker (no orphans).
        assert!(wait_until_async(Duration::from_secs(10), || !alive(task_pid)).await);
        let _ = std::fs::remove_file(&path);
    });
}

#[test]
fn durable_sigkill_of_the_worker_runs_the_call_again_elsewhere() {
    let server = server();
    let url = server.url();
    let a = Fixture::new(&url).arg("--ack-wait-ms", 1000).start();
    let b = Fixture::new(&url).arg("--ack-wait-ms", 1000).start();
    let mut workers = [Some(a), Some(b)];
    run(async {
        let p = pool(&url, Mode::Durable).await;
        let path = temp_path("kill-durable");
        let call = tokio::spawn(p.call::<PidFile>((path.clone(), 1_500)));
        let first = pid_in(&path).await;
        let owner = parent_of(first).expect("the task's worker");
        let victim = workers
            .iter_mut()
            .find(|w| w.as_ref().is_some_and(|w| w.pid() == owner))
            .expect("the task runs under one of our workers");
        victim.take().expect("alive").kill();
        let _ = std::fs::remove_file(&path);
        let pid = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("the call resolves")
            .unwrap()
            .expect("the call still succeeds");
        // It ran again, in a process of the other worker.
        assert_ne!(pid, first);
        let survivor = workers.iter().flatten().next().unwrap().pid();
        let m = p.metrics();
        assert_eq!((m.completed, m.failed), (1, 0), "{m:?}");
        assert_eq!(m.redelivered, 1, "{m:?}");
        let _ = survivor;
    });
}

#[test]
fn durable_graceful_shutdown_hands_back_what_it_holds_and_loses_nothing() {
    let server = server();
    let url = server.url();
    // Grace 0: everything in hand is handed back at once.
    let mut a = Fixture::new(&url)
        .arg("--processes", 2)
        .arg("--grace-ms", 0)
        .start();
    run(async {
        let p = pool(&url, Mode::Durable).await;
        let calls: Vec<_> = (0..8)
            .map(|_| tokio::spawn(p.call::<WhoAmI>(300)))
            .collect();
        // Let `a` take some of them, then stop it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.terminate();
        let status = tokio::task::spawn_blocking(move || {
            let s = a.wait_exit(Duration::from_secs(20));
            (s, a)
        })
        .await
        .unwrap();
        assert!(status.0.is_some_and(|s| s.success()), "{:?}", status.0);
        // A new worker takes over every job, queued or handed back, and
        // at once: a job `a` held and did not hand back would wait out its
        // ack wait (30 s) first (seen: a pull the shutdown dropped unread).
        let b = Fixture::new(&url).arg("--processes", 2).start();
        let results =
            tokio::time::timeout(Duration::from_secs(12), futures::future::join_all(calls))
                .await
                .expect("every call resolves well within the ack wait");
        for r in results {
            let (_pid, ppid) = r.unwrap().expect("no call is lost");
            assert!(ppid == b.pid() || ppid == status.1.pid(), "{ppid}");
        }
        let m = p.metrics();
        assert_eq!((m.completed, m.failed), (8, 0), "{m:?}");
    });
}

#[test]
fn direct_graceful_shutdown_finishes_the_calls_in_hand() {
    let server = server();
    let url = server.url();
    let mut a = Fixture::new(&url).arg("--processes", 2).start();
    run(async {
        let p = pool(&url, Mode::Direct).await;
        let calls: Vec<_> = (0..2)
            .map(|_| tokio::spawn(p.call::<WhoAmI>(500)))
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.terminate();
        for c in calls {
            let (_pid, ppid) = c.await.unwrap().expect("finished before the worker left");
            assert_eq!(ppid, a.pid());
        }
        let exited = tokio::task::spawn_blocking(move || a.wait_exit(Duration::from_secs(20)))
            .await
            .unwrap();
        assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
        // Nobody serves now.
        let e = p.call::<WhoAmI>(1).await.unwrap_err();
        assert!(e.is_no_workers(), "{e}");
    });
}

/// A job whose deliveries all went to workers that died (the last one
/// taken by a puller that never answers, as a worker killed right after
/// its pull is) still reaches the dead-letter subject once a live worker
/// is there, and its caller gets a typed worker loss. With a delivery
/// limit on the server, that last delivery was the job's final one: it
/// stayed in the stream and the call waited for ever.
#[test]
fn a_job_whose_last_delivery_died_still_reaches_the_dead_letter() {
    use futures::StreamExt;
    let server = server();
    let url = server.url();
    let worker = |url: &str| {
        Fixture::new(url)
            .arg("--ack-wait-ms", 300)
            .arg("--max-deliver", 1)
            .start()
    };
    let mut first = worker(&url);
    run(async {
        let p = pool(&url, Mode::Durable).await;
        let path = temp_path("dead-letter");
        let call = tokio::spawn(p.call::<PidFile>((path.clone(), 5_000)));
        // Delivery 1: the worker starts the task and is killed.
        let _ = pid_in(&path).await;
        first.kill();
        let _ = std::fs::remove_file(&path);

        // Delivery 2 (the last one a limit of max_deliver + 1 allowed) goes
        // to a puller that never acks nor dead-letters it.
        let client = async_nats::connect(url.as_str()).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream("OFFLOAD_offload").await.expect("the stream");
        let names: Vec<String> = stream
            .consumer_names()
            .filter_map(|n| async move { n.ok() })
            .collect()
            .await;
        // One consumer per task served; the task's is named after it.
        let name = names
            .iter()
            .find(|n| n.starts_with("pidfile_"))
            .unwrap_or_else(|| panic!("no consumer for the task: {names:?}"));
        let consumer = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(name)
            .await
            .expect("the consumer");
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(10))
            .messages()
            .await
            .expect("a pull");
        let taken = tokio::time::timeout(Duration::from_secs(15), batch.next())
            .await
            .expect("the job is delivered again after the ack wait")
            .expect("a message")
            .expect("a job");
        assert_eq!(taken.info().expect("job info").delivered, 2);
        drop((taken, batch));

        // A live worker comes: the next delivery reaches it, past its
        // max_deliver, and it sends the job to the dead letter.
        let _second = worker(&url);
        let err = tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("the call resolves once a live worker gets the job")
            .unwrap()
            .expect_err("its deliveries ran out");
        assert!(err.is_worker_lost(), "{err}");
        let m = p.metrics();
        assert_eq!((m.worker_lost, m.failed), (1, 1), "{m:?}");
    });
}
