//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`): OpenAI,
//! Ollama, vLLM, llama.cpp server, LM Studio. Local servers differ in small ways: usage
//! may be missing, tool arguments may come as an object instead of a string, and some
//! models answer a forced tool call with the JSON as text (bare, fenced, or inside
//! `<tool_call>` tags); all are read.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    Block, Message, Model, ModelError, Request, Response, Role, StopReason, ToolChoice, Usage,
    http_error, retry_after, transport_error,
};

/// The OpenAI-compatible provider.
#[derive(Debug, Clone)]
pub struct OpenAi {
    client: reqwest::blocking::Client,
    base_url: String,
    model_id: String,
    api_key: Option<String>,
    key_var: Option<String>,
    timeout: u64,
    /// Ask for server-sent events (`models.NAME.stream: true`).
    stream: bool,
}

impl OpenAi {
    /// A client for `base_url` (e.g. `https://api.openai.com/v1`, `http://localhost:11434/v1`).
    pub fn new(
        base_url: &str,
        model_id: &str,
        api_key: Option<String>,
        key_var: Option<&str>,
        timeout: Duration,
        stream: bool,
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
            key_var: key_var.map(String::from),
            timeout: timeout.as_secs(),
            stream,
        })
    }

    fn messages(r: &Request) -> Vec<Value> {
        let mut out = Vec::new();
        if let Some(s) = &r.system {
            out.push(json!({"role": "system", "content": s}));
        }
        for Message { role, content } in &r.messages {
            let text: String = content
                .iter()
                .filter_map(|b| {
                    if let Block::Text { text } = b {
                        Some(text.as_str())
                    } else {
                        None
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            let calls: Vec<Value> = content
                .iter()
                .filter_map(|b| match b {
                    Block::ToolUse { id, name, input } => Some(json!({
                        "id": id, "type": "function",
                        "function": {"name": name, "arguments": input.to_string()}
                    })),
                    _ => None,
                })
                .collect();
            match role {
                Role::Assistant => {
                    let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
                    if !calls.is_empty() {
                        m["tool_calls"] = json!(calls);
                    }
                    out.push(m);
                }
                Role::User => {
                    for b in content {
                        if let Block::ToolResult {
                            tool_use_id,
                            content,
                            ..
                        } = b
                        {
                            out.push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": content}));
                        }
                    }
                    if !text.is_empty() {
                        out.push(json!({"role": "user", "content": text}));
                    }
                }
            }
        }
        out
    }

    /// The JSON body for a request.
    pub fn body(&self, r: &Request) -> Value {
        // api.openai.com wants max_completion_tokens (and reasoning models reject a
        // temperature); local servers know max_tokens.
        let official = self.base_url.contains("api.openai.com");
        let reasoning = ["o1", "o3", "o4", "gpt-5"]
            .iter()
            .any(|p| self.model_id.starts_with(p));
        let mut body = json!({
            "model": self.model_id,
            "messages": Self::messages(r),
        });
        body[if official {
            "max_completion_tokens"
        } else {
            "max_tokens"
        }] = json!(r.max_tokens);
        if !r.tools.is_empty() {
            body["tools"] = json!(r
                .tools
                .iter()
                .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}))
                .collect::<Vec<_>>());
        }
        match &r.tool_choice {
            Some(ToolChoice::Tool(name)) => {
                body["tool_choice"] = json!({"type": "function", "function": {"name": name}})
            }
            Some(ToolChoice::Auto) => body["tool_choice"] = json!("auto"),
            None => {}
        }
        if let Some(t) = r.temperature.filter(|_| !reasoning) {
            body["temperature"] = json!((f64::from(t) * 1000.0).round() / 1000.0);
        }
        if !r.stop.is_empty() {
            body["stop"] = json!(r.stop);
        }
        body
    }

    /// Read a chat completion; `forced` is the tool a forced call named, used to read
    /// tool calls that arrive as text.
    pub fn parse(v: &Value, forced: Option<&str>) -> Result<Response, ModelError> {
        let bad = |detail: &str| ModelError::Malformed {
            provider: "openai".into(),
            detail: detail.into(),
        };
        let choice = v
            .pointer("/choices/0")
            .ok_or_else(|| bad("no `choices[0]`"))?;
        let message = choice
            .get("message")
            .ok_or_else(|| bad("no `choices[0].message`"))?;
        let mut content = Vec::new();
        let text = message
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut calls: Vec<Block> = Vec::new();
        for (i, call) in message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let f = call
                .get("function")
                .ok_or_else(|| bad("a tool call without `function`"))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a tool call without a name"))?;
            let input = match f.get("arguments") {
                Some(Value::String(s)) => {
                    serde_json::from_str(s).unwrap_or(Value::String(s.clone()))
                }
                Some(other) => other.clone(),
                None => json!({}),
            };
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| format!("call_{i}"), String::from);
            calls.push(Block::ToolUse {
                id,
                name: name.into(),
                input,
            });
        }
        if calls.is_empty()
            && let Some(name) = forced
            && let Some(input) = json_in_text(&text)
        {
            // The tool call came as text; unwrap {"name", "arguments"} envelopes.
            let input = match (
                input.get("name"),
                input.get("arguments").or_else(|| input.get("parameters")),
            ) {
                (Some(Value::String(n)), Some(args)) if n == name => args.clone(),
                _ => input,
            };
            calls.push(Block::ToolUse {
                id: "call_text_0".into(),
                name: name.into(),
                input,
            });
        } else if !text.is_empty() {
            content.push(Block::Text { text });
        }
        let has_calls = !calls.is_empty();
        content.extend(calls);
        let stop_reason = match choice.get("finish_reason").and_then(Value::as_str) {
            Some("length") => StopReason::MaxTokens,
            Some("tool_calls") | Some("function_call") => StopReason::ToolUse,
            _ if has_calls => StopReason::ToolUse,
            Some("stop") | None => StopReason::EndTurn,
            Some(other) => StopReason::Other(other.into()),
        };
        let usage = v.get("usage").filter(|u| !u.is_null()).map(|u| {
            // Cached prompt tokens are part of `prompt_tokens`, priced apart.
            let cached = u
                .pointer("/prompt_tokens_details/cached_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            Usage {
                input_tokens: u
                    .get("prompt_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    .saturating_sub(cached),
                output_tokens: u
                    .get("completion_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                cache_write_tokens: 0,
                cache_read_tokens: cached,
            }
        });
        Ok(Response {
            content,
            stop_reason,
            usage,
        })
    }
}

