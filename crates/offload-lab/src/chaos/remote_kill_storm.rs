//! Scenario `remote-kill-storm`: durable calls through NATS while a random
//! worker program is SIGKILLed (and replaced) every 200 ms. Every call
//! must get exactly one result: JetStream hands the jobs of a dead worker
//! to another. Reports how many deliveries the calls took (a task may run
//! more than once in durable mode: at most once per delivery).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use offload_nats::{Mode, RemotePool};

use super::{Config, Outcome, Tally, bounded, join, left_behind, not_built};
use crate::cluster::{NatsChild, local_server, nats_runtime};
use crate::tasks::Noop;

const SCENARIO: &str = "remote-kill-storm";
const WORKERS: usize = 3;
const KILL_EVERY: Duration = Duration::from_millis(200);
/// How long a dead worker's jobs wait before they run elsewhere.
const ACK_WAIT: Duration = Duration::from_secs(1);
const IN_FLIGHT: usize = 256;

pub(super) fn run(cfg: &Config) -> Vec<Outcome> {
    let calls: u64 = if cfg.quick { 500 } else { 10_000 };
    let server = match local_server() {
        Ok(s) => s,
        Err(e) => return vec![not_built(SCENARIO, &e)],
    };
    let url = server.url();
    let mut start = Vec::new();
    for _ in 0..WORKERS {
        match NatsChild::start("worker", &url, Some(ACK_WAIT)) {
            Ok(w) => start.push(w),
            Err(e) => return vec![not_built(SCENARIO, &e)],
        }
    }
    let rt = match nats_runtime() {
        Ok(rt) => rt,
        Err(e) => return vec![not_built(SCENARIO, &e)],
    };
    let pool = match rt.block_on(
        RemotePool::builder()
            .url(url.clone())
            .mode(Mode::Durable)
            .max_in_flight(IN_FLIGHT)
            .build(),
    ) {
        Ok(p) => p,
        Err(e) => return vec![not_built(SCENARIO, &e)],
    };
    let mut pids: Vec<u32> = start.iter().map(NatsChild::pid).collect();
    let workers = Mutex::new(start);
    let seen = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let mut tally = Tally::default();
    let started = Instant::now();
    let kills = std::thread::scope(|s| {
        let killer = s.spawn(|| {
            let mut rng = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1;
            let mut kills = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tick = Instant::now();
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let victim = (rng % WORKERS as u64) as usize;
                let mut ws = workers.lock().unwrap_or_else(|e| e.into_inner());
                ws[victim].kill();
                kills += 1;
                // A replacement keeps the pool at strength.
                if let Ok(w) = NatsChild::start("worker", &url, Some(ACK_WAIT)) {
                    seen.lock().unwrap_or_else(|e| e.into_inner()).push(w.pid());
                    ws[victim] = w;
                }
                drop(ws);
                if let Some(left) = KILL_EVERY.checked_sub(tick.elapsed()) {
                    std::thread::sleep(left);
                }
            }
            kills
        });
        rt.block_on(async {
            let mut next = 0u64;
            let mut inflight = FuturesUnordered::new();
            loop {
                while inflight.len() < IN_FLIGHT && next < calls {
                    let want = next;
                    let call = pool.call::<Noop>(want);
                    inflight.push(async move { (want, bounded(call).await) });
                    next += 1;
                    tally.submitted += 1;
                }
                let Some((want, result)) = inflight.next().await else {
                    break;
                };
                // A job that ran out of deliveries is a typed worker loss.
                if let Some(got) = tally.record(result, offload::Error::is_worker_lost) {
                    if got != want {
                        tally.broken(format!("call {want} returned {got}"));
                    }
                }
            }
        });
        stop.store(true, Ordering::Relaxed);
        killer.join().unwrap_or_default()
    });
    let elapsed = started.elapsed();
    let m = pool.metrics();
    drop(pool);
    drop(rt);
    drop(workers);
    drop(server);
    pids.extend(seen.into_inner().unwrap_or_else(|e| e.into_inner()));
    let (left, note) = left_behind("lab-nats", &pids);
    let deliveries = m.completed + m.redelivered;
    let detail = join(&[
        format!(
            "{kills} worker kills in {:.1} s ({:.0} calls/s); {} calls took {deliveries} \
             deliveries ({} redelivered: a durable task runs at most once per delivery)",
            elapsed.as_secs_f64(),
            tally.submitted as f64 / elapsed.as_secs_f64(),
            m.completed,
            m.redelivered
        ),
        note,
    ]);
    vec![tally.outcome(SCENARIO, WORKERS, left, detail)]
}
