//! Scenario 3: a runaway process task (an infinite loop) with a 100 ms
//! timeout: it must be killed and reported within 200 ms, and its worker
//! replaced.

use std::time::{Duration, Instant};

use offload::proc::{CallOptions, ProcessPool};

use super::{
    Config, Outcome, Tally, bounded, join, left_behind, median_max, not_built, wait_until,
};
use crate::tasks::Noop;
use crate::tasks::Spin;

const NAME: &str = "cx-runaway";
const TIMEOUT: Duration = Duration::from_millis(100);

pub(super) fn run(cfg: &Config) -> Vec<Outcome> {
    let rounds = if cfg.quick { 3 } else { 20 };
    let pool = match ProcessPool::builder()
        .name(NAME)
        .workers(1)
        .registry(crate::tasks::registry())
        .build()
    {
        Ok(p) => p,
        Err(e) => return vec![not_built("runaway", &e)],
    };
    let mut tally = Tally::default();
    let mut times = Vec::new();
    let mut pids = Vec::new();
    let mut replaced = 0;
    let rt = super::runtime();
    for _ in 0..rounds {
        // Time the timeout, not a worker start: wait for the worker first.
        if !wait_until(Duration::from_secs(20), || pool.worker_pids().len() == 1) {
            tally.broken("no worker to run the runaway task".into());
            break;
        }
        let before: Vec<u32> = pool.worker_pids().into_values().collect();
        pids.extend(&before);
        let started = Instant::now();
        tally.submitted += 1;
        let result = rt.block_on(bounded(
            pool.call_with::<Spin>((), CallOptions::new().timeout(TIMEOUT)),
        ));
        let took = started.elapsed();
        let _ = tally.record(result, offload::Error::is_timeout);
        times.push(took.as_secs_f64() * 1e3);
        if wait_until(Duration::from_secs(10), || {
            let now: Vec<u32> = pool.worker_pids().into_values().collect();
            now.len() == 1 && now != before
        }) {
            replaced += 1;
        }
        // The killed worker is gone (a zombie counts as dead).
        if before.iter().any(|&p| super::alive(p)) {
            tally.broken(format!("runaway worker {before:?} still alive"));
        }
    }
    if replaced != rounds {
        tally.broken(format!("{replaced}/{rounds} workers replaced"));
    }
    // The pool still works.
    tally.submitted += 1;
    if tally.record(rt.block_on(bounded(pool.call::<Noop>(7))), |_| false) != Some(7) {
        tally.broken("the pool does not work after the timeouts".into());
    }
    let pool_size = pool.metrics().workers;
    pids.extend(pool.worker_pids().values());
    drop(pool);
    let (left, note) = left_behind(NAME, &pids);
    let (median, max) = median_max(&mut times);
    let detail = join(&[
        format!(
            "timeout 100 ms: killed and reported after median {median:.1} ms, max {max:.1} ms \
             (goal <= 200 ms); {replaced}/{rounds} workers replaced; then a call succeeded"
        ),
        note,
    ]);
    vec![tally.outcome("runaway", pool_size, left, detail)]
}
