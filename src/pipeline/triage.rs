//! The triage job: decide each issue (offline, with the model where the offline engine
//! abstains, or with the model only), record it in a run and in memory, and write
//! labels and a comment back when asked. A batch runs the decisions on several workers
//! and records them in input order.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::Result;
use serde_json::json;

use super::{Emitter, Sink, What};
use crate::cli::EngineArg;
use crate::config::Config;
use crate::error::CommandError;
use crate::forge::github::{Applied, GithubForge};
use crate::issue::{Issue, RepoId};
use crate::memory::Memory;
use crate::model::session::{Session, StructuredError};
use crate::model::usage::CallUsage;
use crate::model::{ModelError, Response};
use crate::runs::fs::FsRunStore;
use crate::triage::classifier::{KindModel, TrainSpec};
use crate::triage::model::{self as tmodel, PromptContext};
use crate::triage::{Engine, MODEL_KEY, Triage, model_for_history};

/// What was decided for one issue, before anything is written.
pub struct Decided {
    pub triage: Option<Triage>,
    pub calls: Vec<CallUsage>,
    /// A model failure the offline result stands in for, with the raw reply.
    pub model_failure: Option<(String, Option<Response>)>,
    /// The budget stopped the batch here.
    pub budget_stop: Option<String>,
    /// The issue could not be triaged.
    pub error: Option<String>,
}

pub fn decide(
    engine: &Engine,
    session: Option<&Session>,
    mode: EngineArg,
    issue: &Issue,
) -> Decided {
    let offline = engine.triage(issue);
    let Some(session) = session.filter(|_| mode == EngineArg::Model || offline.abstained) else {
        return Decided {
            triage: Some(offline),
            calls: vec![],
            model_failure: None,
            budget_stop: None,
            error: None,
        };
    };
    let kinds = engine
        .model()
        .map(|m| m.classes.clone())
        .unwrap_or_else(|| vec!["bug".into(), "feature".into(), "question".into()]);
    let ctx = PromptContext {
        labels: engine.described_labels(&issue.repo),
        similar: engine.similar(issue, 5),
        examples: engine.examples(issue, 5),
        offline: Some(engine.offline_kind(issue)),
        threshold: engine.threshold(),
        kinds: kinds.clone(),
    };
    let mut spent = 0.0;
    // Redact before the prompt cuts the body: a cut through a secret would leave a
    // fragment no pattern recognises.
    let redacted = session
        .redactor
        .redact_value(&session.redactor.redact_issue(issue));
    match session.structured(
        "triage",
        tmodel::request(&redacted, &ctx),
        &tmodel::tool(&kinds),
        &mut spent,
    ) {
        Ok((value, _response, calls)) => match tmodel::answer(&value) {
            Some(a) => Decided {
                triage: Some(engine.triage_with_answer(issue, &a)),
                calls,
                model_failure: None,
                budget_stop: None,
                error: None,
            },
            None => Decided {
                triage: None,
                calls,
                model_failure: None,
                budget_stop: None,
                error: Some("the model's answer does not fit the triage".into()),
            },
        },
        Err(StructuredError {
            error: ModelError::Budget(why),
            usage,
            ..
        }) => {
            // `auto` keeps the offline triage it already has; `model` fails the issue.
            let triage = (mode == EngineArg::Auto).then(|| {
                let mut t = offline;
                t.reasons.push(format!(
                    "no model call: {}",
                    why.lines().next().unwrap_or("")
                ));
                t
            });
            Decided {
                error: triage.is_none().then(|| why.clone()),
                triage,
                calls: usage,
                model_failure: None,
                budget_stop: Some(why),
            }
        }
        Err(StructuredError { error, raw, usage }) => {
            if mode == EngineArg::Model {
                return Decided {
                    triage: None,
                    calls: usage,
                    model_failure: Some((error.to_string(), raw)),
                    budget_stop: None,
                    error: Some(error.to_string()),
                };
            }
            let mut t = offline;
            t.reasons.push(format!(
                "the model could not help, so this is the offline triage: {error}"
            ));
            Decided {
                triage: Some(t),
                calls: usage,
                model_failure: Some((error.to_string(), raw)),
                budget_stop: None,
                error: None,
            }
        }
    }
}

