//! Memory bounds for workers running leaky native code: a soft limit that
//! recycles a worker after the call that crossed it, a hard limit the
//! kernel enforces with a typed error for the one call that hit it, and
//! workers that the OOM killer takes before their parent.

mod common;

use common::{block, fixture};
use offload::proc::WorkerOutput;
use offload_tests::*;

const MIB: u64 = 1 << 20;

#[test]
fn smoke() {
    let pool = fixture().workers(1).build().unwrap();
    assert!(block(pool.call::<Allocate>(1)).is_ok());
}

#[test]
fn a_leaking_worker_is_recycled_and_no_call_fails() {
    // 16 MiB leaked per call against a 64 MiB limit: the fourth call takes
    // a worker over it (the worker starts with a few MiB), so each worker
    // serves exactly four calls. Depth 1, so none is sent a fifth before
    // it asks to retire.
    let pool = fixture()
        .workers(1)
        .pipeline_depth(1)
        .max_memory_per_worker(64 * MIB)
        .output(WorkerOutput::Discard)
        .build()
        .unwrap();
    let mut pids = Vec::new();
    for _ in 0..100 {
        pids.push(block(pool.call::<Leak>(16)).unwrap());
    }
    let mut served: Vec<usize> = Vec::new();
    for w in pids.chunk_by(|a, b| a == b) {
        served.push(w.len());
    }
    assert_eq!(served.len(), 25, "calls per worker: {served:?}");
    assert!(
        served.iter().all(|&n| n == 4),
        "calls per worker: {served:?}"
    );
    // Recycles are counted when the replacement starts: the 25th worker's
    // retirement is still pending.
    assert_eq!(pool.metrics().recycled, 24);
    assert_eq!(pool.metrics().lost, 0);
}

#[test]
fn a_call_past_the_hard_limit_fails_typed_and_only_it() {
    let pool = fixture()
        .workers(1)
        .hard_memory_limit(128 * MIB)
        .output(WorkerOutput::Discard)
        .build()
        .unwrap();
    let before = block(pool.call::<Allocate>(16)).unwrap();
    let err = block(pool.call::<Allocate>(512)).unwrap_err();
    assert!(err.is_out_of_memory(), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(err.worker(), Some("offload-proc-0"));
    assert!(err.to_string().contains("memory"), "{err}");
    // The next call runs on a fresh worker.
    let after = block(pool.call::<Allocate>(16)).unwrap();
    assert_ne!(after, before);
    assert_eq!(block(pool.call::<Sum>(vec![1, 2])).unwrap(), 3);
}

#[test]
fn workers_are_the_oom_killers_first_choice() {
    let pool = fixture().workers(1).build().unwrap();
    assert_eq!(block(pool.call::<OomScoreAdj>(())).unwrap(), 1000);
    let pool = fixture().workers(1).oom_score_adj(None).build().unwrap();
    let ours: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(block(pool.call::<OomScoreAdj>(())).unwrap(), ours);
}

#[test]
fn absurd_memory_settings_are_refused() {
    let err = fixture().hard_memory_limit(1024).build().unwrap_err();
    assert!(err.to_string().contains("hard_memory_limit"), "{err}");
    let err = fixture().oom_score_adj(Some(2000)).build().unwrap_err();
    assert!(err.to_string().contains("oom_score_adj"), "{err}");
}