/// A JSON object in model text: bare, in a ``` fence, or in `<tool_call>` tags.
fn json_in_text(text: &str) -> Option<Value> {
    let t = text.trim();
    let inner = if let Some(rest) = t.split_once("<tool_call>").map(|(_, r)| r) {
        rest.split("</tool_call>").next().unwrap_or(rest)
    } else if let Some(rest) = t.split_once("```").map(|(_, r)| r) {
        let rest = rest.trim_start_matches("json").trim_start_matches("JSON");
        rest.split("```").next().unwrap_or(rest)
    } else {
        t
    };
    let inner = inner.trim();
    let start = inner.find('{')?;
    let end = inner.rfind('}')?;
    serde_json::from_str::<Value>(&inner[start..=end])
        .ok()
        .filter(Value::is_object)
}

impl Model for OpenAi {
    fn id(&self) -> String {
        format!("openai:{}", self.model_id)
    }

    fn complete(&self, request: &Request) -> Result<Response, ModelError> {
        self.complete_streaming(request, &|_| {})
    }

    fn complete_streaming(
        &self,
        request: &Request,
        on_progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Response, ModelError> {
        let url = format!("{}/chat/completions", self.base_url);
        let mut body = self.body(request);
        if self.stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        let mut call = self.client.post(&url).json(&body);
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key);
        }
        let resp = call
            .send()
            .map_err(|e| transport_error(&url, self.timeout, &e))?;
        let status = resp.status().as_u16();
        let wait = retry_after(resp.headers());
        let sse = super::is_event_stream(resp.headers());
        let forced = match &request.tool_choice {
            Some(ToolChoice::Tool(n)) => Some(n.as_str()),
            _ => None,
        };
        if !(200..300).contains(&status) {
            let text = resp
                .text()
                .map_err(|e| transport_error(&url, self.timeout, &e))?;
            return Err(http_error(
                "openai",
                status,
                &text,
                wait,
                self.key_var.as_deref(),
            ));
        }
        if sse {
            // Rebuild one completion from the chunks, then read it like any other.
            let v = read_chunks(resp, on_progress).map_err(|detail| {
                if detail.contains(super::TOO_LARGE) {
                    ModelError::Malformed {
                        provider: "openai".into(),
                        detail,
                    }
                } else {
                    ModelError::Reset {
                        url: url.clone(),
                        detail,
                    }
                }
            })?;
            return Self::parse(&v, forced);
        }
        let text = super::read_body(resp, "openai", &url)?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::Malformed {
            provider: "openai".into(),
            detail: format!("not JSON: {e}"),
        })?;
        Self::parse(&v, forced)
    }
}

