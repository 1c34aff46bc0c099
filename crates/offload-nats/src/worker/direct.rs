//! Direct calls on the worker: take a call from the queue group (or answer
//! "busy"), heartbeat to its caller while it waits and runs, reply once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, Message, Subscriber};
use futures::StreamExt;
use offload::Error;
use offload::proc::CallOptions;
use tokio::sync::OwnedSemaphorePermit;

use super::outbox::Reply;
use super::{HandlerGuard, Refused, Shared, Stop};
use crate::subjects::{self as s, header_u64};

/// Reads the task's call subscription until shutdown; then stops
/// subscribing and answers "busy" to what was already on its way, so
/// those callers send it to another worker.
pub(super) async fn serve(shared: Arc<Shared>, idx: usize, mut sub: Subscriber) {
    let mut stopping = shared.stopping.clone();
    loop {
        tokio::select! {
            m = sub.next() => match m {
                Some(m) => take(&shared, idx, m).await,
                None => return,
            },
            _ = super::stopped(&mut stopping) => break,
        }
    }
    let _ = sub.drain().await;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
        if let Some(reply) = m.reply {
            send(&shared, reply.to_string(), s::BUSY, Vec::new());
        }
    }
}

async fn take(shared: &Arc<Shared>, idx: usize, m: Message) {
    let Some(reply) = m.reply.clone() else { return };
    match shared.direct_slots.clone().try_acquire_owned() {
        Ok(permit) => {
            tokio::spawn(handle(shared.clone(), idx, m, permit));
        }
        Err(_) => send(shared, reply.to_string(), s::BUSY, Vec::new()),
    }
}

/// Queues a reply of `kind` to `to` (see `outbox.rs`).
pub(super) fn send(shared: &Shared, to: String, kind: &str, body: Vec<u8>) {
    let mut h = HeaderMap::new();
    h.insert(s::H_KIND, kind);
    h.insert(s::H_WORKER, shared.name.as_str());
    shared.outbox.send(Reply {
        to,
        headers: Some(h),
        body: body.into(),
    });
}

/// The reply to a finished call: its output, or its error as data.
pub(super) fn encode_result(shared: &Shared, r: Result<Vec<u8>, Error>) -> (&'static str, Vec<u8>) {
    let r = r.and_then(|out| {
        if out.len() > shared.max_output() {
            Err(offload::remote::output_too_large(
                Some(out.len() as u64),
                shared.max_output() as u64,
            ))
        } else {
            Ok(out)
        }
    });
    match r {
        Ok(out) => (s::OK, out),
        Err(e) => (s::ERR, postcard::to_stdvec(&e).unwrap_or_default()),
    }
}

/// The local call options from a request's headers.
pub(super) fn options(m: &Message) -> CallOptions {
    let mut o = CallOptions::new();
    if let Some(ms) = header_u64(m.headers.as_ref(), s::H_TIMEOUT) {
        o = o.timeout(Duration::from_millis(ms));
    }
    o
}

async fn handle(shared: Arc<Shared>, idx: usize, m: Message, _permit: OwnedSemaphorePermit) {
    let _guard = HandlerGuard::new(&shared.handlers);
    let Some(reply) = m.reply.as_ref().map(|r| r.to_string()) else {
        return;
    };
    let (holding, mut stop) = match shared.hold(&reply) {
        Ok(h) => h,
        Err(Refused::Cancelled) => return,
        // Shutting down before it started: its caller sends it elsewhere.
        Err(Refused::Closed) => return send(&shared, reply, s::BUSY, Vec::new()),
    };
    let task = &shared.tasks[idx];
    // A call that came without headers is answered `ok` without them
    // (see `call::direct`); errors, heartbeats and "busy" always carry
    // their kind.
    let plain = m.headers.is_none();
    let every = header_u64(m.headers.as_ref(), s::H_HEARTBEAT)
        .map(Duration::from_millis)
        .unwrap_or(s::DEFAULT_HEARTBEAT)
        .clamp(Duration::from_millis(10), Duration::from_secs(3600));
    let started = Instant::now();
    // Calls held beyond what the runner has in flight (the queue) wait
    // here, in arrival order, and each goes to the runner when a slot
    // frees: then the process pool takes it at once, written by this task
    // to a process with room, with no driver thread woken for it
    // (`offload::proc`'s `caller_writes.rs`; 0.39-0.42x raw NATS
    // throughput when the queue waited in the pool's drivers instead).
    // (An in-process runner's own queue is a thread pool's, cheap to
    // wait in: there calls go straight in.)
    let runner = &shared.runner;
    let slots = runner.is_processes().then(|| shared.run_slots.clone());
    let (input, opts) = (m.payload.to_vec(), options(&m));
    let mut call = Box::pin(async move {
        let _slot = match slots {
            Some(slots) => slots.acquire_owned().await.ok(),
            None => None,
        };
        runner.call(task.name, task.fp, input, opts).await
    });
    // The first beat comes early (a quarter interval): it names the
    // worker to its caller. A call that ends sooner costs no beat at all.
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every / 4, every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            r = &mut call => break Ok(r),
            _ = beat.tick() => send(&shared, reply.clone(), s::HEARTBEAT, Vec::new()),
            // Every holder has its own switch, so a switch dropped unused
            // means the worker's shared state is going away: hand the
            // call back rather than treat it as cancelled (a durable job
            // acked as cancelled would be lost).
            s = &mut stop => break Err(s.unwrap_or(Stop::Shutdown)),
        }
    };
    shared.release(&reply, holding);
    match outcome {
        Ok(r) => {
            task.record(r.is_ok(), started.elapsed());
            let (kind, body) = encode_result(&shared, r);
            if plain && kind == s::OK {
                shared.outbox.send(Reply {
                    to: reply,
                    headers: None,
                    body: body.into(),
                });
            } else {
                send(&shared, reply, kind, body);
            }
        }
        // Dropping the call kills the process running it (or skips it).
        Err(Stop::Cancelled) => drop(call),
        Err(Stop::Shutdown) => {
            drop(call);
            let e = offload::remote::worker_lost(format!(
                "{} (shut down before the call finished)",
                shared.name
            ));
            send(
                &shared,
                reply,
                s::ERR,
                postcard::to_stdvec(&e).unwrap_or_default(),
            );
        }
    }
}
