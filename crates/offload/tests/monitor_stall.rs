//! The stall detector on tokio: stalls are reported while they last, with
//! the right place and cause; healthy loads are not reported.
//!
//! Tests run in parallel threads of one process: each builds its own
//! detector and runtime, and only looks at its own reports. Every wait is
//! bounded; time bounds are generous (a loaded 2-core machine).
#![cfg(target_os = "linux")]

use offload::monitor::{StallDetector, StallKind, StallPhase, StallReport};
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const THRESHOLD: Duration = Duration::from_millis(100);
/// How late past the threshold a first report may come on a loaded box.
/// Detection itself takes a tick (5 ms); the rest is for resolving symbols,
/// which takes hundreds of milliseconds the first time in a debug build
/// (see the "benchmark" for release figures).
const MARGIN: Duration = Duration::from_secs(2);
/// Longer than the margin, so "reported while stalled" is checked too.
const STALL: Duration = Duration::from_millis(2500);

/// Reports with the time they arrived.
#[derive(Clone, Default)]
struct Reports(Arc<Mutex<Vec<(Instant, StallReport)>>>);

impl Reports {
    fn detector(&self, threshold: Duration) -> StallDetector {
        let sink = self.clone();
        StallDetector::builder()
            .threshold(threshold)
            .log(false)
            .on_report(move |r| sink.0.lock().unwrap().push((Instant::now(), r.clone())))
            .build()
            .expect("detector")
    }