/// Load the history, reuse or retrain the kind model, build the engine.
/// Returns the engine and, when the model was trained now, a line saying so.
pub fn build_engine(config: &Config, memory: &mut dyn Memory) -> Result<(Engine, Option<String>)> {
    let history = memory.all_issues()?;
    let stored = memory
        .get_kv(MODEL_KEY)?
        .as_ref()
        .and_then(KindModel::from_json);
    let started = std::time::Instant::now();
    let (model, trained) = model_for_history(
        &history,
        &config.labels.aliases,
        stored,
        TrainSpec::default(),
    );
    let mut note = None;
    if trained && let Some(m) = &model {
        memory.put_kv(MODEL_KEY, &m.to_json())?;
        note = Some(format!(
            "trained the kind model on {} labelled issues ({}) in {:.1} s",
            m.trained_on,
            m.classes.join(", "),
            started.elapsed().as_secs_f64()
        ));
    }
    Ok((Engine::new(&history, model, config), note))
}

/// Where `--apply` writes, and whether it only pretends.
pub struct ApplyTo<'a> {
    /// The forge written to.
    pub forge: &'a GithubForge,
    /// Say what would be written, write nothing.
    pub dry_run: bool,
    /// Write to locked and closed issues too.
    pub force: bool,
    /// Create labels the repository lacks.
    pub create_labels: bool,
    /// Write the labels (else only the comment).
    pub labels: bool,
    /// Write the bot comment (else only labels).
    pub comment: bool,
    /// Labels never to apply (ones a person removed from the issue).
    pub never: Vec<String>,
}

/// The bot comment for a triage: what is missing and the likely duplicate, under the
/// hidden marker; `None` when there is nothing to ask or say.
fn bot_comment(t: &Triage) -> Option<String> {
    let marker = crate::triage::missing::COMMENT_MARKER;
    let mut parts: Vec<String> = Vec::new();
    if let Some(c) = &t.comment {
        parts.push(c.trim_start_matches(marker).trim().to_string());
    }
    if let Some(d) = t.duplicates.iter().find(|d| d.likely) {
        parts.push(format!(
            "This looks like a duplicate of {} (\"{}\", similarity {:.2}). If it is, please follow that issue; if not, say how this one differs.",
            d.reference,
            crate::pr::quote::markdown(&crate::pr::quote::one_line(&d.title, 120)),
            d.score
        ));
    }
    (!parts.is_empty()).then(|| format!("{marker}\n{}\n", parts.join("\n\n")))
}

