//! The `pr` stage: a patch (unified diff or SEARCH/REPLACE blocks) applied to the base
//! tree by the shared applier (placed by content; ambiguous edits refused, with the
//! closest lines), published as a branch `autotriage/issue-N`
//! with one commit, and a PR body that explains itself. The local forge's PR is that
//! branch in the checkout (no checkout of it, so the user's working tree and
//! uncommitted work are untouched) plus `pr.md` in the run folder.

pub mod quote;

use std::path::Path;

use git2::{Oid, Repository, Signature};
use serde::Serialize;

use crate::repair::{ApplyError, EditReport, PathGuard};

use crate::error::{ErrorKind, HasKind};
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
    /// An edit does not match the base.
    #[error(
        "the patch does not apply to {base}: {detail}\n  fix: regenerate the patch against {base}"
    )]
    DoesNotApply {
        /// The base commit.
        base: String,
        /// Which edit, and why (with the closest lines).
        detail: String,
    },
    /// The patch changes nothing.
    #[error("the patch changes no file\n  fix: pass a diff with at least one change")]
    Empty,
    /// Every branch name of our family holds someone else's work.
    #[error(
        "every branch name tried ({tried}) holds commits that are not ours; nothing was written\n  fix: delete or rename the stale branches, then run again"
    )]
    NoBranch {
        /// The names tried.
        tried: String,
    },
    /// A git operation failed.
    #[error("git: {0}")]
    Git(String),
}

