//! `bench threads`: our thread pools against the blocking pools of tokio,
//! smol (`blocking`) and rayon, and against the *floor* (a hand-rolled
//! minimal pool, see `floor.rs`: what the hardware allows), on trivial
//! jobs, so that what is measured is the pool's own overhead: hand-over,
//! wake-up, result delivery.
//!
//! Two submission shapes: `throughput` (a burst: each of 64 tasks submits
//! its share at once and awaits them all, so most callers wait for a queue
//! slot) and `throughput_steady` (each of 64 tasks awaits one job at a
//! time: the shape of a service whose handlers each offload one call).
//!
//! One more peer is a diagnostic, not a competitor:
//! `injector_spin_2_offload_cell` is the floor's queue and threads carrying
//! offload's own job cell (through `run_in_executor`), so the pool's cost
//! can be told from the cell's.
//!
//! Every contender runs in the same process on the same tokio runtime
//! (2 worker threads), in alternating rounds, so that a noisy neighbour or
//! a frequency change hits all of them alike.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use offload::{Priority, ThreadPool};

use super::BenchArgs;
use super::floor::FloorPool;
use crate::report::{BenchLine, Better, percentiles};

/// A contender: submits a trivial job and resolves when it has run.
type Submit = Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = u64> + Send>> + Send + Sync>;

struct Contender {
    name: &'static str,
    ours: bool,
    submit: Submit,
}

/// The job every contender runs: trivial, but not optimised away.
fn trivial(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(3)
}

fn contenders(queue_capacity: Option<usize>) -> anyhow::Result<Vec<Contender>> {
    let pool_at = |priority| {
        let mut builder = ThreadPool::builder()
            .name("bench")
            .threads(2)
            .priority(priority);
        if let Some(cap) = queue_capacity {
            builder = builder.queue_capacity(cap);
        }
        builder.build().map(Arc::new)
    };
    // The floor and every peer run at the callers' priority, so the pool
    // that is compared with them does too: this suite measures a pool's
    // own overhead. The default (Background) pool is measured
    // beside it: with trivial jobs its threads get less of the cores the
    // callers' threads also want, which is its purpose and its price.
    let pool = pool_at(Priority::Normal)?;
    let background = pool_at(Priority::Background)?;
    let floor = Arc::new(FloorPool::new(2));
    // The same minimal queue and threads carrying offload's job cell: not
    // a competitor but a diagnostic (no `floor` in its name, so the
    // floor's lines stay unambiguous).
    let injector_cell = Arc::new(FloorPool::new(2));
    Ok(vec![
        Contender {
            name: "offload_threadpool_2",
            ours: true,
            submit: Arc::new(move |x| {
                let run = pool.run(move || trivial(x));
                Box::pin(async move { run.await.expect("trivial job") })
            }),
        },
        Contender {
            name: "offload_threadpool_2_background",
            ours: true,
            submit: Arc::new(move |x| {
                let run = background.run(move || trivial(x));
                Box::pin(async move { run.await.expect("trivial job") })
            }),
        },
        Contender {
            name: "offload_default_pool",
            ours: true,
            submit: Arc::new(|x| {
                let run = offload::run(move || trivial(x));
                Box::pin(async move { run.await.expect("trivial job") })
            }),
        },
        Contender {
            name: "tokio_spawn_blocking",
            ours: false,
            submit: Arc::new(|x| {
                let h = tokio::task::spawn_blocking(move || trivial(x));
                Box::pin(async move { h.await.expect("trivial job") })
            }),
        },
        Contender {
            name: "blocking_unblock",
            ours: false,
            submit: Arc::new(|x| Box::pin(blocking::unblock(move || trivial(x)))),
        },
        Contender {
            name: "floor_spin_pool_2",
            ours: false,
            submit: Arc::new(move |x| {
                let rx = floor.run(move || trivial(x));
                Box::pin(async move { rx.await.expect("trivial job") })
            }),
        },
        Contender {
            name: "injector_spin_2_offload_cell",
            ours: false,
            submit: Arc::new(move |x| {
                let run = offload::run_in_executor(&*injector_cell, move || trivial(x));
                Box::pin(async move { run.await.expect("trivial job") })
            }),
        },
        Contender {
            name: "rayon_spawn_oneshot",
            ours: false,
            submit: Arc::new(|x| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                rayon::spawn(move || {
                    let _ = tx.send(trivial(x));
                });
                Box::pin(async move { rx.await.expect("trivial job") })
            }),
        },
    ])
}

