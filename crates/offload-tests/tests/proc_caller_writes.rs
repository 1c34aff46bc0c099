//! Small `call_bytes` calls are written by their caller and completed by
//! whoever reads their reply (a driver leading the reading, or the
//! worker's standby reader), with no driver thread carrying them. Every
//! promise of the process pool must hold on that path too: results go to
//! the right caller, a cancel or a timeout stops only the call it names,
//! a call whose worker died before starting it is sent again and runs
//! once, shutdown and drop lose nothing, and the bounds hold.

mod common;

use std::future::Future;
use std::time::Duration;

use common::{block, eventually, fixture, record, record_file};
use offload::Error;
use offload::proc::{CallOptions, OnDrop, ProcessPool, Task, fingerprint};
use offload_test_support::alive;
use offload_tests::*;

/// Calls `T` through `call_bytes`, encoding and decoding as a transport
/// would.
fn bytes_call<T: Task>(
    pool: &ProcessPool,
    input: &T::Input,
    options: CallOptions,
) -> impl Future<Output = Result<T::Output, Error>> + use<T> {
    let bytes = postcard::to_stdvec(input).unwrap();
    let call = pool.call_bytes(T::NAME, Some(fingerprint::<T>()), bytes, options);
    async move {
        let out = call.await?;
        Ok(postcard::from_bytes(&out).expect("the output decodes"))
    }
}

fn plain() -> CallOptions {
    CallOptions::new()
}

/// Calls the driver pool has taken so far (a call written by its caller
/// is not one of them).
fn driver_jobs(pool: &ProcessPool) -> u64 {
    pool.metrics().calls.submitted
}

/// A pool whose workers are up, so calls find them.
fn ready_pool(workers: usize, depth: usize) -> ProcessPool {
    let pool = fixture()
        .workers(workers)
        .pipeline_depth(depth)
        .build()
        .unwrap();
    block(pool.ready()).unwrap();
    pool
}

/// Runs `call(i)` for every `i` in `0..n` as tasks on a 2-thread tokio
/// runtime (callers on several threads at once) and returns their
/// outputs in order; fails if they take longer than `within` together.
fn on_two_threads<T, F>(n: u64, within: Duration, call: impl Fn(u64) -> F) -> Vec<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(call(i))).collect();
        tokio::time::timeout(within, futures::future::join_all(tasks))
            .await
            .expect("hung")
            .into_iter()
            .map(|r| r.expect("the task ran"))
            .collect()
    })
}

#[test]
fn a_small_bytes_call_is_written_by_its_caller_not_carried_by_a_driver() {
    let pool = ready_pool(1, 2);
    let before = driver_jobs(&pool);
    for i in 0..20u64 {
        assert_eq!(
            block(bytes_call::<Sum>(&pool, &vec![i, 1], plain())).unwrap(),
            i + 1
        );
    }
    assert_eq!(
        driver_jobs(&pool),
        before,
        "some calls went through drivers"
    );
    assert_eq!(pool.metrics().in_flight, 0);
    // A typed call still goes through a driver.
    assert_eq!(block(pool.call::<Sum>(vec![2, 3])).unwrap(), 5);
    assert_eq!(driver_jobs(&pool), before + 1);
}

#[test]
fn a_large_bytes_input_goes_through_a_driver_and_arrives_whole() {
    let pool = ready_pool(1, 2);
    let before = driver_jobs(&pool);
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = block(bytes_call::<ReverseBytes>(&pool, &big, plain())).unwrap();
    let mut expected = big.clone();
    expected.reverse();
    assert_eq!(out, expected);
    assert_eq!(driver_jobs(&pool), before + 1);
}

#[test]
fn many_bytes_and_typed_calls_at_once_each_get_their_own_result() {
    // Callers on a multi-threaded runtime write concurrently; typed calls
    // (drivers) share the same workers; more calls than room, so some
    // bytes calls take the driver path too.
    let pool = ready_pool(2, 4);
    let results = on_two_threads(600, Duration::from_secs(60), |i| {
        let pool = pool.clone();
        async move {
            let got = if i % 3 == 0 {
                pool.call::<Sum>(vec![i, 7]).await
            } else {
                bytes_call::<Sum>(&pool, &vec![i, 7], plain()).await
            };
            (i, got)
        }
    });
    for (i, got) in results {
        assert_eq!(got.unwrap(), i + 7, "call {i}");
    }
    assert!(eventually(Duration::from_secs(5), || pool
        .metrics()
        .in_flight
        == 0));
    assert_eq!(pool.metrics().started, 2, "no worker was lost");
}

