//! [`WorkerBuilder`]: a worker's settings, checked, and `build`: connect,
//! choose how calls run, subscribe, and hand back a [`Worker`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, SystemTime};

use crate::connection::Connection;
use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions, Subscriber};
use offload::proc::{ProcessPool, Registry};
use tokio::sync::{Semaphore, watch};

use crate::errors::BuildError;
use crate::subjects::{QUEUE, Subjects};

use super::{
    HeldCalls, Runner, Shared, ShutdownHandle, TaskEntry, Worker, answer, cancel_loop, direct,
    durable, outbox, service,
};

/// Calls in flight per process of the built-in pool; see
/// [`WorkerBuilder::pipeline_depth`].
const DEFAULT_PIPELINE_DEPTH: usize = 16;

/// Builds a [`Worker`]. Create one with [`Worker::builder`].
#[must_use = "a builder does nothing until `build().await` or `serve().await`"]
pub struct WorkerBuilder {
    connection: Connection,
    registry: Option<Registry>,
    processes: Option<usize>,
    depth: Option<usize>,
    pool: Option<ProcessPool>,
    threads: Option<usize>,
    name: Option<String>,
    prefix: String,
    capacity: Option<usize>,
    queue: usize,
    durable: bool,
    ack_wait: Duration,
    max_deliver: i64,
    grace: Duration,
    signals: bool,
}

impl Default for WorkerBuilder {
    fn default() -> Self {
        WorkerBuilder {
            connection: Connection::default(),
            registry: None,
            processes: None,
            depth: None,
            pool: None,
            threads: None,
            name: None,
            prefix: "offload".into(),
            capacity: None,
            queue: 1024,
            durable: true,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            grace: Duration::from_secs(10),
            signals: true,
        }
    }
}

