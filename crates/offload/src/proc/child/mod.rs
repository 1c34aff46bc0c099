//! The parent's side of one worker process: start it, shake hands, send
//! calls (several in flight), read their replies, and when the worker
//! dies, tell which calls it answered, which one it may have been running,
//! and which it never started.
//!
//! The rules that keep work from being lost or run twice (see the design
//! note, "Who decides what a kill applies to"):
//!
//! - the parent never guesses which call the worker is running: timeouts
//!   and cancellations are decided by the worker (`worker/running.rs`),
//!   which names the call it stops;
//! - when a worker dies, the replies it wrote before are read to the end
//!   of the stream first; then only the first unanswered call can have
//!   started, and only the calls behind it are sent again;
//! - when the stream cannot be read to its end (a corrupt frame), the first
//!   *two* unanswered calls may have started: both fail, none is re-sent.

mod handshake;
mod output;
mod reaper;
mod spawn;

use crate::sync::lock;
use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

pub use output::WorkerOutput;
pub(crate) use spawn::Launch;

use super::codec::Encoded;
use super::protocol::{Body, CallHead, Control, Hello, Reply, Stop, decode_reply, encode_head};
use super::wire::{FrameError, deadline_after, read_frame, spin_for_bytes, write_frame_parts};
use crate::error::{CancelReason, Error};

/// How long past a call's timeout its worker has to stop itself before
/// the parent kills it (a worker whose deadline thread cannot run: stopped
/// with SIGSTOP, or starved).
const BACKSTOP: Duration = Duration::from_millis(500);

/// How long the parent keeps reading a killed worker's channel for the
/// replies it wrote before it died.
const DRAIN: Duration = Duration::from_secs(1);

/// Why a call did not produce output bytes.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The call failed; the error is its caller's.
    Failed(Error),
    /// The call never started (its worker died or retired before reaching
    /// it): send it again on a fresh worker.
    Retry,
}

/// Called when a worker process goes away: `unlist` before it is reaped
/// (its pid may then be reused), `reaped` after.
pub(crate) struct Hooks {
    pub(crate) unlist: Box<dyn Fn() + Send + Sync>,
    pub(crate) reaped: Box<dyn Fn() + Send + Sync>,
}

/// A call sent and not yet answered.
#[derive(Debug)]
struct InFlight {
    id: u64,
    timeout: Option<Duration>,
}

/// Why the parent killed its worker.
#[derive(Debug, Clone)]
enum Kill {
    /// Call `id` ran past its timeout plus [`BACKSTOP`] without the worker
    /// stopping it.
    Backstop { id: u64, timeout: Duration },
    /// The worker broke the protocol; the stream cannot be read further.
    Protocol(String),
}

/// What the callers of one worker share, under one lock.
#[derive(Debug, Default)]
struct Line {
    next_id: u64,
    /// Calls sent so far (for `max_tasks_per_child`).
    sent: u64,
    /// Calls in the order they were written; the worker runs them in that
    /// order.
    in_flight: VecDeque<InFlight>,
    /// A bound on when the front call started: when it was sent to an
    /// idle worker, or when the reply before it was read (the worker
    /// started it no later than that).
    front_started: Option<Instant>,
    /// Replies read for callers who have not picked them up yet.
    replies: HashMap<u64, Result<Body, Error>>,
    /// The worker announced that it stops in this call.
    stopped: Option<(u64, Stop)>,
    /// The parent killed the worker, and reads until this deadline for the
    /// replies written before.
    killed: Option<(Kill, Instant)>,
    /// Set once the worker is gone: the error of each call that may have
    /// started. Unanswered calls not listed never started.
    outcomes: Option<HashMap<u64, Error>>,
    /// Some caller is reading the channel for everyone (the leader).
    reading: bool,
    /// Callers parked until the leader files their reply or hands them
    /// the reading (see [`WorkerProc::wait`]), by call id.
    sleepers: Vec<(u64, Thread)>,
    /// A write failed: the worker is gone or going; send nothing more.
    unwritable: bool,
    /// The worker passed its memory limit and asked to take no more calls.
    retire_asked: bool,
    /// A write found the worker gone while a call written whole before it
    /// was still unanswered (that call takes the blame for the death).
    blame_ahead: bool,
    /// The worker's end was blamed on a call that may have started (it
    /// failed with the worker's fate); kept after that call took its
    /// outcome out of `outcomes`.
    blamed: bool,
}

