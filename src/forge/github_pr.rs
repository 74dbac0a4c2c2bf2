//! Opening the pull request on GitHub: the patch is applied (by the shared applier) to the files it
//! touches at the default branch head (fetched into a throwaway repository), then one
//! commit is made through the git data API (blobs → tree → commit → ref) on
//! `autotriage/issue-N`, and a draft PR is created or updated. Every write checks
//! first, so a re-run updates instead of duplicating and a run that died between the
//! branch and the PR is finished by the next one.

use base64::Engine as _;
use git2::{Index, IndexEntry, IndexTime, Repository, Signature};
use serde::Serialize;
use serde_json::{Value, json};

use super::ForgeError;
use super::github::{GithubForge, path_segments};
use crate::issue::{Issue, RepoId};
use crate::pr::{Ours, PatchError, Published, apply_patch, branch_candidates, patch_paths};

/// `pr` failures on GitHub.
#[derive(Debug, thiserror::Error)]
pub enum PrError {
    /// GitHub said no.
    #[error(transparent)]
    Forge(#[from] ForgeError),
    /// The patch cannot be used.
    #[error(transparent)]
    Patch(#[from] PatchError),
}

impl crate::error::HasKind for PrError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            PrError::Forge(e) => e.kind(),
            PrError::Patch(e) => e.kind(),
        }
    }
}

/// What `pr` did on GitHub.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GithubPr {
    /// The branch and commit.
    pub published: Option<Published>,
    /// The pull request's number.
    pub number: Option<u64>,
    /// Its web URL.
    pub url: Option<String>,
    /// `created`, `updated` (or `would be …` with `--dry-run`).
    pub pr_status: String,
    /// The issue comment linking to the PR: `created`, `updated`, `unchanged`.
    pub comment: String,
    /// Labels put on the PR now (ones it had are not re-added).
    pub labels_added: Vec<String>,
    /// Configured labels the repository lacks, skipped (`github.create_labels: false`).
    pub labels_skipped: Vec<String>,
    /// Labels created in the repository first (`github.create_labels: true`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels_created: Vec<String>,
    /// What failed after the branch was written (labels, the link comment): the rest
    /// was finished, and the command reports these as a partial publish.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// API requests made.
    pub requests: u32,
}

fn git(e: git2::Error) -> PatchError {
    PatchError::Git(e.message().to_string())
}

/// What to publish, and how.
#[derive(Clone, Copy)]
pub struct PrRequest<'a> {
    /// The repository.
    pub repo: &'a RepoId,
    /// The issue the patch fixes.
    pub issue: &'a Issue,
    /// The unified diff.
    pub patch: &'a str,
    /// `paths.protected`.
    pub protected: &'a [String],
    /// Renders the PR description from what was published.
    pub body: &'a dyn Fn(&Published) -> String,
    /// `github.pr_labels`.
    pub labels: &'a [String],
    /// `github.create_labels`.
    pub create_labels: bool,
    /// Write nothing.
    pub dry_run: bool,
    /// What we published before: which commits and branch are ours.
    pub ours: &'a Ours,
    /// The run, named in the commit's trailer.
    pub run_id: &'a str,
    /// Told the branch and the commit before the branch is moved to it.
    pub record: &'a dyn Fn(&str, &str) -> Result<(), String>,
}

