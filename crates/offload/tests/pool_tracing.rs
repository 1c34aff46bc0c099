//! A job submitted inside a `tracing` span runs inside that span on the
//! pool's thread; with no interested subscriber nothing is carried.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use offload::{Dedicated, ThreadPool};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A subscriber that records which span each thread entered, and knows
/// each thread's current span (as real subscribers do).
#[derive(Default)]
struct Recorder {
    next: AtomicU64,
    enabled: bool,
    entered: Mutex<Vec<(String, u64)>>,
    metadata: Mutex<Vec<&'static Metadata<'static>>>,
}

thread_local! {
    static STACK: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct Shared(Arc<Recorder>);

impl Subscriber for Shared {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        self.0.enabled
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        self.0.metadata.lock().unwrap().push(attrs.metadata());
        Id::from_u64(self.0.next.fetch_add(1, SeqCst) + 1)
    }
    fn current_span(&self) -> tracing_core::span::Current {
        match STACK.with(|s| s.borrow().last().copied()) {
            Some(id) => {
                let meta = self.0.metadata.lock().unwrap()[id as usize - 1];
                tracing_core::span::Current::new(Id::from_u64(id), meta)
            }
            None => tracing_core::span::Current::none(),
        }
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, span: &Id) {
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        self.0
            .entered
            .lock()
            .unwrap()
            .push((thread, span.into_u64()));
        STACK.with(|s| s.borrow_mut().push(span.into_u64()));
    }
    fn exit(&self, _: &Id) {
        STACK.with(|s| s.borrow_mut().pop());
    }
}

fn with_recorder<T>(enabled: bool, f: impl FnOnce() -> T) -> (T, Vec<(String, u64)>) {
    let rec = Arc::new(Recorder {
        enabled,
        ..Recorder::default()
    });
    let out = tracing::subscriber::with_default(Shared(rec.clone()), f);
    let entered = rec.entered.lock().unwrap().clone();
    (out, entered)
}

#[test]
fn smoke() {
    let pool = ThreadPool::builder().build().unwrap();
    assert_eq!(futures::executor::block_on(pool.run(|| 1)).unwrap(), 1);
}

#[test]
fn a_job_runs_inside_its_submitters_span_on_the_pool_thread() {
    let pool = ThreadPool::builder().name("tr").threads(1).build().unwrap();
    let (span_id, entered) = with_recorder(true, || {
        let span = tracing::info_span!("request");
        let id = span.id().expect("enabled span").into_u64();
        let _g = span.enter();
        futures::executor::block_on(pool.run(|| ())).unwrap();
        id
    });
    assert!(
        entered.contains(&("tr-0".to_owned(), span_id)),
        "the pool thread entered the request span: {entered:?}"
    );
}

#[test]
fn a_dedicated_call_runs_inside_its_span_too() {
    let d = Dedicated::builder().name("dtr").build(|| ()).unwrap();
    let (span_id, entered) = with_recorder(true, || {
        let span = tracing::info_span!("request");
        let id = span.id().unwrap().into_u64();
        let _g = span.enter();
        futures::executor::block_on(d.run(|_: &mut ()| ())).unwrap();
        id
    });
    assert!(
        entered.contains(&("dtr-0".to_owned(), span_id)),
        "{entered:?}"
    );
    d.shutdown_blocking();
}

#[test]
fn nothing_is_carried_when_no_subscriber_is_interested() {
    let pool = ThreadPool::builder()
        .name("off")
        .threads(1)
        .build()
        .unwrap();
    let ((), entered) = with_recorder(false, || {
        let span = tracing::info_span!("request");
        let _g = span.enter();
        futures::executor::block_on(pool.run(|| ())).unwrap();
    });
    assert!(
        entered.iter().all(|(t, _)| t != "off-0"),
        "a disabled span is not entered on the pool thread: {entered:?}"
    );
}
