//! Export to the `metrics` facade (feature `metrics`), named like the
//! core's `offload_loop_*`:
//!
//! - `offload_remote_calls_total{task, mode, outcome}`: counter of
//!   resolved calls; `outcome` is `ok` or the error's kind (`worker_lost`,
//!   `timeout`, `no_workers`, `unknown_task`, `version_mismatch`,
//!   `transport`, `too_large`, `remote_panic`, `shutdown`, `other`);
//! - `offload_remote_call_seconds{task, mode}`: histogram of call latency
//!   (queueing for an in-flight slot excluded);
//! - `offload_remote_busy_retries_total`: direct calls sent again because
//!   the worker was full;
//! - `offload_remote_redeliveries_total`: durable results that came from a
//!   second or later delivery (the task may have run more than once).
//!
//! Without the feature these are no-ops.

use std::time::Duration;

use offload::Error;

use crate::pool::Mode;

/// A short name for an error's kind.
pub(crate) fn outcome<T>(r: &Result<T, Error>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) if e.is_worker_lost() => "worker_lost",
        Err(e) if e.is_timeout() => "timeout",
        Err(e) if e.is_no_workers() => "no_workers",
        Err(e) if e.is_unknown_task() => "unknown_task",
        Err(e) if e.is_version_mismatch() => "version_mismatch",
        Err(e) if e.is_transport() => "transport",
        Err(e) if e.is_too_large() => "too_large",
        Err(e) if e.is_remote_panic() => "remote_panic",
        Err(e) if e.is_shutdown() => "shutdown",
        Err(_) => "other",
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Direct => "direct",
        Mode::Durable => "durable",
    }
}

#[cfg(feature = "metrics")]
pub(crate) fn call_done<T>(task: &'static str, mode: Mode, r: &Result<T, Error>, took: Duration) {
    let mode = mode_name(mode);
    metrics::counter!("offload_remote_calls_total", "task" => task, "mode" => mode, "outcome" => outcome(r))
        .increment(1);
    metrics::histogram!("offload_remote_call_seconds", "task" => task, "mode" => mode)
        .record(took.as_secs_f64());
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn call_done<T>(_task: &'static str, mode: Mode, r: &Result<T, Error>, _took: Duration) {
    let _ = (mode_name(mode), outcome(r));
}

#[cfg(feature = "metrics")]
pub(crate) fn busy_retry() {
    metrics::counter!("offload_remote_busy_retries_total").increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn busy_retry() {}

#[cfg(feature = "metrics")]
pub(crate) fn redelivered() {
    metrics::counter!("offload_remote_redeliveries_total").increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn redelivered() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_name_the_error_kind() {
        assert_eq!(outcome(&Ok::<(), Error>(())), "ok");
        let cases = [
            (offload::remote::worker_lost("w"), "worker_lost"),
            (
                offload::remote::timed_out(Duration::from_secs(1)),
                "timeout",
            ),
            (offload::remote::no_workers("x"), "no_workers"),
            (offload::remote::unknown_task("x"), "unknown_task"),
            (offload::remote::version_mismatch("x"), "version_mismatch"),
            (offload::remote::transport_failed("x"), "transport"),
            (offload::remote::input_too_large(Some(2), 1), "too_large"),
            (offload::remote::shutdown(), "shutdown"),
            (offload::remote::protocol("x"), "other"),
        ];
        for (e, name) in cases {
            assert_eq!(outcome(&Err::<(), _>(e)), name);
        }
    }
}
