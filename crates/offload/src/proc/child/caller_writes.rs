//! Calls written by their caller: no driver thread carries them. The
//! caller (an async task) writes the frame itself without blocking, and
//! whoever reads the reply completes the call (`Completion`): a driver
//! that leads the reading for its own call, or the worker's standby
//! reader (`standby.rs`). Only when a call can go this way at once (a
//! live worker with room, a small frame, a socket that takes it now) does
//! it; otherwise it takes the driver path, so every bound still holds.
//! Why: `README.md` beside `proc/`, "Calls written by their callers".

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::{CallError, Line, WorkerProc};
use crate::proc::codec::Encoded;
use crate::proc::protocol::{Body, CallHead, encode_head};
use crate::proc::wire::try_write_frame_parts;
use crate::sync::lock;

/// The largest frame a caller writes itself. A frame this small fits in
/// one socket buffer allocation, so the kernel takes it whole or not at
/// all; larger inputs go through a driver, which may block on the socket.
pub(crate) const CALLER_MAX_FRAME: usize = 16 << 10;

/// The longest a caller waits for another caller's write to the same
/// worker before taking the driver path.
const WRITER_WAIT: Duration = Duration::from_micros(20);

/// What is done with a call's outcome once it is known: its reply, its
/// error, or `CallError::Retry` when its worker ended before starting it.
pub(crate) struct Completion(Box<dyn FnOnce(Result<Body, CallError>) + Send>);

impl Completion {
    pub(crate) fn new(f: impl FnOnce(Result<Body, CallError>) + Send + 'static) -> Self {
        Completion(Box::new(f))
    }

    pub(crate) fn run(self, outcome: Result<Body, CallError>) {
        (self.0)(outcome)
    }
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Completion")
    }
}

/// A call as it goes on the wire: its task, encoded input, timeout and
/// the caller's span.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    pub(crate) task: &'a str,
    pub(crate) input: &'a Encoded,
    pub(crate) timeout: Option<Duration>,
    pub(crate) span: Option<u64>,
}

/// Completions ready to run, with their outcomes.
pub(super) type Ready = Vec<(Completion, Result<Body, CallError>)>;

impl Line {
    /// Takes out the completions whose reply was filed, and, with
    /// `worker_gone_too`, those the worker's end settled (an error, or
    /// `Retry` for a call it never started). Drivers take only replies
    /// (a driver has its own caller to answer first); what a worker's end
    /// decided is the standby reader's to deliver.
    pub(super) fn take_completions(&mut self, worker_gone_too: bool) -> Ready {
        if self.completions.is_empty() {
            return Vec::new();
        }
        let gone = worker_gone_too && self.outcomes.is_some();
        let ids: Vec<u64> = self
            .completions
            .keys()
            .copied()
            .filter(|id| gone || self.replies.contains_key(id))
            .collect();
        let mut ready = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(completion) = self.completions.remove(&id) else {
                continue;
            };
            let outcome = match self.replies.remove(&id) {
                Some(reply) => reply.map_err(CallError::Failed),
                None => match self.outcomes.as_mut().and_then(|o| o.remove(&id)) {
                    Some(e) => Err(CallError::Failed(e)),
                    None => Err(CallError::Retry),
                },
            };
            ready.push((completion, outcome));
        }
        ready
    }

    /// Whether a call may be sent now (alive, not retired, under
    /// `max_tasks_per_child`).
    pub(super) fn takes_calls(&self, max_calls: Option<u64>) -> bool {
        self.outcomes.is_none()
            && self.killed.is_none()
            && !self.unwritable
            && !self.retire_asked
            && max_calls.is_none_or(|max| self.sent < max)
    }
}

/// Runs completions, outside every lock.
pub(super) fn run(ready: Ready) {
    for (completion, outcome) in ready {
        completion.run(outcome);
    }
}

impl WorkerProc {
    /// Writes a call from the caller's thread, never blocking: only if
    /// the worker takes calls, has fewer than `room` in flight, has its
    /// standby reader, nobody else is writing, the frame is at most
    /// [`CALLER_MAX_FRAME`], and the socket takes it at once. `sending`
    /// runs with the call's id just before the write (to arm the caller's
    /// cancel switch). On success `completion` runs later, on a reader's
    /// thread; otherwise it is handed back and nothing was sent.
    pub(crate) fn send_from_caller(
        &self,
        call: Outgoing<'_>,
        room: usize,
        completion: Completion,
        sending: impl FnOnce(u64),
    ) -> Result<(), Completion> {
        let Outgoing {
            task,
            input,
            timeout,
            span,
        } = call;
        // The head is a few bytes besides the task's name.
        if input.len() + task.len() + 64 > CALLER_MAX_FRAME.min(self.max_frame) {
            return Err(completion);
        }
        let Some(standby) = self.standby.get() else {
            return Err(completion);
        };
        let Some(writer) = self.writer_now() else {
            return Err(completion);
        };
        let id = {
            let mut line = lock(&self.line);
            if !line.takes_calls(self.max_calls) || line.in_flight.len() >= room {
                return Err(completion);
            }
            line.next_id += 1;
            let id = line.next_id;
            line.push_call(id, timeout);
            id
        };
        let head = encode_head(&CallHead {
            id,
            task: task.to_owned(),
            timeout,
            span,
        });
        sending(id);
        let body = [&input.prefix[..], &input.bytes[..]];
        let written = try_write_frame_parts(&writer, &head, &body, self.max_frame);
        let mut line = lock(&self.line);
        drop(writer);
        match written {
            Ok(true) => {
                // The completion joins the line only now that the call is
                // surely on its way: until then no reader could settle it
                // while the caller might still take it back. Its reply may
                // already be filed, or the worker's end may have decided
                // it: the standby then delivers it.
                let settled = line.settled(id);
                line.completions.insert(id, completion);
                let wake = settled || !line.reading;
                drop(line);
                if wake {
                    standby.unpark();
                }
                Ok(())
            }
            Ok(false) | Err(_) => {
                // Nothing of it reached the worker: a full socket, a frame
                // over the limit (refused before writing; the driver path
                // reports it), or a worker gone: then send it nothing
                // more; the calls ahead were written whole, and the first
                // of them takes the blame for the death, as in `send`.
                let gone = written
                    .as_ref()
                    .is_err_and(|e| e.kind() != std::io::ErrorKind::InvalidInput);
                line.in_flight.retain(|c| c.id != id);
                line.sent -= 1;
                if let Some(outcomes) = line.outcomes.as_mut() {
                    outcomes.remove(&id);
                }
                if gone {
                    line.unwritable = true;
                    line.blame_ahead |= !line.in_flight.is_empty();
                }
                Err(completion)
            }
        }
    }

    /// The writer, if it can be had without blocking: another caller's
    /// non-blocking write is waited out (a few µs at most, bounded), a
    /// driver's write (which may block on a full socket) is not.
    fn writer_now(&self) -> Option<std::sync::MutexGuard<'_, std::os::unix::net::UnixStream>> {
        let started = Instant::now();
        loop {
            match self.writer.try_lock() {
                Ok(w) => return Some(w),
                Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
            if self.blocking_write.load(Relaxed) || started.elapsed() > WRITER_WAIT {
                return None;
            }
            std::hint::spin_loop();
        }
    }

    /// Calls written to the worker and not answered yet.
    pub(crate) fn in_flight(&self) -> usize {
        lock(&self.line).in_flight.len()
    }
}
