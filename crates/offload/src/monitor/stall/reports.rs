//! [`StallReports`]: reports as a channel (blocking `recv`, `try_recv`,
//! an `Iterator`) and as a `futures_core::Stream`, for any runtime.
//!
//! The watchdog never waits for a reader: each subscription has a bounded
//! queue, and when it is full the oldest report is dropped and counted.

use super::report::StallReport;
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// One subscription's queue, shared by the watchdog (writer) and the
/// [`StallReports`] handle (reader).
pub(crate) struct ReportQueue {
    inner: Mutex<Queue>,
    ready: Condvar,
}

struct Queue {
    reports: VecDeque<StallReport>,
    capacity: usize,
    /// Reports dropped because the reader fell behind.
    dropped: u64,
    /// No more reports will come (the detector stopped).
    closed: bool,
    waker: Option<Waker>,
}

impl ReportQueue {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(ReportQueue {
            inner: Mutex::new(Queue {
                reports: VecDeque::with_capacity(capacity.min(64)),
                capacity: capacity.max(1),
                dropped: 0,
                closed: false,
                waker: None,
            }),
            ready: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a report, dropping the oldest if full; never blocks on the
    /// reader.
    pub(crate) fn push(&self, report: &StallReport) {
        let waker = {
            let mut q = self.lock();
            if q.closed {
                return;
            }
            if q.reports.len() >= q.capacity {
                q.reports.pop_front();
                q.dropped += 1;
            }
            q.reports.push_back(report.clone());
            q.waker.take()
        };
        self.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// No more reports: readers see the end once the queue is drained.
    pub(crate) fn close(&self) {
        let waker = {
            let mut q = self.lock();
            q.closed = true;
            q.waker.take()
        };
        self.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Stall reports as they come: a channel and a `Stream`, whichever suits.
///
/// Created by [`StallDetector::reports`](super::StallDetector::reports).
/// Each `StallReports` receives every report sent after it was created;
/// the watchdog never waits for it: when its queue is full, the oldest
/// report is dropped and counted in [`dropped`](Self::dropped). It ends
/// (`recv` returns `None`, the stream ends) once the detector has stopped
/// and the queue is drained.
///
/// ```
/// use offload::monitor::StallDetector;
/// use std::time::Duration;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let detector = StallDetector::builder().log(false).build()?;
/// let reports = detector.reports();
/// let guard = detector.enter(); // watch this thread
/// std::thread::sleep(Duration::from_millis(300)); // a stall
/// drop(guard);
/// let first = reports.recv_timeout(Duration::from_secs(5)).expect("a report");
/// assert!(first.duration() >= Duration::from_millis(100));
/// # Ok(()) }
/// ```
///
/// As a stream, with any executor:
///
/// ```
/// # use offload::monitor::StallDetector;
/// # let detector = StallDetector::builder().log(false).build().unwrap();
/// use futures::StreamExt;
/// let mut reports = detector.reports();
/// drop(detector); // no more reports: the stream ends
/// assert!(futures::executor::block_on(reports.next()).is_none());
/// ```
pub struct StallReports {
    queue: Arc<ReportQueue>,
}

impl fmt::Debug for StallReports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = self.queue.lock();
        f.debug_struct("StallReports")
            .field("queued", &q.reports.len())
            .field("dropped", &q.dropped)
            .field("closed", &q.closed)
            .finish()
    }
}

impl StallReports {
    pub(crate) fn new(queue: Arc<ReportQueue>) -> Self {
        StallReports { queue }
    }

    /// The next report, waiting for one; `None` once the detector has
    /// stopped and every report was read. Blocks the calling thread: in
    /// async code use the `Stream` instead.
    pub fn recv(&self) -> Option<StallReport> {
        let mut q = self.queue.lock();
        loop {
            if let Some(r) = q.reports.pop_front() {
                return Some(r);
            }
            if q.closed {
                return None;
            }
            q = self.queue.ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like [`recv`](Self::recv), waiting at most `timeout` (saturating:
    /// `Duration::MAX` waits for ever).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<StallReport> {
        let deadline = Instant::now().checked_add(timeout);
        let mut q = self.queue.lock();
        loop {
            if let Some(r) = q.reports.pop_front() {
                return Some(r);
            }
            if q.closed {
                return None;
            }
            let left = match deadline {
                Some(d) => d.checked_duration_since(Instant::now())?,
                None => Duration::from_secs(3600),
            };
            q = self
                .queue
                .ready
                .wait_timeout(q, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A report if one is queued, without waiting.
    pub fn try_recv(&self) -> Option<StallReport> {
        self.queue.lock().reports.pop_front()
    }

    /// How many reports were dropped because this reader fell behind.
    pub fn dropped(&self) -> u64 {
        self.queue.lock().dropped
    }
}

impl Iterator for StallReports {
    type Item = StallReport;

    /// Blocks like [`recv`](StallReports::recv).
    fn next(&mut self) -> Option<StallReport> {
        self.recv()
    }
}

impl futures_core::Stream for StallReports {
    type Item = StallReport;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StallReport>> {
        let mut q = self.queue.lock();
        if let Some(r) = q.reports.pop_front() {
            return Poll::Ready(Some(r));
        }
        if q.closed {
            return Poll::Ready(None);
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
