//! `offload-lab chaos`: reliability scenarios. Each one abuses a pool
//! (kills its workers, panics, runs away, floods it, kills its parent,
//! shuts it down under load) and counts what became of every call:
//! ok, failed with a typed error, hung (not resolved within a generous
//! bound), or lost (none of those). After the pool is dropped, it counts
//! what was left behind: worker processes still alive (a zombie counts as
//! dead) and pool threads still alive.
//!
//! Hung, lost and left-behind must be 0; the command exits non-zero
//! otherwise, or when a call failed with an error of a kind the scenario
//! does not expect (`unexpected`).
//!
//! Scenarios 4 (flood) and 5 (parent death) run in a child process: this
//! executable, re-executed in a hidden mode (see [`run_child_if_requested`]).
//!
//! The full run: `cargo run --release -p offload-lab -- chaos` (about 15 s:
//! a 10 s kill storm, 1M flood submissions). CI runs `chaos --quick --json`
//! in a debug build (`tests/chaos.rs`, a few seconds).

mod flood;
mod kill_storm;
mod memory;
mod no_block;
mod orphans;
mod races;
mod remote_kill_storm;
mod remote_server_restart;
mod runaway;
mod shutdown;
mod thread_panics;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use serde::{Deserialize, Serialize};

/// Arguments of `offload-lab chaos`.
#[derive(Debug, Args)]
pub(crate) struct ChaosArgs {
    /// Minimum length of the kill storm (scenario 1), in seconds (default
    /// 10, or 1 with `--quick`); it also runs until its 100k tasks (3k with
    /// `--quick`) are done.
    #[arg(long)]
    pub(crate) duration: Option<f64>,
    /// One JSON object per scenario and line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Small counts, for CI (a few seconds in a debug build).
    #[arg(long)]
    pub(crate) quick: bool,
    /// Run only the scenarios whose name contains this.
    #[arg(long)]
    pub(crate) only: Option<String>,
}

/// The environment variable that selects a hidden child mode.
const CHILD_ENV: &str = "OFFLOAD_LAB_CHAOS_CHILD";
/// The number of submissions for the flood child.
const COUNT_ENV: &str = "OFFLOAD_LAB_CHAOS_COUNT";

/// How long any one call may take before it counts as hung. Generous: the
/// slowest legitimate call here is a worker respawn on a loaded machine.
pub(crate) const HUNG_AFTER: Duration = Duration::from_secs(30);

/// If this process was started as a chaos child (scenarios 4 and 5), run
/// that child and exit. Call near the top of `main`.
pub(crate) fn run_child_if_requested() {
    let Some(mode) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let code = match mode.to_str() {
        Some(flood::CHILD) => flood::child(),
        Some(orphans::CHILD) => orphans::child(),
        _ => {
            eprintln!("unknown chaos child mode {mode:?}");
            2
        }
    };
    std::process::exit(code);
}

/// Starts this executable in the hidden child `mode`; its stdout lines
/// arrive on the returned channel (read on a thread of its own, so every
/// wait on them can be bounded). Its stderr is ours.
pub(crate) fn spawn_child(
    mode: &str,
    env: &[(&str, String)],
) -> std::io::Result<(std::process::Child, std::sync::mpsc::Receiver<String>)> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, mode)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    Ok((child, rx))
}

/// Reaps `child`, killing it if it has not exited within `within`.
pub(crate) fn reap(child: &mut std::process::Child, within: Duration) {
    if !wait_until(within, || matches!(child.try_wait(), Ok(Some(_)) | Err(_))) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The result of one scenario: one line of the table or of the JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub(crate) scenario: String,
    pub(crate) submitted: u64,
    pub(crate) ok: u64,
    /// Resolved with a typed error (any kind; `unexpected` says how many
    /// were of a kind the scenario does not expect).
    pub(crate) failed: u64,
    pub(crate) hung: u64,
    /// `submitted - ok - failed - hung`.
    pub(crate) lost: u64,
    pub(crate) left_behind: u64,
    pub(crate) pool_size: u64,
    /// Failures of an unexpected kind, and broken invariants (a wrong
    /// result, a count that does not add up).
    pub(crate) unexpected: u64,
    /// Calls that ran more than once (counted by scenarios whose tasks
    /// mark their runs; must be 0).
    pub(crate) ran_twice: u64,
    /// Figures and notes, for humans.
    pub(crate) detail: String,
}