/// The process itself, until it is reaped.
struct Process {
    child: Option<Child>,
    /// Its exit status once reaped here (`Some(None)`: reaped, status
    /// unknown).
    status: Option<Option<ExitStatus>>,
    hooks: Hooks,
}

/// A live, handshaken worker process, shared by the driver threads that
/// send it calls.
///
/// Up to `depth` calls are in flight at once (one running, the others
/// queued in the worker's socket), so the worker never waits for the
/// parent between calls. Replies are read by whichever waiting caller gets
/// there first (the *leader*); it files the replies of others and wakes
/// them. A caller alone reads its own reply: no extra hop for one call at
/// a time.
pub(crate) struct WorkerProc {
    pub(crate) name: String,
    pub(crate) pid: u32,
    pub(crate) hello: Hello,
    process: Mutex<Process>,
    /// Calls go straight to the socket (one vectored write per frame).
    writer: Mutex<UnixStream>,
    /// Cancellations; never blocks (non-blocking socket, tiny messages).
    control: Mutex<UnixStream>,
    /// Reads are buffered so a frame's header and body (and often the next
    /// replies) take one `read`.
    reader: Mutex<BufReader<UnixStream>>,
    line: Mutex<Line>,
    max_frame: usize,
    /// How long a reader looks for the reply before it blocks.
    spin: Duration,
    /// Stop sending after this many calls (`max_tasks_per_child`).
    max_calls: Option<u64>,
    /// The worker's hard memory limit, and its last stderr line, to tell
    /// an abort on a failed allocation from other deaths.
    hard_memory: Option<u64>,
    stderr_tail: Option<Arc<output::Tail>>,
    /// The system's count of OOM kills when the worker started.
    oom_kills_at_start: Option<u64>,
}

impl WorkerProc {
    /// Starts a worker and completes the handshake.
    ///
    /// # Errors
    ///
    /// [`Error::is_worker_start`] if it cannot be started or dies before
    /// its hello; [`Error::is_protocol`] if its hello is wrong or late.
    pub(crate) fn start(
        launch: &Launch,
        name: &str,
        max_calls: Option<u64>,
        hooks: Hooks,
    ) -> Result<Self, Error> {
        let oom_kills_at_start = oom_kills();
        let spawned = spawn::spawn(launch, name)?;
        let mut child = spawned.child;
        let pid = child.id();
        let reader = spawned.calls.try_clone().map(BufReader::new);
        let ready = reader.and_then(|r| {
            spawned.control.set_nonblocking(true)?;
            Ok(r)
        });
        let mut reader = match ready {
            Ok(r) => r,
            Err(e) => {
                spawn::kill_and_reap(&mut child);
                return Err(Error::worker_start(format!(
                    "cannot set up the channel: {e}"
                )));
            }
        };
        let hello = handshake::handshake(launch, name, &mut reader, &mut child)?;
        Ok(WorkerProc {
            name: name.to_owned(),
            pid,
            hello,
            process: Mutex::new(Process {
                child: Some(child),
                status: None,
                hooks,
            }),
            writer: Mutex::new(spawned.calls),
            control: Mutex::new(spawned.control),
            reader: Mutex::new(reader),
            line: Mutex::new(Line::default()),
            max_frame: launch.max_frame,
            spin: launch.spin,
            max_calls,
            hard_memory: launch.hard_memory,
            stderr_tail: spawned.stderr_tail,
            oom_kills_at_start,
        })
    }

