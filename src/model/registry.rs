//! Providers as data: a `models` entry, a built-in entry, or `provider:model_id`
//! becomes a [`Model`], with its price.

use std::sync::Arc;
use std::time::Duration;

use super::anthropic::Anthropic;
use super::openai::OpenAi;
use super::replay::Replay;
use super::usage::builtin_price;
use super::{Model, ModelError};
use crate::config::{Config, ModelEntry, Price, Provider};

/// Built-in entries: name, provider, model id, base URL.
pub const BUILTINS: &[(&str, Provider, &str, Option<&str>)] = &[
    (
        "claude",
        Provider::Anthropic,
        "claude-3-5-sonnet-latest",
        None,
    ),
    (
        "claude-bedrock",
        Provider::Bedrock,
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
        None,
    ),
    (
        "claude-haiku",
        Provider::Anthropic,
        "claude-3-5-haiku-latest",
        None,
    ),
    ("gpt-4o", Provider::Openai, "gpt-4o", None),
    ("gpt-4o-mini", Provider::Openai, "gpt-4o-mini", None),
    (
        "ollama",
        Provider::Openai,
        "qwen2.5-coder:7b",
        Some("http://localhost:11434/v1"),
    ),
];

/// A resolved model with what it costs.
#[derive(Clone)]
pub struct ResolvedModel {
    /// The config entry name (or the shorthand).
    pub name: String,
    /// The client.
    pub model: Arc<dyn Model>,
    /// Its price (zero when unknown: local servers).
    pub price: Price,
}

impl std::fmt::Debug for ResolvedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedModel")
            .field("name", &self.name)
            .field("model", &self.model.id())
            .finish()
    }
}

/// The entry a name refers to: `models.NAME`, a built-in, or `provider:model_id`.
pub fn entry(config: &Config, name: &str) -> Result<ModelEntry, ModelError> {
    if let Some(e) = config.models.get(name) {
        return Ok(e.clone());
    }
    if let Some((_, provider, id, base)) = BUILTINS.iter().find(|(n, ..)| *n == name) {
        return Ok(ModelEntry {
            provider: *provider,
            model_id: (*id).into(),
            region: None,
            endpoint_url: None,
            base_url: base.map(String::from),
            api_key_env: None,
            price: None,
            profile: None,
            stream: None,
        });
    }
    if let Some((provider, id)) = name.split_once(':') {
        let provider = match provider {
            "anthropic" => Provider::Anthropic,
            "openai" => Provider::Openai,
            "bedrock" => Provider::Bedrock,
            "replay" => Provider::Replay,
            other => {
                return Err(ModelError::Config(format!(
                    "unknown provider {other:?} in --model {name}\n  fix: use anthropic:, openai:, bedrock: or replay:"
                )));
            }
        };
        return Ok(ModelEntry {
            provider,
            model_id: id.into(),
            region: None,
            endpoint_url: None,
            base_url: None,
            api_key_env: None,
            price: None,
            profile: None,
            stream: None,
        });
    }
    let mut known: Vec<String> = config.models.keys().cloned().collect();
    known.extend(BUILTINS.iter().map(|(n, ..)| (*n).to_string()));
    Err(ModelError::Config(format!(
        "unknown model {name:?}\n  fix: pick one of [{}], define models.{name} in autotriage.yaml, or write provider:model_id",
        known.join(", ")
    )))
}

/// Build the client for an entry.
pub fn build(name: &str, e: &ModelEntry, timeout: Duration) -> Result<ResolvedModel, ModelError> {
    // Budgets need a price: paid endpoints without one are refused, local servers
    // and cassettes cost nothing.
    let base = e.endpoint_url.as_deref().or(e.base_url.as_deref());
    let local = match e.provider {
        Provider::Replay => true,
        Provider::Openai => base.is_some_and(|b| !b.contains("api.openai.com")),
        _ => false,
    };
    let price = match e.price.clone().or_else(|| builtin_price(&e.model_id)) {
        Some(p) => p,
        None if local => Price {
            input_per_mtok: 0.0,
            output_per_mtok: 0.0,
            cache_write_per_mtok: None,
            cache_read_per_mtok: None,
        },
        None => {
            return Err(ModelError::Config(format!(
                "no price is known for {} ({}), so budgets cannot be enforced\n  fix: set models.{name}.price: {{input_per_mtok: …, output_per_mtok: …}} (USD per million tokens)",
                e.model_id,
                match e.provider {
                    Provider::Anthropic => "anthropic",
                    Provider::Openai => "openai",
                    Provider::Bedrock => "bedrock",
                    Provider::Replay => "replay",
                }
            )));
        }
    };
    let key = |default_var: &str,
               provider: &str,
               required: bool|
     -> Result<(Option<String>, String), ModelError> {
        let var = e
            .api_key_env
            .clone()
            .unwrap_or_else(|| default_var.to_string());
        match std::env::var(&var).ok().filter(|v| !v.is_empty()) {
            Some(v) => Ok((Some(v), var)),
            None if !required => Ok((None, var)),
            None => Err(ModelError::MissingKey {
                provider: provider.into(),
                entry: name.into(),
                var,
            }),
        }
    };
    let model: Arc<dyn Model> = match e.provider {
        Provider::Anthropic => {
            let (key, var) = key("ANTHROPIC_API_KEY", "anthropic", true)?;
            let base = e
                .endpoint_url
                .as_deref()
                .or(e.base_url.as_deref())
                .unwrap_or("https://api.anthropic.com");
            Arc::new(Anthropic::new(
                base,
                &e.model_id,
                key.unwrap_or_default(),
                &var,
                timeout,
            )?)
        }
        Provider::Openai => {
            let base = e
                .endpoint_url
                .as_deref()
                .or(e.base_url.as_deref())
                .unwrap_or("https://api.openai.com/v1");
            // Local servers need no key; api.openai.com does.
            let required = base.contains("api.openai.com");
            let (key, var) = key("OPENAI_API_KEY", "openai", required)?;
            Arc::new(OpenAi::new(
                base,
                &e.model_id,
                key,
                Some(&var),
                timeout,
                e.stream.unwrap_or(false),
            )?)
        }
        Provider::Replay => Arc::new(Replay::open(std::path::Path::new(&e.model_id))?),
        Provider::Bedrock => Arc::new(super::bedrock::Bedrock::new(
            &e.model_id,
            e.region.as_deref(),
            e.profile.as_deref(),
            e.endpoint_url.as_deref().or(e.base_url.as_deref()),
            e.stream.unwrap_or(true),
            timeout,
        )?),
    };
    Ok(ResolvedModel {
        name: name.into(),
        model,
        price,
    })
}

/// The configured model, if any (`model`, `--model`, `AUTOTRIAGE_MODEL`).
pub fn configured(config: &Config, timeout: Duration) -> Result<Option<ResolvedModel>, ModelError> {
    match &config.model {
        None => Ok(None),
        Some(name) => {
            let e = entry(config, name)?;
            build(name, &e, timeout).map(Some)
        }
    }
}
