//! Anthropic Messages API (`POST /v1/messages`).

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    Block, Model, ModelError, Request, Response, StopReason, ToolChoice, Usage, http_error,
    retry_after, transport_error,
};

/// The Anthropic provider.
#[derive(Debug, Clone)]
pub struct Anthropic {
    client: reqwest::blocking::Client,
    base_url: String,
    model_id: String,
    api_key: String,
    key_var: String,
    timeout: u64,
}

impl Anthropic {
    /// A client for `base_url` (default `https://api.anthropic.com`).
    pub fn new(
        base_url: &str,
        model_id: &str,
        api_key: String,
        key_var: &str,
        timeout: Duration,
    ) -> Result<Self, ModelError> {
        crate::tls::install();
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ModelError::Config(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            model_id: model_id.into(),
            api_key,
            key_var: key_var.into(),
            timeout: timeout.as_secs(),
        })
    }

    /// The JSON body for a request.
    pub fn body(&self, r: &Request) -> Value {
        let mut body = json!({
            "model": self.model_id,
            "max_tokens": r.max_tokens,
            "messages": r.messages,
        });
        if let Some(s) = &r.system {
            body["system"] = json!(s);
        }
        // A breakpoint after the first user message caches the tools, the system prompt
        // and that message, the prefix every later turn repeats; a second one on the
        // newest message lets the next turn read the whole conversation so far.
        if r.cache_prefix {
            let last = r.messages.len().saturating_sub(1);
            for i in [0, last] {
                if let Some(block) = body
                    .pointer_mut(&format!("/messages/{i}/content"))
                    .and_then(Value::as_array_mut)
                    .and_then(|c| c.last_mut())
                {
                    block["cache_control"] = json!({"type": "ephemeral"});
                }
            }
        }
        if !r.tools.is_empty() {
            body["tools"] = json!(r.tools);
        }
        match &r.tool_choice {
            Some(ToolChoice::Tool(name)) => {
                body["tool_choice"] = json!({"type": "tool", "name": name})
            }
            Some(ToolChoice::Auto) => body["tool_choice"] = json!({"type": "auto"}),
            None => {}
        }
        if let Some(t) = r.temperature {
            // f32 → f64 without the binary tail (0.7, not 0.699999988).
            body["temperature"] = json!((f64::from(t) * 1000.0).round() / 1000.0);
        }
        if !r.stop.is_empty() {
            body["stop_sequences"] = json!(r.stop);
        }
        body
    }

    /// Read a Messages API reply.
    pub fn parse(v: &Value) -> Result<Response, ModelError> {
        let bad = |detail: &str| ModelError::Malformed {
            provider: "anthropic".into(),
            detail: detail.into(),
        };
        let content: Vec<Block> = v
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no `content` array"))?
            .iter()
            .filter_map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") | Some("tool_use") => serde_json::from_value(b.clone()).ok(),
                _ => None,
            })
            .collect();
        let stop_reason = match v.get("stop_reason").and_then(Value::as_str) {
            Some("end_turn") => StopReason::EndTurn,
            Some("tool_use") => StopReason::ToolUse,
            Some("max_tokens") => StopReason::MaxTokens,
            Some("stop_sequence") => StopReason::StopSequence,
            Some(other) => StopReason::Other(other.into()),
            None => StopReason::EndTurn,
        };
        let usage = v.get("usage").map(usage_of);
        Ok(Response {
            content,
            stop_reason,
            usage,
        })
    }
}

impl Model for Anthropic {
    fn id(&self) -> String {
        format!("anthropic:{}", self.model_id)
    }

    fn complete(&self, request: &Request) -> Result<Response, ModelError> {
        self.complete_streaming(request, &|_| {})
    }

