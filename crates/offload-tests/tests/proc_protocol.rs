//! Workers that break the protocol: each case is a typed error for the
//! call, never a hang and never a panic in the parent.

mod common;

use std::time::Duration;

use common::{block, rogue};
use offload_tests::Sum;

fn first_error(mode: &str) -> offload::Error {
    let pool = rogue(mode)
        .hello_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    block(pool.call::<Sum>(vec![1])).unwrap_err()
}

#[test]
fn smoke() {
    assert!(first_error("garbage-hello").is_protocol());
}

#[test]
fn version_mismatch() {
    let err = first_error("wrong-version");
    assert!(err.is_protocol(), "{err}");
    assert!(err.to_string().contains("version 999"), "{err}");
}

#[test]
fn oversized_hello_is_refused_without_allocating() {
    let err = first_error("oversized-hello");
    assert!(err.is_protocol(), "{err}");
    assert!(err.to_string().contains("limit"), "{err}");
}

#[test]
fn a_worker_that_never_says_hello() {
    let err = first_error("silent");
    assert!(err.is_protocol(), "{err}");
    assert!(err.to_string().contains("no hello"), "{err}");
}

#[test]
fn a_hello_trickled_a_byte_at_a_time_still_times_out() {
    // The deadline holds for the whole hello, not for each read.
    let started = std::time::Instant::now();
    let err = first_error("trickle-hello");
    assert!(err.is_protocol(), "{err}");
    assert!(err.to_string().contains("no hello"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_trickled_reply_does_not_stretch_the_calls_timeout() {
    let pool = rogue("trickle-reply").build().unwrap();
    let started = std::time::Instant::now();
    let err = block(pool.call_with::<Sum>(
        vec![1],
        offload::proc::CallOptions::new().timeout(Duration::from_millis(300)),
    ))
    .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // The reply would take 20 s; the call ends at its timeout plus the
    // grace a worker has to stop itself.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn corrupt_reply() {
    let err = first_error("bad-reply");
    assert!(err.is_protocol(), "{err}");
}

#[test]
fn oversized_reply() {
    let err = first_error("oversized-reply");
    assert!(err.is_protocol(), "{err}");
}

#[test]
fn truncated_reply() {
    let err = first_error("truncated-reply");
    assert!(err.is_worker_lost(), "{err}");
}
