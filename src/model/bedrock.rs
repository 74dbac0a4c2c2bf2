//! Amazon Bedrock: Converse and ConverseStream through `aws-sdk-bedrockruntime`, with
//! the standard AWS credential chain, region and profile, and `endpoint_url` for
//! emulators and VPC endpoints.
//!
//! The `Model` trait is synchronous (callers run in worker threads); this provider
//! owns a small tokio runtime and blocks on it per call.

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::types::{
    AutoToolChoice, ContentBlock, ContentBlockDelta, ContentBlockStart, ConversationRole,
    ConverseOutput, ConverseStreamOutput, InferenceConfiguration, Message as BMessage,
    SpecificToolChoice, StopReason as BStop, SystemContentBlock, Tool, ToolChoice as BToolChoice,
    ToolConfiguration, ToolInputSchema, ToolResultBlock, ToolResultContentBlock, ToolResultStatus,
    ToolSpecification, ToolUseBlock,
};
use aws_smithy_types::{Document, Number};
use serde_json::Value;

use super::{Block, Model, ModelError, Request, Response, Role, StopReason, ToolChoice, Usage};

/// The Bedrock provider.
pub struct Bedrock {
    runtime: tokio::runtime::Runtime,
    client: Client,
    model_id: String,
    stream: bool,
    endpoint: String,
    timeout: u64,
}

impl std::fmt::Debug for Bedrock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bedrock")
            .field("model_id", &self.model_id)
            .field("stream", &self.stream)
            .finish()
    }
}

/// JSON to a smithy `Document`.
pub fn to_document(v: &Value) -> Document {
    match v {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Document::Number(Number::PosInt(u)),
            (_, Some(i), _) => Document::Number(Number::NegInt(i)),
            (_, _, Some(f)) => Document::Number(Number::Float(f)),
            _ => Document::Null,
        },
        Value::String(s) => Document::String(s.clone()),
        Value::Array(a) => Document::Array(a.iter().map(to_document).collect()),
        Value::Object(o) => {
            Document::Object(o.iter().map(|(k, v)| (k.clone(), to_document(v))).collect())
        }
    }
}

/// A smithy `Document` to JSON.
pub fn from_document(d: &Document) -> Value {
    match d {
        Document::Null => Value::Null,
        Document::Bool(b) => Value::Bool(*b),
        Document::Number(Number::PosInt(u)) => Value::from(*u),
        Document::Number(Number::NegInt(i)) => Value::from(*i),
        Document::Number(Number::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        Document::String(s) => Value::String(s.clone()),
        Document::Array(a) => Value::Array(a.iter().map(from_document).collect()),
        Document::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), from_document(v)))
                .collect(),
        ),
    }
}

fn build_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Malformed {
        provider: "bedrock".into(),
        detail: format!("cannot build the request: {e}"),
    }
}

