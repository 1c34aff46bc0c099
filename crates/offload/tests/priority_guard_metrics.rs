//! The starvation guard tells the `metrics` facade (feature `metrics`)
//! when background threads leave the idle class and when they go back:
//! `offload_background_fallbacks_total` and `offload_background_fallen_back`.
//! One binary of its own: it installs a global recorder (the guard records
//! from its own thread) and loads every core.
#![cfg(all(target_os = "linux", feature = "metrics"))]

use std::time::Duration;

use offload::ThreadPool;
use offload_test_support::metrics::Capture;
use offload_test_support::{
    Hogs, SCHED_IDLE, block_on, eventually, may_leave_idle_class, spin_until_policy,
};

const PATIENCE: Duration = Duration::from_secs(30);

#[test]
fn a_fallback_and_the_return_are_exported() {
    let capture = Capture::default();
    let seen = capture.0.clone();
    metrics::set_global_recorder(capture).expect("the only recorder of this binary");
    let value = |name: &str| seen.lock().unwrap().get(name).copied();
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    let hogs = Hogs::on_every_core();
    let left = block_on(pool.run(|| spin_until_policy(0, PATIENCE))).unwrap();
    drop(hogs);
    if !may_leave_idle_class() {
        // Nice +10 alone: nothing to leave, nothing exported.
        assert_eq!(value("offload_background_fallbacks_total{}"), None);
        return;
    }
    assert!(left.is_some(), "the starved thread left the idle class");
    let fallbacks = value("offload_background_fallbacks_total{}").expect("counted");
    assert!(fallbacks.0 >= 1, "{fallbacks:?}");
    let back = block_on(pool.run(|| spin_until_policy(SCHED_IDLE, PATIENCE))).unwrap();
    assert!(back.is_some(), "back in the idle class");
    // The gauge is set by the guard after it moved the threads.
    assert!(eventually(Duration::from_secs(10), || value(
        "offload_background_fallen_back{}"
    )
    .is_some_and(|v| v.1 == 0.0)));
}
