//! The test stage: the repository's own tests on the base commit and on each
//! candidate, in throwaway worktrees (sandboxed, or on CodeBuild); `tests/*.log` and
//! `test.json` in the run.

use std::path::Path;

use anyhow::Result;
use git2::{Oid, Repository};
use serde_json::json;

use super::{Deps, Emitter, What};
use crate::error::CommandError;
use crate::runs::fs::Run;
use crate::verify::local::LocalRunner;
use crate::verify::{self, CandidateInput, TestPlan, TestReport, Verifier};

/// The base commit must be in the checkout: fetch it from `origin` when it is not.
pub fn ensure_commit(repo: &Repository, dir: &Path, base: Oid, emit: &Emitter<'_>) -> Result<()> {
    if repo.find_commit(base).is_ok() {
        return Ok(());
    }
    let sha = base.to_string();
    emit.say(
        "test",
        format!("fetching the base commit {} from origin", &sha[..12]),
        What::Info,
    );
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
pub fn preflight(deps: &Deps<'_>, repo: &Repository, base: Oid) -> Result<()> {
    let cfg = &deps.config.test;
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
            codebuild_runner(deps)?;
        }
    }
    Ok(())
}

/// The CodeBuild runner of `test.project`, `test.bucket` (else `runs.bucket`).
fn codebuild_runner(deps: &Deps<'_>) -> Result<crate::verify::codebuild::CodeBuildRunner> {
    let cfg = &deps.config.test;
    let Some(project) = cfg.project.clone() else {
        return Err(CommandError::usage(
            "test.runner is codebuild, and test.project is unset\n  fix: set test.project to the CodeBuild project that runs the tests",
        )
        .into());
    };
    let Some(bucket) = cfg
        .bucket
        .clone()
        .or_else(|| deps.config.runs.bucket.clone())
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
            prefix: deps
                .config
                .runs
                .prefix
                .clone()
                .unwrap_or_else(|| "autotriage".into()),
            region: cfg.region.clone(),
            endpoint_url: cfg.endpoint_url.clone(),
        },
    )?)
}

/// The test plan of `base` (the detected or configured command, in the checkout's own
/// venv when it has one) and the runner the config names.
pub fn test_setup(
    deps: &Deps<'_>,
    emit: &Emitter<'_>,
    run: &Run,
    repo: &Repository,
    base: Oid,
) -> Result<(TestPlan, Box<dyn verify::Runner>)> {
    let cfg = &deps.config.test;
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
    let cache = deps.cache_dir.clone();
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
        crate::config::TestRunner::Codebuild => Box::new(codebuild_runner(deps)?),
        crate::config::TestRunner::Local => {
            let (sandbox, warning) = crate::verify::sandbox::resolve(cfg.sandbox, &cfg.pass_env)
                .map_err(crate::verify::VerifyError::Sandbox)?;
            if let Some(w) = warning {
                emit.run_event(run, "test", w, What::Warning)?;
            }
            Box::new(LocalRunner {
                sandbox,
                build_cache: build_cache.map(|(var, dir)| (var.to_string(), dir)),
                setup_network: cfg.setup_network,
            })
        }
    };
    Ok((plan, runner))
}

/// The test stage inside a run: the plan, the sandbox, the baseline, each candidate,
/// the choice; `tests/*.log` and `test.json`. Returns the report.
pub fn test_stage(
    deps: &Deps<'_>,
    emit: &Emitter<'_>,
    run: &mut Run,
    repo: &Repository,
    base: Oid,
    candidates: &[CandidateInput],
    earlier: &[crate::verify::CandidateReport],
) -> Result<TestReport> {
    run.stage_started("test")?;
    emit.run_event(run, "test", "test started", What::StageStarted)?;
    let (plan, runner) = test_setup(deps, emit, run, repo, base)?;
    let cache = deps.cache_dir.clone();
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
        protected: deps.config.paths.protected.clone(),
        stop: &stop,
        base_again: Default::default(),
        import_prefix: Default::default(),
    };
    emit.run_event(
        run,
        "test",
        format!(
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
        What::Decision(json!(null)),
    )?;
    let steps = candidates.len() as u64 + 1;
    let progress = |step: u64, message: String| {
        emit.say(
            "test",
            message,
            What::Progress {
                step: Some(step),
                of: Some(steps),
            },
        )
    };
    let done = || emit.say("test", "", What::ProgressDone);
    progress(0, "tests on the base commit".into());
    let baseline = verifier.baseline();
    let baseline = match baseline {
        Ok(b) => b,
        Err(e) => {
            done();
            return Err(e.into());
        }
    };
    progress(1, "tests on the base commit".into());
    run.write_text("tests/baseline.log", &baseline.run.output)?;
    emit.run_event(
        run,
        "test",
        format!(
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
        What::Read(json!(null)),
    )?;
    let files = verify::tree_paths(repo, base);
    let mut reports = earlier.to_vec();
    for (i, c) in candidates.iter().enumerate() {
        progress(i as u64 + 1, format!("tests on candidate {}", c.id));
        let r = verifier.test_candidate(c, &baseline.run.results, &files);
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                done();
                return Err(e.into());
            }
        };
        for s in &r.runs {
            run.write_text(
                &format!("tests/{}.log", s.label.replace(' ', "-")),
                &s.output,
            )?;
        }
        emit.run_event(
            run,
            "test",
            format!("candidate {}: {} — {}", r.id, r.verdict.as_str(), r.summary),
            What::Decision(
                json!({"fixed": r.fixed, "regressions": r.regressions, "flaky": r.flaky}),
            ),
        )?;
        reports.push(r);
        progress(i as u64 + 2, format!("tests on candidate {}", c.id));
    }
    done();
    let mut report = TestReport::new(base, plan, runner.as_ref(), baseline, reports);
    report.rounds = report.candidates.iter().map(|c| c.round).max().unwrap_or(0);
    run.write_json("test.json", &report)?;
    let error = report
        .chosen
        .is_none()
        .then(|| format!("no candidate passed: {}", report.summary));
    run.stage_finished("test", error.as_deref())?;
    emit.run_event(
        run,
        "test",
        format!("verdict {}: {}", report.verdict, report.summary),
        What::Tested {
            verdict: report.verdict.clone(),
            chosen: report.chosen,
            best: report.best,
        },
    )?;
    emit.run_event(run, "test", "test finished", What::StageFinished { error })?;
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

/// The interpreter of a checkout's own environment (`.venv/bin/python`, then
/// `venv/bin/python`), when there is one.
fn project_python(workdir: &std::path::Path) -> Option<std::path::PathBuf> {
    [".venv", "venv"]
        .iter()
        .map(|d| workdir.join(d).join("bin/python"))
        .find(|p| p.exists())
}
