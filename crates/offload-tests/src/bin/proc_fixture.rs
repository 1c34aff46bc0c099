//! Fixture worker program: serves `offload_tests::registry()`.
//!
//! Run without worker environment it is a parent:
//! - `proc_fixture self-call`: builds a pool that re-executes this binary,
//!   calls `sum`, prints the result;
//! - `proc_fixture orphan-parent`: builds a pool of 2, starts two long
//!   calls, prints `pids <a> <b>` and waits to be killed.

use std::time::Duration;

use offload::proc::ProcessPool;
use offload_tests::{Pid, SleepMs, Sum, registry};

fn main() {
    offload::proc::run_worker_if_child(&registry());
    let mode = std::env::args().nth(1).unwrap_or_default();
    let pool = ProcessPool::builder()
        .workers(2)
        .registry(registry())
        .build()
        .expect("pool");
    match mode.as_str() {
        "self-call" => {
            let sum = futures::executor::block_on(pool.call::<Sum>(vec![20, 22])).expect("call");
            println!("sum {sum}");
        }
        "orphan-parent" => {
            futures::executor::block_on(pool.call::<Pid>(())).expect("pid");
            // Both workers are started at build; wait (bounded) until both
            // have shaken hands.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while pool.worker_pids().len() < 2 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let pids = pool.worker_pids();
            // Keep both workers busy for a long time.
            let calls: Vec<_> = (0..2).map(|_| pool.call::<SleepMs>(60_000)).collect();
            while pool.metrics().calls.running < 2 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut list: Vec<_> = pids.values().map(u32::to_string).collect();
            list.sort();
            println!("pids {}", list.join(" "));
            std::thread::sleep(Duration::from_secs(120));
            drop(calls);
        }
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}
