//! `autotriage handle-event`: one GitHub Actions event, routed as `serve` routes a
//! webhook delivery and run here; the result in the job summary and step outputs.

use std::io::Write;
use std::sync::Arc;

use anyhow::Result;
use serde_json::{Value, json};

use super::Ctx;
use super::service::{Service, json_log};
use crate::error::CommandError;
use crate::serve::queue::Job;
use crate::serve::route::RouteSettings;
use crate::serve::worker::Executor;

/// `handle-event`: the event GitHub Actions hands a workflow, routed exactly as `serve`
/// routes a delivery (the signature aside: Actions itself is the sender), its jobs run
/// here one after another. The result goes to stdout, the job summary
/// (`$GITHUB_STEP_SUMMARY`) and the step's outputs (`$GITHUB_OUTPUT`).
pub fn handle_event(args: &crate::cli::HandleEventArgs, ctx: &Ctx) -> Result<()> {
    let (Some(event), Some(path)) = (&args.event, &args.event_path) else {
        return Err(CommandError::usage(
            "handle-event reads the event from $GITHUB_EVENT_NAME and $GITHUB_EVENT_PATH, which GitHub Actions sets\n  fix: run it in a workflow step (see examples/autotriage-workflow.yml), or pass --event NAME --event-path FILE",
        )
        .into());
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        CommandError::usage(format!(
            "cannot read the event payload {}: {e}\n  fix: point GITHUB_EVENT_PATH (or --event-path) at the event's JSON",
            path.display()
        ))
    })?;
    let payload: Value = serde_json::from_str(&text).map_err(|e| {
        CommandError::usage(format!(
            "the event payload {} is not JSON: {e}\n  fix: point GITHUB_EVENT_PATH (or --event-path) at the event's JSON",
            path.display()
        ))
    })?;
    let cfg = ctx.config();
    // In a workflow the repository is the one the workflow belongs to.
    let repos: Vec<String> = if cfg.serve.repos.is_empty() {
        std::env::var("GITHUB_REPOSITORY")
            .ok()
            .filter(|r| !r.is_empty())
            .or_else(|| {
                payload["repository"]["full_name"]
                    .as_str()
                    .map(String::from)
            })
            .into_iter()
            .collect()
    } else {
        cfg.serve.repos.clone()
    };
    // The token of a workflow belongs to `github-actions[bot]` and cannot read /user.
    let app = crate::forge::github_app::AppAuth::from_config(cfg)?;
    let bot = match (&app, &cfg.github.bot_login) {
        (Some(a), _) => a.bot_login()?,
        (None, Some(login)) => login.clone(),
        (None, None) => "github-actions[bot]".to_string(),
    };
    let route = RouteSettings::new(&repos, &cfg.trust.trigger_label, Some(bot.clone()))
        .map_err(|e| CommandError::usage(format!("{e}\n  fix: correct serve.repos")))?;
    let log: Arc<dyn Fn(Value) + Send + Sync> = json_log(ctx.redactor.clone());
    let specs = match crate::serve::route::route(event, &payload, &route) {
        crate::serve::route::Routed::Ping => Vec::new(),
        crate::serve::route::Routed::Ignored(why) => {
            log(json!({"msg": "ignored", "event": event, "why": why}));
            let line = format!("{event}: nothing to do ({why})");
            report(ctx, &[(line, None)], 0.0)?;
            return Ok(());
        }
        crate::serve::route::Routed::Jobs(specs) => specs,
    };
    let token_as = match (&app, &cfg.github.bot_login, std::env::var("GITHUB_TOKEN")) {
        (None, None, Ok(token)) if !token.is_empty() => Some((token, bot.clone())),
        _ => None,
    };
    let executor = Service::new(ctx, bot, app, token_as, log);
    let now = chrono::Utc::now().timestamp();
    let delivery = std::env::var("GITHUB_RUN_ID").unwrap_or_else(|_| "local".into());
    let mut lines = Vec::new();
    let mut spent = 0.0;
    let mut failed = None;
    for spec in specs {
        let job = Job {
            id: 0,
            delivery: delivery.clone(),
            key: spec.key(),
            spec,
            state: crate::serve::queue::JobState::Running,
            attempts: 1,
            last_error: None,
            created_at: now,
            not_before: now,
            sequence: None,
        };
        match executor.execute(&job) {
            Ok(done) => {
                spent += done.spent_usd;
                lines.push((done.summary, None));
            }
            Err(f) => {
                lines.push((format!("{}: failed", job.key), Some(f.message.clone())));
                failed.get_or_insert(f.message);
            }
        }
    }
    report(ctx, &lines, spent)?;
    match failed {
        None => Ok(()),
        Some(m) => Err(CommandError::failure(m).into()),
    }
}

/// What `handle-event` did: stdout (or one JSON document), the job summary and the
/// step outputs when Actions provides them.
fn report(ctx: &Ctx, lines: &[(String, Option<String>)], spent: f64) -> Result<()> {
    let server = std::env::var("GITHUB_SERVER_URL").unwrap_or_else(|_| "https://github.com".into());
    let run_link = match (
        std::env::var("GITHUB_REPOSITORY"),
        std::env::var("GITHUB_RUN_ID"),
    ) {
        (Ok(r), Ok(id)) => Some(format!("{server}/{r}/actions/runs/{id}")),
        _ => None,
    };
    if ctx.global.json {
        ctx.out.line(
            &json!({
                "results": lines.iter().map(|(l, e)| json!({"result": l, "error": e})).collect::<Vec<_>>(),
                "spent_usd": spent,
            })
            .to_string(),
        );
    } else {
        for (l, e) in lines {
            ctx.out.line(l);
            if let Some(e) = e {
                ctx.out.line(&format!("  {e}"));
            }
        }
    }
    let mut summary = String::from("### autotriage\n\n| result | |\n|---|---|\n");
    for (l, e) in lines {
        summary.push_str(&format!(
            "| {} | {} |\n",
            l.replace('|', "\\|"),
            e.as_deref()
                .unwrap_or("")
                .replace('|', "\\|")
                .replace('\n', " ")
        ));
    }
    summary.push_str(&format!("\nModel spend: ${spent:.4}"));
    if let Some(link) = &run_link {
        summary.push_str(&format!(
            " · [this run]({link}) (its run folder is the `autotriage-runs` artifact)"
        ));
    }
    summary.push('\n');
    let summary = ctx.redactor.redact(&summary).into_owned();
    let append = |var: &str, text: &str| -> Result<()> {
        if let Ok(p) = std::env::var(var)
            && !p.is_empty()
        {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)?;
            f.write_all(text.as_bytes())?;
        }
        Ok(())
    };
    append("GITHUB_STEP_SUMMARY", &summary)?;
    let first = lines
        .first()
        .map(|(l, _)| l.replace('\n', " "))
        .unwrap_or_default();
    append(
        "GITHUB_OUTPUT",
        &format!(
            "result={}\nspent_usd={spent:.4}\n",
            ctx.redactor.redact(&first)
        ),
    )?;
    Ok(())
}
