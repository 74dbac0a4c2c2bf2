//! `autotriage eval …`: backtesting figures, printed and as JSON fractions.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::{
    EvalApplyArgs, EvalCommand, EvalDuplicatesArgs, EvalFixArgs, EvalLocalizeArgs, EvalPatches,
    EvalPriorityArgs, EvalTriageArgs, LineSelection,
};
use crate::error::CommandError;
use crate::eval::{self, KindReport, LabelledText, Report};
use crate::forge::Forge;
use crate::issue::IssueRef;
use crate::triage::classifier::TrainSpec;
use crate::triage::kind_of_labels;

/// Run an `eval` subcommand.
pub fn run(cmd: EvalCommand, ctx: &Ctx) -> Result<()> {
    match cmd {
        EvalCommand::Triage(args) => triage(&args, ctx),
        EvalCommand::Duplicates(args) => duplicates(&args, ctx),
        EvalCommand::Priority(args) => priority(&args, ctx),
        EvalCommand::Localize(args) => localize(&args, ctx),
        EvalCommand::Apply(args) => apply_cases(&args, ctx),
        EvalCommand::Fix(args) => fix(&args, ctx),
    }
}

fn keep(selection: LineSelection, index: usize) -> bool {
    match selection {
        LineSelection::All => true,
        LineSelection::Odd => index.is_multiple_of(2),
        LineSelection::Even => index % 2 == 1,
    }
}

/// Labelled texts from any local source; labels become kinds through `labels.aliases`.
fn labelled(ctx: &Ctx, source: &str, lines: LineSelection) -> Result<Vec<LabelledText>> {
    let r = IssueRef::parse(source, &ctx.ref_context())?;
    let batch = ctx.local_forge().read(&r)?;
    let mut out = Vec::new();
    let mut bad = 0;
    for (i, item) in batch.into_iter().enumerate() {
        if !keep(lines, i) {
            continue;
        }
        match item {
            Ok(issue) => {
                if let Some(kind) = kind_of_labels(&issue.labels, &ctx.config().labels.aliases) {
                    out.push(LabelledText {
                        title: issue.title,
                        body: issue.body,
                        kind,
                    });
                }
            }
            Err(e) => {
                bad += 1;
                ctx.out.debug(&format!("skipped {e}"));
            }
        }
    }
    if bad > 0 {
        ctx.out.warn(&format!(
            "{source}: skipped {bad} unreadable record(s) (-v lists them)"
        ));
    }
    if out.is_empty() {
        return Err(CommandError::usage(format!(
            "{source}: no record has a label that maps to a kind\n  fix: check sources.csv.label and labels.aliases"
        ))
        .into());
    }
    Ok(out)
}