impl Outcome {
    /// Whether the scenario passed.
    pub(crate) fn is_clean(&self) -> bool {
        self.hung == 0
            && self.lost == 0
            && self.left_behind == 0
            && self.ran_twice == 0
            && self.unexpected == 0
    }
}

/// Counts the fate of every call of a scenario.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) submitted: u64,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) hung: u64,
    pub(crate) unexpected: u64,
    /// Error kinds seen, for the detail column.
    pub(crate) kinds: BTreeMap<&'static str, u64>,
    /// Notes on broken invariants.
    pub(crate) notes: Vec<String>,
}

impl Tally {
    /// Records one call's fate: `None` = hung. `expected` says whether an
    /// error is of a kind this scenario provokes.
    pub(crate) fn record<T>(
        &mut self,
        result: Option<Result<T, offload::Error>>,
        expected: impl Fn(&offload::Error) -> bool,
    ) -> Option<T> {
        match result {
            None => {
                self.hung += 1;
                None
            }
            Some(Ok(v)) => {
                self.ok += 1;
                Some(v)
            }
            Some(Err(e)) => {
                self.failed += 1;
                *self.kinds.entry(kind(&e)).or_default() += 1;
                if !expected(&e) {
                    self.unexpected += 1;
                    if self.notes.len() < 3 {
                        self.notes.push(format!("unexpected error: {e}"));
                    }
                }
                None
            }
        }
    }

    /// Records a broken invariant.
    pub(crate) fn broken(&mut self, note: String) {
        self.unexpected += 1;
        self.notes.push(note);
    }

    /// The scenario's line.
    pub(crate) fn outcome(
        self,
        scenario: &str,
        pool_size: usize,
        left_behind: u64,
        detail: String,
    ) -> Outcome {
        let mut detail = detail;
        if !self.kinds.is_empty() {
            let kinds: Vec<String> = self.kinds.iter().map(|(k, n)| format!("{k}={n}")).collect();
            detail = format!("{detail}; errors: {}", kinds.join(" "));
        }
        for n in &self.notes {
            detail = format!("{detail}; {n}");
        }
        Outcome {
            scenario: scenario.to_owned(),
            submitted: self.submitted,
            ok: self.ok,
            failed: self.failed,
            hung: self.hung,
            lost: self
                .submitted
                .saturating_sub(self.ok + self.failed + self.hung),
            left_behind,
            pool_size: pool_size as u64,
            unexpected: self.unexpected,
            ran_twice: 0,
            detail,
        }
    }
}

/// A short name for an error's kind.
pub(crate) fn kind(e: &offload::Error) -> &'static str {
    if e.is_worker_lost() {
        "worker_lost"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_cancelled() {
        "cancelled"
    } else if e.is_shutdown() {
        "shutdown"
    } else if e.is_panic() {
        "panic"
    } else if e.is_remote_panic() {
        "remote_panic"
    } else if e.is_protocol() {
        "protocol"
    } else if e.is_worker_start() {
        "worker_start"
    } else if e.is_codec() {
        "codec"
    } else if e.is_too_large() {
        "too_large"
    } else if e.is_out_of_memory() {
        "out_of_memory"
    } else {
        "other"
    }
}

/// A current-thread tokio runtime for one scenario.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
}

/// Awaits `f` for at most [`HUNG_AFTER`]; `None` means hung.
pub(crate) async fn bounded<F: Future>(f: F) -> Option<F::Output> {
    tokio::time::timeout(HUNG_AFTER, f).await.ok()
}

/// Polls `cond` every millisecond until it holds or `within` passes.
pub(crate) fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether process `pid` is alive (a zombie counts as dead).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// SIGKILLs `pid` from outside, with the shell's `kill` builtin (no
/// `unsafe`, and no dependency on a `kill` executable being installed).
pub(crate) fn sigkill(pid: u32) {
    let _ = std::process::Command::new("sh")
        .args(["-c", "kill -s KILL \"$1\"", "sh", &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Live (non-zombie) child processes of this process.
fn live_children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // After the name: state, ppid.
                let mut rest = stat
                    .rsplit_once(") ")
                    .map_or("", |(_, r)| r)
                    .split_whitespace();
                let state = rest.next().unwrap_or("Z");
                let ppid = rest.next().and_then(|p| p.parse::<u32>().ok());
                ppid == Some(me) && state != "Z" && state != "X"
            })
        })
        .collect()
}

