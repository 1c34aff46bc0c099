//! Reading and checking a new worker's hello.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::time::Instant;

use super::reaper::GRACE;
use super::spawn::{Launch, describe_exit, kill_and_reap, reap};
use crate::error::Error;
use crate::proc::protocol::{Hello, build_id, decode_hello};
use crate::proc::wire::{FrameError, deadline_after, read_frame};

/// Reads worker `name`'s hello within the launch's hello timeout (for the
/// whole frame: a worker that trickles bytes does not stretch it) and
/// checks it. Kills and reaps the worker on failure.
///
/// # Errors
///
/// [`Error::is_worker_start`] if it died before its hello;
/// [`Error::is_protocol`] if its hello is late, wrong, of another protocol
/// version, or (for a re-executed worker) of another build.
pub(crate) fn handshake(
    launch: &Launch,
    name: &str,
    reader: &mut BufReader<UnixStream>,
    child: &mut Child,
) -> Result<Hello, Error> {
    let deadline = deadline_after(Instant::now(), launch.hello_timeout);
    let frame = match read_frame(reader, launch.max_frame, deadline) {
        Ok(f) => f,
        Err(FrameError::TimedOut) => {
            kill_and_reap(child);
            return Err(Error::protocol(format!(
                "{name} sent no hello within {:?}",
                launch.hello_timeout
            )));
        }
        Err(FrameError::Closed | FrameError::Truncated | FrameError::Io(_)) => {
            let how = describe_exit(reap(child, GRACE));
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
                "{name} is a different build ({}) than its parent ({ours})",
                hello.build
            )));
        }
    }
    Ok(hello)
}
