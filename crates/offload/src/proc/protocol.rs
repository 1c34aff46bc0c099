//! The messages between a pool and its workers, and the handshake.
//!
//! Every message is one frame (see `wire.rs`). The worker speaks first: a
//! hello frame that starts with a fixed magic and the protocol version
//! *outside* postcard, so that a worker of another protocol version is
//! recognised as such, not as garbage. After it:
//!
//! - call channel, parent → worker: `postcard(CallHead)` then the task's
//!   encoded input up to the end of the frame;
//! - call channel, worker → parent: `postcard(ReplyHead)`, then for a
//!   successful call the task's encoded output up to the end of the frame;
//! - control channel, parent → worker: `postcard(Control)`.
//!
//! Inputs and outputs ride after a small header instead of inside it, so
//! they are written from and decoded in the buffers they already live in:
//! never copied into a message.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::codec::Input;
use crate::error::Error;

/// Bumped on any incompatible change to the messages below.
pub(crate) const PROTOCOL_VERSION: u32 = 2;

/// The first bytes of a hello frame.
pub(crate) const HELLO_MAGIC: [u8; 4] = *b"OFLD";

/// What the parent tells a new worker before anything else (after the
/// control channel), so that no setting travels in the environment that
/// tasks and their subprocesses inherit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Settings {
    /// The largest frame either side may send.
    pub(crate) max_frame: u64,
    /// Above this resident set after a call, the worker asks to be retired.
    pub(crate) soft_memory: Option<u64>,
    /// `RLIMIT_DATA` the worker sets on itself before `init`.
    pub(crate) hard_memory: Option<u64>,
    /// Written to the worker's `/proc/self/oom_score_adj`.
    pub(crate) oom_score_adj: Option<i16>,
    /// The priority the worker sets on itself before `init`.
    pub(crate) sched: Option<crate::priority::Sched>,
    /// How long the worker looks for its next call before it blocks, µs.
    pub(crate) spin_us: u32,
}

/// The largest settings frame.
pub(crate) const MAX_SETTINGS_FRAME: usize = 256;

/// What a worker announces before it takes calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// Tells two builds of the same program apart (see [`build_id`]).
    pub(crate) build: String,
    /// The tasks the worker serves.
    pub(crate) tasks: Vec<TaskInfo>,
    pub(crate) pid: u32,
}

/// A task a worker serves, and the fingerprint of its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskInfo {
    pub(crate) name: String,
    pub(crate) fingerprint: u64,
}

impl Hello {
    /// The fingerprint under which the worker serves `task`, if it does.
    pub(crate) fn fingerprint(&self, task: &str) -> Option<u64> {
        self.tasks
            .iter()
            .find(|t| t.name == task)
            .map(|t| t.fingerprint)
    }
}

/// The header of a call; the input follows it in the frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CallHead {
    /// Increasing per worker, in the order the calls were written.
    pub(crate) id: u64,
    pub(crate) task: String,
    /// The call's hard timeout, counted by the worker from when it starts
    /// the call; the worker stops itself when it passes.
    pub(crate) timeout: Option<Duration>,
    /// The id of the caller's `tracing` span, if it had one: the worker
    /// runs the call in a span that records it.
    pub(crate) span: Option<u64>,
}

/// A message on the control channel, read by the worker even while a
/// call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Control {
    /// The caller gave up on call `id`: stop it if it is running, skip it
    /// if it has not started, ignore it if it has finished.
    Cancel { id: u64 },
}

/// The header of a worker's message; a successful call's output follows.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ReplyHead {
    /// Call `id` finished; `Ok` means its output follows the header.
    /// `retire`: the worker is over its memory limit and asks to take no
    /// more calls (it answers those already sent).
    Done {
        id: u64,
        result: Result<(), Error>,
        retire: bool,
    },
    /// The worker was running call `id` and stops there, killing itself
    /// (no reply of any later call can follow).
    Stopped { id: u64, why: Stop },
}

/// Why a worker stopped itself in the middle of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Stop {
    /// The call ran past its timeout.
    Timeout,
    /// The caller gave up on the call.
    Cancelled,
}

/// A decoded worker message.
#[derive(Debug)]
pub(crate) enum Reply {
    Done {
        id: u64,
        result: Result<Body, Error>,
        retire: bool,
    },
    Stopped {
        id: u64,
        why: Stop,
    },
}

impl Reply {
    /// The call the message is about.
    pub(crate) fn id(&self) -> u64 {
        match self {
            Reply::Done { id, .. } | Reply::Stopped { id, .. } => *id,
        }
    }
}

/// A task's encoded output: the frame it arrived in and where it starts,
/// so it is decoded in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Body {
    frame: Vec<u8>,
    at: usize,
}

