//! `autotriage lambda webhook|worker`: the service on AWS Lambda, through the Lambda
//! runtime client (`lambda_runtime`).
//!
//! - `webhook`: an API Gateway HTTP API event → the same signature check and routing as
//!   `serve` → one SQS FIFO message per job → 202 (well within GitHub's 10 s).
//! - `worker`: an SQS batch → each job run by the service's executor; a fix is checked
//!   here (trust, a writer's grant) and started as a CodeBuild build of
//!   `lambda.fix_project`, since a fix needs git, toolchains and a sandbox. Only the
//!   messages that failed are reported back, so only they return to the queue.

use std::sync::Arc;

use anyhow::Result;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

use super::Ctx;
use super::service::{Coalescing, Service, json_log};
use crate::cli::LambdaCommand;
use crate::config::QueueBackend;
use crate::error::CommandError;
use crate::serve::queue::Job;
use crate::serve::route::RouteSettings;
use crate::serve::sqs::{Message, SqsQueue, SqsSettings};
use crate::serve::worker::{Executor, JobDone};

/// Run a Lambda function's loop until the runtime stops it.
pub fn run(cmd: LambdaCommand, ctx: &Ctx) -> Result<()> {
    // The runtime client panics without these; say what is wrong instead.
    for var in [
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
    ] {
        if std::env::var(var).map_or(true, |v| v.is_empty()) {
            return Err(CommandError::usage(format!(
                "autotriage lambda runs inside AWS Lambda, and ${var} is not set\n  fix: deploy it with deploy/aws/template.yaml (the provided.al2023 runtime sets it); on one machine use `autotriage serve`"
            ))
            .into());
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cmd {
        LambdaCommand::Webhook => runtime.block_on(webhook(ctx)),
        LambdaCommand::Worker => runtime.block_on(worker(ctx)),
    }
}

fn sqs_settings(ctx: &Ctx) -> Result<SqsSettings> {
    let q = &ctx.config().queue;
    match (&q.backend, &q.url) {
        (QueueBackend::Sqs, Some(url)) => Ok(SqsSettings {
            url: url.clone(),
            region: q.region.clone(),
            endpoint_url: q.endpoint_url.clone(),
        }),
        _ => Err(CommandError::usage(
            "the Lambda functions need queue.backend: sqs and queue.url (the FIFO queue)\n  fix: set them in the config (deploy/aws/template.yaml passes the queue's URL)",
        )
        .into()),
    }
}

async fn webhook(ctx: &Ctx) -> Result<()> {
    let cfg = ctx.config();
    let secret = std::env::var(&cfg.serve.webhook_secret_env)
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            CommandError::usage(format!(
                "the webhook function needs the secret in ${}, which is not set\n  fix: set it from Secrets Manager (deploy/aws/template.yaml does)",
                cfg.serve.webhook_secret_env
            ))
        })?;
    if cfg.serve.repos.is_empty() {
        return Err(CommandError::usage(
            "serve.repos is empty, so the webhook would act on no repository\n  fix: set serve.repos",
        )
        .into());
    }
    let settings = RouteSettings::new(
        &cfg.serve.repos,
        &cfg.trust.trigger_label,
        cfg.github.bot_login.clone(),
    )
    .map_err(|e| CommandError::usage(format!("{e}\n  fix: correct serve.repos")))?;
    let queue = SqsQueue::connect(&sqs_settings(ctx)?).await;
    let log = json_log(ctx.redactor.clone());
    let (secret, settings, queue) = (&secret, &settings, &queue);
    let log = &log;
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move {
        let out =
            crate::serve::apigw::handle(&ev.payload, secret.as_bytes(), settings, queue, log).await;
        Ok::<Value, lambda_runtime::Error>(out)
    }))
    .await
    .map_err(|e| CommandError::failure(format!("the Lambda runtime stopped: {e}")).into())
}