    /// Whether new calls may be sent to this worker (alive, not retired).
    pub(crate) fn is_usable(&self) -> bool {
        let line = lock(&self.line);
        line.outcomes.is_none()
            && line.killed.is_none()
            && !line.unwritable
            && !line.retire_asked
            && self.max_calls.is_none_or(|max| line.sent < max)
    }

    /// Whether the worker asked to be retired because it passed the pool's
    /// soft memory limit.
    pub(crate) fn is_over_memory(&self) -> bool {
        lock(&self.line).retire_asked
    }

    /// Whether the worker died (as opposed to alive, or merely retired).
    pub(crate) fn is_dead(&self) -> bool {
        let line = lock(&self.line);
        line.outcomes.is_some() || line.killed.is_some() || line.unwritable
    }

    /// Sends a call of `task` with its encoded `input`; returns its id, to
    /// [`wait`](Self::wait) on.
    ///
    /// # Errors
    ///
    /// [`CallError::Retry`] if the worker is dead or retired (send it to a
    /// fresh one); [`CallError::Failed`] with [`Error::is_too_large`] if
    /// the call does not fit in a frame.
    pub(crate) fn send(
        &self,
        task: &str,
        input: &Encoded,
        timeout: Option<Duration>,
        span: Option<u64>,
    ) -> Result<u64, CallError> {
        // The writer lock orders both the ids and the bytes on the socket,
        // so the worker runs calls in `in_flight` order.
        let mut writer = lock(&self.writer);
        let id = {
            let mut line = lock(&self.line);
            if line.outcomes.is_some()
                || line.killed.is_some()
                || line.unwritable
                || line.retire_asked
                || self.max_calls.is_some_and(|max| line.sent >= max)
            {
                return Err(CallError::Retry);
            }
            line.next_id += 1;
            line.next_id
        };
        let head = encode_head(&CallHead {
            id,
            task: task.to_owned(),
            timeout,
            span,
        });
        if head.len() + input.len() > self.max_frame {
            return Err(CallError::Failed(Error::too_large(
                crate::error::Payload::Input,
                Some(input.len() as u64),
                self.max_frame.saturating_sub(head.len()) as u64,
            )));
        }
        {
            let mut line = lock(&self.line);
            line.sent += 1;
            if line.in_flight.is_empty() {
                line.front_started = Some(Instant::now());
            }
            line.in_flight.push_back(InFlight { id, timeout });
        }
        let body = [&input.prefix[..], &input.bytes[..]];
        if write_frame_parts(&mut *writer, &head, &body, self.max_frame).is_err() {
            // The worker is gone: ours never arrived whole, so it is sent
            // again elsewhere. A leader reading for the calls before ours
            // learns how the worker ended; with none, we find out here.
            // Taken out of the line while we still hold the writer, so
            // that every call left in it was written whole: the first of
            // them will take the blame for the worker's end.
            let mut line = lock(&self.line);
            drop(writer);
            line.unwritable = true;
            line.in_flight.retain(|c| c.id != id);
            line.blame_ahead |= !line.in_flight.is_empty();
            let nobody_reads = line.in_flight.is_empty() && !line.reading;
            drop(line);
            if nobody_reads {
                self.gone(true);
            }
            return Err(CallError::Retry);
        }
        Ok(id)
    }

