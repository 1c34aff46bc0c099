//! The parent's side of one worker process: start it, shake hands, send
//! calls (several in flight) and read their replies under the running
//! call's deadline, tell a crash's victim from the calls queued behind it,
//! and always reap it.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::protocol::{Failure, Hello, ToWorker, build_id, decode_any_reply, decode_hello};
use super::wire::{FrameError, read_frame, write_frame};
use super::worker::{MAX_FRAME_ENV, WORKER_ENV, exit_code};
use crate::error::{Error, WorkerExit};

/// How to start a worker.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    /// The worker is this very executable: its build id must match ours.
    pub(crate) same_binary: bool,
    pub(crate) hello_timeout: Duration,
    pub(crate) max_frame: usize,
    /// Environment: `None` inherits the parent's; `Some` gives exactly these.
    pub(crate) env: Option<Vec<(OsString, OsString)>>,
}

/// Why a call did not produce output bytes.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The call failed; the error is its caller's.
    Failed(Error),
    /// The call never started (its worker died or retired before reaching
    /// it): send it again on a fresh worker.
    Retry,
}

/// How a worker ended, kept so that every waiter can tell whether its own
/// call was the one running.
#[derive(Debug, Clone)]
enum Death {
    Lost(WorkerExit),
    Timeout(Duration),
    Protocol(String),
    /// Killed because the caller of the running call gave up.
    Cancelled,
}

impl Death {
    fn error(&self) -> Error {
        match self {
            Death::Lost(exit) => Error::worker_lost(exit.clone()),
            Death::Timeout(after) => Error::timeout(*after),
            Death::Protocol(m) => Error::protocol(m.clone()),
            Death::Cancelled => Error::cancelled(crate::error::CancelReason::Dropped),
        }
    }
}

/// A call sent and not yet answered.
#[derive(Debug)]
struct InFlight {
    id: u64,
    timeout: Option<Duration>,
}

/// What the callers of one worker share, under one lock.
#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Calls in the order they were sent; the worker runs them in that
    /// order, so the front one is the one running.
    in_flight: VecDeque<InFlight>,
    /// When the front call started: when it was sent to an idle worker, or
    /// when the reply before it arrived.
    front_started: Option<Instant>,
    /// Replies that arrived for callers who have not picked them up yet.
    replies: HashMap<u64, Result<Vec<u8>, Failure>>,
    /// Set once: the worker is gone, and which call was running then.
    dead: Option<(Option<u64>, Death)>,
    /// Some caller is blocked reading the socket for everyone (the leader).
    reading: bool,
    /// Calls sent so far (for `max_tasks_per_child`).
    sent: u64,
    /// The call a caller gave up on and killed the worker for.
    cancelled: Option<u64>,
    reaped: bool,
}

/// A live, handshaken worker process, shared by the driver threads that
/// send it calls.
///
/// Up to `depth` calls are in flight at once (one running, the others
/// queued in the worker's socket), so the worker never waits for the
/// parent between calls. Replies are read by whichever waiting caller gets
/// there first (the *leader*); it files the replies of others and wakes
/// them. A caller alone reads its own reply: no extra hop for one call at a
/// time.
pub(crate) struct WorkerProc {
    pub(crate) name: String,
    pub(crate) pid: u32,
    pub(crate) hello: Hello,
    child: Mutex<Child>,
    /// Writes go straight to the socket (one `write` per frame).
    writer: Mutex<UnixStream>,
    /// Reads are buffered so a frame's header and body (and often the next
    /// replies) take one `read`.
    reader: Mutex<BufReader<UnixStream>>,
    state: Mutex<State>,
    /// Signalled whenever the leader files a reply or the worker dies.
    news: Condvar,
    max_frame: usize,
    /// Stop sending after this many calls (`max_tasks_per_child`).
    max_calls: Option<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Copies a worker's output, line by line and prefixed with its name, to
/// our stderr, on a thread of its own: a worker that writes a lot can never
/// block on a full pipe.
fn forward(name: &str, what: &str, pipe: Option<impl Read + Send + 'static>) {
    let Some(pipe) = pipe else { return };
    let prefix = name.to_owned();
    let _ = std::thread::Builder::new()
        .name(format!("{name}-{what}"))
        .spawn(move || {
            let mut lines = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match lines.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        eprintln!("[{prefix}] {}", text.trim_end_matches('\n'));
                    }
                }
            }
        });
}

