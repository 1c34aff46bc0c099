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

mod caller_writes;
mod fate;
mod handshake;
mod output;
mod reading;
mod reaper;
mod spawn;
mod standby;

use crate::sync::lock;
use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

pub(crate) use caller_writes::{CALLER_MAX_FRAME, Completion, Outgoing};
pub use output::WorkerOutput;
pub(crate) use spawn::Launch;

use super::codec::Encoded;
use super::protocol::{Body, CallHead, Control, Hello, Stop, encode_head};
use super::wire::write_frame_parts;
use crate::error::Error;

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
    /// Calls written by their callers (`caller_writes.rs`), by id: what to do
    /// with each one's outcome. Only calls surely written are here.
    completions: HashMap<u64, Completion>,
}

impl Line {
    /// Puts call `id` in flight, in the order it is written.
    fn push_call(&mut self, id: u64, timeout: Option<Duration>) {
        self.sent += 1;
        if self.in_flight.is_empty() {
            self.front_started = Some(Instant::now());
        }
        self.in_flight.push_back(InFlight { id, timeout });
    }

    /// Whether call `id` has nothing more to wait for: its reply is filed,
    /// the worker's end decided its fate, or it was taken back out of the
    /// line (its send failed).
    fn settled(&self, id: u64) -> bool {
        self.outcomes.is_some()
            || self.replies.contains_key(&id)
            || !self.in_flight.iter().any(|c| c.id == id)
    }
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
    /// The standby reader (`standby.rs`), once started.
    standby: OnceLock<Thread>,
    /// A driver holds the writer for a write that may block (on a full
    /// socket): a caller writing its own call does not wait for it.
    blocking_write: AtomicBool,
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
            standby: OnceLock::new(),
            blocking_write: AtomicBool::new(false),
        })
    }

    /// Whether new calls may be sent to this worker (alive, not retired).
    pub(crate) fn is_usable(&self) -> bool {
        lock(&self.line).takes_calls(self.max_calls)
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
            if !line.takes_calls(self.max_calls) {
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
            lock(&self.line).push_call(id, timeout);
        }
        let body = [&input.prefix[..], &input.bytes[..]];
        self.blocking_write.store(true, Relaxed);
        let written = write_frame_parts(&mut *writer, &head, &body, self.max_frame);
        self.blocking_write.store(false, Relaxed);
        if written.is_err() {
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
        // The standby holds only a weak reference while it sleeps: let it go.
        self.wake_standby();
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
