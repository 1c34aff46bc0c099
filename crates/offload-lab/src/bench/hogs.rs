//! Foreign CPU load for the benchmarks: threads at normal priority that
//! spin until dropped (a noisy neighbour, an oversubscribed machine).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// `n` threads spinning until this is dropped; dropping stops and joins
/// them.
pub(super) struct Hogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hogs {
    /// Starts `n` spinning threads named `bench-hog-N`.
    pub(super) fn start(n: usize) -> anyhow::Result<Hogs> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for i in 0..n {
            let stop = Arc::clone(&stop);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("bench-hog-{i}"))
                    .spawn(move || {
                        let mut x = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            x = black_box(x.wrapping_mul(31).wrapping_add(1));
                        }
                    })?,
            );
        }
        Ok(Hogs { stop, threads })
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
