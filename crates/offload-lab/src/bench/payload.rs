//! `bench procs`, payload cases: echoing 1, 8 and 64 MiB through one
//! worker, one call at a time, as `Vec<u8>` and as `String`, against
//! Python's `ProcessPoolExecutor` echoing `bytes`, and against the floor: the
//! same bytes moved both ways over a socketpair between two processes, with
//! nothing else done to them.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Instant;

use offload::proc::ProcessPool;

use super::BenchArgs;
use super::procs::PINGPONG_ENV;
use crate::report::{BenchLine, Better};
use crate::tasks::{EchoBytes, EchoString, registry};

const MIB: usize = 1 << 20;

/// The peer of the floor: reads `[u64 LE length][bytes]`, writes the bytes
/// back the same way, until EOF.
pub(crate) fn echo_bulk(s: &mut UnixStream) {
    let mut len = [0u8; 8];
    let mut buf = Vec::new();
    while s.read_exact(&mut len).is_ok() {
        buf.resize(u64::from_le_bytes(len) as usize, 0);
        if s.read_exact(&mut buf).is_err()
            || s.write_all(&len).is_err()
            || s.write_all(&buf).is_err()
        {
            return;
        }
    }
}

/// Median of `n` round trips of `size` bytes over a socketpair, in ms.
fn floor(size: usize, n: usize) -> anyhow::Result<f64> {
    let (mut ours, theirs) = UnixStream::pair()?;
    let mut child = Command::new(std::env::current_exe()?)
        .env(PINGPONG_ENV, "bulk")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()?;
    let data = vec![7u8; size];
    let mut back = vec![0u8; size];
    let mut samples = Vec::with_capacity(n);
    let writer = ours.try_clone()?;
    for _ in 0..n + 1 {
        let t = Instant::now();
        // Write on a helper thread while reading here, as a process that
        // streams both ways must (the socket buffer is smaller than the data).
        let mut w = writer.try_clone()?;
        let payload = data.clone();
        let sender = std::thread::spawn(move || {
            w.write_all(&(payload.len() as u64).to_le_bytes())?;
            w.write_all(&payload)
        });
        let mut len = [0u8; 8];
        ours.read_exact(&mut len)?;
        ours.read_exact(&mut back)?;
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop((ours, writer));
    child.wait()?;
    samples.remove(0);
    Ok(median(&mut samples))
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The Python peer: `ProcessPoolExecutor(1)` echoing `bytes` of each size,
/// awaited through `loop.run_in_executor`; prints one median (ms) per size.
const PYTHON_PEER: &str = r#"
import asyncio, sys, time
from concurrent.futures import ProcessPoolExecutor

def echo(b):
    return b

async def main(n, sizes):
    loop = asyncio.get_running_loop()
    out = []
    with ProcessPoolExecutor(max_workers=1) as pool:
        await loop.run_in_executor(pool, echo, b"warm")
        for size in sizes:
            data = b"\x07" * size
            samples = []
            for _ in range(n + 1):
                t = time.perf_counter()
                back = await loop.run_in_executor(pool, echo, data)
                samples.append((time.perf_counter() - t) * 1e3)
                assert len(back) == size
            samples = sorted(samples[1:])
            out.append(samples[len(samples) // 2])
    print(*out)

asyncio.run(main(int(sys.argv[1]), [int(s) for s in sys.argv[2:]]))
"#;

fn python(n: usize, sizes: &[usize]) -> Option<Vec<f64>> {
    let mut args = vec!["-c".to_owned(), PYTHON_PEER.to_owned(), n.to_string()];
    args.extend(sizes.iter().map(usize::to_string));
    let out = Command::new("python3")
        .args(&args)
        .stderr(Stdio::inherit())
        .output()
        .inspect_err(|e| {
            eprintln!("bench procs: python3 not available ({e}); skipping its payload cases")
        })
        .ok()?;
    let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (out.status.success() && v.len() == sizes.len()).then_some(v)
}

pub(crate) fn run(
    args: &BenchArgs,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Vec<BenchLine>> {
    let n = if args.quick { 3 } else { 10 };
    let sizes = [MIB, 8 * MIB, 64 * MIB];
    let pool = ProcessPool::builder()
        .workers(1)
        .max_frame_bytes(80 * MIB)
        .registry(registry())
        .build()?;
    let mut ours_bytes = Vec::new();
    let mut ours_string = Vec::new();
    let mut floors = Vec::new();
    for &size in &sizes {
        let bytes = vec![7u8; size];
        let text = "x".repeat(size);
        let (mut b, mut s) = (Vec::new(), Vec::new());
        rt.block_on(async {
            pool.call::<EchoBytes>(vec![1]).await?;
            for _ in 0..n {
                let input = bytes.clone();
                let t = Instant::now();
                let back = pool.call::<EchoBytes>(input).await?;
                b.push(t.elapsed().as_secs_f64() * 1e3);
                anyhow::ensure!(back.len() == size, "short echo");
                let input = text.clone();
                let t = Instant::now();
                let back = pool.call::<EchoString>(input).await?;
                s.push(t.elapsed().as_secs_f64() * 1e3);
                anyhow::ensure!(back.len() == size, "short echo");
            }
            Ok(())
        })?;
        ours_bytes.push(median(&mut b));
        ours_string.push(median(&mut s));
        floors.push(floor(size, n)?);
    }
    drop(pool);
    let py = python(n, &sizes);

    if !args.json {
        println!("echo through one worker, one call at a time, median of {n} (ms)");
        println!(
            "{:<12} {:>12} {:>12} {:>12} {:>12}",
            "size", "Vec<u8>", "String", "python", "socketpair"
        );
        for (i, size) in sizes.iter().enumerate() {
            println!(
                "{:<12} {:>12.2} {:>12.2} {:>12} {:>12.2}",
                format!("{} MiB", size / MIB),
                ours_bytes[i],
                ours_string[i],
                py.as_ref().map_or("-".into(), |p| format!("{:.2}", p[i])),
                floors[i]
            );
        }
        println!();
    }
    let mut lines = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let case = format!("echo_{}mib_median", size / MIB);
        for (ours, value) in [
            ("offload_processpool_vec_u8", ours_bytes[i]),
            ("offload_processpool_string", ours_string[i]),
        ] {
            if let Some(p) = &py {
                lines.push(BenchLine::new(
                    "procs",
                    &case,
                    ours,
                    "python_processpool_bytes",
                    "ms",
                    value,
                    p[i],
                    Better::Lower,
                ));
            }
            lines.push(BenchLine::new(
                "procs",
                &case,
                ours,
                "socketpair_floor",
                "ms",
                value,
                floors[i],
                Better::Lower,
            ));
        }
    }
    Ok(lines)
}
