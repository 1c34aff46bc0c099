//! The floor: a hand-rolled minimal thread pool that `bench threads`
//! measures as a peer. **Not a product.** It is here to say how fast a
//! pool can hand a trivial job to a thread and the result back on this
//! machine, so that our pool is judged against the physical limit and not
//! only against slower peers.
//!
//! What it has: a fixed number of threads, a lock-free FIFO queue
//! (`crossbeam_deque::Injector`), workers that spin about 50 µs on the
//! queue before they park, and a tokio oneshot channel for the result.
//!
//! What it does *not* have, and our pool promises: a bound on the queue
//! (it takes every job at once, however many), cancellation of queued
//! work, panics delivered to the caller (a panicking job kills its
//! thread here), shutdown modes, elastic threads, metrics. Every one of
//! those costs something; the benchmark shows how much.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Steal};

type Task = Box<dyn FnOnce() + Send>;

struct Inner {
    queue: Injector<Task>,
    /// Workers parked (or about to park) on `cv`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
    stop: AtomicBool,
}

/// The floor pool. Dropping it stops and joins its threads.
pub(crate) struct FloorPool {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

/// How long an idle worker spins on the queue before it parks.
const SPIN: Duration = Duration::from_micros(50);

impl FloorPool {
    pub(crate) fn new(threads: usize) -> Self {
        let inner = Arc::new(Inner {
            queue: Injector::new(),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let threads = (0..threads)
            .map(|i| {
                let inner = inner.clone();
                std::thread::Builder::new()
                    .name(format!("floor-{i}"))
                    .spawn(move || worker(&inner))
                    .expect("spawn a floor thread")
            })
            .collect();
        FloorPool { inner, threads }
    }

    /// Runs `f` on the pool; resolves to its result.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> tokio::sync::oneshot::Receiver<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.spawn(Box::new(move || {
            let _ = tx.send(f());
        }));
        rx
    }

    /// Queues `task` and wakes a parked worker if one is parked.
    fn spawn(&self, task: Task) {
        self.inner.queue.push(task);
        // Dekker-style: push, fence, read `sleepers`; a worker increments
        // `sleepers`, then looks at the queue (under the lock). Either it
        // sees the job or we see it and wake it under the lock.
        std::sync::atomic::fence(SeqCst);
        if self.inner.sleepers.load(SeqCst) > 0 {
            let _g = self.inner.lock.lock().unwrap();
            self.inner.cv.notify_one();
        }
    }
}

/// The floor's queue and threads running offload's own [`offload::Job`]s:
/// awaited through `offload::run_in_executor`, a job goes through
/// offload's job cell (its mutex, waker, span and cancellation) instead of
/// a tokio oneshot. Measured beside the floor, it tells what the job cell
/// costs from what the pool around it costs (`pool/README.md`, "Where the
/// round trip goes, taken apart": the cell costs little, nothing
/// measurable in a scratch harness and 0.08 µs in one `bench threads` run).
impl offload::Executor for FloorPool {
    fn execute(&self, job: offload::Job) {
        self.spawn(Box::new(move || job.run()));
    }
}

fn pop(queue: &Injector<Task>) -> Option<Task> {
    loop {
        match queue.steal() {
            Steal::Success(t) => return Some(t),
            Steal::Empty => return None,
            Steal::Retry => {}
        }
    }
}

fn worker(inner: &Inner) {
    loop {
        if let Some(task) = pop(&inner.queue) {
            task();
            continue;
        }
        // Spin before parking: the next job of a caller awaiting one at a
        // time arrives microseconds after the last result.
        let until = Instant::now() + SPIN;
        let mut found = None;
        while Instant::now() < until {
            if let Some(t) = pop(&inner.queue) {
                found = Some(t);
                break;
            }
            std::hint::spin_loop();
        }
        if let Some(task) = found {
            task();
            continue;
        }
        let guard = inner.lock.lock().unwrap();
        inner.sleepers.fetch_add(1, SeqCst);
        if inner.stop.load(SeqCst) {
            return;
        }
        if !inner.queue.is_empty() {
            inner.sleepers.fetch_sub(1, SeqCst);
            continue;
        }
        let guard = inner.cv.wait(guard).unwrap();
        inner.sleepers.fetch_sub(1, SeqCst);
        drop(guard);
    }
}

impl Drop for FloorPool {
    fn drop(&mut self) {
        {
            let _g = self.inner.lock.lock().unwrap();
            self.inner.stop.store(true, SeqCst);
            self.inner.cv.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
