//! The task codec: postcard, with two things added.
//!
//! - A size limit that stops encoding as soon as it is passed, so an
//!   oversized input is refused before it has been encoded in full (and
//!   never allocates more than the limit).
//! - A fast path for the two types that carry bulk data, `Vec<u8>` and
//!   `String`, as a task's whole input or output. serde writes a `Vec<u8>`
//!   one element at a time and reads it back the same way; here it is
//!   written from where it lives (postcard's length prefix, then the bytes
//!   themselves, in one vectored write) and read back in the buffer it
//!   arrived in. The bytes on the wire are exactly postcard's, so either
//!   side may use either path.
//!
//! Other types go through serde. For bulk data inside a larger type, use
//! `serde_bytes` (`#[serde(with = "serde_bytes")]` on a `Vec<u8>` field)
//! or `bytes::Bytes`: they serialise as one block, not byte by byte.

use std::any::Any;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Payload};

/// An encoded value in two parts, written one after the other: a short
/// prefix (postcard's length of a bytes-like value; empty otherwise) and
/// the rest.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    pub(crate) prefix: Vec<u8>,
    pub(crate) bytes: Vec<u8>,
}

impl Encoded {
    /// Bytes in all.
    pub(crate) fn len(&self) -> usize {
        self.prefix.len() + self.bytes.len()
    }

    /// The encoding in one buffer (copies only when there is a prefix).
    pub(crate) fn into_vec(self) -> Vec<u8> {
        if self.prefix.is_empty() {
            self.bytes
        } else {
            let mut all = self.prefix;
            all.extend_from_slice(&self.bytes);
            all
        }
    }
}

/// Encoded bytes to decode: borrowed, or owned (a received frame, the
/// encoding starting at `at`), which the fast path turns into the value
/// without copying it.
#[derive(Debug)]
pub(crate) enum Input<'a> {
    Borrowed(&'a [u8]),
    Owned { frame: Vec<u8>, at: usize },
}

impl Input<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Input::Borrowed(b) => b,
            Input::Owned { frame, at } => &frame[*at..],
        }
    }

    /// The bytes from `skip` on, owned.
    fn into_tail(self, skip: usize) -> Vec<u8> {
        match self {
            Input::Borrowed(b) => b[skip..].to_vec(),
            Input::Owned { mut frame, at } => {
                // A move within the buffer: no new pages to fault in.
                frame.drain(..at + skip);
                frame
            }
        }
    }
}

/// A postcard output that refuses to grow past `max` bytes.
struct Limited {
    buf: Vec<u8>,
    max: usize,
}

impl postcard::ser_flavors::Flavor for Limited {
    type Output = Vec<u8>;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if self.buf.len() >= self.max {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.buf.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() > self.max - self.buf.len() {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.buf)
    }
}

/// Postcard's length prefix: a LEB128 varint.
fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// Reads a varint length at the start of `bytes`: its value and size.
fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut n: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((n, i + 1));
        }
    }
    None
}

fn side(what: Payload) -> &'static str {
    match what {
        Payload::Input => "input",
        Payload::Output => "output",
    }
}

/// Encodes `value` in at most `max` bytes.
///
/// # Errors
///
/// [`Error::is_too_large`] once the encoding passes `max` (it stops
/// there), [`Error::is_codec`] if serde refuses the value.
pub(crate) fn encode<T: Serialize + 'static>(
    value: T,
    what: Payload,
    max: usize,
) -> Result<Encoded, Error> {
    let mut slot = Some(value);
    let bulk = {
        let any = &mut slot as &mut dyn Any;
        if let Some(v) = any.downcast_mut::<Option<Vec<u8>>>() {
            v.take()
        } else if let Some(s) = any.downcast_mut::<Option<String>>() {
            s.take().map(String::into_bytes)
        } else {
            None
        }
    };
    if let Some(bytes) = bulk {
        let prefix = varint(bytes.len() as u64);
        let size = prefix.len() + bytes.len();
        if size > max {
            return Err(Error::too_large(what, Some(size as u64), max as u64));
        }
        return Ok(Encoded { prefix, bytes });
    }
    let value = slot.expect("only the bulk types are taken out");
    let flavor = Limited {
        buf: Vec::new(),
        max,
    };
    match postcard::serialize_with_flavor(&value, flavor) {
        Ok(bytes) => Ok(Encoded {
            prefix: Vec::new(),
            bytes,
        }),
        Err(postcard::Error::SerializeBufferFull) => Err(Error::too_large(what, None, max as u64)),
        Err(e) => Err(Error::codec(format!("{}: {e}", side(what)))),
    }
}

