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
