//! The messages between a pool and its workers, and the handshake.
//!
//! Every message is one frame (see `wire.rs`) whose payload is postcard.
//! The worker speaks first: a hello frame that starts with a fixed magic
//! and the protocol version *outside* postcard, so that a worker of another
//! protocol version is recognised as such, not as garbage.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to the messages below.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// The first bytes of a hello frame.
pub(crate) const HELLO_MAGIC: [u8; 4] = *b"OFLD";

/// What a worker announces before it takes calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// Tells two builds of the same program apart (see [`build_id`]).
    pub(crate) build: String,
    /// The tasks the worker serves.
    pub(crate) tasks: Vec<String>,
    pub(crate) pid: u32,
}

/// Parent → worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// Run `task` on `input` (postcard of the task's input type).
    Call {
        id: u64,
        task: String,
        input: Vec<u8>,
    },
}

/// Worker → parent, after the hello.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    /// The call `id` finished: the output bytes, or why not.
    Done {
        id: u64,
        result: Result<Vec<u8>, Failure>,
    },
}

/// Why a call failed inside a worker that survived it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Failure {
    Panic {
        message: String,
        location: Option<String>,
    },
    UnknownTask(String),
    BadInput(String),
    BadOutput(String),
}

/// Encodes a hello frame payload: magic, version (LE), postcard body.
pub(crate) fn encode_hello(hello: &Hello) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&HELLO_MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    // Serialising strings and a Vec into a Vec cannot fail.
    out.extend_from_slice(&postcard::to_stdvec(hello).unwrap_or_default());
    out
}

/// Why a hello was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HelloError {
    NotAHello,
    Version(u32),
    Corrupt(String),
}

impl std::fmt::Display for HelloError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelloError::NotAHello => {
                f.write_str("the worker's first frame is not an offload hello")
            }
            HelloError::Version(v) => write!(
                f,
                "the worker speaks protocol version {v}, this pool speaks {PROTOCOL_VERSION}"
            ),
            HelloError::Corrupt(e) => write!(f, "corrupt hello: {e}"),
        }
    }
}

/// Decodes a hello frame payload.
pub(crate) fn decode_hello(frame: &[u8]) -> Result<Hello, HelloError> {
    if frame.len() < 8 || frame[..4] != HELLO_MAGIC {
        return Err(HelloError::NotAHello);
    }
    let version = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if version != PROTOCOL_VERSION {
        return Err(HelloError::Version(version));
    }
    postcard::from_bytes(&frame[8..]).map_err(|e| HelloError::Corrupt(e.to_string()))
}

/// Why a reply frame was refused (the fuzz tests' view of the reply path).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplyError {
    /// Not a postcard `FromWorker`.
    Undecodable(String),
    /// The reply of another call than the one running.
    WrongId { got: u64 },
}

/// Decodes the reply to call `id`: the task's output bytes, or why it
/// failed in a worker that survived it.
#[cfg(test)]
pub(crate) fn decode_reply(frame: &[u8], id: u64) -> Result<Result<Vec<u8>, Failure>, ReplyError> {
    match decode_any_reply(frame) {
        Ok((got, result)) if got == id => Ok(result),
        Ok((got, _)) => Err(ReplyError::WrongId { got }),
        Err(e) => Err(ReplyError::Undecodable(e)),
    }
}

/// Decodes a reply frame whatever call it answers: its id and result.
pub(crate) fn decode_any_reply(frame: &[u8]) -> Result<(u64, Result<Vec<u8>, Failure>), String> {
    match postcard::from_bytes::<FromWorker>(frame) {
        Ok(FromWorker::Done { id, result }) => Ok((id, result)),
        Err(e) => Err(e.to_string()),
    }
}

/// Identifies this build of this program: crate version, and the size and
/// modification time of the running executable. A parent compares it with
/// its re-executed workers' to catch a binary replaced on disk (a deploy)
/// between the parent's start and a worker's.
pub(crate) fn build_id() -> String {
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{}", m.len(), mtime)
        })
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("offload-{}/{}", env!("CARGO_PKG_VERSION"), exe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip_and_refusals() {
        let h = Hello {
            build: "b".into(),
            tasks: vec!["sum".into()],
            pid: 7,
        };
        assert_eq!(decode_hello(&encode_hello(&h)).unwrap(), h);
        let mut other = encode_hello(&h);
        other[4] = 99;
        assert_eq!(decode_hello(&other), Err(HelloError::Version(99)));
        assert_eq!(decode_hello(b"nope"), Err(HelloError::NotAHello));
        let mut corrupt = encode_hello(&h);
        corrupt.truncate(9);
        assert!(matches!(
            decode_hello(&corrupt),
            Err(HelloError::Corrupt(_))
        ));
    }

    #[test]
    fn random_hellos_never_panic() {
        let mut x: u32 = 12345;
        for len in 0..200 {
            let mut frame = HELLO_MAGIC.to_vec();
            frame.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
            for _ in 0..len {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                frame.push((x >> 16) as u8);
            }
            let _ = decode_hello(&frame);
        }
    }
}
