//! The seed's `cpu_workaround.py` in Rust: the countdown runs on the loop
//! itself but yields every N steps (`await asyncio.sleep(0)` there,
//! `tokio::task::yield_now().await` here), so the ticker keeps time.
//!
//! ```text
//! cargo run -p offload --release --example cpu_workaround -- 1000        # the seed's N
//! cargo run -p offload --release --example cpu_workaround -- 1000000000  # too rarely: ticks slip
//! ```
//!
//! Yield too often and the countdown slows down; too rarely and the loop
//! lags. `offload::coop::Budget::slice(d)` (yield once a time slice is
//! spent) removes the dilemma; `offload-lab sweep` plots it.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// 10× the seed's 50,000,000 (see the `cpu` example).
const COUNTER: u64 = 10 * 50_000_000;

/// How long the example runs.
const RUN_FOR: Duration = Duration::from_secs(5);

/// The seed's async `blocking_task`: yields every `every` steps.
async fn blocking_task(every: u64) {
    let mut counter = COUNTER;
    while counter > 0 {
        counter = black_box(counter) - 1;
        if counter % every == 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// `while True: await blocking_task()`.
async fn blocking_worker(every: u64, until: Instant) -> u32 {
    let mut n = 0;
    while Instant::now() < until {
        blocking_task(every).await;
        n += 1;
    }
    n
}

/// The seed's `ticker`: prints the time every second; a gap over a second
/// between two lines means the loop was held too long.
async fn ticker(start: Instant) {
    loop {
        println!("tick at {:>6.3} s", start.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let every: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
        .max(1);
    let start = Instant::now();
    tokio::spawn(ticker(start));
    tokio::task::yield_now().await; // let the ticker print its first line
    let countdowns = blocking_worker(every, start + RUN_FOR).await;
    println!(
        "yield every {every} steps: {countdowns} countdowns in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
