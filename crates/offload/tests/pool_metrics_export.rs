//! Export to the `metrics` facade (feature `metrics`): a thread pool's
//! gauges, histograms and counters, named `offload_pool_*` and labelled
//! with the pool's name.
#![cfg(feature = "metrics")]

mod common;

use offload::ThreadPool;
use offload_test_support::metrics::Capture;

#[test]
fn smoke() {
    let capture = Capture::default();
    let pool = metrics::with_local_recorder(&capture, || {
        ThreadPool::builder().name("sm").build().unwrap()
    });
    futures::executor::block_on(pool.run(|| ())).unwrap();
    assert!(
        capture
            .0
            .lock()
            .unwrap()
            .contains_key("offload_pool_completed_total{pool=sm}")
    );
}

#[test]
fn a_pool_exports_its_figures_under_its_name() {
    let capture = Capture::default();
    let seen = capture.0.clone();
    // Handles are registered at build, against the recorder of that moment.
    let pool = metrics::with_local_recorder(&capture, || {
        ThreadPool::builder()
            .name("mx")
            .threads(1)
            .queue_capacity(1)
            .build()
            .unwrap()
    });
    futures::executor::block_on(async {
        pool.run(|| ()).await.unwrap();
        let _ = pool.run(|| -> () { panic!("exported") }).await;
        // The caller hears of a job's end just before its thread is free.
        let idle = || pool.metrics().running == 0;
        assert!(common::eventually(std::time::Duration::from_secs(10), idle));
        let (gate, blocker) = common::occupy(&pool);
        let queued = pool.try_run(|| ()).unwrap();
        assert!(pool.try_run(|| ()).unwrap_err().is_full());
        {
            let s = seen.lock().unwrap();
            assert_eq!(s["offload_pool_queued{pool=mx}"].1, 1.0, "{s:?}");
            assert_eq!(s["offload_pool_running{pool=mx}"].1, 1.0, "{s:?}");
            assert_eq!(s["offload_pool_threads{pool=mx}"].1, 1.0, "{s:?}");
        }
        drop(queued);
        gate.open();
        blocker.await.unwrap();
        pool.shutdown().await;
    });
    let s = seen.lock().unwrap();
    let total = |name: &str| {
        s.get(&format!("offload_pool_{name}{{pool=mx}}"))
            .map(|v| v.0)
    };
    assert_eq!(total("submitted_total"), Some(4), "{s:?}");
    assert_eq!(total("completed_total"), Some(2), "{s:?}");
    assert_eq!(total("panicked_total"), Some(1), "{s:?}");
    assert_eq!(total("cancelled_total"), Some(1), "{s:?}");
    assert_eq!(total("rejected_total"), Some(1), "{s:?}");
    assert_eq!(s["offload_pool_wait_seconds{pool=mx}"].2, 3, "{s:?}");
    assert_eq!(s["offload_pool_run_seconds{pool=mx}"].2, 3, "{s:?}");
    assert_eq!(s["offload_pool_queued{pool=mx}"].1, 0.0, "{s:?}");
    assert_eq!(s["offload_pool_running{pool=mx}"].1, 0.0, "{s:?}");
}
