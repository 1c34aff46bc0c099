//! The seed's `cpu.py` in Rust: a ticker prints the time every second while
//! a worker counts down in a loop, inline or offloaded.
//!
//! ```text
//! cargo run -p offload --release --example cpu -- blocking  # one tick, then silence
//! cargo run -p offload --release --example cpu -- thread    # ticks on time, and 2 countdowns at once
//! ```
//!
//! Unlike CPython there is no GIL: the two threads of the pool count down
//! in parallel, on two cores, while the loop's thread keeps ticking. So in
//! Rust a thread pool *is* the answer for CPU-bound work; a process pool
//! (not built yet) adds isolation, not speed. (`offload-lab cpu` measures
//! this instead of printing it.)

use std::hint::black_box;
use std::time::{Duration, Instant};

/// The seed counts down from 50,000,000, which takes CPython seconds.
/// Compiled Rust is far faster, so count 10× as far (still well under a
/// second per countdown in a release build).
const COUNTER: u64 = 10 * 50_000_000;

/// How long the example runs.
const RUN_FOR: Duration = Duration::from_secs(5);

/// The seed's `blocking_task`. `black_box` stops the compiler from
/// replacing the loop with `counter = 0`.
fn blocking_task() {
    let mut counter = COUNTER;
    while counter > 0 {
        counter = black_box(counter) - 1;
    }
}

/// `while True: blocking_task()`: never awaits, so nothing else runs.
async fn blocking_worker(until: Instant) -> u32 {
    let mut n = 0;
    while Instant::now() < until {
        blocking_task();
        n += 1;
    }
    n
}

/// Two tasks, each `await loop.run_in_executor(pool, blocking_task)` in a
/// loop, on a pool of two threads (the seed's `ThreadPoolExecutor(2)`).
async fn async_thread_worker(until: Instant) -> u32 {
    let pool = offload::ThreadPool::builder()
        .name("cpu")
        .threads(2)
        .build()
        .expect("pool");
    let (a, b) = tokio::join!(countdowns_in(&pool, until), countdowns_in(&pool, until));
    a + b
}

/// Counts down on `pool`, one countdown at a time, until `until`.
async fn countdowns_in(pool: &offload::ThreadPool, until: Instant) -> u32 {
    let mut n = 0;
    while Instant::now() < until {
        pool.run(blocking_task).await.expect("countdown panicked");
        n += 1;
    }
    n
}

/// The seed's `ticker`: prints the time every second.
async fn ticker(start: Instant) {
    loop {
        println!("tick at {:>6.3} s", start.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "thread".into());
    let start = Instant::now();
    let until = start + RUN_FOR;
    tokio::spawn(ticker(start));
    tokio::task::yield_now().await; // let the ticker print its first line
    let countdowns = match mode.as_str() {
        "blocking" => blocking_worker(until).await,
        "thread" => async_thread_worker(until).await,
        "process" => return eprintln!("process pool: not built yet"),
        other => return eprintln!("unknown mode {other:?}: use blocking or thread"),
    };
    println!(
        "{mode}: {countdowns} countdowns in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
