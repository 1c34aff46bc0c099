//! Error types: one opaque [`Error`] for everything that can happen to a job,
//! [`BuildError`] for invalid configurations, and [`TryRunError`], which
//! hands the closure back when a non-waiting submission fails.
//!
//! This file is platform-neutral: what is specific to worker processes
//! (reading an exit status) lives in `proc/`.

use std::any::Any;
use std::fmt;

use serde::{Deserialize, Serialize};

mod build;
mod try_run;
mod wire;

pub use build::BuildError;
pub use try_run::TryRunError;

/// Why a job failed: returned by every future that runs work in an executor.
///
/// The error is opaque on purpose: ask it what happened with the `is_*`
/// predicates, print it, or walk [`source()`](std::error::Error::source).
/// New failure kinds (for example those of the process pool) add
/// predicates without breaking matches in user code.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// let err = offload::run(|| panic!("disk on fire")).await.unwrap_err();
/// assert!(err.is_panic());
/// assert_eq!(err.panic_message(), Some("disk on fire"));
/// # });
/// ```
pub struct Error {
    kind: Kind,
}

/// What went wrong. Private so that kinds can grow.
#[derive(Debug)]
enum Kind {
    /// The job panicked; the message is the panic payload when it was a string.
    Panic(String),
    /// The job never ran: its submission was cancelled.
    Cancelled(CancelReason),
    /// The executor is shut down and takes no more work.
    Shutdown,
    /// The executor's queue was full and the submission could not wait.
    Rejected,
    /// A worker thread could not be started.
    Spawn(std::io::Error),
    /// A process call ran past its deadline; its worker was killed.
    Timeout(std::time::Duration),
    /// The worker process died while running the call.
    WorkerLost(WorkerExit),
    /// The task panicked inside the worker process; the worker survived.
    RemotePanic {
        message: String,
        location: Option<String>,
    },
    /// Input or output bytes could not be (de)serialised.
    Codec(String),
    /// The worker does not know the task.
    UnknownTask(String),
    /// The worker broke the protocol: bad handshake, version or build
    /// mismatch, corrupt or oversized frame, no hello in time.
    Protocol(String),
    /// Workers cannot be started (they die at start-up); the pool backs off.
    WorkerStart(String),
    /// An input or output is larger than the transport allows.
    TooLarge {
        what: Payload,
        /// The encoded size, when known (encoding stops at the limit).
        size: Option<u64>,
        limit: u64,
    },
    /// Nobody serves the task: no worker is subscribed (remote pools).
    NoWorkers(String),
    /// The worker knows the task under another version of its types.
    VersionMismatch(String),
    /// The message system between caller and worker failed.
    Transport(String),
    /// The worker running the call ran out of memory: it hit the pool's
    /// hard memory limit, or the kernel's OOM killer took it.
    OutOfMemory(WorkerExit, String),
    /// A dedicated executor's initialiser failed or panicked: it runs no call.
    Init(String),
}

/// Which side of a call a size error concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Payload {
    Input,
    Output,
}

/// How a worker (a process, or a remote worker) ended. Built from an exit
/// status in `proc/`; here it is plain data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WorkerExit {
    pub(crate) worker: String,
    pub(crate) code: Option<i32>,
    pub(crate) signal: Option<i32>,
}

/// Why a job that never ran was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CancelReason {
    /// The executor dropped the job without running it.
    Dropped,
    /// `shutdown_now` (or a shutdown deadline) removed it from the queue.
    Shutdown,
}

impl Error {
    /// A copy of this error, for when one failure must reach several
    /// waiters (an I/O error inside is copied as its kind and message).
    pub(crate) fn duplicate(&self) -> Error {
        let kind = match &self.kind {
            Kind::Panic(m) => Kind::Panic(m.clone()),
            Kind::Cancelled(r) => Kind::Cancelled(*r),
            Kind::Shutdown => Kind::Shutdown,
            Kind::Rejected => Kind::Rejected,
            Kind::Spawn(e) => Kind::Spawn(std::io::Error::new(e.kind(), e.to_string())),
            Kind::Timeout(d) => Kind::Timeout(*d),
            Kind::WorkerLost(e) => Kind::WorkerLost(e.clone()),
            Kind::RemotePanic { message, location } => Kind::RemotePanic {
                message: message.clone(),
                location: location.clone(),
            },
            Kind::Codec(m) => Kind::Codec(m.clone()),
            Kind::UnknownTask(m) => Kind::UnknownTask(m.clone()),
            Kind::Protocol(m) => Kind::Protocol(m.clone()),
            Kind::WorkerStart(m) => Kind::WorkerStart(m.clone()),
            Kind::TooLarge { what, size, limit } => Kind::TooLarge {
                what: *what,
                size: *size,
                limit: *limit,
            },
            Kind::NoWorkers(m) => Kind::NoWorkers(m.clone()),
            Kind::VersionMismatch(m) => Kind::VersionMismatch(m.clone()),
            Kind::Transport(m) => Kind::Transport(m.clone()),
            Kind::OutOfMemory(e, how) => Kind::OutOfMemory(e.clone(), how.clone()),
            Kind::Init(m) => Kind::Init(m.clone()),
        };
        Error { kind }
    }

