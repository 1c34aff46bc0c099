//! Length-prefixed frames: `[u32 little-endian length][payload]`.
//!
//! The length is checked against the frame limit *before* anything is
//! allocated, so a peer can never make us allocate more than the limit,
//! whatever bytes it sends.

use std::io::{self, Read, Write};

/// The default largest frame: 64 MiB.
pub(crate) const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The peer closed the stream cleanly between frames.
    Closed,
    /// The stream ended in the middle of a frame.
    Truncated,
    /// The announced length exceeds the limit; nothing was allocated.
    TooLarge { len: usize, max: usize },
    /// A read timed out (the stream's read timeout, used for deadlines).
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

fn classify(e: io::Error, started: bool) -> FrameError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FrameError::TimedOut,
        io::ErrorKind::UnexpectedEof if started => FrameError::Truncated,
        io::ErrorKind::UnexpectedEof => FrameError::Closed,
        _ => FrameError::Io(e),
    }
}

/// Writes one frame. Refuses (without writing) a payload over `max`.
pub(crate) fn write_frame(w: &mut impl Write, payload: &[u8], max: usize) -> io::Result<()> {
    if payload.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "frame of {} bytes exceeds the {max}-byte limit",
                payload.len()
            ),
        ));
    }
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame longer than 4 GiB"))?;
    // One write for header and payload keeps small frames in one segment.
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one frame of at most `max` bytes.
pub(crate) fn read_frame(r: &mut impl Read, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; 4];
    // Distinguish "closed between frames" from "closed inside a frame".
    let mut got = 0;
    while got < 4 {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(classify(e, got > 0)),
        }
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).map_err(|e| classify(e, true))?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello", 100).unwrap();
        write_frame(&mut buf, b"", 100).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r, 100).unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 100).unwrap(), b"");
        assert!(matches!(read_frame(&mut r, 100), Err(FrameError::Closed)));
    }

    #[test]
    fn oversized_is_refused_before_allocating() {
        let bytes = u32::MAX.to_le_bytes();
        assert!(matches!(
            read_frame(&mut &bytes[..], 1024),
            Err(FrameError::TooLarge { len, max: 1024 }) if len == u32::MAX as usize
        ));
        assert!(write_frame(&mut Vec::new(), &[0; 11], 10).is_err());
    }

    #[test]
    fn truncated_header_and_body() {
        assert!(matches!(
            read_frame(&mut &[1u8, 0][..], 10),
            Err(FrameError::Truncated)
        ));
        let mut buf = Vec::new();
        write_frame(&mut buf, b"abcdef", 10).unwrap();
        buf.truncate(7);
        assert!(matches!(
            read_frame(&mut &buf[..], 10),
            Err(FrameError::Truncated)
        ));
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
            while let Ok(frame) = read_frame(&mut r, 512) {
                assert!(frame.len() <= 512);
            }
        }
    }
}
