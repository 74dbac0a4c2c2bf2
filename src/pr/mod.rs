//! The `pr` stage: a unified diff applied strictly to the base tree (git2's apply;
//! the failing file and hunk are named), published as a branch `autotriage/issue-N`
//! with one commit, and a PR body that explains itself. The local forge's PR is that
//! branch in the checkout (no checkout of it, so the user's working tree and
//! uncommitted work are untouched) plus `pr.md` in the run folder.

use std::cell::RefCell;
use std::path::{Component, Path};

use git2::{ApplyOptions, Diff, Oid, Repository, Signature};
use globset::{Glob, GlobSetBuilder};
use serde::Serialize;

use crate::error::{Exit, ExitCoded};
use crate::issue::Issue;

/// The hidden marker of the PR body and the issue comment that links to it.
pub const PR_MARKER: &str = "<!-- autotriage:pr -->";

/// A patch that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// Not a unified diff.
    #[error(
        "the patch is not a unified diff git can read: {0}\n  fix: produce it with `git diff` (or `diff -u` with a/ and b/ prefixes)"
    )]
    Parse(String),
    /// A path the patch may not touch.
    #[error(
        "the patch touches {path}, which is refused: {reason}\n  fix: remove that file from the patch"
    )]
    Refused {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A hunk does not match the base.
    #[error(
        "the patch does not apply to {base}: {path}, hunk {hunk}: {detail}\n  fix: regenerate the patch against {base}"
    )]
    DoesNotApply {
        /// The base commit.
        base: String,
        /// The file.
        path: String,
        /// The hunk header.
        hunk: String,
        /// What git said.
        detail: String,
    },
    /// The patch changes nothing.
    #[error("the patch changes no file\n  fix: pass a diff with at least one change")]
    Empty,
    /// A git operation failed.
    #[error("git: {0}")]
    Git(String),
}

impl ExitCoded for PatchError {
    fn exit(&self) -> Exit {
        match self {
            PatchError::Git(_) => Exit::Failure,
            _ => Exit::Usage,
        }
    }
}

fn git(e: git2::Error) -> PatchError {
    PatchError::Git(e.message().to_string())
}

/// One changed file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileChange {
    /// Path in the repository.
    pub path: String,
    /// Lines added.
    pub added: usize,
    /// Lines removed.
    pub removed: usize,
}

/// Parse a diff and check every path it touches: no absolute paths, no `..`, nothing
/// under `.git/`, nothing matching `paths.protected`.
pub fn check_patch(
    patch: &str,
    protected: &[String],
) -> Result<(Diff<'static>, Vec<FileChange>), PatchError> {
    let diff = Diff::from_buffer(patch.as_bytes())
        .map_err(|e| PatchError::Parse(e.message().to_string()))?;
    let mut globs = GlobSetBuilder::new();
    for p in protected {
        globs.add(
            Glob::new(p).map_err(|e| PatchError::Parse(format!("paths.protected {p:?}: {e}")))?,
        );
    }
    let globs = globs
        .build()
        .map_err(|e| PatchError::Parse(e.to_string()))?;
    let mut changes = Vec::new();
    for (i, delta) in diff.deltas().enumerate() {
        for file in [delta.old_file(), delta.new_file()] {
            let Some(path) = file.path() else { continue };
            let shown = path.display().to_string();
            if shown == "/dev/null" {
                continue;
            }
            let refuse = |reason: &str| {
                Err(PatchError::Refused {
                    path: shown.clone(),
                    reason: reason.into(),
                })
            };
            if path.is_absolute() {
                return refuse("an absolute path");
            }
            if path.components().any(|c| matches!(c, Component::ParentDir)) {
                return refuse("it leaves the repository (`..`)");
            }
            if path
                .components()
                .next()
                .is_some_and(|c| c.as_os_str() == ".git")
            {
                return refuse("it is inside .git/");
            }
            if globs.is_match(path) {
                return refuse("it matches paths.protected");
            }
        }
        let path = delta
            .new_file()
            .path()
            .or(delta.old_file().path())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let (mut added, mut removed) = (0, 0);
        if let Ok(Some(patch)) = git2::Patch::from_diff(&diff, i)
            && let Ok((_, a, r)) = patch.line_stats()
        {
            added = a;
            removed = r;
        }
        changes.push(FileChange {
            path,
            added,
            removed,
        });
    }
    if changes.is_empty() {
        return Err(PatchError::Empty);
    }
    Ok((diff, changes))
}

