//! The lag monitor: the seed's ticker, measured. Every wait is bounded and
//! no bound depends on the machine's speed beyond generous margins.

use offload::monitor::LagMonitor;
use std::time::{Duration, Instant};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

#[test]
fn smoke() {
    let rt = runtime();
    let lag = LagMonitor::builder()
        .interval(Duration::from_millis(5))
        .start(rt.handle())
        .unwrap();
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
    let s = lag.snapshot();
    assert!(s.count() >= 3, "{s}");
    assert!(s.p50() <= s.p99() && s.p99() <= s.max(), "{s}");
    assert!(format!("{lag:?}").contains("LagMonitor"));
}

#[test]
fn a_blocked_loop_shows_as_lag_over_the_threshold() {
    let rt = runtime();
    let lag = LagMonitor::builder()
        .interval(Duration::from_millis(10))
        .threshold(Duration::from_millis(50))
        .start(rt.handle())
        .unwrap();
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The seed's mistake: a blocking call on the loop.
        std::thread::sleep(Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(30)).await;
    });
    let s = lag.snapshot();
    assert!(s.over_threshold() >= 1, "{s}");
    assert!(s.max() >= Duration::from_millis(200), "{s}");
    assert!(s.max() < Duration::from_secs(5), "{s}");
}

#[test]
fn reset_starts_a_new_window() {
    let rt = runtime();
    let lag = LagMonitor::builder()
        .interval(Duration::from_millis(5))
        .threshold(Duration::from_millis(50))
        .start(rt.handle())
        .unwrap();
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::thread::sleep(Duration::from_millis(150));
        tokio::time::sleep(Duration::from_millis(20)).await;
    });
    let first = lag.reset();
    assert!(first.over_threshold() >= 1, "{first}");
    let after = lag.snapshot();
    assert_eq!(after.over_threshold(), 0, "{after}");
    assert!(after.max() < first.max(), "{after}");
}

#[test]
fn runtime_agnostic_ticker_and_stop() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let lag = LagMonitor::builder()
        .interval(Duration::from_millis(5))
        .timer_floor(Duration::ZERO)
        .build()
        .unwrap();
    let ticker = rt.spawn(lag.ticker(tokio::time::sleep));
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(60)).await });
    lag.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ticker.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(ticker.is_finished(), "the ticker did not stop");
    let s = lag.snapshot();
    assert!(s.count() >= 2, "{s}");
    assert_eq!(s.timer_floor(), Duration::ZERO);
}

#[test]
fn dropping_every_handle_ends_the_ticker() {
    let rt = runtime();
    let lag = LagMonitor::builder()
        .interval(Duration::from_millis(2))
        .build()
        .unwrap();
    let ticker = rt.spawn(lag.ticker(tokio::time::sleep));
    drop(lag);
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), ticker)
            .await
            .expect("ticker ended")
            .expect("no panic");
    });
}

#[test]
fn an_interval_under_a_millisecond_is_refused() {
    let err = LagMonitor::builder()
        .interval(Duration::from_micros(500))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("at least 1 ms"), "{err}");
}
