//! Property-based fuzzing of everything a worker's bytes reach in the
//! parent: the frame decoder (`wire::read_frame`), the handshake
//! (`protocol::decode_hello`) and the reply decoder
//! (`protocol::decode_reply`, the one production uses), plus the worker's
//! own call decoding (`protocol::decode_call`) and dispatch.
//!
//! cargo-fuzz needs a nightly compiler; proptest runs on stable, inside
//! `cargo test`. Malformed, truncated, oversized and random input must give
//! a typed error, never a panic, and never make the reader allocate more
//! than the frame limit: every read goes through [`Probe`], which records
//! the largest buffer the decoder asks to fill (the decoder allocates a
//! frame's buffer in one piece, then fills it, so that is its allocation).
//!
//! Each property runs 1000 cases by default (a few seconds in all). For a
//! long run: `OFFLOAD_FUZZ_CASES=1000000 cargo test --release -p offload
//! fuzz -- --nocapture` (each property prints its case count and time).

use std::io::{self, Read};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::protocol::{
    CallHead, HELLO_MAGIC, Hello, HelloError, PROTOCOL_VERSION, Reply, ReplyHead, Stop, TaskInfo,
    decode_call, decode_hello, decode_reply, encode_head, encode_hello,
};
use super::task::{Registry, Task};
use super::wire::{Deadline, FrameError, read_frame, write_frame};
use crate::error::Error;

/// Cases per property: `OFFLOAD_FUZZ_CASES`, or 1000.
fn cases() -> u32 {
    std::env::var("OFFLOAD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Runs one property for [`cases`] cases and prints how long it took.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases: cases(),
        // No regression files in the source tree; a failure prints its
        // minimal input instead.
        failure_persistence: None,
        ..Config::default()
    };
    let started = Instant::now();
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{name}: {e}");
    }
    eprintln!(
        "fuzz {name}: {} cases in {:.2?}",
        cases(),
        started.elapsed()
    );
}

/// A reader over bytes that hands them out in chunks of at most `chunk`,
/// can fail with `Interrupted` before every other read, and records the
/// largest buffer it was asked to fill and the total bytes delivered.
struct Probe<'a> {
    data: &'a [u8],
    chunk: usize,
    interrupt: bool,
    flip: bool,
    largest_request: usize,
    delivered: usize,
}

impl<'a> Probe<'a> {
    fn new(data: &'a [u8], chunk: usize, interrupt: bool) -> Self {
        Probe {
            data,
            chunk: chunk.max(1),
            interrupt,
            flip: false,
            largest_request: 0,
            delivered: 0,
        }
    }
}

impl Deadline for Probe<'_> {
    fn set_read_timeout(&mut self, _: Option<std::time::Duration>) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Probe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.largest_request = self.largest_request.max(buf.len());
        if self.interrupt {
            self.flip = !self.flip;
            if self.flip {
                return Err(io::ErrorKind::Interrupted.into());
            }
        }
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.delivered += n;
        Ok(n)
    }
}

