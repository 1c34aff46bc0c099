//! Whether the calling thread awaits its jobs one at a time: the last job
//! it submitted is also the last one whose result it took.
//!
//! A thread pool uses this to decide whether a submitter should wait a
//! moment for a spinning worker to take its job (`pool/README.md`, "Waiting
//! for the hand-over"). A caller with nothing else in flight parks its
//! thread right after submitting; keeping it on its core for the
//! hand-over (a fifth of a microsecond) lets a short job finish before
//! that park. A thread that has other jobs in flight (a runtime thread
//! serving many tasks) has other work to poll instead, and does not wait.
//!
//! Two thread-local cells, no atomics. A job awaited on another thread
//! than the one that submitted it (a task moved by a work-stealing
//! runtime) only makes the answer "not alone" for a while: it is a hint,
//! and a wrong hint costs at most one bounded wait or one missed one.

use std::cell::Cell;

thread_local! {
    /// The job cell most recently submitted from this thread (its address).
    static LAST_SUBMITTED: Cell<usize> = const { Cell::new(0) };
    /// Whether this thread took the result of `LAST_SUBMITTED` since (a
    /// thread that never submitted has nothing in flight).
    static CAUGHT_UP: Cell<bool> = const { Cell::new(true) };
}

/// Records that this thread submits job `cell`; returns whether it had
/// taken the result of every job it submitted before (as far as the last
/// one tells).
#[inline]
pub(crate) fn submitting(cell: *const ()) -> bool {
    LAST_SUBMITTED.set(cell as usize);
    CAUGHT_UP.replace(false)
}

/// Records that this thread took the result of job `cell`.
#[inline]
pub(crate) fn result_taken(cell: *const ()) {
    if LAST_SUBMITTED.get() == cell as usize {
        CAUGHT_UP.set(true);
    }
}

#[cfg(test)]
mod tests {
    use super::{result_taken, submitting};

    fn cell(n: usize) -> *const () {
        n as *const ()
    }

    #[test]
    fn a_thread_that_took_its_last_result_is_alone() {
        std::thread::spawn(|| {
            assert!(submitting(cell(8)), "a new thread has nothing in flight");
            assert!(!submitting(cell(12)), "job 8 is in flight");
            result_taken(cell(8));
            result_taken(cell(12));
            assert!(submitting(cell(16)), "the last result was taken");
            result_taken(cell(16));
            assert!(submitting(cell(24)));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_with_another_job_in_flight_is_not_alone() {
        std::thread::spawn(|| {
            submitting(cell(8));
            result_taken(cell(8));
            // Two tasks on one runtime thread: the second submits before
            // the first takes its result.
            assert!(submitting(cell(16)));
            assert!(!submitting(cell(24)), "job 16 is still in flight");
            // An older job's result does not make the thread caught up.
            result_taken(cell(16));
            assert!(!submitting(cell(32)), "job 24 is still in flight");
            // Nor does the result of a job submitted on another thread.
            result_taken(cell(999));
            assert!(!submitting(cell(40)));
        })
        .join()
        .unwrap();
    }
}
