//! The starvation guard in worker processes: a `Background` worker runs
//! its calls in the idle scheduling class, leaves it when normal threads
//! starve it and goes back when they stop, for the thread that runs calls
//! and for threads a task starts. One binary of its own: it loads every
//! core.
#![cfg(target_os = "linux")]

mod common;

use common::{block, fixture};
use offload_test_support::{Hogs, SCHED_IDLE, may_leave_idle_class};
use offload_tests::*;

/// How long a call spins waiting for the guard, in ms: generous, the guard
/// looks every 100 ms.
const PATIENCE_MS: u64 = 30_000;

#[test]
fn a_starved_worker_competes_at_nice_ten_and_goes_back_when_the_load_ends() {
    let pool = fixture().workers(1).build().unwrap();
    if !may_leave_idle_class() {
        // The door out of the idle class is shut: nice +10 alone.
        let (_, policy, _) = block(pool.call::<Niceness>(())).unwrap();
        assert_eq!(policy, Some(0));
        return;
    }
    for in_new_thread in [false, true] {
        let hogs = Hogs::on_every_core();
        let left = block(pool.call::<SpinUntilPolicy>((0, PATIENCE_MS, in_new_thread))).unwrap();
        drop(hogs);
        let left = left.unwrap_or_else(|| {
            panic!("a starved thread (new: {in_new_thread}) left the idle class")
        });
        let back =
            block(pool.call::<SpinUntilPolicy>((SCHED_IDLE, PATIENCE_MS, in_new_thread))).unwrap();
        let back = back.unwrap_or_else(|| {
            panic!("the thread (new: {in_new_thread}) went back to the idle class")
        });
        eprintln!("new thread: {in_new_thread}: out after {left} ms, back after {back} ms");
    }
}
