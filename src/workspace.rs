//! Where things live: the git top level of the current directory, its `origin`, and
//! the `.autotriage/` folder that holds runs, memory and the index.

use std::path::{Path, PathBuf};

use crate::issue::RepoId;

/// The state folder's name.
pub const STATE_DIR: &str = ".autotriage";

/// The directory a command works in and what git says about it.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The current directory.
    pub cwd: PathBuf,
    /// The git work tree's top level, when inside one.
    pub git_top: Option<PathBuf>,
    /// The `origin` remote's repository, when it parses as one.
    pub origin: Option<RepoId>,
}

impl Workspace {
    /// Inspect `cwd`.
    pub fn discover(cwd: &Path) -> Self {
        let repo = git2::Repository::discover(cwd).ok();
        let git_top = repo
            .as_ref()
            .and_then(|r| r.workdir().map(Path::to_path_buf));
        let origin = repo.as_ref().and_then(|r| {
            let remote = r.find_remote("origin").ok()?;
            RepoId::from_remote_url(remote.url().ok()?)
        });
        Self {
            cwd: cwd.to_path_buf(),
            git_top,
            origin,
        }
    }

    /// The top of the project: the git top level, else the current directory.
    pub fn root(&self) -> &Path {
        self.git_top.as_deref().unwrap_or(&self.cwd)
    }

    /// `.autotriage/` at the project top.
    pub fn state_dir(&self) -> PathBuf {
        self.root().join(STATE_DIR)
    }

    /// The default SQLite memory file.
    pub fn default_memory_path(&self) -> PathBuf {
        self.state_dir().join("memory.sqlite3")
    }

    /// The per-user cache: `AUTOTRIAGE_CACHE_DIR`, else `$XDG_CACHE_HOME/autotriage`,
    /// else `~/.cache/autotriage`. Holds clones, worktrees, build output and baselines.
    pub fn cache_dir(&self) -> PathBuf {
        let dir =
            if let Some(d) = std::env::var_os("AUTOTRIAGE_CACHE_DIR").filter(|d| !d.is_empty()) {
                PathBuf::from(d)
            } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
                PathBuf::from(d).join("autotriage")
            } else {
                match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
                    Some(h) => PathBuf::from(h).join(".cache/autotriage"),
                    None => self.state_dir().join("cache"),
                }
            };
        // Absolute: sandboxed commands run with the worktree as their directory.
        if dir.is_absolute() {
            dir
        } else {
            self.cwd.join(dir)
        }
    }

    /// The run store folder.
    pub fn runs_dir(&self) -> PathBuf {
        self.state_dir().join("runs")
    }
}