async fn worker(ctx: &Ctx) -> Result<()> {
    let cfg = ctx.config();
    let app = crate::forge::github_app::AppAuth::from_config(cfg)?;
    let bot = match (&app, &cfg.github.bot_login) {
        (Some(a), _) => a.bot_login()?,
        (None, Some(login)) => login.clone(),
        (None, None) => {
            return Err(CommandError::usage(
                "the worker needs to know who it acts as\n  fix: configure the GitHub App (github.app_id) or set github.bot_login",
            )
            .into());
        }
    };
    let log = json_log(ctx.redactor.clone());
    let codebuild = match &cfg.lambda.fix_project {
        Some(p) => Some((p.clone(), codebuild_client(ctx).await)),
        None => None,
    };
    let handle = tokio::runtime::Handle::current();
    let starter_log = log.clone();
    let start_fix = move |issue: &crate::issue::Issue,
                          granted: Option<&super::service::Granted>|
          -> Result<JobDone> {
        let Some((project, client)) = &codebuild else {
            return Err(CommandError::usage(
                "a fix job reached the worker, and lambda.fix_project is unset\n  fix: set lambda.fix_project to the CodeBuild project that runs fixes",
            )
            .into());
        };
        let id = handle.block_on(start_build(client, project, issue, granted))?;
        starter_log(json!({"msg": "fix started", "issue": issue.reference(), "build": id}));
        Ok(JobDone {
            summary: format!("{}: fix started on CodeBuild ({id})", issue.reference()),
            spent_usd: 0.0,
        })
    };
    let executor =
        Service::new(ctx, bot, app, None, log.clone()).fix_elsewhere(Box::new(start_fix));
    let (executor, log) = (&executor, &log);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move {
        // Jobs block (git, the memory's own runtime): run them off the async threads.
        let out = std::thread::scope(|s| {
            s.spawn(|| handle_batch(&ev.payload, executor, log))
                .join()
                // A panic: every record goes back, none is lost.
                .unwrap_or_else(|_| {
                    let ids: Vec<Value> = ev.payload["Records"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .map(|x| json!({"itemIdentifier": x["messageId"]}))
                                .collect()
                        })
                        .unwrap_or_default();
                    json!({"batchItemFailures": ids})
                })
        });
        Ok::<Value, lambda_runtime::Error>(out)
    }))
    .await
    .map_err(|e| CommandError::failure(format!("the Lambda runtime stopped: {e}")).into())
}

/// A log line that is also a CloudWatch embedded-metric-format record: `metrics`
/// (name, value, unit) in the `autotriage` namespace, by `Function`.
fn emf(mut line: Value, metrics: &[(&str, f64, &str)]) -> Value {
    let defs: Vec<Value> = metrics
        .iter()
        .map(|(n, _, u)| json!({"Name": n, "Unit": u}))
        .collect();
    if let Some(m) = line.as_object_mut() {
        m.insert(
            "_aws".into(),
            json!({"Timestamp": chrono::Utc::now().timestamp_millis(),
                   "CloudWatchMetrics": [{"Namespace": "autotriage", "Dimensions": [["Function"]],
                                          "Metrics": defs}]}),
        );
        m.insert("Function".into(), json!("worker"));
        for (n, v, _) in metrics {
            m.insert((*n).into(), json!(v));
        }
    }
    line
}

/// Run each record's job; the ids of the records that failed.
fn handle_batch(
    ev: &Value,
    executor: &Service<'_>,
    log: &Arc<dyn Fn(Value) + Send + Sync>,
) -> Value {
    let mut failures = Vec::new();
    let empty = Vec::new();
    for rec in ev["Records"].as_array().unwrap_or(&empty) {
        let id = rec["messageId"].as_str().unwrap_or("").to_string();
        let message: Message = match rec["body"]
            .as_str()
            .ok_or_else(|| "no body".to_string())
            .and_then(|b| serde_json::from_str(b).map_err(|e| e.to_string()))
        {
            Ok(m) => m,
            Err(e) => {
                log(json!({"msg": "bad message", "message_id": id, "error": e}));
                failures.push(json!({"itemIdentifier": id}));
                continue;
            }
        };
        let now = chrono::Utc::now().timestamp();
        let job = Job {
            id: 0,
            delivery: message.delivery.clone(),
            key: message.spec.key(),
            spec: message.spec,
            state: crate::serve::queue::JobState::Running,
            attempts: rec["attributes"]["ApproximateReceiveCount"]
                .as_str()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
            last_error: None,
            created_at: message.queued_at,
            not_before: now,
            sequence: rec["attributes"]["SequenceNumber"]
                .as_str()
                .map(str::to_string),
        };
        let started = std::time::Instant::now();
        let result = Coalescing { service: executor }.execute(&job);
        match result {
            Ok(done) => log(emf(
                json!({"msg": "job done", "key": job.key, "summary": done.summary,
                       "spent_usd": done.spent_usd}),
                &[
                    ("SpendUSD", done.spent_usd, "None"),
                    ("JobSeconds", started.elapsed().as_secs_f64(), "Seconds"),
                ],
            )),
            Err(f) => {
                log(
                    json!({"msg": "job failed", "key": job.key, "error": f.message,
                           "permanent": f.permanent}),
                );
                failures.push(json!({"itemIdentifier": id}));
            }
        }
    }
    json!({"batchItemFailures": failures})
}

