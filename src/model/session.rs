//! The one path every model call takes: redact the request, check the budget against
//! the call's worst case, call with retries, count tokens and cost. Structured output
//! (a forced tool call, validated, one repair attempt) is built on it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::registry::ResolvedModel;
use super::retry::{RetryPolicy, with_retry};
use super::usage::{Budget, CallUsage, cost, estimate_input_tokens};
use super::{
    Block, Message, ModelError, Request, Response, Role, StopReason, ToolChoice, ToolDef, Usage,
    schema,
};
use crate::redact::Redactor;

/// A model with its budget, retry policy and usage log, shared by the workers of a
/// command.
pub struct Session {
    /// The model.
    pub resolved: ResolvedModel,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Spending so far and the limits.
    pub budget: Mutex<Budget>,
    /// Applied to every request before it leaves.
    pub redactor: Redactor,
    /// Told how many characters of a streamed reply have arrived (progress display).
    pub on_progress: Option<Box<dyn Fn(usize) + Send + Sync>>,
}

/// A structured reply that could not be had, with the raw reply kept for the run.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct StructuredError {
    /// Why.
    pub error: ModelError,
    /// The model's last reply, if there was one.
    pub raw: Option<Response>,
    /// Usage of the calls made.
    pub usage: Vec<CallUsage>,
}

/// The request with every text redacted.
pub fn redact_request(r: &Redactor, request: &Request) -> Request {
    r.redact_value(request)
}

impl Session {
    /// A session for a resolved model.
    pub fn new(
        resolved: ResolvedModel,
        retry: RetryPolicy,
        budget: Budget,
        redactor: Redactor,
    ) -> Self {
        Self {
            resolved,
            retry,
            budget: Mutex::new(budget),
            redactor,
            on_progress: None,
        }
    }

    fn lock_budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        // A poisoned budget still holds correct numbers.
        self.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What this command has spent so far, USD.
    pub fn spent(&self) -> f64 {
        self.lock_budget().command_spent
    }

    /// One call: redacted, budget-checked (against the worst case, before calling),
    /// retried, counted. `issue_spent` is the issue's running total.
    pub fn call(
        &self,
        stage: &str,
        request: &Request,
        issue_spent: &mut f64,
    ) -> Result<(Response, CallUsage), ModelError> {
        let req = redact_request(&self.redactor, request);
        let est_in = estimate_input_tokens(&req);
        let worst = cost(
            &self.resolved.price,
            &Usage {
                input_tokens: est_in,
                output_tokens: u64::from(req.max_tokens),
                ..Default::default()
            },
        );
        self.lock_budget().reserve(worst, *issue_spent)?;
        let started = Instant::now();
        let model = &self.resolved.model;
        let progress = |n: usize| {
            if let Some(p) = &self.on_progress {
                p(n)
            }
        };
        let response = match with_retry(
            &self.retry,
            || model.complete_streaming(&req, &progress),
            std::thread::sleep,
            |_, _, _| {},
        ) {
            Ok(r) => r,
            Err(e) => {
                self.lock_budget().settle(worst, 0.0);
                return Err(e);
            }
        };
        let (usage, reported) = match response.usage {
            Some(u) => (u, true),
            None => {
                let out = (serde_json::to_string(&response.content).map_or(0, |s| s.len()) as u64)
                    .div_ceil(4);
                (
                    Usage {
                        input_tokens: est_in,
                        output_tokens: out,
                        ..Default::default()
                    },
                    false,
                )
            }
        };
        let usd = cost(&self.resolved.price, &usage);
        self.lock_budget().settle(worst, usd);
        *issue_spent += usd;
        let call = CallUsage {
            model: model.id(),
            stage: stage.into(),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            reported,
            cost_usd: usd,
            millis: started.elapsed().as_millis() as u64,
            cache_write_tokens: usage.cache_write_tokens,
            cache_read_tokens: usage.cache_read_tokens,
        };
        Ok((response, call))
    }

    #[allow(clippy::result_large_err)] // one per model call; boxing buys nothing
    /// Ask for JSON through a forced call of `tool`; validate it against the tool's
    /// schema; on a bad reply try once more, showing the model the error.
    pub fn structured(
        &self,
        stage: &str,
        mut request: Request,
        tool: &ToolDef,
        issue_spent: &mut f64,
    ) -> Result<(Value, Response, Vec<CallUsage>), StructuredError> {
        request.tools = vec![tool.clone()];
        request.tool_choice = Some(ToolChoice::Tool(tool.name.clone()));
        let mut usage = Vec::new();
        let mut last: Option<Response> = None;
        for attempt in 0..2 {
            let (response, u) =
                self.call(stage, &request, issue_spent)
                    .map_err(|error| StructuredError {
                        error,
                        raw: last.clone(),
                        usage: usage.clone(),
                    })?;
            usage.push(u);
            let problem = match response.tool_call(&tool.name) {
                Some((_, input)) if response.stop_reason != StopReason::MaxTokens => {
                    match schema::validate(&tool.input_schema, input) {
                        Ok(()) => return Ok((input.clone(), response, usage)),
                        Err(e) => e,
                    }
                }
                Some(_) => "the reply was cut off at max_tokens".to_string(),
                None if response.stop_reason == StopReason::MaxTokens => {
                    "the reply was cut off at max_tokens before the tool call".to_string()
                }
                None => format!(
                    "the reply was prose, not a call of the tool `{}`",
                    tool.name
                ),
            };
            if attempt == 1 {
                return Err(StructuredError {
                    error: ModelError::Malformed {
                        provider: self.resolved.model.id(),
                        detail: format!(
                            "no valid `{}` call after a repair attempt: {problem}",
                            tool.name
                        ),
                    },
                    raw: Some(response),
                    usage,
                });
            }
            // Show the model what was wrong and ask again. Every tool call it made gets
            // a result (the APIs require it); calls whose input is not an object (cut
            // off mid-stream) and empty text are not echoed back.
            let kept: Vec<Block> = response
                .content
                .iter()
                .filter(|b| match b {
                    Block::ToolUse { input, .. } => input.is_object(),
                    Block::Text { text } => !text.trim().is_empty(),
                    Block::ToolResult { .. } => false,
                })
                .cloned()
                .collect();
            let feedback = format!(
                "Invalid: {problem}. Call the tool `{}` again with arguments that match its schema.",
                tool.name
            );
            let results: Vec<Block> = kept
                .iter()
                .filter_map(|b| match b {
                    Block::ToolUse { id, name, .. } => Some(Block::ToolResult {
                        tool_use_id: id.clone(),
                        content: if *name == tool.name {
                            feedback.clone()
                        } else {
                            format!("There is no tool `{name}`. {feedback}")
                        },
                        is_error: true,
                    }),
                    _ => None,
                })
                .collect();
            if !kept.is_empty() {
                request.messages.push(Message {
                    role: Role::Assistant,
                    content: kept,
                });
            }
            let content = if results.is_empty() {
                vec![Block::text(feedback)]
            } else {
                results
            };
            request.messages.push(Message {
                role: Role::User,
                content,
            });
            // A reply cut off at max_tokens gets room to finish.
            if problem.contains("max_tokens") {
                request.max_tokens = request.max_tokens.saturating_mul(2).min(8192);
            }
            last = Some(response);
        }
        Err(StructuredError {
            error: ModelError::Malformed {
                provider: self.resolved.model.id(),
                detail: "unreachable".into(),
            },
            raw: last,
            usage,
        })
    }
}

/// A default request timeout for model calls.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
