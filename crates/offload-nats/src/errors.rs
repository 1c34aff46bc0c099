//! The errors of this crate: [`BuildError`] for a pool or worker that
//! cannot start, and the few [`offload::Error`] kinds the core makes but
//! offers no public constructor for.
//!
//! `offload::Error` crosses machines as data (its serde form is
//! append-only, so that old and new deployments read each other's
//! errors). The kinds a transport sees are built with
//! [`offload::remote`]; the three below (`Shutdown`, `VersionMismatch`,
//! `Codec`) are built from that same serde form, by their index in it.
//! The unit tests check each one against its predicate, so a change of
//! that form in the core fails here, not in a user's match.

use std::fmt;

use offload::Error;

/// Index of each kind in the core's serde form of `Error` (append-only).
const SHUTDOWN: u32 = 2;
const CODEC: u32 = 8;
const VERSION_MISMATCH: u32 = 14;

/// An `Error` of the kind at `index` in the core's serde form, with a
/// message. A postcard enum is its variant index (a varint) followed by
/// the variant's fields: the same bytes as the tuple `(index, message)`.
fn from_wire(index: u32, message: Option<&str>) -> Error {
    let bytes = match message {
        Some(m) => postcard::to_stdvec(&(index, m)),
        None => postcard::to_stdvec(&index),
    };
    bytes
        .ok()
        .and_then(|b| postcard::from_bytes(&b).ok())
        .unwrap_or_else(|| offload::remote::protocol(message.unwrap_or("error").to_owned()))
}

/// The pool was shut down: [`Error::is_shutdown`].
pub(crate) fn shutdown() -> Error {
    from_wire(SHUTDOWN, None)
}

/// [`Error::is_version_mismatch`].
pub(crate) fn version_mismatch(what: &str) -> Error {
    from_wire(VERSION_MISMATCH, Some(what))
}

/// [`Error::is_codec`].
pub(crate) fn codec(what: &str) -> Error {
    from_wire(CODEC, Some(what))
}

/// [`Error::is_unknown_task`], as the registry itself reports it.
pub(crate) fn unknown_task(name: &str) -> Error {
    match offload::proc::Registry::new().dispatch(name, &[]) {
        Err(e) => e,
        Ok(_) => offload::remote::protocol(format!("no worker knows task {name:?}")),
    }
}

/// Why a [`RemotePool`](crate::RemotePool) or a [`Worker`](crate::Worker)
/// could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is out of range; the message names it.
    Invalid(&'static str),
    /// The NATS server could not be reached (or refused us); the message
    /// says why.
    Connect(String),
    /// JetStream (needed by durable mode) is not available or refused to
    /// create the stream or a consumer; the message says why.
    JetStream(String),
    /// The worker's local process pool could not be built.
    Pool(offload::BuildError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Invalid(what) => write!(f, "invalid configuration: {what}"),
            BuildError::Connect(m) => write!(f, "cannot connect to NATS: {m}"),
            BuildError::JetStream(m) => write!(f, "JetStream: {m}"),
            BuildError::Pool(e) => write!(f, "worker process pool: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Pool(e) => Some(e),
            _ => None,
        }
    }
}

impl From<offload::BuildError> for BuildError {
    fn from(e: offload::BuildError) -> Self {
        BuildError::Pool(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crafted_errors_have_their_kind() {
        assert!(shutdown().is_shutdown());
        let v = version_mismatch("task sum: 1 vs 2");
        assert!(v.is_version_mismatch() && !v.is_retryable());
        assert!(v.to_string().contains("task sum: 1 vs 2"));
        assert!(codec("bad bytes").is_codec());
        assert!(unknown_task("nope").is_unknown_task());
    }
}