fn triage(args: &EvalTriageArgs, ctx: &Ctx) -> Result<()> {
    let threshold = args.threshold.unwrap_or(ctx.config().triage.threshold);
    let defaults = TrainSpec::default();
    let spec = TrainSpec {
        seed: args.seed,
        l2: args.l2.unwrap_or(defaults.l2),
        epochs: args.epochs.unwrap_or(defaults.epochs),
        learning_rate: args.learning_rate.unwrap_or(defaults.learning_rate),
        ..defaults
    };
    let started = std::time::Instant::now();
    if args.engine == crate::cli::EvalEngine::Model {
        return model_triage(args, ctx, threshold, started);
    }
    let (report, setup) = match (&args.train, &args.test, &args.data) {
        (Some(train), Some(test), _) => {
            let train_set = labelled(ctx, train, args.lines)?;
            let test_set = labelled(ctx, test, args.lines)?;
            let setup = format!(
                "trained on {} issues of {train}, tested on {} of {test}",
                train_set.len(),
                test_set.len()
            );
            (
                eval::train_test(&train_set, &test_set, spec, threshold),
                setup,
            )
        }
        (_, _, Some(data)) => {
            let set = labelled(ctx, data, args.lines)?;
            let setup = format!(
                "{}-fold cross-validation on {} issues of {data}, seed {}",
                args.folds,
                set.len(),
                args.seed
            );
            (
                eval::cross_validate(&set, args.folds as usize, spec, threshold),
                setup,
            )
        }
        _ => {
            return Err(
                CommandError::usage("give --data FILE, or --train FILE and --test FILE").into(),
            );
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if ctx.out.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(m) = v.as_object_mut() {
            m.insert("setup".into(), json!(setup));
            m.insert("seconds".into(), json!(seconds));
        }
        ctx.out.json(&v);
        return Ok(());
    }
    print_kind_report(ctx, &report, &setup, seconds);
    Ok(())
}

/// A model's kind (index, `None` for unclear) and confidence, or why not and whether
/// that stops the evaluation.
type ModelAnswerResult = Result<(Option<usize>, f64), (String, bool)>;

/// `eval triage --engine model`: the configured model answers for every test issue.
fn model_triage(
    args: &EvalTriageArgs,
    ctx: &Ctx,
    threshold: f64,
    started: std::time::Instant,
) -> Result<()> {
    use crate::triage::model::{self as tmodel, PromptContext};
    let session =
        super::model_session(crate::cli::EngineArg::Model, None, ctx)?.ok_or_else(|| {
            CommandError::usage("eval triage --engine model needs a model (--model NAME)")
        })?;
    let source = args
        .test
        .as_ref()
        .or(args.data.as_ref())
        .ok_or_else(|| CommandError::usage("give --data FILE (or --test FILE)"))?;
    let mut set = labelled(ctx, source, args.lines)?;
    if let Some(n) = args.limit {
        set.truncate(n);
    }
    let mut kinds: Vec<String> = set.iter().map(|t| t.kind.clone()).collect();
    kinds.sort();
    kinds.dedup();
    let tool = tmodel::tool(&kinds);
    let jobs = ctx.global.jobs.unwrap_or(4).max(1);
    let mut truth = Vec::new();
    let mut pred = Vec::new();
    let mut failures = 0usize;
    let bar = ctx.out.progress(set.len() as u64, "asking the model");
    for (c, chunk) in set.chunks(jobs).enumerate() {
        let answers: Vec<ModelAnswerResult> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let (session, tool, kinds) = (&session, &tool, &kinds);
                    scope.spawn(move || {
                        let issue = crate::issue::Issue {
                            repo: "eval/data".into(),
                            number: (c * jobs + i + 1) as u64,
                            title: item.title.clone(),
                            body: item.body.clone(),
                            labels: vec![],
                            state: crate::issue::IssueState::Open,
                            author: None,
                            author_association: None,
                            created_at: None,
                            comments: vec![],
                            url: None,
                            source: None,
                            reactions: None,
                            trigger_label_added_by: None,
                            locked: false,
                        };
                        let ctx = PromptContext {
                            labels: kinds.iter().map(|k| (k.clone(), None)).collect(),
                            kinds: kinds.clone(),
                            threshold,
                            ..Default::default()
                        };
                        let mut spent = 0.0;
                        match session.structured(
                            "eval",
                            tmodel::request(&issue, &ctx),
                            tool,
                            &mut spent,
                        ) {
                            Ok((v, _, _)) => {
                                let a = tmodel::answer(&v)
                                    .ok_or(("the answer does not fit".to_string(), false))?;
                                Ok((
                                    a.kind.and_then(|k| kinds.iter().position(|x| *x == k)),
                                    a.confidence,
                                ))
                            }
                            // Only an answer that does not fit is this issue's problem;
                            // budget, connection, auth or exhausted retries stop the eval.
                            Err(e) => Err((
                                e.to_string(),
                                !matches!(e.error, crate::model::ModelError::Malformed { .. }),
                            )),
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(("worker panicked".to_string(), true)))
                })
                .collect()
        });
        for (item, a) in chunk.iter().zip(answers) {
            bar.inc(1);
            let Some(t) = kinds.iter().position(|k| *k == item.kind) else {
                continue;
            };
            match a {
                Ok((p, conf)) => {
                    truth.push(t);
                    pred.push((p.unwrap_or(eval::NO_PREDICTION), conf));
                }
                Err((e, true)) => {
                    bar.finish_and_clear();
                    return Err(CommandError::failure(format!(
                        "{e}\n(after {} issues)",
                        truth.len()
                    ))
                    .into());
                }
                Err((e, false)) => {
                    failures += 1;
                    ctx.out
                        .debug(&format!("model failed on {:?}: {e}", item.title));
                }
            }
        }
    }
    bar.finish_and_clear();
    if failures > 0 {
        ctx.out.warn(&format!(
            "{failures} issue(s) got no usable answer and are left out (-v shows why)"
        ));
    }
    let report = eval::kind_report(&kinds, &truth, &pred, threshold);
    let setup = format!(
        "model {} on {} issues of {source}, spent ${:.4}",
        session.resolved.model.id(),
        truth.len(),
        session.spent()
    );
    let seconds = started.elapsed().as_secs_f64();
    if ctx.out.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(m) = v.as_object_mut() {
            m.insert("setup".into(), json!(setup));
            m.insert("seconds".into(), json!(seconds));
            m.insert("cost_usd".into(), json!(session.spent()));
            m.insert("failures".into(), json!(failures));
        }
        ctx.out.json(&v);
        return Ok(());
    }
    print_kind_report(ctx, &report, &setup, seconds);
    Ok(())
}

