//! The standby reader: one thread per worker process, asleep unless
//! calls written by their callers (`caller_writes.rs`) wait for replies and no
//! driver is reading. Then it leads the reading like a driver would
//! (`reading.rs`), runs each such call's completion as its reply is
//! filed, and when the worker ends, runs what the end decided for them
//! (an error, or sending the call again).
//!
//! It holds the worker only while it works: asleep, it keeps a `Weak`, so
//! the worker's `Drop` (which lets the process exit) is not held up by
//! it; `Drop` wakes it and it goes.

use std::sync::{Arc, Weak};
use std::thread::Thread;

use super::{WorkerProc, caller_writes};
use crate::sync::lock;

/// The standby's stack: it reads frames and runs completions, which may
/// send a call again (and start a worker to do it).
const STACK: usize = 256 << 10;

/// What the standby does next.
enum Step {
    /// Look again at once.
    Again,
    /// Sleep until woken: nothing to read for, or someone else reads.
    Park,
    /// The worker is gone and every completion ran.
    Exit,
}

impl WorkerProc {
    /// Starts the standby reader. If the thread cannot be started, calls
    /// written by their callers are refused and take the driver path.
    pub(crate) fn start_standby(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("offload-proc-rd".into())
            .stack_size(STACK)
            .spawn(move || standby(weak));
        match spawned {
            Ok(handle) => {
                let _ = self.standby.set(handle.thread().clone());
            }
            Err(e) => {
                tracing::warn!(worker = %self.name, error = %e, "offload: cannot start a standby reader; calls to this worker go through drivers");
            }
        }
    }

    /// Wakes the standby reader, if it was started.
    pub(super) fn wake_standby(&self) {
        if let Some(t) = self.standby.get() {
            t.unpark();
        }
    }

    /// One step of the standby: run what is settled, or read one frame
    /// for calls that wait with nobody reading, or sleep.
    fn standby_step(&self) -> Step {
        let mut line = lock(&self.line);
        let ready = line.take_completions(true);
        if !ready.is_empty() {
            drop(line);
            caller_writes::run(ready);
            return Step::Again;
        }
        if line.outcomes.is_some() {
            return Step::Exit;
        }
        if line.completions.is_empty() || line.reading {
            // Nothing of ours waits, or a driver reads and will wake us
            // when it stops while ours still wait. A driver that went to
            // sleep while we read needs a leader now.
            let next = if line.reading {
                None
            } else {
                line.sleepers.first().map(|(_, t)| t.clone())
            };
            drop(line);
            if let Some(t) = next {
                t.unpark();
            }
            return Step::Park;
        }
        let mut line = self.lead_once(line);
        let wake = Self::answered_sleepers(&mut line, None);
        drop(line);
        wake.iter().for_each(Thread::unpark);
        Step::Again
    }
}

/// The standby's life: work while there is work, sleep otherwise, and
/// go when the worker is gone or dropped.
fn standby(worker: Weak<WorkerProc>) {
    loop {
        let Some(w) = worker.upgrade() else {
            return;
        };
        let step = w.standby_step();
        drop(w);
        match step {
            Step::Again => {}
            Step::Park => std::thread::park(),
            Step::Exit => return,
        }
    }
}
