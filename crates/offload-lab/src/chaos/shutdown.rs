//! Scenario 6: shutdown under load, in each mode, for the thread pool and
//! the process pool: `shutdown().await` drains (every call completes),
//! `shutdown_now()` cancels what is queued (those calls report
//! `is_cancelled()`, the running ones complete), `shutdown_timeout(d)`
//! drains until the deadline and then reports what was left (cancelled and
//! still running). Nothing hangs; a call submitted afterwards fails with
//! `is_shutdown()`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use offload::proc::ProcessPool;
use offload::{ShutdownReport, ThreadPool};

use super::{Config, Outcome, Tally, bounded, join, left_behind, not_built, wait_until};
use crate::tasks::SleepMs;

const WORKERS: usize = 2;
const JOBS: u64 = 40;
const JOB_MS: u64 = 10;
const DEADLINE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Drain,
    Now,
    Deadline,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Drain => "drain",
            Mode::Now => "now",
            Mode::Deadline => "deadline",
        }
    }
}

type Pending = Pin<Box<dyn Future<Output = Option<Result<u64, offload::Error>>>>>;

/// The two pools behind one face.
enum Pool {
    Threads(ThreadPool),
    Procs(ProcessPool),
}

impl Pool {
    fn submit(&self, i: u64) -> Pending {
        match self {
            Pool::Threads(p) => {
                let run = p.run(move || {
                    std::thread::sleep(Duration::from_millis(JOB_MS));
                    i
                });
                Box::pin(bounded(run))
            }
            Pool::Procs(p) => {
                let call = p.call::<SleepMs>(JOB_MS);
                Box::pin(async move { bounded(call).await.map(|r| r.map(|_| i)) })
            }
        }
    }

    fn running(&self) -> usize {
        match self {
            Pool::Threads(p) => p.metrics().running,
            Pool::Procs(p) => p.metrics().calls.running,
        }
    }

    /// The most calls that can be running at once: a thread each, or a
    /// worker each times its pipeline depth (a call sent to a worker that
    /// is still finishing the one before counts as running).
    fn max_running(&self) -> usize {
        match self {
            Pool::Threads(p) => p.max_threads(),
            Pool::Procs(p) => p.max_in_flight(),
        }
    }

    fn size(&self) -> usize {
        match self {
            Pool::Threads(p) => p.metrics().threads,
            Pool::Procs(p) => p.metrics().workers,
        }
    }

    fn pids(&self) -> Vec<u32> {
        match self {
            Pool::Threads(_) => Vec::new(),
            Pool::Procs(p) => p.worker_pids().into_values().collect(),
        }
    }

    async fn shutdown(&self) {
        match self {
            Pool::Threads(p) => p.shutdown().await,
            Pool::Procs(p) => p.shutdown().await,
        }
    }

    fn shutdown_now(&self) -> usize {
        match self {
            Pool::Threads(p) => p.shutdown_now(),
            Pool::Procs(p) => p.shutdown_now(),
        }
    }

    async fn shutdown_timeout(&self, d: Duration) -> ShutdownReport {
        match self {
            Pool::Threads(p) => p.shutdown_timeout(d).await,
            Pool::Procs(p) => p.shutdown_timeout(d).await,
        }
    }
}

pub(super) fn run(_cfg: &Config) -> Vec<Outcome> {
    let mut out = Vec::new();
    for procs in [false, true] {
        for mode in [Mode::Drain, Mode::Now, Mode::Deadline] {
            out.push(one(procs, mode));
        }
    }
    out
}

fn one(procs: bool, mode: Mode) -> Outcome {
    let kind = if procs { "procs" } else { "threads" };
    let scenario = format!("shutdown-{}/{kind}", mode.name());
    // Names stay within the 15 bytes of a thread's comm.
    let name = format!("cx-sd{}-{}", &mode.name()[..1], &kind[..1]);
    let pool = if procs {
        ProcessPool::builder()
            .name(&name)
            .workers(WORKERS)
            .registry(crate::tasks::registry())
            .build()
            .map(Pool::Procs)
    } else {
        ThreadPool::builder()
            .name(&name)
            .threads(WORKERS)
            .build()
            .map(Pool::Threads)
    };
    let pool = match pool {
        Ok(p) => p,
        Err(e) => return not_built(&scenario, &e),
    };
    if procs && !wait_until(Duration::from_secs(20), || pool.pids().len() == WORKERS) {
        return not_built(&scenario, &"workers did not start");
    }
    let mut pids = pool.pids();
    let mut tally = Tally::default();
    let mut note = String::new();
    super::runtime().block_on(async {
        let mut calls: FuturesUnordered<_> = (0..JOBS)
            .map(|i| {
                let call = pool.submit(i);
                async move { (i, call.await) }
            })
            .collect();
        tally.submitted = JOBS;
        // Submission is eager (the queue has room): the calls are queued
        // now. Let the first ones start.
        let busy = wait_until(Duration::from_secs(10), || pool.running() >= WORKERS);
        let expected_cancelled = match mode {
            Mode::Drain => {
                if bounded(pool.shutdown()).await.is_none() {
                    tally.broken("shutdown() did not resolve".into());
                }
                note = "drained".into();
                Some(0)
            }
            Mode::Now => {
                let n = pool.shutdown_now();
                note = format!("shutdown_now cancelled {n}");
                Some(n)
            }
            Mode::Deadline => match bounded(pool.shutdown_timeout(DEADLINE)).await {
                Some(report) => {
                    let running: Vec<String> = report
                        .still_running
                        .iter()
                        .map(|r| format!("{} for {:?}", r.thread, r.running_for))
                        .collect();
                    note = format!(
                        "at the {DEADLINE:?} deadline: {} cancelled, still running [{}]",
                        report.cancelled,
                        running.join(", ")
                    );
                    if report.still_running.len() > pool.max_running() {
                        tally.broken("more running than workers".into());
                    }
                    Some(report.cancelled)
                }
                None => {
                    tally.broken("shutdown_timeout() did not resolve".into());
                    None
                }
            },
        };
        let mut cancelled = 0;
        while let Some((i, result)) = calls.next().await {
            if matches!(&result, Some(Err(e)) if e.is_cancelled()) {
                cancelled += 1;
            }
            let expected = |e: &offload::Error| mode != Mode::Drain && e.is_cancelled();
            if let Some(got) = tally.record(result, expected) {
                if got != i {
                    tally.broken(format!("call {i} returned {got}"));
                }
            }
        }
        if let Some(n) = expected_cancelled {
            if n != cancelled {
                tally.broken(format!("{cancelled} calls cancelled, the pool said {n}"));
            }
        }
        if !busy {
            tally.broken("the workers never got busy".into());
        }
        // Everything ends: the drain resolves in every mode.
        if bounded(pool.shutdown()).await.is_none() {
            tally.broken("shutdown() after the mode did not resolve".into());
        }
        // A call after shutdown fails at once with a typed error.
        tally.submitted += 1;
        let late = pool.submit(JOBS).await;
        let _ = tally.record(late, offload::Error::is_shutdown);
    });
    // A shut-down pool ends with no thread and no worker.
    if !wait_until(Duration::from_secs(10), || pool.size() == 0) {
        tally.broken(format!(
            "{} threads or workers left after shutdown",
            pool.size()
        ));
    }
    let pool_size = pool.size();
    pids.extend(pool.pids());
    drop(pool);
    let (left, leftover) = left_behind(&name, &pids);
    tally.outcome(&scenario, pool_size, left, join(&[note, leftover]))
}
