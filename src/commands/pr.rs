//! `autotriage pr REF --patch FILE`

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::PrArgs;
use crate::error::{CommandError, ErrorKind};
use crate::issue::{Issue, IssueRef};
use crate::memory::sqlite::OpenMode;
use crate::pr::{BodyContext, LocalPublish, Ours, pr_body, publish_local};

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

/// What a publish did, for printing and memory.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct PublishOutcome {
    /// `local` or `github`.
    pub forge: &'static str,
    /// The branch and its commit.
    pub published: Option<crate::pr::Published>,
    /// The pull request's URL (GitHub).
    pub url: Option<String>,
    /// `created`, `updated`, `unchanged` (the PR on GitHub, else the branch).
    pub status: String,
    /// The checkout the local branch is in.
    pub repo_dir: Option<String>,
    /// `pr.md` in the run folder.
    pub body_path: String,
    /// The run it was recorded in.
    pub run_id: String,
    /// GitHub's side in full (requests made, labels, the comment).
    pub github: Option<serde_json::Value>,
    /// What failed after the branch was written (a partial publish).
    pub problems: Vec<String>,
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
    let outcome = if args.forge == crate::cli::ForgeArg::Github {
        let repo = github_target(&issue, &args.reference, ctx)?;
        let mut run = store.begin(&issue.repo, issue.number, "pr")?;
        run.write_json("issue.json", &issue)?;
        let out = publish_github(ctx, &mut run, &issue, &repo, &inputs);
        finish(ctx, &run, &issue, out)?
    } else {
        let repo_dir = ctx
            .workspace
            .git_top
            .clone()
            .ok_or_else(|| CommandError::usage("`pr` publishes into a git checkout, and this directory is not in one\n  fix: run it inside the repository's clone"))?;
        // Check first: nothing is written (not even a run) if the patch does not apply.
        let ours = ours(ctx, &issue)?;
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
        let out = publish_local_stage(ctx, &mut run, &issue, &repo_dir, &inputs);
        finish(ctx, &run, &issue, out)?
    };
    print_outcome(ctx, &issue, &outcome, Some(&args.reference));
    match partial(&outcome) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A publish that finished with problems (labels, the link comment) is a partial
/// publish: what was written stands, and the command fails with the rest listed.
pub(crate) fn partial(out: &PublishOutcome) -> Option<anyhow::Error> {
    (!out.problems.is_empty()).then(|| {
        let message = if out.published.is_none() {
            format!("nothing was published: {}", out.problems.join("; "))
        } else {
            format!(
                "published {}, but not everything: {}\n  fix: see the messages above; run the command again to finish (it updates what is there)",
                out.url.as_deref().unwrap_or("the branch"),
                out.problems.join("; ")
            )
        };
        CommandError::new(ErrorKind::Partial, message).into()
    })
}

