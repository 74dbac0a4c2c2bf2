//! `autotriage pr REF --patch FILE`

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::PrArgs;
use crate::error::CommandError;
use crate::issue::{Issue, IssueRef};
use crate::memory::sqlite::OpenMode;
use crate::pipeline::publish::{
    PublishInputs, PublishOutcome, ours, partial, publish_github, publish_local_stage,
};
use crate::pr::{LocalPublish, publish_local};

fn resolve_issue(args: &PrArgs, ctx: &Ctx) -> Result<Issue> {
    let r = IssueRef::parse(&args.reference, &ctx.ref_context())?;
    let memory = ctx.open_memory(OpenMode::ReadOnly)?;
    let mut github = None;
    super::resolve_one(
        &args.reference,
        &r,
        crate::cli::SourceArg::Auto,
        &*memory,
        &mut github,
        ctx,
    )
}

/// The diff to publish and, for a run, its test evidence.
fn read_patch(args: &PrArgs, ctx: &Ctx) -> Result<(String, Option<String>, Option<String>)> {
    if let Some(path) = &args.patch {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CommandError::usage(format!(
                "cannot read the patch {}: {e}\n  fix: check the path",
                path.display()
            ))
        })?;
        return Ok((text, None, None));
    }
    let id = args.run.as_deref().unwrap_or_default();
    let store = ctx.run_store()?;
    let detail = store.show(id)?;
    let read = |name: &str| -> Option<serde_json::Value> {
        detail
            .files
            .iter()
            .any(|(n, _)| n == name)
            .then(|| store.read_file(&detail.meta.id, name).ok())
            .flatten()
            .and_then(|t| serde_json::from_str(&t).ok())
    };
    let test = read("test.json");
    let chosen = test
        .as_ref()
        .and_then(|t| t.get("chosen").and_then(serde_json::Value::as_u64))
        .or_else(|| read("candidates.json").and_then(|c| c.get("chosen").and_then(serde_json::Value::as_u64)))
        .ok_or_else(|| CommandError::usage(format!("run {} has no chosen candidate\n  fix: pass --patch FILE, or run `autotriage fix` (and `test`) first", detail.meta.id)))?;
    let name = format!("candidates/{chosen}.diff");
    let text = store.read_file(&detail.meta.id, &name)?;
    let evidence = test.map(|t| {
        format!(
            "From run `{}`: verdict **{}**; {}",
            detail.meta.id,
            t.get("verdict")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("unknown"),
            t.get("summary")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("see test.json")
        )
    });
    let explanation = read("candidates.json").and_then(|c| {
        c.get("candidates")?
            .as_array()?
            .iter()
            .find(|x| x.get("id").and_then(serde_json::Value::as_u64) == Some(chosen))?
            .get("explanation")?
            .as_str()
            .map(String::from)
    });
    Ok((text, evidence, explanation))
}

