//! `autotriage pr REF --patch FILE`

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::PrArgs;
use crate::error::CommandError;
use crate::issue::{Issue, IssueRef};
use crate::memory::Memory;
use crate::memory::sqlite::OpenMode;
use crate::pr::{BodyContext, pr_body, publish_local};

fn resolve_issue(args: &PrArgs, ctx: &Ctx) -> Result<Issue> {
    let r = IssueRef::parse(&args.reference, &ctx.ref_context())?;
    let memory = ctx.open_memory(OpenMode::ReadOnly)?;
    let mut github = None;
    super::resolve_one(
        &args.reference,
        &r,
        crate::cli::SourceArg::Auto,
        &memory,
        &mut github,
        ctx,
    )
}

/// The latest triage of the issue in one line, for the PR description.
fn triage_summary(ctx: &Ctx, issue: &Issue) -> Result<Option<String>> {
    let memory = ctx.open_memory(OpenMode::ReadOnly)?;
    Ok(memory
        .triage_results(&issue.repo, issue.number)?
        .pop()
        .map(|t| {
            let labels: Vec<String> = t["labels"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["name"].as_str().map(String::from))
                .collect();
            format!(
                "kind {} ({}), {}, labels: {}",
                t["kind"].as_str().unwrap_or("undecided"),
                t["kind_confidence"],
                t["priority"].as_str().unwrap_or("?"),
                if labels.is_empty() {
                    "none".to_string()
                } else {
                    labels.join(", ")
                }
            )
        }))
}

/// Ask on a terminal before writing (not with --yes, --dry-run or --json).
fn confirm(ctx: &Ctx, body: &str, question: &str) -> bool {
    if !ctx.out.interactive || ctx.global.yes || ctx.global.dry_run || ctx.out.json {
        return true;
    }
    ctx.out.info(body);
    dialoguer::Confirm::new()
        .with_prompt(question)
        .default(false)
        .interact()
        .unwrap_or(false)
}

/// The diff to publish and, for a run, its test evidence.
fn read_patch(args: &PrArgs, ctx: &Ctx) -> Result<(String, Option<String>)> {
    if let Some(path) = &args.patch {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CommandError::usage(format!(
                "cannot read the patch {}: {e}\n  fix: check the path",
                path.display()
            ))
        })?;
        return Ok((text, None));
    }
    let id = args.run.as_deref().unwrap_or_default();
    let store = ctx.run_store();
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
    Ok((text, evidence))
}

/// Run `pr`.
pub fn run(args: &PrArgs, ctx: &Ctx) -> Result<()> {
    let issue = resolve_issue(args, ctx)?;
    let (patch, evidence) = read_patch(args, ctx)?;
    if args.forge == crate::cli::ForgeArg::Github {
        return run_github(args, ctx, &issue, &patch, evidence);
    }
    let repo_dir = ctx
        .workspace
        .git_top
        .clone()
        .ok_or_else(|| CommandError::usage("`pr` publishes into a git checkout, and this directory is not in one\n  fix: run it inside the repository's clone"))?;
    let protected = &ctx.config().paths.protected;

    // Check and preview first: nothing is written if the patch does not apply.
    let preview = publish_local(&repo_dir, &issue, &patch, protected, true)?;
    let triage = triage_summary(ctx, &issue)?;

    let store = ctx.run_store();
    let mut run = store.begin(&issue.repo, issue.number, "pr")?;
    run.write_json("issue.json", &issue)?;
    run.stage_started("pr")?;
    let body_ctx = BodyContext {
        triage,
        tests: evidence,
        usage: None,
        run_id: run.id().to_string(),
    };
    let question = format!(
        "{} branch {} in {}?",
        if preview.status == "would be updated" {
            "Update"
        } else {
            "Create"
        },
        preview.branch,
        repo_dir.display()
    );
    if !confirm(ctx, &pr_body(&issue, &preview, &body_ctx), &question) {
        run.stage_finished("pr", Some("declined at the prompt"))?;
        return Err(CommandError::failure("nothing written: declined").into());
    }
    let published = match publish_local(&repo_dir, &issue, &patch, protected, ctx.global.dry_run) {
        Ok(p) => p,
        Err(e) => {
            run.stage_finished("pr", Some(&e.to_string()))?;
            return Err(e.into());
        }
    };
    let body = pr_body(&issue, &published, &body_ctx);
    run.write_text("pr.md", &body)?;
    run.write_json("pr.json", &json!({"branch": published.branch, "commit": published.commit, "base": published.base, "status": published.status, "files": published.files, "forge": "local", "repo_dir": repo_dir.display().to_string()}))?;
    run.event(
        "pr",
        "write",
        &format!("branch {} {}", published.branch, published.status),
        json!({"commit": published.commit}),
    )?;
    run.stage_finished("pr", None)?;
    let mut memory = ctx.open_memory(OpenMode::Create)?;
    memory.record_run(&run.meta)?;
    // What was changed for this issue: the locate prior of similar issues later.
    if !ctx.global.dry_run {
        memory.record_fix(&crate::memory::FixRecord {
            repo: issue.repo.clone(),
            number: issue.number,
            run_id: run.id().to_string(),
            files: published.files.iter().map(|f| f.path.clone()).collect(),
            verdict: "published".into(),
            pr_url: None,
            created_at: crate::runs::now_rfc3339(),
        })?;
    }

    if ctx.out.json {
        ctx.out.json(&json!({
            "ref": issue.reference(),
            "run_id": run.id(),
            "branch": published.branch,
            "commit": published.commit,
            "base": published.base,
            "status": published.status,
            "files": published.files,
            "body": run.dir.join("pr.md").display().to_string(),
            "dry_run": ctx.global.dry_run,
        }));
        return Ok(());
    }
    ctx.out.line(&format!(
        "{}  branch {} {}",
        ctx.out.bold(&issue.reference()),
        published.branch,
        published.status
    ));
    for f in &published.files {
        ctx.out
            .line(&format!("  {} (+{} −{})", f.path, f.added, f.removed));
    }
    if ctx.global.dry_run {
        ctx.out.line("");
        ctx.out.line(&body);
    } else {
        ctx.out.line(&format!(
            "  description: {}",
            run.dir.join("pr.md").display()
        ));
    }
    Ok(())
}

