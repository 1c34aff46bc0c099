//! A dedicated executor owns a resource that is not `Send`, created on its
//! thread; calls run one at a time, in order, and a panic fails only its call.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use offload::Dedicated;

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

async fn failing_init_fails_ready_and_every_call() {
    // Build never fails for a bad `init`: it has not run yet when build
    // returns. The failure surfaces on `ready()` and on every call.
    let d = Dedicated::builder()
        .try_build(|| Err::<Connector, _>("no route to ERP"))
        .expect("build does not wait for init");
    let queued = d.run(|c: &mut Connector| c.log.borrow().len());
    let err = d.ready().await.unwrap_err();
    assert!(err.is_init(), "{err}");
    assert!(err.to_string().contains("no route to ERP"), "{err}");
    let err = queued.await.unwrap_err();
    assert!(
        err.is_init(),
        "a call queued before init failed gets its error: {err}"
    );
    let err = d.run(|_: &mut Connector| 1).await.unwrap_err();
    assert!(
        err.is_init() && err.to_string().contains("no route to ERP"),
        "a later call too: {err}"
    );
    let back = d.try_run(|_: &mut Connector| 2).unwrap_err();
    assert!(back.is_shutdown(), "try_run hands the closure back");

    let d = Dedicated::builder()
        .build(|| -> Connector { panic!("init exploded") })
        .expect("build does not wait for init");
    let err = d.ready().await.unwrap_err();
    assert!(
        err.is_init() && err.to_string().contains("init exploded"),
        "{err}"
    );
    let err = d.run(|_: &mut Connector| 1).await.unwrap_err();
    assert!(err.is_init(), "{err}");
    d.shutdown().await;
}

/// Calls that found the queue full and wait in the line behind it get
/// the initialiser's error too, not a bare shutdown.
async fn calls_waiting_for_room_get_the_init_error() {
    let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
    let held = gate.clone();
    let d = Dedicated::builder()
        .queue_capacity(1)
        .try_build(move || {
            held.wait();
            Err::<Connector, _>("no route to ERP")
        })
        .expect("build does not wait for init");
    // One call fills the queue; the others wait in the line behind it.
    let calls: Vec<_> = (0..5).map(|i| d.run(move |_: &mut Connector| i)).collect();
    gate.wait();
    for call in calls {
        let err = call.await.unwrap_err();
        assert!(
            err.is_init() && err.to_string().contains("no route to ERP"),
            "{err}"
        );
    }
    d.shutdown().await;
}

async fn ready_resolves_once_init_succeeded() {
    let d = Dedicated::builder().build(connect).unwrap();
    d.ready().await.expect("init succeeded");
    d.ready().await.expect("and stays so");
    assert!(format!("{d:?}").contains("ready"), "{d:?}");
}

async fn clones_share_the_thread_and_the_last_drop_drains() {
    let d = Dedicated::builder().name("cl").build(connect).unwrap();
    let d2 = d.clone();
    d2.run(|c: &mut Connector| c.log.borrow_mut().push(7))
        .await
        .unwrap();
    let gate = common::Gate::new();
    let g = gate.clone();
    let blocker = d.try_run(move |_: &mut Connector| g.wait()).unwrap();
    let queued = d.run(|c: &mut Connector| c.log.borrow().clone());
    drop(d);
    let second = d2
        .try_run(|c: &mut Connector| c.log.borrow().len())
        .expect("one clone dropped: the executor still takes calls");
    drop(d2);
    // Both handles are gone; the queued calls still run and deliver.
    gate.open();
    blocker.await.unwrap();
    assert_eq!(queued.await.unwrap(), vec![7], "one thread, one resource");
    assert_eq!(second.await.unwrap(), 1);
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

/// `shutdown_blocking` returns only once the resource was dropped on its
/// thread (a slow `Drop`, like closing a connection, included).
#[test]
fn shutdown_blocking_returns_after_the_resource_is_dropped() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

    struct Conn(Arc<AtomicBool>);
    impl Drop for Conn {
        fn drop(&mut self) {
            std::thread::sleep(std::time::Duration::from_millis(100));
            self.0.store(true, SeqCst);
        }
    }
    let closed = Arc::new(AtomicBool::new(false));
    let c = closed.clone();
    let d = Dedicated::builder().build(move || Conn(c)).unwrap();
    futures::executor::block_on(d.ready()).unwrap();
    d.shutdown_blocking();
    assert!(
        closed.load(SeqCst),
        "the resource was dropped before the return"
    );
}

on_every_runtime!(
    smoke,
    resource_lives_on_its_thread_and_calls_run_in_order,
    a_panicking_call_fails_alone,
    failing_init_fails_ready_and_every_call,
    calls_waiting_for_room_get_the_init_error,
    ready_resolves_once_init_succeeded,
    clones_share_the_thread_and_the_last_drop_drains,
    try_run_hands_back_when_full_or_shut_down,
);
