//! Reaping worker processes in the background.
//!
//! A worker that is let go (its pool dropped it, or retired it) is reaped
//! here, on one thread for the whole program, never on the thread that let
//! go of it: that may be an async caller dropping a call, and `waitpid`
//! there could hold its event loop. The reaper gives a worker [`GRACE`] to
//! exit after its channel closes, then kills it: no zombie outlives its
//! pool by more than that.

use crate::sync::{lock, wait};
use std::process::Child;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a worker may take to exit once its channel is closed.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// How often pending workers are polled.
const POLL: Duration = Duration::from_millis(2);

struct Pending {
    child: Child,
    since: Instant,
    /// Run once the process is reaped.
    after: Box<dyn FnOnce() + Send>,
}

struct Reaper {
    pending: Mutex<Vec<Pending>>,
    arrived: Condvar,
}

static REAPER: OnceLock<Reaper> = OnceLock::new();

/// Reaps `child` in the background, then runs `after`.
pub(crate) fn reap_later(child: Child, after: impl FnOnce() + Send + 'static) {
    let reaper = REAPER.get_or_init(|| Reaper {
        pending: Mutex::new(Vec::new()),
        arrived: Condvar::new(),
    });
    let mut pending = lock(&reaper.pending);
    let first = pending.is_empty();
    pending.push(Pending {
        child,
        since: Instant::now(),
        after: Box::new(after),
    });
    drop(pending);
    if first {
        start_once(reaper);
        reaper.arrived.notify_one();
    }
}

fn start_once(reaper: &'static Reaper) {
    static STARTED: OnceLock<bool> = OnceLock::new();
    let ok = STARTED.get_or_init(|| {
        std::thread::Builder::new()
            .name("offload-reaper".into())
            .spawn(move || run(reaper))
            .is_ok()
    });
    if !ok {
        // No thread: reap here rather than leave zombies.
        let drained = std::mem::take(&mut *lock(&reaper.pending));
        for p in drained {
            finish(p);
        }
    }
}

fn run(reaper: &Reaper) {
    let mut pending = lock(&reaper.pending);
    loop {
        while pending.is_empty() {
            pending = wait(&reaper.arrived, pending);
        }
        let mut done = Vec::new();
        let mut i = 0;
        while i < pending.len() {
            let p = &mut pending[i];
            let exited = matches!(p.child.try_wait(), Ok(Some(_)) | Err(_));
            if exited || p.since.elapsed() >= GRACE {
                done.push(pending.swap_remove(i));
            } else {
                i += 1;
            }
        }
        drop(pending);
        done.into_iter().for_each(finish);
        std::thread::sleep(POLL);
        pending = lock(&reaper.pending);
    }
}

/// Kills (if still alive) and waits for the process, then runs its hook.
fn finish(mut p: Pending) {
    if !matches!(p.child.try_wait(), Ok(Some(_))) {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
    (p.after)();
}
