//! The webhook on API Gateway: an HTTP API (v2) event holding a GitHub delivery →
//! the same signature check and routing as `serve` → one SQS FIFO message per job →
//! the response API Gateway returns to GitHub.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};

use super::route::{RouteSettings, Routed, route};
use super::sqs::SqsQueue;

/// An API Gateway HTTP API response.
pub fn response(status: u16, text: &str) -> Value {
    json!({"statusCode": status, "headers": {"content-type": "text/plain"}, "body": format!("{text}\n")})
}

/// One delivery: verify, route, queue. The status GitHub sees.
pub async fn handle(
    ev: &Value,
    secret: &[u8],
    settings: &RouteSettings,
    queue: &SqsQueue,
    log: &Arc<dyn Fn(Value) + Send + Sync>,
) -> Value {
    let header = |name: &str| -> Option<&str> {
        ev["headers"].as_object().and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str())
        })
    };
    let raw = ev["body"].as_str().unwrap_or("");
    let body: Vec<u8> = if ev["isBase64Encoded"].as_bool() == Some(true) {
        match base64::engine::general_purpose::STANDARD.decode(raw) {
            Ok(b) => b,
            Err(_) => return response(400, "the body is not base64 as the event says"),
        }
    } else {
        raw.as_bytes().to_vec()
    };
    if let Err(e) = crate::serve::signature::verify(secret, &body, header("x-hub-signature-256")) {
        log(json!({"msg": "refused", "why": e.to_string()}));
        return response(401, &e.to_string());
    }
    let (Some(event), Some(delivery)) = (header("x-github-event"), header("x-github-delivery"))
    else {
        return response(400, "X-GitHub-Event and X-GitHub-Delivery are required");
    };
    let payload = match crate::serve::http::payload_of(header("content-type"), &body) {
        Ok(p) => p,
        Err(e) => return response(400, &e),
    };
    match route(event, &payload, settings) {
        Routed::Ping => response(200, "pong"),
        Routed::Ignored(why) => {
            log(json!({"msg": "ignored", "delivery": delivery, "event": event, "why": why}));
            response(202, &format!("ignored: {why}"))
        }
        Routed::Jobs(specs) => {
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
            let mut ids = Vec::new();
            for (i, spec) in specs.iter().enumerate() {
                match queue.send(spec, delivery, &digest, i).await {
                    Ok(id) => ids.push(id),
                    Err(e) => {
                        log(json!({"msg": "queue failed", "delivery": delivery, "error": e}));
                        // GitHub records the failure; `serve --catch-up` or a
                        // redelivery sends it again, and the FIFO deduplicates.
                        return response(500, "the queue failed; redeliver later");
                    }
                }
            }
            log(json!({"msg": "queued", "delivery": delivery, "event": event, "messages": ids}));
            response(202, &format!("queued {} job(s)", ids.len()))
        }
    }
}