/// `pr --forge github`: a draft pull request on GitHub.
fn run_github(
    args: &PrArgs,
    ctx: &Ctx,
    issue: &Issue,
    patch: &str,
    evidence: Option<String>,
) -> Result<()> {
    let repo = match IssueRef::parse(&issue.reference(), &ctx.ref_context()) {
        Ok(IssueRef::Remote { repo, .. }) => repo,
        _ => {
            return Err(CommandError::usage(format!(
                "{}: --forge github needs a GitHub issue (owner/repo#N)\n  fix: use --forge local for local issues",
                args.reference
            ))
            .into());
        }
    };
    let forge = crate::forge::github::GithubForge::new(
        &ctx.config().github.api_url,
        ctx.config().retry.max_wait,
        Default::default(),
    )?;
    let store = ctx.run_store();
    let mut run = store.begin(&issue.repo, issue.number, "pr")?;
    run.write_json("issue.json", issue)?;
    run.stage_started("pr")?;
    let run_id = run.id().to_string();
    let triage = triage_summary(ctx, issue)?;
    let body = |p: &crate::pr::Published| {
        pr_body(
            issue,
            p,
            &BodyContext {
                run_id: run_id.clone(),
                triage: triage.clone(),
                tests: evidence.clone(),
                ..Default::default()
            },
        )
    };
    let gh = &ctx.config().github;
    if !ctx.global.dry_run && ctx.out.interactive && !ctx.global.yes && !ctx.out.json {
        // Preview (reads only), then ask.
        let preview = forge.publish_pr(&crate::forge::github_pr::PrRequest {
            repo: &repo,
            issue,
            patch,
            protected: &ctx.config().paths.protected,
            body: &body,
            labels: &gh.pr_labels,
            create_labels: gh.create_labels,
            dry_run: true,
        })?;
        let text = preview.published.as_ref().map(&body).unwrap_or_default();
        if !confirm(
            ctx,
            &text,
            &format!(
                "Open a draft pull request on {repo} from autotriage/issue-{}?",
                issue.number
            ),
        ) {
            run.stage_finished("pr", Some("declined at the prompt"))?;
            return Err(CommandError::failure("nothing written: declined").into());
        }
    }
    let done = match forge.publish_pr(&crate::forge::github_pr::PrRequest {
        repo: &repo,
        issue,
        patch,
        protected: &ctx.config().paths.protected,
        body: &body,
        labels: &gh.pr_labels,
        create_labels: gh.create_labels,
        dry_run: ctx.global.dry_run,
    }) {
        Ok(d) => d,
        Err(e) => {
            run.stage_finished("pr", Some(&e.to_string()))?;
            return Err(e.into());
        }
    };
    if let Some(p) = &done.published {
        run.write_text("pr.md", &body(p))?;
    }
    run.write_json("pr.json", &json!({"forge": "github", "pr": done}))?;
    run.event(
        "pr",
        "write",
        &format!(
            "PR {} ({}), comment {}",
            done.url.as_deref().unwrap_or("-"),
            done.pr_status,
            done.comment
        ),
        json!({"requests": done.requests}),
    )?;
    run.stage_finished("pr", None)?;
    let mut memory = ctx.open_memory(OpenMode::Create)?;
    memory.record_run(&run.meta)?;
    if let Some(p) = done.published.as_ref().filter(|_| !ctx.global.dry_run) {
        memory.record_fix(&crate::memory::FixRecord {
            repo: issue.repo.clone(),
            number: issue.number,
            run_id: run.id().to_string(),
            files: p.files.iter().map(|f| f.path.clone()).collect(),
            verdict: "published".into(),
            pr_url: done.url.clone(),
            created_at: crate::runs::now_rfc3339(),
        })?;
    }
    if ctx.out.json {
        ctx.out.json(&json!({"ref": issue.reference(), "run_id": run.id(), "github": done, "dry_run": ctx.global.dry_run}));
        return Ok(());
    }
    let branch = done.published.as_ref().map_or(String::new(), |p| {
        format!("branch {} {}", p.branch, p.status)
    });
    ctx.out.line(&format!(
        "{}  {branch}; draft PR {} {}",
        ctx.out.bold(&issue.reference()),
        done.url.as_deref().unwrap_or("-"),
        done.pr_status
    ));
    Ok(())
}