#[test]
fn in_flight_counts_calls_written_by_callers_and_stays_within_the_depth() {
    let pool = ready_pool(1, 2);
    let path = record_file("caller-writes", "in-flight");
    let calls: Vec<_> = (0..2)
        .map(|i| bytes_call::<Record>(&pool, &record(&path, &format!("c{i}"), 400), plain()))
        .collect();
    assert!(eventually(Duration::from_secs(10), || pool
        .metrics()
        .in_flight
        == 2));
    let before = driver_jobs(&pool);
    // A third finds no room: it waits in the driver queue, not the socket.
    let third = bytes_call::<Record>(&pool, &record(&path, "c2", 0), plain());
    assert!(pool.metrics().in_flight <= 2 + 2, "{:?}", pool.metrics());
    assert_eq!(driver_jobs(&pool), before + 1);
    let all = block(async {
        let (a, b) = futures::future::join(futures::future::join_all(calls), third).await;
        (a, b)
    });
    assert!(all.0.into_iter().all(|r| r.is_ok()));
    assert_eq!(all.1.unwrap(), "c2");
    assert!(eventually(Duration::from_secs(5), || pool
        .metrics()
        .in_flight
        == 0));
}

#[test]
fn a_dropped_running_bytes_call_stops_its_worker_and_the_call_behind_it_is_sent_again() {
    // Depth 2: `behind` waits in the worker's socket behind `slow`. Dropping
    // `slow` stops the worker; `behind` never started there, so the
    // standby reader sends it again to the replacement: it runs once.
    let path = record_file("caller-writes", "dropped-running");
    let pool = ready_pool(1, 2);
    let pid = block(bytes_call::<Pid>(&pool, &(), plain())).unwrap();
    let slow = bytes_call::<Record>(&pool, &record(&path, "slow", 30_000), plain());
    let behind = bytes_call::<Record>(&pool, &record(&path, "behind", 0), plain());
    let mut slow = Box::pin(slow);
    assert!(futures::FutureExt::now_or_never(&mut slow).is_none());
    assert!(eventually(Duration::from_secs(10), || recorded(&path)
        .contains_key("slow")));
    drop(slow);
    assert_eq!(block(behind).unwrap(), "behind");
    assert_eq!(recorded(&path).get("behind"), Some(&1));
    assert!(eventually(Duration::from_secs(5), || !alive(pid)));
    let replacement = block(bytes_call::<Pid>(&pool, &(), plain())).unwrap();
    assert_ne!(replacement, pid);
}

#[test]
fn a_bytes_call_dropped_while_queued_in_its_worker_never_runs() {
    let path = record_file("caller-writes", "dropped-queued");
    let pool = ready_pool(1, 2);
    let pid = block(bytes_call::<Pid>(&pool, &(), plain())).unwrap();
    let first = bytes_call::<Record>(&pool, &record(&path, "first", 300), plain());
    let mut first = Box::pin(first);
    assert!(futures::FutureExt::now_or_never(&mut first).is_none());
    assert!(eventually(Duration::from_secs(10), || recorded(&path)
        .contains_key("first")));
    let mut second = Box::pin(bytes_call::<Record>(
        &pool,
        &record(&path, "second", 0),
        plain(),
    ));
    assert!(futures::FutureExt::now_or_never(&mut second).is_none());
    drop(second);
    assert_eq!(block(first).unwrap(), "first");
    assert_eq!(block(bytes_call::<Pid>(&pool, &(), plain())).unwrap(), pid);
    assert!(
        !recorded(&path).contains_key("second"),
        "{:?}",
        recorded(&path)
    );
    assert_eq!(pool.metrics().started, 1);
}

#[test]
fn a_detached_bytes_call_runs_to_its_end() {
    let path = record_file("caller-writes", "detached");
    let pool = ready_pool(1, 2);
    let pid = block(bytes_call::<Pid>(&pool, &(), plain())).unwrap();
    let mut call = Box::pin(bytes_call::<Record>(
        &pool,
        &record(&path, "detached", 200),
        plain().on_drop(OnDrop::Detach),
    ));
    assert!(futures::FutureExt::now_or_never(&mut call).is_none());
    assert!(eventually(Duration::from_secs(10), || recorded(&path)
        .contains_key("detached")));
    drop(call);
    // The worker finishes it and serves the next call.
    assert_eq!(block(bytes_call::<Pid>(&pool, &(), plain())).unwrap(), pid);
}

