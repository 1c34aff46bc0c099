//! Off the watchdog's thread: symbol resolution and report delivery.
//!
//! The first lookup of a debug binary's frames loads and parses debug
//! information: hundreds of milliseconds in a debug build, seconds on a
//! loaded machine. A watchdog that waited for it would stop watching
//! meanwhile, and a real stall could come and go unseen. So:
//!
//! - resolved frames are cached per address, process-wide;
//! - one thread ("lookups") resolves the addresses the watchdog needs to
//!   decide something (whether a thread is inside `block_in_place`); the
//!   watchdog waits for them only up to a budget, and past it the
//!   decision is "unknown" while the resolution goes on, filling the cache
//!   for the next look (an address is resolved once, however often it is
//!   asked for);
//! - another thread ("reports") resolves each report's frames and then
//!   delivers it (log, metrics, subscriptions, callback), in order.

use super::detector::Detector;
use super::report::{Frame, StallReport};
use crate::sync::{lock, wait_timeout};
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// A thread serving jobs in order, started on first use.
struct Lane {
    name: &'static str,
    queue: OnceLock<Option<SyncSender<Job>>>,
}

impl Lane {
    fn sender(&'static self) -> Option<&'static SyncSender<Job>> {
        self.queue
            .get_or_init(|| {
                let (tx, rx) = mpsc::sync_channel::<Job>(64);
                std::thread::Builder::new()
                    .name(self.name.to_owned())
                    .spawn(move || serve(&rx))
                    .ok()
                    .map(|_| tx)
            })
            .as_ref()
    }
}

fn serve(jobs: &Receiver<Job>) {
    for job in jobs {
        // A panicking callback must not stop the deliveries.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// Lookups the watchdog waits for, and warm-ups.
static LOOKUPS: Lane = Lane {
    name: "offload-stall-symbols",
    queue: OnceLock::new(),
};

/// Report deliveries, in order.
static DELIVERIES: Lane = Lane {
    name: "offload-stall-reports",
    queue: OnceLock::new(),
};

/// Resolved frames by address (an address has several frames when
/// functions were inlined into it), and the addresses being resolved.
#[derive(Default)]
struct Cache {
    frames: HashMap<usize, Vec<Frame>>,
    in_flight: HashSet<usize>,
}

/// Addresses beyond which the cache starts over (a few MB at most).
const CACHE_LIMIT: usize = 16 * 1024;

fn shared_cache() -> &'static (Mutex<Cache>, Condvar) {
    static CACHE: OnceLock<(Mutex<Cache>, Condvar)> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    lock(&shared_cache().0)
}

/// Resolves `ips` into the cache (on a lane thread; may take long).
fn fill(ips: &[usize]) {
    for &ip in ips {
        if cache().frames.contains_key(&ip) {
            continue;
        }
        let frames = resolve_one(ip);
        let mut cache = cache();
        if cache.frames.len() >= CACHE_LIMIT {
            cache.frames.clear();
        }
        cache.frames.insert(ip, frames);
        cache.in_flight.remove(&ip);
        drop(cache);
        shared_cache().1.notify_all();
    }
}

/// The frames of `ips` from the cache, if all are there.
fn cached(ips: &[usize]) -> Option<Vec<Frame>> {
    let cache = cache();
    let mut frames = Vec::with_capacity(ips.len());
    for ip in ips {
        frames.extend(cache.frames.get(ip)?.iter().cloned());
    }
    Some(trim_handler(frames))
}

/// Frames with addresses only.
fn unresolved(ips: &[usize]) -> Vec<Frame> {
    ips.iter()
        .map(|&ip| Frame {
            ip,
            function: None,
            file: None,
            line: None,
        })
        .collect()
}

/// Asks the lookups lane for the addresses of `ips` that are neither
/// cached nor being resolved.
fn request(ips: &[usize]) {
    let missing: Vec<usize> = {
        let mut cache = cache();
        let missing: Vec<usize> = ips
            .iter()
            .copied()
            .filter(|ip| !cache.frames.contains_key(ip) && !cache.in_flight.contains(ip))
            .collect();
        cache.in_flight.extend(missing.iter().copied());
        missing
    };
    if missing.is_empty() {
        return;
    }
    let sent = LOOKUPS
        .sender()
        .is_some_and(|lane| lane.try_send(Box::new(move || fill(&missing))).is_ok());
    if !sent {
        // Nobody will resolve them now: let a later request try again.
        let mut cache = cache();
        for ip in ips {
            cache.in_flight.remove(ip);
        }
    }
}

/// The frames of `ips` (a captured stack), resolved if that takes less
/// than `budget`, else with addresses only; the resolution goes on in the
/// background either way.
pub(crate) fn resolve_within(ips: &[usize], budget: Duration) -> Vec<Frame> {
    if let Some(frames) = cached(ips) {
        return frames;
    }
    request(ips);
    let deadline = Instant::now() + budget;
    let (mutex, ready) = shared_cache();
    let mut guard = lock(mutex);
    loop {
        if ips.iter().all(|ip| guard.frames.contains_key(ip)) {
            drop(guard);
            return cached(ips).unwrap_or_else(|| unresolved(ips));
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return unresolved(ips);
        };
        guard = wait_timeout(ready, guard, left).0;
    }
}

/// The frames of `ips` if all are resolved already (never waits).
pub(crate) fn resolved(ips: &[usize]) -> Option<Vec<Frame>> {
    cached(ips)
}

/// Resolves `ips` in the background, so the frames of stacks like it are
/// cached before a report needs them.
pub(crate) fn warm_up(ips: Vec<usize>) {
    request(&ips);
}

/// Resolves the report's frames if needed, then hands it to the log, the
/// metrics, the subscriptions and the callback, in the order reports
/// were sent.
pub(crate) fn deliver(detector: &Arc<Detector>, report: StallReport) {
    let detector = Arc::clone(detector);
    let job: Job = Box::new(move || send(&detector, with_names(report)));
    match DELIVERIES.sender() {
        // Waits only if 64 deliveries are queued: back-pressure on a
        // watchdog that reports faster than the reports can be resolved.
        Some(lane) => {
            if let Err(mpsc::SendError(job)) = lane.send(job) {
                job();
            }
        }
        None => job(),
    }
}

/// Delivers `reports` (a held first report and what followed it: the
/// stall ended before its stack's names resolved) once the first one's
/// stack is resolved, unless that stack shows a thread that holds no
/// worker (inside `block_in_place`, or a blocking-pool thread): then none
/// of them, since nothing stalled the loop.
pub(crate) fn deliver_verified(detector: &Arc<Detector>, reports: Vec<StallReport>) {
    let detector = Arc::clone(detector);
    let job: Job = Box::new(move || {
        let reports: Vec<StallReport> = reports.into_iter().map(with_names).collect();
        let holds_no_worker = reports
            .first()
            .is_some_and(|r| super::roles::not_a_worker(&r.backtrace).is_some());
        if !holds_no_worker {
            for report in reports {
                send(&detector, report);
            }
        }
    });
    match DELIVERIES.sender() {
        Some(lane) => {
            if let Err(mpsc::SendError(job)) = lane.send(job) {
                job();
            }
        }
        None => job(),
    }
}

fn with_names(mut report: StallReport) -> StallReport {
    let frames = &report.backtrace.frames;
    if !frames.is_empty() && frames.iter().all(|f| f.function.is_none()) {
        let ips: Vec<usize> = frames.iter().map(|f| f.ip).collect();
        fill(&ips);
        report.backtrace.frames = cached(&ips).unwrap_or_else(|| unresolved(&ips));
    }
    report
}

fn send(detector: &Detector, report: StallReport) {
    let config = &detector.config;
    if config.log {
        tracing::warn!(target: "offload::monitor", "{report}");
    }
    #[cfg(feature = "metrics")]
    record(&report);
    detector.publish(&report);
    if let Some(f) = &config.on_report {
        f(&report);
    }
}

/// The `metrics` facade: starts of stalls and of starved episodes, and the
/// length of each stall (not of starved episodes: not a code defect).
#[cfg(feature = "metrics")]
fn record(report: &StallReport) {
    use super::classify::StallKind;
    use super::report::StallPhase;
    match (report.phase, report.cause.kind()) {
        (StallPhase::Started, StallKind::Starved) => {
            metrics::counter!("offload_loop_starved_total").increment(1);
        }
        (StallPhase::Started, k) if k.is_code_stall() => {
            metrics::counter!("offload_loop_stalls_total").increment(1);
        }
        (StallPhase::Ended, k) if k.is_code_stall() => {
            metrics::histogram!("offload_loop_stall_seconds").record(report.duration.as_secs_f64());
        }
        _ => {}
    }
}

/// The frames of one address: the function it is in, and the functions
/// inlined into it, innermost first.
#[cfg(target_os = "linux")]
fn resolve_one(ip: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    backtrace::resolve(ip as *mut std::ffi::c_void, |symbol| {
        frames.push(Frame {
            ip,
            function: symbol.name().map(|n| format!("{n:#}")),
            file: symbol.filename().map(|f| f.display().to_string()),
            line: symbol.lineno(),
        });
    });
    if frames.is_empty() {
        frames.push(Frame {
            ip,
            function: None,
            file: None,
            line: None,
        });
    }
    frames
}

#[cfg(not(target_os = "linux"))]
fn resolve_one(ip: usize) -> Vec<Frame> {
    unresolved(&[ip])
}

/// Drops the capture handler's own frames and the kernel's signal
/// trampoline from the top of a captured stack.
fn trim_handler(mut frames: Vec<Frame>) -> Vec<Frame> {
    if let Some(at) = frames.iter().position(|f| {
        f.function
            .as_deref()
            .is_some_and(|n| n.contains("offload_stall_signal_handler"))
    }) {
        frames.drain(..=at);
        if frames.first().is_some_and(|f| {
            f.function
                .as_deref()
                .is_none_or(|n| n.contains("restore_rt"))
        }) {
            frames.remove(0);
        }
    }
    frames
}