impl GithubForge {
    /// Publish `patch` for `issue` as a draft PR. `body` renders the description from
    /// what was published.
    pub fn publish_pr(&self, req: &PrRequest<'_>) -> Result<GithubPr, PrError> {
        let PrRequest {
            repo,
            issue,
            patch,
            protected,
            body,
            labels,
            create_labels,
            dry_run,
            ours,
            run_id,
            record,
        } = *req;
        let what = format!("{repo}#{}", issue.number);
        let r = format!("/repos/{}/{}", repo.owner, repo.name);
        let mut out = GithubPr::default();
        let paths = patch_paths(patch, protected)?;
        // Who we are, before any write: our PR and our comment are told apart by it.
        let me = self.identity()?;
        out.requests += 1;

        let (info, _) = self.get(&what, &r)?;
        let default = info
            .get("default_branch")
            .and_then(Value::as_str)
            .unwrap_or("main")
            .to_string();
        let (head, _) = self.get(&what, &format!("{r}/git/ref/heads/{default}"))?;
        let base = head
            .pointer("/object/sha")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let (base_commit, _) = self.get(&what, &format!("{r}/git/commits/{base}"))?;
        let base_tree = base_commit
            .pointer("/tree/sha")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        out.requests += 3;

        // The touched files at the base, into a throwaway repository, and the patch on them.
        let tmp = tempfile::tempdir().map_err(|e| PatchError::Git(e.to_string()))?;
        let scratch = Repository::init_bare(tmp.path()).map_err(git)?;
        let mut index = Index::new().map_err(git)?;
        for path in &paths {
            let url = format!("{r}/contents/{}?ref={base}", path_segments(path));
            let content = match self.get(&what, &url) {
                Ok((v, _)) => {
                    out.requests += 1;
                    Some(self.file_bytes(&what, &r, path, &v, &mut out.requests)?)
                }
                // A file the patch creates does not exist yet.
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            };
            if let Some(bytes) = content {
                let oid = scratch.blob(&bytes).map_err(git)?;
                index
                    .add(&IndexEntry {
                        ctime: IndexTime::new(0, 0),
                        mtime: IndexTime::new(0, 0),
                        dev: 0,
                        ino: 0,
                        mode: 0o100644,
                        uid: 0,
                        gid: 0,
                        file_size: bytes.len() as u32,
                        id: oid,
                        flags: (path.len().min(0xfff)) as u16,
                        flags_extended: 0,
                        path: path.as_bytes().to_vec(),
                    })
                    .map_err(git)?;
            }
        }
        let tree = scratch
            .find_tree(index.write_tree_to(&scratch).map_err(git)?)
            .map_err(git)?;
        let sig = Signature::now("autotriage", "autotriage@localhost").map_err(git)?;
        let scratch_base = scratch
            .commit(None, &sig, &sig, "base", &tree, &[])
            .map_err(git)?;
        let (new_tree_id, files, _) = apply_patch(&scratch, scratch_base, patch, protected)
            .map_err(|e| match e {
                PatchError::DoesNotApply { detail, .. } => PatchError::DoesNotApply {
                    base: base[..base.len().min(12)].to_string(),
                    detail,
                },
                other => other,
            })?;
        let new_tree = scratch.find_tree(new_tree_id).map_err(git)?;

        // The new contents of every touched file (or its deletion).
        let mut entries = Vec::new();
        for f in &files {
            match new_tree.get_path(std::path::Path::new(&f.path)) {
                Ok(entry) => {
                    let blob = scratch.find_blob(entry.id()).map_err(git)?;
                    entries.push((f.path.clone(), Some(blob.content().to_vec())));
                }
                Err(_) => entries.push((f.path.clone(), None)),
            }
        }
        // Our branch: the first of the family that is free or whose head is ours.
        let mut chosen: Option<(String, Option<String>)> = None;
        let mut foreign = Vec::new();
        for name in branch_candidates(issue.number, ours) {
            out.requests += 1;
            match self.branch_head(&what, &r, &name)? {
                None => {
                    chosen = Some((name, None));
                    break;
                }
                Some(head) if ours.owns(&head) => {
                    // A pull request someone else opened from it makes the branch
                    // theirs to review: pushing would rewrite what they look at.
                    out.requests += 1;
                    if let Some(author) =
                        self.open_pr_by_other(&what, &r, &repo.owner, &name, &me)?
                    {
                        // Nothing is pushed, anywhere: a person has taken the fix over.
                        out.pr_status = "left alone".into();
                        out.problems.push(format!(
                            "an open pull request from {name} was opened by {author}, not by us ({me}): the branch is theirs to review now, so nothing was pushed\n  fix: close that pull request (or ask {author}), then run again"
                        ));
                        return Ok(out);
                    }
                    chosen = Some((name, Some(head)));
                    break;
                }
                Some(_) => foreign.push(name),
            }
        }
        let Some((branch, existing)) = chosen else {
            return Err(PatchError::NoBranch {
                tried: foreign.join(", "),
            }
            .into());
        };
        let mut published = Published {
            branch: branch.clone(),
            commit: String::new(),
            base: base.clone(),
            status: String::new(),
            files: files.clone(),
            note: (!foreign.is_empty()).then(|| crate::pr::foreign_note(&foreign)),
        };
        if dry_run {
            published.status = if existing.is_some() {
                "would be updated"
            } else {
                "would be created"
            }
            .into();
            out.pr_status = "would be created or updated".into();
            out.comment = "would link the PR".into();
            out.published = Some(published);
            return Ok(out);
        }

        // blobs → tree → (commit → ref, unless the branch already has this change).
        let mut tree_items = Vec::new();
        for (path, content) in &entries {
            match content {
                Some(bytes) => {
                    let b = self.write("POST", &what, &format!("{r}/git/blobs"), &json!({"content": base64::engine::general_purpose::STANDARD.encode(bytes), "encoding": "base64"}))?;
                    out.requests += 1;
                    tree_items.push(json!({"path": path, "mode": "100644", "type": "blob", "sha": b.get("sha")}));
                }
                None => tree_items.push(
                    json!({"path": path, "mode": "100644", "type": "blob", "sha": Value::Null}),
                ),
            }
        }
        let t = self.write(
            "POST",
            &what,
            &format!("{r}/git/trees"),
            &json!({"base_tree": base_tree, "tree": tree_items}),
        )?;
        out.requests += 1;
        let tree_sha = t
            .get("sha")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let current = match &existing {
            Some(sha) => {
                let (c, _) = self.get(&what, &format!("{r}/git/commits/{sha}"))?;
                out.requests += 1;
                let same_tree =
                    c.pointer("/tree/sha").and_then(Value::as_str) == Some(tree_sha.as_str());
                let same_base =
                    c.pointer("/parents/0/sha").and_then(Value::as_str) == Some(base.as_str());
                (same_tree && same_base).then(|| sha.clone())
            }
            None => None,
        };
        match current {
            Some(sha) => {
                (record)(&branch, &sha).map_err(PatchError::Git)?;
                published.commit = sha;
                published.status = "unchanged".into();
            }
            None => {
                let c = self.write(
                    "POST",
                    &what,
                    &format!("{r}/git/commits"),
                    &json!({"message": crate::pr::commit_message(issue, run_id), "tree": tree_sha, "parents": [base]}),
                )?;
                out.requests += 1;
                published.commit = c
                    .get("sha")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                // Recorded before the branch points at it: a crash between the two
                // never leaves a commit of ours that a later run would take for
                // someone else's.
                (record)(&branch, &published.commit).map_err(PatchError::Git)?;
                if let Some(old) = &existing {
                    // Looked at again right before moving it: only our own head is
                    // ever replaced.
                    out.requests += 1;
                    let now = self.branch_head(&what, &r, &branch)?;
                    if now.as_deref() != Some(old.as_str()) {
                        return Err(PatchError::Git(format!(
                            "{branch} changed while we were publishing (now {}); nothing was overwritten\n  fix: run the command again",
                            now.as_deref().unwrap_or("deleted")
                        ))
                        .into());
                    }
                    self.write(
                        "PATCH",
                        &what,
                        &format!("{r}/git/refs/heads/{branch}"),
                        &json!({"sha": published.commit, "force": true}),
                    )?;
                    published.status = "updated".into();
                } else {
                    self.write(
                        "POST",
                        &what,
                        &format!("{r}/git/refs"),
                        &json!({"ref": format!("refs/heads/{branch}"), "sha": published.commit}),
                    )?;
                    published.status = "created".into();
                }
                out.requests += 1;
            }
        }

        // The draft PR: update our open one for this branch, else create it. An open
        // PR someone else made from the branch is left as it is.
        let description = body(&published);
        let title = crate::pr::quote::pr_title(issue.number, &issue.title);
        let (open, _) = self.get(
            &what,
            &format!("{r}/pulls?head={}:{branch}&state=open", repo.owner),
        )?;
        out.requests += 1;
        let existing_pr = open.as_array().and_then(|a| a.first()).map(|p| {
            (
                p.get("number").and_then(Value::as_u64),
                p.pointer("/user/login")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        });
        let pr = match existing_pr {
            Some((Some(n), author)) if author.eq_ignore_ascii_case(&me) => {
                out.pr_status = "updated".into();
                out.requests += 1;
                Some(self.write(
                    "PATCH",
                    &what,
                    &format!("{r}/pulls/{n}"),
                    &json!({"title": title, "body": description}),
                )?)
            }
            Some((n, author)) => {
                out.pr_status = "left alone".into();
                out.problems.push(format!(
                    "an open pull request{} from {branch} was opened by {author}, not by us ({me}); it was left as it is and the issue was not linked to it",
                    n.map(|n| format!(" #{n}")).unwrap_or_default()
                ));
                None
            }
            None => {
                out.pr_status = "created".into();
                out.requests += 1;
                Some(self.write("POST", &what, &format!("{r}/pulls"), &json!({"title": title, "head": branch, "base": default, "body": description, "draft": true}))?)
            }
        };
        let Some(pr) = pr else {
            out.published = Some(published);
            return Ok(out);
        };
        out.number = pr.get("number").and_then(Value::as_u64);
        out.url = pr.get("html_url").and_then(Value::as_str).map(String::from);
        // From here on the PR exists: a failure is reported, and the rest still done.
        if let Some(n) = out.number
            && !labels.is_empty()
        {
            let have: Vec<String> = pr
                .get("labels")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|l| l.get("name").and_then(Value::as_str).map(String::from))
                .collect();
            let wanted: Vec<String> = labels
                .iter()
                .filter(|l| !have.iter().any(|h| h.eq_ignore_ascii_case(l)))
                .filter(|l| !l.eq_ignore_ascii_case(&self.trigger_label))
                .cloned()
                .collect();
            if !wanted.is_empty() {
                let labelled = (|| -> Result<(), ForgeError> {
                    let plan = self.plan_labels(repo, &wanted, create_labels)?;
                    out.requests += 1;
                    out.labels_skipped = plan.skipped;
                    out.requests += self.create_labels(repo, &plan.create)?;
                    out.labels_created = plan.create;
                    if !plan.apply.is_empty() {
                        self.write(
                            "POST",
                            &what,
                            &format!("{r}/issues/{n}/labels"),
                            &json!({"labels": plan.apply}),
                        )?;
                        out.requests += 1;
                        out.labels_added = plan.apply;
                    }
                    Ok(())
                })();
                if let Err(e) = labelled {
                    out.problems
                        .push(format!("labelling the pull request failed: {e}"));
                }
            }
        }
        let link = format!(
            "{}\nA draft pull request proposes a fix: {}\n",
            crate::pr::PR_MARKER,
            out.url.as_deref().unwrap_or("(no URL)")
        );
        match self.upsert_comment(repo, issue.number, Some(&link), crate::pr::PR_MARKER, false) {
            Ok((state, _, requests)) => {
                out.comment = state;
                out.requests += requests;
            }
            Err(e) => {
                out.comment = "failed".into();
                out.problems.push(format!(
                    "the comment linking the issue to the PR failed: {e}"
                ));
            }
        }
        out.published = Some(published);
        Ok(out)
    }

