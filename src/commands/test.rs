//! `autotriage test REF [--run ID | --patch FILE]`: the repository's own tests on the
//! base commit and on each candidate, in throwaway worktrees; `test.json`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use git2::{Oid, Repository};
use serde_json::json;

use super::Ctx;
use crate::cli::TestArgs;
use crate::error::CommandError;
use crate::issue::{Issue, IssueRef};
use crate::memory::sqlite::OpenMode;
use crate::runs::fs::Run;
use crate::verify::local::LocalRunner;
use crate::verify::{self, CandidateInput, TestPlan, TestReport, Verifier};

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
            preflight(ctx, &repo, base)?;
            let mut run = store.begin(&issue.repo, issue.number, "test")?;
            run.write_json("issue.json", &issue)?;
            run.set_base_commit(&base.to_string())?;
            run.write_text("candidates/1.diff", &text)?;
            (run, base, vec![CandidateInput { id: 1, diff: text }])
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
    ensure_commit(&repo, &dir, base, ctx)?;
    preflight(ctx, &repo, base)?;
    let report = match test_stage(ctx, &mut run, &repo, base, &candidates) {
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
        out.push(CandidateInput { id: n, diff });
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

/// The base commit must be in the checkout: fetch it from `origin` when it is not.
pub(crate) fn ensure_commit(repo: &Repository, dir: &Path, base: Oid, ctx: &Ctx) -> Result<()> {
    if repo.find_commit(base).is_ok() {
        return Ok(());
    }
    let sha = base.to_string();
    ctx.out.info(&format!(
        "fetching the base commit {} from origin",
        &sha[..12]
    ));
    let fetched = repo
        .find_remote("origin")
        .and_then(|mut r| r.fetch(&[sha.as_str()], None, None))
        .is_ok();
    if fetched && repo.find_commit(base).is_ok() {
        return Ok(());
    }
    Err(CommandError::usage(format!(
        "the base commit {sha} is not in {} and could not be fetched from origin\n  fix: run `git fetch origin {sha}` there (or pass --repo-dir with a checkout that has it)",
        dir.display()
    ))
    .into())
}

/// What can be known before a run is written: a test command, and the sandbox the
/// policy asks for.
pub(crate) fn preflight(ctx: &Ctx, repo: &Repository, base: Oid) -> Result<()> {
    let cfg = &ctx.config().test;
    let read = |p: &str| crate::locate::files::read_at(repo, base, p);
    TestPlan::for_commit(
        cfg.setup.clone(),
        cfg.command.clone(),
        cfg.timeout,
        &read,
        base,
    )?;
    match cfg.runner {
        crate::config::TestRunner::Local => {
            crate::verify::sandbox::resolve(cfg.sandbox, &cfg.pass_env)
                .map_err(crate::verify::VerifyError::Sandbox)?;
        }
        crate::config::TestRunner::Codebuild => {
            codebuild_runner(ctx)?;
        }
    }
    Ok(())
}

/// The CodeBuild runner of `test.project`, `test.bucket` (else `runs.bucket`).
fn codebuild_runner(ctx: &Ctx) -> Result<crate::verify::codebuild::CodeBuildRunner> {
    let cfg = &ctx.config().test;
    let Some(project) = cfg.project.clone() else {
        return Err(CommandError::usage(
            "test.runner is codebuild, and test.project is unset\n  fix: set test.project to the CodeBuild project that runs the tests",
        )
        .into());
    };
    let Some(bucket) = cfg
        .bucket
        .clone()
        .or_else(|| ctx.config().runs.bucket.clone())
    else {
        return Err(CommandError::usage(
            "test.runner is codebuild, and neither test.bucket nor runs.bucket is set\n  fix: set test.bucket to a bucket the project can read and write",
        )
        .into());
    };
    Ok(crate::verify::codebuild::CodeBuildRunner::connect(
        &crate::verify::codebuild::CodeBuildSettings {
            project,
            bucket,
            prefix: ctx
                .config()
                .runs
                .prefix
                .clone()
                .unwrap_or_else(|| "autotriage".into()),
            region: cfg.region.clone(),
            endpoint_url: cfg.endpoint_url.clone(),
        },
    )?)
}

/// The test stage inside a run: the plan, the sandbox, the baseline, each candidate,
/// the choice; `tests/*.log` and `test.json`. Returns the report.
pub(crate) fn test_stage(
    ctx: &Ctx,
    run: &mut Run,
    repo: &Repository,
    base: Oid,
    candidates: &[CandidateInput],
) -> Result<TestReport> {
    run.stage_started("test")?;
    let cfg = &ctx.config().test;
    let read = |p: &str| crate::locate::files::read_at(repo, base, p);
    let mut plan = TestPlan::for_commit(
        cfg.setup.clone(),
        cfg.command.clone(),
        cfg.timeout,
        &read,
        base,
    )?;
    plan.targeted = cfg.targeted;
    plan.max_targets = cfg.max_targets.max(1);
    // The project's own environment: a detected pytest command runs with the
    // checkout's `.venv` (or `venv`) interpreter when there is one, as its user would.
    if plan.detected
        && plan.flavor == verify::Flavor::Pytest
        && let Some(python) = repo.workdir().and_then(project_python)
        && let Some(rest) = plan.command.strip_prefix("python3 ")
    {
        plan.command = format!(
            "{} {rest}",
            verify::detect::shell_quote(&python.display().to_string())
        );
    }
    let cache = ctx.workspace.cache_dir();
    let key = short_hash(
        &repo
            .workdir()
            .unwrap_or_else(|| repo.path())
            .display()
            .to_string(),
    );
    // Build caches shared by the worktrees of one repository, writable in the sandbox.
    let build_cache = match plan.flavor {
        verify::Flavor::Cargo => Some(("CARGO_TARGET_DIR", cache.join("targets").join(&key))),
        verify::Flavor::Go => Some(("GOCACHE", cache.join("go-build").join(&key))),
        _ => None,
    };
    let runner: Box<dyn verify::Runner> = match cfg.runner {
        crate::config::TestRunner::Codebuild => Box::new(codebuild_runner(ctx)?),
        crate::config::TestRunner::Local => {
            let (sandbox, warning) = crate::verify::sandbox::resolve(cfg.sandbox, &cfg.pass_env)
                .map_err(crate::verify::VerifyError::Sandbox)?;
            if let Some(w) = warning {
                ctx.out.warn(&w);
            }
            Box::new(LocalRunner {
                sandbox,
                build_cache: build_cache.map(|(var, dir)| (var.to_string(), dir)),
                setup_network: cfg.setup_network,
            })
        }
    };
    let _polling = crate::interrupt::Polling::enter();
    let stop = || crate::interrupt::requested();
    let verifier = Verifier {
        repo,
        base,
        plan: &plan,
        runner: runner.as_ref(),
        worktrees: cache.join("worktrees"),
        prefix: run.id().to_string(),
        cache: cache.join("baselines"),
        protected: ctx.config().paths.protected.clone(),
        stop: &stop,
        base_again: Default::default(),
        import_prefix: Default::default(),
    };
    run.event(
        "test",
        "decision",
        &format!(
            "command `{}` ({}{}), setup {}, {}, limit {} s",
            plan.command,
            if plan.detected {
                "detected"
            } else {
                "configured"
            },
            format_args!(", {:?}", plan.flavor)
                .to_string()
                .to_lowercase(),
            plan.setup.as_deref().unwrap_or("none"),
            runner.describe(),
            plan.timeout_seconds
        ),
        json!(null),
    )?;
    let bar = ctx
        .out
        .progress(candidates.len() as u64 + 1, "tests on the base commit");
    let baseline = verifier.baseline();
    let baseline = match baseline {
        Ok(b) => b,
        Err(e) => {
            bar.finish_and_clear();
            return Err(e.into());
        }
    };
    bar.inc(1);
    run.write_text("tests/baseline.log", &baseline.run.output)?;
    run.event(
        "test",
        "read",
        &format!(
            "baseline {}: {} passing, {} failing ({}, {:.1} s)",
            if baseline.cached {
                "from the cache"
            } else {
                "ran"
            },
            baseline
                .run
                .results
                .with(verify::results::Outcome::Passed)
                .len(),
            baseline
                .run
                .results
                .with(verify::results::Outcome::Failed)
                .len(),
            baseline.run.results.source,
            baseline.run.seconds
        ),
        json!(null),
    )?;
    let files = verify::tree_paths(repo, base);
    let mut reports = Vec::new();
    for c in candidates {
        bar.set_message(format!("tests on candidate {}", c.id));
        let r = verifier.test_candidate(c, &baseline.run.results, &files);
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                bar.finish_and_clear();
                return Err(e.into());
            }
        };
        for s in &r.runs {
            run.write_text(
                &format!("tests/{}.log", s.label.replace(' ', "-")),
                &s.output,
            )?;
        }
        run.event(
            "test",
            "decision",
            &format!("candidate {}: {} — {}", r.id, r.verdict.as_str(), r.summary),
            json!({"fixed": r.fixed, "regressions": r.regressions, "flaky": r.flaky}),
        )?;
        reports.push(r);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let report = TestReport::new(base, plan, runner.as_ref(), baseline, reports);
    run.write_json("test.json", &report)?;
    let error = report
        .chosen
        .is_none()
        .then(|| format!("no candidate passed: {}", report.summary));
    run.stage_finished("test", error.as_deref())?;
    Ok(report)
}

