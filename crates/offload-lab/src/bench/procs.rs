//! `bench procs`: our process pool against the physical floor (a raw
//! socketpair ping-pong between two processes) and against Python's
//! `ProcessPoolExecutor` driven by `loop.run_in_executor`, plus CPU scaling
//! with 1 and 2 workers.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use offload::proc::ProcessPool;

use super::BenchArgs;
use crate::report::{BenchLine, Better, percentiles};
use crate::tasks::{Burn, Noop, burn, registry};

/// Set in the environment of the ping-pong peer process: `1` for 8-byte
/// ping-pongs, `bulk` for length-prefixed echoes.
pub(crate) const PINGPONG_ENV: &str = "OFFLOAD_LAB_PINGPONG";

/// If this process is the ping-pong peer, echo 8-byte messages on fd 0
/// until EOF, then exit. Call first thing in `main`.
pub(crate) fn run_pingpong_if_child() {
    if std::env::var_os(PINGPONG_ENV).is_none() {
        return;
    }
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        std::process::exit(2);
    };
    let mut s = UnixStream::from(fd);
    if std::env::var_os(PINGPONG_ENV).is_some_and(|m| m == "bulk") {
        super::payload::echo_bulk(&mut s);
        std::process::exit(0);
    }
    let mut buf = [0u8; 8];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            break;
        }
    }
    std::process::exit(0);
}

