//! Builder validation and hooks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use offload::{BuildError, Dedicated, ThreadPool};

#[test]
fn smoke() {
    assert!(ThreadPool::builder().build().is_ok());
}

#[test]
fn invalid_settings_are_refused() {
    for (b, what) in [
        (ThreadPool::builder().threads(0), "threads"),
        (ThreadPool::builder().queue_capacity(0), "queue_capacity"),
        (
            ThreadPool::builder().threads(2).min_threads(3),
            "min_threads",
        ),
        (ThreadPool::builder().name("a\0b"), "name"),
        (
            ThreadPool::builder().keep_alive(std::time::Duration::ZERO),
            "keep_alive",
        ),
    ] {
        match b.build() {
            Err(BuildError::Invalid(msg)) => assert!(msg.contains(what), "{msg}"),
            other => panic!("{what}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn dedicated_builder_refuses_bad_settings_the_same_way() {
    for (b, what) in [
        (Dedicated::builder().queue_capacity(0), "queue_capacity"),
        (Dedicated::builder().name("a\0b"), "name"),
    ] {
        match b.build(|| ()) {
            Err(BuildError::Invalid(msg)) => assert!(msg.contains(what), "{msg}"),
            other => panic!("{what}: expected Invalid, got {other:?}"),
        }
    }
}

/// Issue 10 #5: a dedicated executor whose thread cannot be started fails
/// to build (it used to wait forever for an `init` that would never run).
/// A stack too large for the OS is an honest way to have the start refused.
#[test]
fn dedicated_build_fails_when_its_thread_cannot_start() {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let r = Dedicated::builder().stack_size(1 << 62).build(|| ());
        let _ = tx.send(r.map(|_| ()));
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("build hung");
    t.join().unwrap();
    assert!(matches!(r, Err(BuildError::Spawn(_))), "{r:?}");
}

#[test]
fn a_pool_whose_threads_cannot_start_fails_its_jobs_not_hangs() {
    let pool = ThreadPool::builder()
        .threads(1)
        .stack_size(1 << 62)
        .build()
        .unwrap();
    let err = futures::executor::block_on(pool.run(|| 1)).unwrap_err();
    assert!(err.is_spawn(), "{err}");
    let m = pool.metrics();
    assert_eq!((m.threads, m.submitted, m.cancelled), (0, 1, 1), "{m:?}");
}

#[test]
fn on_start_runs_once_per_thread_and_stack_size_applies() {
    let starts = Arc::new(AtomicUsize::new(0));
    let s = starts.clone();
    let pool = ThreadPool::builder()
        .threads(2)
        .stack_size(8 << 20)
        .on_start(move || {
            s.fetch_add(1, SeqCst);
        })
        .build()
        .unwrap();
    // Recursion that needs more than the default 2 MiB stack.
    fn deep(n: u32) -> u32 {
        let pad = std::hint::black_box([0u8; 1024]);
        if n == 0 {
            pad[0] as u32
        } else {
            deep(n - 1) + std::hint::black_box(1)
        }
    }
    let r = futures::executor::block_on(pool.run(|| deep(4000))).unwrap();
    assert_eq!(r, 4000);
    pool.shutdown_blocking();
    let n = starts.load(SeqCst);
    assert!((1..=2).contains(&n), "on_start ran {n} times");
}

#[test]
fn debug_shows_live_counts() {
    let pool = ThreadPool::builder()
        .name("dbg")
        .threads(3)
        .build()
        .unwrap();
    let s = format!("{pool:?}");
    for field in ["dbg", "threads", "max_threads: 3", "queued", "running"] {
        assert!(s.contains(field), "{s}");
    }
}