/// Apply the diff to `base`'s tree; the new tree's id. A failing hunk is named.
pub fn apply_strict(repo: &Repository, base: Oid, diff: &Diff<'_>) -> Result<Oid, PatchError> {
    let commit = repo.find_commit(base).map_err(git)?;
    let tree = commit.tree().map_err(git)?;
    let current_file = RefCell::new(String::new());
    let current_hunk = RefCell::new(String::new());
    let mut opts = ApplyOptions::new();
    opts.delta_callback(|d| {
        if let Some(d) = d {
            *current_file.borrow_mut() = d
                .new_file()
                .path()
                .or(d.old_file().path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
        }
        true
    });
    opts.hunk_callback(|h| {
        if let Some(h) = h {
            *current_hunk.borrow_mut() = String::from_utf8_lossy(h.header()).trim().to_string();
        }
        true
    });
    let result = repo.apply_to_tree(&tree, diff, Some(&mut opts));
    drop(opts);
    let mut index = result.map_err(|e| PatchError::DoesNotApply {
        base: base.to_string()[..12].to_string(),
        path: current_file.borrow().clone(),
        hunk: current_hunk.borrow().clone(),
        detail: e.message().to_string(),
    })?;
    index.write_tree_to(repo).map_err(git)
}

/// What happened to the branch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Published {
    /// `autotriage/issue-N`.
    pub branch: String,
    /// The commit on it.
    pub commit: String,
    /// The base commit.
    pub base: String,
    /// `created`, `updated` or `unchanged` (`would create`… with `--dry-run`).
    pub status: String,
    /// Files changed.
    pub files: Vec<FileChange>,
}

/// The branch name for an issue.
pub fn branch_name(number: u64) -> String {
    format!("autotriage/issue-{number}")
}

/// Commit the patched tree on `autotriage/issue-N` from HEAD, without touching the
/// working tree. Re-running with the same patch on the same base changes nothing.
pub fn publish_local(
    repo_dir: &Path,
    issue: &Issue,
    patch: &str,
    protected: &[String],
    dry_run: bool,
) -> Result<Published, PatchError> {
    let repo = Repository::open(repo_dir).map_err(git)?;
    let (diff, files) = check_patch(patch, protected)?;
    let base = repo.head().and_then(|h| h.peel_to_commit()).map_err(git)?;
    let tree_id = apply_strict(&repo, base.id(), &diff)?;
    let branch = branch_name(issue.number);
    let refname = format!("refs/heads/{branch}");
    let existing = repo
        .find_reference(&refname)
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    if let Some(c) = &existing
        && c.tree_id() == tree_id
        && c.parent_id(0).ok() == Some(base.id())
    {
        return Ok(Published {
            branch,
            commit: c.id().to_string(),
            base: base.id().to_string(),
            status: "unchanged".into(),
            files,
        });
    }
    let verb = if existing.is_some() {
        "updated"
    } else {
        "created"
    };
    if dry_run {
        return Ok(Published {
            branch,
            commit: String::new(),
            base: base.id().to_string(),
            status: format!("would be {verb}"),
            files,
        });
    }
    let tree = repo.find_tree(tree_id).map_err(git)?;
    let sig = Signature::now("autotriage", "autotriage@localhost").map_err(git)?;
    let message = format!(
        "Fix #{}: {}\n\n{}\n",
        issue.number, issue.title, "Written by autotriage; see the PR description."
    );
    let oid = repo
        .commit(None, &sig, &sig, &message, &tree, &[&base])
        .map_err(git)?;
    repo.reference(
        &refname,
        oid,
        true,
        &format!("autotriage: {verb} for #{}", issue.number),
    )
    .map_err(git)?;
    Ok(Published {
        branch,
        commit: oid.to_string(),
        base: base.id().to_string(),
        status: verb.into(),
        files,
    })
}

/// Inputs of the PR body besides the issue and the change.
#[derive(Debug, Clone, Default)]
pub struct BodyContext {
    /// The triage's one-line summary (kind, priority, labels), if triaged.
    pub triage: Option<String>,
    /// The test evidence summary, if `test.json` exists.
    pub tests: Option<String>,
    /// Tokens and cost, if models were used.
    pub usage: Option<String>,
    /// The run id.
    pub run_id: String,
}

/// The PR body: what was wrong, what changed, the evidence, and `Fixes #N`.
pub fn pr_body(issue: &Issue, published: &Published, ctx: &BodyContext) -> String {
    let first_paragraph = issue
        .body
        .split("\n\n")
        .map(str::trim)
        .find(|p| !p.is_empty())
        .unwrap_or("(the issue has no description)");
    let quoted: String = first_paragraph
        .lines()
        .take(8)
        .map(|l| format!("> {l}\n"))
        .collect();
    let mut out = format!(
        "{PR_MARKER}\n## Fix #{}: {}\n\n### What was wrong\n{quoted}\n### What changed\n",
        issue.number, issue.title
    );
    for f in &published.files {
        out.push_str(&format!("- `{}` (+{} −{})\n", f.path, f.added, f.removed));
    }
    out.push_str("\n### Evidence\n");
    out.push_str(ctx.tests.as_deref().unwrap_or("No test run is recorded for this change yet; `autotriage test` runs the repository's tests on it."));
    out.push('\n');
    if let Some(t) = &ctx.triage {
        out.push_str(&format!("\n### Triage\n{t}\n"));
    }
    out.push_str(&format!(
        "\n### Cost\n{}\n\n---\nBranch `{}` from `{}`, run `{}`. Written by autotriage; a human reviews and merges.\n\nFixes #{}\n",
        ctx.usage.as_deref().unwrap_or("No model calls."),
        published.branch,
        &published.base[..published.base.len().min(12)],
        ctx.run_id,
        issue.number
    ));
    out
}
