//! `autotriage triage REF…`

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::{EngineArg, SourceArg, TriageArgs};
use crate::error::CommandError;
use crate::forge::github::{Applied, GithubForge, ListOptions};
use crate::forge::{Forge, RecordError};
use crate::issue::RepoId;
use crate::issue::{Issue, IssueRef};
use crate::memory::sqlite::OpenMode;
use crate::memory::{ListFilter, Memory};
use crate::model::registry;
use crate::model::replay::Recorder;
use crate::model::retry::RetryPolicy;
use crate::model::session::{REQUEST_TIMEOUT, Session, StructuredError};
use crate::model::usage::{Budget, CallUsage};
use crate::model::{ModelError, Response};
use crate::triage::classifier::{KindModel, TrainSpec};
use crate::triage::model::{self as tmodel, PromptContext};
use crate::triage::{Engine, MODEL_KEY, Triage, model_for_history};

/// Run `triage`.
pub fn run(args: &TriageArgs, ctx: &Ctx) -> Result<()> {
    let refs = ctx.ref_context();
    let parsed: Vec<(String, IssueRef)> = args
        .refs
        .iter()
        .map(|r| IssueRef::parse(r, &refs).map(|p| (r.clone(), p)))
        .collect::<Result<_, _>>()?;
    // Resolve against a read-only view first: a bad reference leaves no memory file.
    let memory = ctx.open_memory(OpenMode::ReadOnly)?;
    let batch = parsed.len() > 1
        || parsed.iter().any(|(_, r)| matches!(r, IssueRef::Dir(_) | IssueRef::Repo(_) | IssueRef::File { record: crate::issue::Record::All, .. } if !is_markdown(r)));

    // Resolve every reference before triaging: a bad input fails with nothing done.
    let forge = ctx.local_forge();
    let mut github: Option<GithubForge> = None;
    let mut items: Vec<Result<Issue, RecordError>> = Vec::new();
    for (raw, r) in &parsed {
        match r {
            IssueRef::Remote { repo, number } => {
                let stored = if args.from == SourceArg::Github {
                    None
                } else {
                    memory.issue(&repo.to_string(), *number)?
                };
                match stored {
                    Some(issue) => items.push(Ok(issue)),
                    None if args.from == SourceArg::Memory => {
                        return Err(CommandError::usage(format!(
                            "{raw}: {repo}#{number} is not in memory\n  fix: import it (`autotriage memory import issues.json`) or read it from GitHub (--from github, with GITHUB_TOKEN)"
                        ))
                        .into());
                    }
                    None => items.push(Ok(
                        github_forge(&mut github, args, ctx)?.issue(repo, *number)?
                    )),
                }
            }
            IssueRef::Repo(repo) => {
                let list = if args.from == SourceArg::Github {
                    Vec::new()
                } else {
                    memory.list(&ListFilter {
                        repo: Some(repo.to_string()),
                        state: (args.state != "all").then(|| args.state.clone()),
                        label: args.label.clone(),
                        limit: args.limit,
                    })?
                };
                if list.is_empty() && args.from == SourceArg::Memory {
                    return Err(CommandError::usage(format!(
                        "{raw}: memory has no {} issues of {repo}\n  fix: import them first with `autotriage memory import SOURCE`, or use --from github",
                        args.state
                    ))
                    .into());
                }
                if list.is_empty() {
                    items.extend(
                        github_forge(&mut github, args, ctx)?
                            .issues(repo)?
                            .into_iter()
                            .map(Ok),
                    );
                }
                for s in list {
                    if let Some((repo, n)) = crate::issue::parse_key(&s.reference)
                        && let Some(issue) = memory.issue(&repo, n)?
                    {
                        items.push(Ok(issue));
                    }
                }
            }
            _ => items.extend(forge.read(r)?),
        }
    }

    if args.apply
        && let Some(bad) = items
            .iter()
            .flatten()
            .find(|i| github_repo(&i.repo).is_none())
    {
        return Err(CommandError::usage(format!(
            "--apply writes labels and comments to GitHub, and {} is a local issue\n  fix: drop --apply, or triage owner/repo#N",
            bad.reference()
        ))
        .into());
    }
    if args.apply {
        github_forge(&mut github, args, ctx)?;
    }
    let gh = github.as_ref();
    let apply_to = gh.filter(|_| args.apply).map(|forge| ApplyTo {
        forge,
        dry_run: ctx.global.dry_run,
        force: ctx.global.force,
        create_labels: ctx.config().github.create_labels,
    });
    let mut memory = ctx.open_memory(OpenMode::Create)?;
    let mut engine = build_engine(ctx, &mut *memory)?;
    // When GitHub is in use, its label list (with descriptions) says which labels exist.
    if let Some(g) = gh {
        let mut repos: Vec<&str> = items.iter().flatten().map(|i| i.repo.as_str()).collect();
        repos.sort();
        repos.dedup();
        for repo in repos {
            if let Some(id) = github_repo(repo) {
                match g.labels(&id) {
                    Ok(labels) => engine.declare_labels(repo, labels),
                    // Without the list, labels seen in memory and config still count.
                    Err(e) => ctx
                        .out
                        .warn(&format!("could not read the labels of {repo}: {e}")),
                }
            }
        }
    }
    let engine_arg = args
        .engine
        .unwrap_or_else(|| ctx.config().triage.engine.into());
    let mut session = model_session(engine_arg, args.record.as_deref(), ctx)?;
    let jobs = ctx
        .global
        .jobs
        .unwrap_or(if session.is_some() { 4 } else { 1 })
        .max(1);
    let mode = engine_arg;
    // Ctrl-C finishes the issues in hand, commits memory and stops with 130.
    let _polling = crate::interrupt::Polling::enter();
    let store = ctx.run_store()?;
    let bar = if batch {
        ctx.out.progress(items.len() as u64, "triaging")
    } else if session.is_some() {
        ctx.out.spinner("asking the model")
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Some(s) = session.as_mut() {
        // Streamed replies show how far they have come.
        let b = bar.clone();
        s.on_progress = Some(Box::new(move |n| {
            b.set_message(format!("model replying: {n} characters"))
        }));
    }
    let mut failed = 0usize;
    let mut stopped: Option<String> = None;
    // Memory writes of a batch are committed every 100 issues rather than one by one.
    let mut pending = 0usize;
    memory.begin_batch()?;
    let mut single_error: Vec<anyhow::Error> = Vec::new();
    let mut issues: Vec<Issue> = Vec::new();
    for item in items {
        match item {
            Ok(i) => issues.push(i),
            Err(e) => {
                failed += 1;
                report_error(ctx, &e.location, &e.message);
            }
        }
    }
    // A pool of `jobs` workers decides (model calls run in parallel); this thread
    // writes runs and memory in input order as results arrive.
    let model_on = AtomicBool::new(true);
    let halt = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    let workers = if session.is_some() {
        jobs.min(issues.len()).max(1)
    } else {
        1
    };
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Decided)>();
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..workers {
            let tx = tx.clone();
            let (engine, session, issues, next, halt, model_on) =
                (&engine, session.as_ref(), &issues, &next, &halt, &model_on);
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
                bar.inc(1);
                if let Some(budget) = &d.budget_stop {
                    if mode == EngineArg::Auto {
                        // Out of budget: the rest of the batch is triaged offline.
                        if model_on.swap(false, Ordering::SeqCst) {
                            ctx.out.warn(&format!(
                                "{budget}\n(the remaining issues are triaged offline)"
                            ));
                        }
                    } else {
                        stopped = Some(budget.clone());
                        halt.store(true, Ordering::SeqCst);
                        break 'results;
                    }
                }
                let result = triage_one(&store, &mut *memory, issue, &d, apply_to.as_ref());
                pending += 1;
                if pending >= 100 {
                    memory.end_batch()?;
                    memory.begin_batch()?;
                    pending = 0;
                }
                match result {
                    Ok((run_id, t, applied)) => {
                        bar.suspend(|| {
                            print_triage(ctx, issue, &t, &run_id, batch, applied.as_ref())
                        });
                    }
                    Err(e) => {
                        failed += 1;
                        if !batch {
                            single_error.push(e);
                            halt.store(true, Ordering::SeqCst);
                            break 'results;
                        }
                        report_error(ctx, &issue.reference(), &format!("{e:#}"));
                    }
                }
            }
        }
        halt.store(true, Ordering::SeqCst);
        Ok(())
    })?;
    bar.finish_and_clear();
    memory.end_batch()?;
    if let Some(io) = memory.io_counts() {
        ctx.out.debug(&format!(
            "memory {}: {} read requests, {} write requests, {:.0} ms waiting on them",
            memory.location(),
            io.reads,
            io.writes,
            io.millis
        ));
    }
    if let Some(s) = &session {
        ctx.out.info(&format!(
            "model {}: spent ${:.4} in this command",
            s.resolved.model.id(),
            s.spent()
        ));
    }
    if crate::interrupt::requested() {
        return Err(CommandError::interrupted(
            "interrupted; the issues triaged so far are recorded in memory and their runs, the rest were not started",
        )
        .into());
    }
    if let Some(e) = single_error.pop() {
        return Err(e);
    }
    if let Some(why) = stopped {
        return Err(CommandError::failure(format!(
            "{why}\n(the issues after that call were not triaged)"
        ))
        .into());
    }
    if failed > 0 {
        return Err(CommandError::failure(format!(
            "{failed} issue(s) could not be triaged (listed above); the others were"
        ))
        .into());
    }
    Ok(())
}

