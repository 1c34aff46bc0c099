//! Durable jobs on the worker: pull only as many jobs as there are free
//! slots, extend the ack wait while a job is held, deliver the result to
//! its caller, then ack. A job that ran out of deliveries goes to the
//! dead-letter subject instead of running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self, Message};
use futures::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

use super::direct::{encode_result, options};
use super::{HandlerGuard, Refused, Shared, Stop};
use crate::router::GONE;
use crate::subjects::{self as s, header};

/// The most jobs asked for in one pull.
const MAX_BATCH: usize = 16;
/// How long one pull request waits on the server for jobs.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// The task's durable consumer (created by the first worker; shared by
/// all). It redelivers without limit: the worker that gets a delivery
/// past ours sends the job to the dead-letter subject instead of running
/// it. A limit on the server (it used to be ours + 1) stranded a job
/// whose last delivery went to a worker killed before it could
/// dead-letter it: JetStream never offered it again, it stayed in the
/// stream, and its caller waited for ever (`offload-lab chaos`,
/// `remote-kill-storm`, once under CI load: 11 of 500 calls).
pub(super) async fn consumer(
    js: &jetstream::Context,
    shared: &Shared,
    idx: usize,
) -> Result<PullConsumer, String> {
    let task = &shared.tasks[idx];
    let subjects = &shared.subjects;
    let stream = js
        .get_stream_no_info(subjects.stream())
        .await
        .map_err(|e| format!("stream {}: {e}", subjects.stream()))?;
    let name = subjects.consumer(task.name, task.fp);
    stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: subjects.job(task.name, task.fp),
                ack_policy: AckPolicy::Explicit,
                ack_wait: shared.ack_wait,
                max_deliver: -1,
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer {name}: {e}"))
}

/// Pulls jobs while there are free slots, until shutdown.
///
/// Every task has a loop of its own, and a loop does not keep a slot
/// while its pull waits on the server (with a dozen tasks and a few slots,
/// the loops of idle tasks would starve the busy ones). So a loop pulls
/// as many jobs as there are free slots *now*, and a job that finds every
/// slot taken when it arrives (another task's loop was faster) waits for
/// one, its ack wait extended meanwhile: a worker holds at most
/// `capacity + tasks - 1` durable jobs.
pub(super) async fn serve(shared: Arc<Shared>, idx: usize, consumer: PullConsumer) {
    let mut stopping = shared.stopping.clone();
    'pull: loop {
        // Wait for a free slot, without taking it.
        tokio::select! {
            p = shared.run_slots.acquire() => match p {
                Ok(p) => drop(p),
                Err(_) => return,
            },
            _ = super::stopped(&mut stopping) => return,
        };
        let want = shared.run_slots.available_permits().clamp(1, MAX_BATCH);
        let batch = consumer
            .batch()
            .max_messages(want)
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!("offload-nats: pull failed: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => continue 'pull,
                    _ = super::stopped(&mut stopping) => return,
                }
            }
        };
        loop {
            tokio::select! {
                m = batch.next() => match m {
                    Some(Ok(m)) => {
                        let permit = shared.run_slots.clone().try_acquire_owned().ok();
                        tokio::spawn(handle(shared.clone(), idx, m, permit));
                    }
                    Some(Err(e)) => {
                        tracing::debug!("offload-nats: pull ended: {e}");
                        break;
                    }
                    None => break,
                },
                _ = super::stopped(&mut stopping) => return hand_back(&shared, batch).await,
            }
        }
    }
}

/// Shutting down with a pull open: the server may have sent jobs to it
/// that we have not read, and counts them as ours. Read the pull to its
/// end (it expires within [`PULL_EXPIRES`]) and hand each job back at
/// once; dropped unread, each would wait out its ack wait (30 s by
/// default) before another worker got it.
async fn hand_back(shared: &Shared, mut batch: pull::Batch) {
    let _guard = HandlerGuard::new(&shared.handlers);
    let until = tokio::time::Instant::now() + PULL_EXPIRES + Duration::from_secs(1);
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, batch.next()).await {
        let _ = m.ack_with(AckKind::Nak(None)).await;
    }
}

