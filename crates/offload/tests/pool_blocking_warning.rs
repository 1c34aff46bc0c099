//! `shutdown_blocking` called on a tokio runtime thread (async code, where
//! it would stall the loop) logs a `tracing` warning before it blocks; on a
//! plain thread it does not.

use std::sync::{Arc, Mutex};

use offload::{Dedicated, ThreadPool};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Keeps the message of every warning.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Warnings {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0.lock().unwrap().push(m.0);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn warnings_during(f: impl FnOnce()) -> Vec<String> {
    let w = Warnings::default();
    tracing::subscriber::with_default(w.clone(), f);
    w.0.lock().unwrap().clone()
}

#[test]
fn smoke() {
    let pool = ThreadPool::builder().build().unwrap();
    assert!(warnings_during(|| pool.shutdown_blocking()).is_empty());
}

#[test]
fn on_a_tokio_runtime_thread_it_warns() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let pool = ThreadPool::builder().name("warned").build().unwrap();
    let d = Dedicated::builder().build(|| ()).unwrap();
    let seen = warnings_during(|| {
        rt.block_on(async {
            pool.shutdown_blocking();
            d.shutdown_blocking();
        })
    });
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].contains("ThreadPool::shutdown_blocking"),
        "{seen:?}"
    );
    assert!(seen.iter().all(|m| m.contains("tokio runtime")), "{seen:?}");
}