    /// Asks for a stream (`stream: true`); reads server-sent events when the server
    /// streams and plain JSON when it does not.
    fn complete_streaming(
        &self,
        request: &Request,
        on_progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Response, ModelError> {
        let url = format!("{}/v1/messages", self.base_url);
        let mut body = self.body(request);
        body["stream"] = serde_json::json!(true);
        let resp = self
            .client
            .post(&url)
            .header("x-api-key", &self.api_key)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .map_err(|e| transport_error(&url, self.timeout, &e))?;
        let status = resp.status().as_u16();
        let wait = retry_after(resp.headers());
        let sse = super::is_event_stream(resp.headers());
        if !(200..300).contains(&status) {
            let text = resp
                .text()
                .map_err(|e| transport_error(&url, self.timeout, &e))?;
            return Err(http_error(
                "anthropic",
                status,
                &text,
                wait,
                Some(&self.key_var),
            ));
        }
        if sse {
            return read_events(resp, on_progress).map_err(|e| match e {
                ModelError::Reset { detail, .. } => ModelError::Reset {
                    url: url.clone(),
                    detail,
                },
                other => other,
            });
        }
        let text = super::read_body(resp, "anthropic", &url)?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::Malformed {
            provider: "anthropic".into(),
            detail: format!("not JSON: {e}"),
        })?;
        Self::parse(&v)
    }
}

/// Tokens from a Messages `usage` object, cache writes and reads apart.
fn usage_of(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cache_write_tokens: n("cache_creation_input_tokens"),
        cache_read_tokens: n("cache_read_input_tokens"),
    }
}

/// Read a Messages stream: `message_start`, `content_block_start/delta/stop`,
/// `message_delta`, `message_stop`, and `error` events.
fn read_events(
    resp: reqwest::blocking::Response,
    on_progress: &(dyn Fn(usize) + Sync),
) -> Result<Response, ModelError> {
    use std::io::BufRead;
    let bad = |detail: String| ModelError::Malformed {
        provider: "anthropic".into(),
        detail,
    };
    // Per block: (tool id and name, accumulated text or JSON).
    let mut blocks: Vec<(Option<(String, String)>, String)> = Vec::new();
    let mut usage = Usage::default();
    let mut stop_reason = StopReason::EndTurn;
    let mut received = 0usize;
    for line in std::io::BufReader::new(super::Capped::new(resp)).lines() {
        let line = line.map_err(|e| super::body_error("anthropic", "", &e))?;
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let ev: Value = serde_json::from_str(data.trim())
            .map_err(|e| bad(format!("an event is not JSON: {e}")))?;
        let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
        match ev.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if let Some(u) = ev.pointer("/message/usage") {
                    usage = usage_of(u);
                }
            }
            Some("content_block_start") => {
                while blocks.len() <= index {
                    blocks.push((None, String::new()));
                }
                let cb = ev.get("content_block").cloned().unwrap_or(Value::Null);
                if cb.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let id = cb
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let name = cb
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    blocks[index].0 = Some((id, name));
                } else if let Some(t) = cb.get("text").and_then(Value::as_str) {
                    blocks[index].1.push_str(t);
                }
            }
            Some("content_block_delta") => {
                while blocks.len() <= index {
                    blocks.push((None, String::new()));
                }
                let d = ev.get("delta").cloned().unwrap_or(Value::Null);
                let piece = d
                    .get("text")
                    .or_else(|| d.get("partial_json"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                blocks[index].1.push_str(piece);
                received += piece.len();
                on_progress(received);
            }
            Some("message_delta") => {
                if let Some(r) = ev.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    stop_reason = match r {
                        "end_turn" => StopReason::EndTurn,
                        "tool_use" => StopReason::ToolUse,
                        "max_tokens" => StopReason::MaxTokens,
                        "stop_sequence" => StopReason::StopSequence,
                        other => StopReason::Other(other.into()),
                    };
                }
                if let Some(o) = ev.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    usage.output_tokens = o;
                }
            }
            Some("error") => {
                let kind = ev
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let message = ev
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let status = match kind {
                    "overloaded_error" => 529,
                    "rate_limit_error" => 429,
                    "api_error" => 500,
                    "invalid_request_error" => 400,
                    _ => 500,
                };
                return Err(ModelError::Http {
                    provider: "anthropic".into(),
                    status,
                    message,
                    hint: String::new(),
                    retry_after: None,
                });
            }
            _ => {}
        }
    }
    let content = super::streamed_blocks(blocks);
    Ok(Response {
        content,
        stop_reason,
        usage: Some(usage),
    })
}