    /// The error for a caught panic, with the payload's message (a `&str`
    /// or `String` payload; any other type is named as such). The payload
    /// itself stays with the caller, which decides how to drop it.
    pub(crate) fn panic(payload: &(dyn Any + Send)) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "Box<dyn Any>".to_owned()
        };
        Error {
            kind: Kind::Panic(message),
        }
    }

    pub(crate) fn cancelled(reason: CancelReason) -> Self {
        Error {
            kind: Kind::Cancelled(reason),
        }
    }

    pub(crate) fn shutdown() -> Self {
        Error {
            kind: Kind::Shutdown,
        }
    }

    pub(crate) fn rejected() -> Self {
        Error {
            kind: Kind::Rejected,
        }
    }

    pub(crate) fn spawn(err: std::io::Error) -> Self {
        Error {
            kind: Kind::Spawn(err),
        }
    }

    pub(crate) fn timeout(after: std::time::Duration) -> Self {
        Error {
            kind: Kind::Timeout(after),
        }
    }

    pub(crate) fn worker_lost(exit: WorkerExit) -> Self {
        Error {
            kind: Kind::WorkerLost(exit),
        }
    }

    pub(crate) fn remote_panic(message: String, location: Option<String>) -> Self {
        Error {
            kind: Kind::RemotePanic { message, location },
        }
    }

    pub(crate) fn codec(what: impl Into<String>) -> Self {
        Error {
            kind: Kind::Codec(what.into()),
        }
    }

    pub(crate) fn unknown_task(name: impl Into<String>) -> Self {
        Error {
            kind: Kind::UnknownTask(name.into()),
        }
    }

    pub(crate) fn protocol(what: impl Into<String>) -> Self {
        Error {
            kind: Kind::Protocol(what.into()),
        }
    }

    pub(crate) fn worker_start(what: impl Into<String>) -> Self {
        Error {
            kind: Kind::WorkerStart(what.into()),
        }
    }

    pub(crate) fn too_large(what: Payload, size: Option<u64>, limit: u64) -> Self {
        Error {
            kind: Kind::TooLarge { what, size, limit },
        }
    }

    pub(crate) fn no_workers(what: impl Into<String>) -> Self {
        Error {
            kind: Kind::NoWorkers(what.into()),
        }
    }

    pub(crate) fn version_mismatch(what: impl Into<String>) -> Self {
        Error {
            kind: Kind::VersionMismatch(what.into()),
        }
    }

    pub(crate) fn transport(what: impl Into<String>) -> Self {
        Error {
            kind: Kind::Transport(what.into()),
        }
    }

    pub(crate) fn out_of_memory(exit: WorkerExit, how: impl Into<String>) -> Self {
        Error {
            kind: Kind::OutOfMemory(exit, how.into()),
        }
    }

    /// The worker running the call ran out of memory and died: the call's
    /// task allocated past the pool's hard memory limit, or the kernel's
    /// OOM killer chose the worker. Only this call failed; a fresh worker
    /// takes the next. [`worker`](Self::worker), [`signal`](Self::signal)
    /// and [`exit_code`](Self::exit_code) say which and how.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self.kind, Kind::OutOfMemory(..))
    }

    /// The input or the output of a call is larger than the transport
    /// allows (a process pool's frame limit, a message system's largest
    /// message). Checked as early as possible: an input is refused before
    /// it is sent, and its encoding stops at the limit.
    pub fn is_too_large(&self) -> bool {
        matches!(self.kind, Kind::TooLarge { .. })
    }

    /// Nobody serves the task: a remote pool found no worker subscribed.
    /// Reported at once, not at the call's timeout.
    pub fn is_no_workers(&self) -> bool {
        matches!(self.kind, Kind::NoWorkers(_))
    }

    /// The worker knows the task, but under another version of its input
    /// or output types (two deployments out of step). See
    /// [`Task::VERSION`](crate::proc::Task::VERSION).
    pub fn is_version_mismatch(&self) -> bool {
        matches!(self.kind, Kind::VersionMismatch(_))
    }

    /// The message system between the caller and a remote worker failed
    /// (connection lost, server error); the call's outcome is unknown.
    pub fn is_transport(&self) -> bool {
        matches!(self.kind, Kind::Transport(_))
    }

    /// Whether the failure is transient, so the same call may succeed if
    /// tried again later (the caller's to retry; an HTTP handler answers
    /// 503, or 504 when [`is_timeout`](Self::is_timeout)), as opposed to
    /// permanent for this input (500: a panic, a codec error, an unknown
    /// task, a version mismatch, an oversized payload).
    ///
    /// Transient: the queue was full or the pool shut down, the call was
    /// cancelled or timed out, its worker was lost or could not start, the
    /// worker broke the protocol (a fresh one replaces it), no worker
    /// serves the task, or the transport failed.
    ///
    /// ```
    /// fn status(e: &offload::Error) -> u16 {
    ///     match (e.is_retryable(), e.is_timeout()) {
    ///         (true, true) => 504,
    ///         (true, false) => 503,
    ///         (false, _) => 500,
    ///     }
    /// }
    /// # let _ = status;
    /// ```
    pub fn is_retryable(&self) -> bool {
        match &self.kind {
            Kind::Cancelled(_)
            | Kind::Shutdown
            | Kind::Rejected
            | Kind::Spawn(_)
            | Kind::Timeout(_)
            | Kind::WorkerLost(_)
            | Kind::Protocol(_)
            | Kind::WorkerStart(_)
            | Kind::NoWorkers(_)
            | Kind::Transport(_) => true,
            Kind::Panic(_)
            | Kind::RemotePanic { .. }
            | Kind::Codec(_)
            | Kind::UnknownTask(_)
            | Kind::TooLarge { .. }
            | Kind::VersionMismatch(_)
            | Kind::OutOfMemory(..)
            | Kind::Init(_) => false,
        }
    }

    /// The name of the worker a lost call ran on (`offload-proc-3`, or a
    /// remote worker's name).
    pub fn worker(&self) -> Option<&str> {
        match &self.kind {
            Kind::WorkerLost(e) | Kind::OutOfMemory(e, _) => Some(&e.worker),
            _ => None,
        }
    }

    pub(crate) fn init(what: impl Into<String>) -> Self {
        Error {
            kind: Kind::Init(what.into()),
        }
    }

    /// A [`Dedicated`](crate::Dedicated) executor's initialiser failed or
    /// panicked, so it runs no call; the message says how.
    pub fn is_init(&self) -> bool {
        matches!(self.kind, Kind::Init(_))
    }

    /// A process call ran past its deadline and its worker was killed
    /// (the work really stopped); a fresh worker takes its place.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::Timeout(_))
    }

    /// The worker process died while running this call (crash, `exit`,
    /// a signal from outside, the OOM killer). See
    /// [`exit_code`](Self::exit_code) and [`signal`](Self::signal).
    pub fn is_worker_lost(&self) -> bool {
        matches!(self.kind, Kind::WorkerLost(_))
    }

    /// The task panicked inside its worker process; the worker survived.
    /// See [`panic_message`](Self::panic_message) and
    /// [`panic_location`](Self::panic_location).
    pub fn is_remote_panic(&self) -> bool {
        matches!(self.kind, Kind::RemotePanic { .. })
    }

    /// The call's input or output could not be (de)serialised.
    pub fn is_codec(&self) -> bool {
        matches!(self.kind, Kind::Codec(_))
    }

    /// The worker has no task of that name (an older or different build).
    pub fn is_unknown_task(&self) -> bool {
        matches!(self.kind, Kind::UnknownTask(_))
    }

    /// The worker broke the protocol: version or build mismatch, a corrupt
    /// or oversized frame, or no handshake in time.
    pub fn is_protocol(&self) -> bool {
        matches!(self.kind, Kind::Protocol(_))
    }

    /// Workers die at start-up, so the pool stopped starting them for a
    /// while (it retries with growing back-off).
    pub fn is_worker_start(&self) -> bool {
        matches!(self.kind, Kind::WorkerStart(_))
    }

    /// The exit code of a lost worker that exited on its own.
    pub fn exit_code(&self) -> Option<i32> {
        match &self.kind {
            Kind::WorkerLost(e) | Kind::OutOfMemory(e, _) => e.code,
            _ => None,
        }
    }

    /// The signal that killed a lost worker (9 for SIGKILL, 6 for an
    /// abort, 11 for a segfault).
    pub fn signal(&self) -> Option<i32> {
        match &self.kind {
            Kind::WorkerLost(e) | Kind::OutOfMemory(e, _) => e.signal,
            _ => None,
        }
    }

    /// Where a remote panic happened (`file:line:column`), when known.
    pub fn panic_location(&self) -> Option<&str> {
        match &self.kind {
            Kind::RemotePanic { location, .. } => location.as_deref(),
            _ => None,
        }
    }

    /// The job panicked. The worker survived; see [`panic_message`](Self::panic_message).
    pub fn is_panic(&self) -> bool {
        matches!(self.kind, Kind::Panic(_))
    }

    /// The job never ran: it was cancelled while queued (by
    /// `shutdown_now`, a shutdown deadline, or an executor that dropped it).
    pub fn is_cancelled(&self) -> bool {
        matches!(self.kind, Kind::Cancelled(_))
    }

    /// The executor was shut down before the job could be queued.
    pub fn is_shutdown(&self) -> bool {
        matches!(self.kind, Kind::Shutdown)
    }

    /// The executor's queue was full and this submission path does not wait
    /// (only [`Executor::execute`](crate::Executor::execute) called directly on a
    /// full [`ThreadPool`](crate::ThreadPool) does this; `run` waits instead).
    pub fn is_rejected(&self) -> bool {
        matches!(self.kind, Kind::Rejected)
    }

    /// No worker thread could be started (the OS refused to create one).
    pub fn is_spawn(&self) -> bool {
        matches!(self.kind, Kind::Spawn(_))
    }

    /// The panic message, when the job panicked with a string payload
    /// (`"Box<dyn Any>"` for any other payload).
    pub fn panic_message(&self) -> Option<&str> {
        match &self.kind {
            Kind::Panic(m) => Some(m),
            Kind::RemotePanic { message, .. } => Some(message),
            _ => None,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error").field("kind", &self.kind).finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Panic(m) => write!(f, "job panicked: {m}"),
            Kind::Cancelled(CancelReason::Dropped) => {
                f.write_str("job cancelled: the executor dropped it without running it")
            }
            Kind::Cancelled(CancelReason::Shutdown) => {
                f.write_str("job cancelled: the pool was shut down before it started")
            }
            Kind::Shutdown => f.write_str("executor is shut down and accepts no more jobs"),
            Kind::Rejected => f.write_str("executor queue is full; job rejected"),
            Kind::Spawn(_) => f.write_str("could not start a worker thread"),
            Kind::Timeout(d) => write!(f, "call timed out after {d:?}; its worker was killed"),
            Kind::WorkerLost(e) => {
                write!(f, "worker {} died while running the call", e.worker)?;
                match (e.code, e.signal) {
                    (Some(c), _) => write!(f, " (exit code {c})"),
                    (_, Some(s)) => write!(f, " (killed by signal {s})"),
                    _ => Ok(()),
                }
            }
            Kind::RemotePanic { message, location } => {
                write!(f, "task panicked in its worker process: {message}")?;
                match location {
                    Some(l) => write!(f, " at {l}"),
                    None => Ok(()),
                }
            }
            Kind::Codec(m) => write!(f, "could not (de)serialise: {m}"),
            Kind::UnknownTask(t) => write!(f, "the worker has no task named {t:?}"),
            Kind::Protocol(m) => write!(f, "worker protocol error: {m}"),
            Kind::WorkerStart(m) => write!(f, "workers cannot be started: {m}"),
            Kind::TooLarge { what, size, limit } => {
                let what = match what {
                    Payload::Input => "input",
                    Payload::Output => "output",
                };
                match size {
                    Some(size) => {
                        write!(f, "{what} of {size} bytes exceeds the {limit}-byte limit")
                    }
                    None => write!(f, "{what} exceeds the {limit}-byte limit"),
                }
            }
            Kind::NoWorkers(m) => write!(f, "no worker serves the call: {m}"),
            Kind::VersionMismatch(m) => write!(f, "task version mismatch: {m}"),
            Kind::OutOfMemory(e, how) => {
                write!(
                    f,
                    "worker {} ran out of memory running the call: {how}",
                    e.worker
                )
            }
            Kind::Transport(m) => write!(f, "transport failed: {m}"),
            Kind::Init(m) => write!(f, "the executor's initialiser failed: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Spawn(e) => Some(e),
            _ => None,
        }
    }
}
