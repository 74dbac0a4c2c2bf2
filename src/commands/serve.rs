//! `autotriage serve`: the webhook endpoint on axum, workers on threads, and the
//! executor that runs each job through the pipeline with this config. Logs are JSON
//! lines on stderr.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use super::Ctx;
use crate::cli::{EngineArg, FixStage, ServeArgs};
use crate::config::ServeApply;
use crate::error::{CommandError, ErrorKind};
use crate::forge::github::GithubForge;
use crate::issue::RepoId;
use crate::memory::sqlite::OpenMode;
use crate::pipeline::fix::{FixJob, FixPlan, PublishTo};
use crate::pipeline::triage::{ApplyTo, decide, github_repo, triage_one};
use crate::pipeline::{Emitter, Event, Sink, What};
use crate::serve::http::{AppState, router};
use crate::serve::metrics::Metrics;
use crate::serve::queue::{Job, Queue};
use crate::serve::route::{JobSpec, RouteSettings};
use crate::serve::worker::{Executor, JobDone, JobFailure, WorkerSettings, work};

/// Run `serve`.
pub fn run(args: &ServeArgs, ctx: &Ctx) -> Result<()> {
    let cfg = &ctx.config().serve;
    let secret = std::env::var(&cfg.webhook_secret_env)
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            CommandError::usage(format!(
                "serve needs the webhook secret in ${}, which is not set\n  fix: export {}=… (the secret set on the GitHub webhook or App), or name another variable in serve.webhook_secret_env",
                cfg.webhook_secret_env, cfg.webhook_secret_env
            ))
        })?;
    if cfg.repos.is_empty() {
        return Err(CommandError::usage(
            "serve.repos is empty, so the service would act on no repository\n  fix: set serve.repos in autotriage.yaml to the repositories it serves (`owner/name`, globs such as `acme/*` allowed)",
        )
        .into());
    }
    // A GitHub App when `github.app_id` is set, else the token's user.
    let app = crate::forge::github_app::AppAuth::from_config(ctx.config())?;
    let bot = match &app {
        Some(a) => a.bot_login()?,
        None => GithubForge::from_config(ctx.config(), Default::default())?.identity()?,
    };
    let route = RouteSettings::new(
        &cfg.repos,
        &ctx.config().trust.trigger_label,
        Some(bot.clone()),
    )
    .map_err(|e| CommandError::usage(format!("{e}\n  fix: correct serve.repos")))?;
    let queue_path = ctx.queue_path();
    let queue = Arc::new(Mutex::new(Queue::open(&queue_path)?));
    let listener = std::net::TcpListener::bind(&args.listen).map_err(|e| {
        CommandError::usage(format!(
            "cannot listen on {}: {e}\n  fix: pass --listen with a free address",
            args.listen
        ))
    })?;
    listener.set_nonblocking(true)?;
    // Bound before the catch-up: GitHub's redeliveries wait in the backlog.
    if let Some(hours) = args.catch_up {
        let Some(app) = &app else {
            return Err(CommandError::usage(
                "--catch-up reads the App webhook's deliveries, and github.app_id is not set\n  fix: configure the GitHub App (github.app_id, github.app_private_key), or drop --catch-up",
            )
            .into());
        };
        let q = queue
            .lock()
            .map_err(|_| CommandError::failure("the queue lock is poisoned"))?;
        let asked = catch_up(app, &q, hours)?;
        drop(q);
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "{}",
            json!({"msg": "catch-up", "hours": hours, "redeliveries_requested": asked,
                   "ts": crate::runs::now_rfc3339()})
        );
    }
    let addr = listener.local_addr()?;
    let redactor = ctx.redactor.clone();
    let log: Arc<dyn Fn(Value) + Send + Sync> = Arc::new(move |mut v: Value| {
        if let Some(m) = v.as_object_mut() {
            m.insert("ts".into(), json!(crate::runs::now_rfc3339()));
        }
        redactor.redact_json(&mut v);
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{v}");
    });
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(AppState {
        secret: secret.into_bytes(),
        queue,
        route,
        coalesce_seconds: cfg.coalesce_seconds,
        metrics: metrics.clone(),
        log: log.clone(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // SIGTERM is caught from before the first line says the service listens.
    let term = {
        let _in_runtime = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()
    };
    let _polling = crate::interrupt::Polling::enter();
    log(
        json!({"msg": "listening", "addr": addr.to_string(), "workers": args.workers,
               "queue": queue_path.display().to_string(), "as": bot}),
    );
    let executor = Service {
        ctx,
        bot,
        app,
        token_as: None,
        clones: Mutex::new(()),
        spend: Mutex::new(()),
        log: log.clone(),
    };
    let settings = WorkerSettings {
        lease_seconds: cfg.lease_seconds.max(1),
        max_attempts: cfg.max_attempts.max(1),
        poll: Duration::from_millis(200),
    };
    let stop = AtomicBool::new(false);
    let owner = format!("{}-{}", hostname(), std::process::id());
    let grace = cfg.shutdown_grace_seconds;
    std::thread::scope(|s| -> Result<()> {
        for i in 0..args.workers.max(1) {
            let (qp, ex, st, stop, m, l) =
                (&queue_path, &executor, &settings, &stop, &metrics, &log);
            let name = format!("{owner}-w{i}");
            s.spawn(move || work(qp, &name, ex, st, stop, m, &**l));
        }
        let served = runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, router(state))
                .with_graceful_shutdown(shutdown_signal(term))
                .await
        });
        stop.store(true, Ordering::SeqCst);
        log(json!({"msg": "stopping", "grace_seconds": grace}));
        // Jobs get the grace period; after it, their leases go back and the process ends.
        let (qp, owner, log2) = (queue_path.clone(), owner.clone(), log.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(grace));
            let released = Queue::open(&qp)
                .and_then(|mut q| {
                    let mut n = 0;
                    for i in 0..64 {
                        n += q.release(&format!("{owner}-w{i}"))?;
                    }
                    Ok(n)
                })
                .unwrap_or(0);
            log2(json!({"msg": "stopped after the grace period", "leases_returned": released}));
            crate::verify::sandbox::kill_all();
            std::process::exit(0);
        });
        served.map_err(anyhow::Error::from)
    })?;
    log(json!({"msg": "stopped"}));
    Ok(())
}