impl Body {
    /// The encoded output.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.frame[self.at..]
    }

    /// The encoded output, owned (moved to the front of its buffer, not
    /// copied into another).
    pub(crate) fn into_vec(mut self) -> Vec<u8> {
        if self.at > 0 {
            self.frame.drain(..self.at);
        }
        self.frame
    }

    /// The encoded output, to decode where it lies.
    pub(crate) fn into_input(self) -> Input<'static> {
        Input::Owned {
            frame: self.frame,
            at: self.at,
        }
    }
}

/// Encodes a header (a small postcard message). Headers hold ids, names
/// and error messages, which always serialise.
pub(crate) fn encode_head<T: Serialize>(head: &T) -> Vec<u8> {
    postcard::to_stdvec(head).unwrap_or_default()
}

/// Decodes a call frame: its header, and its input bytes.
pub(crate) fn decode_call(frame: &[u8]) -> Result<(CallHead, &[u8]), String> {
    postcard::take_from_bytes::<CallHead>(frame).map_err(|e| e.to_string())
}

/// Decodes a worker's message. The one decoder of replies, fuzzed in
/// `fuzz.rs`.
pub(crate) fn decode_reply(frame: Vec<u8>) -> Result<Reply, String> {
    let (head, rest) = postcard::take_from_bytes::<ReplyHead>(&frame).map_err(|e| e.to_string())?;
    let at = frame.len() - rest.len();
    Ok(match head {
        ReplyHead::Done {
            id,
            result: Ok(()),
            retire,
        } => Reply::Done {
            id,
            result: Ok(Body { frame, at }),
            retire,
        },
        ReplyHead::Done {
            id,
            result: Err(e),
            retire,
        } => {
            if at != frame.len() {
                return Err(format!("the failed call {id} carries an output"));
            }
            Reply::Done {
                id,
                result: Err(e),
                retire,
            }
        }
        ReplyHead::Stopped { id, why } => {
            if at != frame.len() {
                return Err(format!("the stop of call {id} carries an output"));
            }
            Reply::Stopped { id, why }
        }
    })
}

/// Encodes a hello frame payload: magic, version (LE), postcard body.
pub(crate) fn encode_hello(hello: &Hello) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&HELLO_MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.extend_from_slice(&encode_head(hello));
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

/// Identifies this build of this program: crate version, and the size,
/// modification time and inode of the *running* executable image. A parent
/// compares it with its re-executed workers' to catch a worker that is not
/// the same program.
///
/// On Linux the image is read through `/proc/self/exe`, which names the
/// file the process was started from even after a deploy replaced or
/// deleted it; workers are started from that same image, so a deploy
/// cannot break a live pool.
pub(crate) fn build_id() -> String {
    use std::os::unix::fs::MetadataExt;
    let exe = running_image()
        .and_then(std::fs::metadata)
        .map(|m| {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{}:{}:{}", m.dev(), m.ino(), m.len(), mtime)
        })
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("offload-{}/{}", env!("CARGO_PKG_VERSION"), exe)
}

/// The path through which the running executable's image can be opened or
/// executed, whatever happened to its file since.
pub(crate) fn running_image() -> std::io::Result<std::path::PathBuf> {
    if cfg!(target_os = "linux") && std::path::Path::new("/proc/self/exe").exists() {
        Ok("/proc/self/exe".into())
    } else {
        std::env::current_exe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip_and_refusals() {
        let h = Hello {
            build: "b".into(),
            tasks: vec![TaskInfo {
                name: "sum".into(),
                fingerprint: 7,
            }],
            pid: 7,
        };
        assert_eq!(decode_hello(&encode_hello(&h)).unwrap(), h);
        assert_eq!(h.fingerprint("sum"), Some(7));
        assert_eq!(h.fingerprint("other"), None);
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
    fn a_reply_body_is_decoded_where_it_arrived() {
        let mut frame = encode_head(&ReplyHead::Done {
            id: 3,
            result: Ok(()),
            retire: true,
        });
        frame.extend_from_slice(b"output");
        match decode_reply(frame).unwrap() {
            Reply::Done {
                id: 3,
                result: Ok(body),
                retire: true,
            } => {
                assert_eq!(body.bytes(), b"output");
                assert_eq!(body.into_vec(), b"output");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failures_and_stops_carry_no_body() {
        let mut frame = encode_head(&ReplyHead::Stopped {
            id: 1,
            why: Stop::Timeout,
        });
        assert!(matches!(
            decode_reply(frame.clone()),
            Ok(Reply::Stopped {
                id: 1,
                why: Stop::Timeout
            })
        ));
        frame.push(0);
        assert!(decode_reply(frame).is_err());
    }

    #[test]
    fn the_build_id_names_the_running_image() {
        let id = build_id();
        assert!(!id.ends_with("/unknown"), "{id}");
        assert_eq!(id, build_id());
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