fn print_kind_report(ctx: &Ctx, r: &KindReport, setup: &str, seconds: f64) {
    if r.skipped_unknown_kind > 0 {
        ctx.out.warn(&format!(
            "{} test issue(s) have a kind the training data lacks and were left out",
            r.skipped_unknown_kind
        ));
    }
    ctx.out
        .line(&format!("kind classification: {setup} ({seconds:.1} s)"));
    ctx.out.line(&format!(
        "  accuracy {:.3}   macro-F1 {:.3}",
        r.accuracy, r.macro_f1
    ));
    ctx.out.line(&format!(
        "  at threshold {:.2}: coverage {:.3}, precision {:.3} (the rest abstain: needs a human)",
        r.threshold, r.coverage, r.precision_at_threshold
    ));
    ctx.out
        .line("  kind          precision  recall  F1     support");
    for c in &r.per_class {
        ctx.out.line(&format!(
            "  {:<13} {:<10.3} {:<7.3} {:<6.3} {}",
            c.kind, c.precision, c.recall, c.f1, c.support
        ));
    }
    ctx.out.line(&format!(
        "  confusion (rows: true, columns: predicted {}):",
        r.kinds.join(", ")
    ));
    for (k, row) in r.kinds.iter().zip(&r.confusion) {
        ctx.out.line(&format!(
            "  {:<13} {}",
            k,
            row.iter().map(|n| format!("{n:>6}")).collect::<String>()
        ));
    }
    ctx.out.line("  threshold  coverage  precision");
    for p in &r.curve {
        ctx.out.line(&format!(
            "  {:<10.2} {:<9.3} {:.3}",
            p.threshold, p.coverage, p.precision
        ));
    }
}

/// Read named columns of a CSV; errors name the missing column and the flag.
fn read_columns(path: &Path, columns: &[(&str, &str)]) -> Result<Vec<Vec<String>>> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| {
        CommandError::usage(format!(
            "cannot read {}: {e}\n  fix: check the path",
            path.display()
        ))
    })?;
    let headers = reader
        .headers()
        .map_err(|e| CommandError::usage(format!("{}: no header row: {e}", path.display())))?
        .clone();
    let mut idx = Vec::new();
    for (name, flag) in columns {
        match headers.iter().position(|h| h.trim() == *name) {
            Some(i) => idx.push(i),
            None => {
                return Err(CommandError::usage(format!(
                    "{}: no column {name:?} (columns: {})\n  fix: name the right one with {flag}",
                    path.display(),
                    headers.iter().collect::<Vec<_>>().join(", ")
                ))
                .into());
            }
        }
    }
    let mut rows = Vec::new();
    for (n, rec) in reader.records().enumerate() {
        let rec = rec
            .map_err(|e| CommandError::usage(format!("{}: row {}: {e}", path.display(), n + 1)))?;
        rows.push(
            idx.iter()
                .map(|i| rec.get(*i).unwrap_or("").to_string())
                .collect(),
        );
    }
    Ok(rows)
}

