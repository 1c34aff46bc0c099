//! Shared helpers for the process tests: pools of the fixture programs and
//! a bounded `block_on`, so no test can hang CI.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::{Duration, Instant};

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

/// Runs `f` to completion, failing the test if it takes over 60 s.
pub fn block<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(60), f)
                .await
                .expect("hung: no result within 60 s")
        })
}

/// Polls `cond` every 5 ms until it holds or `within` passes.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
