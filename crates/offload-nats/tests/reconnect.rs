//! The server restarts mid-run: callers and workers reconnect, and every
//! call in flight resolves (with its result or a typed, retryable error);
//! none hangs.

mod common;

use std::time::Duration;

use common::tasks::{Echo, WhoAmI};
use common::{Fixture, server};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use offload_nats::{Mode, RemotePool, async_nats};

async fn reconnecting_pool(url: &str, mode: Mode) -> RemotePool {
    RemotePool::builder()
        .url(url)
        .mode(mode)
        .heartbeat(Duration::from_millis(200))
        .connect_options(
            async_nats::ConnectOptions::new()
                .reconnect_delay_callback(|_| Duration::from_millis(100)),
        )
        .build()
        .await
        .expect("the pool connects")
}

fn restart_with_calls_in_flight(mode: Mode, calls: u64) {
    let mut server = server();
    let url = server.url();
    let _w = Fixture::new(&url).arg("--processes", 2).start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let p = rt.block_on(reconnecting_pool(&url, mode));
    let mut inflight: FuturesUnordered<_> = (0..calls)
        .map(|_| {
            rt.spawn(tokio::time::timeout(
                Duration::from_secs(60),
                p.call::<WhoAmI>(10),
            ))
        })
        .collect();
    // Let some finish, then restart the server under the rest.
    rt.block_on(async {
        let mut done = 0;
        while done < calls / 10 {
            inflight
                .next()
                .await
                .expect("calls left")
                .unwrap()
                .unwrap()
                .unwrap();
            done += 1;
        }
    });
    server.restart().expect("the server starts again");
    let (mut ok, mut failed) = (calls / 10, 0);
    rt.block_on(async {
        while let Some(r) = inflight.next().await {
            match r.unwrap() {
                Err(_) => panic!("{mode:?}: a call hung across the restart"),
                Ok(Ok(_)) => ok += 1,
                Ok(Err(e)) => {
                    assert!(
                        e.is_transport() || e.is_worker_lost() || e.is_no_workers(),
                        "{mode:?}: unexpected {e}"
                    );
                    failed += 1;
                }
            }
        }
        assert_eq!(ok + failed, calls);
        assert!(ok >= calls / 10, "{mode:?}: ok {ok}, failed {failed}");
        // Everyone is back: new calls succeed.
        let mut back = false;
        for _ in 0..100 {
            if p.call::<Echo>(1).await.is_ok() {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(back, "{mode:?}: no call succeeds after the restart");
        eprintln!("{mode:?}: {ok} ok, {failed} failed with typed errors");
    });
    drop(p);
}

#[test]
fn direct_server_restart_with_1000_calls_in_flight() {
    restart_with_calls_in_flight(Mode::Direct, 1000);
}

#[test]
fn durable_server_restart_with_calls_in_flight() {
    restart_with_calls_in_flight(Mode::Durable, 300);
}
