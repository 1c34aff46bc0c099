//! The ticker beside the countdown: a task that sleeps `TICK` in a loop
//! and records how late each wake-up is, leaving out the time the OS kept
//! the runtime thread waiting for a CPU (`/proc/thread-self/schedstat`).

use super::TICK;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One ticker wake-up.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    /// When the ticker went to sleep.
    pub(super) from: Instant,
    /// When it woke.
    pub(super) woke: Instant,
    /// How late it woke, minus `preempted`, in ms.
    pub(super) late_ms: f64,
    /// Time the OS kept the runtime thread waiting for a CPU meanwhile.
    pub(super) preempted: Duration,
}

/// Spawns the ticker: sleeps `TICK` in a loop and records every wake-up.
///
/// A wake-up's lateness leaves out the time the OS kept the runtime thread
/// waiting for a CPU meanwhile (the machine is shared: other processes'
/// preemptions are not the loop's lag), when Linux tells it.
fn spawn_ticker(stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        // Opened here, on the runtime thread, so that it describes it.
        let sched = Schedstat::open();
        let mut samples = Vec::with_capacity(4096);
        while !stop.load(Ordering::Relaxed) {
            let from = Instant::now();
            let waited_from = sched.as_ref().and_then(Schedstat::run_queue_wait);
            tokio::time::sleep(TICK).await;
            let woke = Instant::now();
            let waited_to = sched.as_ref().and_then(Schedstat::run_queue_wait);
            let preempted = match (waited_from, waited_to) {
                (Some(a), Some(b)) => b.saturating_sub(a),
                _ => Duration::ZERO,
            };
            let late = woke
                .saturating_duration_since(from)
                .saturating_sub(TICK)
                .saturating_sub(preempted);
            samples.push(Sample {
                from,
                woke,
                late_ms: late.as_secs_f64() * 1e3,
                preempted,
            });
        }
        samples
    })
}

/// `/proc/thread-self/schedstat` of the thread that opened it (Linux): time
/// on a CPU, time waiting for one, in nanoseconds.
#[derive(Debug)]
pub(super) struct Schedstat(std::fs::File);

impl Schedstat {
    pub(super) fn open() -> Option<Self> {
        std::fs::File::open("/proc/thread-self/schedstat")
            .ok()
            .map(Schedstat)
    }

    fn field(&self, i: usize) -> Option<Duration> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 96];
        // One `pread` at offset 0: the kernel renders the figures afresh.
        let n = self.0.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        let ns = text.split_whitespace().nth(i)?.parse().ok()?;
        Some(Duration::from_nanos(ns))
    }

    /// Time this thread has spent on a CPU.
    pub(super) fn on_cpu(&self) -> Option<Duration> {
        self.field(0)
    }

    /// Time this thread has spent runnable but waiting for a CPU.
    pub(super) fn run_queue_wait(&self) -> Option<Duration> {
        self.field(1)
    }
}

/// Runs `work` on a fresh current-thread runtime beside the ticker, which
/// starts 20 ms before (to settle into its rhythm) and stops 5 ms after
/// (its sleep may span the end); returns `work`'s output and the ticker's
/// samples.
pub(super) fn beside_ticker<T, F>(work: impl FnOnce() -> F) -> anyhow::Result<(T, Vec<Sample>)>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = spawn_ticker(stop.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let out = work().await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        stop.store(true, Ordering::Relaxed);
        let samples = tokio::time::timeout(Duration::from_secs(5), ticker).await??;
        Ok((out, samples))
    })
}
