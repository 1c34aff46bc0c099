//! Building blocks for executors that carry calls to other machines
//! through a message system (the `offload-nats` crate is one).
//!
//! Such an executor moves a task's name and encoded input to a worker,
//! which runs it with [`Registry::dispatch`](crate::proc::Registry::dispatch)
//! or a local [`ProcessPool::call_bytes`](crate::proc::ProcessPool::call_bytes),
//! and moves back the encoded output or an [`Error`]: `Error` is
//! serde-serialisable, so a task's failure reaches the caller as the same
//! error a local pool would give. The failures only the transport can see
//! are made here, so that callers test them with the same predicates.

use std::time::Duration;

use crate::error::{Error, Payload, WorkerExit};

/// Nobody serves the call: no worker subscribed to the task (a message
/// system's "no responders"). [`Error::is_no_workers`].
pub fn no_workers(what: impl Into<String>) -> Error {
    Error::no_workers(what)
}

/// The message system failed (connection lost, server error); the call's
/// outcome is unknown. [`Error::is_transport`].
pub fn transport_failed(what: impl Into<String>) -> Error {
    Error::transport(what)
}

/// The call ran past its deadline. [`Error::is_timeout`].
pub fn timed_out(after: Duration) -> Error {
    Error::timeout(after)
}

/// The remote worker running the call stopped answering (it died, or its
/// machine or network did). [`Error::is_worker_lost`], with no exit code
/// or signal; [`Error::worker`] names it.
pub fn worker_lost(worker: impl Into<String>) -> Error {
    Error::worker_lost(WorkerExit {
        worker: worker.into(),
        code: None,
        signal: None,
    })
}

/// The input is larger than the message system carries (`size` bytes
/// against `limit`). [`Error::is_too_large`].
pub fn input_too_large(size: Option<u64>, limit: u64) -> Error {
    Error::too_large(Payload::Input, size, limit)
}

/// The output is larger than the message system carries.
/// [`Error::is_too_large`].
pub fn output_too_large(size: Option<u64>, limit: u64) -> Error {
    Error::too_large(Payload::Output, size, limit)
}

/// The worker sent something that is not a reply.
/// [`Error::is_protocol`].
pub fn protocol(what: impl Into<String>) -> Error {
    Error::protocol(what)
}

/// The caller's pool was shut down before the call could be sent.
/// [`Error::is_shutdown`].
pub fn shutdown() -> Error {
    Error::shutdown()
}

/// The workers serve the task under another fingerprint (two deployments
/// out of step). [`Error::is_version_mismatch`].
pub fn version_mismatch(what: impl Into<String>) -> Error {
    Error::version_mismatch(what)
}

/// No worker knows a task of this name. [`Error::is_unknown_task`].
pub fn unknown_task(name: impl Into<String>) -> Error {
    Error::unknown_task(name)
}

/// Bytes that are not the task's input or output type (encoded or
/// decoded at the caller). [`Error::is_codec`].
pub fn codec(what: impl Into<String>) -> Error {
    Error::codec(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transport_error_survives_the_wire() {
        let errors = [
            no_workers("task sum"),
            transport_failed("connection reset"),
            timed_out(Duration::from_millis(5)),
            worker_lost("box-7/worker-2"),
            input_too_large(Some(10), 5),
            output_too_large(None, 5),
            protocol("garbage"),
            shutdown(),
            version_mismatch("fp 1 vs 2"),
            unknown_task("sum"),
            codec("bad input"),
        ];
        for e in errors {
            let bytes = postcard::to_stdvec(&e).unwrap();
            let back: Error = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(back.is_retryable(), e.is_retryable());
        }
        assert!(no_workers("x").is_no_workers());
        assert!(shutdown().is_shutdown());
        assert!(version_mismatch("x").is_version_mismatch());
        assert!(unknown_task("x").is_unknown_task());
        assert!(codec("x").is_codec());
        assert!(worker_lost("w").is_worker_lost());
        assert_eq!(worker_lost("w").worker(), Some("w"));
    }
}
