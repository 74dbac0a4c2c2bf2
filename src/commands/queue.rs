//! `autotriage queue list|show|retry|drop`: the jobs of `serve`, dead letters included.

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::QueueCommand;
use crate::serve::queue::{Job, JobState, Queue};

/// Run `queue …`.
pub fn run(cmd: QueueCommand, ctx: &Ctx) -> Result<()> {
    if ctx.config().queue.backend == crate::config::QueueBackend::Sqs {
        return dead_letters(cmd, ctx);
    }
    let number = |id: &str| -> Result<i64> {
        id.parse().map_err(|_| {
            crate::error::CommandError::usage(format!(
                "{id:?} is not a job number\n  fix: `autotriage queue list` shows the jobs and their numbers"
            ))
            .into()
        })
    };
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
            let job = queue.show(number(&args.id)?)?;
            show(ctx, &job);
            Ok(())
        }
        QueueCommand::Retry(args) => {
            let job = queue.retry(number(&args.id)?)?;
            if ctx.out.json {
                ctx.out.json(&job);
            } else {
                ctx.out.line(&format!("queued again: {}", line(&job)));
            }
            Ok(())
        }
        QueueCommand::Drop(args) => {
            let job = queue.drop_job(number(&args.id)?)?;
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

/// `queue …` with the SQS backend: the dead-letter queue's messages.
fn dead_letters(cmd: QueueCommand, ctx: &Ctx) -> Result<()> {
    let q = &ctx.config().queue;
    let (Some(url), Some(dead)) = (&q.url, &q.dead_letter_url) else {
        return Err(crate::error::CommandError::usage(
            "with queue.backend: sqs, queue commands read the dead-letter queue, and queue.url or queue.dead_letter_url is unset\n  fix: set both (the stack's QueueUrl and DeadLetterQueueUrl outputs)",
        )
        .into());
    };
    let settings = crate::serve::sqs::SqsSettings {
        url: url.clone(),
        region: q.region.clone(),
        endpoint_url: q.endpoint_url.clone(),
    };
    let letters = crate::serve::sqs::DeadLetters::connect(&settings, dead)
        .map_err(crate::error::CommandError::failure)?;
    let said = |verb: &str, d: &crate::serve::sqs::DeadLetter| {
        format!(
            "{verb}{} {} (received {} times)",
            d.id, d.key, d.receive_count
        )
    };
    let fail = |e: String| -> anyhow::Error {
        if e.starts_with("no dead letter") {
            crate::error::CommandError::usage(e).into()
        } else {
            crate::error::CommandError::failure(e).into()
        }
    };
    match cmd {
        QueueCommand::List(args) => {
            let all = letters.list(args.limit).map_err(fail)?;
            if ctx.out.json {
                ctx.out.json(&json!({"queue": dead, "dead_letters": all}));
                return Ok(());
            }
            if all.is_empty() {
                ctx.out.line(&format!("no dead letters in {dead}"));
            }
            for d in &all {
                ctx.out.line(&said("", d));
            }
        }
        QueueCommand::Show(args) => {
            let d = letters.show(&args.id).map_err(fail)?;
            if ctx.out.json {
                ctx.out.json(&d);
            } else {
                ctx.out.line(&said("", &d));
                if let Some(m) = &d.message {
                    ctx.out
                        .line(&format!("  delivery {}, job {:?}", m.delivery, m.spec));
                }
            }
        }
        QueueCommand::Retry(args) => {
            let d = letters.retry(&args.id).map_err(fail)?;
            if ctx.out.json {
                ctx.out.json(&json!({"retried": d}));
            } else {
                ctx.out.line(&said("queued again: ", &d));
            }
        }
        QueueCommand::Drop(args) => {
            let d = letters.drop_letter(&args.id).map_err(fail)?;
            if ctx.out.json {
                ctx.out.json(&json!({"dropped": d}));
            } else {
                ctx.out.line(&said("dropped: ", &d));
            }
        }
    }
    Ok(())
}
