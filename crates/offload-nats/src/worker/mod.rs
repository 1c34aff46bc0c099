//! [`Worker`]: serves a [`Registry`](offload::proc::Registry)'s tasks to [`RemotePool`](crate::RemotePool)s,
//! running each call in a local [`ProcessPool`].
//!
//! Files: `builder.rs` settings and `build` (connect, subscribe, spawn the
//! loops); `runner.rs` where calls run (process pool or threads);
//! `shared.rs` what the loops and handlers share (calls held, cancels);
//! `direct.rs` and `durable.rs` the two delivery modes; `outbox.rs` direct
//! replies published in batches; `service.rs` the NATS service API. This
//! file: the running [`Worker`], its shutdown, and the small loops
//! (cancels, probes).

mod builder;
mod direct;
mod durable;
mod held;
mod outbox;
mod runner;
mod service;
mod shared;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use async_nats::Subscriber;
use futures::StreamExt;
use offload::proc::ProcessPool;
use tokio::sync::watch;

pub use builder::WorkerBuilder;
pub(crate) use builder::ensure_stream;
pub(crate) use held::{HeldCalls, Refused, Stop};
pub(crate) use runner::{Runner, TaskEntry};
pub(crate) use shared::{HandlerGuard, Shared};

pub(super) async fn cancel_loop(shared: Arc<Shared>, mut sub: Subscriber) {
    while let Some(m) = sub.next().await {
        if let Ok(id) = std::str::from_utf8(&m.payload) {
            shared.cancel(id.to_owned());
        }
    }
}

/// Answers every request on `sub` with `body` until shutdown.
pub(super) async fn answer(shared: Arc<Shared>, mut sub: Subscriber, body: Vec<u8>) {
    let mut stopping = shared.stopping.clone();
    loop {
        tokio::select! {
            m = sub.next() => match m {
                Some(m) => if let Some(reply) = m.reply {
                    let _ = shared.client.publish(reply, body.clone().into()).await;
                },
                None => return,
            },
            _ = stopped(&mut stopping) => {
                let _ = sub.unsubscribe().await;
                return;
            }
        }
    }
}

/// Stops a worker from another task: [`ShutdownHandle::shutdown`] does
/// what SIGTERM does.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    pub(super) tx: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown; [`Worker::serve`] returns when it is done.
    pub fn shutdown(&self) {
        self.tx.send_replace(true);
    }
}

/// Serves a [`Registry`](offload::proc::Registry)'s tasks to [`RemotePool`](crate::RemotePool)s:
/// direct calls from a NATS queue group, durable jobs from a JetStream
/// work queue, each run in a local [`ProcessPool`] (a crash, leak or
/// runaway task kills one process, not the worker).
///
/// ```no_run
/// # use offload::proc::{Registry, Task};
/// # struct WordCount;
/// # impl Task for WordCount {
/// #     const NAME: &'static str = "word_count";
/// #     type Input = String;
/// #     type Output = usize;
/// #     fn run(t: String) -> usize { t.split_whitespace().count() }
/// # }
/// fn registry() -> Registry {
///     Registry::new().with::<WordCount>()
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     offload::proc::run_worker_if_child(&registry()); // first line of main
///     offload_nats::Worker::builder()
///         .url("nats://10.0.0.5:4222")
///         .registry(registry())
///         .processes(4)
///         .serve() // until SIGTERM: then finish or hand back what it holds
///         .await?;
///     Ok(())
/// }
/// ```
///
/// It answers the NATS service API (`$SRV.PING`, `$SRV.INFO`,
/// `$SRV.STATS`, service name `offload`), so `nats micro ls` lists it
/// with its load.
pub struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) stop: ShutdownHandle,
    pub(super) grace: Duration,
    pub(super) signals: bool,
    pub(super) loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Worker {
    /// A builder; see [`WorkerBuilder`] for the settings and defaults.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::default()
    }

    pub(super) fn spawn(&mut self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.loops.push(tokio::spawn(fut));
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A handle that shuts this worker down.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.stop.clone()
    }

    /// The local process pool (its pids, metrics), unless the worker runs
    /// calls [in process](WorkerBuilder::in_process).
    pub fn process_pool(&self) -> Option<&ProcessPool> {
        match &self.shared.runner {
            Runner::Procs(p) => Some(p),
            Runner::Threads { .. } => None,
        }
    }

    /// Serves until shutdown is asked (SIGTERM or SIGINT when signals are
    /// handled, or a [`ShutdownHandle`]), then shuts down gracefully:
    /// stops taking calls, lets those in hand finish for the grace period,
    /// hands back (durable: nak) or fails (direct) the rest, stops its
    /// processes, and returns.
    pub async fn serve(mut self) {
        let mut stopping = self.shared.stopping.clone();
        if self.signals {
            let handle = self.stop.clone();
            self.spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    tracing::warn!("offload-nats: cannot handle SIGTERM/SIGINT");
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                handle.shutdown();
            });
        }
        let _ = stopped(&mut stopping).await;
        let sh = &self.shared;
        tracing::info!(worker = %sh.name, held = sh.held_count(), "offload-nats: shutting down");
        let deadline = Instant::now().checked_add(self.grace);
        while sh.held_count() > 0 && deadline.is_none_or(|d| Instant::now() < d) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sh.stop_all();
        // Handlers answer (direct) or nak (durable) what they held; the
        // outbox hands their replies to the client.
        let until = Instant::now() + Duration::from_secs(5);
        while (sh.handlers.load(Relaxed) > 0 || sh.outbox.pending() > 0) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = sh.client.flush().await;
        for l in &self.loops {
            l.abort();
        }
        sh.runner.shutdown().await;
    }
}

impl Drop for Worker {
    /// A worker dropped without [`serve`](Worker::serve) stops serving at
    /// once: its subscriptions and pulls end (durable jobs it held go back
    /// to JetStream after their ack wait).
    fn drop(&mut self) {
        self.stop.shutdown();
        for l in &self.loops {
            l.abort();
        }
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.shared.name)
            .field("prefix", &self.shared.subjects.prefix())
            .field("held", &self.shared.held_count())
            .finish_non_exhaustive()
    }
}

/// Resolves once shutdown has been asked (holding no borrow of the flag
/// across an await, so the futures that select on it stay `Send`).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}
