//! Scenarios 7-10: cancellations and timeouts racing the calls they name,
//! and tasks that start subprocesses while their workers are killed.
//! Every call a caller still awaits must resolve with its own outcome, and
//! no call may run twice: each task marks its run in a file, and the
//! scenario counts the marks (`ran_twice`, which must be 0).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use offload::proc::{CallOptions, ProcessPool};

use super::{Config, Outcome, Tally, bounded, join, left_behind, not_built, sigkill, wait_until};
use crate::tasks::{Mark, SpawnDaemon};

/// A fresh file for the marks of one scenario.
fn marks_file(scenario: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "offload-chaos-{scenario}-{}.marks",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

/// How many times each call id was marked.
fn marks(path: &Path) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    for id in std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse::<u64>().ok())
    {
        *counts.entry(id).or_default() += 1;
    }
    counts
}

/// A small xorshift generator: no dependency for a few random numbers.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn seed() -> Rng {
    Rng(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1)
}

fn pool(name: &str, workers: usize) -> Result<ProcessPool, offload::BuildError> {
    ProcessPool::builder()
        .name(name)
        .workers(workers)
        .pipeline_depth(2)
        .registry(crate::tasks::registry())
        .build()
}

/// What a race scenario found beyond the tally: executions counted from
/// the marks, and the calls run more than once.
fn count_runs(path: &Path, tally: &mut Tally) -> (u64, u64) {
    let counts = marks(path);
    let _ = std::fs::remove_file(path);
    let executions: u64 = counts.values().map(|&n| u64::from(n)).sum();
    let twice: Vec<u64> = counts
        .iter()
        .filter(|&(_, &n)| n > 1)
        .map(|(&id, _)| id)
        .collect();
    if !twice.is_empty() {
        tally.broken(format!(
            "{} calls ran twice (first: {:?})",
            twice.len(),
            &twice[..twice.len().min(5)]
        ));
    }
    (executions, twice.len() as u64)
}

/// Scenario 7: callers give up on calls at random moments (often as the
/// reply is being written) while the next calls are already queued in the
/// same worker. The calls they keep must succeed, each once.
pub(super) fn cancel_storm(cfg: &Config) -> Vec<Outcome> {
    const NAME: &str = "cx-cancel";
    let pairs: u64 = if cfg.quick { 300 } else { 5_000 };
    let path = marks_file("cancel");
    let pool = match pool(NAME, 1) {
        Ok(p) => p,
        Err(e) => return vec![not_built("cancel-storm", &e)],
    };
    let mut tally = Tally::default();
    let mut rng = seed();
    let mut dropped = 0u64;
    let started = Instant::now();
    super::runtime().block_on(async {
        for i in 0..pairs {
            let patience = Duration::from_micros(rng.next() % 3_000);
            let mark = |id: u64, us: u64| (path.to_string_lossy().into_owned(), id, us);
            // The victim is marked as id 2i+1, the kept call as 2i.
            let victim = pool.call::<Mark>(mark(2 * i + 1, rng.next() % 2_000));
            let kept = pool.call::<Mark>(mark(2 * i, 200));
            tally.submitted += 1;
            if tokio::time::timeout(patience, victim).await.is_err() {
                dropped += 1;
            }
            if let Some(got) = tally.record(bounded(kept).await, |_| false) {
                if got != 2 * i {
                    tally.broken(format!("call {} returned {got}", 2 * i));
                }
            }
        }
    });
    let elapsed = started.elapsed();
    let restarts = pool.metrics().started.saturating_sub(1);
    let pids: Vec<u32> = pool.worker_pids().into_values().collect();
    drop(pool);
    let (left, note) = left_behind(NAME, &pids);
    let (executions, twice) = count_runs(&path, &mut tally);
    let never_ran = (2 * pairs).saturating_sub(executions);
    let detail = join(&[
        format!(
            "{} calls in {:.1} s; {dropped} given up on: {restarts} stopped while running \
             (worker restarts), {never_ran} skipped before they started; {executions} executions; \
             ran twice: {twice}",
            2 * pairs,
            elapsed.as_secs_f64(),
        ),
        note,
    ]);
    let mut o = tally.outcome("cancel-storm", 1, left, detail);
    o.ran_twice = twice;
    vec![o]
}

