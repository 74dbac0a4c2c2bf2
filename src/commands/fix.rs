//! `autotriage fix REF…`: triage, then locate the code. Later stages (repair, test,
//! pr) join as they are built; `--until` stops early.

use std::path::PathBuf;

use anyhow::Result;
use git2::Repository;
use serde_json::json;

use super::Ctx;
use super::triage::{build_engine, model_session};
use crate::cli::{EngineArg, FixArgs, FixStage};
use crate::error::CommandError;
use crate::forge::github::GithubForge;
use crate::issue::{Issue, IssueRef};
use crate::locate::{self, LocateSettings, Located, PriorFile, rerank};
use crate::memory::Memory;
use crate::memory::sqlite::{OpenMode, SqliteMemory};
use crate::model::session::Session;
use crate::model::usage::CallUsage;

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
        Some(FixStage::Repair) if !configured => {
            return Err(CommandError::usage(
                "the repair stage needs a model, and none is configured\n  fix: set `model:` (and `models:`) in autotriage.yaml, or pass --model NAME / provider:model_id; or stop earlier with --until locate",
            )
            .into());
        }
        Some(u) => u,
        None if configured => FixStage::Repair,
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
        model_session(EngineArg::Model, None, ctx)?
    } else {
        None
    };
    let guard = crate::repair::PathGuard::new(&ctx.config().paths.protected)
        .map_err(|e| CommandError::usage(format!("{e}\n  fix: correct paths.protected")))?;
    // Every reference resolves before any run starts: bad input leaves nothing behind.
    let memory_ro = ctx.open_memory(OpenMode::ReadOnly)?;
    let mut github: Option<GithubForge> = None;
    let mut issues: Vec<Issue> = Vec::new();
    for (raw, r) in &parsed {
        issues.push(super::resolve_one(
            raw,
            r,
            args.from,
            &memory_ro,
            &mut github,
            ctx,
        )?);
    }
    drop(memory_ro);
    let mut checkouts: Vec<(PathBuf, Repository)> = Vec::new();
    for issue in &issues {
        checkouts.push(super::checkout(issue, args.repo_dir.as_deref(), ctx)?);
    }
    let mut memory = ctx.open_memory(OpenMode::Create)?;
    let engine = build_engine(ctx, &mut memory)?;
    let store = ctx.run_store();
    let mut failed = 0usize;
    let mut other_failures = 0usize;
    for (issue, (dir, repo)) in issues.iter().zip(&checkouts) {
        let plan = Plan {
            until,
            rerank: rerank_on,
            settings: &settings,
            guard: &guard,
        };
        match fix_one(
            ctx,
            &plan,
            session.as_ref(),
            &engine,
            &store,
            &mut memory,
            issue,
            dir,
            repo,
        ) {
            Ok(()) => {}
            Err(e) if issues.len() > 1 => {
                failed += 1;
                if crate::error::exit_code_for(&e) != crate::error::Exit::NotEligible {
                    other_failures += 1;
                }
                ctx.out.error(&format!("{}: {e:#}", issue.reference()));
            }
            Err(e) => return Err(e),
        }
    }
    if failed > 0 {
        // Only "no candidate" outcomes: exit 3, as for one issue; anything else: 1.
        let exit = if other_failures == 0 {
            crate::error::Exit::NotEligible
        } else {
            crate::error::Exit::Failure
        };
        return Err(CommandError {
            exit,
            message: format!("{failed} of {} issues got no fix", issues.len()),
        }
        .into());
    }
    Ok(())
}

/// Files changed by fixes of similar past issues of the same repository.
fn prior(memory: &SqliteMemory, issue: &Issue) -> Result<Vec<PriorFile>> {
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
}

