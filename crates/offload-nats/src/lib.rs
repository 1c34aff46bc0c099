//! Run the same typed [`Task`](offload::proc::Task)s a
//! [`ProcessPool`](offload::proc::ProcessPool) runs, on worker processes on
//! any number of machines, through NATS, and await them like a local call.
//!
//! # The problem
//!
//! When one machine is no longer enough, the tasks you registered for a
//! local process pool should not have to be rewritten for a job queue or
//! a cluster of your own. Here the same [`Registry`](offload::proc::Registry)
//! serves calls that arrive over NATS (an existing, proven message
//! system: we write the executor, never a broker):
//!
//! - [`Worker`]: on each machine, serves a registry's tasks, each call in
//!   a local process pool (a crash, leak or runaway kills one process, not
//!   the worker; hard timeouts and kill-on-cancel as in the process pool),
//!   or, [opted in](WorkerBuilder::in_process), on threads of its own
//!   (faster for tiny tasks, not isolated).
//! - [`RemotePool`]: anywhere, calls them: `pool.call::<T>(input).await`
//!   resolves to `Result<T::Output, offload::Error>`, like a
//!   `ProcessPool` call. Switching a call between the two changes the
//!   line that builds the pool.
//! - Two delivery modes per pool ([`Mode`]): **direct** (request/reply
//!   through a queue group, at most once, heartbeats so that a dead worker
//!   is reported after two heartbeats and a second) and **durable** (a JetStream
//!   work queue, at least once: a job whose worker dies runs again
//!   elsewhere, and the caller still gets one result).
//! - [`LocalServer`]: a throwaway `nats-server` for tests and demos.
//!
//! ```no_run
//! use offload::proc::{Registry, Task};
//!
//! struct WordCount;
//! impl Task for WordCount {
//!     const NAME: &'static str = "word_count";
//!     type Input = String;
//!     type Output = usize;
//!     fn run(text: String) -> usize { text.split_whitespace().count() }
//! }
//! fn registry() -> Registry { Registry::new().with::<WordCount>() }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     offload::proc::run_worker_if_child(&registry()); // first line of main
//!     let url = "nats://127.0.0.1:4222";
//!     if std::env::args().any(|a| a == "--worker") {
//!         // On each machine: serve until SIGTERM.
//!         offload_nats::Worker::builder().url(url).registry(registry()).processes(4).serve().await?;
//!     } else {
//!         // Anywhere: call.
//!         let pool = offload_nats::RemotePool::builder().url(url).build().await?;
//!         let n = pool.call::<WordCount>("to be or not to be".into()).await?;
//!         assert_eq!(n, 6);
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Guarantees
//!
//! - Every call resolves: with its output, or with a typed
//!   [`offload::Error`] (see [`RemotePool`]'s failures); none waits for
//!   ever, not across a server restart.
//! - Nobody serving the task fails at once ([`offload::Error::is_no_workers`]),
//!   as do an unknown task and a task at another version
//!   ([`offload::Error::is_unknown_task`], [`offload::Error::is_version_mismatch`]:
//!   calls carry the task's [`fingerprint`](offload::proc::fingerprint)).
//! - Inputs over the server's `max_payload` fail before anything is
//!   sent ([`offload::Error::is_too_large`]).
//! - A caller has a bounded number of calls in flight; a worker pulls
//!   only the durable jobs it can run.
//! - Dropping a call cancels it: not started, it never runs; running, its
//!   process is killed.
//!
//! # Security
//!
//! Only tasks in a worker's registry can ever run, and their inputs are
//! decoded as the task's input type. But anyone allowed to publish on the
//! prefix's subjects can call them: restrict `<prefix>.>` with NATS
//! accounts and permissions, and pass credentials and TLS settings with
//! `connect_options` (they go to async-nats as they are).
//!
//! # Runtime
//!
//! The client runs on tokio: build pools and workers, and await calls,
//! inside a tokio runtime (current-thread or multi-thread).
//!
//! The design (subjects, headers, heartbeats, acks, cancellation, what
//! "at most once" and "at least once" mean here, reconnects) is in
//! `README.md` beside this crate's sources.
#![deny(unsafe_code)]

mod call;
mod connection;
mod errors;
mod local;
mod metrics;
mod pool;
mod router;
mod subjects;
mod worker;

pub use errors::BuildError;
pub use local::{INSTALL_HINT, LocalServer, SERVER_ENV, find_server};
pub use pool::{
    CallOptions, Mode, RemoteCall, RemoteMetrics, RemotePool, RemotePoolBuilder, Shutdown,
};
pub use worker::{ShutdownHandle, Worker, WorkerBuilder};

/// The NATS client, for [`RemotePoolBuilder::connect_options`] and
/// [`WorkerBuilder::client`].
pub use async_nats;
/// What dropping a running call does; see [`CallOptions::on_drop`].
pub use offload::proc::OnDrop;
