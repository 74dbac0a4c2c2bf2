//! The webhook endpoint (`POST /webhook`), `GET /healthz` and `GET /metrics`, on axum.
//! A delivery is verified, routed and stored (synced) before the 2xx goes out; the work
//! itself is the workers'.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::metrics::Metrics;
use super::queue::{Enqueued, Queue};
use super::route::{RouteSettings, Routed, route};
use super::signature::verify;
use super::sqs::SqsQueue;
use super::sqs_worker::SqsConsumer;

/// The largest delivery GitHub sends is 25 MB.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

/// Requests handled at once: the rest wait, so unsigned 25 MB bodies cannot pile up in
/// memory (32 × 25 MB at most).
pub const MAX_IN_FLIGHT: usize = 32;

/// Where the endpoint stores jobs (`queue.backend`).
pub enum JobQueue {
    /// The SQLite file, synced before the answer.
    Sqlite(Arc<Mutex<Queue>>),
    /// The SQS FIFO queue, and its consumer for the depth gauges.
    Sqs {
        /// Where jobs are sent.
        queue: SqsQueue,
        /// The workers' side.
        consumer: SqsConsumer,
    },
}

/// What the endpoint works with.
pub struct AppState {
    /// The webhook secret.
    pub secret: Vec<u8>,
    /// The queue.
    pub queue: JobQueue,
    /// Routing.
    pub route: RouteSettings,
    /// `serve.coalesce_seconds`.
    pub coalesce_seconds: u64,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// Where log lines go (JSON, one per line).
    pub log: Arc<dyn Fn(Value) + Send + Sync>,
}

/// The service's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/webhook", post(webhook))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_IN_FLIGHT))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<AppState>>) -> (StatusCode, String) {
    let depth = match &s.queue {
        JobQueue::Sqlite(queue) => {
            let queue = queue.clone();
            tokio::task::spawn_blocking(move || {
                queue
                    .lock()
                    .map(|q| q.depth().unwrap_or_default())
                    .unwrap_or_default()
            })
            .await
            .unwrap_or_default()
        }
        JobQueue::Sqs { consumer, .. } => consumer.depth().await,
    };
    (StatusCode::OK, s.metrics.render(&depth))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The JSON payload of a delivery: the body, or its `payload=` form field.
fn payload(headers: &HeaderMap, body: &[u8]) -> Result<Value, String> {
    payload_of(header(headers, "content-type"), body)
}

/// The JSON payload of a delivery with this content type: the body, or its
/// `payload=` form field (the Lambda front-end reads API Gateway's events with it).
pub fn payload_of(content_type: Option<&str>, body: &[u8]) -> Result<Value, String> {
    let form = content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form {
        let text = std::str::from_utf8(body).map_err(|_| "the form body is not UTF-8")?;
        let field = text
            .split('&')
            .find_map(|kv| kv.strip_prefix("payload="))
            .ok_or("a form-encoded delivery without a payload field")?;
        let plus = field.replace('+', " ");
        let decoded = percent_encoding::percent_decode_str(&plus)
            .decode_utf8()
            .map_err(|_| "the payload field is not UTF-8")?;
        serde_json::from_str(&decoded).map_err(|e| format!("the payload is not JSON: {e}"))
    } else {
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))
    }
}

async fn webhook(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let event = header(&headers, "x-github-event").unwrap_or("").to_string();
    let delivery = header(&headers, "x-github-delivery")
        .unwrap_or("")
        .to_string();
    let answer = |status: StatusCode, outcome: &str, reason: String| {
        // Metric labels from a fixed set: an unsigned request names no series.
        let label = match (outcome, event.as_str()) {
            ("refused", _) => "unverified",
            (_, e @ ("issues" | "issue_comment" | "pull_request" | "ping")) => e,
            _ => "other",
        };
        s.metrics.delivery(label, outcome);
        (s.log)(
            json!({"msg": "delivery", "delivery": delivery, "event": event,
                       "status": status.as_u16(), "outcome": outcome, "reason": reason}),
        );
        (status, format!("{reason}\n"))
    };
    if let Err(e) = verify(&s.secret, &body, header(&headers, "x-hub-signature-256")) {
        return answer(StatusCode::UNAUTHORIZED, "refused", e.to_string());
    }
    if event.is_empty() {
        return answer(
            StatusCode::BAD_REQUEST,
            "malformed",
            "no X-GitHub-Event header".into(),
        );
    }
    if delivery.is_empty() {
        return answer(
            StatusCode::BAD_REQUEST,
            "malformed",
            "no X-GitHub-Delivery header".into(),
        );
    }
    let value = match payload(&headers, &body) {
        Ok(v) => v,
        Err(e) => return answer(StatusCode::BAD_REQUEST, "malformed", e),
    };
    let jobs = match route(&event, &value, &s.route) {
        Routed::Ping => return answer(StatusCode::OK, "ping", "pong".into()),
        Routed::Ignored(why) => return answer(StatusCode::ACCEPTED, "ignored", why),
        Routed::Jobs(jobs) => jobs,
    };
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    let queue = match &s.queue {
        JobQueue::Sqlite(q) => q.clone(),
        JobQueue::Sqs { queue, .. } => {
            // The body's digest deduplicates, as on Lambda: a redelivery, or the same
            // signed body under a new delivery id, within SQS's five minutes.
            let mut ids = Vec::new();
            for (i, spec) in jobs.iter().enumerate() {
                match queue.send(spec, &delivery, &digest, i).await {
                    Ok(id) => ids.push(id),
                    // Not stored: GitHub must see a failure, so it can redeliver.
                    Err(e) => return answer(StatusCode::SERVICE_UNAVAILABLE, "error", e),
                }
            }
            return answer(
                StatusCode::ACCEPTED,
                "queued",
                format!("queued {} job(s) on SQS: {ids:?}", ids.len()),
            );
        }
    };
    let (d, e, coalesce) = (delivery.clone(), event.clone(), s.coalesce_seconds);
    let stored = tokio::task::spawn_blocking(move || {
        let mut q = queue
            .lock()
            .map_err(|_| "the queue lock is poisoned".to_string())?;
        q.enqueue(&d, &digest, &e, "queued", &jobs, coalesce)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match stored {
        Ok(Enqueued::Queued(ids)) => answer(
            StatusCode::ACCEPTED,
            "queued",
            format!("queued job(s) {ids:?}"),
        ),
        Ok(Enqueued::Coalesced(id)) => answer(
            StatusCode::ACCEPTED,
            "coalesced",
            format!("folded into job {id}"),
        ),
        Ok(Enqueued::Duplicate) => answer(
            StatusCode::OK,
            "duplicate",
            "this delivery was received before".into(),
        ),
        Ok(Enqueued::Retried(ids)) => answer(
            StatusCode::ACCEPTED,
            "retried",
            format!("queued again: job(s) {ids:?}"),
        ),
        // Not stored: GitHub must see a failure, so the delivery can be redelivered.
        Err(e) => answer(StatusCode::SERVICE_UNAVAILABLE, "error", e),
    }
}
