//! The worker's two channels to its parent, and getting them off fd 0.
//!
//! The parent starts a worker with one end of a socketpair as its stdin
//! (the *call channel*) and, as the first byte on it, passes the worker's
//! end of a second socketpair (the *control channel*) with `SCM_RIGHTS`.
//! The worker then keeps private, close-on-exec copies of both and puts
//! `/dev/null` on fd 0. A task that starts a subprocess (stdin is
//! inherited by default) therefore hands it nothing of ours: the
//! subprocess cannot read call bytes, and the worker's death is seen by
//! its parent at once, not when the subprocess exits.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::io::{FdFlags, fcntl_setfd};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};

/// The byte that carries the control channel.
pub(crate) const CONTROL_TAG: u8 = b'C';

/// A worker's channels to its parent.
pub(crate) struct Channels {
    /// Calls in, replies out.
    pub(crate) calls: UnixStream,
    /// Cancellations in; its end-of-file means the parent is gone.
    pub(crate) control: UnixStream,
}

/// Takes the channels from fd 0 and replaces fd 0 with `/dev/null`.
pub(crate) fn take() -> io::Result<Channels> {
    // A close-on-exec copy of fd 0 (std duplicates with F_DUPFD_CLOEXEC).
    let calls = UnixStream::from(io::stdin().as_fd().try_clone_to_owned()?);
    let control = receive_control(&calls)?;
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    Ok(Channels { calls, control })
}

/// Receives the control channel, passed as the first byte of the call
/// channel.
fn receive_control(calls: &UnixStream) -> io::Result<UnixStream> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        calls,
        &mut [IoSliceMut::new(&mut byte)],
        &mut ancillary,
        RecvFlags::empty(),
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got.bytes != 1 || byte[0] != CONTROL_TAG || fds.len() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the parent did not pass a control channel",
        ));
    }
    let fd = fds.pop().expect("one descriptor was received");
    // Before any thread of ours exists: nothing can fork in between.
    fcntl_setfd(&fd, FdFlags::CLOEXEC)?;
    Ok(UnixStream::from(fd))
}
