//! The publish stage: the chosen candidate as a branch and a draft pull request on
//! GitHub, or a local branch and `pr.md`, recorded in the run and in memory. Only what
//! is ours is ever written (see [`crate::pr::Ours`]).

use anyhow::Result;
use serde_json::json;

use super::{Deps, Emitter, What};
use crate::error::{CommandError, ErrorKind};
use crate::issue::Issue;
use crate::memory::sqlite::OpenMode;
use crate::pr::{BodyContext, LocalPublish, Ours, pr_body, publish_local};

/// What a publish did, for printing and memory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PublishOutcome {
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

/// What to publish.
pub struct PublishInputs<'a> {
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
pub fn publish_local_stage(
    deps: &Deps<'_>,
    emit: &Emitter<'_>,
    dry_run: bool,
    run: &mut crate::runs::fs::Run,
    issue: &Issue,
    repo_dir: &std::path::Path,
    inputs: &PublishInputs<'_>,
) -> Result<PublishOutcome> {
    let protected = &deps.config.paths.protected;
    run.stage_started("pr")?;
    emit.run_event(run, "pr", "pr started", What::StageStarted)?;
    let result = (|| -> Result<PublishOutcome> {
        let ours = ours(deps, issue)?;
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
            triage: triage_summary(deps, issue)?,
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
        if !dry_run
            && !emit
                .sink()
                .confirm(&pr_body(issue, &preview, &body_ctx), &question)
        {
            return Err(CommandError::failure("nothing written: declined").into());
        }
        let published = publish_local(&request(dry_run), &mut |branch, commit| {
            run.write_json(
                "pr.json",
                &json!({"branch": branch, "commit": commit, "status": "publishing", "forge": "local"}),
            )
            .map_err(|e| e.to_string())?;
            record_commit(deps, issue, &run_id, branch, commit).map_err(|e| format!("{e:#}"))
        })?;
        let body = pr_body(issue, &published, &body_ctx);
        run.write_text("pr.md", &body)?;
        run.write_json("pr.json", &json!({"branch": published.branch, "commit": published.commit, "base": published.base, "status": published.status, "files": published.files, "forge": "local", "repo_dir": repo_dir.display().to_string()}))?;
        emit.run_event(
            run,
            "pr",
            format!("branch {} {}", published.branch, published.status),
            What::Write(json!({"commit": published.commit})),
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
    finish_stage(emit, run, &result)?;
    result
}

/// The `pr` stage on GitHub: a branch, a draft pull request and a comment on the issue
/// linking it, inside `run`. Asks first on a terminal.
pub fn publish_github(
    deps: &Deps<'_>,
    emit: &Emitter<'_>,
    dry_run: bool,
    run: &mut crate::runs::fs::Run,
    issue: &Issue,
    repo: &crate::issue::RepoId,
    inputs: &PublishInputs<'_>,
) -> Result<PublishOutcome> {
    run.stage_started("pr")?;
    emit.run_event(run, "pr", "pr started", What::StageStarted)?;
    let result = (|| -> Result<PublishOutcome> {
        let forge = deps.github(Default::default())?;
        let run_id = run.id().to_string();
        let triage = triage_summary(deps, issue)?;
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
        let gh = &deps.config.github;
        let ours = ours(deps, issue)?;
        let run_dir = run.dir.clone();
        let redactor = deps.redactor.clone();
        let record = |branch: &str, commit: &str| -> Result<(), String> {
            crate::runs::fs::write_atomic(
                &run_dir.join("pr.json"),
                redactor
                    .redact(&json!({"branch": branch, "commit": commit, "status": "publishing", "forge": "github"}).to_string())
                    .as_bytes(),
            )
            .map_err(|e| format!("cannot record the commit in {}: {e}", run_dir.display()))?;
            record_commit(deps, issue, &run_id, branch, commit).map_err(|e| format!("{e:#}"))
        };
        let request = |dry_run: bool| crate::forge::github_pr::PrRequest {
            repo,
            issue,
            patch: inputs.patch,
            protected: &deps.config.paths.protected,
            body: &body,
            labels: &gh.pr_labels,
            create_labels: gh.create_labels,
            dry_run,
            ours: &ours,
            run_id: &run_id,
            record: &record,
        };
        if !dry_run && emit.sink().asks() {
            // Preview (reads only), then ask.
            let preview = forge.publish_pr(&request(true))?;
            let text = preview.published.as_ref().map(&body).unwrap_or_default();
            if !emit.sink().confirm(
                &text,
                &format!(
                    "Open a draft pull request on {repo} from autotriage/issue-{}?",
                    issue.number
                ),
            ) {
                return Err(CommandError::failure("nothing written: declined").into());
            }
        }
        let done = forge.publish_pr(&request(dry_run))?;
        if let Some(p) = &done.published {
            run.write_text("pr.md", &body(p))?;
        }
        run.write_json("pr.json", &json!({"forge": "github", "pr": done}))?;
        emit.run_event(
            run,
            "pr",
            format!(
                "PR {} ({}), comment {}",
                done.url.as_deref().unwrap_or("-"),
                done.pr_status,
                done.comment
            ),
            What::Write(json!({"requests": done.requests})),
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
    finish_stage(emit, run, &result)?;
    result
}

/// Close the stage, with its outcome as an event.
fn finish_stage(
    emit: &Emitter<'_>,
    run: &mut crate::runs::fs::Run,
    result: &Result<PublishOutcome>,
) -> Result<()> {
    let error = result.as_ref().err().map(|e| format!("{e:#}"));
    run.stage_finished("pr", error.as_deref())?;
    if let Ok(out) = result {
        emit.run_event(
            run,
            "pr",
            format!(
                "published: {}",
                out.url
                    .clone()
                    .or_else(|| out.published.as_ref().map(|p| p.branch.clone()))
                    .unwrap_or_else(|| "nothing".into())
            ),
            What::Published {
                url: out.url.clone(),
                branch: out.published.as_ref().map(|p| p.branch.clone()),
                status: out.status.clone(),
            },
        )?;
    }
    emit.run_event(run, "pr", "pr finished", What::StageFinished { error })?;
    Ok(())
}
/// A publish that finished with problems (labels, the link comment) is a partial
/// publish: what was written stands, and the command fails with the rest listed.
pub fn partial(out: &PublishOutcome) -> Option<anyhow::Error> {
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
pub fn ours(deps: &Deps<'_>, issue: &Issue) -> Result<Ours> {
    let mut ours = Ours::default();
    let memory = deps.backends.open_memory(OpenMode::ReadOnly)?;
    for fix in memory.fixes(&issue.repo, issue.number)? {
        ours.commits.extend(fix.commits);
        if fix.branch.is_some() {
            ours.branch = fix.branch;
        }
    }
    let store = deps.backends.open_runs()?;
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
fn record_commit(
    deps: &Deps<'_>,
    issue: &Issue,
    run_id: &str,
    branch: &str,
    commit: &str,
) -> Result<()> {
    let mut memory = deps.backends.open_memory(OpenMode::Create)?;
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

/// The latest triage of the issue in one line, for the PR description.
fn triage_summary(deps: &Deps<'_>, issue: &Issue) -> Result<Option<String>> {
    let memory = deps.backends.open_memory(OpenMode::ReadOnly)?;
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
