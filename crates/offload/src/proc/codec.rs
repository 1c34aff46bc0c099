//! The task codec: postcard, with a size limit that stops encoding as soon
//! as it is passed, so an oversized input is refused before it has been
//! encoded in full (and never allocates more than the limit).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Payload};

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

/// Encodes `value` in at most `max` bytes.
///
/// # Errors
///
/// [`Error::is_too_large`] once the encoding passes `max` (it stops
/// there), [`Error::is_codec`] if serde refuses the value.
pub(crate) fn encode<T: Serialize + ?Sized>(
    value: &T,
    what: Payload,
    max: usize,
) -> Result<Vec<u8>, Error> {
    let flavor = Limited {
        buf: Vec::new(),
        max,
    };
    postcard::serialize_with_flavor(value, flavor).map_err(|e| match e {
        postcard::Error::SerializeBufferFull => Error::too_large(what, None, max as u64),
        e => Error::codec(format!("{}: {e}", side(what))),
    })
}

/// Decodes a `T` that must fill `bytes` exactly.
///
/// # Errors
///
/// [`Error::is_codec`] for bytes that are not a `T`, or a `T` followed by
/// more bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: Payload) -> Result<T, Error> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Error::codec(format!(
            "{}: {} bytes left over after the value",
            side(what),
            rest.len()
        ))),
        Err(e) => Err(Error::codec(format!("{}: {e}", side(what)))),
    }
}

fn side(what: Payload) -> &'static str {
    match what {
        Payload::Input => "input",
        Payload::Output => "output",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_stops_at_the_limit() {
        let big = vec![7u8; 10_000];
        let err = encode(&big, Payload::Input, 100).unwrap_err();
        assert!(err.is_too_large(), "{err}");
        assert!(!err.is_codec());
        assert_eq!(
            decode::<Vec<u8>>(
                &encode(&big, Payload::Input, 20_000).unwrap(),
                Payload::Input
            )
            .unwrap(),
            big
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&5u32, Payload::Output, 100).unwrap();
        bytes.push(0);
        assert!(
            decode::<u32>(&bytes, Payload::Output)
                .unwrap_err()
                .is_codec()
        );
    }
}
