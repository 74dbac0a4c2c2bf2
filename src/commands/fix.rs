//! `autotriage fix REF…`, the terminal front-end of [`crate::pipeline::fix`]: flags →
//! jobs → the pipeline → the report (text, or JSON lines) and the batch table. The
//! dry-run review is the terminal's answer to the pipeline's question.

use std::sync::Mutex;

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use super::render::Terminal;
use super::{build_engine, model_session};
use crate::cli::{EngineArg, FixArgs, FixStage, ForgeArg, SourceArg};
use crate::error::{CommandError, ErrorKind};
use crate::forge::github::GithubForge;
use crate::issue::{Issue, IssueRef};
use crate::locate::LocateSettings;
use crate::memory::sqlite::OpenMode;
use crate::memory::{ListFilter, Memory};
use crate::pipeline::fix::{FixJob, FixOutcome, FixPlan, FixReport, PublishTo};

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
        let mut issue = issue;
        // The limits of a maintainer's grant, checked again where the fix runs.
        if let Some(want) = &args.granted_body_sha256
            && crate::serve::route::body_digest(&issue.body) != *want
        {
            return Err(crate::error::CommandError {
                kind: crate::error::ErrorKind::NotEligible,
                message: format!(
                    "{}: the issue was edited after the maintainer asked for the fix; ask again with /autotriage fix",
                    issue.reference()
                ),
            }
            .into());
        }
        if let Some(at) = &args.granted_as_of {
            issue
                .comments
                .retain(|c| c.created_at.as_deref().is_none_or(|t| t <= at.as_str()));
        }
        issues.push((issue, remote));
    }
    drop(memory_ro);
    let mut jobs: Vec<FixJob> = Vec::new();
    for (issue, remote) in issues {
        let (dir, repo) = super::checkout(&issue, args.repo_dir.as_deref(), ctx)?;
        let forge = match args.forge {
            Some(f) => f,
            None if remote && crate::forge::github::token().is_some() => ForgeArg::Github,
            None => ForgeArg::Local,
        };
        let publish_to = match forge {
            ForgeArg::Github if until == FixStage::Pr => {
                PublishTo::Github(super::github_target(&issue, &issue.reference(), ctx)?)
            }
            ForgeArg::Github => super::github_target(&issue, &issue.reference(), ctx)
                .map_or(PublishTo::Local, PublishTo::Github),
            ForgeArg::Local => PublishTo::Local,
        };
        jobs.push(FixJob {
            issue,
            dir,
            repo: Mutex::new(repo),
            publish_to,
        });
    }
    let mut memory = ctx.open_memory(OpenMode::Create)?;
    let engine = build_engine(ctx, &mut *memory)?;
    drop(memory);
    let plan = FixPlan {
        until,
        rerank: rerank_on,
        settings: &settings,
        guard: &guard,
        restart: args.restart,
        dry_run: ctx.global.dry_run,
        force: ctx.global.force,
    };
    // A query is a batch even when it finds one issue: one table at the end.
    let batch = jobs.len() > 1 || parsed.iter().any(|(_, r)| matches!(r, IssueRef::Repo(_)));
    let deps = ctx.deps();
    let sink = Terminal::new(ctx);
    let workers = ctx.global.jobs.unwrap_or(1);
    let outcomes = crate::pipeline::fix::run_batch(
        &deps,
        &plan,
        session.as_ref(),
        &engine,
        &jobs,
        workers,
        &sink,
        &|job, outcome| show(ctx, job, outcome, until, batch),
    );
    if !batch {
        return match outcomes.into_iter().next() {
            Some(o) => o.error.map_or(Ok(()), Err),
            None => Ok(()),
        };
    }
    print_table(ctx, &outcomes);
    let failed: Vec<&FixOutcome> = outcomes.iter().filter(|o| o.error.is_some()).collect();
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

/// What one job got to, as it finishes: its report, and in a batch its error.
fn show(ctx: &Ctx, job: &FixJob, outcome: &FixOutcome, until: FixStage, batch: bool) {
    if outcome.report.shown {
        print(
            ctx,
            &job.issue,
            outcome.run_id.as_deref().unwrap_or(""),
            &outcome.report,
            until,
            outcome.spent,
            batch,
        );
    }
    if batch && let Some(e) = &outcome.error {
        ctx.out.error(&format!("{}: {e:#}", job.issue.reference()));
    }
}

fn print_table(ctx: &Ctx, outcomes: &[FixOutcome]) {
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
    let Some(repo) = crate::pipeline::triage::github_repo(&issue.repo) else {
        return Ok(issue);
    };
    let r = IssueRef::Remote {
        repo,
        number: issue.number,
    };
    // Read from GitHub only: memory is not consulted.
    super::resolve_one(raw, &r, SourceArg::Github, memory, github, ctx)
}

/// Print what a job got to; in a batch (`brief`), one line per issue (the table at the
/// end has the rest).
fn print(
    ctx: &Ctx,
    issue: &Issue,
    run_id: &str,
    report: &FixReport,
    until: FixStage,
    spent: f64,
    brief: bool,
) {
    let verdict = report.tests.as_ref().map(|t| t.verdict.as_str());
    if ctx.out.json {
        let line = json!({
            "ref": issue.reference(),
            "run_id": run_id,
            "until": format!("{until:?}").to_lowercase(),
            "triage": report.triage,
            "locate": report.located,
            "repair": report.candidates.as_ref().map(|(c, chosen)| json!({"candidates": c, "chosen": chosen})),
            "test": report.tests,
            "pr": report.published,
            "verdict": verdict,
            "spent_usd": (spent * 1e6).round() / 1e6 + 0.0,
        });
        ctx.out.json_line(&line);
        return;
    }
    if brief {
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
    if let Some(t) = &report.triage {
        ctx.out.line(&format!(
            "  triage: {} {} ({} engine)",
            t.kind.as_deref().unwrap_or("unclear"),
            t.priority,
            t.engine
        ));
    }
    if let Some(l) = &report.located {
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
    if let Some((cands, chosen)) = &report.candidates {
        let chosen = *chosen;
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
    if let Some(t) = &report.tests {
        super::render::print_lines(ctx, t);
    }
    if let Some(p) = &report.published {
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
