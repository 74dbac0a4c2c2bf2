//! `autotriage fix REF…`: triage → trust policy → locate → repair (N candidates) →
//! test each → choose → pr (a draft), each stage written to the run folder as it
//! finishes. `--until` stops early; an interrupted run resumes after its last
//! finished stage; several issues run as a batch (`--jobs`) under one budget.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use git2::Repository;
use serde_json::json;

use super::Ctx;
use super::triage::{build_engine, model_session};
use crate::cli::{EngineArg, FixArgs, FixStage, ForgeArg, SourceArg};
use crate::error::{CommandError, ErrorKind};
use crate::forge::github::GithubForge;
use crate::issue::{Issue, IssueRef};
use crate::locate::{self, LocateSettings, Located, PriorFile, rerank};
use crate::memory::sqlite::OpenMode;
use crate::memory::{ListFilter, Memory};
use crate::model::session::Session;
use crate::model::usage::CallUsage;
use crate::repair::candidates::Candidate;
use crate::runs::fs::Run;
use crate::verify::TestReport;

/// How long a stored triage is reused instead of triaging again.
const TRIAGE_REUSE_HOURS: i64 = 24;

/// Run `fix`.
pub fn run(args: &FixArgs, ctx: &Ctx) -> Result<()> {
    let refs = ctx.ref_context();
    let parsed: Vec<(String, IssueRef)> = args
        .refs
        .iter()
        .map(|r| IssueRef::parse(r, &refs).map(|p| (r.clone(), p)))
        .collect::<Result<_, _>>()?;
    let settings = LocateSettings::from_config(&ctx.config().locate)?;
    let configured =
        crate::model::registry::configured(ctx.config(), crate::model::session::REQUEST_TIMEOUT)?
            .is_some();
    let until = match args.until {
        Some(u) if u >= FixStage::Repair && !configured => {
            return Err(CommandError::usage(format!(
                "the {} stage needs a model's candidates, and no model is configured\n  fix: set `model:` (and `models:`) in autotriage.yaml, or pass --model NAME / provider:model_id; or stop earlier with --until locate (and test a patch of your own with `autotriage test REF --patch FILE`)",
                format!("{u:?}").to_lowercase()
            ))
            .into());
        }
        Some(u) => u,
        None if configured => FixStage::Pr,
        None => {
            ctx.out.info("no model is configured, so fix stops after locate (repair needs one: set `model:` in autotriage.yaml)");
            FixStage::Locate
        }
    };
    let rerank_on = !args.no_rerank && (args.rerank || ctx.config().locate.rerank);
    if rerank_on && !configured && until >= FixStage::Locate {
        return Err(CommandError::usage(
            "the locate re-rank (--rerank or locate.rerank) needs a model, and none is configured\n  fix: set `model:` in autotriage.yaml (or --model), or drop --rerank",
        )
        .into());
    }
    let session = if (rerank_on && until >= FixStage::Locate) || until >= FixStage::Repair {
        model_session(EngineArg::Model, args.record.as_deref(), ctx)?
    } else {
        None
    };
    let guard = crate::repair::PathGuard::new(&ctx.config().paths.protected)
        .map_err(|e| CommandError::usage(format!("{e}\n  fix: correct paths.protected")))?;
    // Every reference resolves before any run starts: bad input leaves nothing behind.
    let memory_ro = ctx.open_memory(OpenMode::ReadOnly)?;
    let mut github: Option<GithubForge> = None;
    let mut issues: Vec<(Issue, bool)> = Vec::new();
    for (raw, r) in &parsed {
        if let IssueRef::Repo(repo) = r {
            let list = memory_ro.list(&ListFilter {
                repo: Some(repo.to_string()),
                state: Some("open".into()),
                label: args.label.clone(),
                limit: args.limit,
            })?;
            if list.is_empty() {
                return Err(CommandError::usage(format!(
                    "{raw}: memory has no open issues of {repo}{}\n  fix: import them first (`autotriage memory import SOURCE`, or `autotriage triage {repo} --from github`)",
                    args.label
                        .as_deref()
                        .map(|l| format!(" labelled `{l}`"))
                        .unwrap_or_default()
                ))
                .into());
            }
            for s in list {
                if let Some((repo, n)) = crate::issue::parse_key(&s.reference)
                    && let Some(issue) = memory_ro.issue(&repo, n)?
                {
                    let issue =
                        live_for_trust(raw, issue, args.from, &*memory_ro, &mut github, ctx)?;
                    issues.push((issue, true));
                }
            }
            continue;
        }
        let remote = matches!(r, IssueRef::Remote { .. });
        let in_memory = match r {
            IssueRef::Remote { repo, number } => {
                memory_ro.issue(&repo.to_string(), *number)?.is_some()
            }
            _ => false,
        };
        let issue = super::resolve_one(raw, r, args.from, &*memory_ro, &mut github, ctx)?;
        let issue = if in_memory && args.from != SourceArg::Github {
            live_for_trust(raw, issue, args.from, &*memory_ro, &mut github, ctx)?
        } else {
            issue
        };
        issues.push((issue, remote));
    }
    drop(memory_ro);
    let mut jobs: Vec<Job> = Vec::new();
    for (issue, remote) in issues {
        let (dir, repo) = super::checkout(&issue, args.repo_dir.as_deref(), ctx)?;
        let forge = match args.forge {
            Some(f) => f,
            None if remote && crate::forge::github::token().is_some() => ForgeArg::Github,
            None => ForgeArg::Local,
        };
        if forge == ForgeArg::Github && until == FixStage::Pr {
            super::pr::github_target(&issue, &issue.reference(), ctx)?;
        }
        jobs.push(Job {
            issue,
            dir,
            repo: Mutex::new(repo),
            forge,
        });
    }
    let mut memory = ctx.open_memory(OpenMode::Create)?;
    let engine = build_engine(ctx, &mut *memory)?;
    drop(memory);
    let plan = Plan {
        until,
        rerank: rerank_on,
        settings: &settings,
        guard: &guard,
        restart: args.restart,
        // A query is a batch even when it finds one issue: one table at the end.
        batch: jobs.len() > 1 || parsed.iter().any(|(_, r)| matches!(r, IssueRef::Repo(_))),
    };
    let workers = ctx.global.jobs.unwrap_or(1).clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    // After Ctrl-C (seen while a job tests), start nothing new.
                    if crate::interrupt::requested() {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = jobs.get(i) else { break };
                    let outcome = fix_one(ctx, &plan, session.as_ref(), &engine, job);
                    if let Ok(mut r) = results.lock() {
                        r.push((i, outcome));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    let outcomes: Vec<Outcome> = results.into_iter().map(|(_, o)| o).collect();
    if !plan.batch {
        return match outcomes.into_iter().next() {
            Some(o) => o.error.map_or(Ok(()), Err),
            None => Ok(()),
        };
    }
    print_table(ctx, &outcomes);
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    if failed.is_empty() {
        return Ok(());
    }
    // Only "not eligible / no candidate passed": exit 3, as for one issue; else 1.
    let only_not_eligible = failed.iter().all(|o| {
        o.error
            .as_ref()
            .is_some_and(|e| super::error_kind(e) == ErrorKind::NotEligible)
    });
    Err(CommandError {
        kind: if only_not_eligible {
            ErrorKind::NotEligible
        } else {
            ErrorKind::Runtime
        },
        message: format!("{} of {} issues got no fix", failed.len(), outcomes.len()),
    }
    .into())
}

/// One issue of the batch with its checkout.
struct Job {
    issue: Issue,
    dir: PathBuf,
    // git2 repositories are not Sync; a job is worked on by one thread at a time.
    repo: Mutex<Repository>,
    forge: ForgeArg,
}

/// What happened to one issue.
struct Outcome {
    reference: String,
    run_id: Option<String>,
    /// `fixed`, `unproven`, `not eligible`… or the stage it stopped after.
    verdict: String,
    /// The PR URL or branch.
    published: Option<String>,
    spent: f64,
    error: Option<anyhow::Error>,
}

fn print_table(ctx: &Ctx, outcomes: &[Outcome]) {
    if ctx.out.json {
        ctx.out
            .json_line(&json!({"summary": outcomes.iter().map(|o| json!({
            "ref": o.reference, "run_id": o.run_id, "verdict": o.verdict,
            "published": o.published, "spent_usd": o.spent,
            "error": o.error.as_ref().map(|e| format!("{e:#}")),
        })).collect::<Vec<_>>()}));
        return;
    }
    let width = outcomes
        .iter()
        .map(|o| o.reference.len())
        .max()
        .unwrap_or(5)
        .max(5);
    ctx.out.line("");
    ctx.out.line(&format!(
        "{:<width$}  {:<14}  {:>9}  {}",
        "issue", "verdict", "spent", "result"
    ));
    let mut total = 0.0;
    for o in outcomes {
        total += o.spent;
        let result = match (&o.published, &o.error) {
            (Some(p), _) => p.clone(),
            (None, Some(e)) => format!("{e:#}").lines().next().unwrap_or("").to_string(),
            (None, None) => o.run_id.clone().unwrap_or_default(),
        };
        ctx.out.line(&format!(
            "{:<width$}  {:<14}  {:>9}  {}",
            o.reference,
            o.verdict,
            format!("${:.4}", o.spent),
            result
        ));
    }
    ctx.out.line(&format!(
        "{} issues, {} fixed, ${total:.4} spent",
        outcomes.len(),
        outcomes.iter().filter(|o| o.verdict == "fixed").count()
    ));
}

/// Files changed by published or test-proven fixes of similar past issues of the same
/// repository.
fn prior(memory: &dyn Memory, issue: &Issue) -> Result<Vec<PriorFile>> {
    let text = format!("{} {}", issue.title, issue.body);
    let end = crate::triage::text::floor_char_boundary(&text, 2000);
    let mut out = Vec::new();
    for hit in memory.search(&text[..end], 20)? {
        let Some((repo, n)) = crate::issue::parse_key(&hit.issue.reference) else {
            continue;
        };
        if repo != issue.repo || n == issue.number {
            continue;
        }
        for fix in memory.fixes(&repo, n)? {
            if !matches!(fix.verdict.as_str(), "published" | "fixed" | "merged") {
                continue;
            }
            for path in fix.files {
                out.push(PriorFile {
                    path,
                    reference: hit.issue.reference.clone(),
                    similarity: hit.score,
                });
            }
        }
    }
    Ok(out)
}

/// What `fix` does for each issue.
struct Plan<'a> {
    until: FixStage,
    rerank: bool,
    settings: &'a LocateSettings,
    guard: &'a crate::repair::PathGuard,
    restart: bool,
    batch: bool,
}

/// Work on one issue in its own run (or the interrupted one it resumes). Never
/// panics the batch: every failure comes back in the outcome.
fn fix_one(
    ctx: &Ctx,
    plan: &Plan<'_>,
    session: Option<&Session>,
    engine: &crate::triage::Engine,
    job: &Job,
) -> Outcome {
    let issue = &job.issue;
    let mut outcome = Outcome {
        reference: issue.reference(),
        run_id: None,
        verdict: "error".into(),
        published: None,
        spent: 0.0,
        error: None,
    };
    let repo = match job.repo.lock() {
        Ok(r) => r,
        Err(p) => p.into_inner(),
    };
    let started = (|| -> Result<(crate::memory::AnyMemory, Run)> {
        let memory = ctx.open_memory(OpenMode::Create)?;
        let store = ctx.run_store()?;
        let head = repo.head()?.peel_to_commit()?.id().to_string();
        let resumable = if plan.restart {
            None
        } else {
            store.latest_for(&issue.repo, issue.number)?.filter(|m| {
                m.command == "fix"
                    && m.interrupted()
                    && m.base_commit.as_deref().is_none_or(|b| b == head)
            })
        };
        let run = match resumable {
            Some(m) => {
                let finished: Vec<&str> = ["triage", "locate", "repair", "test", "pr"]
                    .into_iter()
                    .filter(|s| m.done(s))
                    .collect();
                ctx.out.info(&format!(
                    "{}: resuming the interrupted run {}{} (start anew with --restart)",
                    issue.reference(),
                    m.id,
                    finished
                        .last()
                        .map(|s| format!(" after its {s} stage"))
                        .unwrap_or_default()
                ));
                store.reopen(&m.id)?
            }
            None => store.begin(&issue.repo, issue.number, "fix")?,
        };
        Ok((memory, run))
    })();
    let (mut memory, mut run) = match started {
        Ok(x) => x,
        Err(e) => {
            if !plan.batch {
                outcome.error = Some(e);
            } else {
                ctx.out.error(&format!("{}: {e:#}", issue.reference()));
                outcome.error = Some(e);
            }
            return outcome;
        }
    };
    outcome.run_id = Some(run.id().to_string());
    let result = fix_stages(
        ctx,
        plan,
        session,
        engine,
        &mut *memory,
        job,
        &repo,
        &mut run,
        &mut outcome,
    );
    let _ = run.set_cost(outcome.spent);
    if let Err(e) = &result {
        // Whatever failed, the stage it failed in is marked so, and the run recorded:
        // no stage is left "running" by an error.
        let running: Vec<String> = run
            .meta
            .stages
            .iter()
            .filter(|(_, s)| s.status == crate::runs::StageStatus::Running)
            .map(|(n, _)| n.clone())
            .collect();
        for stage in running {
            let _ = run.stage_finished(&stage, Some(&format!("{e:#}")));
        }
        if super::error_kind(e) == ErrorKind::NotEligible && outcome.verdict == "error" {
            outcome.verdict = "not eligible".into();
        }
        if plan.batch {
            ctx.out.error(&format!("{}: {e:#}", issue.reference()));
        }
    }
    let _ = memory.record_run(&run.meta);
    outcome.error = result.err();
    outcome
}

/// The live issue for a memory copy of a GitHub issue: who may trigger a fix (the
/// author's association, who added the trigger label and their permission) is read
/// from GitHub at every `fix`, never from memory. A triage may be reused; a trust
/// decision may not. Issues from local files are returned as they are.
fn live_for_trust(
    raw: &str,
    issue: Issue,
    from: SourceArg,
    memory: &dyn Memory,
    github: &mut Option<crate::forge::github::GithubForge>,
    ctx: &Ctx,
) -> Result<Issue> {
    if !super::from_github(&issue) {
        return Ok(issue);
    }
    if from == SourceArg::Memory {
        if ctx.global.force {
            return Ok(issue);
        }
        return Err(CommandError::not_eligible(format!(
            "{raw}: {} is a GitHub issue, and whether it may be fixed is decided from the live issue, which --from memory does not read\n  fix: drop --from memory (GITHUB_TOKEN is needed), or run with --force to skip the trust check",
            issue.reference()
        ))
        .into());
    }
    let Some(repo) = super::triage::github_repo(&issue.repo) else {
        return Ok(issue);
    };
    let r = IssueRef::Remote {
        repo,
        number: issue.number,
    };
    // Read from GitHub only: memory is not consulted.
    super::resolve_one(raw, &r, SourceArg::Github, memory, github, ctx)
}

/// The trust policy and the kind, before any model writes code for the issue.
fn eligibility(ctx: &Ctx, issue: &Issue, t: &crate::triage::Triage) -> Result<(), String> {
    let trust = crate::trust::evaluate(issue, &ctx.config().trust.trigger_label);
    if !trust.eligible {
        return Err(format!("not trusted: {}", trust.reason));
    }
    if let Some(kind) = t.kind.as_deref().filter(|_| !t.abstained)
        && kind != "bug"
    {
        return Err(format!(
            "triaged as {kind} ({:.2}), not a bug",
            t.kind_confidence
        ));
    }
    Ok(())
}

/// The stored triage of the issue when it is recent enough to reuse.
fn recent_triage(memory: &dyn Memory, issue: &Issue) -> Option<crate::triage::Triage> {
    let (at, value) = memory.latest_triage(&issue.repo, issue.number).ok()??;
    let at = chrono::DateTime::parse_from_rfc3339(&at).ok()?;
    let age = chrono::Utc::now().signed_duration_since(at);
    if age > chrono::Duration::hours(TRIAGE_REUSE_HOURS) {
        return None;
    }
    serde_json::from_value(value).ok()
}

#[allow(clippy::too_many_arguments)]
fn fix_stages(
    ctx: &Ctx,
    plan: &Plan<'_>,
    session: Option<&Session>,
    engine: &crate::triage::Engine,
    memory: &mut dyn Memory,
    job: &Job,
    repo: &Repository,
    run: &mut Run,
    outcome: &mut Outcome,
) -> Result<()> {
    let issue = &job.issue;
    let dir = job.dir.as_path();
    let settings = plan.settings;
    // Usage (and spend) carry over into a resumed run: the budget holds for the issue.
    let mut calls: Vec<CallUsage> = run
        .read_json::<serde_json::Value>("usage.json")
        .ok()
        .and_then(|v| serde_json::from_value(v["calls"].clone()).ok())
        .unwrap_or_default();
    let mut spent: f64 = calls.iter().map(|c| c.cost_usd).sum();
    outcome.spent = spent;
    run.write_json("issue.json", issue)?;

    // Triage.
    let t: crate::triage::Triage = if run.meta.done("triage") {
        run.read_json("triage.json")?
    } else {
        run.stage_started("triage")?;
        // The configured engine (`triage.engine`): with a model, `auto` asks it where
        // the offline engine abstains.
        let (t, reused) = match recent_triage(memory, issue) {
            Some(t) => (t, true),
            None => {
                let mode: EngineArg = ctx.config().triage.engine.into();
                let asked = session.filter(|_| mode != EngineArg::Offline);
                let d = super::triage::decide(engine, asked, mode, issue);
                // Said, not swallowed: the offline triage stands in for the model's.
                if let Some(why) = d
                    .budget_stop
                    .as_ref()
                    .or(d.error.as_ref())
                    .or(d.model_failure.as_ref().map(|(e, _)| e))
                {
                    ctx.out.warn(&format!(
                        "{}: the model's triage is not used ({}); the offline triage stands in",
                        issue.reference(),
                        why.lines().next().unwrap_or("")
                    ));
                }
                spent += d.calls.iter().map(|c| c.cost_usd).sum::<f64>();
                calls.extend(d.calls);
                (d.triage.unwrap_or_else(|| engine.triage(issue)), false)
            }
        };
        run.write_json("triage.json", &t)?;
        run.event(
            "triage",
            "decision",
            &format!(
                "{}engine {} kind {:?} priority {} fixable {}",
                if reused {
                    "reused a triage from memory: "
                } else {
                    ""
                },
                t.engine,
                t.kind,
                t.priority,
                t.fixable
            ),
            json!({"labels": t.labels}),
        )?;
        run.stage_finished("triage", None)?;
        memory.upsert_issues(std::slice::from_ref(issue), &|| false)?;
        if !reused {
            memory.record_triage(
                &issue.repo,
                issue.number,
                Some(run.id()),
                &serde_json::to_value(&t)?,
            )?;
        }
        t
    };
    outcome.verdict = "triaged".into();
    let mut report = Report {
        triage: Some(&t),
        brief: plan.batch,
        ..Default::default()
    };
    if plan.until == FixStage::Triage {
        print(ctx, issue, run.id(), &report, plan.until, spent);
        return Ok(());
    }

    // Locate.
    let commit = match run.meta.base_commit.as_deref() {
        Some(b) => git2::Oid::from_str(b)?,
        None => repo.head()?.peel_to_commit()?.id(),
    };
    warn_if_dirty(ctx, repo, dir, commit);
    let prior_files = prior(memory, issue)?;
    let located: Located = if run.meta.done("locate") {
        run.read_json("context.json")?
    } else {
        run.stage_started("locate")?;
        run.set_base_commit(&commit.to_string())?;
        let located = locate_stage(
            ctx,
            plan,
            session,
            settings,
            issue,
            dir,
            repo,
            commit,
            &prior_files,
            run,
            &mut calls,
            &mut spent,
        )?;
        run.write_json("context.json", &located)?;
        run.event(
            "locate",
            "decision",
            &format!(
                "ranked {} files; context {} of {} tokens from {} files",
                located.files.len(),
                located.context.used_tokens,
                located.context.budget_tokens,
                located.context.files.len()
            ),
            json!({"top": located.files.iter().take(5).map(|f| &f.path).collect::<Vec<_>>()}),
        )?;
        run.stage_finished("locate", None)?;
        located
    };
    outcome.spent = spent;
    outcome.verdict = "located".into();
    if plan.until == FixStage::Locate {
        report.located = Some(&located);
        print(ctx, issue, run.id(), &report, plan.until, spent);
        return Ok(());
    }

    // The trust policy, before a model writes code that the tests then run.
    if !ctx.global.force
        && let Err(why) = eligibility(ctx, issue, &t)
    {
        run.event(
            "repair",
            "decision",
            &format!("not eligible: {why}"),
            json!(null),
        )?;
        outcome.verdict = "not eligible".into();
        report.located = Some(&located);
        print(ctx, issue, run.id(), &report, plan.until, spent);
        return Err(CommandError {
            kind: ErrorKind::NotEligible,
            message: format!(
                "{}: not eligible for a fix: {why}\n  fix: a maintainer can add the `{}` label, or run with --force",
                issue.reference(),
                ctx.config().trust.trigger_label
            ),
        }
        .into());
    }

    // Repair.
    let Some(session) = session else {
        return Err(CommandError::usage("the repair stage needs a model").into());
    };
    let (candidates, chosen) = if run.meta.done("repair") {
        let v: serde_json::Value = run.read_json("candidates.json")?;
        (
            serde_json::from_value::<Vec<Candidate>>(v["candidates"].clone())?,
            v["chosen"].as_u64().map(|n| n as usize),
        )
    } else {
        repair_stage(
            ctx,
            plan,
            session,
            memory,
            issue,
            &t,
            &located,
            &prior_files,
            repo,
            commit,
            run,
            &mut calls,
            &mut spent,
        )?
    };
    outcome.spent = spent;
    outcome.verdict = "repaired".into();
    report.located = Some(&located);
    report.candidates = Some((&candidates, chosen));
    // Test: every candidate that applied (and the user accepted, after a review).
    let reviewed = run
        .read_json::<serde_json::Value>("candidates.json")
        .ok()
        .is_some_and(|v| !v["review"].is_null());
    if plan.until == FixStage::Repair || chosen.is_none() {
        print(ctx, issue, run.id(), &report, plan.until, spent);
        return match chosen {
            Some(_) => Ok(()),
            None => Err(no_candidate(run.id(), &candidates, reviewed)),
        };
    }
    let inputs: Vec<crate::verify::CandidateInput> = candidates
        .iter()
        .filter(|c| c.error.is_none() && c.duplicate_of.is_none())
        .filter(|c| !reviewed || Some(c.id) == chosen)
        .map(|c| crate::verify::CandidateInput {
            id: c.id,
            diff: c.diff.clone(),
        })
        .collect();
    let tests: TestReport = if run.meta.done("test") {
        run.read_json("test.json")?
    } else {
        super::test::ensure_commit(repo, dir, commit, ctx)?;
        super::test::test_stage(ctx, run, repo, commit, &inputs)?
    };
    outcome.verdict = tests.verdict.clone();
    let files_of = |id: usize| -> Vec<String> {
        candidates
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.files.iter().map(|(p, _, _)| p.clone()).collect())
            .unwrap_or_default()
    };
    let run_id = run.id().to_string();
    let record = |memory: &mut dyn Memory,
                  verdict: &str,
                  url: Option<String>,
                  published: Option<&crate::pr::Published>| {
        let Some(id) = tests.chosen.or(tests.best) else {
            return Ok::<(), anyhow::Error>(());
        };
        memory.record_fix(&crate::memory::FixRecord {
            repo: issue.repo.clone(),
            number: issue.number,
            run_id: run_id.clone(),
            files: files_of(id),
            verdict: verdict.into(),
            pr_url: url,
            created_at: crate::runs::now_rfc3339(),
            branch: published.map(|p| p.branch.clone()),
            commits: published
                .map(|p| p.commit.clone())
                .filter(|c| !c.is_empty())
                .into_iter()
                .collect(),
        })?;
        Ok(())
    };
    report.tests = Some(&tests);
    let Some(chosen) = tests.chosen else {
        record(memory, &tests.verdict, None, None)?;
        print(ctx, issue, run.id(), &report, plan.until, spent);
        let best = tests
            .best
            .map(|b| {
                format!(
                    "; the best attempt, candidate {b}, is kept for review (`autotriage runs show {} --file candidates/{b}.diff`; publish it anyway with `autotriage pr {} --run {}`)",
                    run.id(),
                    issue.reference(),
                    run.id()
                )
            })
            .unwrap_or_default();
        return Err(CommandError {
            kind: ErrorKind::NotEligible,
            message: format!("no candidate passed the tests: {}{best}", tests.summary),
        }
        .into());
    };
    if plan.until == FixStage::Test || ctx.global.dry_run {
        record(memory, &tests.verdict, None, None)?;
        print(ctx, issue, run.id(), &report, plan.until, spent);
        return Ok(());
    }

    // Publish the chosen candidate: a draft PR on GitHub, or a local branch.
    let Some(diff) = candidates
        .iter()
        .find(|c| c.id == chosen)
        .map(|c| c.diff.clone())
    else {
        return Err(
            CommandError::failure(format!("candidate {chosen} is missing from the run")).into(),
        );
    };
    let inputs = super::pr::PublishInputs {
        patch: &diff,
        tests: Some(format!(
            "From run `{}`: verdict **{}**; {}",
            run.id(),
            tests.verdict,
            tests.summary
        )),
        usage: (!calls.is_empty()).then(|| {
            format!(
                "{} model call(s), {} tokens in, {} out, ${:.4}",
                calls.len(),
                calls.iter().map(|c| c.input_tokens).sum::<u64>(),
                calls.iter().map(|c| c.output_tokens).sum::<u64>(),
                spent
            )
        }),
        base: Some(commit),
        explanation: candidates
            .iter()
            .find(|c| c.id == chosen)
            .map(|c| c.explanation.clone()),
    };
    if run.meta.done("pr") {
        record(memory, &tests.verdict, None, None)?;
        print(ctx, issue, run.id(), &report, plan.until, spent);
        return Ok(());
    }
    let published = match job.forge {
        ForgeArg::Github => {
            let target = super::pr::github_target(issue, &issue.reference(), ctx)?;
            super::pr::publish_github(ctx, run, issue, &target, &inputs)?
        }
        ForgeArg::Local => super::pr::publish_local_stage(ctx, run, issue, dir, &inputs)?,
    };
    outcome.published = published.url.clone().or_else(|| {
        published
            .published
            .as_ref()
            .map(|p| format!("branch {} ({})", p.branch, p.status))
    });
    record(
        memory,
        &tests.verdict,
        published.url.clone(),
        published.published.as_ref(),
    )?;
    report.published = Some(&published);
    print(ctx, issue, run.id(), &report, plan.until, spent);
    match super::pr::partial(&published) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The error for a repair that left nothing to test.
fn no_candidate(run_id: &str, candidates: &[Candidate], reviewed: bool) -> anyhow::Error {
    CommandError {
        kind: ErrorKind::NotEligible,
        message: if reviewed {
            format!(
                "no candidate accepted; they stay in the run for later (`autotriage runs show {run_id}`)"
            )
        } else {
            format!(
                "no candidate patch applied ({} asked for; see `autotriage runs show {run_id}`)",
                candidates.len()
            )
        },
    }
    .into()
}

/// Uncommitted work is never part of the base, and never touched: say so.
fn warn_if_dirty(ctx: &Ctx, repo: &Repository, dir: &Path, base: git2::Oid) {
    if repo.is_bare() {
        return;
    }
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(false).include_ignored(false);
    let dirty = repo
        .statuses(Some(&mut opts))
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    if dirty {
        ctx.out.warn(&format!(
            "{} has uncommitted changes: they are not part of the base ({}) and are left as they are; the tests run in a separate worktree",
            dir.display(),
            &base.to_string()[..12]
        ));
    }
}

#[allow(clippy::too_many_arguments)]
fn locate_stage(
    ctx: &Ctx,
    plan: &Plan<'_>,
    session: Option<&Session>,
    settings: &LocateSettings,
    issue: &Issue,
    dir: &Path,
    repo: &Repository,
    commit: git2::Oid,
    prior_files: &[PriorFile],
    run: &mut Run,
    calls: &mut Vec<CallUsage>,
    spent: &mut f64,
) -> Result<Located> {
    let cache = ctx.workspace.state_dir().join("index");
    let bar = ctx.out.spinner("indexing the code");
    let located = (|| -> Result<Located> {
        let (index, info) = locate::open_index(&cache, repo, commit, settings)?;
        run.event(
            "locate",
            "read",
            &format!(
                "{} index of {} ({} files) at {} in {:.2} s",
                if info.built {
                    "built the"
                } else {
                    "reused the"
                },
                dir.display(),
                info.files,
                &commit.to_string()[..12],
                info.seconds
            ),
            json!({"dir": info.dir}),
        )?;
        bar.set_message("ranking files");
        let mut located = locate::locate(
            repo,
            &index,
            info,
            &issue.title,
            &issue.body,
            prior_files,
            settings,
        );
        if let Some(s) = session.filter(|_| plan.rerank) {
            bar.set_message("asking the model to re-rank");
            model_rerank(
                ctx,
                s,
                &mut located,
                issue,
                settings,
                repo,
                run,
                calls,
                spent,
            )?;
        }
        Ok(located)
    })();
    bar.finish_and_clear();
    located
}

/// Repair: N candidates from the model, each applied to the base or refused; the
/// review on a terminal with --dry-run. `candidates.json`, `candidates/N.diff`.
#[allow(clippy::too_many_arguments)]
fn repair_stage(
    ctx: &Ctx,
    plan: &Plan<'_>,
    session: &Session,
    memory: &dyn Memory,
    issue: &Issue,
    t: &crate::triage::Triage,
    located: &Located,
    prior_files: &[PriorFile],
    repo: &Repository,
    commit: git2::Oid,
    run: &mut Run,
    calls: &mut Vec<CallUsage>,
    spent: &mut f64,
) -> Result<(Vec<Candidate>, Option<usize>)> {
    run.stage_started("repair")?;
    let cfg = &ctx.config().repair;
    let inputs = crate::repair::prompt::RepairInputs {
        triage: Some(format!(
            "kind {}, priority {}{}",
            t.kind.as_deref().unwrap_or("unclear"),
            t.priority,
            if t.missing.is_empty() {
                String::new()
            } else {
                format!(", the report lacks {}", t.missing.join(", "))
            }
        )),
        past: past_fixes(memory, prior_files)?,
    };
    let base_request = |temperature: f32| {
        crate::repair::prompt::request(
            issue,
            &located.context,
            &inputs,
            cfg.max_tokens,
            temperature,
        )
    };
    let read = |p: &str| locate::files::read_at(repo, commit, p);
    let context_files: Vec<String> = located
        .context
        .files
        .iter()
        .map(|f| f.path.clone())
        .collect();
    let bar = ctx.out.spinner("asking the model for candidates");
    let progress = |i: usize| bar.set_message(format!("candidate {i} of {}", cfg.candidates));
    let (mut candidates, failure) = crate::repair::candidates::generate(
        session,
        &base_request,
        &read,
        &context_files,
        plan.guard,
        &crate::repair::candidates::RepairSettings {
            candidates: cfg.candidates,
            max_tokens: cfg.max_tokens,
            temperature: cfg.temperature,
            limits: crate::repair::candidates::PatchLimits {
                bytes: cfg.max_patch_bytes,
                files: cfg.max_patch_files,
                lines: cfg.max_patch_lines,
            },
        },
        spent,
        &progress,
    );
    bar.finish_and_clear();
    for c in &candidates {
        for u in &c.usage {
            run.event(
                "repair",
                "model",
                &format!(
                    "candidate {}: {} in, {} out, ${:.5}",
                    c.id, u.input_tokens, u.output_tokens, u.cost_usd
                ),
                serde_json::to_value(u)?,
            )?;
        }
        calls.extend(c.usage.iter().cloned());
        let what = match (&c.error, c.duplicate_of) {
            (Some(e), _) => format!(
                "candidate {} refused after {} answer(s): {e}",
                c.id, c.attempts
            ),
            (None, Some(d)) => format!("candidate {} is the same change as candidate {d}", c.id),
            (None, None) => format!(
                "candidate {} applied ({})",
                c.id,
                c.edits
                    .iter()
                    .map(|e| format!("{} {:?}", e.path, e.method))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        run.event("repair", "decision", &what, json!(null))?;
        if c.error.is_none() {
            run.write_text(&format!("candidates/{}.diff", c.id), &c.diff)?;
        }
    }
    run.write_usage(calls)?;
    let mut chosen = candidates
        .iter()
        .find(|c| c.error.is_none() && c.duplicate_of.is_none())
        .map(|c| c.id);
    let mut review: Option<serde_json::Value> = None;
    // Written before the review too: the candidates outlive a failed prompt or editor.
    run.write_json(
        "candidates.json",
        &json!({"candidates": candidates, "chosen": chosen, "review": review}),
    )?;
    if ctx.global.dry_run && ctx.out.interactive && !ctx.out.json && !ctx.global.yes {
        let reviewed = review_candidates(
            ctx,
            located,
            &mut candidates,
            plan.guard,
            &read,
            &context_files,
        );
        let (choice, edited) = match reviewed {
            Ok(r) => r,
            Err(e) => {
                run.stage_finished("repair", Some(&format!("review: {e:#}")))?;
                return Err(e);
            }
        };
        chosen = choice;
        if let Some(c) = edited.and_then(|id| candidates.iter().find(|c| c.id == id)) {
            run.write_text(&format!("candidates/{}.diff", c.id), &c.diff)?;
        }
        review = Some(json!({"by": "user", "chosen": chosen, "edited": edited}));
    }
    run.write_json(
        "candidates.json",
        &json!({"candidates": candidates, "chosen": chosen, "review": review}),
    )?;
    // A model failure after a candidate applied (a budget stop, say) leaves that
    // candidate standing: the stage succeeds and the failure is recorded.
    if let (Some(e), Some(_)) = (&failure, chosen) {
        run.event(
            "repair",
            "error",
            &format!("model: {e}; keeping the candidates that applied"),
            json!(null),
        )?;
        ctx.out.warn(&format!(
            "the model failed after {} candidate(s): {e}",
            candidates.len()
        ));
    }
    let error = match (&failure, chosen) {
        (Some(e), None) => Some(format!("model: {e}")),
        (None, None) if review.is_some() => Some("no candidate accepted at the review".to_string()),
        (None, None) => Some("no candidate applied".to_string()),
        _ => None,
    };
    run.stage_finished("repair", error.as_deref())?;
    let reviewed = ctx.out.interactive && !ctx.global.yes;
    if ctx.global.dry_run && !reviewed && !ctx.out.json {
        for c in candidates
            .iter()
            .filter(|c| c.error.is_none() && c.duplicate_of.is_none())
        {
            ctx.out
                .line(&format!("candidate {}: {}", c.id, c.explanation));
            ctx.out.line(&colour_diff(ctx, &c.diff));
        }
    }
    if let Some(e) = failure.filter(|_| chosen.is_none()) {
        return Err(e.into());
    }
    Ok((candidates, chosen))
}

/// Titles of the past issues whose fixes feed the prior, with their files.
fn past_fixes(
    memory: &dyn Memory,
    prior: &[PriorFile],
) -> Result<Vec<crate::repair::prompt::PastFix>> {
    let mut out: Vec<crate::repair::prompt::PastFix> = Vec::new();
    for p in prior {
        if let Some(f) = out.iter_mut().find(|f| f.reference == p.reference) {
            if !f.files.contains(&p.path) {
                f.files.push(p.path.clone());
            }
            continue;
        }
        if out.len() >= 5 {
            continue;
        }
        let title = crate::issue::parse_key(&p.reference)
            .and_then(|(r, n)| memory.issue(&r, n).ok().flatten())
            .map(|i| i.title)
            .unwrap_or_default();
        out.push(crate::repair::prompt::PastFix {
            reference: p.reference.clone(),
            title,
            files: vec![p.path.clone()],
        });
    }
    Ok(out)
}

/// A diff with added lines green, removed red, hunk headers cyan (when colour is on).
fn colour_diff(ctx: &Ctx, diff: &str) -> String {
    if !ctx.out.color {
        return diff.trim_end().to_string();
    }
    diff.lines()
        .map(|l| {
            if l.starts_with("+++") || l.starts_with("---") || l.starts_with("diff --git") {
                format!("\x1b[1m{l}\x1b[0m")
            } else if l.starts_with('+') {
                format!("\x1b[32m{l}\x1b[0m")
            } else if l.starts_with('-') {
                format!("\x1b[31m{l}\x1b[0m")
            } else if l.starts_with("@@") {
                format!("\x1b[36m{l}\x1b[0m")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Show each candidate and ask: accept, reject, or edit in $EDITOR. The accepted id and
/// the id of an edited candidate.
fn review_candidates(
    ctx: &Ctx,
    located: &Located,
    candidates: &mut [crate::repair::candidates::Candidate],
    guard: &crate::repair::PathGuard,
    read: &dyn Fn(&str) -> Option<String>,
    files: &[String],
) -> Result<(Option<usize>, Option<usize>)> {
    ctx.out.line("ranked files:");
    for (i, f) in located.files.iter().take(5).enumerate() {
        let why = f.evidence.first().map(|e| e.detail.as_str()).unwrap_or("");
        ctx.out
            .line(&format!("  {}. {}  {}", i + 1, f.path, ctx.out.dim(why)));
    }
    for c in candidates.iter_mut() {
        if c.error.is_some() || c.duplicate_of.is_some() {
            continue;
        }
        ctx.out.line(&format!(
            "\n{} {}",
            ctx.out.bold(&format!("candidate {}:", c.id)),
            c.explanation
        ));
        ctx.out.line(&colour_diff(ctx, &c.diff));
        let pick = dialoguer::Select::new()
            .with_prompt(format!("candidate {}", c.id))
            .items(["accept", "reject", "edit in $EDITOR"])
            .default(0)
            .interact_opt()
            .map_err(|e| CommandError::failure(format!("the prompt failed: {e}")))?;
        match pick {
            Some(0) => return Ok((Some(c.id), None)),
            Some(2) => {
                let edited = dialoguer::Editor::new()
                    .extension(".diff")
                    .edit(&c.diff)
                    .map_err(|e| CommandError::failure(format!("the editor failed: {e}")))?;
                let Some(text) = edited else { continue };
                match crate::repair::parse(&text)
                    .map_err(crate::repair::ApplyError::from)
                    .and_then(|e| crate::repair::apply(&e, read, files, guard))
                {
                    Ok(applied) => {
                        let (diff, changed) =
                            crate::repair::candidates::unified_diff(&applied.files, read);
                        c.diff = diff;
                        c.files = changed;
                        c.edits = applied.reports;
                        return Ok((Some(c.id), Some(c.id)));
                    }
                    Err(e) => ctx.out.warn(&format!(
                        "the edited patch does not apply, so it was not kept: {e}"
                    )),
                }
            }
            _ => {}
        }
    }
    Ok((None, None))
}
#[allow(clippy::too_many_arguments)]
fn model_rerank(
    ctx: &Ctx,
    session: &Session,
    located: &mut Located,
    issue: &Issue,
    settings: &LocateSettings,
    repo: &Repository,
    run: &mut crate::runs::fs::Run,
    calls: &mut Vec<CallUsage>,
    spent: &mut f64,
) -> Result<()> {
    let n = ctx.config().locate.rerank_files.min(located.files.len());
    if n < 2 {
        return Ok(());
    }
    let paths: Vec<String> = located
        .files
        .iter()
        .take(n)
        .map(|f| f.path.clone())
        .collect();
    let request = rerank::request(&issue.repo, &issue.title, &issue.body, located, n);
    let result = session.structured("locate", request, &rerank::tool(&paths), spent);
    let usage = match &result {
        Ok((_, _, u)) => u.clone(),
        Err(e) => e.usage.clone(),
    };
    for c in &usage {
        run.event(
            "locate",
            "model",
            &format!(
                "{} re-rank: {} in, {} out, ${:.5}",
                c.model, c.input_tokens, c.output_tokens, c.cost_usd
            ),
            serde_json::to_value(c)?,
        )?;
    }
    let total_in: u64 = usage.iter().map(|c| c.input_tokens).sum();
    let total_out: u64 = usage.iter().map(|c| c.output_tokens).sum();
    calls.extend(usage.iter().cloned());
    run.write_usage(calls)?;
    match result {
        Ok((answer, _, _)) => {
            if let Some((order, reason)) = rerank::apply(located, &answer) {
                located.rerank = Some(locate::Rerank {
                    model: session.resolved.name.clone(),
                    order,
                    reason,
                    input_tokens: total_in,
                    output_tokens: total_out,
                });
                locate::rebuild_context(repo, located, &issue.title, &issue.body, settings);
            }
        }
        // The search's own ranking stands; the failure is recorded and shown.
        Err(e) => {
            run.event(
                "locate",
                "error",
                &format!("model re-rank: {}", e.error),
                json!(null),
            )?;
            ctx.out.warn(&format!(
                "the model re-rank failed, keeping the search's order: {}",
                e.error
            ));
        }
    }
    Ok(())
}

/// What a `fix` got to, for printing.
#[derive(Default)]
struct Report<'a> {
    triage: Option<&'a crate::triage::Triage>,
    located: Option<&'a Located>,
    candidates: Option<(&'a [Candidate], Option<usize>)>,
    tests: Option<&'a TestReport>,
    published: Option<&'a super::pr::PublishOutcome>,
    /// In a batch: one line per issue (the table at the end has the rest).
    brief: bool,
}

fn print(ctx: &Ctx, issue: &Issue, run_id: &str, report: &Report<'_>, until: FixStage, spent: f64) {
    let verdict = report.tests.map(|t| t.verdict.as_str());
    if ctx.out.json {
        let line = json!({
            "ref": issue.reference(),
            "run_id": run_id,
            "until": format!("{until:?}").to_lowercase(),
            "triage": report.triage,
            "locate": report.located,
            "repair": report.candidates.map(|(c, chosen)| json!({"candidates": c, "chosen": chosen})),
            "test": report.tests,
            "pr": report.published,
            "verdict": verdict,
            "spent_usd": (spent * 1e6).round() / 1e6 + 0.0,
        });
        ctx.out.json_line(&line);
        return;
    }
    if report.brief {
        ctx.out.line(&format!(
            "{}: {} (run {run_id})",
            issue.reference(),
            verdict.unwrap_or(match until {
                FixStage::Triage => "triaged",
                FixStage::Locate => "located",
                _ => "stopped",
            })
        ));
        return;
    }
    ctx.out.line(&format!(
        "{}  {}",
        ctx.out.bold(&issue.reference()),
        issue.title
    ));
    if let Some(t) = report.triage {
        ctx.out.line(&format!(
            "  triage: {} {} ({} engine)",
            t.kind.as_deref().unwrap_or("unclear"),
            t.priority,
            t.engine
        ));
    }
    if let Some(l) = report.located {
        ctx.out.line(&format!(
            "  code at {} ({} index, {} files)",
            &l.commit[..12.min(l.commit.len())],
            if l.index.built { "new" } else { "cached" },
            l.index.files
        ));
        ctx.out.line("  ranked files:");
        for (i, f) in l.files.iter().take(10).enumerate() {
            ctx.out.line(&format!(
                "  {:>3}. {}  {}",
                i + 1,
                f.path,
                ctx.out.dim(&format!("{:.3}", f.score))
            ));
            for e in f.evidence.iter().take(3) {
                let line = e.line.map(|n| format!(" (line {n})")).unwrap_or_default();
                ctx.out.line(&format!("         {}{line}", e.detail));
            }
        }
        if let Some(r) = &l.rerank {
            ctx.out.line(&format!(
                "  re-ranked by {} ({} in, {} out tokens): {}",
                r.model, r.input_tokens, r.output_tokens, r.reason
            ));
        }
        ctx.out.line(&format!(
            "  context: {} of {} tokens from {} files",
            l.context.used_tokens,
            l.context.budget_tokens,
            l.context.files.len()
        ));
    }
    if let Some((cands, chosen)) = report.candidates {
        ctx.out.line("  candidates:");
        for c in cands {
            let status = match (&c.error, c.duplicate_of) {
                (Some(e), _) => format!("refused: {}", e.lines().next().unwrap_or("")),
                (None, Some(d)) => format!("same as candidate {d}"),
                (None, None) => {
                    let files: Vec<String> = c
                        .files
                        .iter()
                        .map(|(p, a, r)| format!("{p} +{a} -{r}"))
                        .collect();
                    format!(
                        "{} ({})",
                        files.join(", "),
                        c.edits
                            .iter()
                            .map(|e| format!("{:?}", e.method).to_lowercase())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            };
            let mark = if Some(c.id) == chosen { "*" } else { " " };
            ctx.out.line(&format!("  {mark} {}. {status}", c.id));
            if c.error.is_none() && c.duplicate_of.is_none() && !c.explanation.is_empty() {
                ctx.out.line(&format!(
                    "       {}",
                    c.explanation.lines().next().unwrap_or("")
                ));
            }
        }
        if let Some(id) = chosen {
            ctx.out.line(&format!("  chosen: candidate {id} (candidates/{id}.diff; publish with `autotriage pr {} --run {run_id}`)", issue.reference()));
        }
    }
    if let Some(t) = report.tests {
        super::test::print_lines(ctx, t);
    }
    if let Some(p) = report.published {
        let what = match (&p.url, &p.published) {
            (Some(url), _) => format!("draft PR {url} ({})", p.status),
            (None, Some(b)) => format!(
                "branch {} {} in {}; description {}",
                b.branch,
                b.status,
                p.repo_dir
                    .as_deref()
                    .map_or("the checkout", |d| d.trim_end_matches('/')),
                p.body_path
            ),
            (None, None) => format!("PR {}", p.status),
        };
        ctx.out.line(&format!("  published: {what}"));
    }
    let verdict = verdict
        .map(|v| format!("verdict {v}; "))
        .unwrap_or_default();
    ctx.out.line(&format!(
        "  {verdict}spent ${spent:.4}; run {run_id}; stopped after {}",
        format!("{until:?}").to_lowercase()
    ));
}