/// SIGTERM, or Ctrl-C (through the interrupt flag).
async fn shutdown_signal(mut term: Option<tokio::signal::unix::Signal>) {
    loop {
        let tick = tokio::time::sleep(Duration::from_millis(100));
        match term.as_mut() {
            Some(t) => {
                tokio::select! {
                    _ = t.recv() => return,
                    _ = tick => {}
                }
            }
            None => tick.await,
        }
        if crate::interrupt::requested() {
            return;
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

/// Pipeline events of a service job: warnings and failures become log lines.
struct LogSink {
    log: Arc<dyn Fn(Value) + Send + Sync>,
}

impl Sink for LogSink {
    fn emit(&self, event: &Event) {
        if matches!(
            event.what,
            What::Warning | What::Error | What::Finished { .. } | What::Published { .. }
        ) {
            (self.log)(serde_json::to_value(event).unwrap_or_default());
        }
    }
}

/// GitHub's failed deliveries of the last `hours` that the queue never received, asked
/// for again (each delivery id once): the catch-up after downtime, since GitHub does
/// not redeliver by itself.
fn catch_up(
    app: &crate::forge::github_app::AppAuth,
    queue: &Queue,
    hours: u64,
) -> Result<Vec<String>> {
    let since = chrono::Utc::now() - chrono::Duration::hours(hours.min(24 * 365) as i64);
    let mut asked: Vec<String> = Vec::new();
    for d in app.deliveries()? {
        let guid = d["guid"].as_str().unwrap_or("").to_string();
        let when = d["delivered_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let ok = d["status_code"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s));
        let Some(id) = d["id"].as_u64() else { continue };
        if guid.is_empty()
            || ok
            || when.is_none_or(|w| w < since)
            || asked.contains(&guid)
            || queue.has_delivery(&guid)?
        {
            continue;
        }
        // One refused redelivery does not stop the others, nor the service.
        if app.redeliver(id).is_ok() {
            asked.push(guid);
        }
    }
    Ok(asked)
}

/// A maintainer's `/autotriage fix`: who, when, and the body they read.
struct Grant<'a> {
    login: &'a str,
    at: Option<&'a str>,
    body_sha256: Option<&'a str>,
}

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
    let redactor = ctx.redactor.clone();
    let log: Arc<dyn Fn(Value) + Send + Sync> = Arc::new(move |mut v: Value| {
        if let Some(m) = v.as_object_mut() {
            m.insert("ts".into(), json!(crate::runs::now_rfc3339()));
        }
        redactor.redact_json(&mut v);
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{v}");
    });
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
    let executor = Service {
        ctx,
        bot,
        app,
        token_as,
        clones: Mutex::new(()),
        spend: Mutex::new(()),
        log,
    };
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

/// Runs the service's jobs with this config.
struct Service<'a> {
    ctx: &'a Ctx,
    bot: String,
    /// The GitHub App, when the service acts as one.
    app: Option<crate::forge::github_app::AppAuth>,
    /// A workflow's token and the login it acts as (`handle-event`): an installation
    /// token cannot ask who it is.
    token_as: Option<(String, String)>,
    /// Held while a checkout is cloned or fetched.
    clones: Mutex<()>,
    /// Held while the day's spend is read and written (workers finish together).
    spend: Mutex<()>,
    log: Arc<dyn Fn(Value) + Send + Sync>,
}

/// A failure a retry may cure (the network, GitHub's 5xx, a model overloaded), or not.
fn failure(e: &anyhow::Error) -> JobFailure {
    let kind = super::error_kind(e);
    JobFailure {
        message: format!("{e:#}"),
        retry_after: None,
        permanent: !matches!(
            kind,
            ErrorKind::Network | ErrorKind::Service | ErrorKind::Runtime | ErrorKind::Partial
        ),
        waits: false,
    }
}

fn repo_id(repo: &str) -> Result<RepoId> {
    github_repo(repo).ok_or_else(|| {
        CommandError::usage(format!("{repo} is not a GitHub repository (owner/name)")).into()
    })
}

fn can_write(permission: &str) -> bool {
    matches!(permission, "admin" | "maintain" | "write")
}

/// The day's key for the spend kept in memory (UTC).
fn spend_key() -> String {
    format!("serve/spend/{}", chrono::Utc::now().format("%Y-%m-%d"))
}

impl Service<'_> {
    /// The forge for `repo`: as the App's installation there, or with the token.
    fn forge(&self, repo: &RepoId) -> Result<GithubForge> {
        self.forge_listing(repo, Default::default())
    }

    fn forge_listing(
        &self,
        repo: &RepoId,
        list: crate::forge::github::ListOptions,
    ) -> Result<GithubForge> {
        Ok(self.deps_for(repo)?.github(list)?)
    }

    /// The pipeline's dependencies, acting as the App's installation on `repo`.
    fn deps_for(&self, repo: &RepoId) -> Result<crate::pipeline::Deps<'_>> {
        let mut deps = self.ctx.deps();
        if let Some(app) = &self.app {
            deps.github_as = Some(crate::pipeline::GithubAs {
                token: app.installation_token(repo)?,
                login: self.bot.clone(),
            });
        } else if let Some((token, login)) = &self.token_as {
            deps.github_as = Some(crate::pipeline::GithubAs {
                token: token.clone(),
                login: login.clone(),
            });
        }
        Ok(deps)
    }

    /// The day's spend so far; a job waits when it is at the budget.
    fn check_budget(&self) -> Result<(), JobFailure> {
        let budget = self.ctx.config().serve.daily_budget_usd;
        let spent = self
            .ctx
            .open_memory(OpenMode::Create)
            .ok()
            .and_then(|m| m.get_kv(&spend_key()).ok().flatten())
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        if spent >= budget {
            let now = chrono::Utc::now();
            let midnight = (now + chrono::Duration::days(1))
                .date_naive()
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc());
            let wait = midnight.map_or(3600, |m| (m - now).num_seconds().max(60) as u64);
            return Err(JobFailure {
                message: format!(
                    "the day's budget is spent (${spent:.4} of serve.daily_budget_usd ${budget:.2}); the job waits until tomorrow (UTC)"
                ),
                retry_after: Some(wait),
                permanent: false,
                waits: true,
            });
        }
        Ok(())
    }

    fn add_spend(&self, usd: f64) {
        if usd <= 0.0 {
            return;
        }
        let _one_at_a_time = self.spend.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(mut m) = self.ctx.open_memory(OpenMode::Create) {
            let key = spend_key();
            let before = m
                .get_kv(&key)
                .ok()
                .flatten()
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0);
            let _ = m.put_kv(&key, &json!(before + usd));
        }
    }

    fn triage(&self, repo: &str, number: u64) -> Result<JobDone> {
        let ctx = self.ctx;
        let cfg = ctx.config();
        let id = repo_id(repo)?;
        let forge = self.forge(&id)?;
        let issue = forge.issue(&id, number)?;
        let mut memory = ctx.open_memory(OpenMode::Create)?;
        self.import_history(&mut *memory, repo, &id)?;
        let (mut engine, _) = crate::pipeline::triage::build_engine(cfg, &mut *memory)?;
        if let Ok(labels) = forge.labels(&id) {
            engine.declare_labels(repo, labels);
        }
        let mode: EngineArg = cfg.triage.engine.into();
        let session = super::model_session(mode, None, ctx)?;
        let d = decide(&engine, session.as_ref(), mode, &issue);
        let spent: f64 = d.calls.iter().map(|c| c.cost_usd).sum();
        let apply = cfg.serve.apply;
        let never = if apply == ServeApply::None {
            Vec::new()
        } else {
            forge.removed_labels(&id, number, &self.bot)?
        };
        let to = ApplyTo {
            forge: &forge,
            dry_run: ctx.global.dry_run,
            force: false,
            create_labels: cfg.github.create_labels,
            labels: matches!(apply, ServeApply::Labels | ServeApply::Both),
            comment: matches!(apply, ServeApply::Comment | ServeApply::Both),
            never,
        };
        let sink = LogSink {
            log: self.log.clone(),
        };
        let emit = Emitter::new(&sink, issue.reference());
        let store = ctx.run_store()?;
        let result = triage_one(
            &emit,
            &store,
            &mut *memory,
            &issue,
            &d,
            (apply != ServeApply::None).then_some(&to),
        );
        self.add_spend(spent);
        let (run_id, t, applied) = result?;
        Ok(JobDone {
            summary: format!(
                "triaged {}: {} {}, labels +[{}] (run {run_id})",
                issue.reference(),
                t.kind.as_deref().unwrap_or("undecided"),
                t.priority,
                applied
                    .map(|a| a.labels_added.join(", "))
                    .unwrap_or_default()
            ),
            spent_usd: spent,
        })
    }

    /// The first time a repository is served, its labelled closed issues (up to 1,000)
    /// go into memory, so triage has a history to learn from.
    fn import_history(
        &self,
        memory: &mut dyn crate::memory::Memory,
        repo: &str,
        id: &RepoId,
    ) -> Result<()> {
        let known = memory.list(&crate::memory::ListFilter {
            repo: Some(repo.to_string()),
            label: None,
            state: None,
            limit: Some(1),
        })?;
        if !known.is_empty() {
            return Ok(());
        }
        let lister = self.forge_listing(
            id,
            crate::forge::github::ListOptions {
                state: Some("closed".into()),
                label: None,
                since: None,
                limit: Some(1000),
            },
        )?;
        let labelled: Vec<crate::issue::Issue> = lister
            .issues(id)?
            .into_iter()
            .filter(|i| !i.labels.is_empty())
            .collect();
        memory.upsert_issues(&labelled, &|| false)?;
        (self.log)(json!({"msg": "history imported", "repo": repo,
                           "labelled_closed_issues": labelled.len()}));
        Ok(())
    }

    fn fix(&self, repo: &str, number: u64, granted_by: Option<&Grant<'_>>) -> Result<JobDone> {
        let ctx = self.ctx;
        let cfg = ctx.config();
        let id = repo_id(repo)?;
        let forge = self.forge(&id)?;
        // A maintainer's `/autotriage fix` is the trust grant, checked again now.
        let force = match granted_by {
            Some(Grant { login, .. }) => {
                let p = forge.permission(&id, login)?;
                if !can_write(&p) {
                    return Ok(JobDone {
                        summary: format!("not fixed: {login} asked, and has {p} permission now"),
                        spent_usd: 0.0,
                    });
                }
                true
            }
            None => false,
        };
        let mut issue = forge.issue(&id, number)?;
        if let Some(g) = granted_by {
            // The grant covers the issue as the maintainer read it: not a body edited
            // since, nor comments written after the command.
            if let Some(want) = g.body_sha256
                && crate::serve::route::body_digest(&issue.body) != want
            {
                return Ok(JobDone {
                    summary: format!(
                        "not fixed: the issue was edited after {} asked; ask again with /autotriage fix",
                        g.login
                    ),
                    spent_usd: 0.0,
                });
            }
            if let Some(at) = g.at {
                issue
                    .comments
                    .retain(|c| c.created_at.as_deref().is_none_or(|t| t <= at));
            }
        }
        let Some(session) = super::model_session(EngineArg::Model, None, ctx)? else {
            return Err(CommandError::usage("a fix needs a model, and none is configured").into());
        };
        // One clone or fetch of the cache at a time: two workers on one repository would
        // otherwise write the same cached clone.
        let (dir, git) = {
            let _one_at_a_time = self.clones.lock().unwrap_or_else(|p| p.into_inner());
            super::checkout(&issue, None, ctx)?
        };
        let mut memory = ctx.open_memory(OpenMode::Create)?;
        let (engine, _) = crate::pipeline::triage::build_engine(cfg, &mut *memory)?;
        drop(memory);
        let settings = crate::locate::LocateSettings::from_config(&cfg.locate)?;
        let guard = crate::repair::PathGuard::new(&cfg.paths.protected)
            .map_err(|e| CommandError::usage(format!("{e}\n  fix: correct paths.protected")))?;
        let plan = FixPlan {
            until: FixStage::Pr,
            rerank: cfg.locate.rerank,
            settings: &settings,
            guard: &guard,
            restart: false,
            dry_run: ctx.global.dry_run,
            force,
        };
        let job = FixJob {
            issue,
            dir,
            repo: std::sync::Mutex::new(git),
            publish_to: PublishTo::Github(id.clone()),
        };
        let sink = LogSink {
            log: self.log.clone(),
        };
        let out = crate::pipeline::fix::run_fix(
            &self.deps_for(&id)?,
            &plan,
            Some(&session),
            &engine,
            &job,
            &sink,
        );
        self.add_spend(out.spent);
        match out.error {
            None => Ok(JobDone {
                summary: format!(
                    "{}: {}{}",
                    out.reference,
                    out.verdict,
                    out.published
                        .map(|p| format!(", published {p}"))
                        .unwrap_or_default()
                ),
                spent_usd: out.spent,
            }),
            // Not eligible, or no candidate proven: an answer, not a failure to retry.
            Some(e) if super::error_kind(&e) == ErrorKind::NotEligible => Ok(JobDone {
                summary: format!("{}: {}: {e:#}", out.reference, out.verdict),
                spent_usd: out.spent,
            }),
            Some(e) => Err(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn command(
        &self,
        repo: &str,
        number: u64,
        command: &str,
        commenter: &str,
        comment_id: u64,
        at: Option<&str>,
        body_sha256: Option<&str>,
    ) -> Result<JobDone> {
        let id = repo_id(repo)?;
        let forge = self.forge(&id)?;
        // The COLLABORATOR association alone is not enough: the permission, read live.
        let p = forge.permission(&id, commenter)?;
        if !can_write(&p) {
            return Ok(JobDone {
                summary: format!(
                    "/autotriage {command} from {commenter} ({p} permission): nothing done"
                ),
                spent_usd: 0.0,
            });
        }
        forge.react(&id, comment_id, "eyes")?;
        match command {
            "fix" => self.fix(
                repo,
                number,
                Some(&Grant {
                    login: commenter,
                    at,
                    body_sha256,
                }),
            ),
            _ => self.triage(repo, number),
        }
    }

    fn correction(
        &self,
        repo: &str,
        number: u64,
        label: &str,
        added: bool,
        actor: &str,
    ) -> Result<JobDone> {
        let mut memory = self.ctx.open_memory(OpenMode::Create)?;
        if memory.latest_triage(repo, number)?.is_none() {
            return Ok(JobDone {
                summary: format!("{repo}#{number}: not triaged by us; nothing to learn"),
                spent_usd: 0.0,
            });
        }
        // The issue as people left it is the labelled history triage learns from.
        let id = repo_id(repo)?;
        let issue = self.forge(&id)?.issue(&id, number)?;
        memory.upsert_issues(std::slice::from_ref(&issue), &|| false)?;
        let key = format!("serve/corrections/{repo}#{number}");
        let mut all = memory
            .get_kv(&key)?
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        all.push(json!({"label": label, "added": added, "by": actor,
                        "at": crate::runs::now_rfc3339()}));
        memory.put_kv(&key, &Value::Array(all))?;
        Ok(JobDone {
            summary: format!(
                "{repo}#{number}: {actor} {} `{label}`; recorded as a correction",
                if added { "added" } else { "removed" }
            ),
            spent_usd: 0.0,
        })
    }

    fn outcome(&self, repo: &str, pull: u64, merged: bool, branch: &str) -> Result<JobDone> {
        let number = branch
            .strip_prefix("autotriage/issue-")
            .and_then(|r| r.split('-').next())
            .and_then(|n| n.parse::<u64>().ok());
        let mut memory = self.ctx.open_memory(OpenMode::Create)?;
        let suffix = format!("/pull/{pull}");
        let record = match number {
            Some(n) => memory
                .fixes(repo, n)?
                .into_iter()
                .find(|f| f.pr_url.as_deref().is_some_and(|u| u.ends_with(&suffix))),
            None => None,
        };
        let Some(mut fix) = record else {
            return Ok(JobDone {
                summary: format!("{repo} pull {pull}: not on any fix record of ours"),
                spent_usd: 0.0,
            });
        };
        fix.verdict = if merged { "merged" } else { "closed" }.into();
        memory.record_fix(&fix)?;
        Ok(JobDone {
            summary: format!(
                "{repo}#{}: pull {pull} {}",
                fix.number,
                if merged { "merged" } else { "closed unmerged" }
            ),
            spent_usd: 0.0,
        })
    }
}

impl Executor for Service<'_> {
    fn execute(&self, job: &Job) -> Result<JobDone, JobFailure> {
        if matches!(
            job.spec,
            JobSpec::Triage { .. } | JobSpec::Fix { .. } | JobSpec::Command { .. }
        ) {
            self.check_budget()?;
        }
        let result = match &job.spec {
            JobSpec::Triage { repo, number } => self.triage(repo, *number),
            JobSpec::Fix {
                repo,
                number,
                granted_by,
            } => self.fix(
                repo,
                *number,
                granted_by
                    .as_deref()
                    .map(|login| Grant {
                        login,
                        at: None,
                        body_sha256: None,
                    })
                    .as_ref(),
            ),
            JobSpec::Command {
                repo,
                number,
                command,
                commenter,
                comment_id,
                at,
                body_sha256,
            } => self.command(
                repo,
                *number,
                command,
                commenter,
                *comment_id,
                at.as_deref(),
                body_sha256.as_deref(),
            ),
            JobSpec::Correction {
                repo,
                number,
                label,
                added,
                actor,
            } => self.correction(repo, *number, label, *added, actor),
            JobSpec::Outcome {
                repo,
                pull,
                merged,
                branch,
            } => self.outcome(repo, *pull, *merged, branch),
            JobSpec::Unknown => {
                return Err(JobFailure {
                    message: "a job this version does not know".into(),
                    retry_after: None,
                    permanent: true,
                    waits: false,
                });
            }
        };
        result.map_err(|e| failure(&e))
    }
}
