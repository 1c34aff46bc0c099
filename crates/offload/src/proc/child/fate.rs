//! A worker's end: a read deadline passed (the backstop), the parent
//! kills it, or its stream ends; then its process is reaped and every
//! unanswered call gets its fate (the one that may have started fails,
//! the ones behind it are sent again).

use std::collections::HashMap;
use std::process::ExitStatus;
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::{DRAIN, Kill, WorkerProc, oom_kills, reaper, spawn};
use crate::error::{CancelReason, Error};
use crate::proc::protocol::Stop;
use crate::sync::lock;

impl WorkerProc {
    /// A read deadline passed: the front call's backstop (the worker did
    /// not stop it), or the drain of a killed worker.
    pub(super) fn timed_out(&self) {
        let line = lock(&self.line);
        if line.killed.is_some() {
            // Killed, yet its channel did not end within the drain time
            // (something else holds it open): give up on reading it.
            drop(line);
            return self.gone(false);
        }
        let Some(front) = line.in_flight.front() else {
            return;
        };
        let kill = Kill::Backstop {
            id: front.id,
            timeout: front.timeout.unwrap_or_default(),
        };
        drop(line);
        self.kill(kill);
    }

    /// Kills the worker; the leader then reads what it wrote before, until
    /// its end of stream (or the drain deadline).
    pub(super) fn kill(&self, why: Kill) {
        let protocol = matches!(why, Kill::Protocol(_));
        {
            let mut line = lock(&self.line);
            if line.killed.is_none() {
                line.killed = Some((why, Instant::now() + DRAIN));
            }
        }
        if let Some(child) = lock(&self.process).child.as_mut() {
            let _ = child.kill();
        }
        if protocol {
            // The stream is out of step: nothing more can be read from it.
            self.gone(false);
        }
    }

    /// The worker is gone. Reaps it and decides the fate of every
    /// unanswered call. With `intact`, every reply it wrote was read, so
    /// only the first unanswered call can have started; otherwise the
    /// first two may have.
    pub(super) fn gone(&self, intact: bool) {
        let status = self.reap_now();
        let exit = spawn::worker_exit(&self.name, status);
        let mut line = lock(&self.line);
        if line.outcomes.is_some() {
            return;
        }
        let killed_by_us = line.killed.is_some() || line.stopped.is_some();
        let oom = if killed_by_us {
            None
        } else {
            drop(line);
            let oom = self.out_of_memory(&exit);
            line = lock(&self.line);
            if line.outcomes.is_some() {
                return;
            }
            oom
        };
        let unanswered: Vec<(u64, Option<Duration>)> =
            line.in_flight.iter().map(|c| (c.id, c.timeout)).collect();
        let mut outcomes = HashMap::new();
        if let Some(&(first, timeout)) = unanswered.first() {
            let killed = line.killed.as_ref().map(|(k, _)| k.clone());
            let error = match (line.stopped, killed) {
                (Some((id, Stop::Timeout)), _) if id == first => {
                    Error::timeout(timeout.unwrap_or_default())
                }
                (Some((id, Stop::Cancelled)), _) if id == first => {
                    Error::cancelled(CancelReason::Dropped)
                }
                (_, Some(Kill::Backstop { id, timeout })) if id == first => Error::timeout(timeout),
                (_, Some(Kill::Protocol(m))) if !intact => Error::protocol(m),
                _ => match &oom {
                    Some(how) => Error::out_of_memory(exit.clone(), how.clone()),
                    None => Error::worker_lost(exit.clone()),
                },
            };
            outcomes.insert(first, error);
            if !intact {
                if let Some(&(second, _)) = unanswered.get(1) {
                    // It may have started after the reply we could not read.
                    outcomes.insert(second, Error::worker_lost(exit));
                }
            }
        }
        line.blamed = !outcomes.is_empty();
        line.outcomes = Some(outcomes);
        let everyone: Vec<Thread> = line.sleepers.drain(..).map(|(_, t)| t).collect();
        drop(line);
        everyone.iter().for_each(Thread::unpark);
        // Calls written by their callers: the standby runs their fates.
        self.wake_standby();
    }

    /// Whether a worker that died on its own ran out of memory, and how:
    /// an abort after Rust's "memory allocation of N bytes failed" under a
    /// hard limit, or a SIGKILL while the kernel's OOM killer was at work.
    fn out_of_memory(&self, exit: &crate::error::WorkerExit) -> Option<String> {
        const SIGABRT: i32 = 6;
        const SIGKILL: i32 = 9;
        match (exit.signal, self.hard_memory, &self.stderr_tail) {
            (Some(SIGABRT), Some(limit), Some(tail)) => {
                // The message was written before the abort; its forwarding
                // thread may still be on its way to it.
                let deadline = Instant::now() + Duration::from_millis(200);
                loop {
                    if tail.saw_failed_allocation() {
                        return Some(format!(
                            "an allocation failed at the pool's hard memory limit of {limit} bytes"
                        ));
                    }
                    if Instant::now() >= deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            (Some(SIGKILL), _, _) => {
                let (before, now) = (self.oom_kills_at_start?, oom_kills()?);
                (now > before).then(|| {
                    "killed by the kernel's OOM killer (SIGKILL while it was killing)".to_owned()
                })
            }
            _ => None,
        }
    }

    /// Reaps the process now (on the reading driver thread) and returns how
    /// it ended; the second call returns the same.
    fn reap_now(&self) -> Option<ExitStatus> {
        let mut process = lock(&self.process);
        if let Some(status) = process.status {
            return status;
        }
        (process.hooks.unlist)();
        let status = process
            .child
            .as_mut()
            .and_then(|c| spawn::reap(c, reaper::GRACE));
        process.status = Some(status);
        process.child = None;
        (process.hooks.reaped)();
        status
    }
}
