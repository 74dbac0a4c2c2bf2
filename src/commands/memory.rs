//! `autotriage memory …`

use std::io::BufRead;
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::{
    MemoryCommand, MemoryExportArgs, MemoryImportArgs, MemoryListArgs, MemoryRefArgs,
    MemorySearchArgs, StateArg,
};
use crate::error::CommandError;
use crate::forge::{Forge, RecordError};
use crate::interrupt;
use crate::issue::{IssueRef, RefError};
use crate::memory::sqlite::OpenMode;
use crate::memory::{ExportRecord, ListFilter, MemoryError};
use crate::runs::now_rfc3339;

/// Run a `memory` subcommand.
pub fn run(cmd: MemoryCommand, ctx: &Ctx) -> Result<()> {
    match cmd {
        MemoryCommand::Import(args) => import(&args, ctx),
        MemoryCommand::List(args) => list(&args, ctx),
        MemoryCommand::Show(args) => show(&args, ctx),
        MemoryCommand::Search(args) => search(&args, ctx),
        MemoryCommand::Stats => stats(ctx),
        MemoryCommand::Forget(args) => forget(&args, ctx),
        MemoryCommand::Export(args) => export(&args, ctx),
        MemoryCommand::Init => init(ctx),
    }
}

/// True when the file is a `memory export` (its first line is our header).
fn is_export_file(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut first = String::new();
    if std::io::BufReader::new(file).read_line(&mut first).is_err() {
        return false;
    }
    matches!(
        serde_json::from_str::<ExportRecord>(first.trim()),
        Ok(ExportRecord::Header { .. })
    )
}

fn read_export(path: &Path) -> Result<(Vec<ExportRecord>, Vec<RecordError>)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CommandError::usage(format!(
            "cannot read {}: {e}\n  fix: check the path",
            path.display()
        ))
    })?;
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ExportRecord>(line) {
            Ok(ExportRecord::Header { schema_version, .. })
                if schema_version > crate::memory::SCHEMA_VERSION =>
            {
                return Err(CommandError::usage(format!(
                    "{}: written by a newer autotriage (schema {schema_version}, this build reads up to {})\n  fix: upgrade autotriage",
                    path.display(),
                    crate::memory::SCHEMA_VERSION
                ))
                .into());
            }
            Ok(r) => records.push(r),
            Err(e) => errors.push(RecordError {
                location: format!("{}:{}", path.display(), i + 1),
                message: e.to_string(),
            }),
        }
    }
    Ok((records, errors))
}

fn import(args: &MemoryImportArgs, ctx: &Ctx) -> Result<()> {
    let _polling = interrupt::Polling::enter();
    let forge = ctx.local_forge();
    let refs = ctx.ref_context();
    let mut records: Vec<ExportRecord> = Vec::new();
    let mut failed: Vec<RecordError> = Vec::new();
    let seen_at = now_rfc3339();
    // Read every source before writing anything: a bad source named on the command
    // line fails the command with nothing imported.
    for source in &args.sources {
        let reference = IssueRef::parse(source, &refs)?;
        match &reference {
            IssueRef::File {
                path,
                record: crate::issue::Record::All,
            } if path.extension().is_some_and(|e| e == "jsonl") || is_export_file(path) => {
                let (r, e) = read_export(path)?;
                records.extend(r);
                failed.extend(e);
            }
            IssueRef::Remote { .. } | IssueRef::Repo(_) => {
                return Err(RefError::Malformed {
                    input: source.clone(),
                    reason:
                        "`memory import` reads local sources; GitHub issues are fetched by `triage`"
                            .into(),
                }
                .into());
            }
            _ => {
                for item in forge.read(&reference)? {
                    match item {
                        Ok(issue) => records.push(ExportRecord::Issue {
                            issue: Box::new(issue),
                            seen_at: seen_at.clone(),
                        }),
                        Err(e) => failed.push(e),
                    }
                }
            }
        }
        if interrupt::requested() {
            return Err(MemoryError::Interrupted.into());
        }
    }

    let mut memory = ctx.open_memory(OpenMode::Create)?;
    let bar = ctx.out.progress(records.len() as u64, "importing");
    let counts = memory.import_records(&records, &|| {
        bar.inc(1);
        interrupt::requested()
    });
    bar.finish_and_clear();
    let counts = counts?;

    for e in &failed {
        if ctx.out.json {
            ctx.out
                .json_line(&json!({"ref": e.location, "error": e.message}));
        } else {
            ctx.out.error(&e.to_string());
        }
    }
    let summary = json!({
        "imported": counts.inserted + counts.updated,
        "inserted": counts.inserted,
        "updated": counts.updated,
        "other_records": counts.other,
        "failed": failed.len(),
        "memory": memory.location(),
    });
    if ctx.out.json {
        ctx.out.json_line(&summary);
    } else {
        let mut text = format!(
            "imported {} issues ({} new, {} updated) into {}",
            counts.inserted + counts.updated,
            counts.inserted,
            counts.updated,
            memory.location()
        );
        if counts.other > 0 {
            text.push_str(&format!(
                ", plus {} triage results, runs and learned records",
                counts.other
            ));
        }
        ctx.out.line(&text);
    }
    if !failed.is_empty() {
        return Err(CommandError::failure(format!(
            "{} record(s) could not be read (listed above); the others were imported\n  fix: correct those records and import again (importing is idempotent)",
            failed.len()
        ))
        .into());
    }
    Ok(())
}

