//! The default pool: `offload::run(f)`, created lazily, sized like Python's
//! default executor, configurable before first use.

mod common;

async fn smoke() {
    assert_eq!(offload::run(|| 2 + 2).await.unwrap(), 4);
}

async fn runs_on_named_default_threads() {
    let name = offload::run(|| std::thread::current().name().map(str::to_owned))
        .await
        .unwrap()
        .unwrap();
    assert!(name.starts_with("offload-run-"), "{name}");
    let pool = offload::default_pool();
    let expected = std::env::var(offload::THREADS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cpus + 4).min(32)
        });
    assert_eq!(pool.max_threads(), expected);
    // Configuring after first use is refused, not silently ignored.
    let err = offload::set_default_pool(offload::ThreadPool::builder()).unwrap_err();
    assert!(matches!(err, offload::BuildError::DefaultPoolExists));
}

async fn panics_in_the_default_pool_are_errors() {
    let err = offload::run(|| -> u8 { panic!("default") })
        .await
        .unwrap_err();
    assert!(err.is_panic());
    assert_eq!(offload::run(|| 1).await.unwrap(), 1);
}

on_every_runtime!(
    smoke,
    runs_on_named_default_threads,
    panics_in_the_default_pool_are_errors
);

#[test]
fn futures_are_send_and_static() {
    fn assert_spawnable<F: std::future::Future + Send + 'static>(_: &F) {}
    let pool = offload::ThreadPool::builder().build().unwrap();
    let run = pool.run(|| 1);
    assert_spawnable(&run);
    let handle = pool.try_run(|| 1).unwrap();
    assert_spawnable(&handle);
    assert_spawnable(&pool.shutdown());
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<offload::ThreadPool>();
    assert_send_sync::<offload::Dedicated<std::rc::Rc<u8>>>();
    assert_send_sync::<offload::Error>();
}
