//! `bench monitor`: what the loop monitor costs, and how fast it notices.
//!
//! - `overhead`: throughput of a tokio spawn-and-yield workload with the
//!   stall detector and the lag monitor on (ours) and off (peer), runs
//!   alternated; goal: at most 1 % loss.
//! - `detection_latency`: time from the start of a 200 ms stall to the
//!   first report, with a 100 ms threshold (peer: the threshold itself);
//!   goal: at most threshold + 10 ms.

use super::BenchArgs;
use crate::report::{self, BenchLine, Better};
use offload::monitor::{LagMonitor, StallDetector};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SUITE: &str = "monitor";

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<Vec<BenchLine>> {
    Ok(vec![overhead(args)?, detection_latency(args)?])
}

/// A 2-worker runtime watched by `detector`, wired with plain closures (the
/// runtime-agnostic API: this crate does not enable offload's `tokio`
/// feature), with one heartbeat per worker.
fn watched_runtime(detector: &StallDetector) -> anyhow::Result<tokio::runtime::Runtime> {
    let hooks = detector.hooks();
    let (a, b, c, d) = (hooks.clone(), hooks.clone(), hooks.clone(), hooks);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || a.on_thread_start())
        .on_thread_stop(move || b.on_thread_stop())
        .on_thread_park(move || c.on_thread_park())
        .on_thread_unpark(move || d.on_thread_unpark())
        .build()?;
    for _ in 0..2 {
        rt.spawn(detector.heartbeat(tokio::time::sleep));
    }
    Ok(rt)
}

/// Spawns `tasks` tasks that each yield `yields` times; returns polls/s.
fn workload(rt: &tokio::runtime::Runtime, tasks: usize, yields: usize) -> f64 {
    let start = Instant::now();
    rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..yields {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.await;
        }
    });
    (tasks * (yields + 1)) as f64 / start.elapsed().as_secs_f64()
}

fn overhead(args: &BenchArgs) -> anyhow::Result<BenchLine> {
    let (rounds, tasks, yields) = if args.quick {
        (3, 2_000, 20)
    } else {
        (21, 50_000, 50)
    };
    let plain = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let detector = StallDetector::builder()
        .threshold(Duration::from_millis(100))
        .build()?;
    let watched = watched_runtime(&detector)?;
    let lag = LagMonitor::builder()
        .interval(Duration::from_millis(10))
        .build();
    watched.spawn(lag.ticker(tokio::time::sleep));
    // Warm both up, then alternate.
    workload(&plain, tasks / 10, yields);
    workload(&watched, tasks / 10, yields);
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    // Alternate, swapping which goes first every round, so neither side
    // always runs right after the other's burst.
    for round in 0..rounds {
        if round % 2 == 0 {
            peer.push(workload(&plain, tasks, yields));
            ours.push(workload(&watched, tasks, yields));
        } else {
            ours.push(workload(&watched, tasks, yields));
            peer.push(workload(&plain, tasks, yields));
        }
    }
    let (ours_median, _) = report::percentiles(&mut ours);
    let (peer_median, _) = report::percentiles(&mut peer);
    drop(lag);
    Ok(BenchLine::new(
        SUITE,
        "overhead",
        "detector+lag monitor",
        "no monitoring",
        "polls/s (median)",
        ours_median,
        peer_median,
        Better::Higher,
    ))
}

#[inline(never)]
fn stall_for(d: Duration) {
    std::thread::sleep(d);
}

fn detection_latency(args: &BenchArgs) -> anyhow::Result<BenchLine> {
    let threshold = Duration::from_millis(100);
    let rounds = if args.quick { 3 } else { 10 };
    let (tx, rx) = mpsc::channel::<Instant>();
    let detector = StallDetector::builder()
        .threshold(threshold)
        .log(false)
        .on_report(move |r| {
            if r.phase() == offload::monitor::StallPhase::Started {
                let _ = tx.send(Instant::now());
            }
        })
        .build()?;
    let rt = watched_runtime(&detector)?;
    // Let the symbolizer warm up, as it would in a long-running service.
    std::thread::sleep(Duration::from_millis(1500));
    let mut latencies = Vec::new();
    for _ in 0..rounds {
        let started = rt.block_on(async {
            tokio::spawn(async {
                let started = Instant::now();
                stall_for(Duration::from_millis(200));
                started
            })
            .await
        })?;
        let reported = rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow::anyhow!("a 200 ms stall was not reported"))?;
        latencies.push(reported.duration_since(started).as_secs_f64() * 1e3);
        // Let the end report go by, and the loop settle.
        std::thread::sleep(Duration::from_millis(300));
        while rx.try_recv().is_ok() {}
    }
    let (median, p99) = report::percentiles(&mut latencies);
    eprintln!("detection latency: median {median:.1} ms, p99 {p99:.1} ms");
    Ok(BenchLine::new(
        SUITE,
        "detection_latency",
        "stall detector (median)",
        "threshold",
        "ms",
        median,
        threshold.as_secs_f64() * 1e3,
        Better::Lower,
    ))
}
