//! The fix job: triage → trust gate → locate → repair (N candidates) → test each →
//! choose → publish (a draft), each stage written to the run folder as it finishes. A
//! job stops after `until`; an interrupted run resumes after its last finished stage;
//! spend carries over into the resumed run, so the budget holds for the issue.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Result;
use git2::Repository;
use serde_json::json;

use super::{Deps, Emitter, ReviewAnswer, Sink, What};
use crate::cli::{EngineArg, FixStage};
use crate::error::{CommandError, ErrorKind};
use crate::issue::{Issue, RepoId};
use crate::locate::{self, LocateSettings, Located, PriorFile, rerank};
use crate::memory::Memory;
use crate::memory::sqlite::OpenMode;
use crate::model::session::Session;
use crate::model::usage::CallUsage;
use crate::repair::candidates::Candidate;
use crate::runs::fs::Run;
use crate::verify::TestReport;

/// How long a stored triage is reused instead of triaging again.
const TRIAGE_REUSE_HOURS: i64 = 24;

/// Where a fix is published.
#[derive(Debug, Clone, PartialEq)]
pub enum PublishTo {
    /// A branch in the checkout and `pr.md`.
    Local,
    /// A branch and a draft pull request on this GitHub repository.
    Github(RepoId),
}

/// One issue to fix, with its checkout.
pub struct FixJob {
    /// The issue (read live when its trust matters).
    pub issue: Issue,
    /// The checkout.
    pub dir: PathBuf,
    /// Its repository. git2 repositories are not Sync; a job is worked on by one thread
    /// at a time.
    pub repo: Mutex<Repository>,
    /// Where the fix goes.
    pub publish_to: PublishTo,
}

/// What every job of a command does.
pub struct FixPlan<'a> {
    /// The last stage to run.
    pub until: FixStage,
    /// Ask the model to re-rank the located files.
    pub rerank: bool,
    /// Locate settings.
    pub settings: &'a LocateSettings,
    /// Paths edits may not touch.
    pub guard: &'a crate::repair::PathGuard,
    /// Start a new run even when an interrupted one could resume.
    pub restart: bool,
    /// Write nothing outside the run (and ask the review question).
    pub dry_run: bool,
    /// Skip the trust gate.
    pub force: bool,
}

/// What a job got to, for a front-end to show.
#[derive(Default)]
pub struct FixReport {
    /// The triage.
    pub triage: Option<crate::triage::Triage>,
    /// The located files and context.
    pub located: Option<Located>,
    /// The candidates and the one chosen.
    pub candidates: Option<(Vec<Candidate>, Option<usize>)>,
    /// The test stage's report.
    pub tests: Option<TestReport>,
    /// What was published.
    pub published: Option<super::publish::PublishOutcome>,
    /// The job reached a point where its report is the answer (a front-end shows it);
    /// false when it failed before.
    pub shown: bool,
}

/// What happened to one issue.
pub struct FixOutcome {
    /// `owner/repo#N`.
    pub reference: String,
    /// Its run.
    pub run_id: Option<String>,
    /// `fixed`, `unproven`, `not eligible`… or the stage it stopped after.
    pub verdict: String,
    /// The PR URL or branch.
    pub published: Option<String>,
    /// USD spent on the issue (a resumed run included).
    pub spent: f64,
    /// Why it failed.
    pub error: Option<anyhow::Error>,
    /// What it got to.
    pub report: FixReport,
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

/// Run `jobs` on `workers` threads (at most one per job), each through [`run_fix`];
/// `on_done` sees each outcome as its job ends. After Ctrl-C no new job starts (the
/// running ones stop at their next check). Outcomes come back in the jobs' order.
#[allow(clippy::too_many_arguments)]
pub fn run_batch(
    deps: &Deps<'_>,
    plan: &FixPlan<'_>,
    session: Option<&Session>,
    engine: &crate::triage::Engine,
    jobs: &[FixJob],
    workers: usize,
    sink: &dyn Sink,
    on_done: &(dyn Fn(&FixJob, &FixOutcome) + Sync),
) -> Vec<FixOutcome> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let workers = workers.clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, FixOutcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    if crate::interrupt::requested() {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = jobs.get(i) else { break };
                    let outcome = run_fix(deps, plan, session, engine, job, sink);
                    on_done(job, &outcome);
                    if let Ok(mut r) = results.lock() {
                        r.push((i, outcome));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, o)| o).collect()
}

