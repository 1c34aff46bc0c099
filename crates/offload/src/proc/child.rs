//! The parent's side of one worker process: start it, shake hands, send a
//! call and read its reply under a deadline, and always reap it.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::protocol::{Hello, ReplyError, ToWorker, build_id, decode_hello, decode_reply};
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

/// A call failed; `dead` says whether the worker is gone with it.
#[derive(Debug)]
pub(crate) struct CallError {
    pub(crate) error: Error,
    pub(crate) dead: bool,
}

impl CallError {
    fn alive(error: Error) -> Self {
        CallError { error, dead: false }
    }
    fn dead(error: Error) -> Self {
        CallError { error, dead: true }
    }
}

/// A live, handshaken worker process.
pub(crate) struct WorkerProc {
    pub(crate) name: String,
    pub(crate) pid: u32,
    /// Shared with a call's kill switch, so a caller that gives up can kill
    /// the worker while this side is blocked reading.
    child: Arc<Mutex<Child>>,
    /// Writes go straight to the socket (one `write` per frame); reads are
    /// buffered so that a frame's header and body take one `read`.
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    pub(crate) hello: Hello,
    /// Calls this worker has served.
    pub(crate) calls: u64,
    next_id: u64,
    max_frame: usize,
    /// Set once reaped, so `Drop` does not wait twice.
    reaped: bool,
}

fn lock(child: &Mutex<Child>) -> std::sync::MutexGuard<'_, Child> {
    child.lock().unwrap_or_else(|e| e.into_inner())
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