/// Round trips of 8 bytes to a peer process over a socketpair, in µs.
fn pingpong(n: usize) -> anyhow::Result<Vec<f64>> {
    let (mut ours, theirs) = UnixStream::pair()?;
    let mut child = Command::new(std::env::current_exe()?)
        .env(PINGPONG_ENV, "1")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()?;
    let mut out = Vec::with_capacity(n);
    let mut buf = [0u8; 8];
    for i in 0..(n + 1000) as u64 {
        let t = Instant::now();
        ours.write_all(&i.to_le_bytes())?;
        ours.read_exact(&mut buf)?;
        if i >= 1000 {
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(ours);
    child.wait()?;
    Ok(out)
}

/// The Python peer: `ProcessPoolExecutor(1)` round trips awaited one at a
/// time through `loop.run_in_executor`, then `jobs` tasks gathered at once
/// on a pool of 2. Prints three numbers: median µs, p99 µs, tasks/s.
const PYTHON_PEER: &str = r#"
import asyncio, sys, time
from concurrent.futures import ProcessPoolExecutor

def noop(x):
    return x

async def main(trips, jobs):
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=1) as pool:
        for i in range(200):
            await loop.run_in_executor(pool, noop, i)
        samples = []
        for i in range(trips):
            t = time.perf_counter()
            await loop.run_in_executor(pool, noop, i)
            samples.append((time.perf_counter() - t) * 1e6)
    samples.sort()
    median = samples[len(samples) // 2]
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    with ProcessPoolExecutor(max_workers=2) as pool:
        await asyncio.gather(*[loop.run_in_executor(pool, noop, i) for i in range(200)])
        t = time.perf_counter()
        await asyncio.gather(*[loop.run_in_executor(pool, noop, i) for i in range(jobs)])
        rate = jobs / (time.perf_counter() - t)
    print(median, p99, rate)

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"#;

/// Runs the Python peer; `None` (with a message) if python3 is missing.
fn python(trips: usize, jobs: usize) -> anyhow::Result<Option<(f64, f64, f64)>> {
    let out = match Command::new("python3")
        .args(["-c", PYTHON_PEER, &trips.to_string(), &jobs.to_string()])
        .stderr(Stdio::inherit())
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("bench procs: python3 not available ({e}); skipping the Python peer");
            return Ok(None);
        }
    };
    if !out.status.success() {
        eprintln!(
            "bench procs: the Python peer failed ({}); skipping it",
            out.status
        );
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match v[..] {
        [m, p, r] => Ok(Some((m, p, r))),
        _ => anyhow::bail!("unexpected Python peer output: {text:?}"),
    }
}

/// Steps of [`burn`] that take about `target` on this machine.
fn calibrate(target: Duration) -> u64 {
    let mut steps = 100_000u64;
    loop {
        let t = Instant::now();
        burn(steps);
        let took = t.elapsed();
        if took >= Duration::from_millis(20) {
            return (steps as f64 * target.as_secs_f64() / took.as_secs_f64()) as u64;
        }
        steps *= 2;
    }
}

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<Vec<BenchLine>> {
    let (trips, jobs, burns) = if args.quick {
        (2_000, 2_000, 20)
    } else {
        (20_000, 20_000, 100)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // Our round trips: one worker, calls awaited one at a time. Alternate
    // with the ping-pong floor in chunks so both see the same machine.
    let one = ProcessPool::builder()
        .workers(1)
        .registry(registry())
        .build()?;
    let two = ProcessPool::builder()
        .workers(2)
        .registry(registry())
        .build()?;
    let (mut ours, mut floor) = (Vec::with_capacity(trips), Vec::with_capacity(trips));
    rt.block_on(async {
        for i in 0..1000u64 {
            one.call::<Noop>(i).await?;
        }
        Ok::<_, offload::Error>(())
    })?;
    let chunks = 4;
    for _ in 0..chunks {
        rt.block_on(async {
            for i in 0..(trips / chunks) as u64 {
                let t = Instant::now();
                let r = one.call::<Noop>(i).await?;
                ours.push(t.elapsed().as_secs_f64() * 1e6);
                debug_assert_eq!(r, i);
            }
            Ok::<_, offload::Error>(())
        })?;
        floor.extend(pingpong(trips / chunks)?);
    }
    let (ours_median, ours_p99) = percentiles(&mut ours);
    let (floor_median, floor_p99) = percentiles(&mut floor);

    // Throughput: `jobs` tiny calls submitted at once, pool of 2.
    let ours_rate = rt.block_on(async {
        let t = Instant::now();
        let results =
            futures::future::join_all((0..jobs as u64).map(|i| two.call::<Noop>(i))).await;
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(
            results.iter().all(Result::is_ok),
            "a throughput call failed"
        );
        Ok(jobs as f64 / secs)
    })?;

    // Scaling: ~10 ms CPU tasks on 1 worker, then on 2.
    let steps = calibrate(Duration::from_millis(10));
    let scale = |pool: &ProcessPool| -> anyhow::Result<f64> {
        rt.block_on(async {
            let t = Instant::now();
            let results =
                futures::future::join_all((0..burns).map(|_| pool.call::<Burn>(steps))).await;
            anyhow::ensure!(results.iter().all(Result::is_ok), "a burn call failed");
            Ok(burns as f64 / t.elapsed().as_secs_f64())
        })
    };
    let rate_one = scale(&one)?;
    let rate_two = scale(&two)?;
    drop((one, two));

    let py = python(if args.quick { 500 } else { 5_000 }, jobs)?;
    let payload_lines = super::payload::run(args, &rt)?;

    if !args.json {
        println!(
            "{trips} round trips (tiny task, 1 worker) vs {trips} socketpair ping-pongs; \
             {jobs} tasks at once on 2 workers; {burns} tasks of ~10 ms CPU on 1 and 2 workers"
        );
        println!(
            "{:<28} {:>12} {:>12} {:>14}",
            "contender", "median µs", "p99 µs", "tasks/s"
        );
        println!(
            "{:<28} {:>12.1} {:>12.1} {:>14.0}",
            "offload_processpool", ours_median, ours_p99, ours_rate
        );
        println!(
            "{:<28} {:>12.1} {:>12.1} {:>14}",
            "socketpair_pingpong", floor_median, floor_p99, "-"
        );
        match py {
            Some((m, p, r)) => println!(
                "{:<28} {:>12.1} {:>12.1} {:>14.0}",
                "python_processpool", m, p, r
            ),
            None => println!("{:<28} skipped (python3 missing)", "python_processpool"),
        }
        println!("scaling: {rate_one:.1} tasks/s on 1 worker, {rate_two:.1} on 2\n");
    }

    let ours_name = "offload_processpool";
    let mut lines = vec![
        BenchLine::new(
            "procs",
            "round_trip_median",
            ours_name,
            "socketpair_pingpong",
            "us",
            ours_median,
            floor_median,
            Better::Lower,
        ),
        BenchLine::new(
            "procs",
            "round_trip_p99",
            ours_name,
            "socketpair_pingpong",
            "us",
            ours_p99,
            floor_p99,
            Better::Lower,
        ),
    ];
    if let Some((m, p, r)) = py {
        lines.push(BenchLine::new(
            "procs",
            "round_trip_median",
            ours_name,
            "python_processpool",
            "us",
            ours_median,
            m,
            Better::Lower,
        ));
        lines.push(BenchLine::new(
            "procs",
            "round_trip_p99",
            ours_name,
            "python_processpool",
            "us",
            ours_p99,
            p,
            Better::Lower,
        ));
        lines.push(BenchLine::new(
            "procs",
            "throughput",
            ours_name,
            "python_processpool",
            "tasks/s",
            ours_rate,
            r,
            Better::Higher,
        ));
    }
    lines.push(BenchLine::new(
        "procs",
        "scaling",
        "offload_processpool_2_workers",
        "offload_processpool_1_worker",
        "tasks/s",
        rate_two,
        rate_one,
        Better::Higher,
    ));
    lines.extend(payload_lines);
    Ok(lines)
}
