//! [`Error`] as data: what crosses a process or a machine boundary.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CancelReason, Error, Kind, Payload, WorkerExit};

/// An [`Error`] as data, so that it can cross a process or a machine
/// boundary (a worker reports a task's failure; a remote worker reports
/// its process pool's). Append-only: a new kind gets a new variant at the
/// end, so older readers fail to decode it instead of misreading it.
#[derive(Serialize, Deserialize)]
enum WireError {
    Panic(String),
    Cancelled(CancelReason),
    Shutdown,
    Rejected,
    Spawn(String),
    Timeout(Duration),
    WorkerLost(WorkerExit),
    RemotePanic {
        message: String,
        location: Option<String>,
    },
    Codec(String),
    UnknownTask(String),
    Protocol(String),
    WorkerStart(String),
    TooLarge {
        what: Payload,
        size: Option<u64>,
        limit: u64,
    },
    NoWorkers(String),
    VersionMismatch(String),
    Transport(String),
    OutOfMemory(WorkerExit, String),
    Init(String),
}

/// Serialises the error's kind and details. An I/O error inside (a thread
/// that could not spawn) travels as its message; a local panic arrives as
/// a panic with the same message.
impl Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wire = match &self.kind {
            Kind::Panic(m) => WireError::Panic(m.clone()),
            Kind::Cancelled(r) => WireError::Cancelled(*r),
            Kind::Shutdown => WireError::Shutdown,
            Kind::Rejected => WireError::Rejected,
            Kind::Spawn(e) => WireError::Spawn(e.to_string()),
            Kind::Timeout(d) => WireError::Timeout(*d),
            Kind::WorkerLost(e) => WireError::WorkerLost(e.clone()),
            Kind::RemotePanic { message, location } => WireError::RemotePanic {
                message: message.clone(),
                location: location.clone(),
            },
            Kind::Codec(m) => WireError::Codec(m.clone()),
            Kind::UnknownTask(m) => WireError::UnknownTask(m.clone()),
            Kind::Protocol(m) => WireError::Protocol(m.clone()),
            Kind::WorkerStart(m) => WireError::WorkerStart(m.clone()),
            Kind::TooLarge { what, size, limit } => WireError::TooLarge {
                what: *what,
                size: *size,
                limit: *limit,
            },
            Kind::NoWorkers(m) => WireError::NoWorkers(m.clone()),
            Kind::VersionMismatch(m) => WireError::VersionMismatch(m.clone()),
            Kind::Transport(m) => WireError::Transport(m.clone()),
            Kind::OutOfMemory(e, how) => WireError::OutOfMemory(e.clone(), how.clone()),
            Kind::Init(m) => WireError::Init(m.clone()),
        };
        wire.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Error {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let kind = match WireError::deserialize(d)? {
            WireError::Panic(m) => Kind::Panic(m),
            WireError::Cancelled(r) => Kind::Cancelled(r),
            WireError::Shutdown => Kind::Shutdown,
            WireError::Rejected => Kind::Rejected,
            WireError::Spawn(m) => Kind::Spawn(std::io::Error::other(m)),
            WireError::Timeout(d) => Kind::Timeout(d),
            WireError::WorkerLost(e) => Kind::WorkerLost(e),
            WireError::RemotePanic { message, location } => Kind::RemotePanic { message, location },
            WireError::Codec(m) => Kind::Codec(m),
            WireError::UnknownTask(m) => Kind::UnknownTask(m),
            WireError::Protocol(m) => Kind::Protocol(m),
            WireError::WorkerStart(m) => Kind::WorkerStart(m),
            WireError::TooLarge { what, size, limit } => Kind::TooLarge { what, size, limit },
            WireError::NoWorkers(m) => Kind::NoWorkers(m),
            WireError::VersionMismatch(m) => Kind::VersionMismatch(m),
            WireError::Transport(m) => Kind::Transport(m),
            WireError::OutOfMemory(e, how) => Kind::OutOfMemory(e, how),
            WireError::Init(m) => Kind::Init(m),
        };
        Ok(Error { kind })
    }
}
