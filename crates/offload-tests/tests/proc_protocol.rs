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
