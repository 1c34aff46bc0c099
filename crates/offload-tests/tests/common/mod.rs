//! Shared helpers for the process tests: pools of the fixture programs and
//! a bounded `block_on`, so no test can hang CI.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use offload::proc::{ProcessPool, ProcessPoolBuilder};

/// A builder for pools of the well-behaved fixture worker.
pub fn fixture() -> ProcessPoolBuilder {
    ProcessPool::builder()
        .program(env!("CARGO_BIN_EXE_proc_fixture"))
        .registry(offload_tests::registry())
}

/// A builder for pools of the protocol-breaking worker, in `mode`.
pub fn rogue(mode: &str) -> ProcessPoolBuilder {
    ProcessPool::builder()
        .program(env!("CARGO_BIN_EXE_rogue_worker"))
        .args([mode])
        .workers(1)
        .hello_timeout(Duration::from_secs(5))
}

#[allow(unused_imports)] // each test file uses some of them
pub use offload_test_support::{ChildGuard, block_on as block, eventually, wait_bounded};

/// Queues `n` calls at once on `pool`: every fourth a quick `Sum`, the
/// others `failing()` (a call that ends its worker). Asserts that every
/// quick call gets its sum, whatever happened in front of it, and that
/// every failing call fails as `expected` says.
pub fn quick_calls_behind_failing_ones<F>(
    pool: &ProcessPool,
    n: u64,
    failing: impl Fn() -> F,
    expected: impl Fn(&offload::Error) -> bool,
) where
    F: std::future::Future<Output = Result<(), offload::Error>>,
{
    use futures::future::Either;
    let calls: Vec<_> = (0..n)
        .map(|i| {
            if i % 4 == 3 {
                Either::Left(pool.call::<offload_tests::Sum>(vec![i]))
            } else {
                let call = failing();
                Either::Right(async move { call.await.map(|()| 0) })
            }
        })
        .collect();
    let results = block(futures::future::join_all(calls));
    for (i, r) in results.into_iter().enumerate() {
        if i % 4 == 3 {
            assert_eq!(r.unwrap(), i as u64, "call {i}");
        } else {
            let e = r.unwrap_err();
            assert!(expected(&e), "call {i}: {e}");
        }
    }
}

/// A fresh file for the `Record` task to append to: `name` in a folder of
/// its own for the test binary `binary` and this process.
pub fn record_file(binary: &str, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("offload-{binary}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// The input of a `Record` call: append `tag` to `path`, then sleep.
pub fn record(path: &std::path::Path, tag: &str, sleep_ms: u64) -> (String, String, u64) {
    (
        path.to_string_lossy().into_owned(),
        tag.to_owned(),
        sleep_ms,
    )
}
