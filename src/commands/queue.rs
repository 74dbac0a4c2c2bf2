//! `autotriage queue list|show|retry|drop`: the jobs of `serve`, dead letters included.

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::QueueCommand;
use crate::serve::queue::{Job, JobState, Queue};

/// Run `queue …`.
pub fn run(cmd: QueueCommand, ctx: &Ctx) -> Result<()> {
    let path = ctx.queue_path();
    let mut queue = Queue::open(&path)?;
    match cmd {
        QueueCommand::List(args) => {
            let state = args.state.as_deref().map(|s| match s {
                "running" => JobState::Running,
                "done" => JobState::Done,
                "dead" => JobState::Dead,
                _ => JobState::Queued,
            });
            let jobs = queue.list(state, args.limit)?;
            if ctx.out.json {
                ctx.out
                    .json(&json!({"queue": path.display().to_string(), "jobs": jobs}));
                return Ok(());
            }
            if jobs.is_empty() {
                ctx.out.line(&format!("no jobs in {}", path.display()));
            }
            for j in &jobs {
                ctx.out.line(&line(j));
            }
            Ok(())
        }
        QueueCommand::Show(args) => {
            let job = queue.show(args.id)?;
            show(ctx, &job);
            Ok(())
        }
        QueueCommand::Retry(args) => {
            let job = queue.retry(args.id)?;
            if ctx.out.json {
                ctx.out.json(&job);
            } else {
                ctx.out.line(&format!("queued again: {}", line(&job)));
            }
            Ok(())
        }
        QueueCommand::Drop(args) => {
            let job = queue.drop_job(args.id)?;
            if ctx.out.json {
                ctx.out.json(&json!({"dropped": job}));
            } else {
                ctx.out.line(&format!("dropped: {}", line(&job)));
            }
            Ok(())
        }
    }
}

fn line(j: &Job) -> String {
    format!(
        "{:>5}  {:<8} {:<10} {:<24} attempts {}{}",
        j.id,
        serde_json::to_value(j.state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        j.spec.kind(),
        j.key,
        j.attempts,
        j.last_error
            .as_deref()
            .map(|e| format!("  last error: {}", e.lines().next().unwrap_or("")))
            .unwrap_or_default()
    )
}

fn show(ctx: &Ctx, job: &Job) {
    if ctx.out.json {
        ctx.out.json(job);
        return;
    }
    ctx.out.line(&line(job));
    ctx.out.line(&format!("  delivery: {}", job.delivery));
    ctx.out.line(&format!(
        "  spec: {}",
        serde_json::to_string(&job.spec).unwrap_or_default()
    ));
    if let Some(e) = &job.last_error {
        ctx.out.line(&format!("  last error: {e}"));
    }
}
