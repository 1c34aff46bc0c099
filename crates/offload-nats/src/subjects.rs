//! Subject names and headers: everything a caller and a worker must agree
//! on, in one place. See `README.md` beside this file for the design.

use async_nats::HeaderMap;

/// Header: the task's fingerprint (16 hex digits).
pub(crate) const H_FP: &str = "Offload-Fp";
/// Header: the task's name (the subject carries it encoded).
pub(crate) const H_TASK: &str = "Offload-Task";
/// Header: the call's hard timeout in ms, counted from when a worker
/// process starts it.
pub(crate) const H_TIMEOUT: &str = "Offload-Timeout-Ms";
/// Header (direct): how often the worker must send a heartbeat, in ms.
pub(crate) const H_HEARTBEAT: &str = "Offload-Heartbeat-Ms";
/// Header (durable): where the result goes (a JetStream message's own
/// reply subject belongs to JetStream).
pub(crate) const H_REPLY: &str = "Offload-Reply";
/// Header of a reply: `ok`, `err`, `hb` or `busy`.
pub(crate) const H_KIND: &str = "Offload-Kind";
/// Header of a reply: the worker's name.
pub(crate) const H_WORKER: &str = "Offload-Worker";
/// Header of a durable reply: how many times JetStream delivered the job.
pub(crate) const H_DELIVERED: &str = "Offload-Delivered";

/// Direct: the heartbeat interval a worker uses when the request does not
/// say (no `Offload-Heartbeat-Ms`): the caller's default, which it then
/// leaves out.
pub(crate) const DEFAULT_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// Reply kinds.
pub(crate) const OK: &str = "ok";
pub(crate) const ERR: &str = "err";
pub(crate) const HEARTBEAT: &str = "hb";
pub(crate) const BUSY: &str = "busy";

/// Room kept for headers when checking a payload against the server's
/// `max_payload` (which counts headers too).
pub(crate) const HEADER_ROOM: usize = 1024;

/// The server's `max_payload`, read once known: a client built with
/// `retry_on_initial_connect` has no server info until it connects (0).
pub(crate) fn max_payload(
    client: &async_nats::Client,
    cache: &std::sync::atomic::AtomicUsize,
) -> usize {
    use std::sync::atomic::Ordering::Relaxed;
    match cache.load(Relaxed) {
        0 => {
            let n = client.server_info().max_payload;
            cache.store(n, Relaxed);
            // Unknown yet: assume the servers' default (1 MiB).
            if n == 0 { 1024 * 1024 } else { n }
        }
        n => n,
    }
}

/// Queue group of every worker subscription that one worker should answer.
pub(crate) const QUEUE: &str = "offload";

/// The subjects under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Checks the prefix: one or more non-empty tokens, no wildcards, no
    /// whitespace.
    pub(crate) fn new(prefix: &str) -> Result<Self, &'static str> {
        let ok = !prefix.is_empty()
            && prefix.split('.').all(|t| {
                !t.is_empty()
                    && t.chars()
                        .all(|c| !c.is_whitespace() && c != '*' && c != '>' && c != '$')
            });
        if ok {
            Ok(Subjects {
                prefix: prefix.to_owned(),
            })
        } else {
            Err("prefix: one or more dot-separated tokens, without whitespace, `*`, `>` or `$`")
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Direct calls of `task` at fingerprint `fp`.
    pub(crate) fn call(&self, task: &str, fp: u64) -> String {
        format!("{}.call.{}.{fp:016x}", self.prefix, token(task))
    }

    /// Durable jobs of `task` at `fp`.
    pub(crate) fn job(&self, task: &str, fp: u64) -> String {
        format!("{}.job.{}.{fp:016x}", self.prefix, token(task))
    }

    /// Every durable job: the stream's subjects.
    pub(crate) fn jobs(&self) -> String {
        format!("{}.job.>", self.prefix)
    }

    /// Where jobs that ran out of deliveries go.
    pub(crate) fn dead(&self, task: &str) -> String {
        format!("{}.dead.{}", self.prefix, token(task))
    }

    /// Answered by a worker that serves `task` at `fp`.
    pub(crate) fn probe_exact(&self, task: &str, fp: u64) -> String {
        format!("{}.probe.{}.{fp:016x}", self.prefix, token(task))
    }

    /// Answered (with its fingerprint) by a worker that serves `task`.
    pub(crate) fn probe_name(&self, task: &str) -> String {
        format!("{}.probe.{}", self.prefix, token(task))
    }

    /// Answered by any worker.
    pub(crate) fn probe_any(&self) -> String {
        format!("{}.probe", self.prefix)
    }

    /// Cancellations; the payload is the call's reply subject.
    pub(crate) fn cancel(&self) -> String {
        format!("{}.cancel", self.prefix)
    }

    /// The JetStream stream of durable jobs (stream names allow no dots).
    pub(crate) fn stream(&self) -> String {
        format!("OFFLOAD_{}", name_safe(&self.prefix))
    }

    /// The durable consumer of `task` at `fp`, shared by every worker.
    pub(crate) fn consumer(&self, task: &str, fp: u64) -> String {
        format!("{}_{fp:016x}", name_safe(task))
    }
}

/// A task name as one subject token: ASCII letters, digits, `-` and `_`
/// stay; every other byte becomes `~` and two hex digits (so `a.b` and
/// `a b` stay distinct and stay one token).
pub(crate) fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02x}"));
        }
    }
    if out.is_empty() {
        out.push('~');
    }
    out
}

/// A name for JetStream objects: letters, digits, `-`, `_` only.
fn name_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A header's value as text.
pub(crate) fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str())
}

/// A header's value as a number.
pub(crate) fn header_u64(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    header(headers, name).and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_become_one_safe_token() {
        assert_eq!(token("word_count"), "word_count");
        assert_eq!(token("scale.v2"), "scale~2ev2");
        assert_eq!(token("a b>*"), "a~20b~3e~2a");
        assert_eq!(token(""), "~");
        let s = Subjects::new("app.offload").unwrap();
        assert_eq!(s.call("sum", 255), "app.offload.call.sum.00000000000000ff");
        assert_eq!(s.stream(), "OFFLOAD_app_offload");
        assert_eq!(s.consumer("scale.v2", 1), "scale_v2_0000000000000001");
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for p in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b", "$SRV"] {
            assert!(Subjects::new(p).is_err(), "{p:?}");
        }
    }
}
