//! Scenario 4: 1M submissions against a 1k-slot queue. Peak RSS must stay
//! under 64 MB and everything must complete.
//!
//! The submitter keeps a bounded number of calls in flight (4096: four
//! times the queue, so about 3000 submitters wait on backpressure at any
//! moment). That is the realistic pattern backpressure is for: a
//! `join_all` of 1M futures would hold 1M futures (hundreds of bytes each)
//! before the first one is polled and alone exceed 64 MB, whatever the
//! pool does.
//!
//! It runs in a child process (this executable, re-executed) so that the
//! peak RSS measured is the flood's own, not that of the whole chaos run.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use offload::ThreadPool;

use super::{COUNT_ENV, Config, Outcome, Tally, bounded, join, not_built, reap, spawn_child};

/// The hidden child mode.
pub(super) const CHILD: &str = "flood";
const NAME: &str = "cx-flood";
const QUEUE: usize = 1024;
const IN_FLIGHT: usize = 4096;
const RSS_LIMIT_MB: f64 = 64.0;

pub(super) fn run(cfg: &Config) -> Vec<Outcome> {
    let n: u64 = if cfg.quick { 50_000 } else { 1_000_000 };
    let mut out = Outcome {
        scenario: "flood".into(),
        submitted: n,
        ..Outcome::default()
    };
    let (mut child, lines) = match spawn_child(CHILD, &[(COUNT_ENV, n.to_string())]) {
        Ok(c) => c,
        Err(e) => {
            out.unexpected = 1;
            out.detail = format!("cannot start the flood child: {e}");
            return vec![out];
        }
    };
    // Generous: 1M jobs take seconds in a release build, longer in debug.
    let line = lines.recv_timeout(Duration::from_secs(300));
    reap(&mut child, Duration::from_secs(10));
    match line.map(|l| serde_json::from_str::<Outcome>(&l)) {
        Ok(Ok(o)) => vec![o],
        Ok(Err(e)) => {
            out.unexpected = 1;
            out.detail = format!("unreadable report from the flood child: {e}");
            vec![out]
        }
        Err(_) => {
            out.hung = n;
            out.detail = "the flood child reported nothing within 300 s".into();
            vec![out]
        }
    }
}

/// The child: floods a 2-thread pool with a 1k-slot queue, prints its
/// [`Outcome`] as one JSON line, returns the exit code.
pub(super) fn child() -> i32 {
    let n: u64 = std::env::var(COUNT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let outcome = flood(n);
    match serde_json::to_string(&outcome) {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(_) => 1,
    }
}

fn flood(n: u64) -> Outcome {
    let pool = match ThreadPool::builder()
        .name(NAME)
        .threads(2)
        .queue_capacity(QUEUE)
        .build()
    {
        Ok(p) => p,
        Err(e) => return not_built("flood", &e),
    };
    let mut tally = Tally::default();
    let started = Instant::now();
    let mut max_queued = 0;
    // The size of one in-flight future: what a `join_all` of all `n` would
    // hold at once, before the pool ran any of them.
    let mut future_bytes = 0;
    super::runtime().block_on(async {
        let mut next = 0u64;
        let mut inflight = FuturesUnordered::new();
        loop {
            while inflight.len() < IN_FLIGHT && next < n {
                let i = next;
                let run = pool.run(move || std::hint::black_box(i).wrapping_mul(3));
                let fut = async move { (i, bounded(run).await) };
                future_bytes = std::mem::size_of_val(&fut);
                inflight.push(fut);
                next += 1;
                tally.submitted += 1;
            }
            let Some((i, result)) = inflight.next().await else {
                break;
            };
            if let Some(got) = tally.record(result, |_| false) {
                if got != i.wrapping_mul(3) {
                    tally.broken(format!("job {i} returned {got}"));
                }
            }
            if i % 1024 == 0 {
                max_queued = max_queued.max(pool.metrics().queued);
            }
        }
    });
    let elapsed = started.elapsed();
    let m = pool.metrics();
    if max_queued > QUEUE {
        tally.broken(format!("queue held {max_queued} > {QUEUE}"));
    }
    drop(pool);
    let (left, note) = super::left_behind(NAME, &[]);
    let peak_mb = peak_rss_kb().map_or(f64::NAN, |kb| kb as f64 / 1024.0);
    if peak_mb.is_nan() || peak_mb >= RSS_LIMIT_MB {
        tally.broken(format!("peak RSS {peak_mb:.1} MB, over {RSS_LIMIT_MB} MB"));
    }
    let detail = join(&[
        format!(
            "peak RSS {peak_mb:.1} MB (limit {RSS_LIMIT_MB} MB); {IN_FLIGHT} in flight against \
             {QUEUE} slots, queue peak {max_queued}; {:.0} jobs/s; a join_all of all {n} \
             would hold {:.0} MB of futures (+ their jobs) before the first ran",
            n as f64 / elapsed.as_secs_f64(),
            (n as usize * future_bytes) as f64 / (1024.0 * 1024.0),
        ),
        note,
    ]);
    tally.outcome("flood", m.threads, left, detail)
}

/// The peak resident set size of this process (VmHWM), in KiB.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
