//! The executor of the service's jobs, shared by its front-ends (`serve`, the Lambda
//! worker, `handle-event`): each job runs through the pipeline with this config, acting
//! as the App's installation, a workflow's token, or the configured token.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use serde_json::{Value, json};

use super::Ctx;
use crate::cli::{EngineArg, FixStage};
use crate::config::ServeApply;
use crate::error::{CommandError, ErrorKind};
use crate::forge::github::GithubForge;
use crate::issue::RepoId;
use crate::memory::sqlite::OpenMode;
use crate::pipeline::fix::{FixJob, FixPlan, PublishTo};
use crate::pipeline::triage::{ApplyTo, decide, github_repo, triage_one};
use crate::pipeline::{Emitter, Event, Sink, What};
use crate::serve::queue::Job;
use crate::serve::route::JobSpec;
use crate::serve::worker::{Executor, JobDone, JobFailure};

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

/// A maintainer's `/autotriage fix`: who, when, and the body they read.
struct Grant<'a> {
    login: &'a str,
    at: Option<&'a str>,
    body_sha256: Option<&'a str>,
}

/// Runs the service's jobs with this config.
pub(super) struct Service<'a> {
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
    /// Where a fix runs when not here (the Lambda worker starts it on CodeBuild): given
    /// the issue, checked, and whether a writer's command granted it.
    fix_elsewhere: Option<FixElsewhere<'a>>,
}

/// What a writer's `/autotriage fix` granted: the issue as of when they asked, and
/// the body they read.
#[derive(Debug, Clone, Default)]
pub(super) struct Granted {
    /// When they asked (RFC 3339).
    pub at: Option<String>,
    /// The SHA-256 of the body they read.
    pub body_sha256: Option<String>,
}

/// Starts a checked fix somewhere else (with the grant, when one was given).
pub(super) type FixElsewhere<'a> =
    Box<dyn Fn(&crate::issue::Issue, Option<&Granted>) -> Result<JobDone> + Send + Sync + 'a>;

impl<'a> Service<'a> {
    /// Fixes start with `f` instead of running here.
    pub(super) fn fix_elsewhere(mut self, f: FixElsewhere<'a>) -> Self {
        self.fix_elsewhere = Some(f);
        self
    }

    /// An executor acting as `bot` (through `app`, or `token_as`, else the
    /// configured token), logging with `log`.
    pub(super) fn new(
        ctx: &'a Ctx,
        bot: String,
        app: Option<crate::forge::github_app::AppAuth>,
        token_as: Option<(String, String)>,
        log: Arc<dyn Fn(Value) + Send + Sync>,
    ) -> Self {
        Self {
            ctx,
            bot,
            app,
            token_as,
            clones: Mutex::new(()),
            spend: Mutex::new(()),
            log,
            fix_elsewhere: None,
        }
    }
}

/// JSON log lines on stderr, redacted, each with its time.
pub(super) fn json_log(redactor: crate::redact::Redactor) -> Arc<dyn Fn(Value) + Send + Sync> {
    Arc::new(move |mut v: Value| {
        if let Some(m) = v.as_object_mut() {
            m.insert("ts".into(), json!(crate::runs::now_rfc3339()));
        }
        redactor.redact_json(&mut v);
        let mut err = std::io::stderr().lock();
        let _ = std::io::Write::write_all(&mut err, format!("{v}\n").as_bytes());
    })
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
        if let Some(start) = &self.fix_elsewhere {
            let granted = granted_by.map(|g| Granted {
                at: g.at.map(String::from),
                body_sha256: g.body_sha256.map(String::from),
            });
            return start(&issue, granted.as_ref());
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

/// The executor of jobs from an SQS queue (the Lambda worker, `serve` on SQS): a job
/// for a repository this service does not serve is refused; a message already done
/// (its delete was lost) is not run again; and a triage whose issue already had a
/// newer triage done skips itself (the SQLite queue folds triage jobs when it queues;
/// SQS cannot). "Newer" is SQS's FIFO sequence number, never a machine's clock. The
/// highest sequence done is kept in memory as `queue/done/KIND/KEY`.
pub(super) struct Coalescing<'s, 'a> {
    /// What runs the jobs.
    pub service: &'s Service<'a>,
}

/// A FIFO sequence number (up to 128 decimal digits by SQS's word; 20 in practice).
fn sequence_of(v: Option<&str>) -> Option<u128> {
    v.and_then(|s| s.parse().ok())
}

impl Executor for Coalescing<'_, '_> {
    fn execute(&self, job: &Job) -> Result<JobDone, JobFailure> {
        let (ctx, log) = (self.service.ctx, &self.service.log);
        let cfg = ctx.config();
        // The queue holds only what a webhook routed, but a job for a repository this
        // service does not serve is refused all the same.
        let served = crate::serve::route::RouteSettings::new(
            &cfg.serve.repos,
            &cfg.trust.trigger_label,
            None,
        )
        .is_ok_and(|r| r.serves(&job.key));
        if !served {
            log(json!({"msg": "refused", "key": job.key,
                       "why": "not a repository in serve.repos"}));
            return Ok(JobDone {
                summary: format!("{}: refused, not a repository in serve.repos", job.key),
                spent_usd: 0.0,
            });
        }
        let Some(sequence) = sequence_of(job.sequence.as_deref()) else {
            return self.service.execute(job);
        };
        // Sequence numbers rise only within one queue: the record names its queue.
        let queue = cfg.queue.url.as_deref().unwrap_or("");
        let done_key = format!("queue/done/{queue}/{}/{}", job.spec.kind(), job.key);
        // Err: the memory could not be read (run the job; record nothing).
        let done = || -> Result<Option<u128>, ()> {
            let m = ctx.open_memory(OpenMode::Create).map_err(|_| ())?;
            let v = m.get_kv(&done_key).map_err(|_| ())?;
            Ok(v.and_then(|v| sequence_of(v.as_str())))
        };
        let skip = match done().ok().flatten() {
            Some(d) if d == sequence => Some("this message was already done"),
            Some(d) if d > sequence && matches!(job.spec, JobSpec::Triage { .. }) => {
                Some("a newer triage of this issue was already done")
            }
            _ => None,
        };
        if let Some(why) = skip {
            log(json!({"msg": "skipped", "key": job.key, "kind": job.spec.kind(), "why": why}));
            return Ok(JobDone {
                summary: format!("{}: skipped, {why}", job.key),
                spent_usd: 0.0,
            });
        }
        let result = self.service.execute(job);
        // Only ever raised: a late finisher never lowers what a newer job recorded.
        if result.is_ok()
            && done().is_ok_and(|d| d.is_none_or(|d| d < sequence))
            && let Ok(mut m) = ctx.open_memory(OpenMode::Create)
        {
            let _ = m.put_kv(&done_key, &json!(sequence.to_string()));
        }
        result
    }
}
