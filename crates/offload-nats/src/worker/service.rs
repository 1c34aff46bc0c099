//! The NATS service API (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`, as
//! `nats micro` and other tooling speak it): answered by hand, because a
//! worker's endpoints are its direct subjects and its durable consumers,
//! which the client's service framework does not model.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::Subscriber;
use futures::StreamExt;
use serde_json::{Value, json};

use super::Shared;
use crate::subjects::QUEUE;

/// The service's name.
pub(crate) const NAME: &str = "offload";

/// The subjects a service instance answers: every service, ours by name,
/// and this instance by id, for each verb.
pub(super) fn subjects(id: &str) -> Vec<String> {
    vec![
        "$SRV.*".to_owned(),
        format!("$SRV.*.{NAME}"),
        format!("$SRV.*.{NAME}.{id}"),
    ]
}

pub(super) async fn serve(shared: Arc<Shared>, mut sub: Subscriber) {
    while let Some(m) = sub.next().await {
        let Some(reply) = m.reply else { continue };
        let verb = m.subject.split('.').nth(1).unwrap_or("");
        let body = match verb {
            "PING" => ping(&shared),
            "INFO" => info(&shared),
            "STATS" => stats(&shared),
            _ => continue,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let _ = shared.client.publish(reply, bytes.into()).await;
    }
}

fn base(shared: &Shared, kind: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("type".into(), json!(format!("io.nats.micro.v1.{kind}")));
    m.insert("name".into(), json!(NAME));
    m.insert("id".into(), json!(shared.id));
    m.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    m.insert(
        "metadata".into(),
        json!({ "worker": shared.name, "prefix": shared.subjects.prefix() }),
    );
    m
}

fn ping(shared: &Shared) -> Value {
    Value::Object(base(shared, "ping_response"))
}

fn info(shared: &Shared) -> Value {
    let mut m = base(shared, "info_response");
    m.insert(
        "description".into(),
        json!("offload tasks, run in worker processes"),
    );
    let endpoints: Vec<Value> = shared
        .tasks
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "subject": shared.subjects.call(t.name, t.fp),
                "queue_group": QUEUE,
                "metadata": { "fingerprint": format!("{:016x}", t.fp) },
            })
        })
        .collect();
    m.insert("endpoints".into(), json!(endpoints));
    Value::Object(m)
}

fn stats(shared: &Shared) -> Value {
    let mut m = base(shared, "stats_response");
    m.insert("started".into(), json!(rfc3339(shared.started)));
    let (running, queued) = shared.runner.load();
    let endpoints: Vec<Value> = shared
        .tasks
        .iter()
        .map(|t| {
            let n = t.requests.load(Relaxed);
            let nanos = t.nanos.load(Relaxed);
            json!({
                "name": t.name,
                "subject": shared.subjects.call(t.name, t.fp),
                "queue_group": QUEUE,
                "num_requests": n,
                "num_errors": t.errors.load(Relaxed),
                "last_error": "",
                "processing_time": nanos,
                "average_processing_time": nanos.checked_div(n).unwrap_or(0),
                "data": {
                    "held": shared.held_count(),
                    "capacity": shared.capacity,
                    "queue": shared.queue,
                    "running": running,
                    "queued": queued,
                },
            })
        })
        .collect();
    m.insert("endpoints".into(), json!(endpoints));
    Value::Object(m)
}

/// `2026-12-02T11:05:27Z` (UTC, whole seconds).
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_209_527);
        assert_eq!(rfc3339(t), "2026-12-02T11:05:27Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