/// Round trips awaited one at a time from one task, in microseconds.
async fn round_trips(c: &Contender, n: usize, out: &mut Vec<f64>) {
    for i in 0..n as u64 {
        let t = Instant::now();
        let r = (c.submit)(i).await;
        out.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(r, trivial(i));
    }
}

/// `jobs` trivial jobs submitted from `tasks` concurrent tokio tasks, each
/// submitting its share at once and awaiting them all; jobs per second.
async fn throughput(c: &Contender, jobs: usize, tasks: usize) -> f64 {
    let per_task = jobs / tasks;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let submit = c.submit.clone();
            tokio::spawn(async move {
                let futs = (0..per_task as u64).map(|i| submit(t as u64 * 1_000_000 + i));
                join_all(futs).await.len()
            })
        })
        .collect();
    let mut done = 0;
    for h in handles {
        done += h.await.expect("throughput task");
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(done, per_task * tasks);
    done as f64 / secs
}

/// `jobs` trivial jobs from `tasks` concurrent tokio tasks, each awaiting
/// one job at a time; jobs per second.
async fn throughput_steady(c: &Contender, jobs: usize, tasks: usize) -> f64 {
    let per_task = jobs / tasks;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let submit = c.submit.clone();
            tokio::spawn(async move {
                for i in 0..per_task as u64 {
                    submit(t as u64 * 1_000_000 + i).await;
                }
                per_task
            })
        })
        .collect();
    let mut done = 0;
    for h in handles {
        done += h.await.expect("throughput task");
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(done, per_task * tasks);
    done as f64 / secs
}

/// Round-trip medians (µs) of `c` submitted inside an entered tracing span
/// and outside any, alternated round by round.
async fn span_round_trips(c: &Contender, rounds: usize, n: usize) -> (f64, f64) {
    let dispatch = tracing::Dispatch::new(span_subscriber::CurrentSpanOnly::default());
    let (mut in_span, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for i in 0..n as u64 {
            let t = Instant::now();
            let fut = tracing::dispatcher::with_default(&dispatch, || {
                let span = tracing::info_span!("request");
                let _entered = span.enter();
                (c.submit)(i)
            });
            assert_eq!(fut.await, trivial(i));
            in_span.push(t.elapsed().as_secs_f64() * 1e6);
        }
        round_trips(c, n, &mut plain).await;
    }
    (percentiles(&mut in_span).0, percentiles(&mut plain).0)
}

/// A tracing subscriber that does nothing but know each thread's current
/// span: the least a real subscriber (tracing-subscriber's registry) does,
/// so that the measured cost is the pool's carrying of the span.
mod span_subscriber {
    use std::cell::RefCell;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};
    use tracing_core::span::Current;

    #[derive(Default)]
    pub(super) struct CurrentSpanOnly {
        next: AtomicU64,
        /// Metadata of the spans by id (all share one callsite here).
        metadata: Mutex<Option<&'static Metadata<'static>>>,
    }

    thread_local! {
        static STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    }

    impl Subscriber for CurrentSpanOnly {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, attrs: &Attributes<'_>) -> Id {
            *self.metadata.lock().unwrap() = Some(attrs.metadata());
            Id::from_u64(self.next.fetch_add(1, Relaxed) + 1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &Event<'_>) {}
        fn enter(&self, span: &Id) {
            STACK.with(|s| s.borrow_mut().push(span.into_u64()));
        }
        fn exit(&self, _: &Id) {
            STACK.with(|s| s.borrow_mut().pop());
        }
        fn current_span(&self) -> Current {
            match (
                STACK.with(|s| s.borrow().last().copied()),
                *self.metadata.lock().unwrap(),
            ) {
                (Some(id), Some(meta)) => Current::new(Id::from_u64(id), meta),
                _ => Current::none(),
            }
        }
    }
}