/// Run `pr`.
pub fn run(args: &PrArgs, ctx: &Ctx) -> Result<()> {
    let issue = resolve_issue(args, ctx)?;
    let (patch, evidence, explanation) = read_patch(args, ctx)?;
    // A patch carrying a secret is refused, whole: never published, not even redacted.
    if let Some(why) = crate::repair::candidates::adds_secret(&ctx.redactor, &patch) {
        return Err(CommandError::usage(format!(
            "{}: {why}\n  fix: remove the secret from the patch",
            args.patch.as_ref().map_or_else(
                || "the run's candidate".to_string(),
                |p| p.display().to_string()
            )
        ))
        .into());
    }
    if patch
        .lines()
        .any(|l| l.starts_with('+') && l.contains("[REDACTED:"))
    {
        return Err(CommandError::usage(
            "the patch adds lines that were redacted (a secret was found in them when it was stored); publishing it would publish a broken file\n  fix: write the change again without the secret",
        )
        .into());
    }
    let inputs = PublishInputs {
        patch: &patch,
        tests: evidence,
        usage: None,
        base: None,
        explanation,
    };
    let store = ctx.run_store()?;
    let sink = super::render::Terminal::new(ctx);
    let outcome = if args.forge == crate::cli::ForgeArg::Github {
        let repo = super::github_target(&issue, &args.reference, ctx)?;
        let mut run = store.begin(&issue.repo, issue.number, "pr")?;
        run.write_json("issue.json", &issue)?;
        let emit = crate::pipeline::Emitter::new(&sink, issue.reference());
        let out = publish_github(
            &ctx.deps(),
            &emit,
            ctx.global.dry_run,
            &mut run,
            &issue,
            &repo,
            &inputs,
        );
        finish(ctx, &run, &issue, out)?
    } else {
        let repo_dir = ctx
            .workspace
            .git_top
            .clone()
            .ok_or_else(|| CommandError::usage("`pr` publishes into a git checkout, and this directory is not in one\n  fix: run it inside the repository's clone"))?;
        // Check first: nothing is written (not even a run) if the patch does not apply.
        let ours = ours(&ctx.deps(), &issue)?;
        publish_local(
            &LocalPublish {
                repo_dir: &repo_dir,
                issue: &issue,
                patch: &patch,
                protected: &ctx.config().paths.protected,
                dry_run: true,
                base: None,
                ours: &ours,
                run_id: "",
            },
            &mut |_, _| Ok(()),
        )?;
        let mut run = store.begin(&issue.repo, issue.number, "pr")?;
        run.write_json("issue.json", &issue)?;
        let emit = crate::pipeline::Emitter::new(&sink, issue.reference());
        let out = publish_local_stage(
            &ctx.deps(),
            &emit,
            ctx.global.dry_run,
            &mut run,
            &issue,
            &repo_dir,
            &inputs,
        );
        finish(ctx, &run, &issue, out)?
    };
    print_outcome(ctx, &issue, &outcome, Some(&args.reference));
    match partial(&outcome) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Record the run (and, when something was published, the fix) in memory.
fn finish(
    ctx: &Ctx,
    run: &crate::runs::fs::Run,
    issue: &Issue,
    out: Result<PublishOutcome>,
) -> Result<PublishOutcome> {
    let mut memory = ctx.open_memory(OpenMode::Create)?;
    memory.record_run(&run.meta)?;
    let out = out?;
    // What was changed for this issue: the locate prior of similar issues later.
    if let Some(p) = out.published.as_ref().filter(|_| !ctx.global.dry_run) {
        memory.record_fix(&crate::memory::FixRecord {
            repo: issue.repo.clone(),
            number: issue.number,
            run_id: run.id().to_string(),
            files: p.files.iter().map(|f| f.path.clone()).collect(),
            verdict: "published".into(),
            pr_url: out.url.clone(),
            created_at: crate::runs::now_rfc3339(),
            branch: Some(p.branch.clone()),
            commits: (!p.commit.is_empty())
                .then(|| p.commit.clone())
                .into_iter()
                .collect(),
        })?;
    }
    Ok(out)
}

/// Print what `pr` did (`raw` given: the `pr` command's own output).
pub(crate) fn print_outcome(ctx: &Ctx, issue: &Issue, out: &PublishOutcome, raw: Option<&str>) {
    if raw.is_some() && ctx.out.json && out.github.is_some() {
        ctx.out.json(&json!({"ref": issue.reference(), "run_id": out.run_id, "github": out.github, "dry_run": ctx.global.dry_run}));
        return;
    }
    if raw.is_some() && ctx.out.json {
        ctx.out.json(&json!({
            "ref": issue.reference(),
            "run_id": out.run_id,
            "forge": out.forge,
            "branch": out.published.as_ref().map(|p| &p.branch),
            "commit": out.published.as_ref().map(|p| &p.commit),
            "base": out.published.as_ref().map(|p| &p.base),
            "status": out.published.as_ref().map(|p| &p.status),
            "files": out.published.as_ref().map(|p| &p.files),
            "note": out.published.as_ref().and_then(|p| p.note.as_ref()),
            "url": out.url,
            "pr_status": out.status,
            "body": out.body_path,
            "dry_run": ctx.global.dry_run,
        }));
        return;
    }
    let branch = out.published.as_ref().map_or(String::new(), |p| {
        format!("branch {} {}", p.branch, p.status)
    });
    match &out.url {
        Some(url) => ctx.out.line(&format!(
            "{}  {branch}; draft PR {url} {}",
            ctx.out.bold(&issue.reference()),
            out.status
        )),
        None if out.forge == "github" => ctx.out.line(&format!(
            "{}  {branch}; draft PR {}",
            ctx.out.bold(&issue.reference()),
            out.status
        )),
        None => ctx
            .out
            .line(&format!("{}  {branch}", ctx.out.bold(&issue.reference()),)),
    }
    if let Some(note) = out.published.as_ref().and_then(|p| p.note.as_ref()) {
        ctx.out.line(&format!("  note: {note}"));
    }
    for problem in &out.problems {
        ctx.out.line(&format!("  not done: {problem}"));
    }
    if let Some(p) = &out.published {
        for f in &p.files {
            ctx.out
                .line(&format!("  {} (+{} −{})", f.path, f.added, f.removed));
        }
    }
    if ctx.global.dry_run && raw.is_some() {
        if let Ok(body) = std::fs::read_to_string(&out.body_path) {
            ctx.out.line("");
            ctx.out.line(&body);
        }
    } else {
        ctx.out.line(&format!("  description: {}", out.body_path));
    }
}