impl WorkerProc {
    /// Starts a worker and completes the handshake.
    ///
    /// # Errors
    ///
    /// [`Error::is_worker_start`] if it cannot be started or dies before
    /// its hello; [`Error::is_protocol`] if its hello is wrong or late.
    pub(crate) fn start(launch: &Launch, name: &str) -> Result<Self, Error> {
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
        let reader = match ours.try_clone() {
            Ok(r) => BufReader::new(r),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::worker_start(format!("cannot clone the socket: {e}")));
            }
        };
        let mut proc = WorkerProc {
            name: name.to_owned(),
            pid,
            child: Arc::new(Mutex::new(child)),
            stream: ours,
            reader,
            hello: Hello {
                build: String::new(),
                tasks: Vec::new(),
                pid,
            },
            calls: 0,
            next_id: 0,
            max_frame: launch.max_frame,
            reaped: false,
        };
        proc.hello = proc.handshake(launch)?;
        Ok(proc)
    }

    fn handshake(&mut self, launch: &Launch) -> Result<Hello, Error> {
        let _ = self.stream.set_read_timeout(Some(launch.hello_timeout));
        let frame = read_frame(&mut self.reader, launch.max_frame);
        let _ = self.stream.set_read_timeout(None);
        let frame = match frame {
            Ok(f) => f,
            Err(FrameError::TimedOut) => {
                self.kill_and_reap();
                return Err(Error::protocol(format!(
                    "{} sent no hello within {:?}",
                    self.name, launch.hello_timeout
                )));
            }
            Err(FrameError::Closed | FrameError::Truncated | FrameError::Io(_)) => {
                let status = self.reap();
                let how = describe_exit(status);
                return Err(Error::worker_start(format!(
                    "{} died before its hello ({how})",
                    self.name
                )));
            }
            Err(e @ FrameError::TooLarge { .. }) => {
                self.kill_and_reap();
                return Err(Error::protocol(format!("{}'s hello: {e}", self.name)));
            }
        };
        let hello = match decode_hello(&frame) {
            Ok(h) => h,
            Err(e) => {
                self.kill_and_reap();
                return Err(Error::protocol(format!("{}: {e}", self.name)));
            }
        };
        if launch.same_binary {
            let ours = build_id();
            if hello.build != ours {
                self.kill_and_reap();
                return Err(Error::protocol(format!(
                    "{} is a different build ({}) than its parent ({ours}); was the executable replaced?",
                    self.name, hello.build
                )));
            }
        }
        Ok(hello)
    }

    /// The handle a kill switch uses.
    pub(crate) fn child_handle(&self) -> Arc<Mutex<Child>> {
        self.child.clone()
    }

    /// Sends one call and waits for its reply until `deadline`.
    pub(crate) fn call(
        &mut self,
        task: &str,
        input: Vec<u8>,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<Vec<u8>, CallError> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = ToWorker::Call {
            id,
            task: task.to_owned(),
            input,
        };
        let frame =
            postcard::to_stdvec(&msg).map_err(|e| CallError::alive(Error::codec(e.to_string())))?;
        if frame.len() > self.max_frame {
            return Err(CallError::alive(Error::codec(format!(
                "input of {} bytes exceeds the {}-byte frame limit",
                frame.len(),
                self.max_frame
            ))));
        }
        if write_frame(&mut self.stream, &frame, self.max_frame).is_err() {
            return Err(CallError::dead(self.lost()));
        }
        let timeout = deadline.map(|(at, _)| {
            at.saturating_duration_since(Instant::now())
                .max(Duration::from_micros(1))
        });
        let _ = self.stream.set_read_timeout(timeout);
        let reply = read_frame(&mut self.reader, self.max_frame);
        if deadline.is_some() {
            let _ = self.stream.set_read_timeout(None);
        }
        self.calls += 1;
        let frame = match reply {
            Ok(f) => f,
            Err(FrameError::TimedOut) => {
                self.kill_and_reap();
                let after = deadline.map_or(Duration::ZERO, |(_, d)| d);
                return Err(CallError::dead(Error::timeout(after)));
            }
            Err(FrameError::TooLarge { len, max }) => {
                self.kill_and_reap();
                return Err(CallError::dead(Error::protocol(format!(
                    "{} sent a frame of {len} bytes, over the {max}-byte limit; it was killed",
                    self.name
                ))));
            }
            Err(FrameError::Closed | FrameError::Truncated | FrameError::Io(_)) => {
                return Err(CallError::dead(self.lost()));
            }
        };
        match decode_reply(&frame, id) {
            Ok(result) => result.map_err(|f| {
                use super::protocol::Failure;
                CallError::alive(match f {
                    Failure::Panic { message, location } => Error::remote_panic(message, location),
                    Failure::UnknownTask(t) => Error::unknown_task(t),
                    Failure::BadInput(e) => Error::codec(format!("input: {e}")),
                    Failure::BadOutput(e) => Error::codec(format!("output: {e}")),
                })
            }),
            Err(ReplyError::WrongId { got }) => {
                self.kill_and_reap();
                Err(CallError::dead(Error::protocol(format!(
                    "{} answered call {got} while call {id} was running; it was killed",
                    self.name
                ))))
            }
            Err(ReplyError::Undecodable(e)) => {
                self.kill_and_reap();
                Err(CallError::dead(Error::protocol(format!(
                    "{} sent an undecodable reply ({e}); it was killed",
                    self.name
                ))))
            }
        }
    }

    /// The worker is gone: reap it and say how it died.
    fn lost(&mut self) -> Error {
        let status = self.reap();
        Error::worker_lost(WorkerExit::from_status(&self.name, status))
    }

    /// Waits for the worker to exit: up to 1 s for one that is on its way
    /// out, then it is killed. Never leaves a zombie.
    fn reap(&mut self) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut child = lock(&self.child);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    drop(child);
                    std::thread::sleep(Duration::from_millis(1));
                    child = lock(&self.child);
                }
                Ok(None) => {
                    let _ = child.kill();
                    break child.wait().ok();
                }
                Err(_) => break None,
            }
        };
        self.reaped = true;
        status
    }

    pub(crate) fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        let _ = lock(&self.child).kill();
        self.reap()
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // Closing the channel tells the worker to exit; `reap` waits for
        // it and kills it if it does not.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.reap();
    }
}

impl std::fmt::Debug for WorkerProc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerProc")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("calls", &self.calls)
            .finish()
    }
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
