//! A dedicated executor owns a resource that is not `Send`, created on its
//! thread; calls run one at a time, in order, and a panic fails only its call.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use offload::{BuildError, Dedicated};

/// Stands in for a non-thread-safe connector handle (`Rc` is `!Send`).
struct Connector {
    log: Rc<RefCell<Vec<u32>>>,
    thread: Option<String>,
}

fn connect() -> Connector {
    Connector {
        log: Rc::new(RefCell::new(Vec::new())),
        thread: std::thread::current().name().map(str::to_owned),
    }
}

async fn smoke() {
    let d = Dedicated::builder().build(connect).unwrap();
    assert_eq!(
        d.run(|c: &mut Connector| c.log.borrow().len())
            .await
            .unwrap(),
        0
    );
}

async fn resource_lives_on_its_thread_and_calls_run_in_order() {
    let d = Dedicated::builder().name("erp").build(connect).unwrap();
    let calls = (0..50u32).map(|i| {
        d.run(move |c: &mut Connector| {
            c.log.borrow_mut().push(i);
            (
                c.thread.clone(),
                std::thread::current().name().map(str::to_owned),
            )
        })
    });
    for r in futures::future::join_all(calls).await {
        let (created_on, runs_on) = r.unwrap();
        assert_eq!(created_on.as_deref(), Some("erp-0"));
        assert_eq!(runs_on.as_deref(), Some("erp-0"));
    }
    let log = d
        .run(|c: &mut Connector| c.log.borrow().clone())
        .await
        .unwrap();
    assert_eq!(
        log,
        (0..50).collect::<Vec<_>>(),
        "calls run in submission order"
    );
    d.shutdown().await;
}

async fn a_panicking_call_fails_alone() {
    let d = Dedicated::builder().build(connect).unwrap();
    d.run(|c: &mut Connector| c.log.borrow_mut().push(1))
        .await
        .unwrap();
    let err = d
        .run(|_: &mut Connector| -> () { panic!("connector said no") })
        .await
        .unwrap_err();
    assert_eq!(err.panic_message(), Some("connector said no"));
    let len = d
        .run(|c: &mut Connector| c.log.borrow().len())
        .await
        .unwrap();
    assert_eq!(len, 1, "the resource survived the panic");
}

async fn failing_init_is_a_build_error() {
    let err = Dedicated::builder()
        .try_build(|| Err::<Connector, _>("no route to ERP"))
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::Init(m) if m.contains("no route to ERP")),
        "{err}"
    );
    let err = Dedicated::builder()
        .build(|| -> Connector { panic!("init exploded") })
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::Init(m) if m.contains("init exploded")),
        "{err}"
    );
}

async fn try_run_hands_back_when_full_or_shut_down() {
    let d = Dedicated::builder()
        .queue_capacity(1)
        .build(connect)
        .unwrap();
    let gate = common::Gate::new();
    let g = gate.clone();
    let blocker = d.try_run(move |_: &mut Connector| g.wait()).unwrap();
    assert!(common::eventually(
        std::time::Duration::from_secs(10),
        || d.metrics().running == 1
    ));
    let queued = d.try_run(|_: &mut Connector| 1).unwrap();
    let err = d.try_run(|_: &mut Connector| 2).unwrap_err();
    assert!(err.is_full());
    let mut dummy = connect();
    assert_eq!((err.into_inner())(&mut dummy), 2);
    gate.open();
    blocker.await.unwrap();
    assert_eq!(queued.await.unwrap(), 1);
    d.shutdown().await;
    assert!(d.try_run(|_: &mut Connector| 3).unwrap_err().is_shutdown());
    assert!(
        d.run(|_: &mut Connector| 3)
            .await
            .unwrap_err()
            .is_shutdown()
    );
}

on_every_runtime!(
    smoke,
    resource_lives_on_its_thread_and_calls_run_in_order,
    a_panicking_call_fails_alone,
    failing_init_is_a_build_error,
    try_run_hands_back_when_full_or_shut_down,
);
