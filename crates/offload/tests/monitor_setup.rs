//! Watching a runtime takes one call (`StallDetector::watch`, either
//! flavour); reports come as a stream or channel as well as a callback;
//! and a detector wired only half-way says so in a log line instead of
//! silently watching nothing.
//!
//! The log lines are caught by a process-wide `tracing` subscriber (the
//! watchdog logs from its own thread): each test looks only for its own
//! message.
#![cfg(target_os = "linux")]

use futures::StreamExt;
use offload::monitor::{StallDetector, StallKind, StallPhase, StallReport, StallReports};
use std::hint::black_box;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber, span};

const THRESHOLD: Duration = Duration::from_millis(100);

/// One test at a time: the stalls are real, and would starve the others.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every `tracing` message of target `offload::monitor`, process-wide.
static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("offload::monitor")
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        LOGGED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message.0);
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        tracing::subscriber::set_global_default(Capture).expect("the only subscriber");
    });
}

/// How many logged lines contain `needle` so far.
fn count_logged(needle: &str) -> usize {
    LOGGED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|m| m.contains(needle))
        .count()
}

/// Waits (bounded) for a logged line containing `needle`.
fn logged(needle: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = LOGGED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|m| m.contains(needle))
            .cloned();
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn detector() -> StallDetector {
    StallDetector::builder()
        .threshold(THRESHOLD)
        .log(false)
        .build()
        .expect("detector")
}

#[inline(never)]
fn spin_in_named_function(d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < end {
        x = black_box(x.wrapping_mul(31).wrapping_add(1));
    }
    x
}

/// The first report that blames the code, from the stream (bounded).
fn first_stall(reports: &StallReports) -> Option<StallReport> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let r = reports.recv_timeout(left)?;
        if r.phase() != StallPhase::Ended && r.cause().kind().is_code_stall() {
            return Some(r);
        }
    }
    None
}

#[test]
fn smoke() {
    let _serial = serial();
    let detector = detector();
    let rt = detector
        .watch(&mut tokio::runtime::Builder::new_current_thread())
        .expect("runtime");
    assert_eq!(rt.block_on(async { 1 + 1 }), 2);
    assert!(format!("{rt:?}").contains("CurrentThread"), "{rt:?}");
}

/// One call watches a current-thread runtime: its `block_on` thread is
/// the worker, idle while parked, healthy while busy, reported when it
/// stalls, and the stall's stack is in the report.
#[test]
fn one_call_watches_a_current_thread_runtime() {
    let _serial = serial();
    capture_logs();
    let warnings_before = count_logged("half-installed");
    let detector = detector();
    let reports = detector.reports();
    let rt = detector
        .watch(&mut tokio::runtime::Builder::new_current_thread())
        .expect("runtime");
    // Idle, then busy but healthy: no blame.
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            black_box(spin_in_named_function(Duration::from_millis(1)));
            tokio::task::yield_now().await;
        }
    });
    std::thread::sleep(THRESHOLD);
    let early: Vec<_> = std::iter::from_fn(|| reports.try_recv())
        .filter(|r| r.cause().kind().is_code_stall())
        .collect();
    assert!(early.is_empty(), "{early:?}");
    // A stall.
    rt.block_on(async { black_box(spin_in_named_function(Duration::from_millis(400))) });
    let stall = first_stall(&reports).expect("the stall reported");
    assert!(
        stall.backtrace().contains("spin_in_named_function"),
        "{stall}"
    );
    // Fully wired: nothing half-installed to say (earlier tests' warnings
    // are theirs: their detectors are gone).
    assert_eq!(count_logged("half-installed"), warnings_before);
}

/// The same call on a multi-thread runtime: a stall in a task is reported;
/// and the runtime keeps the watchdog alive after the detector handle is
/// dropped.
#[test]
fn one_call_watches_a_multi_thread_runtime() {
    let _serial = serial();
    let detector = detector();
    let reports = detector.reports();
    let rt = detector
        .watch(tokio::runtime::Builder::new_multi_thread().worker_threads(2))
        .expect("runtime");
    drop(detector);
    rt.block_on(async {
        tokio::spawn(async { black_box(spin_in_named_function(Duration::from_millis(400))) })
            .await
            .unwrap();
    });
    let stall = first_stall(&reports).expect("the stall reported");
    assert_eq!(stall.cause().kind(), StallKind::CpuBound, "{stall}");
    drop(rt);
    // The last owner is gone: the stream ends.
    let rest: Vec<_> = futures::executor::block_on(reports.collect::<Vec<_>>());
    assert!(rest.len() < 64, "{}", rest.len());
}

/// Hooks installed on a current-thread runtime without watching the
/// thread that runs it: said in a log line.
#[test]
fn a_current_thread_runtime_without_enter_is_logged() {
    let _serial = serial();
    capture_logs();
    let detector = detector();
    let hooks = detector.hooks();
    let rt = hooks
        .install(&mut tokio::runtime::Builder::new_current_thread())
        .enable_all()
        .build()
        .expect("runtime");
    hooks.attach(rt.handle());
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    let line = logged("is not watched", Duration::from_secs(5)).expect("a warning");
    assert!(line.contains("StallDetector::enter"), "{line}");
}

/// Hooks installed, but the runtime never attached: said in a log line.
#[test]
fn hooks_without_attach_are_logged() {
    let _serial = serial();
    capture_logs();
    let detector = detector();
    let rt = detector
        .hooks()
        .install(tokio::runtime::Builder::new_multi_thread().worker_threads(1))
        .enable_all()
        .build()
        .expect("runtime");
    let line = logged("attach was not called", Duration::from_secs(5)).expect("a warning");
    assert!(line.contains("StallDetector::watch"), "{line}");
    drop(rt);
}

/// A runtime attached whose builder never got the hooks: said at once.
#[test]
fn attach_without_hooks_is_logged() {
    let _serial = serial();
    capture_logs();
    let detector = detector();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    detector.hooks().attach(rt.handle());
    let line = logged("found no thread", Duration::ZERO).expect("a warning");
    assert!(line.contains("WorkerHooks::install"), "{line}");
}