fn duplicates(args: &EvalDuplicatesArgs, ctx: &Ctx) -> Result<()> {
    let threshold = args
        .threshold
        .unwrap_or(ctx.config().triage.duplicate_threshold);
    let rows = read_columns(
        &args.corpus,
        &[
            (&args.id_column, "--id-column"),
            (&args.title_column, "--title-column"),
            (&args.body_column, "--body-column"),
        ],
    )?;
    let mut corpus: Vec<Report> = rows
        .into_iter()
        .map(|mut r| Report {
            body: r.pop().unwrap_or_default(),
            title: r.pop().unwrap_or_default(),
            id: r.pop().unwrap_or_default(),
        })
        .collect();
    let text = std::fs::read_to_string(&args.pairs).map_err(|e| {
        CommandError::usage(format!(
            "cannot read {}: {e}\n  fix: check the path",
            args.pairs.display()
        ))
    })?;
    let mut pairs = Vec::new();
    let known: std::collections::HashSet<String> = corpus.iter().map(|r| r.id.clone()).collect();
    let mut extra: HashMap<String, Report> = HashMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        if !keep(args.lines, i) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            CommandError::usage(format!("{}:{}: not JSON: {e}", args.pairs.display(), i + 1))
        })?;
        let id = |k: &str| {
            v.get(k)
                .map(|x| x.as_str().map_or_else(|| x.to_string(), String::from))
        };
        let (Some(a), Some(b)) = (id("issue_id"), id("duplicate_id")) else {
            return Err(CommandError::usage(format!(
                "{}:{}: needs issue_id and duplicate_id",
                args.pairs.display(),
                i + 1
            ))
            .into());
        };
        // Reports that only the pair file carries join the corpus.
        for (key, side) in [(&a, "issue"), (&b, "duplicate")] {
            if !known.contains(key)
                && let Some(obj) = v.get(side)
            {
                let field = |c: &str| {
                    obj.get(c)
                        .and_then(|x| x.as_str())
                        .unwrap_or("")
                        .to_string()
                };
                extra.insert(
                    key.clone(),
                    Report {
                        id: key.clone(),
                        title: field(&args.title_column),
                        body: field(&args.body_column),
                    },
                );
            }
        }
        pairs.push((a, b));
    }
    corpus.extend(extra.into_values());
    let started = std::time::Instant::now();
    let r = eval::duplicates(&corpus, &pairs, threshold);
    let seconds = started.elapsed().as_secs_f64();
    if ctx.out.json {
        let mut v = serde_json::to_value(&r)?;
        if let Some(m) = v.as_object_mut() {
            m.insert("pairs".into(), json!(pairs.len()));
            m.insert("seconds".into(), json!(seconds));
        }
        ctx.out.json(&v);
        return Ok(());
    }
    ctx.out.line(&format!(
        "duplicates: {} queries from {} pairs ({:?} lines), each ranking {} reports ({seconds:.2} s)",
        r.queries,
        pairs.len(),
        args.lines,
        r.corpus
    ));
    ctx.out.line(&format!(
        "  recall@1 {:.3}   recall@5 {:.3}   recall@10 {:.3}   MRR {:.3}",
        r.recall_at_1, r.recall_at_5, r.recall_at_10, r.mrr
    ));
    ctx.out.line(&format!(
        "  at threshold {:.2}: {:.3} of queries get a likely duplicate, {:.3} of those are right",
        r.threshold, r.likely_rate, r.likely_precision
    ));
    Ok(())
}

fn priority(args: &EvalPriorityArgs, ctx: &Ctx) -> Result<()> {
    let rows = read_columns(
        &args.corpus,
        &[
            (&args.title_column, "--title-column"),
            (&args.body_column, "--body-column"),
            (&args.priority_column, "--priority-column"),
        ],
    )?;
    let reports: Vec<(String, String, String)> = rows
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep(args.lines, *i))
        .map(|(_, mut r)| {
            let p = r.pop().unwrap_or_default();
            let b = r.pop().unwrap_or_default();
            (r.pop().unwrap_or_default(), b, p)
        })
        .collect();
    let r = eval::priority(&reports);
    if ctx.out.json {
        ctx.out.json(&r);
        return Ok(());
    }
    ctx.out.line(&format!(
        "priority: {} reports (all taken as bugs)",
        r.issues
    ));
    ctx.out.line(&format!(
        "  agreement {:.3}   within one level {:.3}   always-the-commonest-level baseline {:.3}",
        r.agreement, r.within_one, r.majority_baseline
    ));
    ctx.out
        .line("  rows: people's level, columns: predicted P0 P1 P2 P3");
    for (i, row) in r.confusion.iter().enumerate() {
        ctx.out.line(&format!(
            "  P{i} {}",
            row.iter().map(|n| format!("{n:>6}")).collect::<String>()
        ));
    }
    let mapping: Vec<String> = r.mapping.iter().map(|(k, v)| format!("{k}→{v}")).collect();
    ctx.out.line(&format!("  mapping: {}", mapping.join(", ")));
    Ok(())
}