/// Reads frames until the stream gives out; checks every frame and the
/// allocation bound. Returns the frames and the final error.
fn read_all(
    probe: &mut Probe<'_>,
    max: usize,
) -> Result<(Vec<Vec<u8>>, FrameError), TestCaseError> {
    let mut frames = Vec::new();
    loop {
        match read_frame(probe, max, None) {
            Ok(frame) => {
                prop_assert!(frame.len() <= max);
                frames.push(frame);
            }
            Err(e) => {
                prop_assert!(
                    matches!(
                        e,
                        FrameError::Closed | FrameError::Truncated | FrameError::TooLarge { .. }
                    ),
                    "a byte slice gave {e}"
                );
                // Never asked to fill more than a header or one frame.
                prop_assert!(probe.largest_request <= max.max(4));
                return Ok((frames, e));
            }
        }
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

#[test]
fn frames_from_random_bytes() {
    let strategy = (
        prop::collection::vec(any::<u8>(), 0..2048),
        0usize..1024,
        1usize..64,
        any::<bool>(),
    );
    fuzz(
        "frames_from_random_bytes",
        strategy,
        |(data, max, chunk, interrupt)| {
            read_all(&mut Probe::new(&data, chunk, interrupt), max).map(|_| ())
        },
    );
}

#[test]
fn frames_with_any_announced_length() {
    // Lengths near the limit and far over it (up to 4 GiB), bodies shorter
    // than, equal to or longer than announced.
    let strategy = (
        prop_oneof![0u32..2048, any::<u32>()],
        prop::collection::vec(any::<u8>(), 0..2048),
        0usize..1024,
        1usize..64,
    );
    fuzz(
        "frames_with_any_announced_length",
        strategy,
        |(len, body, max, chunk)| {
            let mut data = len.to_le_bytes().to_vec();
            data.extend_from_slice(&body);
            let mut probe = Probe::new(&data, chunk, false);
            let result = read_frame(&mut probe, max, None);
            let len = len as usize;
            if len > max {
                let refused = matches!(result, Err(FrameError::TooLarge { len: l, max: m }) if l == len && m == max);
                prop_assert!(refused, "{:?}", result);
                // Refused on the header alone: nothing else read or allocated.
                prop_assert_eq!(probe.delivered, 4);
                prop_assert!(probe.largest_request <= 4);
            } else if body.len() < len {
                prop_assert!(matches!(result, Err(FrameError::Truncated)));
                prop_assert!(probe.largest_request <= max.max(4));
            } else {
                prop_assert_eq!(result.ok(), Some(body[..len].to_vec()));
                prop_assert_eq!(probe.delivered, 4 + len);
            }
            Ok(())
        },
    );
}

#[test]
fn frames_round_trip_and_truncate() {
    let strategy = (
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
        1usize..64,
        any::<bool>(),
        any::<prop::sample::Index>(),
    );
    fuzz(
        "frames_round_trip_and_truncate",
        strategy,
        |(payloads, chunk, interrupt, cut)| {
            let max = 300;
            let mut data = Vec::new();
            for p in &payloads {
                write_frame(&mut data, p, &[], max)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            let (frames, end) = read_all(&mut Probe::new(&data, chunk, interrupt), max)?;
            prop_assert_eq!(&frames, &payloads);
            prop_assert!(matches!(end, FrameError::Closed));
            // Cut anywhere: the complete frames before the cut, then
            // Closed (cut on a boundary) or Truncated.
            if !data.is_empty() {
                let at = cut.index(data.len());
                let (frames, end) = read_all(&mut Probe::new(&data[..at], chunk, interrupt), max)?;
                prop_assert!(frames.len() <= payloads.len());
                prop_assert_eq!(&frames[..], &payloads[..frames.len()]);
                let boundary: usize = payloads[..frames.len()].iter().map(|p| 4 + p.len()).sum();
                if boundary == at {
                    prop_assert!(matches!(end, FrameError::Closed));
                } else {
                    prop_assert!(matches!(end, FrameError::Truncated));
                }
            }
            // A payload over the limit is refused by the writer.
            prop_assert!(write_frame(&mut Vec::new(), &[0; 300], &[0], max).is_err());
            Ok(())
        },
    );
}

#[test]
fn hellos_from_random_bytes() {
    let strategy = (any::<bool>(), prop::collection::vec(any::<u8>(), 0..512));
    fuzz("hellos_from_random_bytes", strategy, |(prefixed, body)| {
        let mut data = Vec::new();
        if prefixed {
            data.extend_from_slice(&HELLO_MAGIC);
            data.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        }
        data.extend_from_slice(&body);
        match decode_hello(&data) {
            Ok(_) => prop_assert!(data.starts_with(&HELLO_MAGIC) && data.len() >= 8),
            Err(HelloError::NotAHello) => {
                prop_assert!(data.len() < 8 || !data.starts_with(&HELLO_MAGIC));
            }
            Err(HelloError::Version(v)) => prop_assert_ne!(v, PROTOCOL_VERSION),
            Err(HelloError::Corrupt(_)) => prop_assert!(data.len() >= 8),
        }
        Ok(())
    });
}

#[test]
fn hellos_round_trip_truncated_and_mutated() {
    let strategy = (
        ".{0,40}",
        prop::collection::vec("[a-z_]{0,12}", 0..6),
        any::<u32>(),
        any::<prop::sample::Index>(),
        any::<u8>(),
    );
    fuzz(
        "hellos_round_trip_truncated_and_mutated",
        strategy,
        |(build, names, pid, at, byte)| {
            let tasks = names
                .into_iter()
                .enumerate()
                .map(|(i, name)| TaskInfo {
                    name,
                    fingerprint: i as u64 * 0x9E37_79B9,
                })
                .collect();
            let hello = Hello { build, tasks, pid };
            let bytes = encode_hello(&hello);
            prop_assert_eq!(decode_hello(&bytes), Ok(hello.clone()));
            // Every strict prefix is refused.
            let cut = at.index(bytes.len());
            prop_assert!(decode_hello(&bytes[..cut]).is_err());
            // A changed byte: a typed answer either way, never a panic.
            let mut mutated = bytes.clone();
            let i = at.index(mutated.len());
            mutated[i] = byte;
            let _ = decode_hello(&mutated);
            // The whole path: in a frame, through the frame decoder.
            let stream = [frame(&bytes), frame(&mutated)].concat();
            let mut probe = Probe::new(&stream, 7, true);
            prop_assert_eq!(read_frame(&mut probe, 1024, None).ok(), Some(bytes));
            let _ = read_frame(&mut probe, 1024, None).map(|f| decode_hello(&f));
            Ok(())
        },
    );
}

fn error() -> impl Strategy<Value = Error> {
    prop_oneof![
        (".{0,20}", proptest::option::of(".{0,20}"))
            .prop_map(|(message, location)| Error::remote_panic(message, location)),
        ".{0,20}".prop_map(Error::unknown_task),
        ".{0,20}".prop_map(Error::codec),
        ".{0,20}".prop_map(Error::version_mismatch),
        any::<u64>().prop_map(|limit| Error::too_large(crate::error::Payload::Output, None, limit)),
    ]
}

/// Encodes a worker's reply as the worker does: header, then the output.
fn reply_bytes(id: u64, result: &Result<Vec<u8>, Error>) -> Vec<u8> {
    let head = match result {
        Ok(_) => ReplyHead::Done {
            id,
            result: Ok(()),
            retire: id % 2 == 0,
        },
        Err(e) => ReplyHead::Done {
            id,
            result: Err(postcard::from_bytes(&postcard::to_stdvec(e).unwrap()).unwrap()),
            retire: false,
        },
    };
    let mut bytes = encode_head(&head);
    if let Ok(out) = result {
        bytes.extend_from_slice(out);
    }
    bytes
}

#[test]
fn replies_round_trip_truncate_and_mutate() {
    let strategy = (
        any::<u64>(),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300).prop_map(Ok),
            error().prop_map(Err),
        ],
        any::<prop::sample::Index>(),
        any::<u8>(),
    );
    fuzz(
        "replies_round_trip_truncate_and_mutate",
        strategy,
        |(id, result, at, byte)| {
            let bytes = reply_bytes(id, &result);
            match (decode_reply(bytes.clone()), &result) {
                (
                    Ok(Reply::Done {
                        id: got,
                        result: Ok(body),
                        ..
                    }),
                    Ok(out),
                ) => {
                    prop_assert_eq!(got, id);
                    prop_assert_eq!(body.bytes(), &out[..]);
                }
                (
                    Ok(Reply::Done {
                        id: got,
                        result: Err(e),
                        ..
                    }),
                    Err(sent),
                ) => {
                    prop_assert_eq!(got, id);
                    prop_assert_eq!(e.to_string(), sent.to_string());
                }
                (other, _) => prop_assert!(false, "{other:?}"),
            }
            // A cut inside the header is refused; a cut inside an output
            // decodes to a shorter output, which the task's codec refuses.
            let cut = at.index(bytes.len());
            let _ = decode_reply(bytes[..cut].to_vec());
            let mut mutated = bytes;
            let i = at.index(mutated.len());
            mutated[i] = byte;
            let _ = decode_reply(mutated);
            Ok(())
        },
    );
}

#[test]
fn stops_round_trip_and_carry_nothing() {
    fuzz(
        "stops_round_trip_and_carry_nothing",
        (
            any::<u64>(),
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..8),
        ),
        |(id, timeout, extra)| {
            let why = if timeout {
                Stop::Timeout
            } else {
                Stop::Cancelled
            };
            let mut bytes = encode_head(&ReplyHead::Stopped { id, why });
            let decoded = decode_reply(bytes.clone());
            prop_assert!(
                matches!(decoded, Ok(Reply::Stopped { id: got, why: w }) if got == id && w == why),
                "{decoded:?}"
            );
            bytes.extend_from_slice(&extra);
            if !extra.is_empty() {
                prop_assert!(decode_reply(bytes).is_err());
            }
            Ok(())
        },
    );
}

