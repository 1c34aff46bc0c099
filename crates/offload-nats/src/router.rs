//! The caller's inbox: one wildcard subscription per pool, whose messages
//! (heartbeats, results, "no responders") are routed to the call they
//! belong to by the last token of their subject, the call's id.
//!
//! One subscription for every call is what async-nats does for its own
//! `request`; we need our own because a direct call gets several messages
//! (heartbeats, then its result), and a durable result arrives as a
//! request that we acknowledge.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::{Client, Message, Subscriber};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

/// What a durable worker is told when it delivers a result.
pub(crate) const RECEIVED: &[u8] = b"received";
/// ... and when nobody waits for it any more.
pub(crate) const GONE: &[u8] = b"gone";

/// Routes inbox messages to calls.
#[derive(Debug)]
pub(crate) struct Router {
    /// `<inbox prefix>.<unique>`: replies go to `<base>.<call id>`.
    base: String,
    next: AtomicU64,
    calls: Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>,
}

impl Router {
    pub(crate) fn new(base: String) -> Self {
        Router {
            base,
            next: AtomicU64::new(1),
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// The subscription's subject.
    pub(crate) fn wildcard(&self) -> String {
        format!("{}.*", self.base)
    }

    /// A new call: its id and where its messages arrive.
    pub(crate) fn register(&self) -> (u64, mpsc::UnboundedReceiver<Message>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(id, tx);
        (id, rx)
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The reply subject of call `id`; also the call's name in cancels.
    pub(crate) fn reply_subject(&self, id: u64) -> String {
        format!("{}.{id}", self.base)
    }

    /// Calls waiting for a reply.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<Message>>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `msg` to its call; whether the call was still waiting.
    fn route(&self, msg: Message) -> bool {
        let id = msg
            .subject
            .rsplit('.')
            .next()
            .and_then(|t| t.parse::<u64>().ok());
        let tx = id.and_then(|id| self.lock().get(&id).cloned());
        match tx {
            Some(tx) => tx.send(msg).is_ok(),
            None => false,
        }
    }

    /// Reads the inbox until `stop` fires or the subscription ends. A
    /// message that asks for an answer (a durable result) is answered
    /// `received` once its call has it, or `gone` if nobody waits.
    pub(crate) async fn run(
        self: std::sync::Arc<Self>,
        client: Client,
        mut sub: Subscriber,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            let msg = tokio::select! {
                m = sub.next() => match m {
                    Some(m) => m,
                    None => return,
                },
                _ = &mut stop => {
                    let _ = sub.unsubscribe().await;
                    return;
                }
            };
            let answer = msg.reply.clone().filter(|_| msg.status.is_none());
            let routed = self.route(msg);
            if let Some(to) = answer {
                let body = if routed { RECEIVED } else { GONE };
                let _ = client.publish(to, body.into()).await;
            }
        }
    }
}
