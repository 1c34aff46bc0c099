//! The load, generated in this program but off the server's runtime:
//! plain threads at the program's normal priority, with blocking `ureq`
//! clients that keep their connection alive, as a load balancer and its
//! clients would. `/walk` clients send their next request as soon as the
//! last one is answered; one probe sends `GET /health` every
//! [`PROBE_EVERY`] and times it.
//!
//! Every wait is bounded: requests have timeouts (a probe that times out
//! counts as [`PROBE_TIMEOUT`], which is what a health checker would see),
//! and threads are joined with deadlines.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::Timing;

/// How often the probe sends `GET /health` (when the last one came back
/// in time; a late probe is followed at once, not by a burst).
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(10);

/// A probe unanswered after this long is counted as this long: an
/// `inline` server can stall for whole walks, and the bench must not hang
/// on it.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound of one `/walk` request: several walks' worth of queueing even in
/// a debug build, so only a broken server reaches it.
const WALK_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a fresh server may take to answer its first `/health`.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// What a mode's load measured.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Measured {
    /// Probe latencies sent during the window, ms (timed-out ones as
    /// [`PROBE_TIMEOUT`]).
    pub(super) health_ms: Vec<f64>,
    /// How many of them timed out.
    pub(super) probe_timeouts: usize,
    /// `/walk` responses completed during the window, per second.
    pub(super) walks_per_sec: f64,
}

/// State shared by the load's threads and the thread that runs it.
#[derive(Debug, Default)]
struct Shared {
    /// Threads finish their request in flight and exit.
    stop: AtomicBool,
    /// Probes sent while this is set are recorded.
    measuring: AtomicBool,
    /// `/walk` responses so far.
    walks: AtomicU64,
    /// Probes recorded at their timeout.
    probe_timeouts: AtomicUsize,
    /// The first failure of any thread (which then exits): the mode fails.
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, what: String) {
        let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        failure.get_or_insert(what);
    }
}

/// The running load. Dropping it stops and joins its threads (bounded).
#[derive(Debug)]
pub(super) struct Load {
    shared: Arc<Shared>,
    clients: Vec<JoinHandle<()>>,
    probe: Option<JoinHandle<Vec<f64>>>,
}

impl Load {
    /// Waits until the server at `url` answers, then starts the probe and
    /// `clients` `/walk` clients (none: the idle floor).
    pub(super) fn start(url: String, clients: usize) -> anyhow::Result<Load> {
        wait_ready(&url)?;
        let shared = Arc::new(Shared::default());
        let mut load = Load {
            shared: shared.clone(),
            clients: Vec::new(),
            probe: None,
        };
        let (s, health) = (shared.clone(), format!("{url}/health"));
        load.probe = Some(
            thread::Builder::new()
                .name("lab-service-probe".into())
                .spawn(move || probe(&s, &health))?,
        );
        for i in 0..clients {
            let (s, walk) = (shared.clone(), format!("{url}/walk"));
            load.clients.push(
                thread::Builder::new()
                    .name(format!("lab-service-client-{i}"))
                    .spawn(move || client(&s, &walk))?,
            );
        }
        Ok(load)
    }

