//! `bench monitor`: what the loop monitor costs, and how fast it notices.
//!
//! - `overhead`: throughput of a tokio spawn-and-yield workload with the
//!   stall detector and the lag monitor on (ours) and off (peer), runs
//!   alternated; goal: at most 1 % loss.
//! - `detection_latency`: time from the start of a 200 ms stall to the
//!   first report, with a 100 ms threshold (peer: the threshold itself);
//!   goal: at most threshold + 10 ms.
//! - `long_polls_false_blame`: a saturated 2-worker runtime whose 6 tasks
//!   run 10 ms polls and yield (right use, a tenth of the threshold). Ours:
//!   episodes that blame the code; peer: every episode raised. Goal: 0.
//! - `contention_false_blame`: issue 19's machine. A 4-worker runtime,
//!   more workers than cores, 8 tasks that spin 5 ms and yield (no task
//!   holds its worker longer), and as many threads spinning outside the
//!   runtime as there are cores. Ours: stall episodes that blame the code
//!   (CPU-bound or blocking); peer: every episode the detector raised (a
//!   verdict from CPU share and state alone blamed them all). Goal: 0.
//! - `contention_detection_latency`: under the same contention, a task
//!   doing 200 ms of CPU work (however long its share of a core makes
//!   it): time from its start to the first report that calls it CPU-bound
//!   (peer: the threshold). It is CPU-bound once its own CPU time reaches
//!   the threshold; with a third of a core that is about three thresholds
//!   in.

use super::BenchArgs;
use super::hogs::Hogs;
use crate::report::{self, BenchLine, Better};
use offload::monitor::{LagMonitor, StallDetector, StallKind, StallPhase};
use std::hint::black_box;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SUITE: &str = "monitor";

/// The poll length of issue 19's well-behaved tasks.
const FIVE_MS: Duration = Duration::from_millis(5);

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<Vec<BenchLine>> {
    let mut lines = vec![overhead(args)?, detection_latency(args)?, long_polls(args)?];
    lines.extend(contention(args)?);
    Ok(lines)
}

/// A multi-thread runtime of `workers` watched by `detector`, wired with
/// plain closures (the runtime-agnostic API: this crate does not enable
/// offload's `tokio` feature, so no tokio counters help the detector),
/// with the detector's heartbeats for that many workers.
fn watched_runtime(
    detector: &StallDetector,
    workers: usize,
) -> anyhow::Result<tokio::runtime::Runtime> {
    let hooks = detector.hooks();
    let (a, b, c, d) = (hooks.clone(), hooks.clone(), hooks.clone(), hooks);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .on_thread_start(move || a.on_thread_start())
        .on_thread_stop(move || b.on_thread_stop())
        .on_thread_park(move || c.on_thread_park())
        .on_thread_unpark(move || d.on_thread_unpark())
        .build()?;
    for beat in detector.heartbeats(workers, tokio::time::sleep) {
        rt.spawn(beat);
    }
    Ok(rt)
}

/// Spawns `tasks` tasks that each yield `yields` times; returns polls/s.
fn workload(rt: &tokio::runtime::Runtime, tasks: usize, yields: usize) -> f64 {
    let start = Instant::now();
    rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..yields {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.await;
        }
    });
    (tasks * (yields + 1)) as f64 / start.elapsed().as_secs_f64()
}

fn overhead(args: &BenchArgs) -> anyhow::Result<BenchLine> {
    let (rounds, tasks, yields) = if args.quick {
        (3, 2_000, 20)
    } else {
        (21, 50_000, 50)
    };
    let plain = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let detector = StallDetector::builder()
        .threshold(Duration::from_millis(100))
        .build()?;
    let watched = watched_runtime(&detector, 2)?;
    let lag = LagMonitor::builder()
        .interval(Duration::from_millis(10))
        .build()?;
    watched.spawn(lag.ticker(tokio::time::sleep));
    // Warm both up, then alternate.
    workload(&plain, tasks / 10, yields);
    workload(&watched, tasks / 10, yields);
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    // Alternate, swapping which goes first every round, so neither side
    // always runs right after the other's burst.
    for round in 0..rounds {
        if round % 2 == 0 {
            peer.push(workload(&plain, tasks, yields));
            ours.push(workload(&watched, tasks, yields));
        } else {
            ours.push(workload(&watched, tasks, yields));
            peer.push(workload(&plain, tasks, yields));
        }
    }
    let (ours_median, _) = report::percentiles(&mut ours);
    let (peer_median, _) = report::percentiles(&mut peer);
    drop(lag);
    Ok(BenchLine::new(
        SUITE,
        "overhead",
        "detector+lag monitor",
        "no monitoring",
        "polls/s (median)",
        ours_median,
        peer_median,
        Better::Higher,
    ))
}

