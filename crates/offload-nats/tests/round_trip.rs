//! Calls that work: a round trip in each mode, load shared by two
//! workers, errors of the task itself, the in-flight bound, the service
//! API.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::tasks::{Boom, Echo, WhoAmI};
use common::{Fixture, pool, run, server};
use offload_nats::{Mode, RemotePool};

#[test]
fn smoke_round_trip_in_each_mode() {
    let server = server();
    let _w = Fixture::new(&server.url()).start();
    run(async {
        for mode in [Mode::Direct, Mode::Durable] {
            let p = pool(&server.url(), mode).await;
            for i in [0u64, 1, u64::MAX] {
                assert_eq!(p.call::<Echo>(i).await.unwrap(), i, "{mode:?}");
            }
            let m = p.metrics();
            assert_eq!((m.completed, m.failed, m.in_flight), (3, 0, 0), "{mode:?}");
            p.shutdown().await;
            let e = p.call::<Echo>(1).await.unwrap_err();
            assert!(e.is_shutdown(), "{e}");
        }
    });
}

#[test]
fn a_worker_can_run_calls_in_process() {
    let server = server();
    let w = Fixture::new(&server.url()).arg("--in-process", 2).start();
    run(async {
        for mode in [Mode::Direct, Mode::Durable] {
            let p = pool(&server.url(), mode).await;
            assert_eq!(p.call::<Echo>(11).await.unwrap(), 11, "{mode:?}");
            // No process of its own: the task runs in the worker program.
            let (pid, _) = p.call::<WhoAmI>(0).await.unwrap();
            assert_eq!(pid, w.pid(), "{mode:?}");
            let e = p.call::<Boom>("caught".into()).await.unwrap_err();
            assert!(e.is_remote_panic() || e.is_panic(), "{mode:?}: {e}");
            assert_eq!(p.call::<Echo>(12).await.unwrap(), 12, "{mode:?}");
        }
    });
}

#[test]
fn two_workers_share_the_load() {
    let server = server();
    let a = Fixture::new(&server.url()).arg("--processes", 1).start();
    let b = Fixture::new(&server.url()).arg("--processes", 1).start();
    run(async {
        for mode in [Mode::Direct, Mode::Durable] {
            let p = pool(&server.url(), mode).await;
            // 100 ms each, 12 at once: one process alone would take 1.2 s.
            let calls = (0..12).map(|_| p.call::<WhoAmI>(100));
            let results = futures::future::join_all(calls).await;
            let mut by_worker = BTreeMap::<u32, usize>::new();
            for r in results {
                let (_pid, ppid) = r.unwrap();
                *by_worker.entry(ppid).or_default() += 1;
            }
            assert!(
                by_worker.contains_key(&a.pid()) && by_worker.contains_key(&b.pid()),
                "{mode:?}: calls per worker {by_worker:?}, workers {} and {}",
                a.pid(),
                b.pid()
            );
        }
    });
}

#[test]
fn a_task_panic_arrives_as_a_remote_panic() {
    let server = server();
    let _w = Fixture::new(&server.url()).start();
    run(async {
        for mode in [Mode::Direct, Mode::Durable] {
            let p = pool(&server.url(), mode).await;
            let e = p.call::<Boom>("disk on fire".into()).await.unwrap_err();
            assert!(e.is_remote_panic(), "{e}");
            assert_eq!(e.panic_message(), Some("disk on fire"));
            // The worker survived it.
            assert_eq!(p.call::<Echo>(5).await.unwrap(), 5);
        }
    });
}

#[test]
fn in_flight_calls_are_bounded_and_try_call_hands_the_input_back() {
    let server = server();
    let _w = Fixture::new(&server.url()).start();
    run(async {
        let p = RemotePool::builder()
            .url(server.url())
            .max_in_flight(1)
            .build()
            .await
            .unwrap();
        let mut first = p.try_call::<WhoAmI>(300).expect("a free slot");
        // Poll it a little so that it takes its slot.
        let polled = tokio::time::timeout(Duration::from_millis(50), &mut first).await;
        assert!(polled.is_err(), "a 300 ms call still runs");
        let e = p.try_call::<Echo>(42).unwrap_err();
        assert!(e.is_full());
        assert_eq!(e.into_inner(), 42);
        // `call` waits for the slot instead.
        let second = p.call::<Echo>(7);
        let (a, b) = tokio::join!(first, second);
        a.unwrap();
        assert_eq!(b.unwrap(), 7);
        p.shutdown().await;
        assert!(p.try_call::<Echo>(1).unwrap_err().is_shutdown());
    });
}

