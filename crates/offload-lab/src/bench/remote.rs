//! `bench remote`: the remote pool (`offload_nats`) against raw async-nats
//! request/reply on the same local server, plus durable against direct
//! and CPU scaling with 1 and 2 workers.
//!
//! Both peers cross the same hops to another process: ours to a worker
//! program (which runs the task in its process pool: one more hop, over a
//! socketpair), the raw peer to a responder program that echoes. The
//! workers and responders are this executable in a hidden mode (see
//! `cluster.rs`); each worker runs one task process.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use offload_nats::{Mode, RemotePool, async_nats};

use super::BenchArgs;
use crate::cluster::{NatsChild, RAW_SUBJECT, local_server, nats_runtime};
use crate::report::{BenchLine, Better, percentiles};
use crate::tasks::{Burn, Noop};

const SUITE: &str = "remote";

/// Round trips of one call at a time, in µs.
async fn ours_trips(pool: &RemotePool, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        let r = pool.call::<Noop>(i).await?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(r == i, "wrong echo");
    }
    Ok(out)
}

async fn raw_trips(client: &async_nats::Client, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let payload = postcard_u64(i);
        let t = Instant::now();
        let r = client.request(RAW_SUBJECT, payload.into()).await?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(r.payload.len() == 8, "wrong echo");
    }
    Ok(out)
}

fn postcard_u64(i: u64) -> Vec<u8> {
    i.to_le_bytes().to_vec()
}

/// `jobs` calls from `tasks` concurrent tasks; calls per second.
async fn ours_rate(pool: &RemotePool, jobs: usize, tasks: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut all = FuturesUnordered::new();
    for _ in 0..tasks {
        all.push(async {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= jobs {
                    return Ok::<_, offload::Error>(());
                }
                pool.call::<Noop>(i as u64).await?;
            }
        });
    }
    while let Some(r) = all.next().await {
        r?;
    }
    Ok(jobs as f64 / t.elapsed().as_secs_f64())
}

async fn raw_rate(client: &async_nats::Client, jobs: usize, tasks: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut all = FuturesUnordered::new();
    for _ in 0..tasks {
        all.push(async {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= jobs {
                    return anyhow::Ok(());
                }
                client
                    .request(RAW_SUBJECT, postcard_u64(i as u64).into())
                    .await?;
            }
        });
    }
    while let Some(r) = all.next().await {
        r?;
    }
    Ok(jobs as f64 / t.elapsed().as_secs_f64())
}

/// ~10 ms CPU tasks, 4 per worker in flight; tasks per second in the
/// steady state: between the completion that ends the ramp-up (as many
/// as are in flight) and the one that starts the drain (as many before
/// the last), so that a worker idling at the end while the other finishes
/// its last tasks does not count as a cost of scaling.
async fn burn_rate(
    pool: &RemotePool,
    steps: u64,
    burns: usize,
    workers: usize,
) -> anyhow::Result<f64> {
    let in_flight = 4 * workers;
    anyhow::ensure!(burns > 3 * in_flight, "too few tasks for a steady state");
    let mut all = FuturesUnordered::new();
    let mut sent = 0;
    while sent < in_flight {
        all.push(pool.call::<Burn>(steps));
        sent += 1;
    }
    let mut done_at = Vec::with_capacity(burns);
    while let Some(r) = all.next().await {
        r?;
        done_at.push(Instant::now());
        if sent < burns {
            all.push(pool.call::<Burn>(steps));
            sent += 1;
        }
    }
    let (first, last) = (in_flight, burns - in_flight);
    let window = done_at[last].duration_since(done_at[first]);
    Ok((last - first) as f64 / window.as_secs_f64())
}

