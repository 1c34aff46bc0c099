//! Calls nobody can serve fail at once with a typed error: no workers,
//! an unknown task, a task at another version, a payload over the
//! server's `max_payload`.

mod common;

use std::time::{Duration, Instant};

use common::tasks::{Big, Echo, Len, NotServed};
use common::{Fixture, pool, run, server};
use offload_nats::Mode;

/// "At once": well under any timeout, generous for a loaded machine.
const FAST: Duration = Duration::from_secs(5);

#[test]
fn no_workers_fails_at_once_in_each_mode() {
    let server = server();
    run(async {
        for mode in [Mode::Direct, Mode::Durable] {
            let p = pool(&server.url(), mode).await;
            let t = Instant::now();
            let e = p.call::<Echo>(1).await.unwrap_err();
            assert!(e.is_no_workers(), "{mode:?}: {e}");
            assert!(e.is_retryable());
            assert!(t.elapsed() < FAST, "{mode:?}: took {:?}", t.elapsed());
            assert_eq!(p.metrics().unserved, 1);
        }
    });
}

#[test]
fn an_unknown_task_is_refused_with_a_typed_error() {
    let server = server();
    let _w = Fixture::new(&server.url()).start();
    run(async {
        for mode in [Mode::Direct, Mode::Durable] {
            let p = pool(&server.url(), mode).await;
            let t = Instant::now();
            let e = p.call::<NotServed>(1).await.unwrap_err();
            assert!(e.is_unknown_task(), "{mode:?}: {e}");
            assert!(t.elapsed() < FAST);
        }
    });
}

#[test]
fn a_task_at_another_version_is_refused_with_a_typed_error() {
    let server = server();
    let _w = Fixture::new(&server.url()).skew().start();
    run(async {
        for mode in [Mode::Direct, Mode::Durable] {
            let p = pool(&server.url(), mode).await;
            let t = Instant::now();
            let e = p.call::<Echo>(1).await.unwrap_err();
            assert!(e.is_version_mismatch(), "{mode:?}: {e}");
            assert!(!e.is_retryable());
            assert!(e.to_string().contains("echo"), "{e}");
            assert!(t.elapsed() < FAST);
        }
    });
}

#[test]
fn mixed_versions_route_each_call_to_a_worker_of_its_version() {
    let server = server();
    let _old = Fixture::new(&server.url()).skew().start();
    let _new = Fixture::new(&server.url()).start();
    run(async {
        let p = pool(&server.url(), Mode::Direct).await;
        for i in 0..20 {
            assert_eq!(p.call::<Echo>(i).await.unwrap(), i);
        }
    });
}

#[test]
fn payloads_over_max_payload_fail_before_sending() {
    let server = server();
    let _w = Fixture::new(&server.url()).start();
    run(async {
        for mode in [Mode::Direct, Mode::Durable] {
            let p = pool(&server.url(), mode).await;
            let max = p.max_payload();
            assert!(max >= 64 * 1024, "max_payload {max}");
            // Input: refused before anything is sent.
            let before = p
                .client()
                .statistics()
                .out_bytes
                .load(std::sync::atomic::Ordering::Relaxed);
            let e = p.call::<Len>(vec![0; max + 1]).await.unwrap_err();
            assert!(e.is_too_large(), "{mode:?}: {e}");
            let after = p
                .client()
                .statistics()
                .out_bytes
                .load(std::sync::atomic::Ordering::Relaxed);
            assert!(
                after - before < 1024,
                "{mode:?}: {} bytes sent",
                after - before
            );
            // Just under the limit goes through.
            let n = (max - 4096) as u64;
            assert_eq!(p.call::<Len>(vec![1; n as usize]).await.unwrap(), n);
            // Output: the worker refuses to send it, typed.
            let e = p.call::<Big>(max as u64 + 1).await.unwrap_err();
            assert!(e.is_too_large(), "{mode:?}: {e}");
            // And the worker goes on.
            assert_eq!(p.call::<Echo>(3).await.unwrap(), 3);
        }
    });
}