#[test]
fn reply_path_from_random_streams() {
    // What the parent does with a worker's bytes after the hello: read a
    // frame under the limit, decode the reply. Random streams, and valid
    // replies with random bytes spliced in.
    let strategy = (
        prop::collection::vec(any::<u8>(), 0..1024),
        prop::collection::vec(any::<u8>(), 0..64),
        any::<prop::sample::Index>(),
        1usize..64,
    );
    fuzz(
        "reply_path_from_random_streams",
        strategy,
        |(noise, output, at, chunk)| {
            let max = 1024;
            let valid = reply_bytes(1, &Ok(output));
            let mut spliced = frame(&valid);
            let i = at.index(spliced.len() + 1);
            spliced.splice(i..i, noise.iter().copied());
            for stream in [&noise, &spliced] {
                let mut probe = Probe::new(stream, chunk, false);
                while let Ok(f) = read_frame(&mut probe, max, None) {
                    let _ = decode_reply(f);
                }
                prop_assert!(probe.largest_request <= max);
            }
            Ok(())
        },
    );
}

#[test]
fn calls_from_random_bytes() {
    // The worker's side: whatever arrives is a call or a decode error, and
    // a call's input is exactly the bytes after its header.
    fuzz(
        "calls_from_random_bytes",
        (
            prop::collection::vec(any::<u8>(), 0..512),
            any::<u64>(),
            "[a-z.]{0,12}",
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        |(data, id, task, input)| {
            let _ = decode_call(&data);
            let head = CallHead {
                id,
                task,
                timeout: None,
                span: Some(id ^ 1),
            };
            let mut frame = encode_head(&head);
            frame.extend_from_slice(&input);
            let (got, rest) = decode_call(&frame).map_err(TestCaseError::fail)?;
            prop_assert_eq!(got, head);
            prop_assert_eq!(rest, &input[..]);
            Ok(())
        },
    );
}

struct Words;
impl Task for Words {
    const NAME: &'static str = "words";
    type Input = Vec<String>;
    type Output = usize;
    fn run(v: Vec<String>) -> usize {
        v.len()
    }
}

#[test]
fn dispatch_of_random_input() {
    let registry = Registry::new().with::<Words>();
    fuzz(
        "dispatch_of_random_input",
        prop::collection::vec(any::<u8>(), 0..512),
        |data| {
            match registry.dispatch("words", &data) {
                Ok(out) => prop_assert!(postcard::from_bytes::<usize>(&out).is_ok()),
                Err(e) => prop_assert!(e.is_codec(), "{e:?}"),
            }
            Ok(())
        },
    );
}

/// Postcard decodes from the frame's bytes: strings and byte strings are
/// bounded by the frame; a sequence that announces more elements than the
/// frame holds is refused after at most serde's cautious preallocation
/// (1 MiB), not an allocation of the announced size.
#[test]
fn huge_announced_counts_inside_a_frame_are_refused() {
    // varint u64::MAX-ish: 10 bytes of 0xff then 0x01.
    let huge = [0xffu8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    let near_u32 = [0xffu8, 0xff, 0xff, 0xff, 0x0f];
    for count in [&huge[..], &near_u32[..]] {
        // A hello whose build string claims ~4 GiB.
        let mut hello = HELLO_MAGIC.to_vec();
        hello.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        hello.extend_from_slice(count);
        assert!(matches!(decode_hello(&hello), Err(HelloError::Corrupt(_))));
        // A hello whose task list claims ~4G entries.
        let mut hello = HELLO_MAGIC.to_vec();
        hello.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        hello.push(0); // empty build
        hello.extend_from_slice(count);
        hello.extend_from_slice(b"\x01a");
        assert!(matches!(decode_hello(&hello), Err(HelloError::Corrupt(_))));
        // A failed reply whose message claims ~4 GiB.
        let mut reply = vec![0u8, 1, 1, 10]; // Done, id 1, Err, Codec
        reply.extend_from_slice(count);
        reply.extend_from_slice(&[1, 2, 3]);
        assert!(decode_reply(reply).is_err());
        // A call whose task name claims ~4 GiB.
        let mut call = vec![1u8];
        call.extend_from_slice(count);
        call.extend_from_slice(b"t");
        assert!(decode_call(&call).is_err());
    }
}
