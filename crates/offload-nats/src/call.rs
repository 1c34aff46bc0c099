//! One remote call, from the caller's side: direct (request, heartbeats,
//! result) or durable (queue the job, await its result), the checks that
//! tell "no workers" from "unknown task" from "version mismatch", and
//! cancellation.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::Stream;
use async_nats::{Client, HeaderMap, Message, StatusCode};
use bytes::Bytes;
use offload::Error;
use offload::proc::OnDrop;
use tokio::sync::mpsc;

use crate::pool::{CallOptions, Cancel, Inner, Mode};
use crate::subjects::{self as s, header, header_u64};

/// How long a confirmed worker counts as present for durable calls.
const PRESENCE_TTL: Duration = Duration::from_secs(1);
/// Durable: how often a waiting call checks that its job still exists.
const JOB_CHECK: Duration = Duration::from_secs(5);
/// Direct: silence allowed beyond two heartbeat intervals.
pub(crate) const LIVENESS_SLACK: Duration = Duration::from_secs(1);
/// One try of a probe.
const PROBE_ATTEMPT: Duration = Duration::from_millis(500);
/// Direct: the longest pause between two tries of a call a busy worker
/// turned down.
const MAX_BUSY_BACKOFF: Duration = Duration::from_millis(50);

/// Runs one call: the encoded input in, the encoded output out.
pub(crate) async fn run(
    inner: &Arc<Inner>,
    task: &str,
    fp: u64,
    input: Vec<u8>,
    options: CallOptions,
) -> Result<Vec<u8>, Error> {
    let limit = s::max_payload(&inner.client, &inner.max_payload).saturating_sub(s::HEADER_ROOM);
    if input.len() > limit {
        return Err(offload::remote::input_too_large(
            Some(input.len() as u64),
            limit as u64,
        ));
    }
    let timeout = options
        .get_timeout()
        .filter(|t| *t != Duration::MAX)
        .or(inner.default_timeout);
    let (id, rx) = inner.router.register();
    let mut pending = Pending {
        inner: inner.clone(),
        id,
        reply: inner.router.reply_subject(id),
        sent: false,
        seq: None,
        done: false,
        on_drop: options.get_on_drop(),
    };
    let result = match inner.mode {
        Mode::Direct => direct(&mut pending, rx, task, fp, input.into(), timeout).await,
        Mode::Durable => durable(&mut pending, rx, task, fp, input.into(), timeout).await,
    };
    pending.done = true;
    result
}

/// A call in flight: unregisters it, and cancels it if dropped unfinished.
struct Pending {
    inner: Arc<Inner>,
    id: u64,
    reply: String,
    /// Published at least once.
    sent: bool,
    /// Durable: the job's stream sequence.
    seq: Option<u64>,
    done: bool,
    on_drop: OnDrop,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.inner.router.unregister(self.id);
        if !self.done && self.sent && self.on_drop == OnDrop::Kill {
            let _ = self.inner.canceller.send(Cancel {
                reply: std::mem::take(&mut self.reply),
                seq: self.seq,
            });
        }
    }
}

fn request_headers(task: &str, fp: u64, timeout: Option<Duration>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(s::H_TASK, task);
    h.insert(s::H_FP, format!("{fp:016x}").as_str());
    if let Some(t) = timeout {
        let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1);
        h.insert(s::H_TIMEOUT, ms.to_string().as_str());
    }
    h
}

/// The result carried by a reply of kind `ok` or `err`. A direct reply
/// without headers (and without a status) is `ok`: a worker answers a
/// call that came without headers that way.
fn result_of(msg: &Message) -> Option<Result<Vec<u8>, Error>> {
    if msg.headers.is_none() && msg.status.is_none() {
        return Some(Ok(msg.payload.to_vec()));
    }
    match header(msg.headers.as_ref(), s::H_KIND) {
        Some(s::OK) => Some(Ok(msg.payload.to_vec())),
        Some(s::ERR) => Some(Err(postcard::from_bytes::<Error>(&msg.payload)
            .unwrap_or_else(|e| {
                offload::remote::protocol(format!("undecodable error from the worker: {e}"))
            }))),
        _ => None,
    }
}

fn transport(what: impl std::fmt::Display) -> Error {
    offload::remote::transport_failed(what.to_string())
}

