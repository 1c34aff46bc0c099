//! Scenario 2: a thread pool runs 10k jobs of which 10% panic. Every call
//! resolves (ok, or `is_panic()`), and the pool keeps its size.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use offload::ThreadPool;

use super::{Config, Outcome, Tally, bounded, join, left_behind, not_built};

const NAME: &str = "cx-panic";
const THREADS: usize = 4;
const JOBS: u64 = 10_000;
const IN_FLIGHT: usize = 2048;

/// Installs a panic hook that keeps the scenarios' deliberate panics (on
/// threads named `cx-panic…`) off stderr; any other panic is reported as
/// before.
pub(super) fn silence_pool_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let deliberate = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with(NAME));
        if !deliberate {
            previous(info);
        }
    }));
}

pub(super) fn run(_cfg: &Config) -> Vec<Outcome> {
    let pool = match ThreadPool::builder()
        .name(NAME)
        .threads(THREADS)
        .queue_capacity(1024)
        .build()
    {
        Ok(p) => p,
        Err(e) => return vec![not_built("thread-panics", &e)],
    };
    let mut tally = Tally::default();
    let mut max_threads = 0;
    super::runtime().block_on(async {
        let mut next = 0u64;
        let mut inflight = FuturesUnordered::new();
        loop {
            while inflight.len() < IN_FLIGHT && next < JOBS {
                let i = next;
                let run = pool.run(move || {
                    if i % 10 == 0 {
                        panic!("chaos: deliberate panic in job {i}");
                    }
                    i * 2
                });
                inflight.push(async move { (i, bounded(run).await) });
                next += 1;
                tally.submitted += 1;
            }
            let Some((i, result)) = inflight.next().await else {
                break;
            };
            let panicked = result.as_ref().is_some_and(|r| r.is_err());
            if let Some(got) = tally.record(result, offload::Error::is_panic) {
                if got != i * 2 {
                    tally.broken(format!("job {i} returned {got}"));
                }
            }
            if panicked != (i % 10 == 0) {
                tally.broken(format!("job {i}: panicked = {panicked}"));
            }
            max_threads = max_threads.max(pool.metrics().threads);
        }
    });
    let m = pool.metrics();
    if m.threads != THREADS {
        tally.broken(format!(
            "{} threads after the panics, not {THREADS}",
            m.threads
        ));
    }
    if m.panicked != JOBS / 10 {
        tally.broken(format!(
            "metrics count {} panics, not {}",
            m.panicked,
            JOBS / 10
        ));
    }
    drop(pool);
    let (left, note) = left_behind(NAME, &[]);
    let detail = join(&[
        format!(
            "{} panics caught; threads: {THREADS} configured, {max_threads} at most, {} after",
            m.panicked, m.threads
        ),
        note,
    ]);
    // The pool's size as measured before the drop.
    vec![tally.outcome("thread-panics", m.threads, left, detail)]
}