    /// Whether the worker left for a reason that is no fault of the calls
    /// it never started: it stopped itself for a call's timeout or cancel,
    /// the parent killed it when a call ran past its timeout, it was
    /// retired (memory, `max_tasks_per_child`), or it died while running
    /// another call, which took the blame (crash, out of memory: that call
    /// failed, so every such death uses up one call and cannot repeat
    /// forever). A call sent again for such a reason is not counted against
    /// the budget for workers that die on their own, before any call could
    /// be blamed (see `Supervisor::call`).
    pub(crate) fn ended_on_purpose(&self) -> bool {
        let line = lock(&self.line);
        line.stopped.is_some()
            || matches!(line.killed, Some((Kill::Backstop { .. }, _)))
            || line.retire_asked
            || self.max_calls.is_some_and(|max| line.sent >= max)
            || line.blamed
            // A write found the worker gone with a call written before
            // it: that call takes the blame when its reader sees the end.
            || line.blame_ahead
    }

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
            line.reading = true;
            let deadline = self.read_deadline(&line);
            drop(line);
            let read = {
                let mut reader = lock(&self.reader);
                spin_for_bytes(&reader, self.spin);
                read_frame(&mut *reader, self.max_frame, deadline)
            };
            self.file(read);
            line = lock(&self.line);
            line.reading = false;
            let to_wake = Self::answered_sleepers(&mut line, id);
            if !to_wake.is_empty() {
                drop(line);
                to_wake.iter().for_each(Thread::unpark);
                line = lock(&self.line);
            }
        }
    }

    /// After the leader (waiting for `leader`) filed a frame: takes out the
    /// sleepers to unpark: those whose call is now answered (or settled by
    /// the worker's end), and, if the leader's own call is answered, one
    /// more to read next.
    fn answered_sleepers(line: &mut Line, leader: u64) -> Vec<Thread> {
        let settled = |line: &Line, id: u64| {
            line.outcomes.is_some()
                || line.replies.contains_key(&id)
                || !line.in_flight.iter().any(|c| c.id == id)
        };
        let mut wake = Vec::new();
        let mut i = 0;
        while i < line.sleepers.len() {
            if settled(line, line.sleepers[i].0) {
                wake.push(line.sleepers.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        if settled(line, leader) && !line.sleepers.is_empty() {
            // The leader returns now: the next reader is whoever waits
            // longest (its call is nearest the front).
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

    /// A read deadline passed: the front call's backstop (the worker did
    /// not stop it), or the drain of a killed worker.
    fn timed_out(&self) {
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
    fn kill(&self, why: Kill) {
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
    fn gone(&self, intact: bool) {
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

    /// The caller of call `id` gave up: the worker stops it if it is
    /// running, skips it if it has not started, and ignores the request if
    /// it has finished. Never blocks: the message is tiny and the socket
    /// non-blocking (a worker too wedged to read it is killed by the
    /// call's timeout, if any).
    pub(crate) fn cancel(&self, id: u64) {
        {
            let line = lock(&self.line);
            if line.outcomes.is_some() || !line.in_flight.iter().any(|c| c.id == id) {
                return;
            }
        }
        let msg = encode_head(&Control::Cancel { id });
        let mut frame = (msg.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&msg);
        // One `write` of a few bytes: on Linux a Unix stream socket takes
        // it whole or not at all (`WouldBlock`: the worker is too wedged to
        // read its control channel; the cancel is dropped).
        match lock(&self.control).write(&frame) {
            Ok(n) if n == frame.len() => {}
            Ok(0) | Err(_) => {}
            Ok(_) => {
                // Cut in the middle: the control stream is out of step.
                // Send this worker nothing more; it exits once idle.
                lock(&self.line).unwritable = true;
            }
        }
    }
}

/// The kernel's count of processes its OOM killer has killed (`None`
/// where `/proc/vmstat` does not say).
fn oom_kills() -> Option<u64> {
    let vmstat = std::fs::read_to_string("/proc/vmstat").ok()?;
    vmstat
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

impl Drop for WorkerProc {
    /// Closes the channels (the worker exits when it has answered what it
    /// was sent) and hands the process to the background reaper.
    fn drop(&mut self) {
        let _ = lock(&self.writer).shutdown(std::net::Shutdown::Both);
        let _ = lock(&self.control).flush();
        let process = self.process.get_mut().unwrap_or_else(|e| e.into_inner());
        let Some(child) = process.child.take() else {
            return;
        };
        (process.hooks.unlist)();
        let reaped = std::mem::replace(&mut process.hooks.reaped, Box::new(|| {}));
        reaper::reap_later(child, reaped);
    }
}

impl std::fmt::Debug for WorkerProc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerProc")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}