async fn direct(
    p: &mut Pending,
    mut rx: mpsc::UnboundedReceiver<Message>,
    task: &str,
    fp: u64,
    input: Bytes,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, Error> {
    let inner = p.inner.clone();
    let subject = inner.subjects.call(task, fp);
    let hb = inner.heartbeat;
    // The common call (no timeout, the default heartbeat) goes without
    // headers, and its result comes back without them: the subject names
    // the task and its fingerprint already, and parsing and building a
    // header map on both sides cost more than the rest of the message
    // (`bench remote` throughput, in-process workers: 0.33-0.39x raw with
    // headers, see the crate README for after).
    let headers = (timeout.is_some() || hb != s::DEFAULT_HEARTBEAT).then(|| {
        let mut h = request_headers(task, fp, timeout);
        h.insert(s::H_HEARTBEAT, (hb.as_millis() as u64).to_string().as_str());
        h
    });
    // Silence longer than this: the worker is gone. Two beats, plus a
    // second of slack for a loaded machine (a late beat must not fail a
    // call that will still run: direct calls are at most once).
    let silence = hb * 2 + LIVENESS_SLACK;
    let started = Instant::now();
    let mut backoff = Duration::from_millis(1);
    let mut retried_unserved = false;
    'send: loop {
        let epoch = inner.epoch();
        let sent = match &headers {
            Some(h) => {
                inner
                    .client
                    .publish_with_reply_and_headers(
                        subject.clone(),
                        p.reply.clone(),
                        h.clone(),
                        input.clone(),
                    )
                    .await
            }
            None => {
                inner
                    .client
                    .publish_with_reply(subject.clone(), p.reply.clone(), input.clone())
                    .await
            }
        };
        sent.map_err(transport)?;
        p.sent = true;
        let mut worker: Option<String> = None;
        loop {
            let msg = match tokio::time::timeout(silence, rx.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) => return Err(transport("the pool's inbox closed")),
                Err(_) => {
                    return Err(if inner.epoch() != epoch {
                        transport("the connection to the server was lost during the call")
                    } else {
                        offload::remote::worker_lost(
                            worker.unwrap_or_else(|| "(the worker that took the call)".into()),
                        )
                    });
                }
            };
            if msg.status == Some(StatusCode::NO_RESPONDERS) {
                let e = unserved(&inner, task, fp).await;
                match e {
                    // A worker for it just appeared: send again, once.
                    None if !retried_unserved => {
                        retried_unserved = true;
                        continue 'send;
                    }
                    None => {
                        return Err(offload::remote::no_workers(format!(
                            "task {task:?}: workers come and go"
                        )));
                    }
                    Some(e) => return Err(e),
                }
            }
            if let Some(r) = result_of(&msg) {
                return r;
            }
            match header(msg.headers.as_ref(), s::H_KIND) {
                Some(s::HEARTBEAT) => {
                    worker = header(msg.headers.as_ref(), s::H_WORKER).map(str::to_owned);
                }
                Some(s::BUSY) => {
                    // Not taken, never to run there: safe to send again.
                    inner.stats.busy_retries.fetch_add(1, Relaxed);
                    crate::metrics::busy_retry();
                    if let Some(t) = timeout {
                        if started.elapsed() + backoff >= t {
                            return Err(offload::remote::timed_out(t));
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BUSY_BACKOFF);
                    continue 'send;
                }
                _ => {
                    return Err(offload::remote::protocol(format!(
                        "unexpected message on a call's inbox: {:?}",
                        msg.status
                    )));
                }
            }
        }
    }
}

async fn durable(
    p: &mut Pending,
    mut rx: mpsc::UnboundedReceiver<Message>,
    task: &str,
    fp: u64,
    input: Bytes,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, Error> {
    let inner = p.inner.clone();
    let (Some(js), Some(stream)) = (inner.js.as_ref(), inner.stream.as_ref()) else {
        return Err(offload::remote::protocol("durable mode without JetStream"));
    };
    ensure_served(&inner, task, fp).await?;
    let mut headers = request_headers(task, fp, timeout);
    headers.insert(s::H_REPLY, p.reply.as_str());
    let ack = js
        .publish_with_headers(inner.subjects.job(task, fp), headers, input)
        .await
        .map_err(transport)?;
    p.sent = true;
    let ack = ack.await.map_err(transport)?;
    p.seq = Some(ack.sequence);
    let deadline = timeout.map(|t| Instant::now().checked_add(t));
    let mut gone_since: Option<Instant> = None;
    loop {
        let wait = match deadline {
            Some(Some(d)) => JOB_CHECK.min(d.saturating_duration_since(Instant::now())),
            _ => JOB_CHECK,
        };
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(msg)) => {
                if let Some(r) = result_of(&msg) {
                    let delivered = header_u64(msg.headers.as_ref(), s::H_DELIVERED).unwrap_or(1);
                    if delivered > 1 {
                        inner.stats.redelivered.fetch_add(1, Relaxed);
                        crate::metrics::redelivered();
                    }
                    return r;
                }
            }
            Ok(None) => return Err(transport("the pool's inbox closed")),
            Err(_) => {
                if let (Some(Some(d)), Some(t)) = (deadline, timeout) {
                    if Instant::now() >= d {
                        // Dropping `p` unfinished withdraws the job.
                        return Err(offload::remote::timed_out(t));
                    }
                }
                // Still in the stream: queued or running. Gone without a
                // result reaching us: its result was lost (we were cut
                // off from the server when it was sent). Give a result in
                // flight one more check period to arrive.
                match stream.get_raw_message(ack.sequence).await {
                    Ok(_) => gone_since = None,
                    Err(e) if job_is_gone(&e) => match gone_since {
                        Some(t) if t.elapsed() >= JOB_CHECK => {
                            return Err(transport(
                                "the job left the stream but its result never reached this \
                                 caller (the connection was lost when it was sent)",
                            ));
                        }
                        Some(_) => {}
                        None => gone_since = Some(Instant::now()),
                    },
                    Err(_) => {}
                }
            }
        }
    }
}

