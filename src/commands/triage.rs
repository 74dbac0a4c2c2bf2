//! `autotriage triage REF…`

use anyhow::Result;
use serde_json::json;

use super::render::Terminal;
use super::{Ctx, build_engine, model_session};
use crate::cli::{SourceArg, TriageArgs};
use crate::error::CommandError;
use crate::forge::github::{Applied, GithubForge, ListOptions};
use crate::forge::{Forge, RecordError};
use crate::issue::{Issue, IssueRef};
use crate::memory::ListFilter;
use crate::memory::sqlite::OpenMode;
use crate::pipeline::triage::{ApplyTo, TriageBatch, github_repo};
use crate::triage::Triage;

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
        labels: true,
        comment: true,
        never: Vec::new(),
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
    let view = TriageView {
        terminal: Terminal::new(ctx),
        ctx,
        bar: &bar,
        batch,
    };
    let done = crate::pipeline::triage::run_batch(
        &TriageBatch {
            issues: &issues,
            mode,
            apply: apply_to.as_ref(),
            workers: jobs,
            stop_on_error: !batch,
        },
        &engine,
        session.as_ref(),
        &store,
        &mut *memory,
        &view,
    )?;
    failed += done.failed;
    let stopped = done.stopped;
    let mut single_error: Vec<anyhow::Error> = done.error.into_iter().collect();
    bar.finish_and_clear();
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

/// The triage batch on a terminal: each recorded issue printed as it comes (under the
/// batch's bar), failures reported, the rest rendered by the [`Terminal`].
struct TriageView<'a> {
    terminal: Terminal<'a>,
    ctx: &'a Ctx,
    bar: &'a indicatif::ProgressBar,
    batch: bool,
}

impl crate::pipeline::Sink for TriageView<'_> {
    fn emit(&self, event: &crate::pipeline::Event) {
        use crate::pipeline::What;
        match &event.what {
            What::Triaged {
                triage,
                title,
                applied,
                ..
            } => {
                let run_id = event.run_id.as_deref().unwrap_or("");
                self.bar.suspend(|| {
                    print_triage(
                        self.ctx,
                        title,
                        triage,
                        run_id,
                        self.batch,
                        applied.as_ref(),
                    )
                });
            }
            What::Finished { error: Some(e), .. } => {
                self.bar.suspend(|| report_error(self.ctx, &event.issue, e))
            }
            What::Progress { .. } => self.bar.inc(1),
            What::ProgressDone => {}
            _ => self.bar.suspend(|| self.terminal.emit(event)),
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

fn print_triage(
    ctx: &Ctx,
    title: &str,
    t: &Triage,
    run_id: &str,
    batch: bool,
    applied: Option<&Applied>,
) {
    if ctx.out.json {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.insert("run_id".into(), json!(run_id));
            map.insert("title".into(), json!(title));
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
    ctx.out.line(&format!("  {title}"));
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
