//! Scenarios 11 and 12: workers whose tasks leak (soft limit: recycled,
//! no call fails) and tasks that allocate far past a hard limit (the call
//! fails with `is_out_of_memory`, the pool heals); the parent's own
//! resident set stays flat in both.

use std::time::Instant;

use offload::proc::{ProcessPool, WorkerOutput};

use super::{Config, Outcome, Tally, bounded, join, left_behind, not_built};
use crate::tasks::{Allocate, Leak};

const MIB: u64 = 1 << 20;

/// This process's resident set, in MiB.
fn rss_mib() -> f64 {
    let pages: f64 = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / MIB as f64
}

/// Scenario 11: 8 MiB leaked per call against a 64 MiB soft limit.
pub(super) fn leak(cfg: &Config) -> Vec<Outcome> {
    const NAME: &str = "cx-leak";
    let calls: u64 = if cfg.quick { 60 } else { 600 };
    let pool = match ProcessPool::builder()
        .name(NAME)
        .workers(2)
        .max_memory_per_worker(64 * MIB)
        .output(WorkerOutput::Discard)
        .registry(crate::tasks::registry())
        .build()
    {
        Ok(p) => p,
        Err(e) => return vec![not_built("leak", &e)],
    };
    let mut tally = Tally::default();
    let rss_before = rss_mib();
    let started = Instant::now();
    super::runtime().block_on(async {
        let calls: Vec<_> = (0..calls).map(|_| pool.call::<Leak>(8)).collect();
        tally.submitted = calls.len() as u64;
        for call in calls {
            tally.record(bounded(call).await, |_| false);
        }
    });
    let elapsed = started.elapsed();
    let m = pool.metrics();
    let rss_after = rss_mib();
    let pids: Vec<u32> = pool.worker_pids().into_values().collect();
    drop(pool);
    let (left, note) = left_behind(NAME, &pids);
    let detail = join(&[
        format!(
            "{calls} calls leaking 8 MiB each in {:.1} s against a 64 MiB soft limit: {} \
             recycles, {} workers started; parent RSS {rss_before:.1} -> {rss_after:.1} MiB",
            elapsed.as_secs_f64(),
            m.recycled,
            m.started
        ),
        note,
    ]);
    if m.recycled == 0 {
        tally.broken("no worker was recycled".into());
    }
    vec![tally.outcome("leak", m.workers, left, detail)]
}

/// Scenario 12: calls that allocate 1 GiB against a 128 MiB hard limit,
/// between calls that allocate 8 MiB.
pub(super) fn runaway_memory(cfg: &Config) -> Vec<Outcome> {
    const NAME: &str = "cx-oom";
    let rounds: u64 = if cfg.quick { 5 } else { 30 };
    let pool = match ProcessPool::builder()
        .name(NAME)
        .workers(1)
        .hard_memory_limit(128 * MIB)
        .output(WorkerOutput::Discard)
        .registry(crate::tasks::registry())
        .build()
    {
        Ok(p) => p,
        Err(e) => return vec![not_built("runaway-memory", &e)],
    };
    let mut tally = Tally::default();
    let rss_before = rss_mib();
    let (mut typed, mut healed) = (0, 0);
    super::runtime().block_on(async {
        for _ in 0..rounds {
            tally.submitted += 2;
            match bounded(pool.call::<Allocate>(1024)).await {
                Some(Err(e)) if e.is_out_of_memory() => {
                    typed += 1;
                    tally.record(Some(Err::<u32, _>(e)), offload::Error::is_out_of_memory);
                }
                other => {
                    tally.record(other, |_| false);
                    tally.broken(
                        "a 1 GiB allocation under a 128 MiB limit did not fail typed".into(),
                    );
                }
            }
            if tally
                .record(bounded(pool.call::<Allocate>(8)).await, |_| false)
                .is_some()
            {
                healed += 1;
            }
        }
    });
    let m = pool.metrics();
    let rss_after = rss_mib();
    let pids: Vec<u32> = pool.worker_pids().into_values().collect();
    drop(pool);
    let (left, note) = left_behind(NAME, &pids);
    let detail = join(&[
        format!(
            "{rounds} runaway allocations under a 128 MiB hard limit: {typed} failed with \
             is_out_of_memory, {healed} next calls ran on a fresh worker ({} workers started); \
             parent RSS {rss_before:.1} -> {rss_after:.1} MiB",
            m.started
        ),
        note,
    ]);
    vec![tally.outcome("runaway-memory", m.workers, left, detail)]
}
