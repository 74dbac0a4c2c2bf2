//! Models: one request and one response type, the `Model` trait, and the providers
//! (Anthropic Messages, OpenAI-compatible chat completions, replay cassettes), chosen
//! from config as data.

pub mod anthropic;
pub mod bedrock;
pub mod openai;
pub mod registry;
pub mod replay;
pub mod retry;
pub mod schema;
pub mod session;
pub mod usage;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorKind, HasKind};

/// Who said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The program (and the issue text it passes on).
    User,
    /// The model.
    Assistant,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// The model asks for a tool call (for us: structured output).
    ToolUse {
        /// Call id, echoed by the result.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments, a JSON object.
        input: Value,
    },
    /// The answer to a tool call.
    ToolResult {
        /// The call it answers.
        tool_use_id: String,
        /// Result text.
        content: String,
        /// True when it reports an error (e.g. a validation failure).
        #[serde(default)]
        is_error: bool,
    },
}

impl Block {
    /// A text block.
    pub fn text(t: impl Into<String>) -> Self {
        Block::Text { text: t.into() }
    }
}

/// A message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who.
    pub role: Role,
    /// What.
    pub content: Vec<Block>,
}

impl Message {
    /// A user message of one text block.
    pub fn user(text: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: vec![Block::text(text)],
        }
    }
}

/// A tool the model may call, its input described by JSON Schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    /// Name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// JSON Schema of the input object.
    pub input_schema: Value,
}

/// How the model may use tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// As it likes.
    Auto,
    /// Must call this tool (structured output).
    Tool(String),
}

/// One model call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// System prompt.
    pub system: Option<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools offered.
    #[serde(default)]
    pub tools: Vec<ToolDef>,
    /// Tool policy.
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    /// Reply length limit.
    pub max_tokens: u32,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Mark the unchanging prefix (system, tools, the first user message) cacheable
    /// where the provider has prompt caching (Anthropic `cache_control`, Bedrock cache
    /// points); later turns then read it from the cache at the provider's cache price.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache_prefix: bool,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It finished.
    EndTurn,
    /// It called a tool.
    ToolUse,
    /// It hit `max_tokens`: the reply is cut off.
    MaxTokens,
    /// It hit a stop sequence.
    StopSequence,
    /// Something else the provider said.
    Other(String),
}

/// Tokens of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens read at the full price (cache writes and reads not included).
    pub input_tokens: u64,
    /// Reply tokens.
    pub output_tokens: u64,
    /// Prompt tokens written to the provider's cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A model's reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Content, in order.
    pub content: Vec<Block>,
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// Tokens; `None` when the server does not report them (some local servers).
    pub usage: Option<Usage>,
}

impl Response {
    /// All text blocks joined.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|b| match b {
                Block::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("")
    }

    /// The first call of the named tool.
    pub fn tool_call(&self, name: &str) -> Option<(&str, &Value)> {
        self.content.iter().find_map(|b| match b {
            Block::ToolUse { id, name: n, input } if n == name => Some((id.as_str(), input)),
            _ => None,
        })
    }
}

/// Model failures, each saying what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    /// The configuration names something that does not exist.
    #[error("{0}")]
    Config(String),
    /// The key variable is unset.
    #[error(
        "{provider} needs an API key in ${var}, which is not set\n  fix: export {var}=… (or set api_key_env in models.{entry} to the variable that holds it)"
    )]
    MissingKey {
        /// Provider.
        provider: String,
        /// Config entry.
        entry: String,
        /// The variable.
        var: String,
    },
    /// Nothing listens at the URL.
    #[error(
        "cannot connect to {url}: {detail}\n  fix: check that the server runs and the base_url/endpoint_url is right"
    )]
    Connect {
        /// Where.
        url: String,
        /// Why.
        detail: String,
    },
    /// The call took longer than the request timeout.
    #[error("{url} did not answer within {seconds} s")]
    Timeout {
        /// Where.
        url: String,
        /// The limit.
        seconds: u64,
    },
    /// The server said no.
    #[error("{provider} answered HTTP {status}: {message}{hint}")]
    Http {
        /// Provider.
        provider: String,
        /// Status code.
        status: u16,
        /// The server's message.
        message: String,
        /// What to do, for auth and validation errors.
        hint: String,
        /// Seconds the server asked us to wait.
        retry_after: Option<f64>,
    },
    /// The connection broke mid-call.
    #[error("{url}: connection lost ({detail})")]
    Reset {
        /// Where.
        url: String,
        /// Why.
        detail: String,
    },
    /// The reply is not what the protocol says.
    #[error("{provider} sent a reply this client cannot read: {detail}")]
    Malformed {
        /// Provider.
        provider: String,
        /// What is wrong.
        detail: String,
    },
    /// A replay cassette problem.
    #[error("{0}")]
    Cassette(String),
    /// A budget would be exceeded.
    #[error("{0}")]
    Budget(String),
    /// Retries ran out.
    #[error(
        "gave up after {attempts} attempts over {waited:.1} s (retry.max_wait {max_wait} s): {last}"
    )]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// Seconds waited.
        waited: f64,
        /// The cap.
        max_wait: u64,
        /// The last error.
        last: Box<ModelError>,
    },
}

