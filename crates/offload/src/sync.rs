//! Poison-tolerant locking, in one place.
//!
//! Every lock in this crate guards state that stays consistent across a
//! panic (user code runs under `catch_unwind` and never while a lock is
//! held), so a poisoned lock carries no news: treating it as an error would
//! turn one caught panic into a cascade of failures in unrelated callers.

use std::sync::{Condvar, Mutex, MutexGuard, WaitTimeoutResult};
use std::time::Duration;

/// Locks `m`, ignoring poison.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits on `cv`, ignoring poison.
pub(crate) fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(|e| e.into_inner())
}

/// Waits on `cv` for at most `timeout`, ignoring poison.
pub(crate) fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
    cv.wait_timeout(guard, timeout)
        .unwrap_or_else(|e| e.into_inner())
}
