//! A `metrics` recorder for tests (feature `metrics`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// `name{label=value,..}` → (counter total, last gauge value, histogram
/// records).
pub type Seen = Arc<Mutex<BTreeMap<String, (u64, f64, usize)>>>;

/// A recorder that keeps what it was given, by metric name and labels:
/// install it with `metrics::with_local_recorder` around the code that
/// registers the handles (a pool registers them at build).
#[derive(Debug, Default)]
pub struct Capture(pub Seen);

#[derive(Debug)]
struct Handle(String, Seen);

impl CounterFn for Handle {
    fn increment(&self, v: u64) {
        self.1.lock().unwrap().entry(self.0.clone()).or_default().0 += v;
    }
    fn absolute(&self, v: u64) {
        self.1.lock().unwrap().entry(self.0.clone()).or_default().0 = v;
    }
}

impl GaugeFn for Handle {
    fn increment(&self, v: f64) {
        self.1.lock().unwrap().entry(self.0.clone()).or_default().1 += v;
    }
    fn decrement(&self, v: f64) {
        self.1.lock().unwrap().entry(self.0.clone()).or_default().1 -= v;
    }
    fn set(&self, v: f64) {
        self.1.lock().unwrap().entry(self.0.clone()).or_default().1 = v;
    }
}

impl HistogramFn for Handle {
    fn record(&self, _: f64) {
        self.1.lock().unwrap().entry(self.0.clone()).or_default().2 += 1;
    }
}

impl Capture {
    fn handle(&self, key: &Key) -> Arc<Handle> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        Arc::new(Handle(
            format!("{}{{{}}}", key.name(), labels.join(",")),
            self.0.clone(),
        ))
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(key))
    }
}