/// Waits for `child` to exit: up to 1 s for one that is on its way out,
/// then it is killed. Never leaves a zombie.
fn reap_child(child: &Mutex<Child>) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut c = lock(child);
    loop {
        match c.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                drop(c);
                std::thread::sleep(Duration::from_millis(1));
                c = lock(child);
            }
            Ok(None) => {
                let _ = c.kill();
                return c.wait().ok();
            }
            Err(_) => return None,
        }
    }
}

fn kill_and_reap(child: &Mutex<Child>) -> Option<ExitStatus> {
    let _ = lock(child).kill();
    reap_child(child)
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
    ) -> Result<Self, Error> {
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| Error::worker_start(format!("socketpair: {e}")))?;
        let mut cmd = Command::new(&launch.program);
        cmd.args(&launch.args)
            .arg0(name)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(env) = &launch.env {
            cmd.env_clear().envs(env.iter().cloned());
        }
        cmd.env(WORKER_ENV, name)
            .env(MAX_FRAME_ENV, launch.max_frame.to_string());
        let spawned = cmd.spawn();
        // The command holds our copy of the worker's end of the socket:
        // close it now, or the worker's death would never read as EOF here.
        drop(cmd);
        let mut child = spawned.map_err(|e| {
            Error::worker_start(format!("cannot start {}: {e}", launch.program.display()))
        })?;
        forward(name, "out", child.stdout.take());
        forward(name, "err", child.stderr.take());
        let pid = child.id();
        let child = Mutex::new(child);
        let mut reader = match ours.try_clone() {
            Ok(r) => BufReader::new(r),
            Err(e) => {
                kill_and_reap(&child);
                return Err(Error::worker_start(format!("cannot clone the socket: {e}")));
            }
        };
        let hello = handshake(launch, name, &ours, &mut reader, &child)?;
        Ok(WorkerProc {
            name: name.to_owned(),
            pid,
            hello,
            child,
            writer: Mutex::new(ours),
            reader: Mutex::new(reader),
            state: Mutex::new(State::default()),
            news: Condvar::new(),
            max_frame: launch.max_frame,
            max_calls,
        })
    }

    /// Whether new calls may be sent to this worker (alive, not retired).
    pub(crate) fn is_usable(&self) -> bool {
        let st = lock(&self.state);
        st.dead.is_none() && self.max_calls.is_none_or(|max| st.sent < max)
    }

    /// Whether the worker died (as opposed to alive, or merely retired).
    pub(crate) fn is_dead(&self) -> bool {
        lock(&self.state).dead.is_some()
    }

    /// Sends a call; returns its id, to [`wait`](Self::wait) on.
    ///
    /// # Errors
    ///
    /// [`CallError::Retry`] if the worker is dead or retired (send it to a
    /// fresh one); [`CallError::Failed`] with a codec error if the call is
    /// too large for a frame.
    pub(crate) fn send(
        &self,
        task: &str,
        input: &[u8],
        timeout: Option<Duration>,
    ) -> Result<u64, CallError> {
        // The writer lock orders both the ids and the bytes on the socket,
        // so the worker runs calls in `in_flight` order.
        let mut writer = lock(&self.writer);
        let id = {
            let mut st = lock(&self.state);
            if st.dead.is_some() || self.max_calls.is_some_and(|max| st.sent >= max) {
                return Err(CallError::Retry);
            }
            st.next_id += 1;
            st.sent += 1;
            let id = st.next_id;
            if st.in_flight.is_empty() {
                st.front_started = Some(Instant::now());
            }
            st.in_flight.push_back(InFlight { id, timeout });
            id
        };
        let msg = ToWorker::Call {
            id,
            task: task.to_owned(),
            input: input.to_vec(),
        };
        let frame = match postcard::to_stdvec(&msg) {
            Ok(f) if f.len() <= self.max_frame => Ok(f),
            Ok(f) => Err(Error::codec(format!(
                "input of {} bytes exceeds the {}-byte frame limit",
                f.len(),
                self.max_frame
            ))),
            Err(e) => Err(Error::codec(e.to_string())),
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                // Never sent: take it back out of the line.
                let mut st = lock(&self.state);
                st.in_flight.retain(|c| c.id != id);
                return Err(CallError::Failed(e));
            }
        };
        if write_frame(&mut *writer, &frame, self.max_frame).is_err() {
            drop(writer);
            // The worker is gone. If a call was running before ours, it is
            // the one that was lost; ours never arrived.
            let mut st = lock(&self.state);
            st.in_flight.retain(|c| c.id != id);
            if st.dead.is_none() {
                let running = st.in_flight.front().map(|c| c.id);
                drop(st);
                let status = kill_and_reap(&self.child);
                let mut st = lock(&self.state);
                st.reaped = true;
                st.dead.get_or_insert((
                    running,
                    Death::Lost(WorkerExit::from_status(&self.name, status)),
                ));
            }
            self.news.notify_all();
            return Err(CallError::Retry);
        }
        Ok(id)
    }

    /// Waits for the reply to call `id`, reading the socket for everyone
    /// while no one else does.
    pub(crate) fn wait(&self, id: u64) -> Result<Vec<u8>, CallError> {
        let mut st = lock(&self.state);
        loop {
            if let Some(reply) = st.replies.remove(&id) {
                return reply.map_err(|f| CallError::Failed(failure_error(f)));
            }
            if let Some((running, death)) = &st.dead {
                return Err(if *running == Some(id) {
                    CallError::Failed(death.error())
                } else {
                    CallError::Retry
                });
            }
            if st.reading {
                st = self.news.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Lead: read one frame for whoever it is, under the running
            // call's deadline.
            st.reading = true;
            let front = st.in_flight.front().map(|c| (c.id, c.timeout));
            let deadline = match (front, st.front_started) {
                (Some((_, Some(t))), Some(started)) => Some((started + t, t)),
                _ => None,
            };
            drop(st);
            let read = {
                let mut reader = lock(&self.reader);
                let timeout = deadline.map(|(at, _)| {
                    at.saturating_duration_since(Instant::now())
                        .max(Duration::from_micros(1))
                });
                let _ = reader.get_ref().set_read_timeout(timeout);
                read_frame(&mut *reader, self.max_frame)
            };
            self.file(read, front.map(|f| f.0), deadline.map(|d| d.1));
            st = lock(&self.state);
            st.reading = false;
            self.news.notify_all();
        }
    }

    /// Files what the leader read: a reply for its caller, or the worker's
    /// death (killing it first when it broke the protocol or a deadline).
    fn file(
        &self,
        read: Result<Vec<u8>, FrameError>,
        front: Option<u64>,
        timeout: Option<Duration>,
    ) {
        let death = match read {
            Ok(frame) => match (front, decode_any_reply(&frame)) {
                (Some(expected), Ok((got, result))) if got == expected => {
                    let mut st = lock(&self.state);
                    st.in_flight.pop_front();
                    st.front_started = Some(Instant::now());
                    st.replies.insert(got, result);
                    return;
                }
                (expected, Ok((got, _))) => Death::Protocol(format!(
                    "{} answered call {got} while call {expected:?} was running; it was killed",
                    self.name
                )),
                (_, Err(e)) => Death::Protocol(format!(
                    "{} sent an undecodable reply ({e}); it was killed",
                    self.name
                )),
            },
            Err(FrameError::TimedOut) => Death::Timeout(timeout.unwrap_or_default()),
            Err(FrameError::TooLarge { len, max }) => Death::Protocol(format!(
                "{} sent a frame of {len} bytes, over the {max}-byte limit; it was killed",
                self.name
            )),
            Err(FrameError::Closed | FrameError::Truncated | FrameError::Io(_)) => {
                let status = reap_child(&self.child);
                let cancelled = {
                    let mut st = lock(&self.state);
                    st.reaped = true;
                    st.cancelled.is_some() && st.cancelled == front
                };
                if cancelled {
                    Death::Cancelled
                } else {
                    Death::Lost(WorkerExit::from_status(&self.name, status))
                }
            }
        };
        if !matches!(death, Death::Lost(_) | Death::Cancelled) {
            kill_and_reap(&self.child);
        }
        let mut st = lock(&self.state);
        st.reaped = true;
        st.dead.get_or_insert((front, death));
    }

    /// The caller of call `id` gave up and wants it stopped: if it is the
    /// one running, the worker is killed (the calls queued behind it are
    /// sent again elsewhere); if it has not started, it is left to run
    /// unobserved, since it cannot be taken back out of the socket.
    pub(crate) fn cancel(&self, id: u64) {
        let mut st = lock(&self.state);
        if st.dead.is_some() || st.in_flight.front().map(|c| c.id) != Some(id) {
            return;
        }
        st.cancelled = Some(id);
        drop(st);
        let _ = lock(&self.child).kill();
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if lock(&self.state).reaped {
            return;
        }
        // Closing the channel tells the worker to exit; reaping waits for
        // it and kills it if it does not.
        let _ = lock(&self.writer).shutdown(std::net::Shutdown::Both);
        reap_child(&self.child);
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

/// The caller's error for a failure the worker survived.
fn failure_error(f: Failure) -> Error {
    match f {
        Failure::Panic { message, location } => Error::remote_panic(message, location),
        Failure::UnknownTask(t) => Error::unknown_task(t),
        Failure::BadInput(e) => Error::codec(format!("input: {e}")),
        Failure::BadOutput(e) => Error::codec(format!("output: {e}")),
    }
}

/// Reads and checks a new worker's hello; kills and reaps it on failure.
fn handshake(
    launch: &Launch,
    name: &str,
    stream: &UnixStream,
    reader: &mut BufReader<UnixStream>,
    child: &Mutex<Child>,
) -> Result<Hello, Error> {
    let _ = stream.set_read_timeout(Some(launch.hello_timeout));
    let frame = read_frame(reader, launch.max_frame);
    let _ = stream.set_read_timeout(None);
    let frame = match frame {
        Ok(f) => f,
        Err(FrameError::TimedOut) => {
            kill_and_reap(child);
            return Err(Error::protocol(format!(
                "{name} sent no hello within {:?}",
                launch.hello_timeout
            )));
        }
        Err(FrameError::Closed | FrameError::Truncated | FrameError::Io(_)) => {
            let how = describe_exit(reap_child(child));
            return Err(Error::worker_start(format!(
                "{name} died before its hello ({how})"
            )));
        }
        Err(e @ FrameError::TooLarge { .. }) => {
            kill_and_reap(child);
            return Err(Error::protocol(format!("{name}'s hello: {e}")));
        }
    };
    let hello = match decode_hello(&frame) {
        Ok(h) => h,
        Err(e) => {
            kill_and_reap(child);
            return Err(Error::protocol(format!("{name}: {e}")));
        }
    };
    if launch.same_binary {
        let ours = build_id();
        if hello.build != ours {
            kill_and_reap(child);
            return Err(Error::protocol(format!(
                "{name} is a different build ({}) than its parent ({ours}); was the executable replaced?",
                hello.build
            )));
        }
    }
    Ok(hello)
}

fn describe_exit(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) if s.code() == Some(exit_code::INIT_PANICKED) => "its init hook panicked".into(),
        Some(s) if s.code() == Some(exit_code::NO_CHANNEL) => {
            "it had no control channel: is `run_worker_if_child` the first line of main?".into()
        }
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(sig)) => format!("killed by signal {sig}"),
            _ => "unknown status".into(),
        },
        None => "status unknown".into(),
    }
}