fn short_hash(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Print the test evidence.
pub(crate) fn print_report(ctx: &Ctx, issue: &Issue, run_id: &str, report: &TestReport) {
    if ctx.out.json {
        ctx.out
            .json(&json!({"ref": issue.reference(), "run_id": run_id, "test": report}));
        return;
    }
    print_lines(ctx, report);
    ctx.out.line(&format!("  run {run_id}"));
}

/// The report's lines, shared with `fix`.
pub(crate) fn print_lines(ctx: &Ctx, report: &TestReport) {
    let b = &report.baseline.run;
    ctx.out.line(&format!(
        "  tests: `{}` ({}), {}",
        report.plan.command,
        if report.plan.detected {
            "detected"
        } else {
            "configured"
        },
        report.runner
    ));
    ctx.out.line(&format!(
        "  base {}: {} passing, {} failing{}",
        report.base_commit.get(..12).unwrap_or(&report.base_commit),
        b.results.with(verify::results::Outcome::Passed).len(),
        b.results.with(verify::results::Outcome::Failed).len(),
        if report.baseline.cached {
            " (cached)"
        } else {
            ""
        }
    ));
    for c in &report.candidates {
        let mark = if Some(c.id) == report.chosen {
            "*"
        } else {
            " "
        };
        ctx.out.line(&format!(
            "  {mark} candidate {}: {} — {}",
            c.id,
            c.verdict.as_str(),
            c.summary
        ));
    }
}

/// Where the test worktrees of runs live (for `runs prune`).
pub(crate) fn worktrees_dir(ctx: &Ctx) -> PathBuf {
    ctx.workspace.cache_dir().join("worktrees")
}

/// The interpreter of a checkout's own environment (`.venv/bin/python`, then
/// `venv/bin/python`), when there is one.
fn project_python(workdir: &std::path::Path) -> Option<std::path::PathBuf> {
    [".venv", "venv"]
        .iter()
        .map(|d| workdir.join(d).join("bin/python"))
        .find(|p| p.exists())
}
