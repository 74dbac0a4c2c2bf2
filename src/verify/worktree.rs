//! Throwaway worktrees: a fresh repository in a cache folder that borrows the user's
//! objects (git alternates), with HEAD detached at the base commit and the candidate's
//! files written over it. Nothing is registered in, or written to, the user's
//! repository, so its checkout, branches and uncommitted work are never touched.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

/// A worktree that removes itself when dropped.
pub struct Worktree {
    /// Its folder.
    pub dir: PathBuf,
    /// The repository in it.
    pub repo: Repository,
}

impl Drop for Worktree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Why a worktree could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    /// The commit is not in the repository.
    #[error("the commit {commit} is not in {repo}")]
    MissingCommit {
        /// The commit.
        commit: String,
        /// The repository's folder.
        repo: String,
    },
    /// git or the file system failed.
    #[error("could not make a worktree in {dir}: {detail}")]
    Failed {
        /// The folder.
        dir: String,
        /// What failed.
        detail: String,
    },
}

/// Check out `commit` of `source` into `dir` (which must not exist).
pub fn create(source: &Repository, commit: Oid, dir: &Path) -> Result<Worktree, WorktreeError> {
    if source.find_commit(commit).is_err() {
        return Err(WorktreeError::MissingCommit {
            commit: commit.to_string(),
            repo: source
                .workdir()
                .unwrap_or_else(|| source.path())
                .display()
                .to_string(),
        });
    }
    let failed = |detail: String| WorktreeError::Failed {
        dir: dir.display().to_string(),
        detail,
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    // From here on, a failure removes the folder (the Worktree's Drop).
    let init = Repository::init(dir).map_err(|e| failed(e.message().to_string()))?;
    let mut wt = Worktree {
        dir: dir.to_path_buf(),
        repo: init,
    };
    let objects = common_dir(source).join("objects");
    let alternates = wt.repo.path().join("objects/info/alternates");
    std::fs::write(&alternates, format!("{}\n", objects.display()))
        .map_err(|e| failed(e.to_string()))?;
    // Reopen so the object database reads the alternates.
    wt.repo = Repository::open(dir).map_err(|e| failed(e.message().to_string()))?;
    wt.repo
        .set_head_detached(commit)
        .map_err(|e| failed(e.message().to_string()))?;
    let mut opts = git2::build::CheckoutBuilder::new();
    opts.force();
    wt.repo.checkout_head(Some(&mut opts)).map_err(|e| {
        if e.code() == git2::ErrorCode::NotFound && e.class() == git2::ErrorClass::Odb {
            // A partial clone (`--filter`) or a damaged one: libgit2 cannot fetch what
            // is missing, so say what to do rather than "object not found".
            failed(format!(
                "{}; the repository lacks objects of commit {commit} (a partial clone, or a damaged one): fetch them (`git fetch --refetch`, or a full clone) and run again",
                e.message()
            ))
        } else {
            failed(e.message().to_string())
        }
    })?;
    Ok(wt)
}

impl Worktree {
    /// Write `tree`'s files over the checkout (the candidate applied), leaving HEAD at
    /// the base so `git diff` shows the change.
    pub fn write_tree(&self, tree: Oid) -> Result<(), WorktreeError> {
        let failed = |detail: String| WorktreeError::Failed {
            dir: self.dir.display().to_string(),
            detail,
        };
        let tree = self
            .repo
            .find_tree(tree)
            .map_err(|e| failed(e.message().to_string()))?;
        let mut opts = git2::build::CheckoutBuilder::new();
        opts.force().remove_untracked(false);
        self.repo
            .checkout_tree(tree.as_object(), Some(&mut opts))
            .map_err(|e| failed(e.message().to_string()))?;
        Ok(())
    }
}

/// The folder holding the objects (the main repository's for a linked worktree).
fn common_dir(repo: &Repository) -> PathBuf {
    let git_dir = repo.path();
    match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(c) => {
            let c = PathBuf::from(c.trim());
            if c.is_absolute() { c } else { git_dir.join(c) }
        }
        Err(_) => git_dir.to_path_buf(),
    }
}

/// Remove worktrees under `root` whose names start with one of `run_ids`, or that were
/// last changed `days` days ago or earlier, except those of the `busy` runs. The folders
/// removed.
pub fn prune(root: &Path, run_ids: &[String], busy: &[String], days: u64) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return removed;
    };
    let limit = std::time::Duration::from_secs(days.saturating_mul(86_400));
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= limit);
        if busy.iter().any(|id| name.starts_with(id.as_str())) {
            continue;
        }
        if (old || run_ids.iter().any(|id| name.starts_with(id.as_str())))
            && std::fs::remove_dir_all(e.path()).is_ok()
        {
            removed.push(e.path());
        }
    }
    removed
}