#[test]
fn a_bytes_call_past_its_timeout_fails_alone() {
    let path = record_file("caller-writes", "timeout");
    let pool = ready_pool(1, 2);
    let slow = bytes_call::<SleepMs>(&pool, &10_000, plain().timeout(Duration::from_millis(200)));
    let behind = bytes_call::<Record>(&pool, &record(&path, "behind", 0), plain());
    let (slow, behind) = block(async { tokio::join!(slow, behind) });
    let err = slow.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(behind.unwrap(), "behind");
    assert_eq!(recorded(&path).get("behind"), Some(&1));
    assert_eq!(pool.metrics().timeouts, 1);
}

#[test]
fn a_crash_fails_only_its_own_bytes_call_and_the_ones_behind_run_once() {
    let path = record_file("caller-writes", "crash");
    let pool = ready_pool(1, 4);
    let crash = bytes_call::<Die>(&pool, &Death::Abort, plain());
    let behind: Vec<_> = (0..3)
        .map(|i| bytes_call::<Record>(&pool, &record(&path, &format!("b{i}"), 0), plain()))
        .collect();
    let (crash, behind) =
        block(async { futures::future::join(crash, futures::future::join_all(behind)).await });
    let err = crash.unwrap_err();
    assert!(err.is_worker_lost(), "{err}");
    for (i, r) in behind.into_iter().enumerate() {
        assert_eq!(r.unwrap(), format!("b{i}"));
    }
    let counts = recorded(&path);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "ran twice: {counts:?}");
    assert_eq!(pool.metrics().lost, 1);
}

#[test]
fn a_storm_of_drops_racing_replies_loses_nothing_and_runs_nothing_twice() {
    // Callers give up at random moments, often as the reply arrives.
    // Every call kept gets its own result; none runs twice.
    let path = record_file("caller-writes", "storm");
    let pool = ready_pool(2, 3);
    let outcomes = on_two_threads(300, Duration::from_secs(90), |i| {
        let (pool, path) = (pool.clone(), path.clone());
        async move {
            let tag = format!("s{i}");
            let call = bytes_call::<Record>(&pool, &record(&path, &tag, i % 3), plain());
            if i % 2 == 0 {
                // Give up after a moment that sometimes beats the reply.
                let wait = Duration::from_micros((i * 37) % 3000);
                match tokio::time::timeout(wait, call).await {
                    Ok(r) => Some((tag, r)),
                    Err(_) => None,
                }
            } else {
                Some((tag, call.await))
            }
        }
    });
    let mut kept = 0;
    for (tag, r) in outcomes.into_iter().flatten() {
        assert_eq!(r.unwrap(), tag);
        kept += 1;
    }
    assert!(kept >= 150, "every odd call is kept: {kept}");
    let counts = recorded(&path);
    assert!(counts.values().all(|&n| n == 1), "ran twice: {counts:?}");
    // The pool still serves, and nothing stays in flight.
    assert_eq!(
        block(bytes_call::<Sum>(&pool, &vec![1, 2], plain())).unwrap(),
        3
    );
    assert!(eventually(Duration::from_secs(10), || pool
        .metrics()
        .in_flight
        == 0));
}

#[test]
fn shutdown_waits_for_calls_written_by_their_callers() {
    let pool = ready_pool(2, 2);
    let calls: Vec<_> = (0..4)
        .map(|_| bytes_call::<SleepMs>(&pool, &300, plain()))
        .collect();
    assert!(eventually(Duration::from_secs(10), || pool
        .metrics()
        .in_flight
        == 4));
    let results = block(async {
        let shutdown = pool.shutdown();
        let (results, ()) = futures::future::join(futures::future::join_all(calls), shutdown).await;
        results
    });
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(pool.metrics().workers, 0);
    // Closed: a new call is refused, whatever its size.
    let err = block(bytes_call::<Sum>(&pool, &vec![1], plain())).unwrap_err();
    assert!(err.is_shutdown(), "{err}");
}

