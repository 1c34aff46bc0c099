//! Starting a worker process: its command line, environment, output and
//! channels; and reading how it ended.

use std::ffi::OsString;
use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};

use super::output::{Stream, Tail, WorkerOutput};
use crate::error::{Error, WorkerExit};
use crate::proc::protocol::{MAX_SETTINGS_FRAME, Settings, encode_head, running_image};
use crate::proc::wire::write_frame;
use crate::proc::worker::marker::{WORKER_ENV, value_for};
use crate::proc::worker::{CONTROL_TAG, exit_code};

/// How to start a worker.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// The program (for display); see [`same_binary`](Self::same_binary).
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    /// The worker is this very program: start it from the running image,
    /// which a deploy that replaces the file on disk does not change.
    pub(crate) same_binary: bool,
    pub(crate) hello_timeout: Duration,
    pub(crate) max_frame: usize,
    /// Environment: `None` inherits the parent's; `Some` gives exactly these.
    pub(crate) env: Option<Vec<(OsString, OsString)>>,
    pub(crate) output: WorkerOutput,
    /// Resident set above which a worker asks to be retired after a call.
    pub(crate) soft_memory: Option<u64>,
    /// `RLIMIT_DATA` of each worker.
    pub(crate) hard_memory: Option<u64>,
    /// Each worker's `oom_score_adj`.
    pub(crate) oom_score_adj: Option<i16>,
    /// The priority each worker sets on itself (`None`: inherited).
    pub(crate) sched: Option<crate::priority::Sched>,
    /// How long each side looks for the next frame before it blocks.
    pub(crate) spin: Duration,
}

/// A started worker process and the parent's ends of its channels.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) calls: UnixStream,
    pub(crate) control: UnixStream,
    /// The worker's last stderr line, kept when a hard memory limit is set.
    pub(crate) stderr_tail: Option<Arc<Tail>>,
}

/// Starts worker `name`: its stdin is the call channel, and the control
/// channel goes to it as the first byte on the call channel.
///
/// # Errors
///
/// [`Error::is_worker_start`] if it cannot be started.
pub(crate) fn spawn(launch: &Launch, name: &str) -> Result<Spawned, Error> {
    let start_err = |what: &str, e: std::io::Error| Error::worker_start(format!("{what}: {e}"));
    let (calls, calls_theirs) = UnixStream::pair().map_err(|e| start_err("socketpair", e))?;
    let (control, control_theirs) = UnixStream::pair().map_err(|e| start_err("socketpair", e))?;
    let program = if launch.same_binary {
        running_image().map_err(|e| start_err("cannot find the running executable", e))?
    } else {
        launch.program.clone()
    };
    let mut cmd = Command::new(&program);
    cmd.args(&launch.args)
        .arg0(name)
        .stdin(Stdio::from(OwnedFd::from(calls_theirs)));
    let stderr_tail = launch.hard_memory.map(|_| Arc::new(Tail::default()));
    launch.output.configure(&mut cmd, stderr_tail.is_some());
    if let Some(env) = &launch.env {
        cmd.env_clear().envs(env.iter().cloned());
    }
    cmd.env(WORKER_ENV, value_for(name));
    let spawned = cmd.spawn();
    // The command holds our copy of the worker's end of the call channel:
    // close it now, or the worker's death would never read as EOF here.
    drop(cmd);
    let mut child = spawned.map_err(|e| {
        Error::worker_start(format!("cannot start {}: {e}", launch.program.display()))
    })?;
    launch
        .output
        .forward(name, Stream::Stdout, child.stdout.take(), None);
    launch.output.forward(
        name,
        Stream::Stderr,
        child.stderr.take(),
        stderr_tail.clone(),
    );
    let settings = Settings {
        max_frame: launch.max_frame as u64,
        soft_memory: launch.soft_memory,
        hard_memory: launch.hard_memory,
        oom_score_adj: launch.oom_score_adj,
        sched: launch.sched,
        spin_us: u32::try_from(launch.spin.as_micros()).unwrap_or(u32::MAX),
    };
    let sent = pass_control(&calls, control_theirs.as_fd()).and_then(|()| {
        write_frame(
            &mut &calls,
            &encode_head(&settings),
            &[],
            MAX_SETTINGS_FRAME,
        )
    });
    if let Err(e) = sent {
        kill_and_reap(&mut child);
        return Err(start_err("cannot hand the worker its channels", e));
    }
    // Only the worker holds its end of the control channel now: when it
    // dies, our end reads EOF, and when we die, its end does.
    drop(control_theirs);
    Ok(Spawned {
        child,
        calls,
        control,
        stderr_tail,
    })
}

fn pass_control(calls: &UnixStream, control: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    let fds = [control];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    if !ancillary.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("no room for the descriptor"));
    }
    let sent = sendmsg(
        calls,
        &[IoSlice::new(&[CONTROL_TAG])],
        &mut ancillary,
        SendFlags::empty(),
    )?;
    if sent != 1 {
        return Err(std::io::Error::other("short write"));
    }
    Ok(())
}

/// Waits for `child` to exit: up to `grace` for one that is on its way
/// out, then it is killed. Never leaves a zombie.
pub(crate) fn reap(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) => return kill_and_reap(child),
            Err(_) => return None,
        }
    }
}

/// Kills `child` and waits for it.
pub(crate) fn kill_and_reap(child: &mut Child) -> Option<ExitStatus> {
    let _ = child.kill();
    child.wait().ok()
}

/// How worker `name` ended, as plain data.
pub(crate) fn worker_exit(name: &str, status: Option<ExitStatus>) -> WorkerExit {
    WorkerExit {
        worker: name.to_owned(),
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
    }
}

/// Says how a worker that died before its hello ended, naming the known
/// reasons.
pub(crate) fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) if s.code() == Some(exit_code::INIT_PANICKED) => "its init hook panicked".into(),
        Some(s) if s.code() == Some(exit_code::NO_CHANNEL) => {
            "it found no channel from its parent: does its main call \
             offload::proc::run_worker_if_child first?"
                .into()
        }
        Some(s) if s.code() == Some(exit_code::NO_THREAD) => {
            "it could not start its threads (out of memory or a thread limit?)".into()
        }
        Some(s) if s.code() == Some(0) => "it exited with code 0 without saying hello: \
             does its main call offload::proc::run_worker_if_child first, and is it a \
             direct child of the pool (a wrapper script must exec it)?"
            .into(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(sig)) => format!("killed by signal {sig}"),
            _ => "unknown status".into(),
        },
        None => "status unknown".into(),
    }
}
