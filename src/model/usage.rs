//! Tokens, prices and budgets. Budgets are checked *before* each call against the
//! call's worst case (its prompt and `max_tokens` of reply), so a run stops before it
//! would exceed a limit, never after.

use serde::{Deserialize, Serialize};

use super::{ModelError, Request, Usage};
use crate::config::Price;

/// Prices of common models, USD per million tokens (input, output).
pub const BUILTIN_PRICES: &[(&str, f64, f64)] = &[
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("claude-haiku-4", 1.0, 5.0),
    ("claude-3-haiku", 0.25, 1.25),
    ("claude-opus-4", 15.0, 75.0),
    ("claude-3-opus", 15.0, 75.0),
    ("gpt-4o-mini", 0.15, 0.6),
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4.1-nano", 0.1, 0.4),
    ("gpt-4.1-mini", 0.4, 1.6),
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-5-nano", 0.05, 0.4),
    ("gpt-5-mini", 0.25, 2.0),
    ("gpt-5", 1.25, 10.0),
    ("o1-mini", 1.1, 4.4),
    ("o1", 15.0, 60.0),
    ("o3-mini", 1.1, 4.4),
    ("o3", 2.0, 8.0),
    ("o4-mini", 1.1, 4.4),
];

/// The price of a model id from the built-in table (longest matching name wins).
pub fn builtin_price(model_id: &str) -> Option<Price> {
    let id = model_id.to_lowercase();
    BUILTIN_PRICES
        .iter()
        .filter(|(name, _, _)| id.contains(name))
        .max_by_key(|(name, _, _)| name.len())
        .map(|(_, i, o)| Price {
            input_per_mtok: *i,
            output_per_mtok: *o,
            cache_write_per_mtok: None,
            cache_read_per_mtok: None,
        })
}

/// Cost of tokens at a price.
pub fn cost(price: &Price, usage: &Usage) -> f64 {
    let write = price
        .cache_write_per_mtok
        .unwrap_or(price.input_per_mtok * 1.25);
    let read = price
        .cache_read_per_mtok
        .unwrap_or(price.input_per_mtok * 0.1);
    (usage.input_tokens as f64 * price.input_per_mtok
        + usage.output_tokens as f64 * price.output_per_mtok
        + usage.cache_write_tokens as f64 * write
        + usage.cache_read_tokens as f64 * read)
        / 1e6
}

/// A rough token count (4 characters a token), for the worst case before a call.
pub fn estimate_input_tokens(request: &Request) -> u64 {
    let chars = serde_json::to_string(&request.messages).map_or(0, |s| s.len())
        + request.system.as_deref().map_or(0, str::len)
        + serde_json::to_string(&request.tools).map_or(0, |s| s.len());
    // Bytes/4 undercounts some tokenizers, and providers add hidden tool prompts:
    // pad so the worst case stays an upper bound.
    (chars as u64).div_ceil(4) * 5 / 4 + 500
}

/// One call, as recorded in `usage.json` and `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallUsage {
    /// `provider:model_id`.
    pub model: String,
    /// The stage that made it.
    pub stage: String,
    /// Prompt tokens (0 when the server did not say).
    pub input_tokens: u64,
    /// Reply tokens.
    pub output_tokens: u64,
    /// False when the server reported no usage and these are estimates.
    pub reported: bool,
    /// USD.
    pub cost_usd: f64,
    /// Wall time of the call including retries, ms.
    pub millis: u64,
    /// Prompt tokens written to the provider's cache (priced apart).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    /// Prompt tokens read from the provider's cache (priced apart).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Spending limits and what was spent by a command. Per-issue spending is counted by
/// the caller (issues may run in parallel) and passed in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Budget {
    /// `budget.per_issue_usd`.
    pub per_issue: Option<f64>,
    /// `budget.per_command_usd` (or `--max-cost`, whichever is lower).
    pub per_command: Option<f64>,
    /// Spent by this command.
    pub command_spent: f64,
    /// Worst cases of calls in flight.
    pub reserved: f64,
}

impl Budget {
    /// Limits from config and the flag.
    pub fn new(per_issue: f64, per_command: f64, max_cost: Option<f64>) -> Self {
        let per_command = match max_cost {
            Some(m) => m.min(per_command),
            None => per_command,
        };
        Self {
            per_issue: Some(per_issue),
            per_command: Some(per_command),
            ..Default::default()
        }
    }

    /// Refuse a call whose worst case would pass a limit; otherwise reserve it.
    pub fn reserve(&mut self, worst_case: f64, issue_spent: f64) -> Result<(), ModelError> {
        if let Some(limit) = self.per_command
            && self.command_spent + self.reserved + worst_case > limit
        {
            return Err(ModelError::Budget(format!(
                "stopped before a model call that could cost up to ${worst_case:.4}: this command has spent ${:.4} of its ${limit:.4} budget\n  fix: raise budget.per_command_usd or --max-cost",
                self.command_spent
            )));
        }
        if let Some(limit) = self.per_issue
            && issue_spent + worst_case > limit
        {
            return Err(ModelError::Budget(format!(
                "stopped before a model call that could cost up to ${worst_case:.4}: this issue has spent ${issue_spent:.4} of its ${limit:.4} budget\n  fix: raise budget.per_issue_usd"
            )));
        }
        self.reserved += worst_case;
        Ok(())
    }

    /// Settle a reserved call with what it really cost (0 when it failed).
    pub fn settle(&mut self, worst_case: f64, actual: f64) {
        self.reserved = (self.reserved - worst_case).max(0.0);
        self.command_spent += actual;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_and_budget() {
        let p = builtin_price("anthropic.claude-3-5-sonnet-20241022-v2:0").unwrap();
        assert_eq!((p.input_per_mtok, p.output_per_mtok), (3.0, 15.0));
        assert_eq!(
            builtin_price("gpt-4o-mini-2024").unwrap().input_per_mtok,
            0.15
        );
        assert!(builtin_price("qwen2.5-coder:7b").is_none());
        assert!(
            (cost(
                &p,
                &Usage {
                    input_tokens: 1_000_000,
                    output_tokens: 100_000,
                    ..Default::default()
                }
            ) - 4.5)
                .abs()
                < 1e-9
        );
        let mut b = Budget::new(1.0, 10.0, Some(0.5));
        assert!(b.reserve(0.4, 0.0).is_ok());
        b.settle(0.4, 0.3);
        assert!(
            b.reserve(0.3, 0.0).is_err(),
            "0.3 spent + 0.3 worst case > 0.5"
        );
        let e = b.reserve(0.25, 0.0).unwrap_err().to_string();
        assert!(e.contains("spent $0.3000 of its $0.5000 budget"), "{e}");
        assert!(
            b.reserve(0.1, 0.95)
                .unwrap_err()
                .to_string()
                .contains("this issue has spent $0.9500")
        );
    }
}