async fn handle(shared: Arc<Shared>, idx: usize, m: Message, permit: Option<OwnedSemaphorePermit>) {
    let _guard = HandlerGuard::new(&shared.handlers);
    let delivered = m.info().map(|i| i.delivered).unwrap_or(1).max(1);
    let (m, acker) = m.split();
    let every = shared.ack_wait / 3;
    let _permit = match permit {
        Some(p) => p,
        None => match wait_for_slot(&shared, &acker, every).await {
            Some(p) => p,
            None => {
                // Shutting down: hand it back untouched.
                let _ = acker.ack_with(AckKind::Nak(None)).await;
                return;
            }
        },
    };
    let Some(reply) = header(m.headers.as_ref(), s::H_REPLY).map(str::to_owned) else {
        let _ = acker.ack().await;
        return;
    };
    let task = &shared.tasks[idx];
    if delivered > shared.max_deliver {
        dead_letter(&shared, idx, &m, &acker, &reply, delivered).await;
        return;
    }
    let (holding, mut stop) = match shared.hold(&reply) {
        Ok(h) => h,
        Err(Refused::Cancelled) => {
            let _ = acker.ack().await;
            return;
        }
        // Shutting down before it started: another worker takes it.
        Err(Refused::Closed) => {
            let _ = acker.ack_with(AckKind::Nak(None)).await;
            return;
        }
    };
    let started = Instant::now();
    let mut call = shared
        .runner
        .call(task.name, task.fp, m.payload.to_vec(), options(&m));
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            r = &mut call => break Ok(r),
            _ = progress.tick() => { let _ = acker.ack_with(AckKind::Progress).await; }
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
            let handed_over = deliver(&shared, &acker, reply, kind, body, delivered).await;
            if handed_over || !shared.is_stopping() {
                let _ = acker.ack().await;
            } else {
                // Shutting down and the caller did not confirm: hand the job
                // back so that another worker runs it and tries again
                // (durable tasks may run more than once), rather than ack a
                // result nobody got.
                let _ = acker.ack_with(AckKind::Nak(None)).await;
            }
        }
        Err(Stop::Cancelled) => {
            drop(call);
            let _ = acker.ack().await;
        }
        Err(Stop::Shutdown) => {
            drop(call);
            let _ = acker.ack_with(AckKind::Nak(None)).await;
        }
    }
}

/// Waits for a free slot, extending the job's ack wait meanwhile; `None`
/// if the worker shuts down first.
async fn wait_for_slot(
    shared: &Shared,
    acker: &Acker,
    every: Duration,
) -> Option<OwnedSemaphorePermit> {
    let mut stopping = shared.stopping.clone();
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            p = shared.run_slots.clone().acquire_owned() => return p.ok(),
            _ = progress.tick() => { let _ = acker.ack_with(AckKind::Progress).await; }
            _ = super::stopped(&mut stopping) => return None,
        }
    }
}

/// Sends the result to the caller as a request, so that the caller's
/// inbox confirms it (`received`, or `gone` if nobody waits); `true` once
/// it did. If nobody answers (the caller is cut off, or gone for good),
/// tries again for a while, keeping the job ours with progress acks, then
/// gives up (`false`): a stopping worker hands the job back, a running one
/// acks it and the caller, if it ever comes back, finds the job gone from
/// the stream and reports the loss.
async fn deliver(
    shared: &Shared,
    acker: &Acker,
    to: String,
    kind: &str,
    body: Vec<u8>,
    delivered: i64,
) -> bool {
    let mut h = HeaderMap::new();
    h.insert(s::H_KIND, kind);
    h.insert(s::H_WORKER, shared.name.as_str());
    h.insert(s::H_DELIVERED, delivered.to_string().as_str());
    let body = bytes::Bytes::from(body);
    for attempt in 0..20u32 {
        let sent = tokio::time::timeout(
            Duration::from_secs(2),
            shared
                .client
                .request_with_headers(to.clone(), h.clone(), body.clone()),
        )
        .await;
        match sent {
            Ok(Ok(answer)) => {
                if answer.payload.as_ref() == GONE {
                    tracing::debug!("offload-nats: caller gave up on {to}");
                }
                return true;
            }
            _ if shared.is_stopping() && attempt >= 2 => return false,
            _ => {
                let _ = acker.ack_with(AckKind::Progress).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    tracing::warn!("offload-nats: could not deliver the result of {to}");
    false
}

/// The job ran out of deliveries: publish it on `<prefix>.dead.<task>`,
/// tell its caller, and remove it from the work queue.
async fn dead_letter(
    shared: &Shared,
    idx: usize,
    m: &async_nats::Message,
    acker: &Acker,
    reply: &str,
    delivered: i64,
) {
    let task = &shared.tasks[idx];
    let mut h = m.headers.clone().unwrap_or_default();
    h.insert(s::H_DELIVERED, (delivered - 1).to_string().as_str());
    let _ = shared
        .client
        .publish_with_headers(shared.subjects.dead(task.name), h, m.payload.clone())
        .await;
    let e = offload::remote::worker_lost(format!(
        "{} deliveries of task {:?} (each worker that took it died or gave it back; \
         the job went to {})",
        delivered - 1,
        task.name,
        shared.subjects.dead(task.name)
    ));
    let body = postcard::to_stdvec(&e).unwrap_or_default();
    // The job is on the dead-letter subject now: it leaves the work queue
    // whether or not its caller heard.
    let _ = deliver(shared, acker, reply.to_owned(), s::ERR, body, delivered).await;
    let _ = acker.ack().await;
}