    fn all(&self) -> Vec<(Instant, StallReport)> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (bounded) for a report, not the final one, of the given kind.
    fn wait_for_kind(&self, kind: StallKind, timeout: Duration) -> Option<(Instant, StallReport)> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .all()
                .into_iter()
                .find(|(_, r)| r.phase() != StallPhase::Ended && r.cause().kind() == kind);
            if found.is_some() {
                return found;
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (bounded) for a report of the given phase.
    fn wait_for(&self, phase: StallPhase, timeout: Duration) -> Option<(Instant, StallReport)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.all().into_iter().find(|(_, r)| r.phase() == phase) {
                return Some(r);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Runs the tests of this file one at a time. They measure how long a
/// runtime thread goes without returning to its scheduler; tests that burn
/// CPU on purpose, run beside them on 2 cores, would starve the "busy but
/// well-behaved" runtimes of CPU time and make them look stalled (a thread
/// waiting for a CPU does not return to its scheduler either).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[inline(never)]
fn spin_in_named_function(d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < end {
        for i in 0..1000 {
            x = black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
    x
}

#[inline(never)]
fn sleep_in_named_function(d: Duration) {
    std::thread::sleep(d);
    black_box(());
}

fn multi_thread(detector: &StallDetector) -> tokio::runtime::Runtime {
    let hooks = detector.hooks();
    let rt = hooks
        .install(&mut tokio::runtime::Builder::new_multi_thread())
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    hooks.attach(rt.handle());
    rt
}

fn current_thread(detector: &StallDetector) -> tokio::runtime::Runtime {
    let hooks = detector.hooks();
    let rt = hooks
        .install(&mut tokio::runtime::Builder::new_current_thread())
        .enable_all()
        .build()
        .expect("runtime");
    hooks.attach(rt.handle());
    rt
}

fn describe(reports: &[(Instant, StallReport)]) -> String {
    reports
        .iter()
        .map(|(_, r)| r.to_string())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Checks the reports of one stall: the first one that blames the code
/// (on a loaded machine a starved report may come first: the thread got
/// too little CPU to be judged yet), and the final one.
fn check_stall(
    reports: &Reports,
    started: Instant,
    ended: Instant,
    function: &str,
    kind: StallKind,
) {
    let (at, first) = reports
        .wait_for_kind(kind, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no {kind:?} report; got:\n{}", describe(&reports.all())));
    assert!(at < ended, "reported after the stall ended:\n{first}");
    assert!(
        at.duration_since(started) < THRESHOLD + MARGIN,
        "reported {:?} after the stall began",
        at.duration_since(started)
    );
    assert!(first.duration() >= THRESHOLD, "{first}");
    assert!(
        first.backtrace().contains(function),
        "backtrace lacks {function}:\n{first}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let last = loop {
        let end = reports.all().into_iter().find(|(_, r)| {
            r.phase() == StallPhase::Ended && r.tid() == first.tid() && r.cause().kind() == kind
        });
        match end {
            Some((_, r)) => break r,
            None if Instant::now() > deadline => {
                panic!("no end report; got:\n{}", describe(&reports.all()))
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let real = ended.duration_since(started);
    assert!(
        last.duration() > real.mul_f64(0.7) && last.duration() < real + MARGIN,
        "stall of {real:?} reported as {:?}:\n{}",
        last.duration(),
        describe(&reports.all())
    );
}

/// Reports that blame the code (CPU-bound, blocking, unknown): a starved
/// report blames the machine, which other builds may load.
fn blaming(reports: &Reports) -> Vec<(Instant, StallReport)> {
    reports
        .all()
        .into_iter()
        .filter(|(_, r)| r.cause().kind().is_code_stall())
        .collect()
}

#[test]
fn smoke() {
    let _serial = serial();
    let reports = Reports::default();
    let detector = reports.detector(THRESHOLD);
    let rt = multi_thread(&detector);
    let v = rt.block_on(async { tokio::spawn(async { 1 + 1 }).await.unwrap() });
    assert_eq!(v, 2);
    assert!(format!("{detector:?}").contains("StallDetector"));
    assert!(blaming(&reports).is_empty(), "{}", describe(&reports.all()));
}

#[test]
fn threshold_below_one_millisecond_is_rejected() {
    let _serial = serial();
    let err = StallDetector::builder()
        .threshold(Duration::from_micros(10))
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, offload::BuildError::Invalid(m) if m.contains("threshold")),
        "{err}"
    );
}

/// Runs `stall` in a task on a multi-thread runtime and checks its reports.
fn stall_on_multi_thread(stall: fn(Duration), function: &str, kind: StallKind) -> Reports {
    let reports = Reports::default();
    let detector = reports.detector(THRESHOLD);
    let rt = multi_thread(&detector);
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let started = Instant::now();
        stall(STALL);
        let _ = tx.send((started, Instant::now()));
    });
    let (started, ended) = rx.recv_timeout(Duration::from_secs(10)).expect("task ran");
    check_stall(&reports, started, ended, function, kind);
    if std::env::var_os("SHOW_REPORTS").is_some() {
        eprintln!("{}", describe(&reports.all()));
    }
    reports
}

/// Runs `stall` in the `block_on` future of a current-thread runtime, whose
/// thread the detector watches through `enter`, and checks its reports.
fn stall_on_current_thread(stall: fn(Duration), function: &str, kind: StallKind) {
    let reports = Reports::default();
    let detector = reports.detector(THRESHOLD);
    let guard = detector.enter();
    let rt = current_thread(&detector);
    let (started, ended) = rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        stall(STALL);
        (started, Instant::now())
    });
    drop(rt);
    drop(guard);
    check_stall(&reports, started, ended, function, kind);
}

fn spin(d: Duration) {
    black_box(spin_in_named_function(d));
}

#[test]
fn cpu_stall_on_multi_thread_runtime() {
    let _serial = serial();
    stall_on_multi_thread(spin, "spin_in_named_function", StallKind::CpuBound);
}

#[test]
fn sleep_stall_on_multi_thread_runtime() {
    let _serial = serial();
    let reports = stall_on_multi_thread(
        sleep_in_named_function,
        "sleep_in_named_function",
        StallKind::Blocking,
    );
    let (_, first) = reports
        .wait_for_kind(StallKind::Blocking, Duration::ZERO)
        .unwrap();
    if let Some(name) = first.cause().syscall_name() {
        assert!(name.contains("sleep"), "{first}");
    }
}

#[test]
fn cpu_stall_on_current_thread_runtime() {
    let _serial = serial();
    stall_on_current_thread(spin, "spin_in_named_function", StallKind::CpuBound);
}

#[test]
fn sleep_stall_on_current_thread_runtime() {
    let _serial = serial();
    stall_on_current_thread(
        sleep_in_named_function,
        "sleep_in_named_function",
        StallKind::Blocking,
    );
}

#[test]
fn named_task_appears_in_the_report() {
    let _serial = serial();
    let reports = Reports::default();
    let detector = reports.detector(THRESHOLD);
    let rt = multi_thread(&detector);
    let handle = rt.spawn(async {
        offload::monitor::spawn_named("the-spinner", async {
            spin_in_named_function(Duration::from_millis(500));
        })
        .await
        .unwrap();
    });
    let (_, first) = reports
        .wait_for(StallPhase::Started, Duration::from_secs(5))
        .expect("a report");
    let task = first.task().expect("task label");
    assert_eq!(task.name(), Some("the-spinner"));
    assert!(
        task.location().file().ends_with("monitor_stall.rs"),
        "{task}"
    );
    rt.block_on(handle).unwrap();
}

#[test]
fn long_stall_repeats_with_growing_intervals() {
    let _serial = serial();
    let reports = Reports::default();
    let detector = reports.detector(THRESHOLD);
    let rt = multi_thread(&detector);
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        sleep_in_named_function(Duration::from_millis(900));
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("task ran");
    reports
        .wait_for(StallPhase::Ended, Duration::from_secs(5))
        .expect("end report");
    let all = reports.all();
    let durations: Vec<Duration> = all
        .iter()
        .filter(|(_, r)| r.phase() != StallPhase::Ended)
        .map(|(_, r)| r.duration())
        .collect();
    // 100, 200, 400, 800 ms: at most a handful, each due after twice the
    // previous one's age.
    assert!(
        durations.len() >= 2 && durations.len() <= 5,
        "{}",
        describe(&all)
    );
    for pair in durations.windows(2) {
        assert!(pair[1] >= pair[0] * 2 - THRESHOLD / 10, "{durations:?}");
    }
}

#[test]
fn busy_but_well_behaved_multi_thread_load_is_not_reported() {
    let _serial = serial();
    let reports = Reports::default();
    let detector = reports.detector(THRESHOLD);
    let rt = multi_thread(&detector);
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_millis(1500);
        let tasks: Vec<_> = (0..2000)
            .map(|i| {
                tokio::spawn(async move {
                    let mut x = i as u64;
                    while Instant::now() < deadline {
                        for _ in 0..100 {
                            x = black_box(x.wrapping_mul(31).wrapping_add(1));
                        }
                        tokio::task::yield_now().await;
                    }
                    x
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    // Let the watchdog look once more.
    std::thread::sleep(THRESHOLD * 2);
    assert!(blaming(&reports).is_empty(), "{}", describe(&reports.all()));
}

#[test]
fn busy_but_well_behaved_current_thread_load_is_not_reported() {
    let _serial = serial();
    let reports = Reports::default();
    let detector = reports.detector(THRESHOLD);
    let guard = detector.enter();
    let rt = current_thread(&detector);
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_millis(1000);
        let tasks: Vec<_> = (0..2000)
            .map(|i| {
                tokio::spawn(async move {
                    let mut x = i as u64;
                    while Instant::now() < deadline {
                        x = black_box(x.wrapping_mul(31).wrapping_add(1));
                        tokio::task::yield_now().await;
                    }
                    x
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    drop(rt);
    drop(guard);
    std::thread::sleep(THRESHOLD * 2);
    assert!(blaming(&reports).is_empty(), "{}", describe(&reports.all()));
}

/// Tasks that each run polls of `poll` (a tenth of the threshold: right
/// use) and yield, until `deadline`.
async fn long_but_legal_polls(tasks: usize, poll: Duration, deadline: Instant) {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    black_box(spin_in_named_function(poll));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
}

/// A multi-thread runtime of `workers` wired with plain closures (the
/// runtime-agnostic set-up: park hooks and heartbeats, no tokio counters).
fn wired_with_closures(detector: &StallDetector, workers: usize) -> tokio::runtime::Runtime {
    let hooks = detector.hooks();
    let (a, b, c, d) = (hooks.clone(), hooks.clone(), hooks.clone(), hooks);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .on_thread_start(move || a.on_thread_start())
        .on_thread_stop(move || b.on_thread_stop())
        .on_thread_park(move || c.on_thread_park())
        .on_thread_unpark(move || d.on_thread_unpark())
        .build()
        .expect("runtime");
    for beat in detector.heartbeats(workers, tokio::time::sleep) {
        rt.spawn(beat);
    }
    rt
}

/// A saturated tokio worker looks at its timers only every 61 polls: with
/// 10 ms polls, 600 ms, six thresholds. A heartbeat that waited for its
/// timer left a healthy worker without evidence for that long, so it was
/// blamed as CPU-bound.
#[test]
fn long_but_legal_polls_on_a_saturated_multi_thread_runtime_are_not_reported() {
    let _serial = serial();
    let reports = Reports::default();
    let detector = reports.detector(THRESHOLD);
    let rt = wired_with_closures(&detector, 2);
    let start = Instant::now();
    let deadline = start + Duration::from_millis(2000);
    rt.block_on(long_but_legal_polls(6, THRESHOLD / 10, deadline));
    std::thread::sleep(THRESHOLD * 2);
    let at: Vec<_> = reports
        .all()
        .iter()
        .map(|(t, r)| (t.duration_since(start), r.phase()))
        .collect();
    assert!(
        blaming(&reports).is_empty(),
        "{at:?} {}",
        describe(&reports.all())
    );
}

/// While the heartbeats move between busy workers (nudges fly: workers go
/// quiet between heartbeats), a worker really stuck in a poll picks none
/// up: it is reported, CPU-bound, with its function, while it lasts.
#[test]
fn a_real_stall_among_long_but_legal_polls_is_still_reported() {
    let _serial = serial();
    let reports = Reports::default();
    let detector = reports.detector(THRESHOLD);
    let rt = wired_with_closures(&detector, 2);
    let deadline = Instant::now() + Duration::from_millis(2500);
    let (started, ended) = rt.block_on(async {
        let load = tokio::spawn(long_but_legal_polls(4, THRESHOLD / 10, deadline));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stall = tokio::spawn(async {
            let started = Instant::now();
            black_box(spin_in_named_function(STALL));
            (started, Instant::now())
        })
        .await
        .unwrap();
        load.await.unwrap();
        stall
    });
    check_stall(
        &reports,
        started,
        ended,
        "spin_in_named_function",
        StallKind::CpuBound,
    );
}

/// Heartbeats end with their detector (they would otherwise keep a
/// runtime busy forever), and on an idle runtime they sleep: no spinning.
#[test]
fn heartbeats_sleep_on_an_idle_runtime_and_end_with_their_detector() {
    let _serial = serial();
    let reports = Reports::default();
    let detector = reports.detector(THRESHOLD);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("hb-idle")
        .enable_all()
        .build()
        .expect("runtime");
    let beats: Vec<_> = detector
        .heartbeats(2, tokio::time::sleep)
        .into_iter()
        .map(|b| rt.spawn(b))
        .collect();
    assert_eq!(beats.len(), 8, "four per worker");
    // Idle for a second: the runtime's threads use a small part of a core
    // (a heartbeat that spun would use one whole). Only theirs: the
    // detector's own threads look up symbols at start.
    let cpu = || -> u64 {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
            .filter(|stat| stat.contains("(hb-idle)"))
            .map(|stat| {
                stat.rsplit(')')
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .skip(11)
                    .take(2)
                    .map(|f| f.parse::<u64>().unwrap())
                    .sum::<u64>()
            })
            .sum()
    };
    let (before, at) = (cpu(), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let ticks = cpu() - before;
    let wall_ticks = (at.elapsed().as_secs_f64() * 100.0) as u64;
    assert!(
        ticks * 4 < wall_ticks,
        "idle runtime with heartbeats used {ticks} of {wall_ticks} clock ticks"
    );
    let named = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .filter(|stat| stat.contains("(hb-idle)"))
        .count();
    assert_eq!(named, 2, "the runtime's threads were measured");
    drop(detector);
    rt.block_on(async {
        for beat in beats {
            tokio::time::timeout(Duration::from_secs(5), beat)
                .await
                .expect("a heartbeat outlived its detector by 5 s")
                .unwrap();
        }
    });
}

/// The same on a current-thread runtime, which looks at its timers every
/// 61 polls and at tasks woken from other threads every 31.
#[test]
fn long_but_legal_polls_on_a_current_thread_runtime_are_not_reported() {
    let _serial = serial();
    let reports = Reports::default();
    let detector = reports.detector(THRESHOLD);
    let guard = detector.enter();
    let rt = current_thread(&detector);
    let deadline = Instant::now() + Duration::from_millis(2000);
    rt.block_on(long_but_legal_polls(4, THRESHOLD / 10, deadline));
    drop(rt);
    drop(guard);
    std::thread::sleep(THRESHOLD * 2);
    assert!(blaming(&reports).is_empty(), "{}", describe(&reports.all()));
}

#[test]
fn idle_runtime_is_not_reported_and_blocking_pool_may_block() {
    let _serial = serial();
    let reports = Reports::default();
    let detector = reports.detector(THRESHOLD);
    let rt = multi_thread(&detector);
    rt.block_on(async {
        // spawn_blocking threads start through on_thread_start too; they
        // are allowed to block.
        tokio::task::spawn_blocking(|| sleep_in_named_function(Duration::from_millis(400)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    assert!(blaming(&reports).is_empty(), "{}", describe(&reports.all()));
}