/// Decodes a `T` that must fill the input exactly.
///
/// # Errors
///
/// [`Error::is_codec`] for bytes that are not a `T`, or a `T` followed by
/// more bytes.
pub(crate) fn decode<T: DeserializeOwned + 'static>(
    input: Input<'_>,
    what: Payload,
) -> Result<T, Error> {
    let mut out: Option<T> = None;
    let wants_bytes = (&out as &dyn Any).is::<Option<Vec<u8>>>();
    let wants_text = (&out as &dyn Any).is::<Option<String>>();
    if wants_bytes || wants_text {
        let bytes = bulk(input, what)?;
        let any = &mut out as &mut dyn Any;
        if let Some(slot) = any.downcast_mut::<Option<Vec<u8>>>() {
            *slot = Some(bytes);
        } else if let Some(slot) = any.downcast_mut::<Option<String>>() {
            let text = String::from_utf8(bytes)
                .map_err(|e| Error::codec(format!("{}: {e}", side(what))))?;
            *slot = Some(text);
        }
        return Ok(out.expect("the bulk value was set"));
    }
    match postcard::take_from_bytes::<T>(input.bytes()) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Error::codec(format!(
            "{}: {} bytes left over after the value",
            side(what),
            rest.len()
        ))),
        Err(e) => Err(Error::codec(format!("{}: {e}", side(what)))),
    }
}

/// The bytes of a postcard byte string that fills `input` exactly.
fn bulk(input: Input<'_>, what: Payload) -> Result<Vec<u8>, Error> {
    let bytes = input.bytes();
    let (len, skip) = read_varint(bytes)
        .ok_or_else(|| Error::codec(format!("{}: bad length prefix", side(what))))?;
    if len != (bytes.len() - skip) as u64 {
        return Err(Error::codec(format!(
            "{}: the length prefix says {len} bytes, {} follow",
            side(what),
            bytes.len() - skip
        )));
    }
    Ok(input.into_tail(skip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_stops_at_the_limit() {
        /// A sequence of a billion elements: encoding it in full would
        /// take seconds and gigabytes.
        struct Endless;
        impl Serialize for Endless {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let mut seq = s.serialize_seq(Some(1_000_000_000))?;
                for i in 0..1_000_000_000u64 {
                    seq.serialize_element(&i)?;
                }
                seq.end()
            }
        }
        let started = std::time::Instant::now();
        let err = encode(Endless, Payload::Input, 1000).unwrap_err();
        assert!(err.is_too_large() && !err.is_codec(), "{err}");
        // Generous: encoding everything would take minutes; stopping at
        // the limit takes microseconds.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn bulk_types_take_the_fast_path_with_postcards_bytes() {
        let bytes = vec![7u8; 1000];
        let fast = encode(bytes.clone(), Payload::Input, 2000).unwrap();
        assert_eq!(fast.prefix.len(), 2);
        assert_eq!(fast.into_vec(), postcard::to_stdvec(&bytes).unwrap());
        let text = "é".repeat(300);
        let fast = encode(text.clone(), Payload::Output, 2000).unwrap();
        assert_eq!(fast.into_vec(), postcard::to_stdvec(&text).unwrap());
        // A bulk value over the limit is refused with its size.
        let err = encode(vec![0u8; 100], Payload::Input, 50).unwrap_err();
        assert!(err.is_too_large());
        assert!(err.to_string().contains("101 bytes"), "{err}");
    }

    #[test]
    fn bulk_types_decode_in_place_or_from_a_slice() {
        let bytes: Vec<u8> = (0..=255).collect();
        let wire = postcard::to_stdvec(&bytes).unwrap();
        let mut frame = b"head".to_vec();
        frame.extend_from_slice(&wire);
        let ptr = frame.as_ptr();
        let owned: Vec<u8> = decode(Input::Owned { frame, at: 4 }, Payload::Output).unwrap();
        assert_eq!(owned, bytes);
        assert_eq!(owned.as_ptr(), ptr, "decoded in the buffer it arrived in");
        let borrowed: Vec<u8> = decode(Input::Borrowed(&wire), Payload::Output).unwrap();
        assert_eq!(borrowed, bytes);
        let text: String = decode(
            Input::Borrowed(&postcard::to_stdvec("hé").unwrap()),
            Payload::Input,
        )
        .unwrap();
        assert_eq!(text, "hé");
    }

    #[test]
    fn bad_bulk_encodings_are_codec_errors() {
        // A prefix that promises more than follows, or less.
        for wire in [&[5u8, 1, 2][..], &[1u8, 1, 2], &[0xff; 11], &[]] {
            let err = decode::<Vec<u8>>(Input::Borrowed(wire), Payload::Input).unwrap_err();
            assert!(err.is_codec(), "{wire:?}: {err}");
        }
        // Not UTF-8.
        let err = decode::<String>(Input::Borrowed(&[2, 0xff, 0xfe]), Payload::Input).unwrap_err();
        assert!(err.is_codec(), "{err}");
    }

    #[test]
    fn other_types_go_through_serde_exactly() {
        let v = (1u32, "two".to_owned(), vec![3u64]);
        let e = encode(v.clone(), Payload::Input, 100).unwrap();
        assert!(e.prefix.is_empty());
        let back: (u32, String, Vec<u64>) =
            decode(Input::Borrowed(&e.bytes), Payload::Input).unwrap();
        assert_eq!(back, v);
        let mut extra = e.bytes.clone();
        extra.push(0);
        assert!(
            decode::<(u32, String, Vec<u64>)>(Input::Borrowed(&extra), Payload::Input)
                .unwrap_err()
                .is_codec()
        );
    }
}
