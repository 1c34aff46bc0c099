//! [`TryRunError`]: a non-waiting submission refused, its closure handed back.

use std::fmt;

/// A submission that could not be queued at once; the closure is handed back.
///
/// Returned by [`ThreadPool::try_run`](crate::ThreadPool::try_run) and
/// [`Dedicated::try_run`](crate::Dedicated::try_run).
pub enum TryRunError<F> {
    /// The queue is full. Retry later, or use `run`, which waits for a slot.
    Full(F),
    /// The pool is shut down.
    Shutdown(F),
}

impl<F> TryRunError<F> {
    /// The closure that was not queued.
    pub fn into_inner(self) -> F {
        match self {
            TryRunError::Full(f) | TryRunError::Shutdown(f) => f,
        }
    }

    /// The queue was full.
    pub fn is_full(&self) -> bool {
        matches!(self, TryRunError::Full(_))
    }

    /// The pool was shut down.
    pub fn is_shutdown(&self) -> bool {
        matches!(self, TryRunError::Shutdown(_))
    }
}

impl<F> fmt::Debug for TryRunError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRunError::Full(_) => f.write_str("Full(..)"),
            TryRunError::Shutdown(_) => f.write_str("Shutdown(..)"),
        }
    }
}

impl<F> fmt::Display for TryRunError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRunError::Full(_) => f.write_str("queue is full"),
            TryRunError::Shutdown(_) => f.write_str("pool is shut down"),
        }
    }
}

impl<F> std::error::Error for TryRunError<F> {}
