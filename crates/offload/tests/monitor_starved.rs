//! Stall reports blame the right thing on a machine short of CPU: a loop
//! thread that is runnable but not running is starved (the machine's
//! fault, said so, and never blamed on its task), while a task that really
//! spins or sleeps is still reported as CPU-bound or blocking.
//!
//! The conditions are made with threads that spin outside the runtime
//! ("hogs"). Bounds are generous: the machine may be loaded by others too.
#![cfg(target_os = "linux")]

use offload::monitor::{StallDetector, StallKind, StallPhase, StallReport, StallReports};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const THRESHOLD: Duration = Duration::from_millis(100);

/// One test at a time: each makes the machine short of CPU on purpose.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn detector() -> StallDetector {
    StallDetector::builder()
        .threshold(THRESHOLD)
        .log(false)
        // Every starved episode, for the test to see.
        .max_starved_reports_per_minute(1000)
        .build()
        .expect("detector")
}

fn drain(reports: &StallReports) -> Vec<StallReport> {
    std::iter::from_fn(|| reports.try_recv()).collect()
}

fn describe(reports: &[StallReport]) -> String {
    reports
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Collects reports until one satisfies `done` (bounded wait).
fn wait_for(
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

/// Threads that spin until dropped, optionally pinned to one CPU.
struct Hogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hogs {
    fn start(n: usize, cpu: Option<usize>) -> Hogs {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|i| {
                let stop = Arc::clone(&stop);
                std::thread::Builder::new()
                    .name(format!("hog-{i}"))
                    .spawn(move || {
                        if let Some(cpu) = cpu {
                            pin_to(cpu);
                        }
                        let mut x = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            x = black_box(x.wrapping_mul(31).wrapping_add(1));
                        }
                    })
                    .expect("spawn hog")
            })
            .collect();
        Hogs { stop, threads }
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A CPU this process may run on.
fn some_allowed_cpu() -> usize {
    // SAFETY: an all-zero cpu_set_t is a valid empty set for the kernel to
    // fill in; the size passed is its own.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is writable and sized.
    let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } == 0;
    assert!(ok, "sched_getaffinity");
    // SAFETY: CPU_ISSET reads the set we own, within CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .expect("an allowed CPU")
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: as above: an empty set, then one CPU added, then applied to
    // the calling thread (pid 0).
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) == 0
    };
    assert!(ok, "sched_setaffinity");
}

/// Puts the calling thread in the idle scheduling class: it runs only when
/// its CPU has nothing else to run. Lowering one's own priority needs no
/// privilege.
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid, initialised
    // sched_param.
    let ok = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0;
    assert!(ok, "sched_setscheduler(SCHED_IDLE)");
}

/// The calling thread's time on a CPU so far.
fn own_cpu_time() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .expect("on-CPU ns");
    Duration::from_nanos(ns)
}

