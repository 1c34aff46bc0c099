//! A panicking job fails only its own call, with the panic message; the
//! pool keeps its threads and goes on.

mod common;

use offload::ThreadPool;

async fn smoke() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    assert!(pool.run(|| 1).await.is_ok());
}

async fn panic_becomes_an_error_with_its_message() {
    let pool = ThreadPool::builder().threads(1).build().unwrap();
    let err = pool
        .run(|| -> u32 { panic!("boom {}", 42) })
        .await
        .unwrap_err();
    assert!(err.is_panic());
    assert!(!err.is_cancelled());
    assert_eq!(err.panic_message(), Some("boom 42"));
    assert!(err.to_string().contains("boom 42"), "{err}");
    let err = pool
        .run(|| -> u32 { panic!("static str") })
        .await
        .unwrap_err();
    assert_eq!(err.panic_message(), Some("static str"));
}

async fn pool_survives_many_panics() {
    let pool = ThreadPool::builder().threads(2).build().unwrap();
    let results = futures::future::join_all((0..200u32).map(|i| {
        pool.run(move || {
            if i % 10 == 0 {
                panic!("job {i}");
            }
            i
        })
    }))
    .await;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(v as usize, i),
            Err(e) => {
                assert_eq!(i % 10, 0);
                assert_eq!(e.panic_message(), Some(format!("job {i}").as_str()));
            }
        }
    }
    let m = pool.metrics();
    assert_eq!((m.panicked, m.completed), (20, 180), "{m:?}");
    assert!(m.threads <= 2);
    // The pool still works at full size.
    assert_eq!(pool.run(|| 9).await.unwrap(), 9);
}

on_every_runtime!(
    smoke,
    panic_becomes_an_error_with_its_message,
    pool_survives_many_panics
);