/// Fold `data: {chunk}` lines (until `data: [DONE]`) into one chat completion.
fn read_chunks(
    resp: reqwest::blocking::Response,
    on_progress: &(dyn Fn(usize) + Sync),
) -> Result<Value, String> {
    use std::io::BufRead;
    let mut content = String::new();
    // tool call index → (id, name, arguments)
    let mut calls: std::collections::BTreeMap<u64, (String, String, String)> = Default::default();
    let mut finish: Option<String> = None;
    let mut usage = Value::Null;
    for line in std::io::BufReader::new(super::Capped::new(resp)).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            usage = u.clone();
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            continue;
        };
        if let Some(t) = choice.pointer("/delta/content").and_then(Value::as_str) {
            content.push_str(t);
        }
        for c in choice
            .pointer("/delta/tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let idx = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let entry = calls.entry(idx).or_default();
            if let Some(id) = c.get("id").and_then(Value::as_str) {
                entry.0 = id.to_string();
            }
            if let Some(n) = c.pointer("/function/name").and_then(Value::as_str) {
                entry.1.push_str(n);
            }
            if let Some(a) = c.pointer("/function/arguments").and_then(Value::as_str) {
                entry.2.push_str(a);
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            finish = Some(f.to_string());
        }
        on_progress(content.len() + calls.values().map(|c| c.2.len()).sum::<usize>());
    }
    let tool_calls: Vec<Value> = calls
        .into_values()
        .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
        .collect();
    let mut message = json!({"role": "assistant", "content": if content.is_empty() { Value::Null } else { json!(content) }});
    if !tool_calls.is_empty() {
        message["tool_calls"] = json!(tool_calls);
    }
    Ok(
        json!({"choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_as_text_and_objects_are_read() {
        let v = json!({"choices": [{"message": {"content": "<tool_call>{\"name\": \"triage\", \"arguments\": {\"kind\": \"bug\"}}</tool_call>"}, "finish_reason": "stop"}]});
        let r = OpenAi::parse(&v, Some("triage")).unwrap();
        assert_eq!(r.tool_call("triage").unwrap().1, &json!({"kind": "bug"}));
        assert_eq!(r.usage, None);
        let v = json!({"choices": [{"message": {"content": "Sure:\n```json\n{\"kind\": \"feature\"}\n```"}}]});
        assert_eq!(
            OpenAi::parse(&v, Some("triage"))
                .unwrap()
                .tool_call("triage")
                .unwrap()
                .1,
            &json!({"kind": "feature"})
        );
        let v = json!({"choices": [{"message": {"content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "triage", "arguments": {"kind": "question"}}}]}, "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 5, "completion_tokens": 2}});
        let r = OpenAi::parse(&v, None).unwrap();
        assert_eq!(r.stop_reason, StopReason::ToolUse);
        assert_eq!(
            r.usage,
            Some(Usage {
                input_tokens: 5,
                output_tokens: 2,
                ..Default::default()
            })
        );
        let v = json!({"choices": [{"message": {"content": "I think it is a bug."}, "finish_reason": "length"}]});
        let r = OpenAi::parse(&v, Some("triage")).unwrap();
        assert!(r.tool_call("triage").is_none());
        assert_eq!(r.stop_reason, StopReason::MaxTokens);
    }
}