#[test]
fn workers_answer_the_nats_service_api() {
    let server = server();
    let w = Fixture::new(&server.url()).arg("--name", "box-7").start();
    run(async {
        let p = pool(&server.url(), Mode::Direct).await;
        p.call::<Echo>(1).await.unwrap();
        let c = p.client();
        let get = |subject: &'static str| async move {
            let m = tokio::time::timeout(Duration::from_secs(5), c.request(subject, "".into()))
                .await
                .expect("an answer in time")
                .expect("an answer");
            serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()
        };
        let ping = get("$SRV.PING").await;
        assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");
        assert_eq!(ping["name"], "offload");
        assert_eq!(ping["metadata"]["worker"], "box-7");
        let info = get("$SRV.INFO.offload").await;
        let endpoints = info["endpoints"].as_array().unwrap();
        assert!(endpoints.iter().any(|e| e["name"] == "echo"), "{info}");
        let stats = get("$SRV.STATS.offload").await;
        let echo = stats["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "echo")
            .cloned()
            .unwrap();
        assert_eq!(echo["num_requests"], 1, "{stats}");
        assert!(stats["started"].as_str().unwrap().ends_with('Z'));
        assert_eq!(echo["data"]["running"], 0, "{stats}");
        // A call running in a process shows as running (its handler wrote
        // it to the process itself: no driver thread carries it).
        let watch = async {
            let mut seen = serde_json::Value::Null;
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                seen = get("$SRV.STATS.offload").await;
                if seen["endpoints"][0]["data"]["running"] == 1 {
                    break;
                }
            }
            seen
        };
        let (slow, seen) = tokio::join!(p.call::<WhoAmI>(1_500), watch);
        let data = &seen["endpoints"][0]["data"];
        assert_eq!(data["running"], 1, "{seen}");
        assert_eq!(data["held"], 1, "{seen}");
        slow.unwrap();
        drop(w);
    });
}

#[test]
fn bad_settings_are_refused() {
    run(async {
        let url = "nats://127.0.0.1:1"; // never reached: settings are checked first
        let bad = [
            RemotePool::builder().url(url).max_in_flight(0),
            RemotePool::builder()
                .url(url)
                .heartbeat(Duration::from_millis(1)),
            RemotePool::builder().url(url).prefix("a.*"),
            RemotePool::builder().url(url).probe_timeout(Duration::ZERO),
        ];
        for b in bad {
            let e = b.build().await.unwrap_err();
            assert!(matches!(e, offload_nats::BuildError::Invalid(_)), "{e}");
        }
        let e = offload_nats::Worker::builder()
            .url(url)
            .build()
            .await
            .unwrap_err();
        assert!(matches!(e, offload_nats::BuildError::Invalid(_)), "{e}");
        // A pipeline depth only means something for the built-in pool.
        let worker = || {
            offload_nats::Worker::builder()
                .url(url)
                .registry(common::tasks::registry(false))
        };
        let bad_workers = [
            worker().pipeline_depth(0),
            worker().pipeline_depth(3).in_process(2),
            worker().pipeline_depth(3).process_pool(
                offload::proc::ProcessPool::builder()
                    .registry(common::tasks::registry(false))
                    .workers(1)
                    .min_workers(0)
                    .idle_timeout(Duration::from_secs(60))
                    .build()
                    .unwrap(),
            ),
        ];
        for b in bad_workers {
            let e = b.build().await.unwrap_err();
            assert!(
                matches!(&e, offload_nats::BuildError::Invalid(m) if m.contains("pipeline_depth")),
                "{e}"
            );
        }
        let e = RemotePool::builder().url(url).build().await.unwrap_err();
        assert!(matches!(e, offload_nats::BuildError::Connect(_)), "{e}");
    });
}
