//! The worker's two watchers, started before the registry's `init`:
//!
//! - the *control* thread reads the control channel: a cancellation goes
//!   to [`Running::cancel`]; end-of-file means the parent is gone (it
//!   died, however it died: the kernel closed its end), and the worker
//!   exits at once, busy or not;
//! - the *deadline* thread stops the running call when its timeout passes.
//!
//! Stopping a call writes `Stopped { id }` on the call channel and then
//! kills the worker with SIGKILL, from inside the lock the executor needs
//! to finish the call: nothing after that call can start or be answered,
//! and the parent learns exactly which call was stopped, even when it has
//! not yet read the replies before it.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use super::running::Running;
use crate::proc::protocol::{Control, ReplyHead, Stop, encode_head};
use crate::proc::wire::{FrameError, read_frame, write_frame};
use crate::sync::lock;

/// The most a control message may take.
const MAX_CONTROL_FRAME: usize = 1024;

/// Starts the control and deadline threads of worker `name`.
pub(crate) fn start(
    name: &str,
    control: UnixStream,
    running: Arc<Running>,
    replies: Arc<Mutex<UnixStream>>,
    max_frame: usize,
) -> std::io::Result<()> {
    let stop = {
        let replies = replies.clone();
        move |id: u64, why: Stop| stop(&replies, id, why, max_frame)
    };
    let watched = running.clone();
    let stop_late = stop.clone();
    std::thread::Builder::new()
        .name(format!("{name}-deadline"))
        .spawn(move || watched.watch_deadlines(stop_late))?;
    std::thread::Builder::new()
        .name(format!("{name}-control"))
        .spawn(move || {
            let mut control = BufReader::new(control);
            loop {
                match read_frame(&mut control, MAX_CONTROL_FRAME, None) {
                    Ok(frame) => match postcard::from_bytes::<Control>(&frame) {
                        Ok(Control::Cancel { id }) => running.cancel(id, &stop),
                        // A newer parent's message we do not know: ignore.
                        Err(_) => {}
                    },
                    Err(FrameError::Closed) if !running.is_busy() => std::process::exit(0),
                    // The parent is gone (or the channel broke) while a
                    // call runs: nobody will read its answer. Exiting
                    // normally would run atexit handlers next to a thread
                    // inside user code; SIGKILL cannot deadlock.
                    Err(_) => kill_self(),
                }
            }
        })?;
    Ok(())
}

/// Tells the parent that call `id` is stopped, and dies.
fn stop(replies: &Mutex<UnixStream>, id: u64, why: Stop, max_frame: usize) {
    let head = encode_head(&ReplyHead::Stopped { id, why });
    // The executor is inside call `id` (it never writes while running a
    // call), so this lock is free or about to be.
    let mut out = lock(replies);
    let _ = write_frame(&mut *out, &head, &[], max_frame);
    let _ = out.flush();
    kill_self();
}

/// Ends this process now, without running any exit handler.
fn kill_self() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    // Not reached: SIGKILL cannot be caught. Should the kill fail anyway,
    // abort is the next most abrupt way out.
    std::process::abort()
}