/// Record one decided issue: its run, memory, and (with `apply`) labels and a comment.
/// Returns the run id, the triage and what was written.
pub fn triage_one(
    emit: &Emitter<'_>,
    store: &crate::runs::fs::FsRunStore,
    memory: &mut dyn Memory,
    issue: &Issue,
    d: &Decided,
    apply: Option<&ApplyTo<'_>>,
) -> Result<(String, Triage, Option<Applied>)> {
    let mut run = store.begin(&issue.repo, issue.number, "triage")?;
    run.write_json("issue.json", issue)?;
    emit.run_event(
        &run,
        "forge",
        format!(
            "read {} from {}",
            issue.reference(),
            issue.source.as_deref().unwrap_or("memory")
        ),
        What::Read(json!(null)),
    )?;
    run.stage_started("triage")?;
    emit.run_event(&run, "triage", "triage started", What::StageStarted)?;
    for c in &d.calls {
        emit.run_event(
            &run,
            "triage",
            format!(
                "{} call: {} in, {} out, ${:.5}",
                c.model, c.input_tokens, c.output_tokens, c.cost_usd
            ),
            What::Model(c.clone()),
        )?;
    }
    run.write_usage(&d.calls)?;
    if let Some((error, raw)) = &d.model_failure {
        run.write_json(
            "model-failure.json",
            &json!({"error": error, "raw_reply": raw}),
        )?;
        emit.run_event(&run, "triage", format!("model: {error}"), What::Error)?;
    }
    let Some(t) = d.triage.clone() else {
        let why = d.error.clone().unwrap_or_else(|| "no triage".into());
        run.stage_finished("triage", Some(&why))?;
        emit.run_event(
            &run,
            "triage",
            "triage finished",
            What::StageFinished {
                error: Some(why.clone()),
            },
        )?;
        memory.record_run(&run.meta)?;
        return Err(CommandError::failure(why).into());
    };
    run.write_json("triage.json", &t)?;
    emit.run_event(
        &run,
        "triage",
        format!(
            "engine {} kind {:?} priority {} fixable {}",
            t.engine, t.kind, t.priority, t.fixable
        ),
        What::Decision(
            json!({"labels": t.labels, "duplicates": t.duplicates.len(), "missing": t.missing}),
        ),
    )?;
    let applied = match apply {
        None => None,
        Some(a) => {
            let repo = github_repo(&issue.repo).ok_or_else(|| {
                CommandError::usage(format!(
                    "--apply writes to GitHub, and {} is not a GitHub issue",
                    issue.reference()
                ))
            })?;
            let labels: Vec<String> = t
                .labels
                .iter()
                .map(|l| l.name.clone())
                .filter(|l| a.labels && !a.never.iter().any(|n| n.eq_ignore_ascii_case(l)))
                .collect();
            let skip = if a.force {
                None
            } else if issue.locked {
                Some("the issue is locked")
            } else if issue.state == crate::issue::IssueState::Closed {
                Some("the issue is closed")
            } else {
                None
            };
            let result = if let Some(why) = skip {
                Ok(Applied {
                    skipped: Some(format!("{why}; nothing written (--force writes anyway)")),
                    dry_run: a.dry_run,
                    comment: "none".into(),
                    ..Default::default()
                })
            } else {
                a.forge.apply(
                    &repo,
                    issue.number,
                    &labels,
                    bot_comment(&t).filter(|_| a.comment).as_deref(),
                    crate::triage::missing::COMMENT_MARKER,
                    a.dry_run,
                    a.create_labels,
                )
            };
            match result {
                Ok(done) => {
                    emit.run_event(
                        &run,
                        "forge",
                        format!(
                            "{}labels +[{}], comment {}",
                            if done.dry_run {
                                "dry run: would write "
                            } else {
                                ""
                            },
                            done.labels_added.join(", "),
                            done.comment
                        ),
                        What::Write(serde_json::to_value(&done)?),
                    )?;
                    run.write_json("applied.json", &done)?;
                    Some(done)
                }
                Err(e) => {
                    run.stage_finished("triage", Some(&e.to_string()))?;
                    emit.run_event(
                        &run,
                        "triage",
                        "triage finished",
                        What::StageFinished {
                            error: Some(e.to_string()),
                        },
                    )?;
                    memory.record_run(&run.meta)?;
                    return Err(e.into());
                }
            }
        }
    };
    finish_triage(emit, &mut run, issue, &t, false, applied.clone())?;
    memory.upsert_issues(std::slice::from_ref(issue), &|| false)?;
    memory.record_triage(
        &issue.repo,
        issue.number,
        Some(run.id()),
        &serde_json::to_value(&t)?,
    )?;
    memory.record_run(&run.meta)?;
    Ok((run.id().to_string(), t, applied))
}

/// `owner/name` or `host/owner/name` as a repository on a GitHub host.
pub fn github_repo(repo: &str) -> Option<RepoId> {
    let parts: Vec<&str> = repo.split('/').collect();
    match parts.as_slice() {
        ["local", ..] | ["eval", ..] => None,
        [owner, name] => Some(RepoId::github(owner, name)),
        [host, owner, name] => Some(RepoId {
            host: (*host).into(),
            owner: (*owner).into(),
            name: (*name).into(),
        }),
        _ => None,
    }
}

/// End the triage stage of `run`: the triage, then the stage's end, as events.
pub fn finish_triage(
    emit: &Emitter<'_>,
    run: &mut crate::runs::fs::Run,
    issue: &Issue,
    t: &Triage,
    reused: bool,
    applied: Option<Applied>,
) -> Result<()> {
    run.stage_finished("triage", None)?;
    emit.run_event(
        run,
        "triage",
        format!(
            "{}: {} {}",
            issue.reference(),
            t.kind.as_deref().unwrap_or("undecided"),
            t.priority
        ),
        What::Triaged {
            triage: Box::new(t.clone()),
            title: issue.title.clone(),
            reused,
            applied,
        },
    )?;
    emit.run_event(
        run,
        "triage",
        "triage finished",
        What::StageFinished { error: None },
    )?;
    Ok(())
}