#[inline(never)]
fn stall_for(d: Duration) {
    std::thread::sleep(d);
}

fn detection_latency(args: &BenchArgs) -> anyhow::Result<BenchLine> {
    let threshold = Duration::from_millis(100);
    let rounds = if args.quick { 3 } else { 10 };
    let (tx, rx) = mpsc::channel::<Instant>();
    let detector = StallDetector::builder()
        .threshold(threshold)
        .log(false)
        .on_report(move |r| {
            if r.phase() == offload::monitor::StallPhase::Started {
                let _ = tx.send(Instant::now());
            }
        })
        .build()?;
    let rt = watched_runtime(&detector, 2)?;
    // Let the symbolizer warm up, as it would in a long-running service.
    std::thread::sleep(Duration::from_millis(1500));
    let mut latencies = Vec::new();
    for _ in 0..rounds {
        let started = rt.block_on(async {
            tokio::spawn(async {
                let started = Instant::now();
                stall_for(Duration::from_millis(200));
                started
            })
            .await
        })?;
        let reported = rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow::anyhow!("a 200 ms stall was not reported"))?;
        latencies.push(reported.duration_since(started).as_secs_f64() * 1e3);
        // Let the end report go by, and the loop settle.
        std::thread::sleep(Duration::from_millis(300));
        while rx.try_recv().is_ok() {}
    }
    let (median, p99) = report::percentiles(&mut latencies);
    eprintln!("detection latency: median {median:.1} ms, p99 {p99:.1} ms");
    Ok(BenchLine::new(
        SUITE,
        "detection_latency",
        "stall detector (median)",
        "threshold",
        "ms",
        median,
        threshold.as_secs_f64() * 1e3,
        Better::Lower,
    ))
}

/// The calling thread's CPU time so far (Linux `schedstat`); elsewhere the
/// wall clock stands in.
fn own_cpu_time(origin: Instant) -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .map_or_else(|| origin.elapsed(), Duration::from_nanos)
}