/// Resolve `owner/repo#N`, `REPO#N` as stored (e.g. `local#3`), `#N` or `N`.
fn memory_key(input: &str, ctx: &Ctx) -> Result<(String, u64)> {
    match IssueRef::parse(input, &ctx.ref_context()) {
        Ok(IssueRef::Remote { repo, number }) => Ok((repo.to_string(), number)),
        Ok(other) => Err(RefError::Malformed {
            input: input.into(),
            reason: format!("{other} names a source, not one stored issue; use owner/repo#N"),
        }
        .into()),
        Err(e) => match crate::issue::parse_key(input) {
            Some(key) => Ok(key),
            None => Err(e.into()),
        },
    }
}

fn list(args: &MemoryListArgs, ctx: &Ctx) -> Result<()> {
    let memory = ctx.open_memory(OpenMode::ReadOnly)?;
    let filter = ListFilter {
        repo: args.repo.clone(),
        label: args.label.clone(),
        state: args.state.map(|s| match s {
            StateArg::Open => "open".into(),
            StateArg::Closed => "closed".into(),
        }),
        limit: Some(args.limit),
    };
    let issues = memory.list(&filter)?;
    if ctx.out.json {
        ctx.out.json(&json!({"issues": issues}));
        return Ok(());
    }
    if issues.is_empty() {
        ctx.out
            .info("no issues in memory match; add some with `autotriage memory import SOURCE`");
    }
    for i in &issues {
        let labels = if i.labels.is_empty() {
            String::new()
        } else {
            format!(" [{}]", i.labels.join(", "))
        };
        ctx.out.line(&format!(
            "{:<24} {:<6} {}{}",
            i.reference,
            i.state,
            i.title,
            ctx.out.dim(&labels)
        ));
    }
    Ok(())
}

fn show(args: &MemoryRefArgs, ctx: &Ctx) -> Result<()> {
    let (repo, number) = memory_key(&args.reference, ctx)?;
    let memory = ctx.open_memory(OpenMode::ReadOnly)?;
    let Some(issue) = memory.issue(&repo, number)? else {
        return Err(CommandError::usage(format!(
            "{repo}#{number} is not in memory ({})\n  fix: `autotriage memory search TEXT` finds stored issues; `memory import` adds them",
            memory.location()
        ))
        .into());
    };
    let results = memory.triage_results(&repo, number)?;
    if ctx.out.json {
        ctx.out
            .json(&json!({"issue": issue, "triage_results": results}));
        return Ok(());
    }
    ctx.out.line(
        &ctx.out
            .bold(&format!("{} {}", issue.reference(), issue.title)),
    );
    ctx.out.line(&format!("state: {}", issue.state.as_str()));
    ctx.out.line(&format!(
        "labels: {}",
        if issue.labels.is_empty() {
            "(none)".into()
        } else {
            issue.labels.join(", ")
        }
    ));
    if let Some(a) = &issue.author {
        ctx.out.line(&format!(
            "author: {a} ({})",
            issue
                .author_association
                .as_deref()
                .unwrap_or("association unknown")
        ));
    }
    if let Some(c) = &issue.created_at {
        ctx.out.line(&format!("created: {c}"));
    }
    if let Some(s) = &issue.source {
        ctx.out.line(&format!("source: {s}"));
    }
    ctx.out.line(&format!(
        "comments: {}, triage results: {}",
        issue.comments.len(),
        results.len()
    ));
    ctx.out.line("");
    ctx.out.line(&issue.body);
    Ok(())
}