impl HasKind for PatchError {
    fn kind(&self) -> ErrorKind {
        match self {
            PatchError::Git(_) | PatchError::NoBranch { .. } => ErrorKind::Runtime,
            _ => ErrorKind::Usage,
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

/// The paths a patch names, each checked: no absolute paths, no `..`, nothing under
/// `.git/`, nothing matching `paths.protected`.
pub fn patch_paths(patch: &str, protected: &[String]) -> Result<Vec<String>, PatchError> {
    let edits = crate::repair::parse(patch).map_err(|e| PatchError::Parse(e.0))?;
    let guard = PathGuard::new(protected).map_err(PatchError::Parse)?;
    named_paths(&edits, &guard)
}

/// The paths edits name, each checked by the guard; at least one.
fn named_paths(
    edits: &[crate::repair::Edit],
    guard: &PathGuard,
) -> Result<Vec<String>, PatchError> {
    let mut paths: Vec<String> = Vec::new();
    for e in edits {
        if let Some(p) = &e.path {
            if let Some(reason) = guard.check(p) {
                return Err(PatchError::Refused {
                    path: p.clone(),
                    reason: reason.into(),
                });
            }
            if !paths.contains(p) {
                paths.push(p.clone());
            }
        }
    }
    if paths.is_empty() {
        return Err(PatchError::Parse(
            "it names no file (no `--- a/…`/`+++ b/…` headers and no path line)".into(),
        ));
    }
    Ok(paths)
}

/// Apply a patch (a unified diff or SEARCH/REPLACE blocks) to `base`'s tree with the
/// applier `fix` uses: edits are placed by their content, ambiguous ones refused. The
/// new tree, the changed files and how each edit applied.
pub fn apply_patch(
    repo: &Repository,
    base: Oid,
    patch: &str,
    protected: &[String],
) -> Result<(Oid, Vec<FileChange>, Vec<EditReport>), PatchError> {
    let edits = crate::repair::parse(patch).map_err(|e| PatchError::Parse(e.0))?;
    let guard = PathGuard::new(protected).map_err(PatchError::Parse)?;
    let paths = named_paths(&edits, &guard)?;
    let tree = repo.find_commit(base).and_then(|c| c.tree()).map_err(git)?;
    let read = |p: &str| crate::locate::files::read_at(repo, base, p);
    let short = base.to_string()[..12].to_string();
    let applied = crate::repair::apply(&edits, &read, &paths, &guard).map_err(|e| match e {
        ApplyError::Refused { path, reason, .. } => PatchError::Refused { path, reason },
        other => PatchError::DoesNotApply {
            base: short.clone(),
            detail: other.to_string(),
        },
    })?;
    // Text is edited as UTF-8: a file in another encoding would be rewritten lossily.
    for path in applied.files.keys() {
        if let Ok(entry) = tree.get_path(Path::new(path))
            && let Ok(blob) = repo.find_blob(entry.id())
            && std::str::from_utf8(blob.content()).is_err()
        {
            return Err(PatchError::Refused {
                path: path.clone(),
                reason: "it is not UTF-8 text (or binary); change it by hand".into(),
            });
        }
    }
    let mut index = git2::Index::new().map_err(git)?;
    index.read_tree(&tree).map_err(git)?;
    let mut changes = Vec::new();
    for (path, text) in &applied.files {
        let before = read(path);
        if before.as_deref() == text.as_deref() {
            continue;
        }
        let diff = similar::TextDiff::from_lines(
            before.as_deref().unwrap_or(""),
            text.as_deref().unwrap_or(""),
        );
        let (mut added, mut removed) = (0, 0);
        for c in diff.iter_all_changes() {
            match c.tag() {
                similar::ChangeTag::Insert => added += 1,
                similar::ChangeTag::Delete => removed += 1,
                similar::ChangeTag::Equal => {}
            }
        }
        changes.push(FileChange {
            path: path.clone(),
            added,
            removed,
        });
        match text {
            None => index.remove_path(Path::new(path)).map_err(git)?,
            Some(t) => {
                let oid = repo.blob(t.as_bytes()).map_err(git)?;
                let mode = index
                    .get_path(Path::new(path), 0)
                    .map_or(0o100644, |e| e.mode);
                index
                    .add(&git2::IndexEntry {
                        ctime: git2::IndexTime::new(0, 0),
                        mtime: git2::IndexTime::new(0, 0),
                        dev: 0,
                        ino: 0,
                        mode,
                        uid: 0,
                        gid: 0,
                        file_size: t.len() as u32,
                        id: oid,
                        flags: (path.len().min(0xfff)) as u16,
                        flags_extended: 0,
                        path: path.as_bytes().to_vec(),
                    })
                    .map_err(git)?;
            }
        }
    }
    if changes.is_empty() {
        return Err(PatchError::Empty);
    }
    let tree_id = index.write_tree_to(repo).map_err(git)?;
    Ok((tree_id, changes, applied.reports))
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
    /// Why the branch is not `autotriage/issue-N` (it held someone else's work).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The branch name for an issue.
pub fn branch_name(number: u64) -> String {
    format!("autotriage/issue-{number}")
}

/// What we published for an issue before: the commits we made (from run folders'
/// `pr.json` and memory's fix records) and the branch we last used. A branch is ours
/// to update only when its head is one of these commits: each of our commits sits
/// directly on a base commit, so the head being ours means every commit past the base
/// is ours. A branch with no record is never ours.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ours {
    /// Commit SHAs we made.
    pub commits: Vec<String>,
    /// The branch we last published on.
    pub branch: Option<String>,
}

impl Ours {
    /// True when `sha` is a commit we made.
    pub fn owns(&self, sha: &str) -> bool {
        !sha.is_empty() && self.commits.iter().any(|c| c.eq_ignore_ascii_case(sha))
    }
}

/// How many branch names are tried before giving up (`autotriage/issue-N`, `-2`, …).
pub const BRANCH_TRIES: usize = 20;

/// The branch names to try, in order: the one we used last, then
/// `autotriage/issue-N`, `autotriage/issue-N-2`, … Only names of that family are used,
/// so a recorded name can never point us at somebody else's branch.
pub fn branch_candidates(number: u64, ours: &Ours) -> Vec<String> {
    let base = branch_name(number);
    let family: Vec<String> = std::iter::once(base.clone())
        .chain((2..=BRANCH_TRIES).map(|i| format!("{base}-{i}")))
        .collect();
    let first = ours.branch.as_ref().filter(|b| family.contains(b)).cloned();
    first
        .iter()
        .cloned()
        .chain(family.into_iter().filter(|b| Some(b) != first.as_ref()))
        .collect()
}

/// The commit message for a fix: an inert title line, and the trailer that names the
/// run that made it.
pub fn commit_message(issue: &Issue, run_id: &str) -> String {
    format!(
        "{}\n\nWritten by autotriage; see the PR description.\n\nAutotriage-Run: {}\n",
        quote::pr_title(issue.number, &issue.title),
        quote::one_line(run_id, 100)
    )
}

/// A local publication: the patch, where and on what it goes, and what is ours.
#[derive(Clone, Copy)]
pub struct LocalPublish<'a> {
    /// The checkout whose branch is written (its working tree is never touched).
    pub repo_dir: &'a Path,
    /// The issue the patch fixes.
    pub issue: &'a Issue,
    /// The unified diff or SEARCH/REPLACE blocks.
    pub patch: &'a str,
    /// `paths.protected`.
    pub protected: &'a [String],
    /// Write nothing.
    pub dry_run: bool,
    /// The base commit (default HEAD): the commit a fix was tested on.
    pub base: Option<Oid>,
    /// What we published before.
    pub ours: &'a Ours,
    /// The run, named in the commit's trailer.
    pub run_id: &'a str,
}

/// Commit the patched tree on our branch for the issue, from the base, without
/// touching the working tree. The branch is `autotriage/issue-N` unless that holds a
/// commit that is not ours, then the next free name of the family. Re-running with the
/// same patch on the same base changes nothing. `record` is told the branch and commit
/// before the branch is moved to it, so a crash never leaves an unrecorded commit of
/// ours behind.
pub fn publish_local(
    p: &LocalPublish<'_>,
    record: &mut dyn FnMut(&str, &str) -> Result<(), String>,
) -> Result<Published, PatchError> {
    let repo = Repository::open(p.repo_dir).map_err(git)?;
    let base = match p.base {
        Some(b) => repo.find_commit(b),
        None => repo.head().and_then(|h| h.peel_to_commit()),
    }
    .map_err(git)?;
    let (tree_id, files, _) = apply_patch(&repo, base.id(), p.patch, p.protected)?;
    let mut chosen: Option<(String, Option<git2::Commit<'_>>)> = None;
    let mut foreign = Vec::new();
    for name in branch_candidates(p.issue.number, p.ours) {
        let existing = repo
            .find_reference(&format!("refs/heads/{name}"))
            .ok()
            .and_then(|r| r.peel_to_commit().ok());
        match existing {
            None => {
                chosen = Some((name, None));
                break;
            }
            Some(c) if p.ours.owns(&c.id().to_string()) => {
                chosen = Some((name, Some(c)));
                break;
            }
            Some(_) => foreign.push(name),
        }
    }
    let Some((branch, existing)) = chosen else {
        return Err(PatchError::NoBranch {
            tried: foreign.join(", "),
        });
    };
    let refname = format!("refs/heads/{branch}");
    let note = (!foreign.is_empty()).then(|| foreign_note(&foreign));
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
            note,
        });
    }
    let verb = if existing.is_some() {
        "updated"
    } else {
        "created"
    };
    if p.dry_run {
        return Ok(Published {
            branch,
            commit: String::new(),
            base: base.id().to_string(),
            status: format!("would be {verb}"),
            files,
            note,
        });
    }
    let tree = repo.find_tree(tree_id).map_err(git)?;
    let sig = Signature::now("autotriage", "autotriage@localhost").map_err(git)?;
    let message = commit_message(p.issue, p.run_id);
    let oid = repo
        .commit(None, &sig, &sig, &message, &tree, &[&base])
        .map_err(git)?;
    record(&branch, &oid.to_string()).map_err(PatchError::Git)?;
    // Moved only from the head we checked (ours) or created only where none is: a
    // branch someone changed meanwhile is left alone.
    let log = format!("autotriage: {verb} for #{}", p.issue.number);
    match &existing {
        Some(c) => repo.reference_matching(&refname, oid, true, c.id(), &log),
        None => repo.reference(&refname, oid, false, &log),
    }
    .map_err(|e| {
        PatchError::Git(format!(
            "{branch} changed while we were publishing ({}); nothing was overwritten\n  fix: run the command again",
            e.message()
        ))
    })?;
    Ok(Published {
        branch,
        commit: oid.to_string(),
        base: base.id().to_string(),
        status: verb.into(),
        files,
        note,
    })
}

