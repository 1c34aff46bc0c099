//! [`StallReports`]: reports as a channel (blocking `recv`, `try_recv`,
//! `for report in &reports`) and as a `futures_core::Stream`, for any
//! runtime.
//!
//! The watchdog never waits for a reader: each subscription has a bounded
//! queue, and when it is full the oldest report is dropped and counted.

use super::report::StallReport;
use crate::sync::{lock, wait, wait_timeout};
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
        lock(&self.inner)
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
            q = wait(&self.queue.ready, q);
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
            q = wait_timeout(&self.queue.ready, q, left).0;
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

/// Blocking iteration (`for report in &reports`), like
/// [`recv`](StallReports::recv) in a loop. Not an `Iterator` itself, so
/// that its `Stream` methods (`next`, `collect`, ...) are not ambiguous.
#[derive(Debug)]
pub struct Iter<'a> {
    reports: &'a StallReports,
}

impl Iterator for Iter<'_> {
    type Item = StallReport;

    fn next(&mut self) -> Option<StallReport> {
        self.reports.recv()
    }
}

impl<'a> IntoIterator for &'a StallReports {
    type Item = StallReport;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        Iter { reports: self }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::stall::classify::StallCause;
    use crate::monitor::stall::report::{StallBacktrace, StallPhase};

    fn report(n: u64) -> StallReport {
        StallReport {
            phase: StallPhase::Started,
            thread_name: format!("t{n}"),
            tid: None,
            task: None,
            duration: Duration::from_millis(n),
            threshold: Duration::from_millis(100),
            cause: StallCause::unknown(),
            backtrace: StallBacktrace::unavailable("test"),
            suppressed: 0,
        }
    }

    #[test]
    fn a_slow_reader_loses_the_oldest_and_is_told() {
        let queue = ReportQueue::new(2);
        let reader = StallReports::new(Arc::clone(&queue));
        for n in 1..=3 {
            queue.push(&report(n));
        }
        assert_eq!(reader.dropped(), 1);
        assert_eq!(reader.try_recv().unwrap().thread_name(), "t2");
        assert_eq!(reader.try_recv().unwrap().thread_name(), "t3");
        assert!(reader.try_recv().is_none());
    }

    #[test]
    fn the_end_comes_after_the_queued_reports() {
        let queue = ReportQueue::new(8);
        let reader = StallReports::new(Arc::clone(&queue));
        queue.push(&report(1));
        queue.close();
        queue.push(&report(2)); // after the end: ignored
        assert_eq!(reader.recv().unwrap().thread_name(), "t1");
        assert!(reader.recv().is_none());
        assert!((&reader).into_iter().next().is_none());
        assert!(reader.recv_timeout(Duration::MAX).is_none());
    }

    #[test]
    fn the_stream_wakes_on_a_report() {
        use std::task::Wake;
        struct Flag(std::sync::atomic::AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let queue = ReportQueue::new(8);
        let mut reader = StallReports::new(Arc::clone(&queue));
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        let waker = std::task::Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let pinned = Pin::new(&mut reader);
        assert!(futures_core::Stream::poll_next(pinned, &mut cx).is_pending());
        queue.push(&report(1));
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        let pinned = Pin::new(&mut reader);
        assert!(matches!(
            futures_core::Stream::poll_next(pinned, &mut cx),
            Poll::Ready(Some(_))
        ));
    }
}