impl ModelError {
    /// Worth trying again: throttling, overload, server errors, broken connections,
    /// timeouts. Auth and validation errors, missing keys and refused connections are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::Http { status, .. } => matches!(status, 408 | 425 | 429 | 500..=599),
            ModelError::Reset { .. } | ModelError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// The server's requested wait, if any.
    pub fn retry_after(&self) -> Option<f64> {
        match self {
            ModelError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl HasKind for ModelError {
    fn kind(&self) -> ErrorKind {
        match self {
            ModelError::Config(_) | ModelError::Cassette(_) => ErrorKind::Config,
            ModelError::MissingKey { .. } => ErrorKind::Credentials,
            ModelError::Http {
                status: 401 | 403, ..
            } => ErrorKind::Credentials,
            ModelError::Http { .. } => ErrorKind::Service,
            ModelError::Connect { .. } | ModelError::Timeout { .. } | ModelError::Reset { .. } => {
                ErrorKind::Network
            }
            _ => ErrorKind::Runtime,
        }
    }
}

/// A model.
pub trait Model: Send + Sync {
    /// `provider:model_id`, for logs and usage.
    fn id(&self) -> String;
    /// One call, no retries (see [`retry`]).
    fn complete(&self, request: &Request) -> Result<Response, ModelError>;

    /// One call that reports how much of the reply has arrived (characters), for
    /// progress on long calls. Providers that stream override it.
    fn complete_streaming(
        &self,
        request: &Request,
        on_progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Response, ModelError> {
        let _ = on_progress;
        self.complete(request)
    }
}

/// HTTP status and body of a failed call, turned into a `ModelError`.
pub(crate) fn http_error(
    provider: &str,
    status: u16,
    body: &str,
    retry_after: Option<f64>,
    key_var: Option<&str>,
) -> ModelError {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .or_else(|| v.get("error"))
                .and_then(|m| m.as_str().map(String::from))
        })
        .unwrap_or_else(|| body.chars().take(300).collect());
    let hint = match status {
        401 => format!(
            "\n  fix: the API key was refused; check {}",
            key_var.map_or_else(|| "the credentials".to_string(), |v| format!("${v}"))
        ),
        403 => "\n  fix: the key lacks permission for this model or endpoint".to_string(),
        404 => "\n  fix: check model_id and base_url/endpoint_url".to_string(),
        400 | 422 => {
            "\n  fix: the request was rejected as invalid; this is not retried".to_string()
        }
        _ => String::new(),
    };
    ModelError::Http {
        provider: provider.into(),
        status,
        message,
        hint,
        retry_after,
    }
}

/// A reqwest failure, classified.
pub(crate) fn transport_error(url: &str, timeout_secs: u64, e: &reqwest::Error) -> ModelError {
    let detail = {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s.push_str(&format!(": {inner}"));
            src = inner.source();
        }
        s
    };
    if e.is_timeout() {
        ModelError::Timeout {
            url: url.into(),
            seconds: timeout_secs,
        }
    } else if e.is_connect() {
        ModelError::Connect {
            url: url.into(),
            detail,
        }
    } else {
        ModelError::Reset {
            url: url.into(),
            detail,
        }
    }
}

/// Blocks accumulated from a stream, by index: `(Some((id, name)), json)` for a tool
/// call, `(None, text)` for text. Empty text is dropped; tool input that is not JSON
/// (a call cut off mid-stream) is kept as a string.
pub(crate) fn streamed_blocks(blocks: Vec<(Option<(String, String)>, String)>) -> Vec<Block> {
    blocks
        .into_iter()
        .filter_map(|(tool, text)| match tool {
            Some((id, name)) => Some(Block::ToolUse {
                id,
                name,
                input: if text.trim().is_empty() {
                    Value::Object(Default::default())
                } else {
                    serde_json::from_str(&text).unwrap_or(Value::String(text))
                },
            }),
            None if !text.is_empty() => Some(Block::Text { text }),
            None => None,
        })
        .collect()
}

/// The most bytes read from one model answer (a plain body or a stream). A larger
/// answer is refused — whatever `max_tokens` said, a server can send more — and
/// nothing of it is kept.
pub const MAX_ANSWER_BYTES: u64 = 8 * 1024 * 1024;

/// A reader that fails once more than [`MAX_ANSWER_BYTES`] have come through it.
pub(crate) struct Capped<R> {
    inner: R,
    read: u64,
}

impl<R> Capped<R> {
    /// Wrap a response body.
    pub(crate) fn new(inner: R) -> Self {
        Self { inner, read: 0 }
    }
}

/// The message of the error a [`Capped`] reader gives, so callers can tell it apart.
pub(crate) const TOO_LARGE: &str = "the model's answer is larger than 8 MiB; it was refused";

impl<R: std::io::Read> std::io::Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > MAX_ANSWER_BYTES {
            return Err(std::io::Error::other(TOO_LARGE));
        }
        Ok(n)
    }
}

/// A whole (non-streamed) answer body, at most [`MAX_ANSWER_BYTES`].
pub(crate) fn read_body(
    resp: reqwest::blocking::Response,
    provider: &str,
    url: &str,
) -> Result<String, ModelError> {
    use std::io::Read;
    let mut text = String::new();
    Capped::new(resp)
        .read_to_string(&mut text)
        .map_err(|e| body_error(provider, url, &e))?;
    Ok(text)
}

/// The error for a failed read of an answer: too large, or the connection dropped.
pub(crate) fn body_error(provider: &str, url: &str, e: &std::io::Error) -> ModelError {
    if e.to_string().contains(TOO_LARGE) {
        ModelError::Malformed {
            provider: provider.into(),
            detail: TOO_LARGE.into(),
        }
    } else {
        ModelError::Reset {
            url: url.into(),
            detail: e.to_string(),
        }
    }
}

/// True when a response is a server-sent event stream.
pub(crate) fn is_event_stream(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// `Retry-After` in seconds (delta-seconds form; HTTP dates are ignored).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<f64> {
    headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .map(|ms| ms / 1000.0)
        .or_else(|| {
            headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<f64>().ok())
        })
}
