//! Scenario `remote-server-restart`: the NATS server is killed and started
//! again (same port, same storage) while calls are in flight, in each
//! mode. Every call must resolve: with its result, or a typed, retryable
//! error (direct calls are at most once, so a reply lost with the server
//! is `is_transport` or `is_worker_lost`); none may hang.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use offload_nats::{Mode, RemotePool, async_nats};

use super::{Config, Outcome, Tally, bounded, join, left_behind, not_built};
use crate::cluster::{NatsChild, local_server, nats_runtime};
use crate::tasks::SleepMs;

const WORKERS: usize = 2;

pub(super) fn run(cfg: &Config) -> Vec<Outcome> {
    [Mode::Direct, Mode::Durable]
        .into_iter()
        .map(|mode| scenario(cfg, mode))
        .collect()
}

fn scenario(cfg: &Config, mode: Mode) -> Outcome {
    let name = match mode {
        Mode::Durable => "remote-server-restart/durable",
        _ => "remote-server-restart/direct",
    };
    let calls: u64 = if cfg.quick { 300 } else { 2_000 };
    let mut server = match local_server() {
        Ok(s) => s,
        Err(e) => return not_built(name, &e),
    };
    let url = server.url();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        match NatsChild::start("worker", &url, Some(Duration::from_secs(2))) {
            Ok(w) => workers.push(w),
            Err(e) => return not_built(name, &e),
        }
    }
    let pids: Vec<u32> = workers.iter().map(NatsChild::pid).collect();
    let rt = match nats_runtime() {
        Ok(rt) => rt,
        Err(e) => return not_built(name, &e),
    };
    let pool = match rt.block_on(
        RemotePool::builder()
            .url(url.clone())
            .mode(mode)
            .heartbeat(Duration::from_millis(250))
            .connect_options(
                async_nats::ConnectOptions::new()
                    .reconnect_delay_callback(|_| Duration::from_millis(100)),
            )
            .build(),
    ) {
        Ok(p) => p,
        Err(e) => return not_built(name, &e),
    };
    let mut tally = Tally::default();
    let expected = |e: &offload::Error| e.is_transport() || e.is_worker_lost() || e.is_no_workers();
    let started = Instant::now();
    let mut restarted_after = None;
    let mut down_for = Duration::ZERO;
    rt.block_on(async {
        // 2 ms tasks, all submitted at once: ~1 s of work on 2 workers.
        let mut inflight: FuturesUnordered<_> = (0..calls)
            .map(|_| {
                tally.submitted += 1;
                bounded(pool.call::<SleepMs>(2))
            })
            .collect();
        let mut done = 0;
        while let Some(r) = inflight.next().await {
            tally.record(r, expected);
            done += 1;
            if done == calls / 10 && restarted_after.is_none() {
                restarted_after = Some(started.elapsed());
                let t = Instant::now();
                if let Err(e) = server.restart() {
                    tally.broken(format!("the server did not start again: {e}"));
                }
                down_for = t.elapsed();
            }
        }
    });
    // Everyone reconnected: a new call succeeds within 10 s.
    let back = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if pool.call::<SleepMs>(0).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    if !back {
        tally.broken("no call succeeded within 10 s of the restart".into());
    }
    drop(pool);
    drop(rt);
    drop(workers);
    drop(server);
    let (left, note) = left_behind("lab-nats", &pids);
    let detail = join(&[
        format!(
            "server killed and restarted after {:.0} ms (down {:.0} ms); reconnected: {back}",
            restarted_after.unwrap_or_default().as_secs_f64() * 1e3,
            down_for.as_secs_f64() * 1e3
        ),
        note,
    ]);
    tally.outcome(name, WORKERS, left, detail)
}
