//! Typed calls: results, remote panics, codec errors, unknown tasks, frame
//! limits, the init hook, and the current executable re-executed.

mod common;

use common::{block, fixture};
use offload_tests::*;

#[test]
fn smoke() {
    let pool = fixture().workers(1).build().unwrap();
    assert_eq!(block(pool.call::<Sum>(vec![1, 2, 3])).unwrap(), 6);
}

#[test]
fn many_calls_in_flight() {
    let pool = fixture().workers(2).build().unwrap();
    let calls = (0..300u64).map(|i| pool.call::<Sum>(vec![i, i]));
    let results = block(futures::future::join_all(calls));
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), 2 * i as u64);
    }
    assert_eq!(block(pool.call::<Echo>("héllo".into())).unwrap(), "héllo");
}

#[test]
fn remote_panic_fails_the_call_and_the_worker_survives() {
    let pool = fixture().workers(1).build().unwrap();
    let before = block(pool.call::<Pid>(())).unwrap();
    let err = block(pool.call::<Panic>("it broke".into())).unwrap_err();
    assert!(err.is_remote_panic(), "{err}");
    assert_eq!(err.panic_message(), Some("it broke"));
    let location = err.panic_location().expect("location");
    assert!(location.contains("lib.rs"), "{location}");
    assert_eq!(block(pool.call::<Pid>(())).unwrap(), before, "same worker");
}

#[test]
fn init_hook_runs_in_each_worker() {
    let pool = fixture().workers(2).build().unwrap();
    for _ in 0..4 {
        assert!(block(pool.call::<InitRan>(())).unwrap());
    }
}

#[test]
fn codec_errors_fail_only_their_call() {
    let pool = fixture().workers(1).build().unwrap();
    let err = block(pool.call::<BadOutput>(())).unwrap_err();
    assert!(err.is_codec(), "{err}");
    assert_eq!(block(pool.call::<Sum>(vec![2])).unwrap(), 2);
}

#[test]
fn unknown_task_is_a_typed_error() {
    let pool = fixture().workers(1).build().unwrap();
    let err = block(pool.call::<NotRegistered>(())).unwrap_err();
    assert!(err.is_unknown_task(), "{err}");
    assert_eq!(block(pool.call::<Sum>(vec![3])).unwrap(), 3);
}

#[test]
fn frame_limit_applies_both_ways() {
    let pool = fixture().workers(1).max_frame_bytes(4096).build().unwrap();
    let err = block(pool.call::<Echo>("x".repeat(10_000))).unwrap_err();
    assert!(
        err.is_too_large() && !err.is_codec(),
        "input over the limit: {err}"
    );
    assert!(!err.is_retryable());
    let err = block(pool.call::<Bytes>(100_000)).unwrap_err();
    assert!(err.is_too_large(), "output over the limit: {err}");
    // Neither killed the worker: the next call runs on the same one.
    assert_eq!(pool.metrics().started, 1);
    assert_eq!(block(pool.call::<Bytes>(100)).unwrap().len(), 100);
    // Just under the limit in both directions still fits.
    let near = "y".repeat(4096 - 64);
    assert_eq!(block(pool.call::<Echo>(near.clone())).unwrap(), near);
}

#[test]
fn large_payloads_round_trip() {
    let pool = fixture().workers(1).build().unwrap();
    let out = block(pool.call::<Bytes>(4 << 20)).unwrap();
    assert_eq!(out.len(), 4 << 20);
    assert!(out.iter().all(|&b| b == 7));
}

#[test]
fn the_current_executable_re_executed_serves_tasks() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proc_fixture"))
        .arg("self-call")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sum 42");
}

#[test]
fn worker_output_is_forwarded_not_lost() {
    // A panic message goes to the worker's stderr, which the parent drains;
    // a worker that writes a lot must never block. 200 panics, each with
    // a multi-line report, would fill an undrained 64 KiB pipe.
    let pool = fixture().workers(1).build().unwrap();
    for i in 0..200 {
        let err = block(pool.call::<Panic>(format!("noise {i} {}", "z".repeat(400)))).unwrap_err();
        assert!(err.is_remote_panic());
    }
    assert_eq!(block(pool.call::<Sum>(vec![1])).unwrap(), 1);
}

#[test]
fn tasks_written_with_the_task_attribute() {
    let pool = fixture().workers(1).build().unwrap();
    let words = block(pool.call::<WordCount>("one two  three".into())).unwrap();
    assert_eq!(words, 3);
    assert_eq!(
        <WeightedSum as offload::proc::Task>::NAME,
        "weighted_sum.v2"
    );
    assert_eq!(
        block(pool.call::<WeightedSum>((vec![1, 2, 3], 10))).unwrap(),
        60
    );
}

#[test]
fn bulk_bytes_and_text_round_trip_intact() {
    let pool = fixture().workers(1).build().unwrap();
    let bytes: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut reversed = bytes.clone();
    reversed.reverse();
    assert!(block(pool.call::<ReverseBytes>(bytes)).unwrap() == reversed);
    let text: String = "héllo wörld ✓ ".repeat(500_000);
    assert_eq!(block(pool.call::<Echo>(text.clone())).unwrap(), text);
    assert_eq!(
        block(pool.call::<ReverseBytes>(Vec::new())).unwrap(),
        Vec::<u8>::new()
    );
    assert_eq!(block(pool.call::<Echo>(String::new())).unwrap(), "");
}

#[test]
fn untyped_calls_carry_postcard_bytes() {
    use offload::proc::{CallOptions, fingerprint};
    let pool = fixture().workers(1).build().unwrap();
    let input = postcard_vec(&[1u8, 2, 3]);
    let out = block(pool.call_bytes(
        "reverse_bytes",
        Some(fingerprint::<ReverseBytes>()),
        input,
        CallOptions::new(),
    ))
    .unwrap();
    assert_eq!(out, postcard_vec(&[3, 2, 1]));
    // A length prefix that does not match the bytes is the task's codec
    // error; the worker survives it.
    let err = block(pool.call_bytes("reverse_bytes", None, vec![9, 1, 2], CallOptions::new()))
        .unwrap_err();
    assert!(err.is_codec(), "{err}");
    // Another version of the task is refused before it is sent.
    let err =
        block(pool.call_bytes("reverse_bytes", Some(1), vec![0], CallOptions::new())).unwrap_err();
    assert!(err.is_version_mismatch(), "{err}");
    assert_eq!(pool.metrics().started, 1);
}

/// Postcard's encoding of a byte vector: a varint length, then the bytes.
fn postcard_vec(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![bytes.len() as u8];
    out.extend_from_slice(bytes);
    out
}