fn search(args: &MemorySearchArgs, ctx: &Ctx) -> Result<()> {
    let text = args.text.join(" ");
    let memory = ctx.open_memory(OpenMode::ReadOnly)?;
    let hits = memory.search(&text, args.limit)?;
    if ctx.out.json {
        ctx.out.json(&json!({"query": text, "results": hits}));
        return Ok(());
    }
    if hits.is_empty() {
        ctx.out.info(&format!("no stored issue matches {text:?}"));
    }
    for h in &hits {
        ctx.out.line(&format!(
            "{:.3}  {:<24} {}",
            h.score, h.issue.reference, h.issue.title
        ));
    }
    Ok(())
}

fn stats(ctx: &Ctx) -> Result<()> {
    let memory = ctx.open_memory(OpenMode::ReadOnly)?;
    let stats = memory.stats()?;
    if ctx.out.json {
        ctx.out
            .json(&json!({"memory": memory.location(), "stats": stats}));
        return Ok(());
    }
    ctx.out.line(&format!(
        "memory: {} (schema {})",
        memory.location(),
        stats.schema_version
    ));
    ctx.out.line(&format!(
        "issues: {} ({} open, {} closed, {} labelled)",
        stats.issues, stats.open, stats.closed, stats.labelled
    ));
    ctx.out.line(&format!(
        "triage results: {}, runs: {}",
        stats.triage_results, stats.runs
    ));
    if !stats.repos.is_empty() {
        ctx.out.line("repositories:");
        for (repo, n) in &stats.repos {
            ctx.out.line(&format!("  {repo:<32} {n}"));
        }
    }
    if !stats.labels.is_empty() {
        ctx.out.line("labels:");
        let mut labels: Vec<_> = stats.labels.iter().collect();
        labels.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (label, n) in labels {
            ctx.out.line(&format!("  {label:<32} {n}"));
        }
    }
    Ok(())
}

fn forget(args: &MemoryRefArgs, ctx: &Ctx) -> Result<()> {
    let (repo, number) = memory_key(&args.reference, ctx)?;
    let mut memory = ctx.open_memory(OpenMode::ReadOnly)?;
    let removed = memory.forget(&repo, number)?;
    if ctx.out.json {
        ctx.out
            .json(&json!({"ref": format!("{repo}#{number}"), "forgotten": removed}));
    } else if removed {
        ctx.out.line(&format!("forgot {repo}#{number}"));
    } else {
        ctx.out.info(&format!(
            "{repo}#{number} was not in memory; nothing changed"
        ));
    }
    Ok(())
}

fn export(args: &MemoryExportArgs, ctx: &Ctx) -> Result<()> {
    let _ = args.jsonl;
    let memory = ctx.open_memory(OpenMode::ReadOnly)?;
    let records = memory.export()?;
    let mut text = String::new();
    for r in &records {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    match &args.output {
        Some(path) => {
            crate::runs::fs::write_atomic(path, text.as_bytes()).map_err(|e| {
                CommandError::failure(format!("cannot write {}: {e}", path.display()))
            })?;
            ctx.out.info(&format!(
                "exported {} records to {}",
                records.len(),
                path.display()
            ));
        }
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(text.as_bytes());
        }
    }
    Ok(())
}

/// `memory init`: create the table or file.
fn init(ctx: &Ctx) -> Result<()> {
    let (location, created) = match ctx.config().memory.backend {
        crate::config::MemoryBackend::Dynamodb => {
            let memory = ctx.dynamo_memory()?;
            let created = memory.init()?;
            (crate::memory::Memory::location(&memory), created)
        }
        crate::config::MemoryBackend::Sqlite => {
            let path = ctx.memory_path();
            let existed = path.exists();
            let mut memory = ctx.open_memory(OpenMode::Create)?;
            // The file and its schema are made by the first write: an empty one.
            memory.upsert_issues(&[], &|| false)?;
            (memory.location(), !existed)
        }
    };
    // The team run store is set up by the same command.
    let bucket = match ctx.config().runs.backend {
        crate::config::RunsBackend::S3 => {
            let runs = ctx.s3_runs()?;
            let created = runs.init()?;
            Some((format!("s3://{}", runs.bucket), created))
        }
        crate::config::RunsBackend::Fs => None,
    };
    if ctx.out.json {
        ctx.out.json(&json!({"memory": location, "created": created, "runs": bucket.as_ref().map(|(b, c)| json!({"bucket": b, "created": c}))}));
        return Ok(());
    }
    let said = |location: &str, created: bool| {
        if created {
            format!("created {location}")
        } else {
            format!("{location} exists already; nothing changed")
        }
    };
    ctx.out.line(&said(&location, created));
    if let Some((b, c)) = bucket {
        ctx.out.line(&said(&b, c));
    }
    Ok(())
}