/// Threads of this process right now (Linux; 0 elsewhere).
fn process_threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<Vec<BenchLine>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (rounds, trips_per_round, jobs) = if args.quick {
        (2, 500, 10_000)
    } else {
        (5, 5_000, 100_000)
    };
    const TASKS: usize = 64;

    rt.block_on(async {
        let mut contenders = contenders(args.queue_capacity)?;
        // For profiling one contender: `OFFLOAD_BENCH_ONLY=floor,threadpool`
        // keeps those whose name contains one of the words.
        if let Ok(only) = std::env::var("OFFLOAD_BENCH_ONLY") {
            contenders.retain(|c| only.split(',').any(|w| c.name.contains(w)));
        }
        // Warm-up: start every pool's threads, fault in allocations. The
        // process's thread count before and after tells how many threads
        // each pool started (they outlive the warm-up: keep-alive ≥ 10 s).
        let mut started_threads = Vec::new();
        for c in &contenders {
            let before = process_threads();
            let mut sink = Vec::new();
            round_trips(c, 1_000, &mut sink).await;
            throughput(c, jobs, TASKS).await;
            throughput_steady(c, jobs, TASKS).await;
            started_threads.push(process_threads().saturating_sub(before));
        }
        let mut trips: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
        let mut steady: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
        for round in 0..rounds {
            // Alternate the order too, so nobody always runs first.
            let order: Vec<usize> = if round % 2 == 0 {
                (0..contenders.len()).collect()
            } else {
                (0..contenders.len()).rev().collect()
            };
            for &i in &order {
                round_trips(&contenders[i], trips_per_round, &mut trips[i]).await;
                rates[i].push(throughput(&contenders[i], jobs, TASKS).await);
                steady[i].push(throughput_steady(&contenders[i], jobs, TASKS).await);
            }
        }

        // The cost of carrying a tracing span into the pool: the same round
        // trip submitted inside an entered span (a minimal subscriber that
        // tracks the current span, as real ones do), alternated with plain
        // ones on the same pool.
        let span_cost = match contenders.iter().find(|c| c.name == "offload_threadpool_2") {
            Some(c) => Some(span_round_trips(c, rounds, trips_per_round).await),
            None => None,
        };

        let stats: Vec<(f64, f64, f64, f64)> = (0..contenders.len())
            .map(|i| {
                let (median, p99) = percentiles(&mut trips[i]);
                let (rate, _) = percentiles(&mut rates[i]);
                let (steady, _) = percentiles(&mut steady[i]);
                (median, p99, rate, steady)
            })
            .collect();
        if !args.json {
            println!(
                "{} round trips per contender; throughput (burst) and steady = median of {} runs of {} jobs from {} tasks",
                trips_per_round * rounds,
                rounds,
                jobs,
                TASKS
            );
            println!(
                "{:<32} {:>12} {:>12} {:>14} {:>14} {:>16}",
                "contender", "median µs", "p99 µs", "burst jobs/s", "steady jobs/s", "threads started"
            );
            for (c, ((m, p, r, s), t)) in contenders.iter().zip(stats.iter().zip(&started_threads)) {
                println!(
                    "{:<32} {:>12.2} {:>12.2} {:>14.0} {:>14.0} {:>16}",
                    c.name, m, p, r, s, t
                );
            }
            println!();
        }
        let mut lines = Vec::new();
        if let Some((in_span, plain)) = span_cost {
            if !args.json {
                println!(
                    "tracing span carried into the pool: round trip median {in_span:.2} µs in a span, {plain:.2} µs without ({:+.2} µs per job)\n",
                    in_span - plain
                );
            }
            lines.push(BenchLine::new(
                "threads",
                "round_trip_median_in_span",
                "offload_threadpool_2_in_span",
                "offload_threadpool_2",
                "us",
                in_span,
                plain,
                Better::Lower,
            ));
        }
        for (i, ours) in contenders.iter().enumerate().filter(|(_, c)| c.ours) {
            for (j, peer) in contenders.iter().enumerate().filter(|(_, c)| !c.ours) {
                let (o, p) = (stats[i], stats[j]);
                let line = |case, unit, a, b, better| {
                    BenchLine::new("threads", case, ours.name, peer.name, unit, a, b, better)
                };
                lines.push(line("round_trip_median", "us", o.0, p.0, Better::Lower));
                lines.push(line("round_trip_p99", "us", o.1, p.1, Better::Lower));
                lines.push(line("throughput", "jobs/s", o.2, p.2, Better::Higher));
                lines.push(line("throughput_steady", "jobs/s", o.3, p.3, Better::Higher));
            }
        }
        Ok::<_, anyhow::Error>(lines)
    })
    .and_then(|mut lines| {
        // Outside the multi-thread runtime: its own threads would be
        // foreign load too.
        drop(rt);
        lines.extend(super::foreign_load::run(args.quick, args.json)?);
        Ok(lines)
    })
}