    /// Warm-up, then the measured window, then stops every thread.
    pub(super) fn run(mut self, timing: Timing) -> anyhow::Result<Measured> {
        thread::sleep(timing.warmup);
        let walks_before = self.shared.walks.load(Relaxed);
        let start = Instant::now();
        self.shared.measuring.store(true, Relaxed);
        thread::sleep(timing.measure);
        self.shared.measuring.store(false, Relaxed);
        let walks = self.shared.walks.load(Relaxed) - walks_before;
        let secs = start.elapsed().as_secs_f64();
        let health_ms = self.stop()?;
        if let Some(failure) = self
            .shared
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            anyhow::bail!("{failure}");
        }
        anyhow::ensure!(!health_ms.is_empty(), "no probe completed in the window");
        Ok(Measured {
            health_ms,
            probe_timeouts: self.shared.probe_timeouts.load(Relaxed),
            walks_per_sec: walks as f64 / secs,
        })
    }

    /// Stops the threads and joins them, each within a deadline; the
    /// probe's samples.
    fn stop(&mut self) -> anyhow::Result<Vec<f64>> {
        self.shared.stop.store(true, Relaxed);
        // A client may be inside a walk (at most its timeout), the probe
        // inside a probe (at most its timeout): both bounds plus slack.
        let deadline = Instant::now() + WALK_TIMEOUT.max(PROBE_TIMEOUT) + Duration::from_secs(5);
        let mut result = Ok(Vec::new());
        for client in self.clients.drain(..) {
            if let Err(e) = join_by(client, deadline) {
                result = Err(e);
            }
        }
        if let Some(probe) = self.probe.take() {
            let samples = join_by(probe, deadline);
            result = result.and(samples);
        }
        result
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // Only on error paths (`run` already joined everything).
        let _ = self.stop();
    }
}

/// Joins `handle` if it finishes by `deadline`; otherwise leaves the
/// thread behind (it exits at its request's timeout) and says so.
fn join_by<T>(handle: JoinHandle<T>, deadline: Instant) -> anyhow::Result<T> {
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            let name = handle.thread().name().unwrap_or("?").to_owned();
            anyhow::bail!("thread {name} did not stop in time");
        }
        thread::sleep(Duration::from_millis(5));
    }
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("a load thread panicked"))
}

/// A blocking client with one kept-alive connection and a global timeout
/// per request.
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .max_idle_connections(1)
        .max_idle_connections_per_host(1)
        .build()
        .into()
}

/// One GET, body read to the end.
fn get(agent: &ureq::Agent, url: &str) -> Result<(), ureq::Error> {
    agent.get(url).call()?.body_mut().read_to_string()?;
    Ok(())
}

fn is_timeout(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        _ => false,
    }
}

/// Polls `/health` until it answers, at most [`READY_WITHIN`].
fn wait_ready(url: &str) -> anyhow::Result<()> {
    let agent = agent(Duration::from_secs(1));
    let health = format!("{url}/health");
    let start = Instant::now();
    loop {
        match get(&agent, &health) {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() > READY_WITHIN => {
                anyhow::bail!("{health} did not answer within {READY_WITHIN:?}: {e}")
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// `/walk` back to back until told to stop; exits on the first failure.
fn client(shared: &Shared, url: &str) {
    let agent = agent(WALK_TIMEOUT);
    while !shared.stop.load(Relaxed) {
        match get(&agent, url) {
            Ok(()) => {
                shared.walks.fetch_add(1, Relaxed);
            }
            Err(e) => {
                shared.fail(format!("GET {url}: {e}"));
                return;
            }
        }
    }
}

/// `/health` every [`PROBE_EVERY`] until told to stop; the latencies (ms)
/// of the probes sent while measuring. Exits on a failure other than a
/// timeout.
fn probe(shared: &Shared, url: &str) -> Vec<f64> {
    let agent = agent(PROBE_TIMEOUT);
    let mut samples = Vec::new();
    let mut next = Instant::now();
    while !shared.stop.load(Relaxed) {
        let measuring = shared.measuring.load(Relaxed);
        let sent = Instant::now();
        let latency = match get(&agent, url) {
            Ok(()) => sent.elapsed(),
            Err(e) if is_timeout(&e) => {
                if measuring {
                    shared.probe_timeouts.fetch_add(1, Relaxed);
                }
                PROBE_TIMEOUT
            }
            Err(e) => {
                shared.fail(format!("GET {url}: {e}"));
                break;
            }
        };
        if measuring {
            samples.push(latency.as_secs_f64() * 1e3);
        }
        next += PROBE_EVERY;
        let now = Instant::now();
        match next.checked_duration_since(now) {
            Some(wait) => thread::sleep(wait),
            // Late (a slow answer): the next probe goes now, and the
            // schedule restarts from here rather than catching up.
            None => next = now,
        }
    }
    samples
}