/// The GitHub forge, made on first use (a token is only needed when GitHub is read).
fn github_forge<'a>(
    slot: &'a mut Option<GithubForge>,
    args: &TriageArgs,
    ctx: &Ctx,
) -> Result<&'a GithubForge> {
    if slot.is_none() {
        let mut g = GithubForge::from_config(
            ctx.config(),
            ListOptions {
                state: Some(args.state.clone()),
                label: args.label.clone(),
                since: args.since.clone(),
                limit: args.limit,
            },
        )?;
        let out = ctx.out.clone();
        g.on_wait = Box::new(move |m| out.info(m));
        *slot = Some(g);
    }
    slot.as_ref()
        .ok_or_else(|| CommandError::failure("the GitHub forge could not be made").into())
}

fn is_markdown(r: &IssueRef) -> bool {
    matches!(r, IssueRef::File { path, .. } if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("md") || e.eq_ignore_ascii_case("markdown")))
}

/// The model session for `--engine model|auto`, if a model is configured.
pub fn model_session(
    engine: EngineArg,
    record: Option<&std::path::Path>,
    ctx: &Ctx,
) -> Result<Option<Session>> {
    if engine == EngineArg::Offline {
        return Ok(None);
    }
    let resolved = registry::configured(ctx.config(), REQUEST_TIMEOUT)?;
    let Some(mut resolved) = resolved else {
        if engine == EngineArg::Model {
            return Err(CommandError::usage(
                "triage --engine model needs a model, and none is configured\n  fix: set `model:` (and `models:`) in autotriage.yaml, or pass --model NAME / provider:model_id",
            )
            .into());
        }
        return Ok(None);
    };
    if let Some(path) = record {
        resolved.model = std::sync::Arc::new(Recorder::new(resolved.model.clone(), path));
    }
    let cfg = ctx.config();
    Ok(Some(Session::new(
        resolved,
        RetryPolicy::with_max_wait(cfg.retry.max_wait),
        Budget::new(
            cfg.budget.per_issue_usd,
            cfg.budget.per_command_usd,
            ctx.global.max_cost,
        ),
        ctx.redactor.clone(),
    )))
}

