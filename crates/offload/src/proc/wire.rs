//! Length-prefixed frames: `[u32 little-endian length][payload]`.
//!
//! The length is checked against the frame limit *before* anything is
//! allocated, so a peer can never make us allocate more than the limit,
//! whatever bytes it sends. This file is the one place the limit is
//! checked, on both sides of the channel.
//!
//! A frame is written as a small header and a body without joining them
//! (one vectored write), so a large encoded input or output is never
//! copied into a second buffer on its way to the socket. A frame is read
//! into one buffer of exactly its length, which is then decoded in place.

use std::io::{self, IoSlice, Read, Write};
use std::time::{Duration, Instant};

/// The default largest frame: 64 MiB.
pub(crate) const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// Bytes of the length prefix.
const LEN_BYTES: usize = 4;

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The peer closed the stream cleanly between frames.
    Closed,
    /// The stream ended in the middle of a frame.
    Truncated,
    /// The announced length exceeds the limit; nothing was allocated.
    TooLarge { len: usize, max: usize },
    /// The frame's deadline passed before all of it arrived.
    TimedOut,
    /// Any other I/O error.
    Io(io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => f.write_str("stream closed"),
            FrameError::Truncated => f.write_str("stream ended inside a frame"),
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the {max}-byte limit")
            }
            FrameError::TimedOut => f.write_str("timed out"),
            FrameError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

/// A stream whose reads can be bounded by a deadline (a socket's read
/// timeout). Implemented for the buffered socket the pool reads, and for
/// plain readers in tests and fuzzing (which never time out).
pub(crate) trait Deadline {
    /// Bounds the next reads by `timeout` (`None`: wait forever).
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
}

impl Deadline for &[u8] {
    fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

impl Deadline for std::io::BufReader<std::os::unix::net::UnixStream> {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.get_ref().set_read_timeout(timeout)
    }
}

/// Writes one frame made of `head` followed by `body`, in one vectored
/// write where the kernel takes it all. Refuses (without writing) a frame
/// over `max`.
pub(crate) fn write_frame(
    w: &mut impl Write,
    head: &[u8],
    body: &[u8],
    max: usize,
) -> io::Result<()> {
    write_frame_parts(w, head, &[body], max)
}

/// [`write_frame`] with a body in several parts (a length prefix and the
/// bytes it announces), none of them copied.
pub(crate) fn write_frame_parts(
    w: &mut impl Write,
    head: &[u8],
    body: &[&[u8]],
    max: usize,
) -> io::Result<()> {
    let prefix = length_prefix(head, body, max)?;
    let mut parts = Vec::with_capacity(2 + body.len());
    parts.push(IoSlice::new(&prefix));
    parts.push(IoSlice::new(head));
    parts.extend(body.iter().map(|b| IoSlice::new(b)));
    write_all_vectored(w, &mut parts)?;
    w.flush()
}

/// The length prefix of a frame made of `head` and `body`; refuses a frame
/// over `max`.
fn length_prefix(head: &[u8], body: &[&[u8]], max: usize) -> io::Result<[u8; LEN_BYTES]> {
    let len = head.len() + body.iter().map(|b| b.len()).sum::<usize>();
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {len} bytes exceeds the {max}-byte limit"),
        ));
    }
    let len = u32::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame longer than 4 GiB"))?;
    Ok(len.to_le_bytes())
}

