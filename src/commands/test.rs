//! `autotriage test REF [--run ID | --patch FILE]`: the repository's own tests on the
//! base commit and on each candidate, in throwaway worktrees; `test.json`.

use anyhow::Result;
use git2::Oid;
use serde_json::json;

use super::Ctx;
use crate::cli::TestArgs;
use crate::error::CommandError;
use crate::issue::{Issue, IssueRef};
use crate::memory::sqlite::OpenMode;
use crate::pipeline::test::{ensure_commit, preflight, test_stage};
use crate::runs::fs::Run;
use crate::verify::{CandidateInput, TestReport};

/// Run `test`.
pub fn run(args: &TestArgs, ctx: &Ctx) -> Result<()> {
    let r = IssueRef::parse(&args.reference, &ctx.ref_context())?;
    let issue = {
        let memory = ctx.open_memory(OpenMode::ReadOnly)?;
        let mut github = None;
        super::resolve_one(&args.reference, &r, args.from, &*memory, &mut github, ctx)?
    };
    let (dir, repo) = super::checkout(&issue, args.repo_dir.as_deref(), ctx)?;
    let store = ctx.run_store()?;
    // Inputs: a patch file (a new run from HEAD), or a run's candidates (that run).
    let (mut run, base, candidates) = match &args.patch {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CommandError::usage(format!(
                    "cannot read the patch {}: {e}\n  fix: check the path",
                    path.display()
                ))
            })?;
            let base = repo.head()?.peel_to_commit()?.id();
            // Bad input is refused before a run exists.
            if let Err(e) =
                crate::pr::apply_patch(&repo, base, &text, &ctx.config().paths.protected)
            {
                return Err(CommandError::usage(format!(
                    "{}: {e}\n  fix: make the patch against HEAD ({}), or test a run's candidates with --run ID",
                    path.display(),
                    &base.to_string()[..12]
                ))
                .into());
            }
            preflight(&ctx.deps(), &repo, base)?;
            let mut run = store.begin(&issue.repo, issue.number, "test")?;
            run.write_json("issue.json", &issue)?;
            run.set_base_commit(&base.to_string())?;
            run.write_text("candidates/1.diff", &text)?;
            (
                run,
                base,
                vec![CandidateInput {
                    id: 1,
                    diff: text,
                    round: 0,
                }],
            )
        }
        None => {
            let id = match &args.run {
                Some(id) => id.clone(),
                None => store
                    .list()?
                    .into_iter()
                    .find(|m| {
                        m.repo == issue.repo
                            && m.number == issue.number
                            && m.done("repair")
                    })
                    .map(|m| m.id)
                    .ok_or_else(|| {
                        CommandError::usage(format!(
                            "{}: no run of it has candidates\n  fix: run `autotriage fix {}` first, or pass --patch FILE",
                            issue.reference(),
                            args.reference
                        ))
                    })?,
            };
            let run = store.reopen(&id)?;
            let base = run
                .meta
                .base_commit
                .as_deref()
                .and_then(|b| Oid::from_str(b).ok())
                .ok_or_else(|| {
                    CommandError::usage(format!(
                        "run {} has no base commit (it stopped before locate)\n  fix: run `autotriage fix {}` again",
                        run.id(),
                        args.reference
                    ))
                })?;
            let candidates = run_candidates(&store, run.id(), args.candidate)?;
            (run, base, candidates)
        }
    };
    let sink = super::render::Terminal::new(ctx);
    let emit = crate::pipeline::Emitter::new(&sink, issue.reference());
    ensure_commit(&repo, &dir, base, &emit)?;
    let deps = ctx.deps();
    preflight(&deps, &repo, base)?;
    let report = match test_stage(&deps, &emit, &mut run, &repo, base, &candidates, &[]) {
        Ok(r) => r,
        Err(e) => {
            let _ = run.stage_finished("test", Some(&format!("{e:#}")));
            record(ctx, &run);
            return Err(e);
        }
    };
    record(ctx, &run);
    print_report(ctx, &issue, run.id(), &report);
    if report.chosen.is_none() {
        return Err(CommandError {
            kind: crate::error::ErrorKind::NotEligible,
            message: format!(
                "no candidate passed ({}); the results are in run {}",
                report.verdict,
                run.id()
            ),
        }
        .into());
    }
    Ok(())
}

fn record(ctx: &Ctx, run: &Run) {
    if let Ok(mut m) = ctx.open_memory(OpenMode::Create) {
        let _ = crate::memory::Memory::record_run(&mut *m, &run.meta);
    }
}

/// The candidates of a run that applied (`candidates.json`), or just `only`.
pub(crate) fn run_candidates(
    store: &crate::runs::fs::FsRunStore,
    id: &str,
    only: Option<usize>,
) -> Result<Vec<CandidateInput>> {
    let text = store.read_file(id, "candidates.json").map_err(|_| {
        CommandError::usage(format!(
            "run {id} has no candidates.json\n  fix: run `autotriage fix` up to repair first, or pass --patch FILE"
        ))
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let mut out = Vec::new();
    for c in v["candidates"].as_array().into_iter().flatten() {
        let Some(n) = c["id"].as_u64().map(|n| n as usize) else {
            continue;
        };
        if !c["error"].is_null() || !c["duplicate_of"].is_null() || only.is_some_and(|o| o != n) {
            continue;
        }
        let diff = store.read_file(id, &format!("candidates/{n}.diff"))?;
        out.push(CandidateInput {
            id: n,
            diff,
            round: 0,
        });
    }
    if out.is_empty() {
        return Err(CommandError::usage(match only {
            Some(n) => format!("run {id} has no candidate {n} that applied\n  fix: see `autotriage runs show {id} --file candidates.json`"),
            None => format!("run {id} has no candidate that applied\n  fix: run `autotriage fix` again, or pass --patch FILE"),
        })
        .into());
    }
    Ok(out)
}

/// Print the test evidence.
pub(crate) fn print_report(ctx: &Ctx, issue: &Issue, run_id: &str, report: &TestReport) {
    if ctx.out.json {
        ctx.out
            .json(&json!({"ref": issue.reference(), "run_id": run_id, "test": report}));
        return;
    }
    super::render::print_lines(ctx, report);
    ctx.out.line(&format!("  run {run_id}"));
}
