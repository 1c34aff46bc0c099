//! Scenario 13: our own API never holds the event loop. Each row runs on a
//! current-thread tokio runtime beside a 5 ms ticker and measures the
//! worst gap between ticks while the call runs: dropping a thread pool
//! whose job still sleeps 500 ms, building a dedicated executor whose
//! `init` takes 300 ms, dropping a process pool with a 500 ms call
//! running. A gap over 50 ms counts as the loop held (`unexpected`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use offload::proc::ProcessPool;
use offload::{Dedicated, ThreadPool};

use super::{Config, Outcome, Tally, join, left_behind, not_built};
use crate::tasks::SleepMs;

const HELD: Duration = Duration::from_millis(50);

/// Runs `call` beside a 5 ms ticker; returns the worst gap between ticks
/// that overlapped the call.
fn worst_gap<Fut: std::future::Future<Output = ()>>(call: impl FnOnce() -> Fut) -> Duration {
    super::runtime().block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let ticker = tokio::spawn(async move {
            let mut gaps = Vec::new();
            let mut last = Instant::now();
            while !s.load(SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let now = Instant::now();
                gaps.push((last, now));
                last = now;
            }
            gaps
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let start = Instant::now();
        call().await;
        let end = Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.store(true, SeqCst);
        let gaps = ticker.await.unwrap_or_default();
        gaps.iter()
            .filter(|(from, to)| *from <= end && *to >= start)
            .map(|(from, to)| *to - *from)
            .max()
            .unwrap_or_default()
    })
}

fn row(
    scenario: &str,
    gap: Duration,
    mut tally: Tally,
    what: &str,
    left: (u64, String),
) -> Outcome {
    tally.submitted += 1;
    if gap > HELD {
        tally.broken(format!("the loop was held for {gap:?}"));
    } else {
        tally.ok += 1;
    }
    let detail = join(&[
        format!(
            "{what}: worst ticker gap {:.1} ms (limit 50 ms)",
            gap.as_secs_f64() * 1e3
        ),
        left.1,
    ]);
    tally.outcome(scenario, 0, left.0, detail)
}

pub(super) fn run(_cfg: &Config) -> Vec<Outcome> {
    let mut out = Vec::new();

    // A thread pool dropped while its one job sleeps 500 ms.
    let pool = match ThreadPool::builder().name("cx-nb-t").threads(1).build() {
        Ok(p) => p,
        Err(e) => return vec![not_built("no-block/drop-threads", &e)],
    };
    let job = pool.run(|| std::thread::sleep(Duration::from_millis(500)));
    let gap = worst_gap(|| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(pool);
    });
    let tally = Tally::default();
    let _ = futures::executor::block_on(job);
    out.push(row(
        "no-block/drop-threads",
        gap,
        tally,
        "drop(pool) with a 500 ms job running",
        left_behind("cx-nb-t", &[]),
    ));

    // A dedicated executor whose init takes 300 ms.
    let mut built = None;
    let gap = worst_gap(|| {
        let slot = &mut built;
        async move {
            *slot = Some(Dedicated::builder().name("cx-nb-d").build(|| {
                std::thread::sleep(Duration::from_millis(300));
                0u64
            }));
        }
    });
    let tally = Tally::default();
    if let Some(Ok(d)) = built {
        let _ = futures::executor::block_on(d.ready());
        d.shutdown_blocking();
    }
    out.push(row(
        "no-block/build-dedicated",
        gap,
        tally,
        "Dedicated::build with a 300 ms init",
        left_behind("cx-nb-d", &[]),
    ));

    // A process pool dropped while a 500 ms call runs.
    let procs = match ProcessPool::builder()
        .name("cx-nb-p")
        .workers(1)
        .registry(crate::tasks::registry())
        .build()
    {
        Ok(p) => p,
        Err(e) => {
            out.push(not_built("no-block/drop-procs", &e));
            return out;
        }
    };
    let _ = futures::executor::block_on(procs.ready());
    let pids: Vec<u32> = procs.worker_pids().into_values().collect();
    let call = procs.call::<SleepMs>(500);
    let gap = worst_gap(|| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(procs);
    });
    let mut tally = Tally::default();
    if futures::executor::block_on(call).is_err() {
        tally.broken("the running call did not finish after the drop".into());
    }
    out.push(row(
        "no-block/drop-procs",
        gap,
        tally,
        "drop(procs) with a 500 ms call running",
        left_behind("cx-nb-p", &pids),
    ));
    out
}
