//! Fixture worker program: serves `offload_tests::registry()`.
//!
//! Run without worker environment it is a parent:
//! - `proc_fixture self-call`: builds a pool that re-executes this binary,
//!   calls `sum`, prints the result;
//! - `proc_fixture orphan-parent`: builds a pool of 2, starts two long
//!   calls, prints `pids <a> <b>` and waits to be killed;
//! - `proc_fixture idle`: builds a pool of 2 and waits to be killed (with
//!   `FIXTURE_INIT_*` set, its workers sit in a slow `init`);
//! - `proc_fixture deploy`: calls `sum`, replaces its own executable file
//!   on disk (as a deploy does), kills its worker, calls `sum` again on a
//!   fresh worker; prints `sum <a> <b>`;
//! - `proc_fixture print-calls`: 50 calls of a task that prints 10 lines to
//!   stderr; prints `ok <n>` (run it with a stderr nobody reads).

use std::time::Duration;

use offload::proc::ProcessPool;
use offload_tests::{Die, Pid, Print, SleepMs, Sum, registry};

fn main() {
    offload::proc::run_worker_if_child(&registry());
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode == "idle" {
        let _pool = ProcessPool::builder()
            .workers(2)
            .registry(registry())
            .build()
            .expect("pool");
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
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
        "deploy" => {
            let a = futures::executor::block_on(pool.call::<Sum>(vec![1, 2]))
                .expect("call before the deploy");
            let exe = std::env::current_exe().expect("exe");
            std::fs::remove_file(&exe).expect("remove the executable");
            std::fs::write(&exe, b"#!/bin/sh\nexit 3\n").expect("write the new executable");
            // Kill both workers: their replacements start after the deploy.
            for _ in 0..2 {
                let _ =
                    futures::executor::block_on(pool.call::<Die>(offload_tests::Death::Exit(9)));
            }
            let b = futures::executor::block_on(pool.call::<Sum>(vec![3, 4]))
                .expect("call after the deploy");
            println!("sum {a} {b}");
        }
        "print-calls" => {
            let ok = (0..50)
                .filter(|_| futures::executor::block_on(pool.call::<Print>((10, 100))).is_ok())
                .count();
            println!("ok {ok}");
        }
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}