/// Steps of [`Burn`] that take about `target` here: the fastest of many
/// short samples (a slow sample means we were preempted on a busy
/// machine, not that the work is slow).
fn calibrate(target: Duration) -> u64 {
    use offload::proc::Task;
    const CHUNK: u64 = 1 << 18;
    let start = Instant::now();
    let mut best = Duration::MAX;
    while start.elapsed() < Duration::from_millis(200) {
        let t = Instant::now();
        std::hint::black_box(Burn::run(std::hint::black_box(CHUNK)));
        best = best.min(t.elapsed());
    }
    (CHUNK as f64 * target.as_secs_f64() / best.as_secs_f64().max(1e-9)) as u64
}

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<Vec<BenchLine>> {
    let (trips, jobs, burns, durable_trips) = if args.quick {
        (300, 2_000, 40, 100)
    } else {
        (5_000, 20_000, 200, 1_000)
    };
    let server = local_server()?;
    let url = server.url();
    // The callers' runtime: NATS connections live there.
    let rt = nats_runtime()?;
    let steps = calibrate(Duration::from_millis(10));

    // Scaling first, with one worker, then a second one: ~10 ms calls, on
    // workers that hold only what they can run (`queue(0)`), as
    // `WorkerBuilder::queue` advises for calls of that length.
    let direct = rt.block_on(RemotePool::builder().url(url.clone()).build())?;
    let mut balanced = vec![NatsChild::start("worker-balanced", &url, None)?];
    rt.block_on(ours_trips(&direct, 200))?;
    let rate_one = rt.block_on(burn_rate(&direct, steps, burns, 1))?;
    balanced.push(NatsChild::start("worker-balanced", &url, None)?);
    rt.block_on(ours_trips(&direct, 200))?;
    let rate_two = rt.block_on(burn_rate(&direct, steps, burns, 2))?;
    drop(balanced);
    // Round trips and throughput of tiny calls: workers with the default
    // queue.
    let workers = [
        NatsChild::start("worker", &url, None)?,
        NatsChild::start("worker", &url, None)?,
    ];
    rt.block_on(ours_trips(&direct, 200))?;

    let _responders = [
        NatsChild::start("responder", &url, None)?,
        NatsChild::start("responder", &url, None)?,
    ];
    let raw = rt.block_on(async_nats::connect(url.clone()))?;
    let durable = rt.block_on(
        RemotePool::builder()
            .url(url.clone())
            .mode(Mode::Durable)
            .build(),
    )?;
    rt.block_on(async {
        raw_trips(&raw, 500).await?;
        ours_trips(&direct, 500).await?;
        ours_trips(&durable, 100).await?;
        anyhow::Ok(())
    })?;

    // Round trips, one call at a time, alternating in chunks.
    let chunks = 4;
    let (mut ours, mut peer, mut dur) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..chunks {
        rt.block_on(async {
            ours.extend(ours_trips(&direct, trips / chunks).await?);
            peer.extend(raw_trips(&raw, trips / chunks).await?);
            dur.extend(ours_trips(&durable, durable_trips / chunks).await?);
            anyhow::Ok(())
        })?;
    }
    let (ours_median, ours_p99) = percentiles(&mut ours);
    let (peer_median, peer_p99) = percentiles(&mut peer);
    let (dur_median, _) = percentiles(&mut dur);

    // Throughput: `jobs` tiny calls from 64 tasks, alternating twice.
    let (mut ours_rates, mut peer_rates) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        ours_rates.push(rt.block_on(ours_rate(&direct, jobs / 2, 64))?);
        peer_rates.push(rt.block_on(raw_rate(&raw, jobs / 2, 64))?);
    }
    let ours_tput = ours_rates.iter().sum::<f64>() / ours_rates.len() as f64;
    let peer_tput = peer_rates.iter().sum::<f64>() / peer_rates.len() as f64;

    // The same with workers that run calls in their own threads (no
    // process hop, no isolation).
    drop(workers);
    let _in_process = [
        NatsChild::start("worker-in-process", &url, None)?,
        NatsChild::start("worker-in-process", &url, None)?,
    ];
    rt.block_on(ours_trips(&direct, 200))?;
    let (mut inproc_rates, mut peer2_rates) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        inproc_rates.push(rt.block_on(ours_rate(&direct, jobs / 2, 64))?);
        peer2_rates.push(rt.block_on(raw_rate(&raw, jobs / 2, 64))?);
    }
    let inproc_tput = inproc_rates.iter().sum::<f64>() / inproc_rates.len() as f64;
    let peer2_tput = peer2_rates.iter().sum::<f64>() / peer2_rates.len() as f64;
    let lost = direct.metrics();
    drop((direct, durable, raw));
    drop(rt);
    drop(_in_process);
    drop(server);

    if !args.json {
        println!(
            "{trips} round trips, one at a time (direct; durable: {durable_trips}); {jobs} tiny \
             calls from 64 tasks on 2 workers; {burns} tasks of ~10 ms CPU on 1 and 2 workers"
        );
        println!(
            "{:<28} {:>12} {:>12} {:>14}",
            "contender", "median µs", "p99 µs", "calls/s"
        );
        println!(
            "{:<28} {:>12.1} {:>12.1} {:>14.0}",
            "offload_nats_direct", ours_median, ours_p99, ours_tput
        );
        println!(
            "{:<28} {:>12.1} {:>12.1} {:>14.0}",
            "async_nats_request", peer_median, peer_p99, peer_tput
        );
        println!(
            "{:<28} {:>12.1} {:>12} {:>14}",
            "offload_nats_durable", dur_median, "-", "-"
        );
        println!(
            "{:<28} {:>12} {:>12} {:>14.0}   (raw in the same round: {peer2_tput:.0})",
            "offload_nats_in_process", "-", "-", inproc_tput
        );
        println!(
            "scaling: {rate_one:.1} tasks/s on 1 worker, {rate_two:.1} on 2; busy retries {}",
            lost.busy_retries
        );
    }
    Ok(vec![
        BenchLine::new(
            SUITE,
            "round_trip_median",
            "offload_nats_direct",
            "async_nats_request",
            "us",
            ours_median,
            peer_median,
            Better::Lower,
        ),
        BenchLine::new(
            SUITE,
            "round_trip_p99",
            "offload_nats_direct",
            "async_nats_request",
            "us",
            ours_p99,
            peer_p99,
            Better::Lower,
        ),
        BenchLine::new(
            SUITE,
            "durable_round_trip_median",
            "offload_nats_durable",
            "offload_nats_direct",
            "us",
            dur_median,
            ours_median,
            Better::Lower,
        ),
        BenchLine::new(
            SUITE,
            "throughput",
            "offload_nats_direct",
            "async_nats_request",
            "calls/s",
            ours_tput,
            peer_tput,
            Better::Higher,
        ),
        BenchLine::new(
            SUITE,
            "throughput",
            "offload_nats_direct_in_process",
            "async_nats_request",
            "calls/s",
            inproc_tput,
            peer2_tput,
            Better::Higher,
        ),
        BenchLine::new(
            SUITE,
            "scaling",
            "offload_nats_2_workers",
            "offload_nats_1_worker",
            "tasks/s",
            rate_two,
            rate_one,
            Better::Higher,
        ),
    ])
}