impl Bedrock {
    /// A client; `region`, `profile` and `endpoint_url` override the AWS chain's.
    pub fn new(
        model_id: &str,
        region: Option<&str>,
        profile: Option<&str>,
        endpoint_url: Option<&str>,
        stream: bool,
        timeout: std::time::Duration,
    ) -> Result<Self, ModelError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| {
                ModelError::Config(format!("cannot start the async runtime for bedrock: {e}"))
            })?;
        let config = runtime.block_on(async {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .http_client(crate::tls::aws_http_client())
                .timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .operation_timeout(timeout)
                        .connect_timeout(std::time::Duration::from_secs(10))
                        .build(),
                )
                .retry_config(aws_config::retry::RetryConfig::disabled());
            if let Some(r) = region {
                loader = loader.region(aws_config::Region::new(r.to_string()));
            }
            if let Some(p) = profile {
                loader = loader.profile_name(p);
            }
            if let Some(u) = endpoint_url {
                loader = loader.endpoint_url(u);
            }
            loader.load().await
        });
        if config.region().is_none() {
            return Err(ModelError::Config(
                "bedrock needs an AWS region\n  fix: set models.NAME.region, or AWS_REGION / AWS_DEFAULT_REGION, or a region in your AWS profile".into(),
            ));
        }
        let endpoint = endpoint_url.map_or_else(
            || {
                format!(
                    "bedrock-runtime.{}.amazonaws.com",
                    config.region().map(|r| r.to_string()).unwrap_or_default()
                )
            },
            String::from,
        );
        Ok(Self {
            timeout: timeout.as_secs(),
            client: Client::new(&config),
            runtime,
            model_id: model_id.into(),
            stream,
            endpoint,
        })
    }

    fn messages(r: &Request) -> Result<Vec<BMessage>, ModelError> {
        r.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let role = match m.role {
                    Role::User => ConversationRole::User,
                    Role::Assistant => ConversationRole::Assistant,
                };
                let mut b = BMessage::builder().role(role);
                for block in &m.content {
                    b = b.content(match block {
                        Block::Text { text } => ContentBlock::Text(text.clone()),
                        Block::ToolUse { id, name, input } => ContentBlock::ToolUse(
                            ToolUseBlock::builder()
                                .tool_use_id(id)
                                .name(name)
                                .input(to_document(input))
                                .build()
                                .map_err(build_err)?,
                        ),
                        Block::ToolResult {
                            tool_use_id,
                            content,
                            is_error,
                        } => ContentBlock::ToolResult(
                            ToolResultBlock::builder()
                                .tool_use_id(tool_use_id)
                                .content(ToolResultContentBlock::Text(content.clone()))
                                .set_status(is_error.then_some(ToolResultStatus::Error))
                                .build()
                                .map_err(build_err)?,
                        ),
                    });
                }
                // A cache point after the first user message (the tools, the system
                // prompt and that message: the prefix every later turn repeats) and
                // after the newest one (the conversation so far, for the next turn).
                if r.cache_prefix && (i == 0 || i + 1 == r.messages.len()) {
                    b = b.content(ContentBlock::CachePoint(
                        aws_sdk_bedrockruntime::types::CachePointBlock::builder()
                            .r#type(aws_sdk_bedrockruntime::types::CachePointType::Default)
                            .build()
                            .map_err(build_err)?,
                    ));
                }
                b.build().map_err(build_err)
            })
            .collect()
    }

    fn tool_config(r: &Request) -> Result<Option<ToolConfiguration>, ModelError> {
        if r.tools.is_empty() {
            return Ok(None);
        }
        let mut b = ToolConfiguration::builder();
        for t in &r.tools {
            b = b.tools(Tool::ToolSpec(
                ToolSpecification::builder()
                    .name(&t.name)
                    .description(&t.description)
                    .input_schema(ToolInputSchema::Json(to_document(&t.input_schema)))
                    .build()
                    .map_err(build_err)?,
            ));
        }
        b = match &r.tool_choice {
            Some(ToolChoice::Tool(name)) => b.tool_choice(BToolChoice::Tool(
                SpecificToolChoice::builder()
                    .name(name)
                    .build()
                    .map_err(build_err)?,
            )),
            Some(ToolChoice::Auto) => {
                b.tool_choice(BToolChoice::Auto(AutoToolChoice::builder().build()))
            }
            None => b,
        };
        b.build().map(Some).map_err(build_err)
    }

    fn inference(r: &Request) -> InferenceConfiguration {
        InferenceConfiguration::builder()
            .max_tokens(r.max_tokens.min(i32::MAX as u32) as i32)
            .set_temperature(r.temperature)
            .set_stop_sequences((!r.stop.is_empty()).then(|| r.stop.clone()))
            .build()
    }

    fn stop(s: &BStop) -> StopReason {
        match s {
            BStop::EndTurn => StopReason::EndTurn,
            BStop::ToolUse => StopReason::ToolUse,
            BStop::MaxTokens => StopReason::MaxTokens,
            BStop::StopSequence => StopReason::StopSequence,
            other => StopReason::Other(other.as_str().to_string()),
        }
    }

    fn error<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
        &self,
        e: SdkError<E, R>,
    ) -> ModelError {
        let url = self.endpoint.clone();
        match &e {
            SdkError::TimeoutError(_) => ModelError::Timeout {
                url,
                seconds: self.timeout,
            },
            SdkError::DispatchFailure(d) => {
                let detail = format!("{:?}", d);
                if d.is_timeout() {
                    ModelError::Timeout {
                        url,
                        seconds: self.timeout,
                    }
                } else if detail.contains("onnection refused")
                    || detail.contains("ConnectionRefused")
                    || detail.contains("dns error")
                {
                    ModelError::Connect {
                        url,
                        detail: "connection refused".into(),
                    }
                } else if detail.contains("CredentialsNotLoaded") || detail.contains("credentials")
                {
                    // Not a network problem: retrying cannot help.
                    ModelError::Config(
                        "bedrock: no AWS credentials could be loaded\n  fix: set AWS_PROFILE (and run `aws sso login` for SSO profiles), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or models.NAME.profile".into(),
                    )
                } else if d.is_io() {
                    ModelError::Reset { url, detail }
                } else {
                    ModelError::Malformed {
                        provider: "bedrock".into(),
                        detail,
                    }
                }
            }
            SdkError::ServiceError(se) => {
                let err = se.err();
                // Errors inside a stream carry no code in the payload; the typed variant
                // names it.
                let code = match err.code() {
                    Some(c) if !c.is_empty() => c.to_string(),
                    _ => {
                        let debug = format!("{err:?}");
                        [
                            "ThrottlingException",
                            "ServiceUnavailableException",
                            "ModelNotReadyException",
                            "InternalServerException",
                            "ModelStreamErrorException",
                            "ModelTimeoutException",
                            "ValidationException",
                            "AccessDeniedException",
                            "ResourceNotFoundException",
                        ]
                        .iter()
                        .find(|v| debug.contains(*v))
                        .map_or_else(String::new, |v| (*v).to_string())
                    }
                };
                let message = err.message().unwrap_or("").to_string();
                let status = match code.as_str() {
                    "ThrottlingException"
                    | "ModelNotReadyException"
                    | "TooManyRequestsException" => 429,
                    "ServiceUnavailableException" => 503,
                    "InternalServerException"
                    | "ModelErrorException"
                    | "ModelStreamErrorException" => 500,
                    "ModelTimeoutException" => 408,
                    "ValidationException" => 400,
                    "AccessDeniedException" => 403,
                    "ResourceNotFoundException" => 404,
                    "UnrecognizedClientException"
                    | "ExpiredTokenException"
                    | "InvalidSignatureException" => 401,
                    _ => 500,
                };
                let hint = match status {
                    401 => "\n  fix: the AWS credentials were refused; check AWS_PROFILE / AWS_ACCESS_KEY_ID or `aws sso login`".to_string(),
                    403 => format!("\n  fix: the credentials lack bedrock:InvokeModel (and InvokeModelWithResponseStream) on {}, or the model is not enabled in this region", self.model_id),
                    404 => "\n  fix: check model_id and region; the model may not be offered there".to_string(),
                    400 => "\n  fix: the request was rejected as invalid; this is not retried".to_string(),
                    _ => String::new(),
                };
                ModelError::Http {
                    provider: "bedrock".into(),
                    status,
                    message: format!("{code}: {message}"),
                    hint,
                    retry_after: None,
                }
            }
            _ => ModelError::Malformed {
                provider: "bedrock".into(),
                detail: format!("{e:?}"),
            },
        }
    }

    async fn converse(&self, r: &Request) -> Result<Response, ModelError> {
        let resp = self
            .client
            .converse()
            .model_id(&self.model_id)
            .set_messages(Some(Self::messages(r)?))
            .set_system(
                r.system
                    .as_ref()
                    .map(|s| vec![SystemContentBlock::Text(s.clone())]),
            )
            .set_tool_config(Self::tool_config(r)?)
            .inference_config(Self::inference(r))
            .send()
            .await
            .map_err(|e| self.error(e))?;
        let mut content = Vec::new();
        if let Some(ConverseOutput::Message(m)) = resp.output() {
            for b in m.content() {
                match b {
                    ContentBlock::Text(t) => content.push(Block::Text { text: t.clone() }),
                    ContentBlock::ToolUse(t) => content.push(Block::ToolUse {
                        id: t.tool_use_id().to_string(),
                        name: t.name().to_string(),
                        input: from_document(t.input()),
                    }),
                    _ => {}
                }
            }
        }
        let usage = resp.usage().map(usage_of);
        Ok(Response {
            content,
            stop_reason: Self::stop(resp.stop_reason()),
            usage,
        })
    }

    async fn converse_stream(
        &self,
        r: &Request,
        on_progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Response, ModelError> {
        let mut out = self
            .client
            .converse_stream()
            .model_id(&self.model_id)
            .set_messages(Some(Self::messages(r)?))
            .set_system(
                r.system
                    .as_ref()
                    .map(|s| vec![SystemContentBlock::Text(s.clone())]),
            )
            .set_tool_config(Self::tool_config(r)?)
            .inference_config(Self::inference(r))
            .send()
            .await
            .map_err(|e| self.error(e))?;
        // Blocks by index: text accumulates deltas; tool use accumulates its JSON input.
        let mut blocks: Vec<(Option<(String, String)>, String)> = Vec::new();
        let mut stop_reason = StopReason::EndTurn;
        let mut usage = None;
        loop {
            let event = out.stream.recv().await.map_err(|e| self.error(e))?;
            let Some(event) = event else { break };
            match event {
                ConverseStreamOutput::ContentBlockStart(s) => {
                    let i = s.content_block_index().max(0) as usize;
                    while blocks.len() <= i {
                        blocks.push((None, String::new()));
                    }
                    if let Some(ContentBlockStart::ToolUse(t)) = s.start() {
                        blocks[i].0 = Some((t.tool_use_id().to_string(), t.name().to_string()));
                    }
                }
                ConverseStreamOutput::ContentBlockDelta(d) => {
                    let i = d.content_block_index().max(0) as usize;
                    while blocks.len() <= i {
                        blocks.push((None, String::new()));
                    }
                    match d.delta() {
                        Some(ContentBlockDelta::Text(t)) => blocks[i].1.push_str(t),
                        Some(ContentBlockDelta::ToolUse(t)) => blocks[i].1.push_str(t.input()),
                        _ => {}
                    }
                    on_progress(blocks.iter().map(|b| b.1.len()).sum());
                }
                ConverseStreamOutput::MessageStop(m) => stop_reason = Self::stop(m.stop_reason()),
                ConverseStreamOutput::Metadata(m) => {
                    usage = m.usage().map(usage_of);
                }
                _ => {}
            }
        }
        let content = super::streamed_blocks(blocks);
        Ok(Response {
            content,
            stop_reason,
            usage,
        })
    }
}

impl Model for Bedrock {
    fn id(&self) -> String {
        format!("bedrock:{}", self.model_id)
    }

    fn complete(&self, request: &Request) -> Result<Response, ModelError> {
        self.complete_streaming(request, &|_| {})
    }

    fn complete_streaming(
        &self,
        request: &Request,
        on_progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Response, ModelError> {
        if self.stream {
            self.runtime
                .block_on(self.converse_stream(request, on_progress))
        } else {
            self.runtime.block_on(self.converse(request))
        }
    }
}

/// Tokens from a Converse `usage`, cache writes and reads apart.
fn usage_of(u: &aws_sdk_bedrockruntime::types::TokenUsage) -> Usage {
    let n = |v: i32| v.max(0) as u64;
    Usage {
        input_tokens: n(u.input_tokens()),
        output_tokens: n(u.output_tokens()),
        cache_write_tokens: u.cache_write_input_tokens().map_or(0, n),
        cache_read_tokens: u.cache_read_input_tokens().map_or(0, n),
    }
}
