//! Export to the `metrics` facade (feature `metrics`): every lag
//! measurement lands in the `offload_loop_lag_seconds` histogram.
#![cfg(feature = "metrics")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use offload::monitor::LagMonitor;

type Records = Arc<Mutex<Vec<(String, f64)>>>;

/// A recorder that keeps every histogram value with its metric's name.
#[derive(Default)]
struct Capture(Records);

struct Named(String, Records);

impl HistogramFn for Named {
    fn record(&self, value: f64) {
        self.1.lock().unwrap().push((self.0.clone(), value));
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Named(key.name().to_owned(), self.0.clone())))
    }
}

#[test]
fn smoke() {
    let lag = LagMonitor::builder().build().unwrap();
    assert_eq!(lag.snapshot().count(), 0);
}

#[test]
fn every_lag_measurement_is_exported() {
    let capture = Capture::default();
    let records = capture.0.clone();
    let lag = LagMonitor::builder()
        .interval(Duration::from_millis(2))
        .timer_floor(Duration::ZERO)
        .log(false)
        .build()
        .unwrap();
    let stopper = lag.clone();
    let mut wake_ups = 0;
    // A blocking "sleep" that makes the fourth wake-up 30 ms late, then
    // stops the ticker after the sixth: the ticker runs on this thread,
    // where the local recorder is installed.
    let ticker = lag.ticker(move |d| {
        wake_ups += 1;
        std::thread::sleep(if wake_ups == 4 {
            d + Duration::from_millis(30)
        } else {
            d
        });
        if wake_ups == 6 {
            stopper.stop();
        }
        std::future::ready(())
    });
    metrics::with_local_recorder(&capture, || futures::executor::block_on(ticker));
    let records = records.lock().unwrap();
    let lags: Vec<f64> = records
        .iter()
        .filter(|(name, _)| name == "offload_loop_lag_seconds")
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(
        lags.len(),
        5,
        "one record per measured wake-up: {records:?}"
    );
    assert_eq!(lag.snapshot().count(), 5);
    assert!(
        lags.iter().any(|&v| v >= 0.030),
        "the late wake-up is exported with its lag: {lags:?}"
    );
}