fn job_is_gone(e: &async_nats::jetstream::stream::RawMessageError) -> bool {
    use async_nats::jetstream::stream::RawMessageErrorKind as K;
    match e.kind() {
        K::NoMessageFound => true,
        // 10037: no message found.
        K::JetStream(j) => j.code() == 404 || j.error_code().0 == 10037,
        _ => false,
    }
}

/// Durable calls are queued only if some worker serves the task at this
/// version right now (checked at most once a second per task): a job
/// nobody could ever run would wait for ever.
async fn ensure_served(inner: &Arc<Inner>, task: &str, fp: u64) -> Result<(), Error> {
    let key = (task.to_owned(), fp);
    let fresh = inner
        .presence
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .is_some_and(|t| t.elapsed() < PRESENCE_TTL);
    if fresh {
        return Ok(());
    }
    match probe(inner, inner.subjects.probe_exact(task, fp)).await {
        Ok(Some(_)) => {
            inner
                .presence
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, Instant::now());
            Ok(())
        }
        Ok(None) => Err(unserved(inner, task, fp)
            .await
            .unwrap_or_else(|| offload::remote::no_workers(format!("task {task:?}")))),
        Err(e) => Err(e),
    }
}

/// A request to a probe subject: `Some(answer)`, `None` if nobody
/// listens, or a transport error. A request that gets no answer at all
/// reached a worker that died before answering (it was still subscribed):
/// ask again, within the pool's `probe_timeout`.
async fn probe(inner: &Inner, subject: String) -> Result<Option<Message>, Error> {
    use async_nats::client::RequestErrorKind as K;
    let deadline = Instant::now() + inner.probe_timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(transport(format!(
                "no answer to a probe on {subject} within {:?}",
                inner.probe_timeout
            )));
        }
        let attempt = left.min(PROBE_ATTEMPT);
        match tokio::time::timeout(attempt, inner.client.request(subject.clone(), Bytes::new()))
            .await
        {
            Ok(Ok(m)) => return Ok(Some(m)),
            Ok(Err(e)) if e.kind() == K::NoResponders => return Ok(None),
            Ok(Err(e)) if e.kind() != K::TimedOut => return Err(transport(e)),
            _ => {}
        }
    }
}

/// Why nobody took a call of `task` at `fp`: a version mismatch (a
/// worker serves the task at another fingerprint), an unknown task (a
/// worker answers, but serves no such task), or no workers at all.
/// `None` if a worker serving exactly this task answers now.
pub(crate) async fn unserved(inner: &Arc<Inner>, task: &str, fp: u64) -> Option<Error> {
    match probe(inner, inner.subjects.probe_name(task)).await {
        Ok(Some(m)) => {
            let theirs = std::str::from_utf8(&m.payload)
                .ok()
                .and_then(|t| u64::from_str_radix(t, 16).ok());
            match theirs {
                Some(theirs) if theirs == fp => None,
                theirs => Some(offload::remote::version_mismatch(format!(
                    "task {task:?}: this caller's fingerprint is {fp:016x}, the workers' is {} \
                     (Task::VERSION or the input/output types differ: deploy the same version \
                     on both sides)",
                    theirs.map_or("unknown".into(), |t| format!("{t:016x}"))
                ))),
            }
        }
        Ok(None) => match probe(inner, inner.subjects.probe_any()).await {
            Ok(Some(_)) => Some(offload::remote::unknown_task(task)),
            Ok(None) => Some(offload::remote::no_workers(format!(
                "nobody serves task {task:?} under the subject prefix {:?}",
                inner.subjects.prefix()
            ))),
            Err(e) => Some(e),
        },
        Err(e) => Some(e),
    }
}

/// Sends the cancels of dropped calls (a `Drop` cannot await): a message
/// every worker hears, and, for a durable job, its deletion from the
/// stream so that no worker ever takes it.
pub(crate) async fn canceller(
    client: Client,
    stream: Option<Stream<()>>,
    subject: String,
    mut rx: mpsc::UnboundedReceiver<Cancel>,
) {
    while let Some(c) = rx.recv().await {
        if let (Some(stream), Some(seq)) = (stream.as_ref(), c.seq) {
            let _ = stream.delete_message(seq).await;
        }
        let _ = client.publish(subject.clone(), c.reply.into()).await;
    }
}
