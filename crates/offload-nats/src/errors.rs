//! The errors of this crate: [`BuildError`] for a pool or worker that
//! cannot start. Call failures are [`offload::Error`]s, the same type a
//! local pool gives; those only a transport sees are built with
//! [`offload::remote`].

use std::fmt;

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
