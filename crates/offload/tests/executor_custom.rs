//! A user-written executor gets the awaitable result, panic capture and
//! cancellation from `run_in_executor` by implementing one method.

mod common;

use std::sync::{Arc, Mutex};

use offload::{Executor, Job};

/// The crate docs' example: every job on a fresh thread.
struct ThreadPerJob;

impl Executor for ThreadPerJob {
    fn execute(&self, job: Job) {
        let _ = std::thread::Builder::new()
            .name("per-job".into())
            .spawn(move || job.run());
    }
}

/// Holds jobs until told to run them: lets a test cancel queued work.
#[derive(Clone, Default)]
struct Manual(Arc<Mutex<Vec<Job>>>);

impl Executor for Manual {
    fn execute(&self, job: Job) {
        self.0.lock().unwrap().push(job);
    }
}

impl Manual {
    fn run_all(&self) -> usize {
        let jobs: Vec<Job> = self.0.lock().unwrap().drain(..).collect();
        let n = jobs.len();
        jobs.into_iter().for_each(Job::run);
        n
    }
}

async fn smoke() {
    let n = offload::run_in_executor(&ThreadPerJob, || 6 * 7)
        .await
        .unwrap();
    assert_eq!(n, 42);
}

async fn runs_on_the_users_thread() {
    let name = offload::run_in_executor(&ThreadPerJob, || {
        std::thread::current().name().map(str::to_owned)
    })
    .await
    .unwrap();
    assert_eq!(name.as_deref(), Some("per-job"));
}

async fn panics_are_captured() {
    let err = offload::run_in_executor(&ThreadPerJob, || -> () { panic!("custom") })
        .await
        .unwrap_err();
    assert_eq!(err.panic_message(), Some("custom"));
}

async fn cancellation_before_start_is_free() {
    let exec = Manual::default();
    let ran = Arc::new(Mutex::new(false));
    let r = ran.clone();
    let mut fut = offload::run_in_executor(&exec, move || *r.lock().unwrap() = true);
    assert!(
        common::poll_once(&mut fut).is_pending(),
        "job handed over, not run yet"
    );
    drop(fut);
    assert_eq!(exec.run_all(), 1);
    assert!(
        !*ran.lock().unwrap(),
        "the caller gave up before the start: never runs"
    );

    let fut = offload::run_in_executor(&exec, || 3);
    let run = {
        let exec = exec.clone();
        std::thread::spawn(move || {
            // Run once the future has been polled and handed the job over.
            assert!(common::eventually(
                std::time::Duration::from_secs(10),
                || { !exec.0.lock().unwrap().is_empty() }
            ));
            exec.run_all()
        })
    };
    assert_eq!(fut.await.unwrap(), 3);
    assert_eq!(run.join().unwrap(), 1);
}

async fn works_through_arc_and_box() {
    let a: Arc<dyn Executor + Send + Sync> = Arc::new(ThreadPerJob);
    assert_eq!(offload::run_in_executor(&a, || 1).await.unwrap(), 1);
    let b: Box<dyn Executor> = Box::new(ThreadPerJob);
    assert_eq!(offload::run_in_executor(&b, || 2).await.unwrap(), 2);
}

on_every_runtime!(
    smoke,
    runs_on_the_users_thread,
    panics_are_captured,
    cancellation_before_start_is_free,
    works_through_arc_and_box,
);