/// Scenario 8: each call's timeout fires about when it finishes, with the
/// next call already queued in the worker. Timed-out calls fail with
/// `is_timeout`; the others succeed; nothing runs twice.
pub(super) fn timeout_race(cfg: &Config) -> Vec<Outcome> {
    const NAME: &str = "cx-tmo";
    let calls: u64 = if cfg.quick { 100 } else { 1_000 };
    let path = marks_file("timeout");
    let pool = match pool(NAME, 1) {
        Ok(p) => p,
        Err(e) => return vec![not_built("timeout-race", &e)],
    };
    let mut tally = Tally::default();
    let mut rng = seed();
    let started = Instant::now();
    super::runtime().block_on(async {
        let mut inflight = FuturesUnordered::new();
        for id in 0..calls {
            // Runs 2-4 ms against a 3 ms timeout.
            let work = 2_000 + rng.next() % 2_000;
            let opts = CallOptions::new().timeout(Duration::from_millis(3));
            let call =
                pool.call_with::<Mark>((path.to_string_lossy().into_owned(), id, work), opts);
            tally.submitted += 1;
            inflight.push(async move { (id, bounded(call).await) });
            if inflight.len() >= 4 {
                if let Some((want, r)) = inflight.next().await {
                    if let Some(got) = tally.record(r, offload::Error::is_timeout) {
                        if got != want {
                            tally.broken(format!("call {want} returned {got}"));
                        }
                    }
                }
            }
        }
        while let Some((want, r)) = inflight.next().await {
            if let Some(got) = tally.record(r, offload::Error::is_timeout) {
                if got != want {
                    tally.broken(format!("call {want} returned {got}"));
                }
            }
        }
    });
    let elapsed = started.elapsed();
    let pids: Vec<u32> = pool.worker_pids().into_values().collect();
    let timeouts = pool.metrics().timeouts;
    drop(pool);
    let (left, note) = left_behind(NAME, &pids);
    let (executions, twice) = count_runs(&path, &mut tally);
    let detail = join(&[
        format!(
            "{calls} calls in {:.1} s, {timeouts} timed out; {executions} executions; ran twice: {twice}",
            elapsed.as_secs_f64()
        ),
        note,
    ]);
    let mut o = tally.outcome("timeout-race", 1, left, detail);
    o.ran_twice = twice;
    vec![o]
}