    /// The bytes of a file from its contents-API answer: a directory, symlink or
    /// submodule is refused; a file over 1 MB (sent without its content) is read
    /// through the blob API.
    fn file_bytes(
        &self,
        what: &str,
        repo_path: &str,
        path: &str,
        v: &Value,
        requests: &mut u32,
    ) -> Result<Vec<u8>, PrError> {
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("file");
        if kind != "file" || v.is_array() {
            return Err(PatchError::Refused {
                path: path.to_string(),
                reason: format!(
                    "on GitHub it is a {}, not a file",
                    if v.is_array() { "directory" } else { kind }
                ),
            }
            .into());
        }
        let decode = |b64: &str| {
            let clean: String = b64.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean)
                .map_err(|e| PatchError::Git(format!("{path}: {e}")))
        };
        match v.get("encoding").and_then(Value::as_str) {
            Some("base64") => Ok(decode(
                v.get("content").and_then(Value::as_str).unwrap_or(""),
            )?),
            _ => {
                let sha = v.get("sha").and_then(Value::as_str).unwrap_or("");
                let (blob, _) = self.get(what, &format!("{repo_path}/git/blobs/{sha}"))?;
                *requests += 1;
                Ok(decode(
                    blob.get("content").and_then(Value::as_str).unwrap_or(""),
                )?)
            }
        }
    }

    /// The author of an open pull request from `branch` opened by someone other than
    /// `me`, if there is one.
    fn open_pr_by_other(
        &self,
        what: &str,
        repo_path: &str,
        owner: &str,
        branch: &str,
        me: &str,
    ) -> Result<Option<String>, ForgeError> {
        let (open, _) = self.get(
            what,
            &format!("{repo_path}/pulls?head={owner}:{branch}&state=open"),
        )?;
        Ok(open
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.pointer("/user/login").and_then(Value::as_str))
            .find(|a| !a.eq_ignore_ascii_case(me))
            .map(String::from))
    }

    /// The head commit of `branch`, or `None` when it does not exist.
    fn branch_head(
        &self,
        what: &str,
        repo_path: &str,
        branch: &str,
    ) -> Result<Option<String>, ForgeError> {
        match self.get(what, &format!("{repo_path}/git/ref/heads/{branch}")) {
            Ok((v, _)) => Ok(v
                .pointer("/object/sha")
                .and_then(Value::as_str)
                .map(String::from)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}