impl WorkerBuilder {
    /// The server(s) to connect to (default `nats://127.0.0.1:4222`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.connection.set_url(url.into());
        self
    }

    /// Connect options passed through to async-nats (credentials, TLS,
    /// reconnect policy).
    pub fn connect_options(mut self, options: ConnectOptions) -> Self {
        self.connection.set_options(options);
        self
    }

    /// Use this already connected client.
    pub fn client(mut self, client: Client) -> Self {
        self.connection.set_client(client);
        self
    }

    /// The tasks this worker serves (required). Only these can ever run
    /// here; anyone allowed to publish on the prefix's subjects can call
    /// them (restrict that with NATS permissions).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Worker processes of the local process pool (default: the number of
    /// CPUs). The processes re-execute the current program, so
    /// [`run_worker_if_child`](offload::proc::run_worker_if_child) must be
    /// the first line of its `main`.
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Calls in flight per worker process of the built-in pool (default
    /// 16): one running, the others already in the process's socket, so
    /// that a process never sleeps between tiny calls. The worker holds
    /// (and, durable, pulls) as many calls as its processes have in flight
    /// ([`capacity`](Self::capacity)); a direct call held beyond that (the
    /// [`queue`](Self::queue)) waits in the worker for a slot, then its
    /// handler writes it to a process itself, with no thread woken to
    /// carry it (see `offload::proc`'s design note).
    ///
    /// `bench remote`'s throughput case (tiny calls from 64 tasks, 2
    /// workers of 1 process, 2 cores), as a ratio to raw NATS
    /// request/reply in the same run: 0.26–0.34× at depth 4, 0.32–0.41× at
    /// 8, 0.49–0.53× at 16, 0.47–0.51× at 32: a deep pipeline hides the
    /// hand-over from one held call to the next. For long calls with
    /// [`queue(0)`](Self::queue), use 2 or 1, so that a worker holds only
    /// what its processes can start soon and the rest goes to an idle
    /// worker. Not with [`process_pool`](Self::process_pool) (set it on
    /// that pool) or [`in_process`](Self::in_process).
    pub fn pipeline_depth(mut self, depth: usize) -> Self {
        self.depth = Some(depth);
        self
    }

    /// Run calls in this process pool instead of building one (for a
    /// worker program, per-call timeouts, recycling...). Its registry must
    /// be the one given to [`registry`](Self::registry).
    pub fn process_pool(mut self, pool: ProcessPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Run calls on a pool of this many threads in the worker itself
    /// instead of worker processes: no process hop (several times the
    /// throughput for tiny tasks), but **no isolation**: a task that
    /// crashes (segfault, abort) takes the worker down, a running call
    /// cannot be stopped (a cancel or a timeout only skips calls not yet
    /// started), and per-call timeouts are not enforced. A task's panic is
    /// still caught and returned.
    pub fn in_process(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// The worker's name in heartbeats, errors and the service API
    /// (default `<host>-<pid>`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The subject prefix shared with the callers (default `offload`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How many calls the worker runs at once (default: what its pool has
    /// in flight: processes × [`pipeline_depth`](Self::pipeline_depth),
    /// or twice the threads [`in_process`](Self::in_process)). Durable:
    /// it pulls a job from JetStream only when it holds fewer.
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = Some(n);
        self
    }

    /// Direct calls held beyond `capacity` that wait for a process
    /// (default 1024). A direct call beyond that is answered "busy" and
    /// its caller sends it again (to whichever worker NATS picks).
    ///
    /// NATS hands each direct call to a random worker of the queue group,
    /// so with few long calls one worker may hold a queue while another
    /// idles. For calls of tens of milliseconds and more, `queue(0)`
    /// balances them: a worker holds only what its processes can take
    /// (`capacity`) and turns the rest away, and the caller's retry finds
    /// a free worker (`offload-lab cluster`, 1 s calls: 1.90× the work on
    /// 2 workers with `queue(0)`, 1.50× with the default). Pair it with
    /// [`pipeline_depth(2)`](Self::pipeline_depth) (one call running and
    /// one ready per process), as the lab's cluster does. Keep the queue
    /// for tiny calls: waiting in one is cheaper than a round trip back.
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n;
        self
    }

    /// Serve durable calls too (default true; needs JetStream on the
    /// server).
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Durable: how long JetStream waits for an ack before it gives the
    /// job to another worker (default 30 s, at least 300 ms). A worker
    /// extends it every third of this while it holds the job, so it only
    /// matters when the worker dies: it is how long a dead worker's jobs
    /// wait before they run again. Set when the consumer is first created.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Durable: deliveries of a job before it goes to the dead-letter
    /// subject `<prefix>.dead.<task>` and its caller gets
    /// [`Error::is_worker_lost`](offload::Error::is_worker_lost) (default
    /// 5, at least 1).
    pub fn max_deliver(mut self, n: u32) -> Self {
        self.max_deliver = i64::from(n);
        self
    }

    /// On shutdown, how long calls in hand may run to completion (default
    /// 10 s). After it, durable jobs are handed back (nak) and direct
    /// calls fail with [`Error::is_worker_lost`](offload::Error::is_worker_lost).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Shut down gracefully on SIGTERM and SIGINT (default true).
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// Connects, starts the process pool and subscribes; the worker
    /// serves calls from now on, until [`Worker::serve`] returns.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] for a bad setting or a missing registry,
    /// [`BuildError::Connect`], [`BuildError::JetStream`] (durable serving
    /// needs JetStream: enable it on the server with `-js`, or
    /// `.durable(false)`), [`BuildError::Pool`].
    pub async fn build(self) -> Result<Worker, BuildError> {
        let subjects = Subjects::new(&self.prefix).map_err(BuildError::Invalid)?;
        let registry = self
            .registry
            .ok_or(BuildError::Invalid("a registry is required"))?;
        if registry.names().next().is_none() {
            return Err(BuildError::Invalid("the registry has no task"));
        }
        if self.processes == Some(0) {
            return Err(BuildError::Invalid("processes must be at least 1"));
        }
        if self.threads == Some(0) {
            return Err(BuildError::Invalid("in_process threads must be at least 1"));
        }
        if self.threads.is_some() && (self.pool.is_some() || self.processes.is_some()) {
            return Err(BuildError::Invalid(
                "in_process excludes processes and process_pool",
            ));
        }
        if self.depth == Some(0) {
            return Err(BuildError::Invalid("pipeline_depth must be at least 1"));
        }
        if self.depth.is_some() && (self.pool.is_some() || self.threads.is_some()) {
            return Err(BuildError::Invalid(
                "pipeline_depth is a setting of the built-in process pool: set it on the pool passed to process_pool; in_process has none",
            ));
        }
        if self.capacity == Some(0) {
            return Err(BuildError::Invalid("capacity must be at least 1"));
        }
        if self.ack_wait < Duration::from_millis(300) {
            return Err(BuildError::Invalid("ack_wait must be at least 300 ms"));
        }
        if self.max_deliver < 1 {
            return Err(BuildError::Invalid("max_deliver must be at least 1"));
        }
        let client = self.connection.connect().await?;
        // Known only once connected (see `subjects::max_payload`).
        let max_payload = client.server_info().max_payload;
        // A worker program exists to run these tasks; its own loop only
        // relays messages. At the background priority a local pool takes
        // by default, the tasks would yield to every normal program on a
        // shared machine (`bench remote`, tiny calls on 2 worker
        // processes: 0.08x raw NATS throughput at Background, 0.14x at
        // Normal), so they compete as equals. A pool
        // passed in with `pool` keeps its own setting.
        let runner = match (self.pool, self.threads) {
            (Some(p), _) => Runner::Procs(p),
            (None, Some(n)) => Runner::Threads {
                pool: offload::ThreadPool::builder()
                    .name("offload-nats")
                    .threads(n)
                    .priority(offload::Priority::Normal)
                    // The worker's loop feeds this pool and must have a
                    // core to do it; a thread that spins for the next call
                    // takes one (`bench remote`, in-process workers:
                    // 0.46x raw throughput with the default spin, 0.50x
                    // without).
                    .spin(std::time::Duration::ZERO)
                    .build()?,
                registry: Arc::new(registry.clone()),
            },
            (None, None) => {
                let mut b = ProcessPool::builder()
                    .name("offload-nats")
                    .priority(offload::Priority::Normal)
                    // As for the in-process pool: the loop, the carriers
                    // and the processes share the cores with the server;
                    // looking for the next frame takes a core one of them
                    // needs (`bench remote`, process workers: 0.11-0.27x
                    // raw throughput with the default spin, 0.28-0.36x
                    // without).
                    .spin(std::time::Duration::ZERO)
                    .pipeline_depth(self.depth.unwrap_or(DEFAULT_PIPELINE_DEPTH))
                    .registry(registry.clone())
                    // No frame larger than a NATS message can carry (when
                    // known; the process pool's default otherwise).
                    .max_frame_bytes(if max_payload == 0 {
                        64 << 20
                    } else {
                        max_payload.max(1024)
                    });
                if let Some(n) = self.processes {
                    b = b.workers(n);
                }
                Runner::Procs(b.build()?)
            }
        };
        let capacity = self.capacity.unwrap_or_else(|| runner.in_flight());
        let name = self.name.unwrap_or_else(default_name);
        let id = client
            .new_inbox()
            .rsplit('.')
            .next()
            .unwrap_or("0")
            .to_owned();
        let tasks: Vec<TaskEntry> = registry
            .names()
            .map(|n| TaskEntry {
                name: n,
                fp: registry.fingerprint(n).unwrap_or(0),
                requests: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                nanos: AtomicU64::new(0),
            })
            .collect();
        let (stop_tx, stop_rx) = watch::channel(false);
        let js = if self.durable {
            let js = jetstream::new(client.clone());
            ensure_stream(&js, &subjects)
                .await
                .map_err(BuildError::JetStream)?;
            Some(js)
        } else {
            None
        };
        let (outbox, publisher) = outbox::Outbox::new(client.clone());
        let shared = Arc::new(Shared {
            client: client.clone(),
            outbox,
            runner,
            name,
            id,
            subjects,
            tasks,
            direct_slots: Arc::new(Semaphore::new(capacity.saturating_add(self.queue))),
            run_slots: Arc::new(Semaphore::new(capacity)),
            capacity,
            queue: self.queue,
            held: HeldCalls::default(),
            handlers: AtomicUsize::new(0),
            max_payload: std::sync::atomic::AtomicUsize::new(max_payload),
            started: SystemTime::now(),
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            stopping: stop_rx,
        });
        let mut worker = Worker {
            shared: shared.clone(),
            stop: ShutdownHandle {
                tx: Arc::new(stop_tx),
            },
            grace: self.grace,
            signals: self.signals,
            loops: Vec::new(),
        };
        worker.spawn(publisher);
        // Cancels first, so that no cancel of a call we take is missed.
        let cancels = subscribe(&client, shared.subjects.cancel(), None).await?;
        worker.spawn(cancel_loop(shared.clone(), cancels));
        for idx in 0..shared.tasks.len() {
            let (name, fp) = (shared.tasks[idx].name, shared.tasks[idx].fp);
            let calls = subscribe(&client, shared.subjects.call(name, fp), Some(QUEUE)).await?;
            worker.spawn(direct::serve(shared.clone(), idx, calls));
            if let Some(js) = &js {
                let consumer = durable::consumer(js, &shared, idx)
                    .await
                    .map_err(BuildError::JetStream)?;
                worker.spawn(durable::serve(shared.clone(), idx, consumer));
            }
            let exact =
                subscribe(&client, shared.subjects.probe_exact(name, fp), Some(QUEUE)).await?;
            worker.spawn(answer(shared.clone(), exact, b"1".to_vec()));
            let named = subscribe(&client, shared.subjects.probe_name(name), Some(QUEUE)).await?;
            worker.spawn(answer(
                shared.clone(),
                named,
                format!("{fp:016x}").into_bytes(),
            ));
        }
        let any = subscribe(&client, shared.subjects.probe_any(), Some(QUEUE)).await?;
        worker.spawn(answer(
            shared.clone(),
            any,
            shared.name.clone().into_bytes(),
        ));
        for subject in service::subjects(&shared.id) {
            let sub = subscribe(&client, subject, None).await?;
            worker.spawn(service::serve(shared.clone(), sub));
        }
        // Make sure the server has every subscription before we say we
        // serve: a call sent right after `build` must find us.
        client
            .flush()
            .await
            .map_err(|e| BuildError::Connect(format!("flush: {e}")))?;
        Ok(worker)
    }

    /// [`build`](Self::build), then [`Worker::serve`]: serves until
    /// shutdown (SIGTERM, SIGINT or a [`ShutdownHandle`]).
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub async fn serve(self) -> Result<(), BuildError> {
        self.build().await?.serve().await;
        Ok(())
    }
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("url", &self.connection.url())
            .field("prefix", &self.prefix)
            .field("processes", &self.processes)
            .field("pipeline_depth", &self.depth)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

async fn subscribe(
    client: &Client,
    subject: String,
    queue: Option<&str>,
) -> Result<Subscriber, BuildError> {
    let r = match queue {
        Some(q) => client.queue_subscribe(subject.clone(), q.to_owned()).await,
        None => client.subscribe(subject.clone()).await,
    };
    r.map_err(|e| BuildError::Connect(format!("subscribe to {subject}: {e}")))
}

/// Creates the stream of durable jobs if it does not exist: work-queue
/// retention (a job is gone once acked), on disk.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> Result<stream::Stream<()>, String> {
    let name = subjects.stream();
    js.get_or_create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![subjects.jobs()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| {
        format!("cannot create or find stream {name} (is JetStream enabled, `-js`?): {e}")
    })?;
    js.get_stream_no_info(&name)
        .await
        .map_err(|e| format!("stream {name}: {e}"))
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}