#[allow(clippy::too_many_arguments)]
fn fix_one(
    ctx: &Ctx,
    plan: &Plan<'_>,
    session: Option<&Session>,
    engine: &crate::triage::Engine,
    store: &crate::runs::fs::FsRunStore,
    memory: &mut SqliteMemory,
    issue: &Issue,
    dir: &std::path::Path,
    repo: &Repository,
) -> Result<()> {
    let mut run = store.begin(&issue.repo, issue.number, "fix")?;
    let result = fix_stages(
        ctx, plan, session, engine, memory, issue, dir, repo, &mut run,
    );
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
        let _ = memory.record_run(&run.meta);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn fix_stages(
    ctx: &Ctx,
    plan: &Plan<'_>,
    session: Option<&Session>,
    engine: &crate::triage::Engine,
    memory: &mut SqliteMemory,
    issue: &Issue,
    dir: &std::path::Path,
    repo: &Repository,
    run: &mut crate::runs::fs::Run,
) -> Result<()> {
    let settings = plan.settings;
    let mut calls: Vec<CallUsage> = Vec::new();
    // One spend for the issue across its stages: budget.per_issue_usd holds for all.
    let mut spent = 0.0;
    run.write_json("issue.json", issue)?;
    run.stage_started("triage")?;
    let t = engine.triage(issue);
    run.write_json("triage.json", &t)?;
    run.event(
        "triage",
        "decision",
        &format!(
            "engine {} kind {:?} priority {} fixable {}",
            t.engine, t.kind, t.priority, t.fixable
        ),
        json!({"labels": t.labels}),
    )?;
    run.stage_finished("triage", None)?;
    memory.upsert_issues(std::slice::from_ref(issue), &|| false)?;
    memory.record_triage(
        &issue.repo,
        issue.number,
        Some(run.id()),
        &serde_json::to_value(&t)?,
    )?;
    if plan.until == FixStage::Triage {
        memory.record_run(&run.meta)?;
        print(ctx, issue, run.id(), Some(&t), None, None, plan.until);
        return Ok(());
    }

    run.stage_started("locate")?;
    let commit = repo.head()?.peel_to_commit()?.id();
    run.set_base_commit(&commit.to_string())?;
    let cache = ctx.workspace.state_dir().join("index");
    let bar = ctx.out.spinner("indexing the code");
    let prior_files = prior(memory, issue)?;
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
            &prior_files,
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
                &mut calls,
                &mut spent,
            )?;
        }
        Ok(located)
    })();
    bar.finish_and_clear();
    let located = match located {
        Ok(l) => l,
        Err(e) => {
            run.stage_finished("locate", Some(&format!("{e:#}")))?;
            memory.record_run(&run.meta)?;
            return Err(e);
        }
    };
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
    if plan.until == FixStage::Locate {
        memory.record_run(&run.meta)?;
        print(
            ctx,
            issue,
            run.id(),
            Some(&t),
            Some(&located),
            None,
            plan.until,
        );
        return Ok(());
    }

    // Repair: N candidates from the model, each applied to the base or refused.
    let Some(session) = session else {
        return Err(CommandError::usage("the repair stage needs a model").into());
    };
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
        past: past_fixes(memory, &prior_files)?,
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
        },
        &mut spent,
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
    run.write_usage(&calls)?;
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
            &located,
            &mut candidates,
            plan.guard,
            &read,
            &context_files,
        );
        let (choice, edited) = match reviewed {
            Ok(r) => r,
            Err(e) => {
                run.stage_finished("repair", Some(&format!("review: {e:#}")))?;
                memory.record_run(&run.meta)?;
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
    memory.record_run(&run.meta)?;
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
    print(
        ctx,
        issue,
        run.id(),
        Some(&t),
        Some(&located),
        Some((&candidates, chosen)),
        plan.until,
    );
    if let Some(e) = failure.filter(|_| chosen.is_none()) {
        return Err(e.into());
    }
    if chosen.is_none() {
        return Err(CommandError {
            exit: crate::error::Exit::NotEligible,
            message: if review.is_some() {
                format!(
                    "no candidate accepted; they stay in the run for later (`autotriage runs show {}`)",
                    run.id()
                )
            } else {
                format!(
                    "no candidate patch applied ({} asked for; see `autotriage runs show {}`)",
                    candidates.len(),
                    run.id()
                )
            },
        }
        .into());
    }
    Ok(())
}

/// Titles of the past issues whose fixes feed the prior, with their files.
fn past_fixes(
    memory: &SqliteMemory,
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

fn print(
    ctx: &Ctx,
    issue: &Issue,
    run_id: &str,
    triage: Option<&crate::triage::Triage>,
    located: Option<&Located>,
    repair: Option<(&[crate::repair::candidates::Candidate], Option<usize>)>,
    until: FixStage,
) {
    if ctx.out.json {
        ctx.out.json(&json!({
            "ref": issue.reference(),
            "run_id": run_id,
            "until": format!("{until:?}").to_lowercase(),
            "triage": triage,
            "locate": located,
            "repair": repair.map(|(c, chosen)| json!({"candidates": c, "chosen": chosen})),
        }));
        return;
    }
    ctx.out.line(&format!(
        "{}  {}",
        ctx.out.bold(&issue.reference()),
        issue.title
    ));
    if let Some(t) = triage {
        ctx.out.line(&format!(
            "  triage: {} {} ({} engine)",
            t.kind.as_deref().unwrap_or("unclear"),
            t.priority,
            t.engine
        ));
    }
    if let Some(l) = located {
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
    if let Some((cands, chosen)) = repair {
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
    ctx.out.line(&format!(
        "  run {run_id}; stopped after {}",
        format!("{until:?}").to_lowercase()
    ));
}