#[test]
fn dropping_the_pool_still_answers_calls_written_by_their_callers() {
    let pool = ready_pool(1, 2);
    let pid = block(bytes_call::<Pid>(&pool, &(), plain())).unwrap();
    let calls: Vec<_> = (0..2)
        .map(|i| bytes_call::<Sum>(&pool, &vec![i, 100], plain()))
        .collect();
    drop(pool);
    let results = block(futures::future::join_all(calls));
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as u64 + 100);
    }
    // The worker exits once it has answered them.
    assert!(eventually(Duration::from_secs(10), || !alive(pid)));
}

#[test]
fn a_worker_retired_after_its_quota_hands_over_without_losing_bytes_calls() {
    let pool = fixture()
        .workers(1)
        .pipeline_depth(3)
        .max_tasks_per_child(5)
        .build()
        .unwrap();
    block(pool.ready()).unwrap();
    let calls: Vec<_> = (0..40u64)
        .map(|i| bytes_call::<Sum>(&pool, &vec![i], plain()))
        .collect();
    let results = block(futures::future::join_all(calls));
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as u64);
    }
    assert!(pool.metrics().started >= 8, "{:?}", pool.metrics());
    assert_eq!(pool.metrics().lost, 0);
}

#[test]
fn unknown_tasks_and_other_versions_are_refused_on_this_path_too() {
    let pool = ready_pool(1, 2);
    let err = block(pool.call_bytes("no_such_task", None, vec![0], plain())).unwrap_err();
    assert!(err.is_unknown_task(), "{err}");
    let err = block(pool.call_bytes(Sum::NAME, Some(1), vec![0], plain())).unwrap_err();
    assert!(err.is_version_mismatch(), "{err}");
    // Bytes that are not the task's input: the task's codec error, and the
    // worker lives on.
    let err = block(pool.call_bytes(Sum::NAME, None, vec![0xff; 3], plain())).unwrap_err();
    assert!(err.is_codec(), "{err}");
    assert_eq!(pool.metrics().started, 1);
}

#[test]
fn an_elastic_pool_carries_bytes_calls_with_its_drivers() {
    // In an elastic pool a worker lives as long as its drivers are busy:
    // calls that bypassed them would let workers go under load.
    let pool = fixture()
        .workers(2)
        .min_workers(1)
        .idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    block(pool.ready()).unwrap();
    let before = driver_jobs(&pool);
    assert_eq!(
        block(bytes_call::<Sum>(&pool, &vec![4, 5], plain())).unwrap(),
        9
    );
    assert_eq!(driver_jobs(&pool), before + 1);
}

#[test]
fn an_input_over_the_frame_limit_fails_alone_and_the_worker_keeps_serving() {
    let pool = fixture().workers(1).max_frame_bytes(4096).build().unwrap();
    block(pool.ready()).unwrap();
    let pid = block(bytes_call::<Pid>(&pool, &(), plain())).unwrap();
    // Around the limit, where the call's header decides whether it fits.
    for len in [4000usize, 4050, 4090, 4096, 5000, 20_000] {
        let input = postcard::to_stdvec(&vec![7u8; len]).unwrap();
        let r = block(pool.call_bytes(ReverseBytes::NAME, None, input, plain()));
        match r {
            Ok(out) => assert!(out.len() <= 4096, "{len}"),
            Err(e) => assert!(e.is_too_large(), "{len}: {e}"),
        }
    }
    assert_eq!(block(bytes_call::<Pid>(&pool, &(), plain())).unwrap(), pid);
    assert_eq!(pool.metrics().started, 1);
}

