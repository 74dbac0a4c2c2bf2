//! `autotriage runs …`

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::RunsCommand;

/// Run a `runs` subcommand.
pub fn run(cmd: RunsCommand, ctx: &Ctx) -> Result<()> {
    let store = ctx.run_store()?;
    match cmd {
        RunsCommand::List(args) => {
            let runs: Vec<_> = store.list()?.into_iter().take(args.limit).collect();
            if ctx.out.json {
                ctx.out
                    .json(&json!({"store": store.location(), "runs": runs}));
                return Ok(());
            }
            if runs.is_empty() {
                ctx.out.info(&format!("no runs in {}", store.location()));
            }
            for r in &runs {
                let stages: Vec<String> = r
                    .stages
                    .iter()
                    .map(|(name, s)| {
                        format!(
                            "{name}:{}",
                            serde_json::to_value(s.status)
                                .ok()
                                .and_then(|v| v.as_str().map(String::from))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                ctx.out.line(&format!(
                    "{}  {:<9} {:<24} {}",
                    r.id,
                    r.command,
                    r.reference,
                    stages.join(" ")
                ));
            }
            Ok(())
        }
        RunsCommand::Show(args) => {
            let detail = store.show(&args.run)?;
            // Model spend, from usage.json when the run has one.
            let usage: Option<serde_json::Value> = detail
                .files
                .iter()
                .any(|(n, _)| n == "usage.json")
                .then(|| store.read_file(&detail.meta.id, "usage.json").ok())
                .flatten()
                .and_then(|t| serde_json::from_str(&t).ok());
            let content = match &args.file {
                Some(name) => Some(store.read_file(&detail.meta.id, name)?),
                None => None,
            };
            if ctx.out.json {
                let files: Vec<_> = detail
                    .files
                    .iter()
                    .map(|(n, s)| json!({"name": n, "bytes": s}))
                    .collect();
                ctx.out.json(&json!({"run": detail.meta, "dir": store.root.join(&detail.meta.id).display().to_string(), "files": files, "usage": usage.as_ref().map(|u| &u["total"]), "content": content}));
                return Ok(());
            }
            let m = &detail.meta;
            ctx.out.line(&ctx.out.bold(&m.id));
            ctx.out.line(&format!("issue:   {}", m.reference));
            ctx.out.line(&format!("command: {}", m.command));
            ctx.out.line(&format!("created: {}", m.created_at));
            if let Some(c) = &m.base_commit {
                ctx.out.line(&format!("base:    {c}"));
            }
            ctx.out.line(&format!(
                "folder:  {}",
                match &store.remote {
                    Some(r) => format!("{}/{}", r.location(), m.id),
                    None => store.root.join(&m.id).display().to_string(),
                }
            ));
            ctx.out.line("stages:");
            for (name, s) in &m.stages {
                let status = serde_json::to_value(s.status)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                let err = s
                    .error
                    .as_deref()
                    .map(|e| format!(" — {e}"))
                    .unwrap_or_default();
                ctx.out.line(&format!("  {name:<10} {status}{err}"));
            }
            if let Some(total) = usage.as_ref().map(|u| &u["total"]) {
                ctx.out.line(&format!(
                    "spend:   ${:.4} ({} tokens in, {} out, {} model calls)",
                    // `+ 0.0` turns a -0.0 sum into 0.0.
                    total["cost_usd"].as_f64().unwrap_or(0.0) + 0.0,
                    total["input_tokens"],
                    total["output_tokens"],
                    usage
                        .as_ref()
                        .and_then(|u| u["calls"].as_array())
                        .map_or(0, Vec::len)
                ));
            }
            ctx.out.line("files:");
            for (name, size) in &detail.files {
                ctx.out.line(&format!("  {name:<24} {size} bytes"));
            }
            if let Some(text) = content {
                ctx.out.line("");
                ctx.out.line(text.trim_end());
            }
            Ok(())
        }
        RunsCommand::Prune(args) => {
            let removed = store.prune(args.older_than, ctx.global.dry_run)?;
            // Test worktrees left by a killed run: those of the pruned runs, and any
            // as old as the limit.
            let worktrees = if ctx.global.dry_run {
                Vec::new()
            } else {
                // Never the worktrees of a run in progress (its issue lock is held).
                let busy: Vec<String> = store
                    .list()?
                    .into_iter()
                    .filter(|m| {
                        matches!(
                            store.reopen(&m.id),
                            Err(crate::runs::RunStoreError::Busy { .. })
                        )
                    })
                    .map(|m| m.id)
                    .collect();
                crate::verify::worktree::prune(
                    &super::worktrees_dir(ctx),
                    &removed,
                    &busy,
                    args.older_than,
                )
            };
            if ctx.out.json {
                ctx.out.json(&json!({"removed": removed, "worktrees_removed": worktrees.len(), "dry_run": ctx.global.dry_run}));
                return Ok(());
            }
            if !worktrees.is_empty() {
                ctx.out.info(&format!(
                    "removed {} leftover test worktree(s)",
                    worktrees.len()
                ));
            }
            let verb = if ctx.global.dry_run {
                "would remove"
            } else {
                "removed"
            };
            for id in &removed {
                ctx.out.line(&format!("{verb} {id}"));
            }
            ctx.out.info(&format!(
                "{verb} {} run(s) older than {} day(s)",
                removed.len(),
                args.older_than
            ));
            Ok(())
        }
    }
}
