//! Scenario 5: the parent process is SIGKILLed while its workers are busy;
//! no worker may be alive one second later.
//!
//! The parent is a child of ours: this executable, re-executed in a hidden
//! mode, builds a process pool, keeps both workers busy with runaway calls,
//! prints `pids <a> <b>` and waits to be killed. We kill it and watch its
//! workers from outside.

use std::io::Write;
use std::time::{Duration, Instant};

use offload::proc::ProcessPool;

use super::{Config, Outcome, alive, reap, sigkill, spawn_child, wait_until};
use crate::tasks::Spin;

/// The hidden child mode.
pub(super) const CHILD: &str = "orphan-parent";
const WORKERS: usize = 2;

pub(super) fn run(_cfg: &Config) -> Vec<Outcome> {
    let mut out = Outcome {
        scenario: "parent-death".into(),
        submitted: WORKERS as u64,
        ..Outcome::default()
    };
    let (mut parent, lines) = match spawn_child(CHILD, &[]) {
        Ok(c) => c,
        Err(e) => {
            out.unexpected = 1;
            out.detail = format!("cannot start the parent: {e}");
            return vec![out];
        }
    };
    let line = lines.recv_timeout(Duration::from_secs(60));
    // Kill and reap the parent whatever happened, before judging.
    sigkill(parent.id());
    let killed = Instant::now();
    reap(&mut parent, Duration::from_secs(10));
    let pids: Vec<u32> = match &line {
        Ok(l) => l
            .strip_prefix("pids ")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    if pids.len() != WORKERS {
        out.unexpected = 1;
        out.detail = format!("the parent did not report its {WORKERS} busy workers: {line:?}");
        return vec![out];
    }
    let gone = wait_until(Duration::from_secs(1), || pids.iter().all(|&p| !alive(p)));
    let gone_after = killed.elapsed();
    std::thread::sleep(Duration::from_secs(1).saturating_sub(killed.elapsed()));
    let survivors: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    for &p in &survivors {
        sigkill(p);
    }
    // The busy calls died with their parent, by design: they resolve
    // nowhere, so they count as failed, not lost.
    out.failed = WORKERS as u64;
    out.left_behind = survivors.len() as u64;
    out.detail = if gone {
        format!(
            "both busy workers gone {:.0} ms after the parent's SIGKILL (limit 1000 ms)",
            gone_after.as_secs_f64() * 1e3
        )
    } else {
        format!("workers alive 1 s after the parent's SIGKILL: {survivors:?}")
    };
    vec![out]
}

/// The child: a parent with two busy workers, waiting to be killed.
pub(super) fn child() -> i32 {
    let pool = match ProcessPool::builder()
        .name("cx-orphan")
        .workers(WORKERS)
        .registry(crate::tasks::registry())
        .build()
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("orphan parent: {e}");
            return 1;
        }
    };
    let deadline = Duration::from_secs(30);
    if !wait_until(deadline, || pool.worker_pids().len() == WORKERS) {
        eprintln!("orphan parent: workers did not start");
        return 1;
    }
    let pids = pool.worker_pids();
    // Runaway calls: the workers are busy and not reading their channel.
    let calls: Vec<_> = (0..WORKERS).map(|_| pool.call::<Spin>(())).collect();
    if !wait_until(deadline, || pool.metrics().calls.running == WORKERS) {
        eprintln!("orphan parent: calls did not start");
        return 1;
    }
    let list: Vec<String> = pids.values().map(u32::to_string).collect();
    println!("pids {}", list.join(" "));
    let _ = std::io::stdout().flush();
    // Bounded, in case nobody kills us.
    std::thread::sleep(Duration::from_secs(120));
    drop(calls);
    1
}
