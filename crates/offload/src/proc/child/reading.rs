//! The leader: with several calls in flight to one worker, whichever
//! waiting caller finds nobody reading becomes the reader for everyone,
//! files each reply for its owner and wakes that owner alone, and hands
//! the reading on when its own call is answered.

use std::sync::MutexGuard;
use std::thread::Thread;
use std::time::Instant;

use super::{BACKSTOP, CallError, Kill, Line, WorkerProc};
use crate::proc::protocol::{Body, Reply, decode_reply};
use crate::proc::wire::{FrameError, deadline_after, read_frame, spin_for_bytes};
use crate::sync::lock;

impl WorkerProc {
    /// Waits for the reply to call `id`, reading the channel for everyone
    /// while no one else does.
    ///
    /// Wake-ups are addressed: the leader unparks the owner of each reply
    /// it files, and, when its own call is answered, one other waiter to
    /// read next; a worker's end unparks everyone. (A condvar woke every
    /// waiting driver for every frame read: at pipeline depth 4 that was
    /// about 2.4 futex calls per call, most of them waking a driver whose
    /// reply had not come, see `README.md`.) A waiter registers under the
    /// line's lock before it parks, and `unpark` before `park` is not
    /// lost, so no wake-up can fall between the two.
    pub(crate) fn wait(&self, id: u64) -> Result<Body, CallError> {
        let mut line = lock(&self.line);
        loop {
            line.sleepers.retain(|(s, _)| *s != id);
            if let Some(reply) = line.replies.remove(&id) {
                return reply.map_err(CallError::Failed);
            }
            if let Some(outcomes) = &mut line.outcomes {
                return Err(match outcomes.remove(&id) {
                    Some(e) => CallError::Failed(e),
                    None => CallError::Retry,
                });
            }
            if !line.in_flight.iter().any(|c| c.id == id) {
                // Taken back out of the line (its send failed): never started.
                return Err(CallError::Retry);
            }
            if line.reading {
                line.sleepers.push((id, std::thread::current()));
                drop(line);
                std::thread::park();
                line = lock(&self.line);
                continue;
            }
            // Lead: read one frame for whoever it is.
            line = self.lead_once(line);
            let mut to_wake = Self::answered_sleepers(&mut line, Some(id));
            // Calls written by their callers whose replies we filed: ours
            // to complete. When we stop reading and only such calls wait,
            // the standby reads for them.
            let ready = line.take_completions(false);
            let standby_needed =
                line.settled(id) && line.sleepers.is_empty() && !line.completions.is_empty();
            if standby_needed {
                if let Some(t) = self.standby.get() {
                    to_wake.push(t.clone());
                }
            }
            if !to_wake.is_empty() || !ready.is_empty() {
                drop(line);
                to_wake.iter().for_each(Thread::unpark);
                super::caller_writes::run(ready);
                line = lock(&self.line);
            }
        }
    }

    /// Reads one frame as the leader (marked `reading` meanwhile, the
    /// line's lock let go) and files it; returns the line locked again.
    pub(super) fn lead_once<'a>(&'a self, mut line: MutexGuard<'a, Line>) -> MutexGuard<'a, Line> {
        line.reading = true;
        let deadline = self.read_deadline(&line);
        drop(line);
        let read = {
            let mut reader = lock(&self.reader);
            spin_for_bytes(&reader, self.spin);
            read_frame(&mut *reader, self.max_frame, deadline)
        };
        self.file(read);
        let mut line = lock(&self.line);
        line.reading = false;
        line
    }

    /// After a leader filed a frame: takes out the sleepers to unpark:
    /// those whose call is now answered (or settled by the worker's end),
    /// and, if the leader is a driver (waiting for call `leader`) whose
    /// own call is answered, one more to read next. (The standby, `None`,
    /// reads on while calls of its own wait, and hands over when it stops.)
    pub(super) fn answered_sleepers(line: &mut Line, leader: Option<u64>) -> Vec<Thread> {
        // Kept in the order they went to sleep, so that the first left is
        // the one that has waited longest (its call nearest the front).
        let mut sleepers = std::mem::take(&mut line.sleepers);
        let mut wake = Vec::new();
        sleepers.retain(|(id, thread)| {
            let ready = line.settled(*id);
            if ready {
                wake.push(thread.clone());
            }
            !ready
        });
        line.sleepers = sleepers;
        if leader.is_some_and(|id| line.settled(id)) && !line.sleepers.is_empty() {
            // The leader returns now: someone else reads next.
            wake.push(line.sleepers.remove(0).1);
        }
        wake
    }

    /// Until when the leader reads: the front call's timeout plus the
    /// backstop, or the drain deadline of a killed worker.
    fn read_deadline(&self, line: &Line) -> Option<Instant> {
        if let Some((_, drain_until)) = &line.killed {
            return Some(*drain_until);
        }
        let front = line.in_flight.front()?;
        let started = line.front_started?;
        deadline_after(started, front.timeout?.saturating_add(BACKSTOP))
    }

    /// Files what the leader read.
    fn file(&self, read: Result<Vec<u8>, FrameError>) {
        let frame = match read {
            Ok(frame) => frame,
            Err(FrameError::TimedOut) => return self.timed_out(),
            Err(e @ FrameError::TooLarge { .. }) => {
                return self.kill(Kill::Protocol(format!(
                    "{} sent a frame over the limit ({e}); it was killed",
                    self.name
                )));
            }
            // The stream ended: every reply written before has been read.
            Err(FrameError::Closed | FrameError::Truncated | FrameError::Io(_)) => {
                return self.gone(true);
            }
        };
        let reply = match decode_reply(frame) {
            Ok(reply) => reply,
            Err(e) => {
                return self.kill(Kill::Protocol(format!(
                    "{} sent an undecodable reply ({e}); it was killed",
                    self.name
                )));
            }
        };
        let mut line = lock(&self.line);
        let front = line.in_flight.front().map(|c| c.id);
        if front != Some(reply.id()) || line.stopped.is_some() {
            drop(line);
            return self.kill(Kill::Protocol(format!(
                "{} answered call {} while call {front:?} was running; it was killed",
                self.name,
                reply.id()
            )));
        }
        match reply {
            Reply::Done { id, result, retire } => {
                line.in_flight.pop_front();
                line.front_started = Some(Instant::now());
                line.replies.insert(id, result);
                line.retire_asked |= retire;
            }
            // The worker kills itself now; its end of stream comes next.
            Reply::Stopped { id, why } => line.stopped = Some((id, why)),
        }
    }
}
