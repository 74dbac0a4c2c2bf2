//! `autotriage config show`

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::ConfigCommand;

/// Run a `config` subcommand.
pub fn run(cmd: ConfigCommand, ctx: &Ctx) -> Result<()> {
    match cmd {
        ConfigCommand::Show => show(ctx),
    }
}

fn show(ctx: &Ctx) -> Result<()> {
    let leaves = crate::config::leaves(&ctx.loaded.tree);
    if ctx.out.json {
        let sources: serde_json::Map<String, serde_json::Value> = leaves
            .iter()
            .map(|(k, _)| {
                (
                    k.clone(),
                    json!(
                        ctx.loaded
                            .sources
                            .get(k)
                            .cloned()
                            .unwrap_or_else(|| "default".into())
                    ),
                )
            })
            .collect();
        ctx.out.json(&json!({
            "config": serde_json::to_value(&ctx.loaded.config)?,
            "sources": sources,
            "repo_file": ctx.loaded.repo_file.as_ref().map(|p| p.display().to_string()),
        }));
        return Ok(());
    }
    let width = (leaves
        .iter()
        .map(|(k, v)| k.len() + render(v).len())
        .max()
        .unwrap_or(0)
        + 2)
    .min(48);
    for (key, value) in &leaves {
        let source = ctx
            .loaded
            .sources
            .get(key)
            .map_or("default", String::as_str);
        let text = format!("{key}: {}", render(value));
        ctx.out.line(&format!(
            "{text:<width$}  {}",
            ctx.out.dim(&format!("# {source}"))
        ));
    }
    Ok(())
}

fn render(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::Null => "~".into(),
        serde_yaml::Value::Mapping(m) if m.is_empty() => "{}".into(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}
