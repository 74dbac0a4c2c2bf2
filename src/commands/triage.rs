//! `autotriage triage REF…`

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::TriageArgs;
use crate::error::CommandError;
use crate::forge::{Forge, RecordError};
use crate::issue::{Issue, IssueRef};
use crate::memory::sqlite::{OpenMode, SqliteMemory};
use crate::memory::{ListFilter, Memory};
use crate::triage::classifier::{KindModel, TrainSpec};
use crate::triage::{Engine, MODEL_KEY, Triage, model_for_history};

/// Run `triage`.
pub fn run(args: &TriageArgs, ctx: &Ctx) -> Result<()> {
    let refs = ctx.ref_context();
    let parsed: Vec<(String, IssueRef)> = args
        .refs
        .iter()
        .map(|r| IssueRef::parse(r, &refs).map(|p| (r.clone(), p)))
        .collect::<Result<_, _>>()?;
    let mut memory = ctx.open_memory(OpenMode::Create)?;

    // Resolve every reference before triaging: a bad input fails with nothing done.
    let forge = ctx.local_forge();
    let mut items: Vec<Result<Issue, RecordError>> = Vec::new();
    for (raw, r) in &parsed {
        match r {
            IssueRef::Remote { repo, number } => match memory.issue(&repo.to_string(), *number)? {
                Some(issue) => items.push(Ok(issue)),
                None => {
                    return Err(CommandError::usage(format!(
                        "{raw}: {repo}#{number} is not in memory, and this build reads issues from local sources only\n  fix: import it first (`autotriage memory import issues.json`, from `gh issue list --json number,title,body,labels,author,state,comments,createdAt,url`) or pass a local file"
                    ))
                    .into());
                }
            },
            IssueRef::Repo(repo) => {
                let list = memory.list(&ListFilter {
                    repo: Some(repo.to_string()),
                    state: Some("open".into()),
                    ..Default::default()
                })?;
                if list.is_empty() {
                    return Err(CommandError::usage(format!(
                        "{raw}: memory has no open issues of {repo}\n  fix: import them first with `autotriage memory import SOURCE`"
                    ))
                    .into());
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

    let engine = build_engine(ctx, &mut memory)?;
    // Ctrl-C finishes the issue in hand, commits memory and stops with 130.
    let _polling = crate::interrupt::Polling::enter();
    let batch = items.len() > 1;
    let store = ctx.run_store();
    let bar = if batch {
        ctx.out.progress(items.len() as u64, "triaging")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut failed = 0usize;
    // Memory writes of a batch are committed every 100 issues rather than one by one.
    let mut pending = 0usize;
    memory.begin_batch()?;
    let mut single_error: Vec<anyhow::Error> = Vec::new();
    for item in items {
        if crate::interrupt::requested() {
            break;
        }
        bar.inc(1);
        let issue = match item {
            Ok(i) => i,
            Err(e) => {
                failed += 1;
                report_error(ctx, &e.location, &e.message);
                continue;
            }
        };
        let result = triage_one(&engine, &store, &mut memory, &issue);
        pending += 1;
        if pending >= 100 {
            memory.end_batch()?;
            memory.begin_batch()?;
            pending = 0;
        }
        match result {
            Ok((run_id, t)) => {
                bar.suspend(|| print_triage(ctx, &issue, &t, &run_id, batch));
            }
            Err(e) => {
                failed += 1;
                if !batch {
                    single_error.push(e);
                    break;
                }
                report_error(ctx, &issue.reference(), &format!("{e:#}"));
            }
        }
    }
    bar.finish_and_clear();
    memory.end_batch()?;
    if crate::interrupt::requested() {
        return Err(CommandError::interrupted(
            "interrupted; the issues triaged so far are recorded in memory and their runs, the rest were not started",
        )
        .into());
    }
    if let Some(e) = single_error.pop() {
        return Err(e);
    }
    if failed > 0 {
        return Err(CommandError::failure(format!(
            "{failed} issue(s) could not be triaged (listed above); the others were"
        ))
        .into());
    }
    Ok(())
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
pub fn build_engine(ctx: &Ctx, memory: &mut SqliteMemory) -> Result<Engine> {
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

fn triage_one(
    engine: &Engine,
    store: &crate::runs::fs::FsRunStore,
    memory: &mut SqliteMemory,
    issue: &Issue,
) -> Result<(String, Triage)> {
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
    let t = engine.triage(issue);
    run.write_json("triage.json", &t)?;
    run.event(
        "triage",
        "decision",
        &format!(
            "kind {:?} priority {} fixable {}",
            t.kind, t.priority, t.fixable
        ),
        json!({"labels": t.labels, "duplicates": t.duplicates.len(), "missing": t.missing}),
    )?;
    run.write_json(
        "usage.json",
        &json!({"calls": [], "total": {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}}),
    )?;
    run.stage_finished("triage", None)?;
    memory.upsert_issues(std::slice::from_ref(issue), &|| false)?;
    memory.record_triage(
        &issue.repo,
        issue.number,
        Some(run.id()),
        &serde_json::to_value(&t)?,
    )?;
    memory.record_run(&run.meta)?;
    Ok((run.id().to_string(), t))
}

fn print_triage(ctx: &Ctx, issue: &Issue, t: &Triage, run_id: &str, batch: bool) {
    if ctx.out.json {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.insert("run_id".into(), json!(run_id));
            map.insert("title".into(), json!(issue.title));
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
    ctx.out.line(&ctx.out.dim(&format!("  run: {run_id}")));
}