/// Work on one issue in its own run (or the interrupted one it resumes), reporting to
/// `sink`. Never
/// panics the batch: every failure comes back in the outcome.
pub fn run_fix(
    deps: &Deps<'_>,
    plan: &FixPlan<'_>,
    session: Option<&Session>,
    engine: &crate::triage::Engine,
    job: &FixJob,
    sink: &dyn Sink,
) -> FixOutcome {
    let issue = &job.issue;
    let emit = Emitter::new(sink, issue.reference());
    let mut outcome = FixOutcome {
        reference: issue.reference(),
        run_id: None,
        verdict: "error".into(),
        published: None,
        spent: 0.0,
        error: None,
        report: FixReport::default(),
    };
    let repo = match job.repo.lock() {
        Ok(r) => r,
        Err(p) => p.into_inner(),
    };
    let lease_key = format!("fix/{}#{}", issue.repo, issue.number);
    let holder = crate::runs::holder();
    let ttl = deps.config.memory.lease_seconds.unwrap_or(600).max(3);
    let started = (|| -> Result<(crate::memory::AnyMemory, Run)> {
        let mut memory = deps.backends.open_memory(OpenMode::Create)?;
        // The hold on the issue in memory: with a team memory, no other machine fixes
        // it at the same time (the run store's lock covers this machine).
        let mut standing = memory.acquire_lease(&lease_key, &holder, ttl)?;
        // A process of this machine that died without giving it back (kill -9, a
        // crash): taken over at once, as the run store's lock would be.
        if let Some(l) = standing
            .as_ref()
            .filter(|l| crate::runs::holder_is_gone(&l.holder))
        {
            memory.release_lease(&lease_key, &l.holder)?;
            standing = memory.acquire_lease(&lease_key, &holder, ttl)?;
        }
        if let Some(l) = standing {
            let until = chrono::DateTime::from_timestamp(l.expires_at, 0)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default();
            return Err(crate::runs::RunStoreError::Busy {
                reference: issue.reference(),
                holder: format!("{} (its hold in {})", l.holder, memory.location()),
                lapse: format!("; a crashed run's hold lapses at {until}"),
            }
            .into());
        }
        let opened = (|| -> Result<Run> {
            let store = deps.backends.open_runs()?;
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
                    emit.say(
                        "job",
                        format!(
                            "{}: resuming the interrupted run {}{} (start anew with --restart)",
                            issue.reference(),
                            m.id,
                            finished
                                .last()
                                .map(|s| format!(" after its {s} stage"))
                                .unwrap_or_default()
                        ),
                        What::Resumed {
                            after: finished.last().map(|s| s.to_string()),
                        },
                    );
                    store.reopen(&m.id)?
                }
                None => store.begin(&issue.repo, issue.number, "fix")?,
            };
            Ok(run)
        })();
        match opened {
            Ok(run) => Ok((memory, run)),
            Err(e) => {
                let _ = memory.release_lease(&lease_key, &holder);
                Err(e)
            }
        }
    })();
    let (mut memory, mut run) = match started {
        Ok(x) => x,
        Err(e) => {
            emit.say(
                "job",
                format!("{e:#}"),
                What::Finished {
                    verdict: outcome.verdict.clone(),
                    error: Some(format!("{e:#}")),
                },
            );
            outcome.error = Some(e);
            return outcome;
        }
    };
    outcome.run_id = Some(run.id().to_string());
    // Renewed every third of its time while the stages run, on a handle of its own.
    let done = std::sync::atomic::AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            let Ok(mut renewing) = deps.backends.open_memory(OpenMode::Create) else {
                return;
            };
            let every =
                std::time::Duration::from_secs(ttl / 3).max(std::time::Duration::from_secs(1));
            let mut last = std::time::Instant::now();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if last.elapsed() >= every {
                    last = std::time::Instant::now();
                    // An error (a throttle, a busy file) is tried again next time; only
                    // another holder ends the renewing.
                    if let Ok(Some(_)) = renewing.acquire_lease(&lease_key, &holder, ttl) {
                        return;
                    }
                }
            }
        });
        let result = fix_stages(
            deps,
            &emit,
            plan,
            session,
            engine,
            &mut *memory,
            job,
            &repo,
            &mut run,
            &mut outcome,
        );
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    });
    let _ = memory.release_lease(&lease_key, &holder);
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
    }
    let _ = memory.record_run(&run.meta);
    let _ = emit.run_event(
        &run,
        "job",
        format!("spent ${:.4}", outcome.spent),
        What::Spent { usd: outcome.spent },
    );
    let _ = emit.run_event(
        &run,
        "job",
        format!("{}: {}", issue.reference(), outcome.verdict),
        What::Finished {
            verdict: outcome.verdict.clone(),
            error: result.as_ref().err().map(|e| format!("{e:#}")),
        },
    );
    outcome.error = result.err();
    outcome
}