/// A triage batch: the issues, how to decide them, where to write back.
pub struct TriageBatch<'a> {
    /// The issues, in the order their results are recorded.
    pub issues: &'a [Issue],
    /// `offline`, `auto` or `model`.
    pub mode: EngineArg,
    /// Labels and comments written back (`triage --apply`).
    pub apply: Option<&'a ApplyTo<'a>>,
    /// Workers deciding at once (model calls run in parallel).
    pub workers: usize,
    /// A failure stops the batch (a single issue) instead of being reported and passed.
    pub stop_on_error: bool,
}

/// How a triage batch ended.
#[derive(Default)]
pub struct TriageBatchOutcome {
    /// Issues that could not be triaged.
    pub failed: usize,
    /// The budget stopped the batch (`model` engine) with this message.
    pub stopped: Option<String>,
    /// The error that stopped a batch with `stop_on_error`.
    pub error: Option<anyhow::Error>,
}

/// Decide on `batch.workers` threads; record in input order on this one. Each issue's
/// events (its run, its triage, what was written) go to `sink` as it is recorded;
/// progress is `step` of the batch's length. Ctrl-C finishes the issues in hand.
pub fn run_batch(
    batch: &TriageBatch<'_>,
    engine: &Engine,
    session: Option<&Session>,
    store: &FsRunStore,
    memory: &mut dyn Memory,
    sink: &dyn Sink,
) -> Result<TriageBatchOutcome> {
    let issues = batch.issues;
    let mode = batch.mode;
    let mut outcome = TriageBatchOutcome::default();
    let model_on = AtomicBool::new(true);
    let halt = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    let workers = if session.is_some() {
        batch.workers.min(issues.len()).max(1)
    } else {
        1
    };
    // Memory writes of a batch are committed every 100 issues rather than one by one.
    let mut pending = 0usize;
    memory.begin_batch()?;
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Decided)>();
    let all = Emitter::new(sink, "");
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, halt, model_on) = (&next, &halt, &model_on);
            scope.spawn(move || {
                loop {
                    if halt.load(Ordering::SeqCst) || crate::interrupt::requested() {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(issue) = issues.get(i) else { break };
                    let s = session.filter(|_| model_on.load(Ordering::SeqCst));
                    if tx.send((i, decide(engine, s, mode, issue))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut ready: std::collections::BTreeMap<usize, Decided> =
            std::collections::BTreeMap::new();
        let mut next_write = 0usize;
        'results: for (i, d) in rx {
            ready.insert(i, d);
            while let Some(d) = ready.remove(&next_write) {
                let issue = &issues[next_write];
                next_write += 1;
                all.say(
                    "triage",
                    issue.reference(),
                    What::Progress {
                        step: Some(next_write as u64),
                        of: Some(issues.len() as u64),
                    },
                );
                if let Some(budget) = &d.budget_stop {
                    if mode == EngineArg::Auto {
                        // Out of budget: the rest of the batch is triaged offline.
                        if model_on.swap(false, Ordering::SeqCst) {
                            all.say(
                                "triage",
                                format!("{budget}\n(the remaining issues are triaged offline)"),
                                What::Warning,
                            );
                        }
                    } else {
                        outcome.stopped = Some(budget.clone());
                        halt.store(true, Ordering::SeqCst);
                        break 'results;
                    }
                }
                let emit = Emitter::new(sink, issue.reference());
                let result = triage_one(&emit, store, memory, issue, &d, batch.apply);
                pending += 1;
                if pending >= 100 {
                    memory.end_batch()?;
                    memory.begin_batch()?;
                    pending = 0;
                }
                if let Err(e) = result {
                    outcome.failed += 1;
                    if batch.stop_on_error {
                        outcome.error = Some(e);
                        halt.store(true, Ordering::SeqCst);
                        break 'results;
                    }
                    emit.say(
                        "job",
                        format!("{e:#}"),
                        What::Finished {
                            verdict: "error".into(),
                            error: Some(format!("{e:#}")),
                        },
                    );
                }
            }
        }
        halt.store(true, Ordering::SeqCst);
        Ok(())
    })?;
    all.say("triage", "", What::ProgressDone);
    memory.end_batch()?;
    Ok(outcome)
}