/// What we published for an issue before: the commits we made and the branch we last
/// used, from memory's fix records and from every run folder's `pr.json`.
pub(crate) fn ours(ctx: &Ctx, issue: &Issue) -> Result<Ours> {
    let mut ours = Ours::default();
    let memory = ctx.open_memory(OpenMode::ReadOnly)?;
    for fix in memory.fixes(&issue.repo, issue.number)? {
        ours.commits.extend(fix.commits);
        if fix.branch.is_some() {
            ours.branch = fix.branch;
        }
    }
    let store = ctx.run_store()?;
    let mut runs: Vec<crate::runs::RunMeta> = store
        .list()?
        .into_iter()
        .filter(|m| m.repo == issue.repo && m.number == issue.number)
        .collect();
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    for meta in runs {
        let Ok(text) = store.read_file(&meta.id, "pr.json") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        for at in ["", "/pr/published"] {
            let field = |name: &str| {
                v.pointer(&format!("{at}/{name}"))
                    .and_then(serde_json::Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
            };
            if let Some(c) = field("commit") {
                ours.commits.push(c);
                if ours.branch.is_none() {
                    ours.branch = field("branch");
                }
            }
        }
    }
    ours.commits.sort();
    ours.commits.dedup();
    Ok(ours)
}

/// Record a commit of ours in memory before a branch is moved to it.
fn record_commit(ctx: &Ctx, issue: &Issue, run_id: &str, branch: &str, commit: &str) -> Result<()> {
    let mut memory = ctx.open_memory(OpenMode::Create)?;
    let mut commits = memory
        .fixes(&issue.repo, issue.number)?
        .into_iter()
        .find(|f| f.run_id == run_id)
        .map(|f| f.commits)
        .unwrap_or_default();
    if !commits.iter().any(|c| c == commit) {
        commits.push(commit.to_string());
    }
    memory.record_fix(&crate::memory::FixRecord {
        repo: issue.repo.clone(),
        number: issue.number,
        run_id: run_id.to_string(),
        files: Vec::new(),
        verdict: "publishing".into(),
        pr_url: None,
        created_at: crate::runs::now_rfc3339(),
        branch: Some(branch.to_string()),
        commits,
    })?;
    Ok(())
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

/// The GitHub repository of an issue, for `--forge github`.
pub(crate) fn github_target(issue: &Issue, raw: &str, ctx: &Ctx) -> Result<crate::issue::RepoId> {
    match IssueRef::parse(&issue.reference(), &ctx.ref_context()) {
        Ok(IssueRef::Remote { repo, .. }) => Ok(repo),
        _ => Err(CommandError::usage(format!(
            "{raw}: --forge github needs a GitHub issue (owner/repo#N)\n  fix: use --forge local for local issues"
        ))
        .into()),
    }
}

/// What to publish.
pub(crate) struct PublishInputs<'a> {
    /// The diff.
    pub patch: &'a str,
    /// The test evidence for the description.
    pub tests: Option<String>,
    /// Tokens and cost for the description.
    pub usage: Option<String>,
    /// The commit to branch from (default: HEAD).
    pub base: Option<git2::Oid>,
    /// The model's explanation of the change, for the description.
    pub explanation: Option<String>,
}

/// The `pr` stage, local: branch `autotriage/issue-N` in `repo_dir` and `pr.md`, inside
/// `run`. Asks first on a terminal.
pub(crate) fn publish_local_stage(
    ctx: &Ctx,
    run: &mut crate::runs::fs::Run,
    issue: &Issue,
    repo_dir: &std::path::Path,
    inputs: &PublishInputs<'_>,
) -> Result<PublishOutcome> {
    let protected = &ctx.config().paths.protected;
    run.stage_started("pr")?;
    let result = (|| -> Result<PublishOutcome> {
        let ours = ours(ctx, issue)?;
        let run_id = run.id().to_string();
        let request = |dry_run: bool| LocalPublish {
            repo_dir,
            issue,
            patch: inputs.patch,
            protected,
            dry_run,
            base: inputs.base,
            ours: &ours,
            run_id: &run_id,
        };
        let preview = publish_local(&request(true), &mut |_, _| Ok(()))?;
        let body_ctx = BodyContext {
            triage: triage_summary(ctx, issue)?,
            tests: inputs.tests.clone(),
            usage: inputs.usage.clone(),
            explanation: inputs.explanation.clone(),
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
        if !confirm(ctx, &pr_body(issue, &preview, &body_ctx), &question) {
            return Err(CommandError::failure("nothing written: declined").into());
        }
        let published = publish_local(&request(ctx.global.dry_run), &mut |branch, commit| {
            run.write_json(
                "pr.json",
                &json!({"branch": branch, "commit": commit, "status": "publishing", "forge": "local"}),
            )
            .map_err(|e| e.to_string())?;
            record_commit(ctx, issue, &run_id, branch, commit).map_err(|e| format!("{e:#}"))
        })?;
        let body = pr_body(issue, &published, &body_ctx);
        run.write_text("pr.md", &body)?;
        run.write_json("pr.json", &json!({"branch": published.branch, "commit": published.commit, "base": published.base, "status": published.status, "files": published.files, "forge": "local", "repo_dir": repo_dir.display().to_string()}))?;
        run.event(
            "pr",
            "write",
            &format!("branch {} {}", published.branch, published.status),
            json!({"commit": published.commit}),
        )?;
        Ok(PublishOutcome {
            forge: "local",
            status: published.status.clone(),
            published: Some(published),
            url: None,
            repo_dir: Some(repo_dir.display().to_string()),
            body_path: run.dir.join("pr.md").display().to_string(),
            run_id: run.id().to_string(),
            github: None,
            problems: Vec::new(),
        })
    })();
    run.stage_finished(
        "pr",
        result.as_ref().err().map(|e| format!("{e:#}")).as_deref(),
    )?;
    result
}

/// The `pr` stage on GitHub: a branch, a draft pull request and a comment on the issue
/// linking it, inside `run`. Asks first on a terminal.
pub(crate) fn publish_github(
    ctx: &Ctx,
    run: &mut crate::runs::fs::Run,
    issue: &Issue,
    repo: &crate::issue::RepoId,
    inputs: &PublishInputs<'_>,
) -> Result<PublishOutcome> {
    run.stage_started("pr")?;
    let result = (|| -> Result<PublishOutcome> {
        let forge =
            crate::forge::github::GithubForge::from_config(ctx.config(), Default::default())?;
        let run_id = run.id().to_string();
        let triage = triage_summary(ctx, issue)?;
        let body = |p: &crate::pr::Published| {
            pr_body(
                issue,
                p,
                &BodyContext {
                    run_id: run_id.clone(),
                    triage: triage.clone(),
                    tests: inputs.tests.clone(),
                    usage: inputs.usage.clone(),
                    explanation: inputs.explanation.clone(),
                },
            )
        };
        let gh = &ctx.config().github;
        let ours = ours(ctx, issue)?;
        let run_dir = run.dir.clone();
        let redactor = ctx.redactor.clone();
        let record = |branch: &str, commit: &str| -> Result<(), String> {
            crate::runs::fs::write_atomic(
                &run_dir.join("pr.json"),
                redactor
                    .redact(&json!({"branch": branch, "commit": commit, "status": "publishing", "forge": "github"}).to_string())
                    .as_bytes(),
            )
            .map_err(|e| format!("cannot record the commit in {}: {e}", run_dir.display()))?;
            record_commit(ctx, issue, &run_id, branch, commit).map_err(|e| format!("{e:#}"))
        };
        let request = |dry_run: bool| crate::forge::github_pr::PrRequest {
            repo,
            issue,
            patch: inputs.patch,
            protected: &ctx.config().paths.protected,
            body: &body,
            labels: &gh.pr_labels,
            create_labels: gh.create_labels,
            dry_run,
            ours: &ours,
            run_id: &run_id,
            record: &record,
        };
        if !ctx.global.dry_run && ctx.out.interactive && !ctx.global.yes && !ctx.out.json {
            // Preview (reads only), then ask.
            let preview = forge.publish_pr(&request(true))?;
            let text = preview.published.as_ref().map(&body).unwrap_or_default();
            if !confirm(
                ctx,
                &text,
                &format!(
                    "Open a draft pull request on {repo} from autotriage/issue-{}?",
                    issue.number
                ),
            ) {
                return Err(CommandError::failure("nothing written: declined").into());
            }
        }
        let done = forge.publish_pr(&request(ctx.global.dry_run))?;
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
        Ok(PublishOutcome {
            forge: "github",
            published: done.published.clone(),
            url: done.url.clone(),
            status: done.pr_status.clone(),
            repo_dir: None,
            body_path: run.dir.join("pr.md").display().to_string(),
            run_id: run.id().to_string(),
            github: serde_json::to_value(&done).ok(),
            problems: done.problems.clone(),
        })
    })();
    run.stage_finished(
        "pr",
        result.as_ref().err().map(|e| format!("{e:#}")).as_deref(),
    )?;
    result
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
