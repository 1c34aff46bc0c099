//! Tasks that start subprocesses: the subprocess inherits nothing of the
//! worker's channels, and a task that runs the pool's own program starts
//! that program, not a worker.

mod common;

use std::time::{Duration, Instant};

use common::{block, eventually, fixture};
use offload_tests::*;

#[test]
fn smoke() {
    let pool = fixture().workers(1).build().unwrap();
    assert!(block(pool.call::<ReadStdin>(())).unwrap().is_empty());
}

#[test]
fn a_task_reading_stdin_gets_nothing_and_steals_no_call() {
    let pool = fixture().workers(1).pipeline_depth(2).build().unwrap();
    // Calls queued behind it stay intact: stdin is /dev/null, not the
    // channel that carries them.
    let (read, after) =
        block(async { tokio::join!(pool.call::<ReadStdin>(()), pool.call::<Sum>(vec![40, 2])) });
    assert!(read.unwrap().is_empty());
    assert_eq!(after.unwrap(), 42);
}

#[test]
fn a_long_lived_subprocess_does_not_hide_its_workers_death() {
    let pool = fixture().workers(1).build().unwrap();
    let worker = block(pool.call::<Pid>(())).unwrap();
    // A daemon-like grandchild that inherited the worker's stdio.
    let sleeper = block(pool.call::<SpawnSleeper>(30)).unwrap();
    let started = Instant::now();
    let err = block(pool.call::<Die>(Death::Abort)).unwrap_err();
    assert!(err.is_worker_lost(), "{err}");
    // The death was seen at once, not when the grandchild exits (30 s).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        alive(sleeper),
        "the grandchild lives on, holding nothing of ours"
    );
    assert_ne!(block(pool.call::<Pid>(())).unwrap(), worker);
    sigkill(sleeper);
    assert!(eventually(Duration::from_secs(5), || !alive(sleeper)));
}

#[test]
fn the_pools_own_program_run_by_a_task_is_not_a_worker() {
    // The worker marker is in the environment the grandchild inherits; it
    // names the pool's process, so the grandchild ignores it and runs as
    // the program it is: here, a parent that builds its own pool.
    let pool = fixture().workers(1).build().unwrap();
    let (code, stdout) = block(pool.call::<RunSelf>(vec!["self-call".into()])).unwrap();
    assert_eq!(code, Some(0), "{stdout:?}");
    assert_eq!(stdout.trim(), "sum 42");
}