/// One SWE-bench-format record.
#[derive(serde::Deserialize)]
struct LocalizeRecord {
    repo: String,
    instance_id: String,
    base_commit: String,
    problem_statement: String,
    patch: String,
}

/// The git dir of `owner/name` under `root`, in the layouts `eval localize` accepts.
fn find_repo(root: &Path, repo: &str) -> Option<git2::Repository> {
    let (owner, name) = repo.split_once('/')?;
    [
        root.join(format!("{owner}+{name}")).join("repo"),
        root.join(owner).join(name),
        root.join(format!("{owner}+{name}")),
    ]
    .iter()
    .find_map(|p| git2::Repository::open(p).ok())
}

fn localize(args: &EvalLocalizeArgs, ctx: &Ctx) -> Result<()> {
    use crate::locate::{self, LocateSettings};
    let text = std::fs::read_to_string(&args.dataset).map_err(|e| {
        CommandError::usage(format!(
            "cannot read {}: {e}\n  fix: check the path",
            args.dataset.display()
        ))
    })?;
    if !args.repos.is_dir() {
        return Err(CommandError::usage(format!(
            "--repos {}: not a folder\n  fix: give the folder holding owner+name/repo git dirs",
            args.repos.display()
        ))
        .into());
    }
    let mut records: Vec<LocalizeRecord> = Vec::new();
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    for (n, (i, line)) in lines.enumerate() {
        let r: LocalizeRecord = serde_json::from_str(line).map_err(|e| {
            CommandError::usage(format!(
                "{}:{}: not a SWE-bench record: {e}\n  fix: each line needs repo, instance_id, base_commit, problem_statement and patch",
                args.dataset.display(),
                i + 1
            ))
        })?;
        let chosen = if args.instance.is_empty() {
            keep(args.lines, n)
        } else {
            args.instance.contains(&r.instance_id)
        };
        if chosen {
            records.push(r);
        }
    }
    if let Some(n) = args.limit {
        records.truncate(n);
    }
    let settings = LocateSettings::from_config(&ctx.config().locate)?;
    let cache = args
        .index_dir
        .clone()
        .unwrap_or_else(|| ctx.workspace.state_dir().join("index"));
    let bar = ctx.out.progress(records.len() as u64, "localizing");
    let mut outcomes = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    for r in &records {
        bar.inc(1);
        let Some(repo) = find_repo(&args.repos, &r.repo) else {
            skipped.push(format!(
                "{}: no git repository for {} under {}",
                r.instance_id,
                r.repo,
                args.repos.display()
            ));
            continue;
        };
        let Ok(oid) = git2::Oid::from_str(&r.base_commit) else {
            skipped.push(format!(
                "{}: base_commit {:?} is not a commit id",
                r.instance_id, r.base_commit
            ));
            continue;
        };
        if repo.find_commit(oid).is_err() {
            skipped.push(format!(
                "{}: base commit {} is not in {}",
                r.instance_id,
                r.base_commit,
                repo.path().display()
            ));
            continue;
        }
        let (index, info) = locate::open_index(&cache, &repo, oid, &settings)?;
        let index_seconds = info.seconds;
        let (title, body) = r
            .problem_statement
            .split_once('\n')
            .unwrap_or((r.problem_statement.as_str(), ""));
        let located = locate::locate(&repo, &index, info, title, body, &[], &settings);
        let gold = eval::patch_files(&r.patch);
        let ranked: Vec<String> = located.files.iter().map(|f| f.path.clone()).collect();
        let mut o = eval::localize_outcome(&r.instance_id, &gold, &ranked);
        o.context_tokens = located.context.used_tokens;
        o.gold_in_context = located.context.files.iter().any(|f| gold.contains(&f.path));
        o.index_seconds = index_seconds;
        o.locate_seconds = located.seconds;
        o.search_seconds = located.search_seconds;
        // The repair request this context makes, and the real fix as the answer.
        let issue = crate::issue::Issue {
            repo: r.repo.clone(),
            number: 0,
            title: title.to_string(),
            body: body.to_string(),
            ..Default::default()
        };
        let request = crate::repair::prompt::request(
            &issue,
            &located.context,
            &crate::repair::prompt::RepairInputs::default(),
            ctx.config().repair.max_tokens,
            0.0,
        );
        let prompt_text: String = request.system.clone().unwrap_or_default()
            + &request
                .messages
                .iter()
                .flat_map(|m| m.content.iter())
                .filter_map(|b| match b {
                    crate::model::Block::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<String>();
        o.prompt_tokens = crate::locate::context::estimate_tokens(&prompt_text);
        o.answer_tokens = crate::repair::parse(&r.patch)
            .map(|edits| {
                let blocks: String = edits.iter().map(|e| e.to_block()).collect();
                crate::locate::context::estimate_tokens(&blocks)
            })
            .unwrap_or(0);
        let channels = |p: &str| -> String {
            located
                .files
                .iter()
                .find(|f| f.path == p)
                .map(|f| {
                    f.evidence
                        .iter()
                        .map(|e| format!("{:?}#{}", e.channel, e.rank))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default()
        };
        ctx.out.debug(&format!(
            "{}: first gold at {} (gold {} [{}]; top: {} [{}])",
            r.instance_id,
            o.first_rank.map_or("-".into(), |r| r.to_string()),
            gold.join(", "),
            gold.first().map(|g| channels(g)).unwrap_or_default(),
            ranked
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            ranked.first().map(|g| channels(g)).unwrap_or_default(),
        ));
        outcomes.push(o);
    }
    bar.finish_and_clear();
    for s in &skipped {
        ctx.out.warn(&format!("skipped {s}"));
    }
    if outcomes.is_empty() {
        return Err(CommandError::usage(format!(
            "no instance of {} could be measured\n  fix: put the repositories under {} as owner+name/repo or owner/name (git dirs holding the base commits)",
            args.dataset.display(),
            args.repos.display()
        ))
        .into());
    }
    let report = eval::localize_report(&outcomes);
    if ctx.global.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("skipped".into(), json!(skipped.len()));
            o.insert("per_instance".into(), serde_json::to_value(&outcomes)?);
        }
        ctx.out.json(&v);
        return Ok(());
    }
    ctx.out.line(&format!(
        "{} instances ({} skipped)\n  file recall@1  {:.3}\n  file recall@3  {:.3}\n  file recall@5  {:.3}\n  file recall@10 {:.3}\n  MRR            {:.3}\n  median context {:.0} tokens (gold file in context: {:.3})\n  repair request {:.0} tokens median (the real fix as edit blocks: {:.0})\n  median time    {:.3} s per instance ({:.3} s ranking and context, of which {:.3} s searching; the rest opening or building the index)",
        report.instances,
        skipped.len(),
        report.recall_at_1,
        report.recall_at_3,
        report.recall_at_5,
        report.recall_at_10,
        report.mrr,
        report.median_context_tokens,
        report.gold_in_context,
        report.median_prompt_tokens,
        report.median_answer_tokens,
        report.median_seconds,
        report.median_locate_seconds,
        report.median_search_seconds,
    ));
    Ok(())
}

/// One `eval apply` case.
#[derive(serde::Deserialize)]
struct ApplyCase {
    patch: String,
    files: std::collections::BTreeMap<String, String>,
    expected: std::collections::BTreeMap<String, Option<String>>,
    #[serde(default)]
    corruption: Option<String>,
}

fn apply_cases(args: &EvalApplyArgs, ctx: &Ctx) -> Result<()> {
    let text = std::fs::read_to_string(&args.cases).map_err(|e| {
        CommandError::usage(format!(
            "cannot read {}: {e}\n  fix: check the path",
            args.cases.display()
        ))
    })?;
    let guard = crate::repair::PathGuard::new(&ctx.config().paths.protected)
        .map_err(CommandError::usage)?;
    let mut outcomes: Vec<(String, eval::ApplyOutcome)> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let case: ApplyCase = serde_json::from_str(line).map_err(|e| {
            CommandError::usage(format!(
                "{}:{}: not an apply case: {e}\n  fix: each line needs patch, files and expected",
                args.cases.display(),
                i + 1
            ))
        })?;
        let files = case.files.clone();
        let read = move |p: &str| files.get(p).cloned();
        let candidates: Vec<String> = case.files.keys().cloned().collect();
        let outcome = match crate::repair::parse(&case.patch)
            .map_err(crate::repair::ApplyError::from)
            .and_then(|edits| crate::repair::apply(&edits, &read, &candidates, &guard))
        {
            Err(e) => {
                ctx.out.debug(&format!("line {}: refused: {e}", i + 1));
                eval::ApplyOutcome::Refused
            }
            Ok(applied) => {
                let after = |p: &str| -> Option<String> {
                    match applied.files.get(p) {
                        Some(v) => v.clone(),
                        None => case.files.get(p).cloned(),
                    }
                };
                let expected_ok = case.expected.iter().all(|(p, want)| after(p) == *want);
                let nothing_else = applied.files.keys().all(|p| {
                    case.expected.contains_key(p) || after(p) == case.files.get(p).cloned()
                });
                if expected_ok && nothing_else {
                    eval::ApplyOutcome::Right
                } else {
                    for (p, want) in &case.expected {
                        let got = after(p).unwrap_or_default();
                        let want = want.clone().unwrap_or_default();
                        if got != want {
                            let d = similar::TextDiff::from_lines(&want, &got);
                            ctx.out.debug(&format!(
                                "line {}: applied but wrong in {p} (expected → got):\n{}",
                                i + 1,
                                d.unified_diff().context_radius(2)
                            ));
                        }
                    }
                    eval::ApplyOutcome::Wrong
                }
            }
        };
        outcomes.push((case.corruption.unwrap_or_else(|| "none".into()), outcome));
    }
    if outcomes.is_empty() {
        return Err(CommandError::usage(format!(
            "{}: no cases\n  fix: give JSON lines with patch, files and expected",
            args.cases.display()
        ))
        .into());
    }
    let report = eval::apply_report(&outcomes);
    if ctx.global.json {
        ctx.out.json(&report);
        return Ok(());
    }
    let row = |name: &str, s: &eval::ApplyShares| {
        format!(
            "  {name:<28} {:>5}  right {:.3}  wrong {:.3}  refused {:.3}",
            s.cases, s.right, s.wrong, s.refused
        )
    };
    let mut out = vec![row("all", &report.overall)];
    for (k, s) in &report.by_corruption {
        out.push(row(k, s));
    }
    ctx.out.line(&out.join("\n"));
    Ok(())
}

/// `eval fix`: known patches replayed through the real `fix` flow (see
/// [`crate::eval_fix`]).
fn fix(args: &EvalFixArgs, ctx: &Ctx) -> Result<()> {
    use crate::eval_fix::{self, PatchKind};
    let all =
        eval_fix::read_dataset(&args.dataset).map_err(|e| CommandError::usage(e.to_string()))?;
    let envs = eval_fix::Envs::read(&args.envs).map_err(|e| CommandError::usage(e.to_string()))?;
    if !args.repos.is_dir() {
        return Err(CommandError::usage(format!(
            "--repos {}: not a folder\n  fix: give the folder holding the checkouts (owner__name or name)",
            args.repos.display()
        ))
        .into());
    }
    let mut chosen: Vec<&eval_fix::Instance> = all
        .iter()
        .filter(|i| args.instance.is_empty() || args.instance.contains(&i.instance_id))
        .collect();
    for id in &args.instance {
        if !all.iter().any(|i| &i.instance_id == id) {
            return Err(CommandError::usage(format!(
                "--instance {id}: not in {}",
                args.dataset.display()
            ))
            .into());
        }
    }
    if let Some(n) = args.limit {
        chosen.truncate(n);
    }
    if chosen.is_empty() {
        return Err(
            CommandError::usage(format!("{}: no instances", args.dataset.display())).into(),
        );
    }
    let kind = match args.patches {
        EvalPatches::Real => PatchKind::Real,
        EvalPatches::TestsOnly => PatchKind::TestsOnly,
        EvalPatches::Other => PatchKind::Other,
    };
    let exe = std::env::current_exe()
        .map_err(|e| CommandError::failure(format!("cannot find this program's path: {e}")))?;
    let temp;
    let scratch = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| CommandError::usage(format!("--work-dir {}: {e}", d.display())))?;
            d.canonicalize()?
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("autotriage-eval-fix-")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let repos = args.repos.canonicalize()?;
    let spec = eval_fix::RunSpec {
        repos: &repos,
        envs: &envs,
        exe: &exe,
        scratch: &scratch,
        timeout: args.timeout,
        kind,
        sandbox: if args.mode == "agent" {
            "required"
        } else {
            &args.sandbox
        },
        keep: args.work_dir.is_some(),
        agent: args.mode == "agent",
    };
    let bar = ctx.out.progress(chosen.len() as u64, "replaying");
    let mut outcomes = Vec::new();
    for inst in chosen {
        if crate::interrupt::requested() {
            break;
        }
        bar.set_message(inst.instance_id.clone());
        let o = eval_fix::run_instance(&spec, inst, &all);
        bar.inc(1);
        ctx.out.debug(&format!(
            "{}: preflight {}, verdict {}, proven {} ({:.0} s){}",
            o.instance_id,
            o.preflight,
            o.verdict.as_deref().unwrap_or("-"),
            o.proven,
            o.seconds,
            o.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
        outcomes.push(o);
    }
    bar.finish_and_clear();
    let report = eval_fix::report(kind, outcomes);
    if ctx.global.json {
        ctx.out.json(&report);
        return Ok(());
    }
    let mut lines = vec![format!(
        "fix replay, --patches {}: {} instances, {} passed the preflight, {} excluded",
        kind.as_str(),
        report.instances,
        report.preflight_passed,
        report.excluded
    )];
    if kind == PatchKind::Real {
        lines.push(format!(
            "  proven {}/{} ({:.3}); verdict fixed {}",
            report.proven, report.preflight_passed, report.proven_rate, report.fixed
        ));
    } else {
        lines.push(format!(
            "  false passes {}/{} ({:.3})",
            report.false_passes, report.preflight_passed, report.false_pass_rate
        ));
    }
    let verdicts: Vec<String> = report
        .verdicts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    lines.push(format!("  verdicts: {}", verdicts.join(", ")));
    lines.push(format!(
        "  median {:.1} s per instance (preflight {:.1} s)",
        report.median_seconds, report.median_preflight_seconds
    ));
    if report.targeted_runs > 0 {
        lines.push(format!(
            "  targeted run vs configured command ({} instances): median {:.1} s vs {:.1} s (ratio {:.2})",
            report.targeted_runs,
            report.median_targeted_seconds,
            report.median_command_seconds,
            report.median_targeted_ratio
        ));
    }
    for o in &report.per_instance {
        let status = if o.preflight != "ok" {
            "excluded".to_string()
        } else if o.proven {
            "proven".to_string()
        } else {
            o.verdict.clone().unwrap_or_else(|| "error".into())
        };
        let mut why = Vec::new();
        if o.preflight == "ok" && !o.proven {
            if kind == PatchKind::Real && o.verdict.as_deref() == Some("fixed") {
                if !o.tree_equal {
                    why.push(format!(
                        "branch tree {}",
                        o.tree_difference.as_deref().unwrap_or("differs")
                    ));
                }
                if !o.fail_to_pass_fixed {
                    why.push("FAIL_TO_PASS not among the proof".to_string());
                }
            }
            if !o.fail_to_pass_missing.is_empty() && kind == PatchKind::Real {
                why.push(format!(
                    "not proven by test.json: {}",
                    o.fail_to_pass_missing.join("; ")
                ));
            }
        }
        if let Some(r) = &o.reason {
            why.push(r.clone());
        }
        lines.push(format!(
            "  {:<40} {:<12} {:>6.1} s{}",
            o.instance_id,
            status,
            o.seconds,
            if why.is_empty() {
                String::new()
            } else {
                format!("  {}", why.join("; "))
            }
        ));
    }
    ctx.out.line(&lines.join("\n"));
    Ok(())
}