/// Spins until this thread has used `cpu` of CPU time: the same work
/// whatever share of a core it gets.
#[inline(never)]
fn spin_cpu_time(cpu: Duration) -> u64 {
    let until = own_cpu_time() + cpu;
    let mut x = 0u64;
    while own_cpu_time() < until {
        for i in 0..10_000 {
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

#[test]
fn smoke() {
    let _serial = serial();
    let detector = detector();
    let reports = detector.reports();
    assert!(drain(&reports).is_empty());
    // The kernel brings a running thread's CPU time up to date at its
    // scheduler ticks: after 50 ms of spinning it has moved.
    let before = own_cpu_time();
    let end = Instant::now() + Duration::from_millis(50);
    while Instant::now() < end {
        black_box(0u64);
    }
    assert!(own_cpu_time() > before);
}

/// A healthy loop thread that gets no CPU (idle priority, sharing its one
/// CPU with spinning threads) is reported as starved, with its run-queue
/// wait, and without blaming what it runs; the episode ends once it gets
/// the CPU back.
#[test]
fn a_loop_thread_without_cpu_is_starved_not_stalled() {
    let _serial = serial();
    let detector = Arc::new(detector());
    let reports = detector.reports();
    let cpu = some_allowed_cpu();
    let stop = Arc::new(AtomicBool::new(false));
    let watched = Arc::clone(&detector);
    let stop_loop = Arc::clone(&stop);
    let lp = std::thread::Builder::new()
        .name("starved-loop".to_owned())
        .spawn(move || {
            pin_to(cpu);
            idle_priority();
            let _guard = watched.enter();
            // A healthy loop: short steps, progress after each.
            while !stop_loop.load(Ordering::Relaxed) {
                let step = Instant::now() + Duration::from_millis(1);
                while Instant::now() < step {
                    black_box(0u64);
                }
                offload::monitor::beat();
            }
        })
        .expect("spawn loop");
    // The loop runs first, then the hogs take its CPU away.
    std::thread::sleep(Duration::from_millis(50));
    let hogs = Hogs::start(2, Some(cpu));
    let mut got = Vec::new();
    let starved = wait_for(&reports, &mut got, |r| {
        r.phase() == StallPhase::Started && r.cause().kind() == StallKind::Starved
    });
    drop(hogs);
    stop.store(true, Ordering::Relaxed);
    lp.join().expect("loop thread");
    let starved = starved.unwrap_or_else(|| panic!("not reported:\n{}", describe(&got)));
    let cause = starved.cause();
    let wait = cause.run_queue_wait().expect("run-queue wait measured");
    let measured = cause.measured().expect("measured");
    assert!(wait >= measured / 2, "{starved}");
    let text = starved.to_string();
    assert!(text.contains("runnable but waiting for a CPU"), "{text}");
    assert!(text.contains("not the cause"), "{text}");
    assert!(
        starved.advice().contains("not a defect of the task"),
        "{text}"
    );
    let blamed: Vec<_> = got
        .iter()
        .filter(|r| r.cause().kind().is_code_stall())
        .collect();
    assert!(blamed.is_empty(), "{}", describe(&got));
    let ended = wait_for(&reports, &mut got, |r| {
        r.phase() == StallPhase::Ended && r.cause().kind() == StallKind::Starved
    });
    assert!(ended.is_some(), "the episode ended:\n{}", describe(&got));
}

/// Issue 19's machine: a runtime with more workers than cores, tasks that
/// spin 5 ms and yield (none holds its worker for long), and threads
/// spinning outside the runtime. Whatever is reported must not blame the
/// code; then, under the same contention, a task that really burns CPU
/// is reported CPU-bound, and one that sleeps, blocking.
#[test]
fn contention_is_not_blamed_on_tasks_but_real_stalls_are() {
    let _serial = serial();
    let detector = detector();
    let reports = detector.reports();
    let rt = detector
        .watch(tokio::runtime::Builder::new_multi_thread().worker_threads(4))
        .expect("runtime");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs = Hogs::start(cores.max(2), None);

    // Well-behaved tasks under contention: 1.5 s.
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_millis(1500);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let step = Instant::now() + Duration::from_millis(5);
                        while Instant::now() < step {
                            black_box(0u64);
                        }
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    std::thread::sleep(THRESHOLD * 2);
    let mut got = drain(&reports);
    let blamed: Vec<_> = got
        .iter()
        .filter(|r| r.cause().kind().is_code_stall())
        .collect();
    assert!(blamed.is_empty(), "false blame:\n{}", describe(&got));

    // A real spin (300 ms of CPU work, however long it takes to get it):
    // CPU-bound, while it lasts.
    let (started, ended) = rt.block_on(async {
        tokio::spawn(async {
            let started = Instant::now();
            black_box(spin_cpu_time(Duration::from_millis(300)));
            (started, Instant::now())
        })
        .await
        .unwrap()
    });
    let cpu = wait_for(&reports, &mut got, |r| {
        r.phase() != StallPhase::Ended && r.cause().kind() == StallKind::CpuBound
    })
    .unwrap_or_else(|| panic!("spin not reported CPU-bound:\n{}", describe(&got)));
    assert!(cpu.backtrace().contains("spin_cpu_time"), "{cpu}");
    assert!(cpu.duration() < ended.duration_since(started), "{cpu}");
    // Its end, before the next stall: two long polls in a row on one
    // worker, with no park or heartbeat between them, are one episode.
    let end = wait_for(&reports, &mut got, |r| {
        r.phase() == StallPhase::Ended && r.tid() == cpu.tid()
    });
    assert!(
        end.is_some(),
        "the spin's episode ended:\n{}",
        describe(&got)
    );

    // A real sleep: blocking.
    rt.block_on(async {
        tokio::spawn(async { sleep_in_named_function(Duration::from_millis(400)) })
            .await
            .unwrap();
    });
    let blocking = wait_for(&reports, &mut got, |r| {
        r.phase() != StallPhase::Ended && r.cause().kind() == StallKind::Blocking
    })
    .unwrap_or_else(|| panic!("sleep not reported blocking:\n{}", describe(&got)));
    assert!(
        blocking.backtrace().contains("sleep_in_named_function"),
        "{blocking}"
    );
    drop(hogs);
}