async fn codebuild_client(ctx: &Ctx) -> aws_sdk_codebuild::Client {
    let t = &ctx.config().test;
    aws_sdk_codebuild::Client::new(
        &crate::aws::load_config_async(t.region.as_deref(), t.endpoint_url.as_deref()).await,
    )
}

/// The buildspec of a fix build: install this version's release binary (pinned, so a
/// build never runs whatever release is newest), then `fix` with the team
/// backends the project's environment configures. Secrets (the GitHub token, the model
/// key) are the project's Secrets Manager variables, never part of the request.
pub const FIX_BUILDSPEC: &str = concat!(
    "version: 0.2
phases:
  install:
    commands:
      - curl -fsSL https://github.com/autotriage/autotriage/releases/download/v",
    env!("CARGO_PKG_VERSION"),
    "/install.sh | sh -s -- --version ",
    env!("CARGO_PKG_VERSION"),
    " --to /usr/local/bin
  build:
    commands:
      - autotriage fix \"$AUTOTRIAGE_ISSUE\" --yes $AUTOTRIAGE_FIX_FLAGS
"
);

/// Start the fix build of `issue`; the build's id.
async fn start_build(
    client: &aws_sdk_codebuild::Client,
    project: &str,
    issue: &crate::issue::Issue,
    granted: Option<&super::service::Granted>,
) -> Result<String> {
    use aws_sdk_codebuild::types::{EnvironmentVariable, EnvironmentVariableType};
    let var = |name: &str, value: &str| {
        EnvironmentVariable::builder()
            .name(name)
            .value(value)
            .r#type(EnvironmentVariableType::Plaintext)
            .build()
    };
    // A writer's command is the trust grant the worker checked; its limits (the issue
    // as of the command, the body they read) go with it and are checked again there.
    let flags = match granted {
        None => String::new(),
        Some(g) => {
            let mut f = "--force".to_string();
            // Only what the grant itself holds: an RFC 3339 time and a hex digest.
            if let Some(at) = g.at.as_deref().filter(|a| {
                a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '.' | '+'))
            }) {
                f.push_str(&format!(" --granted-as-of {at}"));
            }
            if let Some(sha) = g
                .body_sha256
                .as_deref()
                .filter(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
            {
                f.push_str(&format!(" --granted-body-sha256 {sha}"));
            }
            f
        }
    };
    let vars = [
        var("AUTOTRIAGE_ISSUE", &issue.reference()),
        var("AUTOTRIAGE_FIX_FLAGS", &flags),
    ];
    let mut req = client
        .start_build()
        .project_name(project)
        .buildspec_override(FIX_BUILDSPEC);
    for v in vars {
        req = req.environment_variables_override(
            v.map_err(|e| CommandError::failure(format!("CodeBuild variable: {e}")))?,
        );
    }
    let out = req.send().await.map_err(|e| {
        CommandError::failure(format!(
            "CodeBuild StartBuild of {project}: {}",
            aws_sdk_codebuild::error::DisplayErrorContext(&e)
        ))
    })?;
    Ok(out
        .build_value()
        .and_then(|b| b.id())
        .unwrap_or_default()
        .to_string())
}
