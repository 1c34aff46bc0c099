//! Scenario 1: a process pool under load while a random worker is
//! SIGKILLed from outside every 50 ms. Every call must resolve: ok, or
//! failed with `is_worker_lost()`. Measures how fast the pool is back at
//! full size after each kill.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use offload::proc::ProcessPool;

use super::{
    Config, Outcome, Tally, bounded, join, left_behind, median_max, not_built, sigkill, wait_until,
};
use crate::tasks::Noop;

const NAME: &str = "cx-kill";
const WORKERS: usize = 2;
const KILL_EVERY: Duration = Duration::from_millis(50);
/// Calls in flight at once: more than the queue holds, so submitters also
/// wait on backpressure.
const IN_FLIGHT: usize = 2048;

pub(super) fn run(cfg: &Config) -> Vec<Outcome> {
    let tasks: u64 = if cfg.quick { 3_000 } else { 100_000 };
    // At least ~20 kills in a quick run, ~200 in a full one.
    let min_duration = cfg.duration.unwrap_or(if cfg.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    });
    let pool = match ProcessPool::builder()
        .name(NAME)
        .workers(WORKERS)
        .queue_capacity(1024)
        .registry(crate::tasks::registry())
        .build()
    {
        Ok(p) => p,
        Err(e) => return vec![not_built("kill-storm", &e)],
    };
    let mut tally = Tally::default();
    if !wait_until(Duration::from_secs(20), || {
        pool.worker_pids().len() == WORKERS
    }) {
        tally.broken("the pool never reached full size".into());
    }

    let stop = AtomicBool::new(false);
    let seen = Mutex::new(BTreeSet::new());
    let started = Instant::now();
    let (recoveries, kills, unrecovered) = std::thread::scope(|s| {
        let killer = s.spawn(|| killer(&pool, &stop, &seen));
        super::runtime().block_on(async {
            let mut next = 0u64;
            let mut inflight = FuturesUnordered::new();
            loop {
                while inflight.len() < IN_FLIGHT
                    && (next < tasks || started.elapsed() < min_duration)
                {
                    let call = pool.call::<Noop>(next);
                    let want = next;
                    inflight.push(async move { (want, bounded(call).await) });
                    next += 1;
                    tally.submitted += 1;
                }
                let Some((want, result)) = inflight.next().await else {
                    break;
                };
                if let Some(got) = tally.record(result, offload::Error::is_worker_lost) {
                    if got != want {
                        tally.broken(format!("call {want} returned {got}"));
                    }
                }
            }
        });
        stop.store(true, Ordering::Relaxed);
        killer.join().unwrap_or_default()
    });
    let elapsed = started.elapsed();

    // Back at full size once the storm is over?
    let full = wait_until(Duration::from_secs(10), || {
        pool.metrics().workers == WORKERS && pool.worker_pids().len() == WORKERS
    });
    let pool_size = pool.metrics().workers;
    if !full {
        tally.broken(format!("pool not back at full size: {pool_size}"));
    }
    let started_workers = pool.metrics().started;
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(pool.worker_pids().values());
    drop(pool);
    let pids: Vec<u32> = seen
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .collect();
    let (left, note) = left_behind(NAME, &pids);

    let mut rec = recoveries;
    let (median, max) = median_max(&mut rec);
    let rate = tally.submitted as f64 / elapsed.as_secs_f64();
    let detail = join(&[
        format!(
            "{kills} kills in {:.1} s ({rate:.0} calls/s), {started_workers} workers started; \
             back at full size after median {median:.1} ms, max {max:.1} ms (goal <= 100 ms)",
            elapsed.as_secs_f64()
        ),
        if unrecovered > 0 {
            format!("{unrecovered} kills not recovered within 5 s")
        } else {
            String::new()
        },
        note,
    ]);
    if unrecovered > 0 {
        tally.broken(format!("{unrecovered} kills not recovered"));
    }
    vec![tally.outcome("kill-storm", pool_size, left, detail)]
}

/// Every 50 ms, SIGKILLs a random live worker and measures (polling every
/// 0.2 ms) how long until the pool is back at full size without it.
/// Returns the recovery times in ms, the number of kills and of kills not
/// recovered within 5 s.
fn killer(
    pool: &ProcessPool,
    stop: &AtomicBool,
    seen: &Mutex<BTreeSet<u32>>,
) -> (Vec<f64>, u64, u64) {
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut recoveries = Vec::new();
    let (mut kills, mut unrecovered) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let tick = Instant::now();
        let pids: Vec<u32> = pool.worker_pids().into_values().collect();
        seen.lock().unwrap_or_else(|e| e.into_inner()).extend(&pids);
        if let Some(&victim) = pids.get({
            // xorshift: no dependency for one random index.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % pids.len().max(1) as u64) as usize
        }) {
            sigkill(victim);
            let killed = Instant::now();
            kills += 1;
            let recovered = wait_for(Duration::from_secs(5), stop, || {
                let now = pool.worker_pids();
                now.len() >= WORKERS
                    && pool.metrics().workers >= WORKERS
                    && !now.values().any(|&p| p == victim)
            });
            match recovered {
                Some(true) => recoveries.push(killed.elapsed().as_secs_f64() * 1e3),
                Some(false) => unrecovered += 1,
                // The load ended first: an idle driver replaces its worker
                // only at its next call, so this kill is not measured.
                None => {}
            }
        }
        if let Some(left) = KILL_EVERY.checked_sub(tick.elapsed()) {
            std::thread::sleep(left);
        }
    }
    (recoveries, kills, unrecovered)
}

/// Polls `cond` every 0.2 ms: `Some(true)` once it holds, `Some(false)`
/// after `within`, `None` if `stop` is set first.
fn wait_for(within: Duration, stop: &AtomicBool, mut cond: impl FnMut() -> bool) -> Option<bool> {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return Some(true);
        }
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        if Instant::now() >= deadline {
            return Some(false);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}
