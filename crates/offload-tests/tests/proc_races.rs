//! A cancellation or a timeout applies to the call it names and to no
//! other: with pipelining, the worker may already run the next call while
//! the parent has not yet read the reply of the one before. Nothing is lost
//! and nothing runs twice (issue: "fifteen ways to lose, hang or duplicate
//! work", items 1 and 2).

mod common;

use std::time::Duration;

use common::{block, eventually, fixture, record, record_file};
use offload::proc::CallOptions;
use offload_tests::*;

#[test]
fn smoke() {
    let path = record_file("races", "smoke");
    let pool = fixture().workers(1).build().unwrap();
    assert_eq!(
        block(pool.call::<Record>(record(&path, "a", 0))).unwrap(),
        "a"
    );
    assert_eq!(recorded(&path).get("a"), Some(&1));
}

#[test]
fn a_call_cancelled_while_queued_in_its_worker_never_runs() {
    // Depth 2: the second call waits in the worker's socket behind the
    // first. Dropping it skips it in the worker; the first is untouched.
    let path = record_file("races", "queued");
    let pool = fixture().workers(1).pipeline_depth(2).build().unwrap();
    let pid = block(pool.call::<Pid>(())).unwrap();
    let first = pool.call::<Record>(record(&path, "first", 300));
    assert!(eventually(Duration::from_secs(10), || recorded(&path)
        .contains_key("first")));
    let mut second = pool.call::<Record>(record(&path, "second", 0));
    assert!(futures::FutureExt::now_or_never(&mut second).is_none());
    assert!(eventually(Duration::from_secs(10), || pool
        .metrics()
        .calls
        .running
        == 2));
    drop(second);
    assert_eq!(block(first).unwrap(), "first");
    // The worker answered the skipped call and lives on.
    assert_eq!(block(pool.call::<Pid>(())).unwrap(), pid);
    assert!(
        !recorded(&path).contains_key("second"),
        "{:?}",
        recorded(&path)
    );
    assert_eq!(pool.metrics().started, 1);
}

#[test]
fn a_worker_that_cannot_stop_its_call_is_killed_at_the_backstop() {
    // The worker stops a call at its timeout itself. One that cannot (here
    // SIGSTOPped) is killed by the parent a little later; the call behind
    // it never started, so it is sent again and runs exactly once.
    let path = record_file("races", "backstop");
    let pool = fixture().workers(1).pipeline_depth(2).build().unwrap();
    let pid = block(pool.call::<Pid>(())).unwrap();
    let slow = pool.call_with::<SleepMs>(
        10_000,
        CallOptions::new().timeout(Duration::from_millis(200)),
    );
    let behind = pool.call::<Record>(record(&path, "behind", 0));
    assert!(eventually(Duration::from_secs(10), || pool
        .metrics()
        .calls
        .running
        == 2));
    sigstop(pid);
    let (slow, behind) = block(async { tokio::join!(slow, behind) });
    let err = slow.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(behind.unwrap(), "behind");
    assert_eq!(recorded(&path).get("behind"), Some(&1));
    assert!(eventually(Duration::from_secs(5), || !alive(pid)));
    assert_eq!(pool.metrics().timeouts, 1);
}

#[test]
fn timeouts_racing_replies_never_run_the_next_call_twice() {
    // The first call's reply and its deadline arrive together; the next
    // call is already in the worker. Whatever wins, the next call runs
    // exactly once and succeeds.
    let path = record_file("races", "timeout-race");
    let pool = fixture().workers(1).pipeline_depth(2).build().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut timed_out = 0;
    for i in 0..30 {
        let racer =
            pool.call_with::<SleepMs>(50, CallOptions::new().timeout(Duration::from_millis(50)));
        let tag = format!("next-{i}");
        let next = pool.call::<Record>(record(&path, &tag, 1));
        let (racer, next) = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(racer, next) })
                .await
                .expect("hung")
        });
        match racer {
            Ok(_) => {}
            Err(e) if e.is_timeout() => timed_out += 1,
            Err(e) => panic!("the racing call failed otherwise: {e}"),
        }
        assert_eq!(next.unwrap(), tag);
    }
    let counts = recorded(&path);
    assert_eq!(counts.len(), 30, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "ran twice: {counts:?}");
    eprintln!("{timed_out} of 30 racing calls timed out");
}

#[test]
fn a_storm_of_cancellations_stops_only_the_calls_it_names() {
    // Callers give up on large-reply calls at random moments (often right
    // as the reply is written) while other calls are queued behind them.
    // Every call that was not given up on succeeds, exactly once.
    let path = record_file("races", "cancel-storm");
    let pool = fixture().workers(1).pipeline_depth(2).build().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..40 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let patience = Duration::from_micros(x % 20_000);
        let big = pool.call::<Bytes>(4 << 20);
        let tag = format!("kept-{i}");
        let kept = pool.call::<Record>(record(&path, &tag, 2));
        let kept = rt.block_on(async move {
            // Give up on the big one after `patience`, then await the other.
            let _ = tokio::time::timeout(patience, big).await;
            tokio::time::timeout(Duration::from_secs(30), kept)
                .await
                .expect("hung")
        });
        assert_eq!(kept.unwrap(), tag, "call {i} (patience {patience:?})");
    }
    let counts = recorded(&path);
    assert_eq!(counts.len(), 40, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "ran twice: {counts:?}");
}

#[test]
fn deep_pipelines_wake_every_waiting_caller() {
    // At depth 6 six drivers share one worker's socket: one reads for all
    // and wakes each reply's owner alone, then hands the reading on. A
    // wake-up lost there is a caller that never returns. Every call
    // resolves with its own result, through calls given up at random
    // moments and a worker that dies with calls queued behind the one it
    // runs; nothing runs twice.
    let path = record_file("races", "deep-pipeline");
    let pool = std::sync::Arc::new(fixture().workers(1).pipeline_depth(6).build().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(90), async {
            let mut tasks = Vec::new();
            for t in 0..12u64 {
                let pool = pool.clone();
                let path = path.clone();
                tasks.push(tokio::spawn(async move {
                    let mut x = 0x9E37_79B9_7F4A_7C15_u64 ^ (t + 1);
                    for i in 0..40u64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        match x % 4 {
                            // Plain calls: each gets its own answer back.
                            0 | 1 => {
                                let s = format!("{t}-{i}-{}", "x".repeat((x % 3000) as usize));
                                assert_eq!(pool.call::<Echo>(s.clone()).await.unwrap(), s);
                            }
                            // Given up after a random moment: queued,
                            // running or just answered.
                            2 => {
                                let patience = Duration::from_micros(x % 3_000);
                                let _ =
                                    tokio::time::timeout(patience, pool.call::<SleepMs>(1)).await;
                            }
                            // Counted: must run exactly once even when the
                            // worker dies around it.
                            _ => {
                                let tag = format!("kept-{t}-{i}");
                                let got = pool.call::<Record>(record(&path, &tag, 0)).await;
                                assert_eq!(got.unwrap(), tag);
                            }
                        }
                    }
                }));
            }
            // Meanwhile the worker dies three times in its call.
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(30)).await;
                let e = pool.call::<Die>(Death::Exit(3)).await.unwrap_err();
                assert!(e.is_worker_lost(), "{e}");
            }
            for task in tasks {
                task.await.unwrap();
            }
        })
        .await
        .expect("a caller was never woken")
    });
    let counts = recorded(&path);
    assert!(!counts.is_empty());
    assert!(counts.values().all(|&n| n == 1), "ran twice: {counts:?}");
}
