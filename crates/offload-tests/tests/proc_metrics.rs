//! A process pool's metrics: the snapshot, and the export to the `metrics`
//! facade (`offload_proc_*{pool=<name>}` beside the driver pool's
//! `offload_pool_*{pool=<name>-drv}`).

mod common;

use common::{block, fixture};
use offload_test_support::metrics::Capture;
use offload_tests::*;

#[test]
fn smoke() {
    let pool = fixture().workers(1).build().unwrap();
    block(pool.ready()).unwrap();
    assert_eq!(pool.metrics().started, 1);
}

#[test]
fn a_process_pool_exports_its_workers_and_failures() {
    let capture = Capture::default();
    let seen = capture.0.clone();
    let pool = metrics::with_local_recorder(&capture, || {
        fixture().name("px").workers(1).build().unwrap()
    });
    block(pool.ready()).unwrap();
    assert_eq!(block(pool.call::<Sum>(vec![1])).unwrap(), 1);
    assert!(
        block(pool.call::<Panic>("boom".into()))
            .unwrap_err()
            .is_remote_panic()
    );
    assert!(
        block(pool.call::<Die>(Death::Abort))
            .unwrap_err()
            .is_worker_lost()
    );
    let short = offload::proc::CallOptions::new().timeout(std::time::Duration::from_millis(300));
    assert!(
        block(pool.call_with::<SleepMs>(5_000, short))
            .unwrap_err()
            .is_timeout()
    );
    assert!(block(pool.call::<Sum>(vec![2])).is_ok());
    pool.shutdown_blocking();
    let s = seen.lock().unwrap();
    let counter = |name: &str| s.get(name).map_or(0, |v| v.0);
    assert_eq!(
        counter("offload_proc_worker_starts_total{pool=px}"),
        3,
        "{s:?}"
    );
    assert_eq!(
        counter("offload_proc_worker_lost_total{pool=px}"),
        1,
        "{s:?}"
    );
    assert_eq!(counter("offload_proc_timeouts_total{pool=px}"), 1, "{s:?}");
    assert_eq!(
        counter("offload_proc_remote_panics_total{pool=px}"),
        1,
        "{s:?}"
    );
    // Every started worker was reaped.
    assert_eq!(s["offload_proc_workers{pool=px}"].1, 0.0, "{s:?}");
    // The driver pool's own figures, under the driver pool's name.
    assert_eq!(
        counter("offload_pool_completed_total{pool=px-drv}"),
        5,
        "{s:?}"
    );
    let m = pool.metrics();
    assert_eq!((m.started, m.lost, m.timeouts), (3, 1, 1));
}