/// What we say when `autotriage/issue-N` (and maybe more) held someone else's work.
pub fn foreign_note(foreign: &[String]) -> String {
    format!(
        "{} holds commits that are not ours, so it was left untouched and the fix went on the next free name",
        foreign.join(", ")
    )
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
    /// The model's explanation of the change, if a model wrote it.
    pub explanation: Option<String>,
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
        .map(|l| format!("> {}\n", quote::markdown(l)))
        .collect();
    let mut out = format!(
        "{PR_MARKER}\n## Fix #{}: {}\n\n### What was wrong\n{quoted}\n### What changed\n",
        issue.number,
        quote::markdown(&quote::one_line(&issue.title, quote::TITLE_LIMIT))
    );
    for f in &published.files {
        out.push_str(&format!(
            "- `{}` (+{} −{})\n",
            quote::code_path(&f.path),
            f.added,
            f.removed
        ));
    }
    if let Some(note) = &published.note {
        out.push_str(&format!("\nBranch: {}.\n", quote::markdown(note)));
    }
    // The model's words are shaped by the issue's text: quoted inert, and cut.
    if let Some(e) = ctx
        .explanation
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        out.push_str("\n### Why, in the words of the model that wrote it\n");
        for line in e.lines().take(30) {
            out.push_str(&format!(
                "> {}\n",
                quote::markdown(&line.chars().take(500).collect::<String>())
            ));
        }
    }
    out.push_str("\n### Evidence\n");
    out.push_str(&quote::evidence(ctx.tests.as_deref().unwrap_or("No test run is recorded for this change yet; `autotriage test` runs the repository's tests on it.")));
    out.push('\n');
    if let Some(t) = &ctx.triage {
        out.push_str(&format!("\n### Triage\n{}\n", quote::evidence(t)));
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