/// Threads of this process whose name starts with `prefix`.
pub(crate) fn threads_named(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|c| c.trim_end().to_owned())
        .filter(|c| c.starts_with(prefix))
        .collect()
}

/// What a dropped pool left behind: worker processes in `pids` (and any
/// other child of ours) still alive, and threads named `prefix…`. Waits up
/// to 3 s for stragglers (a worker being reaped, a pipe-forwarding thread
/// seeing EOF) before counting; counted ones are then killed, so one
/// failing scenario does not spoil the next.
pub(crate) fn left_behind(prefix: &str, pids: &[u32]) -> (u64, String) {
    let count = || {
        let mut procs: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        for c in live_children() {
            if !procs.contains(&c) {
                procs.push(c);
            }
        }
        (procs, threads_named(prefix))
    };
    let _ = wait_until(Duration::from_secs(3), || {
        let (p, t) = count();
        p.is_empty() && t.is_empty()
    });
    let (procs, threads) = count();
    for &p in &procs {
        sigkill(p);
    }
    let n = (procs.len() + threads.len()) as u64;
    let note = if n == 0 {
        String::new()
    } else {
        format!("left behind: processes {procs:?}, threads {threads:?}")
    };
    (n, note)
}

/// The line of a scenario whose pool did not build.
pub(crate) fn not_built(scenario: &str, e: &dyn std::fmt::Display) -> Outcome {
    Outcome {
        scenario: scenario.to_owned(),
        unexpected: 1,
        detail: format!("pool did not build: {e}"),
        ..Outcome::default()
    }
}

/// Median and maximum of a sample, in the sample's unit.
pub(crate) fn median_max(xs: &mut [f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[xs.len() - 1])
}

/// Joins the non-empty parts of a detail.
pub(crate) fn join(parts: &[String]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join("; ")
}

/// Scenario settings derived from the arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) quick: bool,
    pub(crate) duration: Option<Duration>,
}

type Scenario = (&'static str, fn(&Config) -> Vec<Outcome>);

/// The scenarios, in order.
const SCENARIOS: &[Scenario] = &[
    ("kill-storm", kill_storm::run),
    ("thread-panics", thread_panics::run),
    ("runaway", runaway::run),
    ("flood", flood::run),
    ("parent-death", orphans::run),
    ("shutdown", shutdown::run),
    ("cancel-storm", races::cancel_storm),
    ("timeout-race", races::timeout_race),
    ("subprocess-kill-storm", races::subprocess_storm),
    ("cancel-storm/threads", races::thread_cancel_storm),
    ("leak", memory::leak),
    ("runaway-memory", memory::runaway_memory),
    ("no-block", no_block::run),
    ("remote-kill-storm", remote_kill_storm::run),
    ("remote-server-restart", remote_server_restart::run),
];

/// Runs the scenarios and prints their lines; fails if any is not clean.
pub(crate) fn run(args: &ChaosArgs) -> anyhow::Result<()> {
    let config = Config {
        quick: args.quick,
        duration: args
            .duration
            .filter(|d| d.is_finite() && *d >= 0.0)
            .map(Duration::from_secs_f64),
    };
    thread_panics::silence_pool_panics();
    if !args.json {
        println!(
            "{:<24} {:>9} {:>9} {:>7} {:>5} {:>5} {:>5} {:>5} {:>5}  detail",
            "scenario", "submitted", "ok", "failed", "hung", "lost", "left", "twice", "pool"
        );
    }
    let mut dirty = Vec::new();
    for (name, scenario) in SCENARIOS {
        if args.only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        for o in scenario(&config) {
            if args.json {
                println!("{}", serde_json::to_string(&o)?);
            } else {
                println!(
                    "{:<24} {:>9} {:>9} {:>7} {:>5} {:>5} {:>5} {:>5} {:>5}  {}",
                    o.scenario,
                    o.submitted,
                    o.ok,
                    o.failed,
                    o.hung,
                    o.lost,
                    o.left_behind,
                    o.ran_twice,
                    o.pool_size,
                    o.detail
                );
            }
            let _ = std::io::stdout().flush();
            if !o.is_clean() {
                dirty.push(o.scenario.clone());
            }
        }
    }
    if dirty.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("chaos: not clean: {}", dirty.join(", "))
    }
}