#[test]
fn workers_killed_under_a_stream_of_bytes_calls_lose_nothing_and_run_nothing_twice() {
    // Workers are SIGKILLed at random moments while calls written by their
    // callers stream through them: each call ends (its result, or a worker
    // loss for the one a worker was running), none hangs, none runs twice,
    // and every call that got a result ran exactly once.
    let path = record_file("caller-writes", "kill-storm");
    let pool = ready_pool(2, 4);
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let done = std::sync::Arc::new(AtomicUsize::new(0));
    let killer = {
        let (pool, stop, done) = (pool.clone(), stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut kills = 0;
            let mut i = 0u64;
            let mut done_at_last_kill = 0;
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(15 + (i * 7) % 20));
                // Only once calls went through since the last kill: on a
                // starved machine a fresh worker may take longer to start
                // than the pause, and killing it again would stop all
                // progress.
                if done.load(Relaxed) < done_at_last_kill + 25 {
                    continue;
                }
                done_at_last_kill = done.load(Relaxed);
                let pids: Vec<u32> = pool.worker_pids().into_values().collect();
                if let Some(&pid) = pids.get((i as usize) % pids.len().max(1)) {
                    offload_test_support::sigkill(pid);
                    kills += 1;
                }
                i += 1;
            }
            kills
        })
    };
    let outcomes = on_two_threads(3000, Duration::from_secs(120), |i| {
        let (pool, path, done) = (pool.clone(), path.clone(), done.clone());
        async move {
            let tag = format!("k{i}");
            let r = bytes_call::<Record>(&pool, &record(&path, &tag, i % 2), plain()).await;
            done.fetch_add(1, Relaxed);
            (tag, r)
        }
    });
    stop.store(true, Relaxed);
    let kills = killer.join().unwrap();
    let counts = recorded(&path);
    let (mut ok, mut lost) = (0, 0);
    for (tag, r) in outcomes {
        match r {
            Ok(out) => {
                assert_eq!(out, tag);
                assert_eq!(counts.get(&tag), Some(&1), "{tag} ran other than once");
                ok += 1;
            }
            Err(e) => {
                assert!(e.is_worker_lost() || e.is_worker_start(), "{tag}: {e}");
                lost += 1;
            }
        }
    }
    assert!(counts.values().all(|&n| n == 1), "ran twice: {counts:?}");
    assert!(kills > 0 && ok > 0, "kills {kills}, ok {ok}");
    // A kill fails at most the call its worker was running.
    assert!(lost <= kills, "{lost} calls lost to {kills} kills");
    assert_eq!(
        block(bytes_call::<Sum>(&pool, &vec![2, 2], plain())).unwrap(),
        4
    );
    eprintln!("{kills} kills: {ok} ok, {lost} lost");
}

#[test]
fn a_slow_call_after_a_stream_of_quick_ones_is_not_cut_short() {
    // After a stream of replies the standby reader keeps watching the
    // socket for a moment; a call without a timeout that comes then and
    // runs longer than that moment must still run to its end.
    let pool = ready_pool(1, 4);
    let pid = block(bytes_call::<Pid>(&pool, &(), plain())).unwrap();
    for round in 0..5u64 {
        let quick: Vec<_> = (0..20u64)
            .map(|i| bytes_call::<Sum>(&pool, &vec![i, round], plain()))
            .collect();
        for (i, r) in block(futures::future::join_all(quick))
            .into_iter()
            .enumerate()
        {
            assert_eq!(r.unwrap(), i as u64 + round);
        }
        let slow = block(bytes_call::<SleepMs>(&pool, &(20 + round * 10), plain()));
        assert_eq!(slow.unwrap(), pid, "round {round}");
    }
    assert_eq!(pool.metrics().started, 1);
    assert_eq!(pool.metrics().timeouts, 0);
}

#[test]
fn a_caller_never_waits_for_a_driver_writing_a_large_frame() {
    // A driver writes 48 MiB to the worker (a write that blocks on the
    // socket until the worker has read it all) while the loop keeps
    // submitting small bytes calls to the same worker: each submission
    // returns at once (the caller does not wait for the writer; its call
    // goes through a driver instead), and every call gets its result.
    let pool = ready_pool(1, 4);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (worst, results, big) = rt.block_on(async {
        let big = pool.call::<ReverseBytes>(vec![3u8; 48 << 20]);
        let big = tokio::spawn(big);
        let mut worst = Duration::ZERO;
        let mut calls = Vec::new();
        let until = std::time::Instant::now() + Duration::from_millis(300);
        let mut i = 0u64;
        while std::time::Instant::now() < until {
            let started = std::time::Instant::now();
            let call = bytes_call::<Sum>(&pool, &vec![i, 1], plain());
            worst = worst.max(started.elapsed());
            calls.push(tokio::spawn(call));
            i += 1;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let results = futures::future::join_all(calls).await;
        let big = tokio::time::timeout(Duration::from_secs(60), big)
            .await
            .expect("the large call ended")
            .unwrap();
        (worst, results, big)
    });
    assert!(
        worst < Duration::from_millis(20),
        "a submission took {worst:?}"
    );
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap().unwrap(), i as u64 + 1);
    }
    assert_eq!(big.unwrap().len(), 48 << 20);
}
