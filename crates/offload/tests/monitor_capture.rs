//! Stack capture (Linux): the signal handler that records a stalled
//! thread's stack must never be what kills the process: not on a thread
//! stalled at the very end of its stack, and not after someone reset the
//! signal to its default action (which terminates the process).
//!
//! A crash here takes the whole test binary down: that is the failure.
#![cfg(target_os = "linux")]

use offload::monitor::{StallDetector, StallPhase, StallReport};
use std::hint::black_box;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const THRESHOLD: Duration = Duration::from_millis(100);

/// The tests change process-wide signal state: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A detector whose first report is sent down the returned channel.
fn watchdog() -> (StallDetector, mpsc::Receiver<StallReport>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let detector = StallDetector::builder()
        .threshold(THRESHOLD)
        .log(false)
        .on_report(move |r| {
            if r.phase() == StallPhase::Started {
                let _ = tx.lock().unwrap().send(r.clone());
            }
        })
        .build()
        .expect("detector");
    (detector, rx)
}

#[inline(never)]
fn spin_at_the_bottom(d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < end {
        x = black_box(x.wrapping_mul(31).wrapping_add(1));
    }
    x
}

/// The lowest address of the mapping that holds `addr` (the end of the
/// current thread's stack, above its guard page), from `/proc/self/maps`.
fn mapping_start(addr: usize) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    maps.lines()
        .find_map(|line| {
            let range = line.split_whitespace().next()?;
            let (lo, hi) = range.split_once('-')?;
            let lo = usize::from_str_radix(lo, 16).ok()?;
            let hi = usize::from_str_radix(hi, 16).ok()?;
            (lo <= addr && addr < hi).then_some(lo)
        })
        .expect("the stack is mapped")
}

/// Recurses until less than `room` bytes of stack are left, then stalls.
#[inline(never)]
fn recurse_then_stall(bottom: usize, room: usize, stall: Duration) -> u64 {
    let here = black_box([0u8; 256]);
    let sp = here.as_ptr() as usize;
    if sp - bottom < room {
        return spin_at_the_bottom(stall);
    }
    recurse_then_stall(bottom, room, stall) + u64::from(black_box(here[0]))
}

#[test]
fn smoke() {
    let _serial = serial();
    let (detector, rx) = watchdog();
    let guard = detector.enter();
    spin_at_the_bottom(THRESHOLD * 3);
    drop(guard);
    let report = rx.recv_timeout(Duration::from_secs(5)).expect("a report");
    assert!(
        report.backtrace().contains("spin_at_the_bottom"),
        "{report}"
    );
}

/// The handler needs about 8 KB of stack to unwind; a thread stalled with
/// 3 KB left would overflow its stack in the handler if the handler ran
/// there. It runs on an alternate stack of its own instead.
#[test]
fn a_stall_at_the_end_of_the_stack_is_captured_without_overflow() {
    let _serial = serial();
    let (detector, rx) = watchdog();
    let detector = std::sync::Arc::new(detector);
    let watched = std::sync::Arc::clone(&detector);
    let thread = std::thread::Builder::new()
        .name("deep".to_owned())
        .stack_size(256 * 1024)
        .spawn(move || {
            let guard = watched.enter();
            let local = black_box(0u8);
            let bottom = mapping_start(&local as *const u8 as usize);
            let r = recurse_then_stall(bottom, 3 * 1024, THRESHOLD * 4);
            drop(guard);
            r
        })
        .expect("spawn");
    let report = rx.recv_timeout(Duration::from_secs(10));
    thread.join().expect("the deep thread survived its capture");
    let report = report.expect("a report");
    assert!(
        report.backtrace().contains("spin_at_the_bottom"),
        "{report}"
    );
    assert!(
        report.backtrace().contains("recurse_then_stall"),
        "{report}"
    );
}

/// Resetting the signal to its default action would make the next capture
/// kill the process; the capture looks before it sends, and says why it
/// did not.
#[test]
fn a_signal_reset_to_default_is_not_sent() {
    let _serial = serial();
    // A first stall installs the handler (once per process).
    let (detector, rx) = watchdog();
    {
        let _guard = detector.enter();
        spin_at_the_bottom(THRESHOLD * 3);
    }
    let first = rx.recv_timeout(Duration::from_secs(5)).expect("a report");
    assert!(first.backtrace().unavailable_reason().is_none(), "{first}");

    let signal = libc::SIGRTMIN() + 6;
    // SAFETY: an all-zero sigaction is valid for the kernel to fill in.
    let mut ours: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: resets the capture signal to its default action, keeping the
    // handler to restore; no other thread of this binary sends it now
    // (`serial`), and the detector under test must not either.
    let reset = unsafe {
        libc::sigaction(signal, std::ptr::null(), &mut ours) == 0
            && libc::signal(signal, libc::SIG_DFL) != libc::SIG_ERR
    };
    assert!(reset);

    let (detector2, rx2) = watchdog();
    {
        let _guard = detector2.enter();
        spin_at_the_bottom(THRESHOLD * 3);
    }
    let second = rx2.recv_timeout(Duration::from_secs(5));
    // SAFETY: puts the handler read above back.
    unsafe { libc::sigaction(signal, &ours, std::ptr::null_mut()) };
    let second = second.expect("still reported, without a stack");
    let why = second
        .backtrace()
        .unavailable_reason()
        .expect("no stack captured");
    assert!(why.contains("no longer runs"), "{second}");
}
