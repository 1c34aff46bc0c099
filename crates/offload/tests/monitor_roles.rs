//! The stall detector stays silent when code does the right thing, and
//! follows tokio's thread roles through `block_in_place` hand-offs: the
//! thread inside `block_in_place` is not a stalled worker, the thread that
//! takes its worker over is watched, and no episode outlives its cause.
//!
//! Every wait is bounded; time bounds are generous (a loaded 2-core box).
#![cfg(target_os = "linux")]

use offload::monitor::{StallDetector, StallKind, StallPhase, StallReport, StallReports};
use std::hint::black_box;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const THRESHOLD: Duration = Duration::from_millis(100);
/// How long each pattern blocks, and the idle pause after it.
const BLOCK: Duration = Duration::from_millis(400);
const IDLE: Duration = Duration::from_millis(300);
/// How late past the threshold a report may come on a loaded box: a tick
/// for detection, the rest for a loaded machine and symbol resolution.
const MARGIN: Duration = Duration::from_secs(2);

/// One test at a time: they burn CPU on purpose, which would starve the
/// others' runtimes.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn detector(in_place: bool) -> StallDetector {
    StallDetector::builder()
        .threshold(THRESHOLD)
        .log(false)
        .report_block_in_place(in_place)
        .build()
        .expect("detector")
}

fn multi_thread(detector: &StallDetector) -> offload::monitor::WatchedRuntime {
    detector
        .watch(tokio::runtime::Builder::new_multi_thread().worker_threads(2))
        .expect("runtime")
}

fn drain(reports: &StallReports) -> Vec<StallReport> {
    std::iter::from_fn(|| reports.try_recv()).collect()
}