/// The trust policy and the kind, before any model writes code for the issue.
fn eligibility(deps: &Deps<'_>, issue: &Issue, t: &crate::triage::Triage) -> Result<(), String> {
    let trust = crate::trust::evaluate(issue, &deps.config.trust.trigger_label);
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
    deps: &Deps<'_>,
    emit: &Emitter<'_>,
    plan: &FixPlan<'_>,
    session: Option<&Session>,
    engine: &crate::triage::Engine,
    memory: &mut dyn Memory,
    job: &FixJob,
    repo: &Repository,
    run: &mut Run,
    outcome: &mut FixOutcome,
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
        emit.run_event(run, "triage", "triage started", What::StageStarted)?;
        // The configured engine (`triage.engine`): with a model, `auto` asks it where
        // the offline engine abstains.
        let (t, reused) = match recent_triage(memory, issue) {
            Some(t) => (t, true),
            None => {
                let mode: EngineArg = deps.config.triage.engine.into();
                let asked = session.filter(|_| mode != EngineArg::Offline);
                let d = super::triage::decide(engine, asked, mode, issue);
                // Said, not swallowed: the offline triage stands in for the model's.
                if let Some(why) = d
                    .budget_stop
                    .as_ref()
                    .or(d.error.as_ref())
                    .or(d.model_failure.as_ref().map(|(e, _)| e))
                {
                    emit.run_event(
                        run,
                        "triage",
                        format!(
                            "{}: the model's triage is not used ({}); the offline triage stands in",
                            issue.reference(),
                            why.lines().next().unwrap_or("")
                        ),
                        What::Warning,
                    )?;
                }
                spent += d.calls.iter().map(|c| c.cost_usd).sum::<f64>();
                calls.extend(d.calls);
                (d.triage.unwrap_or_else(|| engine.triage(issue)), false)
            }
        };
        run.write_json("triage.json", &t)?;
        emit.run_event(
            run,
            "triage",
            format!(
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
            What::Decision(json!({"labels": t.labels})),
        )?;
        super::triage::finish_triage(emit, run, issue, &t, reused, None)?;
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
    outcome.report.triage = Some(t.clone());
    if plan.until == FixStage::Triage {
        outcome.report.shown = true;
        return Ok(());
    }

    // Locate.
    let commit = match run.meta.base_commit.as_deref() {
        Some(b) => git2::Oid::from_str(b)?,
        None => repo.head()?.peel_to_commit()?.id(),
    };
    warn_if_dirty(emit, run, repo, dir, commit)?;
    let prior_files = prior(memory, issue)?;
    let located: Located = if run.meta.done("locate") {
        run.read_json("context.json")?
    } else {
        run.stage_started("locate")?;
        emit.run_event(run, "locate", "locate started", What::StageStarted)?;
        run.set_base_commit(&commit.to_string())?;
        let located = locate_stage(
            deps,
            emit,
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
        emit.run_event(
            run,
            "locate",
            format!(
                "ranked {} files; context {} of {} tokens from {} files",
                located.files.len(),
                located.context.used_tokens,
                located.context.budget_tokens,
                located.context.files.len()
            ),
            What::Decision(
                json!({"top": located.files.iter().take(5).map(|f| &f.path).collect::<Vec<_>>()}),
            ),
        )?;
        run.stage_finished("locate", None)?;
        emit.run_event(
            run,
            "locate",
            format!("located {} files", located.files.len()),
            What::Located {
                top: located
                    .files
                    .iter()
                    .take(5)
                    .map(|f| f.path.clone())
                    .collect(),
                context_tokens: located.context.used_tokens,
            },
        )?;
        emit.run_event(
            run,
            "locate",
            "locate finished",
            What::StageFinished { error: None },
        )?;
        located
    };
    outcome.spent = spent;
    outcome.verdict = "located".into();
    if plan.until == FixStage::Locate {
        outcome.report.located = Some(located);
        outcome.report.shown = true;
        return Ok(());
    }

    // The trust policy, before a model writes code that the tests then run.
    if !plan.force
        && let Err(why) = eligibility(deps, issue, &t)
    {
        emit.run_event(
            run,
            "repair",
            format!("not eligible: {why}"),
            What::Decision(json!(null)),
        )?;
        outcome.verdict = "not eligible".into();
        outcome.report.located = Some(located);
        outcome.report.shown = true;
        return Err(CommandError {
            kind: ErrorKind::NotEligible,
            message: format!(
                "{}: not eligible for a fix: {why}\n  fix: a maintainer can add the `{}` label, or run with --force",
                issue.reference(),
                deps.config.trust.trigger_label
            ),
        }
        .into());
    }

    // Repair.
    let Some(session) = session else {
        return Err(CommandError::usage("the repair stage needs a model").into());
    };
    let (mut candidates, chosen) = if run.meta.done("repair") {
        let v: serde_json::Value = run.read_json("candidates.json")?;
        (
            serde_json::from_value::<Vec<Candidate>>(v["candidates"].clone())?,
            v["chosen"].as_u64().map(|n| n as usize),
        )
    } else {
        repair_stage(
            deps,
            emit,
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
    outcome.report.located = Some(located.clone());
    outcome.report.candidates = Some((candidates.clone(), chosen));
    // Test: every candidate that applied (and the user accepted, after a review).
    let reviewed = run
        .read_json::<serde_json::Value>("candidates.json")
        .ok()
        .is_some_and(|v| !v["review"].is_null());
    if plan.until == FixStage::Repair || chosen.is_none() {
        outcome.report.shown = true;
        return match chosen {
            Some(_) => Ok(()),
            None => Err(no_candidate(run.id(), &candidates, reviewed)),
        };
    }
    let inputs: Vec<crate::verify::CandidateInput> = candidates
        .iter()
        .filter(|c| c.error.is_none() && c.duplicate_of.is_none())
        .filter(|c| !reviewed || Some(c.id) == chosen)
        .filter(|c| c.round == 0)
        .map(|c| crate::verify::CandidateInput {
            id: c.id,
            diff: c.diff.clone(),
            round: c.round,
        })
        .collect();
    let reproduction: Option<super::reproduce::Reproduction> =
        run.read_json("reproduction.json").ok();
    let frozen: Vec<String> = reproduction
        .as_ref()
        .filter(|r| r.kept())
        .map(|r| r.files.clone())
        .unwrap_or_default();
    let mut tests: TestReport = if run.meta.done("test") {
        run.read_json("test.json")?
    } else {
        super::test::ensure_commit(repo, dir, commit, emit)?;
        let (inputs, suspect) = super::reproduce::split_frozen(inputs, &candidates, &frozen);
        let mut tests = super::test::test_stage(deps, emit, run, repo, commit, &inputs, &suspect)?;
        if let Some(r) = &reproduction {
            tests.reproduction = Some(super::reproduce::summary(r));
            run.write_json("test.json", &tests)?;
        }
        tests
    };
    // Rounds with feedback, then the agent in `auto` mode: not after a review (the
    // person chose); not in agent mode (the agent ran its own tests).
    let mode = deps.config.repair.mode;
    if !reviewed && tests.chosen.is_none() && mode != crate::config::RepairMode::Agent {
        let cfg = &deps.config.repair;
        let inputs = repair_inputs(memory, &t, &prior_files)?;
        let first =
            crate::repair::prompt::request(issue, &located.context, &inputs, cfg.max_tokens, 0.0);
        let read = |p: &str| locate::files::read_at(repo, commit, p);
        let files = context_files(&located);
        let settings = repair_settings(cfg);
        let r = super::rounds::RoundInputs {
            deps,
            emit,
            session,
            first: &first,
            read: &read,
            context_files: &files,
            guard: plan.guard,
            settings: &settings,
            repo,
            base: commit,
            rounds: cfg.rounds,
            reproduction: reproduction.as_ref(),
        };
        // With no rounds left this only tests what a resumed run had not.
        super::rounds::run_rounds(
            &r,
            run,
            &mut candidates,
            chosen,
            &mut tests,
            &mut calls,
            &mut spent,
        )?;
        if mode == crate::config::RepairMode::Auto
            && tests.chosen.is_none()
            && !candidates.iter().any(|c| c.by.as_deref() == Some("agent"))
            && !crate::interrupt::requested()
        {
            let a = super::agent::AgentInputs {
                deps,
                emit,
                session,
                issue,
                located: &located,
                repo,
                base: commit,
                guard: plan.guard,
                settings: &settings,
                frozen: frozen.clone(),
            };
            let id = candidates.iter().map(|c| c.id).max().unwrap_or(0) + 1;
            let round = candidates.iter().map(|c| c.round).max().unwrap_or(0) + 1;
            emit.run_event(
                run,
                "repair",
                format!("no candidate is proven: the agent writes candidate {id}"),
                What::Info,
            )?;
            let (mut c, _) =
                super::agent::agent_candidate(&a, run, id, round, &candidates, &mut spent)?;
            if let Some(r) = &reproduction {
                super::reproduce::attach(&mut c, r);
            }
            calls.extend(c.usage.iter().cloned());
            if c.error.is_none() {
                run.write_text(&format!("candidates/{}.diff", c.id), &c.diff)?;
            }
            candidates.push(c);
            run.write_usage(&calls)?;
            let review = run
                .read_json::<serde_json::Value>("candidates.json")
                .ok()
                .map(|v| v["review"].clone())
                .unwrap_or(serde_json::Value::Null);
            run.write_json(
                "candidates.json",
                &json!({"candidates": candidates, "chosen": chosen, "review": review}),
            )?;
            // Tested like every other candidate (and no further round).
            let only_test = super::rounds::RoundInputs { rounds: 0, ..r };
            super::rounds::run_rounds(
                &only_test,
                run,
                &mut candidates,
                chosen,
                &mut tests,
                &mut calls,
                &mut spent,
            )?;
        }
        outcome.spent = spent;
        outcome.report.candidates = Some((candidates.clone(), chosen));
    }
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
    outcome.report.tests = Some(tests.clone());
    let Some(chosen) = tests.chosen else {
        record(memory, &tests.verdict, None, None)?;
        outcome.report.shown = true;
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
    if plan.until == FixStage::Test || plan.dry_run {
        record(memory, &tests.verdict, None, None)?;
        outcome.report.shown = true;
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
    let inputs = super::publish::PublishInputs {
        patch: &diff,
        tests: Some(format!(
            "From run `{}`: verdict **{}**; {}{}{}",
            run.id(),
            tests.verdict,
            tests.summary,
            rounds_note(&candidates, chosen),
            proof_note(&candidates, &tests, chosen)
        )),
        usage: (!calls.is_empty()).then(|| {
            let later: Vec<&CallUsage> = candidates
                .iter()
                .filter(|c| c.round > 0)
                .flat_map(|c| c.usage.iter())
                .collect();
            format!(
                "{} model call(s), {} tokens in, {} out, ${:.4}{}",
                calls.len(),
                calls.iter().map(|c| c.input_tokens).sum::<u64>(),
                calls.iter().map(|c| c.output_tokens).sum::<u64>(),
                spent,
                if later.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} of them in rounds with feedback, ${:.4})",
                        later.len(),
                        later.iter().map(|c| c.cost_usd).sum::<f64>()
                    )
                }
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
        outcome.report.shown = true;
        return Ok(());
    }
    let published = match &job.publish_to {
        PublishTo::Github(target) => {
            super::publish::publish_github(deps, emit, plan.dry_run, run, issue, target, &inputs)?
        }
        PublishTo::Local => {
            super::publish::publish_local_stage(deps, emit, plan.dry_run, run, issue, dir, &inputs)?
        }
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
    let partial = super::publish::partial(&published);
    outcome.report.published = Some(published);
    outcome.report.shown = true;
    match partial {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How the chosen candidate came to be, when a round with feedback wrote it.
fn rounds_note(candidates: &[Candidate], chosen: usize) -> String {
    let Some(c) = candidates.iter().find(|c| c.id == chosen) else {
        return String::new();
    };
    match (c.round, c.parent) {
        (0, _) | (_, None) => String::new(),
        (round, Some(parent)) => format!(
            ". Written in round {round} with feedback: candidate {} answers the test output of candidate {parent}",
            c.id
        ),
    }
}

/// "Proved by a generated test", when the frozen reproduction is what shows the fix.
fn proof_note(candidates: &[Candidate], tests: &TestReport, chosen: usize) -> String {
    let with = candidates
        .iter()
        .any(|c| c.id == chosen && c.with_reproduction);
    let Some(generated) = tests
        .reproduction
        .as_ref()
        .and_then(|r| r["tests"].as_array())
        .filter(|_| with)
    else {
        return String::new();
    };
    let report = tests.candidates.iter().find(|r| r.id == chosen);
    let shown: Vec<&str> = generated
        .iter()
        .filter_map(|t| t.as_str())
        .filter(|t| {
            report.is_some_and(|r| {
                r.fixed.iter().any(|f| f == t) || r.reproduced.iter().any(|f| f == t)
            })
        })
        .collect();
    if shown.is_empty() {
        return String::new();
    }
    format!(
        ". Proved by a generated test: {} was written before the fix from the issue alone, failed on the base and passes with the fix",
        shown.join(", ")
    )
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
fn warn_if_dirty(
    emit: &Emitter<'_>,
    run: &Run,
    repo: &Repository,
    dir: &Path,
    base: git2::Oid,
) -> Result<()> {
    if repo.is_bare() {
        return Ok(());
    }
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(false).include_ignored(false);
    let dirty = repo
        .statuses(Some(&mut opts))
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    if dirty {
        emit.run_event(
            run,
            "locate",
            format!(
                "{} has uncommitted changes: they are not part of the base ({}) and are left as they are; the tests run in a separate worktree",
                dir.display(),
                &base.to_string()[..12]
            ),
            What::Warning,
        )?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn locate_stage(
    deps: &Deps<'_>,
    emit: &Emitter<'_>,
    plan: &FixPlan<'_>,
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
    let cache = deps.state_dir.join("index");
    let spin = |m: &str| {
        emit.say(
            "locate",
            m,
            What::Progress {
                step: None,
                of: None,
            },
        )
    };
    spin("indexing the code");
    let located = (|| -> Result<Located> {
        let (index, info) = locate::open_index(&cache, repo, commit, settings)?;
        emit.run_event(
            run,
            "locate",
            format!(
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
            What::Read(json!({"dir": info.dir})),
        )?;
        spin("ranking files");
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
            spin("asking the model to re-rank");
            model_rerank(
                deps,
                emit,
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
    emit.say("locate", "", What::ProgressDone);
    located
}

/// Repair: N candidates from the model, each applied to the base or refused; the
/// review on a terminal with --dry-run. `candidates.json`, `candidates/N.diff`.
#[allow(clippy::too_many_arguments)]
fn repair_stage(
    deps: &Deps<'_>,
    emit: &Emitter<'_>,
    plan: &FixPlan<'_>,
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
    emit.run_event(run, "repair", "repair started", What::StageStarted)?;
    let cfg = &deps.config.repair;
    let inputs = repair_inputs(memory, t, prior_files)?;
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
    let context_files = context_files(located);
    let say = |m: String| {
        emit.say(
            "repair",
            m,
            What::Progress {
                step: None,
                of: None,
            },
        )
    };
    // Reproduction first: a kept test is frozen and joins the candidates without one.
    let reproduction = if cfg.reproduce {
        let r = super::reproduce::reproduce(
            deps, emit, session, issue, located, repo, commit, plan.guard, run, spent,
        )?;
        if !calls.iter().any(|c| c.stage == "reproduce") {
            calls.extend(r.usage.iter().cloned());
            run.write_usage(calls)?;
        }
        Some(r)
    } else {
        None
    };
    let frozen: Vec<String> = reproduction
        .as_ref()
        .filter(|r| r.kept())
        .map(|r| r.files.clone())
        .unwrap_or_default();
    say("asking the model for candidates".into());
    let progress = |i: usize| say(format!("candidate {i} of {}", cfg.candidates));
    let settings = repair_settings(cfg);
    let (mut candidates, failure) = if cfg.mode == crate::config::RepairMode::Agent {
        let inputs = super::agent::AgentInputs {
            deps,
            emit,
            session,
            issue,
            located,
            repo,
            base: commit,
            guard: plan.guard,
            settings: &settings,
            frozen: frozen.clone(),
        };
        let (c, _) = super::agent::agent_candidate(&inputs, run, 1, 0, &[], spent)?;
        (vec![c], None)
    } else {
        crate::repair::candidates::generate(
            session,
            &base_request,
            &read,
            &context_files,
            plan.guard,
            &settings,
            spent,
            &progress,
        )
    };
    emit.say("repair", "", What::ProgressDone);
    if let Some(r) = &reproduction {
        for c in candidates.iter_mut() {
            super::reproduce::attach(c, r);
        }
    }
    for c in &candidates {
        // An agent's calls were reported as it made them.
        for u in c.usage.iter().filter(|_| c.by.is_none()) {
            emit.run_event(
                run,
                "repair",
                format!(
                    "candidate {}: {} in, {} out, ${:.5}",
                    c.id, u.input_tokens, u.output_tokens, u.cost_usd
                ),
                What::Model(u.clone()),
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
        emit.run_event(run, "repair", what, What::Decision(json!(null)))?;
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
    // The dry-run review: a question to the front-end, which may put it to a person.
    if plan.dry_run {
        let check_edit = |text: &str| -> Result<super::events::Edited, String> {
            let applied = crate::repair::parse(text)
                .map_err(crate::repair::ApplyError::from)
                .and_then(|e| crate::repair::apply(&e, &read, &context_files, plan.guard))
                .map_err(|e| e.to_string())?;
            let (diff, files) = crate::repair::candidates::unified_diff(&applied.files, &read);
            Ok(super::events::Edited {
                diff,
                files,
                edits: applied.reports,
            })
        };
        let answer = emit.sink().review(&super::events::Review {
            located,
            candidates: &candidates,
            check_edit: &check_edit,
        });
        match answer {
            ReviewAnswer::NotAsked => {}
            ReviewAnswer::Failed(e) => {
                run.stage_finished("repair", Some(&format!("review: {e}")))?;
                return Err(CommandError::failure(e).into());
            }
            ReviewAnswer::Chosen { id, edited } => {
                chosen = id;
                let mut edited_id = None;
                if let (Some(id), Some(e)) = (id, edited)
                    && let Some(c) = candidates.iter_mut().find(|c| c.id == id)
                {
                    c.diff = e.diff;
                    c.files = e.files;
                    c.edits = e.edits;
                    run.write_text(&format!("candidates/{}.diff", c.id), &c.diff)?;
                    edited_id = Some(id);
                }
                review = Some(json!({"by": "user", "chosen": chosen, "edited": edited_id}));
            }
        }
    }
    run.write_json(
        "candidates.json",
        &json!({"candidates": candidates, "chosen": chosen, "review": review}),
    )?;
    // A model failure after a candidate applied (a budget stop, say) leaves that
    // candidate standing: the stage succeeds and the failure is recorded.
    if let (Some(e), Some(_)) = (&failure, chosen) {
        emit.run_event(
            run,
            "repair",
            format!("model: {e}; keeping the candidates that applied"),
            What::Error,
        )?;
        emit.say(
            "repair",
            format!(
                "the model failed after {} candidate(s): {e}",
                candidates.len()
            ),
            What::Warning,
        );
    }
    let error = match (&failure, chosen) {
        (Some(e), None) => Some(format!("model: {e}")),
        (None, None) if review.is_some() => Some("no candidate accepted at the review".to_string()),
        (None, None) => Some("no candidate applied".to_string()),
        _ => None,
    };
    run.stage_finished("repair", error.as_deref())?;
    let (applied, refused): (Vec<&Candidate>, Vec<&Candidate>) =
        candidates.iter().partition(|c| c.error.is_none());
    emit.run_event(
        run,
        "repair",
        format!(
            "{} candidate(s) applied, {} refused",
            applied.len(),
            refused.len()
        ),
        What::Candidates {
            applied: applied.iter().map(|c| c.id).collect(),
            refused: refused.iter().map(|c| c.id).collect(),
            chosen,
        },
    )?;
    emit.run_event(
        run,
        "repair",
        "repair finished",
        What::StageFinished { error },
    )?;
    if let Some(e) = failure.filter(|_| chosen.is_none()) {
        return Err(e.into());
    }
    Ok((candidates, chosen))
}

/// What the repair prompt shows besides the issue and the code.
fn repair_inputs(
    memory: &dyn Memory,
    t: &crate::triage::Triage,
    prior_files: &[PriorFile],
) -> Result<crate::repair::prompt::RepairInputs> {
    Ok(crate::repair::prompt::RepairInputs {
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
    })
}

/// The paths of the context's files.
fn context_files(located: &Located) -> Vec<String> {
    located
        .context
        .files
        .iter()
        .map(|f| f.path.clone())
        .collect()
}

/// `repair.*` as the candidate generator's settings.
fn repair_settings(cfg: &crate::config::RepairConfig) -> crate::repair::candidates::RepairSettings {
    crate::repair::candidates::RepairSettings {
        candidates: cfg.candidates,
        max_tokens: cfg.max_tokens,
        temperature: cfg.temperature,
        limits: crate::repair::candidates::PatchLimits {
            bytes: cfg.max_patch_bytes,
            files: cfg.max_patch_files,
            lines: cfg.max_patch_lines,
        },
    }
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

#[allow(clippy::too_many_arguments)]
fn model_rerank(
    deps: &Deps<'_>,
    emit: &Emitter<'_>,
    session: &Session,
    located: &mut Located,
    issue: &Issue,
    settings: &LocateSettings,
    repo: &Repository,
    run: &mut crate::runs::fs::Run,
    calls: &mut Vec<CallUsage>,
    spent: &mut f64,
) -> Result<()> {
    let n = deps.config.locate.rerank_files.min(located.files.len());
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
        emit.run_event(
            run,
            "locate",
            format!(
                "{} re-rank: {} in, {} out, ${:.5}",
                c.model, c.input_tokens, c.output_tokens, c.cost_usd
            ),
            What::Model(c.clone()),
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
            emit.run_event(
                run,
                "locate",
                format!("model re-rank: {}", e.error),
                What::Error,
            )?;
            emit.say(
                "locate",
                format!(
                    "the model re-rank failed, keeping the search's order: {}",
                    e.error
                ),
                What::Warning,
            );
        }
    }
    Ok(())
}