/// What was decided for one issue, before anything is written.
pub(crate) struct Decided {
    pub(crate) triage: Option<Triage>,
    pub(crate) calls: Vec<CallUsage>,
    /// A model failure the offline result stands in for, with the raw reply.
    pub(crate) model_failure: Option<(String, Option<Response>)>,
    /// The budget stopped the batch here.
    pub(crate) budget_stop: Option<String>,
    /// The issue could not be triaged.
    pub(crate) error: Option<String>,
}

pub(crate) fn decide(
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

fn report_error(ctx: &Ctx, reference: &str, message: &str) {
    if ctx.out.json {
        ctx.out
            .json_line(&json!({"ref": reference, "error": message}));
    } else {
        ctx.out.error(&format!("{reference}: {message}"));
    }
}

/// Load the history, reuse or retrain the kind model, build the engine.
pub fn build_engine(ctx: &Ctx, memory: &mut dyn Memory) -> Result<Engine> {
    let history = memory.all_issues()?;
    let stored = memory
        .get_kv(MODEL_KEY)?
        .as_ref()
        .and_then(KindModel::from_json);
    let started = std::time::Instant::now();
    let (model, trained) = model_for_history(
        &history,
        &ctx.config().labels.aliases,
        stored,
        TrainSpec::default(),
    );
    if trained && let Some(m) = &model {
        memory.put_kv(MODEL_KEY, &m.to_json())?;
        ctx.out.info(&format!(
            "trained the kind model on {} labelled issues ({}) in {:.1} s",
            m.trained_on,
            m.classes.join(", "),
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(Engine::new(&history, model, ctx.config()))
}

/// Where `--apply` writes, and whether it only pretends.
struct ApplyTo<'a> {
    forge: &'a GithubForge,
    dry_run: bool,
    force: bool,
    create_labels: bool,
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

fn triage_one(
    store: &crate::runs::fs::FsRunStore,
    memory: &mut dyn Memory,
    issue: &Issue,
    d: &Decided,
    apply: Option<&ApplyTo<'_>>,
) -> Result<(String, Triage, Option<Applied>)> {
    let mut run = store.begin(&issue.repo, issue.number, "triage")?;
    run.write_json("issue.json", issue)?;
    run.event(
        "forge",
        "read",
        &format!(
            "read {} from {}",
            issue.reference(),
            issue.source.as_deref().unwrap_or("memory")
        ),
        json!(null),
    )?;
    run.stage_started("triage")?;
    for c in &d.calls {
        run.event(
            "triage",
            "model",
            &format!(
                "{} call: {} in, {} out, ${:.5}",
                c.model, c.input_tokens, c.output_tokens, c.cost_usd
            ),
            serde_json::to_value(c)?,
        )?;
    }
    run.write_usage(&d.calls)?;
    if let Some((error, raw)) = &d.model_failure {
        run.write_json(
            "model-failure.json",
            &json!({"error": error, "raw_reply": raw}),
        )?;
        run.event("triage", "error", &format!("model: {error}"), json!(null))?;
    }
    let Some(t) = d.triage.clone() else {
        let why = d.error.clone().unwrap_or_else(|| "no triage".into());
        run.stage_finished("triage", Some(&why))?;
        memory.record_run(&run.meta)?;
        return Err(CommandError::failure(why).into());
    };
    run.write_json("triage.json", &t)?;
    run.event(
        "triage",
        "decision",
        &format!(
            "engine {} kind {:?} priority {} fixable {}",
            t.engine, t.kind, t.priority, t.fixable
        ),
        json!({"labels": t.labels, "duplicates": t.duplicates.len(), "missing": t.missing}),
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
            let labels: Vec<String> = t.labels.iter().map(|l| l.name.clone()).collect();
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
                    bot_comment(&t).as_deref(),
                    crate::triage::missing::COMMENT_MARKER,
                    a.dry_run,
                    a.create_labels,
                )
            };
            match result {
                Ok(done) => {
                    run.event(
                        "forge",
                        "write",
                        &format!(
                            "{}labels +[{}], comment {}",
                            if done.dry_run {
                                "dry run: would write "
                            } else {
                                ""
                            },
                            done.labels_added.join(", "),
                            done.comment
                        ),
                        serde_json::to_value(&done)?,
                    )?;
                    run.write_json("applied.json", &done)?;
                    Some(done)
                }
                Err(e) => {
                    run.stage_finished("triage", Some(&e.to_string()))?;
                    memory.record_run(&run.meta)?;
                    return Err(e.into());
                }
            }
        }
    };
    run.stage_finished("triage", None)?;
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
pub(crate) fn github_repo(repo: &str) -> Option<RepoId> {
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

fn print_triage(
    ctx: &Ctx,
    issue: &Issue,
    t: &Triage,
    run_id: &str,
    batch: bool,
    applied: Option<&Applied>,
) {
    if ctx.out.json {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.insert("run_id".into(), json!(run_id));
            map.insert("title".into(), json!(issue.title));
            if let Some(a) = applied {
                map.insert(
                    "applied".into(),
                    serde_json::to_value(a).unwrap_or_default(),
                );
            }
        }
        if batch {
            ctx.out.json_line(&v)
        } else {
            ctx.out.json(&v)
        }
        return;
    }
    let kind = match &t.kind {
        Some(k) => format!("{k} ({:.2})", t.kind_confidence),
        None => {
            let best = t
                .kind_probabilities
                .iter()
                .max_by(|a, b| a.1.total_cmp(b.1));
            match best {
                Some((k, p)) => format!("needs a human (best guess {k} {p:.2})"),
                None => "needs a human".to_string(),
            }
        }
    };
    let labels = if t.labels.is_empty() {
        "none".to_string()
    } else {
        t.labels
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    ctx.out.line(&format!(
        "{}  {}  {}  labels: {}",
        ctx.out.bold(&t.reference),
        kind,
        t.priority,
        labels
    ));
    ctx.out.line(&format!("  {}", issue.title));
    ctx.out
        .line(&format!("  priority: {}", t.priority_reasons.join("; ")));
    if !t.duplicates.is_empty() {
        let d: Vec<String> = t
            .duplicates
            .iter()
            .take(3)
            .map(|d| {
                format!(
                    "{} ({:.2}{})",
                    d.reference,
                    d.score,
                    if d.likely { ", likely" } else { "" }
                )
            })
            .collect();
        ctx.out.line(&format!("  similar: {}", d.join(", ")));
    }
    if !t.missing.is_empty() {
        ctx.out
            .line(&format!("  missing: {}", t.missing.join(", ")));
    }
    ctx.out.line(&format!(
        "  fixable: {} — {}",
        if t.fixable { "yes" } else { "no" },
        t.reasons.join("; ")
    ));
    if let Some(why) = applied.and_then(|a| a.skipped.as_deref()) {
        ctx.out.line(&format!("  not applied: {why}"));
    } else if let Some(a) = applied {
        let verb = if a.dry_run { "would apply" } else { "applied" };
        let labels = if a.labels_added.is_empty() {
            "no new labels".to_string()
        } else {
            format!("labels +{}", a.labels_added.join(", +"))
        };
        ctx.out.line(&format!(
            "  {verb}: {labels}; comment {}{}",
            a.comment,
            a.comment_url
                .as_deref()
                .map(|u| format!(" {u}"))
                .unwrap_or_default()
        ));
        if !a.labels_skipped.is_empty() {
            ctx.out.line(&format!(
                "  not applied: {} — the repository has no such label (create it, or set github.create_labels: true)",
                a.labels_skipped.join(", ")
            ));
        }
    }
    ctx.out.line(&ctx.out.dim(&format!("  run: {run_id}")));
}