/// Collects reports into `got` until one satisfies `done` (bounded wait:
/// the first stack resolution of a debug build takes a while).
fn collect_until(
    reports: &StallReports,
    got: &mut Vec<StallReport>,
    done: impl Fn(&StallReport) -> bool,
) -> Option<StallReport> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        got.extend(drain(reports));
        if let Some(r) = got.iter().find(|r| done(r)) {
            return Some(r.clone());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn describe(reports: &[StallReport]) -> String {
    reports
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Reports that blame the code; starved ones blame a loaded machine.
fn blaming(reports: &[StallReport]) -> Vec<&StallReport> {
    reports
        .iter()
        .filter(|r| r.cause().kind().is_code_stall())
        .collect()
}

#[inline(never)]
fn sleep_in_named_function(d: Duration) {
    std::thread::sleep(d);
    black_box(());
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

#[test]
fn smoke() {
    let _serial = serial();
    let detector = detector(false);
    let reports = detector.reports();
    let rt = multi_thread(&detector);
    assert_eq!(
        rt.block_on(async { tokio::spawn(async { 7 }).await.unwrap() }),
        7
    );
    assert!(blaming(&drain(&reports)).is_empty());
}

/// Issue 21's table: each pattern users are told to use for blocking work,
/// in sequence on one runtime, with an idle pause after each: no report.
#[test]
fn the_right_patterns_are_not_reported() {
    let _serial = serial();
    let detector = detector(false);
    let reports = detector.reports();
    let rt = multi_thread(&detector);
    let mut seen = Vec::new();
    let mut check = |pattern: &str| {
        let got = drain(&reports);
        assert!(
            blaming(&got).is_empty(),
            "{pattern}: reported\n{}",
            describe(&got)
        );
        seen.extend(got);
    };
    rt.block_on(async {
        tokio::task::spawn_blocking(|| sleep_in_named_function(BLOCK))
            .await
            .unwrap();
        tokio::time::sleep(IDLE).await;
    });
    check("spawn_blocking");
    rt.block_on(async {
        offload::run(|| sleep_in_named_function(BLOCK))
            .await
            .unwrap();
        tokio::time::sleep(IDLE).await;
    });
    check("offload::run");
    rt.block_on(async { tokio::time::sleep(IDLE).await });
    check("idle");
    rt.block_on(async {
        tokio::spawn(async { tokio::task::block_in_place(|| sleep_in_named_function(BLOCK)) })
            .await
            .unwrap();
    });
    check("block_in_place");
    // The thread that blocked in place may now sit in the blocking pool:
    // not a worker, whatever it last showed.
    rt.block_on(async { tokio::time::sleep(IDLE * 2).await });
    check("idle after block_in_place");
    // Whatever was reported (starved episodes on a loaded machine) ended.
    let started = seen
        .iter()
        .filter(|r| r.phase() == StallPhase::Started)
        .count();
    let ended = seen
        .iter()
        .filter(|r| r.phase() == StallPhase::Ended)
        .count();
    assert_eq!(
        started,
        ended,
        "an episode outlived its cause:\n{}",
        describe(&seen)
    );
}

/// After a `block_in_place`, whichever thread runs the worker is watched:
/// a real stall there is reported, with its cause, while it lasts.
#[test]
fn a_stall_after_block_in_place_is_reported() {
    let _serial = serial();
    let detector = detector(false);
    let reports = detector.reports();
    let rt = multi_thread(&detector);
    let (started, ended) = rt.block_on(async {
        tokio::spawn(async { tokio::task::block_in_place(|| sleep_in_named_function(BLOCK)) })
            .await
            .unwrap();
        tokio::time::sleep(IDLE).await;
        tokio::spawn(async {
            let started = Instant::now();
            sleep_in_named_function(Duration::from_millis(800));
            (started, Instant::now())
        })
        .await
        .unwrap()
    });
    let mut got = Vec::new();
    let first = collect_until(&reports, &mut got, |r| {
        r.phase() != StallPhase::Ended && r.cause().kind() == StallKind::Blocking
    })
    .unwrap_or_else(|| panic!("not reported:\n{}", describe(&got)));
    assert!(
        first.backtrace().contains("sleep_in_named_function"),
        "{first}"
    );
    assert!(first.duration() < THRESHOLD + MARGIN, "{first}");
    assert!(ended.duration_since(started) >= first.duration(), "{first}");
    // Only the stalled thread was blamed: not the one that blocked in
    // place earlier.
    let blamed: std::collections::HashSet<_> = blaming(&got).iter().map(|r| r.tid()).collect();
    assert_eq!(blamed.len(), 1, "{}", describe(&got));
}

/// On request, a long `block_in_place` is reported as what it is:
/// informational, with its own kind, and its end. (Long: telling it needs
/// the names of its stack, which a cold debug build resolves slowly.)
#[test]
fn block_in_place_is_reported_as_such_when_asked() {
    let _serial = serial();
    let detector = detector(true);
    let reports = detector.reports();
    let rt = multi_thread(&detector);
    rt.block_on(async {
        tokio::spawn(async {
            tokio::task::block_in_place(|| sleep_in_named_function(Duration::from_millis(1500)))
        })
        .await
        .unwrap();
        tokio::time::sleep(IDLE).await;
    });
    let mut got = Vec::new();
    let ended = collect_until(&reports, &mut got, |r| {
        r.cause().kind() == StallKind::BlockingInPlace && r.phase() == StallPhase::Ended
    });
    assert!(ended.is_some(), "no end of the block:\n{}", describe(&got));
    assert!(blaming(&got).is_empty(), "{}", describe(&got));
    let in_place: Vec<_> = got
        .iter()
        .filter(|r| r.cause().kind() == StallKind::BlockingInPlace)
        .collect();
    assert!(
        in_place.iter().any(|r| r.phase() == StallPhase::Started),
        "{}",
        describe(&got)
    );
    assert!(
        in_place
            .iter()
            .any(|r| r.backtrace().contains("sleep_in_named_function")),
        "{}",
        describe(&got)
    );
    let text = in_place[0].to_string();
    assert!(text.contains("not a stall"), "{text}");
}

/// A CPU-heavy `block_in_place` that spins: still not a stalled worker.
#[test]
fn a_spinning_block_in_place_is_not_reported() {
    let _serial = serial();
    let detector = detector(false);
    let reports = detector.reports();
    let rt = multi_thread(&detector);
    rt.block_on(async {
        tokio::spawn(async {
            tokio::task::block_in_place(|| spin_in_named_function(BLOCK));
        })
        .await
        .unwrap();
        tokio::time::sleep(IDLE).await;
    });
    let got = drain(&reports);
    assert!(blaming(&got).is_empty(), "{}", describe(&got));
}