/// The kernel's id of the calling thread (Linux), to match its reports.
fn own_tid() -> Option<i32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Spins until this thread has used `cpu` of CPU time: the same work,
/// whatever share of a core it gets.
#[inline(never)]
fn cpu_work(cpu: Duration) {
    let origin = Instant::now();
    let until = own_cpu_time(origin) + cpu;
    let mut x = 0u64;
    while own_cpu_time(origin) < until {
        for i in 0..10_000 {
            x = black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
    black_box(x);
}

/// Tasks that each spin `poll` and yield, until `deadline`.
async fn well_behaved_load(tasks: usize, poll: Duration, deadline: Instant) {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let step = Instant::now() + poll;
                    while Instant::now() < step {
                        black_box(0u64);
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.await;
    }
}

/// (arrival, phase, kind, thread, cause) of a report.
type Seen = (Instant, StallPhase, StallKind, Option<i32>, String);

/// A detector that sends every report (no rate limit) to the receiver.
fn recording_detector(
    threshold: Duration,
) -> anyhow::Result<(StallDetector, mpsc::Receiver<Seen>)> {
    let (tx, reports) = mpsc::channel::<Seen>();
    let detector = StallDetector::builder()
        .threshold(threshold)
        .log(false)
        // Count every episode, whatever the rate limits would show.
        .max_reports_per_minute(10_000)
        .max_starved_reports_per_minute(10_000)
        .on_report(move |r| {
            let cause = format!("{:?} {} after {:?}", r.phase(), r.cause(), r.duration());
            let _ = tx.send((Instant::now(), r.phase(), r.cause().kind(), r.tid(), cause));
        })
        .build()?;
    Ok((detector, reports))
}

/// (episodes raised, episodes that blamed the code) among the reports
/// received so far; prints the cause of each blaming report. An episode
/// counts once: at its first report, or when a starved one turns into a
/// stall (the repeat that says so). Episodes are told apart by their
/// thread: one at a time per thread.
fn episodes(reports: &mpsc::Receiver<Seen>, case: &str) -> (u32, u32) {
    let (mut raised, mut blamed) = (0u32, 0u32);
    let mut starved_now = std::collections::HashSet::new();
    for (_, phase, kind, tid, cause) in reports.try_iter() {
        if kind.is_code_stall() {
            eprintln!("{case}: blamed: {cause}");
        }
        match phase {
            StallPhase::Started => {
                raised += 1;
                blamed += u32::from(kind.is_code_stall());
                if kind == StallKind::Starved {
                    starved_now.insert(tid);
                }
            }
            StallPhase::Ongoing(_) if kind.is_code_stall() && starved_now.remove(&tid) => {
                blamed += 1;
            }
            StallPhase::Ended => {
                starved_now.remove(&tid);
            }
            _ => {}
        }
    }
    (raised, blamed)
}

/// A false-blame case's line: episodes that blamed the code (ours)
/// against every episode raised (peer); goal 0.
fn false_blame_line(case: &str, raised: u32, blamed: u32) -> BenchLine {
    BenchLine::new(
        SUITE,
        case,
        "stalls blaming the code",
        "episodes raised",
        "episodes",
        f64::from(blamed),
        f64::from(raised),
        Better::Lower,
    )
}

/// Issue 19's blind spot without the hogs: a saturated 2-worker runtime
/// whose 6 tasks each run 10 ms polls (a tenth of the threshold: right
/// use). A saturated tokio worker looks at its timers every 61 polls, so
/// heartbeats that waited for their timers left a worker 600 ms without
/// evidence, and it was blamed as CPU-bound (6 of 6 runs of a test before
/// the heartbeats stayed with busy workers, `monitor/README.md`).
fn long_polls(args: &BenchArgs) -> anyhow::Result<BenchLine> {
    let threshold = Duration::from_millis(100);
    let load_for = if args.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(6)
    };
    let (detector, reports) = recording_detector(threshold)?;
    let rt = watched_runtime(&detector, 2)?;
    rt.block_on(well_behaved_load(
        6,
        threshold / 10,
        Instant::now() + load_for,
    ));
    std::thread::sleep(threshold * 3);
    let (raised, blamed) = episodes(&reports, "long polls");
    eprintln!(
        "long polls: {raised} episodes raised in {load_for:?} of 10 ms polls on 2 saturated \
         workers, {blamed} blamed the code"
    );
    Ok(false_blame_line("long_polls_false_blame", raised, blamed))
}

fn contention(args: &BenchArgs) -> anyhow::Result<Vec<BenchLine>> {
    let threshold = Duration::from_millis(100);
    let (load_for, rounds) = if args.quick {
        (Duration::from_secs(1), 1)
    } else {
        (Duration::from_secs(6), 5)
    };
    let (detector, reports) = recording_detector(threshold)?;
    let rt = watched_runtime(&detector, 4)?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs = Hogs::start(cores)?;
    std::thread::sleep(Duration::from_millis(500));

    // False blame: only well-behaved tasks run.
    rt.block_on(well_behaved_load(8, FIVE_MS, Instant::now() + load_for));
    std::thread::sleep(threshold * 3);
    let (raised, blamed) = episodes(&reports, "contention");
    eprintln!(
        "contention: {raised} episodes raised in {load_for:?} of well-behaved load, \
         {blamed} blamed the code"
    );

    // Detection latency of a real spin under the same contention.
    let mut latencies = Vec::new();
    for _ in 0..rounds {
        let deadline = Instant::now() + Duration::from_secs(3);
        let (started, tid) = rt.block_on(async {
            let background = tokio::spawn(well_behaved_load(7, FIVE_MS, deadline));
            let spin = tokio::spawn(async {
                let started = Instant::now();
                cpu_work(Duration::from_millis(200));
                (started, own_tid())
            })
            .await;
            let _ = background.await;
            spin
        })?;
        // Let the reports of this round arrive, then look for the first
        // one that calls the spin's thread CPU-bound after it began.
        std::thread::sleep(Duration::from_millis(500));
        let latency = reports
            .try_iter()
            .find(|&(at, phase, kind, reported, _)| {
                reported == tid
                    && at >= started
                    && phase != StallPhase::Ended
                    && kind == StallKind::CpuBound
            })
            .map(|(at, ..)| at.duration_since(started))
            .ok_or_else(|| anyhow::anyhow!("a 200 ms spin under contention went unreported"))?;
        latencies.push(latency.as_secs_f64() * 1e3);
    }
    drop(hogs);
    let (median, p99) = report::percentiles(&mut latencies);
    eprintln!("contention detection latency: median {median:.1} ms, p99 {p99:.1} ms");
    Ok(vec![
        false_blame_line("contention_false_blame", raised, blamed),
        BenchLine::new(
            SUITE,
            "contention_detection_latency",
            "stall detector (median)",
            "threshold",
            "ms",
            median,
            threshold.as_secs_f64() * 1e3,
            Better::Lower,
        ),
    ])
}
