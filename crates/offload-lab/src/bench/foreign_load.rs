//! The price of `Priority::Idle` (the idle scheduling class for good), and
//! why `Background` guards it: with CPU-bound threads of normal priority
//! elsewhere in the program (or on a machine without CPU groups), an
//! idle-class pool gets only what they leave, where a `Background` pool
//! (idle class under the starvation guard, which moves starved threads to
//! nice +10) keeps a proportional share. Two normal-priority threads spin on this 2-core machine while a
//! current-thread runtime awaits one trivial job at a time on a 2-thread
//! pool at each priority, alternately.

use std::time::{Duration, Instant};

use offload::{Priority, ThreadPool};

use super::hogs::Hogs;
use crate::report::{BenchLine, Better, percentiles};

/// What one priority achieved under the foreign load.
struct Outcome {
    name: &'static str,
    trips_us: Vec<f64>,
    jobs: u64,
    elapsed: Duration,
}

/// Awaits one trivial job at a time on `pool` for `window`.
fn measure(pool: &ThreadPool, window: Duration, out: &mut Outcome) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let start = Instant::now();
        while start.elapsed() < window {
            let t = Instant::now();
            pool.run(|| std::hint::black_box(1u64))
                .await
                .expect("trivial job");
            out.trips_us.push(t.elapsed().as_secs_f64() * 1e6);
            out.jobs += 1;
        }
        out.elapsed += start.elapsed();
    });
    Ok(())
}

/// Runs the comparison; prints a table unless `json`; returns the lines.
pub(super) fn run(quick: bool, json: bool) -> anyhow::Result<Vec<BenchLine>> {
    let (window, rounds) = if quick {
        (Duration::from_millis(300), 1)
    } else {
        (Duration::from_secs(2), 2)
    };
    let priorities = [
        ("offload_threadpool_2_idle", Priority::Idle),
        ("offload_threadpool_2_background", Priority::Background),
        ("offload_threadpool_2", Priority::Normal),
    ];
    let mut pools = Vec::new();
    let mut outcomes = Vec::new();
    for (name, p) in priorities {
        pools.push(
            ThreadPool::builder()
                .name("lab-fl")
                .threads(2)
                .priority(p)
                .build()?,
        );
        outcomes.push(Outcome {
            name,
            trips_us: Vec::new(),
            jobs: 0,
            elapsed: Duration::ZERO,
        });
    }
    let hogs = Hogs::start(2)?;
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1, 2]
        } else {
            vec![2, 1, 0]
        };
        for i in order {
            measure(&pools[i], window, &mut outcomes[i])?;
        }
    }
    drop(hogs);

    let stats: Vec<(f64, f64, f64)> = outcomes
        .iter_mut()
        .map(|o| {
            let (_, p99) = percentiles(&mut o.trips_us);
            let worst = o.trips_us.iter().copied().fold(0.0, f64::max);
            (p99, worst, o.jobs as f64 / o.elapsed.as_secs_f64())
        })
        .collect();
    if !json {
        println!();
        println!(
            "foreign load: 2 normal-priority threads spinning; one trivial job at a time from a current-thread runtime, {rounds} x {window:?} per pool"
        );
        println!(
            "{:<34} {:>14} {:>14} {:>12}",
            "pool", "p99 µs", "worst µs", "jobs/s"
        );
        for (o, (p99, worst, rate)) in outcomes.iter().zip(&stats) {
            println!("{:<34} {p99:>14.1} {worst:>14.1} {rate:>12.0}", o.name);
        }
    }
    let (idle, bg) = (&stats[0], &stats[1]);
    let (idle_name, bg_name) = (outcomes[0].name, outcomes[1].name);
    Ok(vec![
        BenchLine::new(
            "threads",
            "foreign_load_round_trip_p99",
            idle_name,
            bg_name,
            "us",
            idle.0,
            bg.0,
            Better::Lower,
        ),
        BenchLine::new(
            "threads",
            "foreign_load_throughput",
            idle_name,
            bg_name,
            "jobs/s",
            idle.2,
            bg.2,
            Better::Higher,
        ),
    ])
}