/// Scenario 9: tasks that start a daemon-like subprocess (it inherits the
/// worker's stdio and outlives the task) while a random worker is
/// SIGKILLed every 100 ms. Every call resolves (ok, or `is_worker_lost`),
/// the pool is back at full size, nothing runs twice.
pub(super) fn subprocess_storm(cfg: &Config) -> Vec<Outcome> {
    const NAME: &str = "cx-subp";
    const WORKERS: usize = 2;
    let calls: u64 = if cfg.quick { 200 } else { 2_000 };
    let path = marks_file("subprocess");
    let pool = match pool(NAME, WORKERS) {
        Ok(p) => p,
        Err(e) => return vec![not_built("subprocess-kill-storm", &e)],
    };
    let mut tally = Tally::default();
    let stop = AtomicBool::new(false);
    let kills = AtomicU32::new(0);
    let pool = Arc::new(pool);
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = seed();
            while !stop.load(Ordering::Relaxed) {
                let pids: Vec<u32> = pool.worker_pids().into_values().collect();
                if !pids.is_empty() {
                    sigkill(pids[(rng.next() % pids.len() as u64) as usize]);
                    kills.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        super::runtime().block_on(async {
            let mut inflight = FuturesUnordered::new();
            for id in 0..calls {
                let call = pool.call::<SpawnDaemon>((path.to_string_lossy().into_owned(), id));
                tally.submitted += 1;
                inflight.push(async move { (id, bounded(call).await) });
                if inflight.len() >= 8 {
                    if let Some((want, r)) = inflight.next().await {
                        if let Some(got) = tally.record(r, offload::Error::is_worker_lost) {
                            if got != want {
                                tally.broken(format!("call {want} returned {got}"));
                            }
                        }
                    }
                }
            }
            while let Some((want, r)) = inflight.next().await {
                if let Some(got) = tally.record(r, offload::Error::is_worker_lost) {
                    if got != want {
                        tally.broken(format!("call {want} returned {got}"));
                    }
                }
            }
        });
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed();
    let full = wait_until(Duration::from_secs(10), || {
        pool.worker_pids().len() == WORKERS
    });
    let pool_size = pool.metrics().workers;
    if !full {
        tally.broken(format!("pool not back at full size: {pool_size}"));
    }
    let pids: Vec<u32> = pool.worker_pids().into_values().collect();
    drop(pool);
    let (left, note) = left_behind(NAME, &pids);
    let (executions, twice) = count_runs(&path, &mut tally);
    let detail = join(&[
        format!(
            "{} kills in {:.1} s; {executions} executions for {calls} calls; ran twice: {twice}",
            kills.load(Ordering::Relaxed),
            elapsed.as_secs_f64()
        ),
        note,
    ]);
    let mut o = tally.outcome("subprocess-kill-storm", pool_size, left, detail);
    o.ran_twice = twice;
    vec![o]
}

/// Scenario 10: the thread pool's side of "never twice": callers give up on
/// jobs at random, queued or running; each job counts its runs.
pub(super) fn thread_cancel_storm(cfg: &Config) -> Vec<Outcome> {
    const NAME: &str = "cx-tcancel";
    let jobs: usize = if cfg.quick { 2_000 } else { 50_000 };
    let pool = match offload::ThreadPool::builder()
        .name(NAME)
        .threads(2)
        .queue_capacity(64)
        .build()
    {
        Ok(p) => p,
        Err(e) => return vec![not_built("cancel-storm/threads", &e)],
    };
    let runs: Arc<Vec<AtomicU32>> = Arc::new((0..jobs).map(|_| AtomicU32::new(0)).collect());
    let mut tally = Tally::default();
    let mut rng = seed();
    let mut given_up = 0u64;
    super::runtime().block_on(async {
        let mut kept = FuturesUnordered::new();
        for i in 0..jobs {
            let counter = runs.clone();
            let job = pool.run(move || {
                counter[i].fetch_add(1, Ordering::Relaxed);
                std::hint::black_box((0..200).sum::<u64>());
                i
            });
            if rng.next() % 3 == 0 {
                // Give up after a random instant: queued or running.
                let patience = Duration::from_micros(rng.next() % 200);
                let _ = tokio::time::timeout(patience, job).await;
                given_up += 1;
            } else {
                tally.submitted += 1;
                kept.push(async move { (i, bounded(job).await) });
                if kept.len() >= 128 {
                    if let Some((want, r)) = kept.next().await {
                        if tally.record(r, |_| false) != Some(want) && tally.unexpected == 0 {
                            tally.broken(format!("job {want} returned another"));
                        }
                    }
                }
            }
        }
        while let Some((want, r)) = kept.next().await {
            if tally.record(r, |_| false) != Some(want) && tally.unexpected == 0 {
                tally.broken(format!("job {want} returned another"));
            }
        }
    });
    drop(pool);
    let twice = runs
        .iter()
        .filter(|r| r.load(Ordering::Relaxed) > 1)
        .count() as u64;
    if twice > 0 {
        tally.broken(format!("{twice} jobs ran twice"));
    }
    let executions: u64 = runs
        .iter()
        .map(|r| u64::from(r.load(Ordering::Relaxed)))
        .sum();
    let (left, note) = left_behind(NAME, &[]);
    let detail = join(&[
        format!("{jobs} jobs, {given_up} given up on; {executions} executions; ran twice: {twice}"),
        note,
    ]);
    let mut o = tally.outcome("cancel-storm/threads", 2, left, detail);
    o.ran_twice = twice;
    vec![o]
}