/// Writes every byte of `parts` (blocking).
fn write_all_vectored(w: &mut impl Write, mut parts: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !parts.is_empty() {
        match w.write_vectored(parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes one frame like [`write_frame_parts`], but only if the socket
/// takes its first bytes at once: `Ok(false)` means nothing was written
/// (the socket's buffer is full) and the caller should write it some other
/// way. For a caller on an async runtime's thread, which must not block.
///
/// Callers keep frames small and few in flight (see `child/direct.rs`), so
/// the kernel takes the frame whole in one `sendmsg`; should it take only
/// part of it, the rest is written blocking, since a frame cut in two
/// would leave the stream out of step.
pub(crate) fn try_write_frame_parts(
    socket: &std::os::unix::net::UnixStream,
    head: &[u8],
    body: &[&[u8]],
    max: usize,
) -> io::Result<bool> {
    let prefix = length_prefix(head, body, max)?;
    let mut parts = Vec::with_capacity(2 + body.len());
    parts.push(IoSlice::new(&prefix));
    parts.push(IoSlice::new(head));
    parts.extend(body.iter().map(|b| IoSlice::new(b)));
    let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
    let sent = loop {
        let mut no_fds = rustix::net::SendAncillaryBuffer::default();
        match rustix::net::sendmsg(socket, &parts, &mut no_fds, flags) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    };
    let mut rest = &mut parts[..];
    IoSlice::advance_slices(&mut rest, sent);
    write_all_vectored(&mut &*socket, rest)?;
    Ok(true)
}

/// Reads one frame of at most `max` bytes, all of it before `deadline`
/// (`None`: no deadline). The deadline holds for the whole frame, so a
/// peer that trickles bytes cannot stretch it.
pub(crate) fn read_frame<R: Read + Deadline>(
    r: &mut R,
    max: usize,
    deadline: Option<Instant>,
) -> Result<Vec<u8>, FrameError> {
    let read = read_bounded(r, max, deadline);
    if deadline.is_some() {
        // Leave the stream as found: later reads without a deadline wait.
        let _ = r.set_read_timeout(None);
    }
    read
}

fn read_bounded<R: Read + Deadline>(
    r: &mut R,
    max: usize,
    deadline: Option<Instant>,
) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; LEN_BYTES];
    // Tell "closed between frames" from "closed inside a frame".
    if fill(r, &mut header, deadline, false)? == 0 {
        return Err(FrameError::Closed);
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut payload = vec![0u8; len];
    fill(r, &mut payload, deadline, true)?;
    Ok(payload)
}

/// Fills `buf` completely, or reports why not. Returns 0 only when the
/// stream was closed before the first byte and `started` is false.
fn fill<R: Read + Deadline>(
    r: &mut R,
    buf: &mut [u8],
    deadline: Option<Instant>,
    started: bool,
) -> Result<usize, FrameError> {
    let mut got = 0;
    while got < buf.len() {
        if let Some(at) = deadline {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(FrameError::TimedOut);
            }
            r.set_read_timeout(Some(left)).map_err(FrameError::Io)?;
        }
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 && !started => return Ok(0),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(FrameError::TimedOut);
            }
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(got)
}

/// How long a reader looks for the next frame before it blocks, by
/// default: a peer that answers within this (a tiny task, the next of a
/// stream of calls) is read without a sleep and a wake-up on either side.
/// [`ProcessPoolBuilder::spin`](crate::proc::ProcessPoolBuilder::spin)
/// sets it per pool.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

/// The longest look a pool may ask for.
pub(crate) const MAX_SPIN: Duration = Duration::from_millis(10);

/// Waits up to `spin` for `r` to have bytes to read, looking without
/// blocking (a buffered byte, or a `MSG_PEEK | MSG_DONTWAIT` on the socket)
/// and yielding the CPU between looks. Returns whether bytes are there;
/// either way the caller then reads normally (blocking). A zero `spin`
/// looks only at the buffer.
pub(crate) fn spin_for_bytes(
    r: &std::io::BufReader<std::os::unix::net::UnixStream>,
    spin: Duration,
) -> bool {
    if !r.buffer().is_empty() {
        return true;
    }
    if spin.is_zero() {
        return false;
    }
    let started = Instant::now();
    let mut byte = [0u8; 1];
    loop {
        match rustix::net::recv(
            r.get_ref(),
            &mut byte,
            rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
        ) {
            // Bytes, or the end of the stream: either way a read returns now.
            Ok(_) => return true,
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return true,
        }
        if started.elapsed() >= spin {
            return false;
        }
        std::thread::yield_now();
    }
}

/// The deadline `timeout` after `from`, or none when it lies beyond what
/// an `Instant` can hold (`Duration::MAX` means "never").
pub(crate) fn deadline_after(from: Instant, timeout: Duration) -> Option<Instant> {
    from.checked_add(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        write_frame(&mut buf, payload, &[], 1 << 20).unwrap();
        buf
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hel", b"lo", 100).unwrap();
        write_frame(&mut buf, b"", b"", 100).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r, 100, None).unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 100, None).unwrap(), b"");
        assert!(matches!(
            read_frame(&mut r, 100, None),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn oversized_is_refused_before_allocating() {
        let bytes = u32::MAX.to_le_bytes();
        assert!(matches!(
            read_frame(&mut &bytes[..], 1024, None),
            Err(FrameError::TooLarge { len, max: 1024 }) if len == u32::MAX as usize
        ));
        assert!(write_frame(&mut Vec::new(), &[0; 6], &[0; 5], 10).is_err());
    }

    #[test]
    fn truncated_header_and_body() {
        assert!(matches!(
            read_frame(&mut &[1u8, 0][..], 10, None),
            Err(FrameError::Truncated)
        ));
        let mut buf = frame(b"abcdef");
        buf.truncate(7);
        assert!(matches!(
            read_frame(&mut &buf[..], 10, None),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn a_passed_deadline_times_out_before_reading() {
        let buf = frame(b"abc");
        let past = Instant::now() - Duration::from_millis(1);
        assert!(matches!(
            read_frame(&mut &buf[..], 10, Some(past)),
            Err(FrameError::TimedOut)
        ));
    }

    #[test]
    fn a_trickling_peer_cannot_stretch_the_deadline() {
        use std::os::unix::net::UnixStream;
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            // A 100-byte frame, one byte every 20 ms: 2 s in all.
            let _ = tx.write_all(&100u32.to_le_bytes());
            for _ in 0..100 {
                if tx.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let mut rx = std::io::BufReader::new(rx);
        let started = Instant::now();
        let deadline = Instant::now() + Duration::from_millis(200);
        let read = read_frame(&mut rx, 1000, Some(deadline));
        assert!(matches!(read, Err(FrameError::TimedOut)), "{read:?}");
        // Every read got a fresh timeout, yet the frame's deadline held.
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(rx);
        writer.join().unwrap();
    }

    #[test]
    fn deadlines_saturate() {
        assert_eq!(deadline_after(Instant::now(), Duration::MAX), None);
        assert!(deadline_after(Instant::now(), Duration::from_secs(1)).is_some());
    }

    #[test]
    fn random_bytes_never_panic_or_overallocate() {
        // A small deterministic fuzz: xorshift bytes, every prefix.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut data = Vec::new();
        for _ in 0..4096 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.push(x as u8);
        }
        for start in 0..256 {
            let mut r = &data[start..];
            while let Ok(frame) = read_frame(&mut r, 512, None) {
                assert!(frame.len() <= 512);
            }
        }
    }
}
