//! [`RemotePoolBuilder`]: connection, subjects, delivery mode and bounds of
//! a [`RemotePool`]; `build` connects and starts the reply router and the
//! canceller.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::connection::Connection;
use async_nats::jetstream;
use async_nats::{Client, ConnectOptions};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use super::{Inner, Mode, RemotePool, Stats};
use crate::errors::BuildError;
use crate::router::Router;
use crate::subjects::Subjects;

/// Builds a [`RemotePool`]. Create one with [`RemotePool::builder`].
#[must_use = "a builder does nothing until `build().await`"]
pub struct RemotePoolBuilder {
    connection: Connection,
    prefix: String,
    mode: Mode,
    max_in_flight: usize,
    heartbeat: Duration,
    timeout: Option<Duration>,
    probe_timeout: Duration,
}

impl Default for RemotePoolBuilder {
    fn default() -> Self {
        RemotePoolBuilder {
            connection: Connection::default(),
            prefix: "offload".into(),
            mode: Mode::Direct,
            max_in_flight: 1024,
            heartbeat: Duration::from_secs(1),
            timeout: None,
            probe_timeout: Duration::from_secs(5),
        }
    }
}

impl RemotePoolBuilder {
    /// The server(s) to connect to (default `nats://127.0.0.1:4222`; a
    /// comma-separated list is allowed).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.connection.set_url(url.into());
        self
    }

    /// Connect options passed through to async-nats: credentials
    /// (user/password, token, nkeys, creds files), TLS, reconnect policy,
    /// client name, inbox prefix.
    pub fn connect_options(mut self, options: ConnectOptions) -> Self {
        self.connection.set_options(options);
        self
    }

    /// Use this already connected client instead of connecting.
    pub fn client(mut self, client: Client) -> Self {
        self.connection.set_client(client);
        self
    }

    /// The subject prefix shared with the workers (default `offload`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Direct (default) or durable delivery.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The most calls in flight at once (default 1024, at least 1):
    /// [`call`](RemotePool::call) waits for a slot,
    /// [`try_call`](RemotePool::try_call) hands the input back.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Direct mode: how often a worker holding a call must say it is alive
    /// (default 1 s, 10 ms to 1 h). After twice this and a second without
    /// a word the call fails with [`Error::is_worker_lost`](offload::Error::is_worker_lost).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// Default hard timeout of every call (none by default); see
    /// [`CallOptions::timeout`](offload::proc::CallOptions::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How long the checks that find out why nobody serves a call wait
    /// for an answer (default 5 s, must be positive).
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Checks the settings and connects. Must run inside a tokio runtime
    /// (async-nats's connection lives on it), as must the calls.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] for a bad setting, [`BuildError::Connect`]
    /// if the server cannot be reached, [`BuildError::JetStream`] in
    /// durable mode if JetStream is not enabled on the server.
    pub async fn build(self) -> Result<RemotePool, BuildError> {
        let subjects = Subjects::new(&self.prefix).map_err(BuildError::Invalid)?;
        if self.max_in_flight == 0 {
            return Err(BuildError::Invalid("max_in_flight must be at least 1"));
        }
        if self.max_in_flight > Semaphore::MAX_PERMITS {
            return Err(BuildError::Invalid("max_in_flight is too large"));
        }
        if self.heartbeat < Duration::from_millis(10) || self.heartbeat > Duration::from_secs(3600)
        {
            return Err(BuildError::Invalid(
                "heartbeat must be between 10 ms and 1 h",
            ));
        }
        if self.probe_timeout.is_zero() {
            return Err(BuildError::Invalid("probe_timeout must be positive"));
        }
        let client = self.connection.connect().await?;
        let (js, stream) = match self.mode {
            Mode::Direct => (None, None),
            Mode::Durable => {
                let js = jetstream::new(client.clone());
                // The workers create the stream; a caller only needs it to
                // exist to queue jobs, so make sure it does.
                let stream = crate::worker::ensure_stream(&js, &subjects)
                    .await
                    .map_err(BuildError::JetStream)?;
                (Some(js), Some(stream))
            }
        };
        let base = client.new_inbox();
        let router = Arc::new(Router::new(base));
        let sub = client
            .subscribe(router.wildcard())
            .await
            .map_err(|e| BuildError::Connect(format!("cannot subscribe to our inbox: {e}")))?;
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(router.clone().run(client.clone(), sub, stop_rx));
        let (cancel_tx, cancel_rx) = mpsc::unbounded_channel();
        tokio::spawn(crate::call::canceller(
            client.clone(),
            stream.clone(),
            subjects.cancel(),
            cancel_rx,
        ));
        let inner = Arc::new(Inner {
            client,
            js,
            stream,
            subjects,
            router,
            mode: self.mode,
            permits: Arc::new(Semaphore::new(self.max_in_flight)),
            max_in_flight: self.max_in_flight,
            heartbeat: self.heartbeat,
            default_timeout: self.timeout.filter(|t| *t != Duration::MAX),
            probe_timeout: self.probe_timeout,
            max_payload: std::sync::atomic::AtomicUsize::new(0),
            canceller: cancel_tx,
            presence: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            closed: AtomicBool::new(false),
            slot_freed: Notify::new(),
            _stop: stop_tx,
        });
        Ok(RemotePool { inner })
    }
}

impl fmt::Debug for RemotePoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemotePoolBuilder")
            .field("url", &self.connection.url())
            .field("prefix", &self.prefix)
            .field("mode", &self.mode)
            .field("max_in_flight", &self.max_in_flight)
            .field("heartbeat", &self.heartbeat)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
