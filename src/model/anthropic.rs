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
            body["temperature"] = json!(t);
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
        let usage = v.get("usage").map(|u| Usage {
            input_tokens: u.get("input_tokens").and_then(Value::as_u64).unwrap_or(0),
            output_tokens: u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
        });
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
        let url = format!("{}/v1/messages", self.base_url);
        let resp = self
            .client
            .post(&url)
            .header("x-api-key", &self.api_key)
            .header("anthropic-version", "2023-06-01")
            .json(&self.body(request))
            .send()
            .map_err(|e| transport_error(&url, self.timeout, &e))?;
        let status = resp.status().as_u16();
        let wait = retry_after(resp.headers());
        let text = resp
            .text()
            .map_err(|e| transport_error(&url, self.timeout, &e))?;
        if !(200..300).contains(&status) {
            return Err(http_error(
                "anthropic",
                status,
                &text,
                wait,
                Some(&self.key_var),
            ));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::Malformed {
            provider: "anthropic".into(),
            detail: format!("not JSON: {e}"),
        })?;
        Self::parse(&v)
    }
}
