//! Issue references (`owner/repo#123`, URLs, `#123`, local files and rows) and the
//! `Issue` every stage reads.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, HasKind};

/// The forms a reference may take, shown whenever one is rejected.
pub const ACCEPTED_FORMS: &str = "\
accepted issue references:
  owner/repo#123                           an issue on GitHub
  https://github.com/owner/repo/issues/123 an issue URL (GitHub Enterprise hosts too)
  '#123' or 123                            an issue of the current checkout's origin (quote #: the shell eats it)
  owner/repo                               a repository's issues, for batches
  issues/42.md  issues/                    local Markdown issues: one file, or a folder of them
  issues.json   issues.json#7              `gh issue list --json` output: all issues, or issue 7
  data.csv      data.csv#12                CSV issues: all rows, or row 12 (counting from 1)";

/// A reference that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    /// A pull-request URL was given where an issue is needed.
    #[error(
        "{input:?} is a pull request, not an issue\n  fix: pass the issue the pull request addresses\n{ACCEPTED_FORMS}"
    )]
    PullRequest {
        /// What the user typed.
        input: String,
    },
    /// Not any known form.
    #[error("{input:?} is not an issue reference: {reason}\n{ACCEPTED_FORMS}")]
    Malformed {
        /// What the user typed.
        input: String,
        /// Why it was rejected.
        reason: String,
    },
    /// `#N` outside a checkout with a GitHub `origin`.
    #[error(
        "{input:?} needs a repository, but the current directory has no git `origin` remote on a GitHub host and no `repo` is configured\n  fix: run inside a clone, set `repo: owner/name` in autotriage.yaml, or write owner/repo#N\n{ACCEPTED_FORMS}"
    )]
    NoOrigin {
        /// What the user typed.
        input: String,
    },
    /// A local file named in the reference does not exist.
    #[error("{input:?}: no such file or folder {path}\n  fix: check the path\n{ACCEPTED_FORMS}")]
    Missing {
        /// What the user typed.
        input: String,
        /// The path that was looked for.
        path: PathBuf,
    },
}

impl HasKind for RefError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Usage
    }
}

/// A repository on a GitHub host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RepoId {
    /// `github.com` or an Enterprise host.
    pub host: String,
    /// Owner (user or organisation).
    pub owner: String,
    /// Repository name.
    pub name: String,
}

impl RepoId {
    /// `owner/name` on github.com.
    pub fn github(owner: &str, name: &str) -> Self {
        Self {
            host: "github.com".into(),
            owner: owner.into(),
            name: name.into(),
        }
    }

    /// `owner/name` (host omitted).
    pub fn slug(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// Parse a git remote URL: `https://host/o/r(.git)`, `git@host:o/r(.git)`,
    /// `ssh://git@host[:port]/o/r(.git)`.
    pub fn from_remote_url(url: &str) -> Option<Self> {
        let url = url.trim();
        let (host, path) = if let Some(rest) = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .or_else(|| url.strip_prefix("ssh://"))
            .or_else(|| url.strip_prefix("git://"))
        {
            let (authority, path) = rest.split_once('/')?;
            let host = authority.rsplit('@').next()?.split(':').next()?;
            (host.to_string(), path.to_string())
        } else if url.contains("://") {
            return None;
        } else {
            // scp-like: git@host:owner/repo.git
            let (left, path) = url.split_once(':')?;
            let host = left.rsplit('@').next()?;
            (host.to_string(), path.to_string())
        };
        let path = path.trim_end_matches('/').trim_end_matches(".git");
        let mut parts = path.split('/').filter(|p| !p.is_empty());
        let owner = parts.next()?;
        let name = parts.next()?;
        if parts.next().is_some() || host.is_empty() {
            return None;
        }
        Some(Self {
            host: host.to_lowercase(),
            owner: owner.into(),
            name: name.into(),
        })
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host == "github.com" {
            write!(f, "{}/{}", self.owner, self.name)
        } else {
            write!(f, "{}/{}/{}", self.host, self.owner, self.name)
        }
    }
}

/// Which record of a local multi-issue file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Every record in the file.
    All,
    /// The issue with this number (`issues.json#7`).
    Number(u64),
    /// This row, counting data rows from 1 (`data.csv#12`).
    Row(u64),
}

/// A parsed issue reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueRef {
    /// One issue on a GitHub host.
    Remote {
        /// The repository.
        repo: RepoId,
        /// The issue number.
        number: u64,
    },
    /// Every issue of a repository (batches).
    Repo(RepoId),
    /// A local file: Markdown (one issue), gh JSON or CSV (all or one record).
    File {
        /// The file.
        path: PathBuf,
        /// Which records.
        record: Record,
    },
    /// A folder of Markdown issues.
    Dir(PathBuf),
}

impl fmt::Display for IssueRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IssueRef::Remote { repo, number } => write!(f, "{repo}#{number}"),
            IssueRef::Repo(repo) => write!(f, "{repo}"),
            IssueRef::File {
                path,
                record: Record::All,
            } => write!(f, "{}", path.display()),
            IssueRef::File {
                path,
                record: Record::Number(n) | Record::Row(n),
            } => {
                write!(f, "{}#{n}", path.display())
            }
            IssueRef::Dir(path) => {
                write!(f, "{}/", path.display().to_string().trim_end_matches('/'))
            }
        }
    }
}

/// What a reference is resolved against.
#[derive(Debug, Clone)]
pub struct RefContext {
    /// Relative paths are resolved from here.
    pub cwd: PathBuf,
    /// The current checkout's repository (its `origin`, else config `repo`).
    pub default_repo: Option<RepoId>,
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn owner_repo(s: &str) -> Option<RepoId> {
    let (o, r) = s.split_once('/')?;
    (is_name(o) && is_name(r)).then(|| RepoId::github(o, r))
}

fn parse_number(input: &str, s: &str) -> Result<u64, RefError> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(RefError::Malformed {
            input: input.into(),
            reason: format!("{s:?} is not an issue number (a whole number from 1)"),
        }),
    }
}

fn looks_like_path(s: &str) -> bool {
    s.starts_with('.')
        || s.starts_with('/')
        || s.starts_with('~')
        || [".md", ".markdown", ".json", ".csv"]
            .iter()
            .any(|ext| s.to_lowercase().ends_with(ext))
}

impl IssueRef {
    /// Parse what the user typed.
    pub fn parse(input: &str, ctx: &RefContext) -> Result<Self, RefError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(RefError::Malformed {
                input: input.into(),
                reason: "it is empty".into(),
            });
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            return Self::parse_url(input, s);
        }
        let resolve = |p: &str| -> PathBuf {
            let path = Path::new(p);
            if path.is_absolute() {
                path.to_path_buf()
            } else {
                ctx.cwd.join(path)
            }
        };

        // `#123` or `123`: the current checkout's repository.
        let digits = s.strip_prefix('#').unwrap_or(s);
        if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) && !resolve(s).exists()
        {
            let number = parse_number(input, digits)?;
            let repo = ctx.default_repo.clone().ok_or_else(|| RefError::NoOrigin {
                input: input.into(),
            })?;
            return Ok(IssueRef::Remote { repo, number });
        }

        if let Some((left, right)) = s.rsplit_once('#') {
            let path = resolve(left);
            if path.is_file() {
                let lower = left.to_lowercase();
                let n = parse_number(input, right)?;
                let record = if lower.ends_with(".csv") {
                    Record::Row(n)
                } else if lower.ends_with(".json") {
                    Record::Number(n)
                } else {
                    return Err(RefError::Malformed {
                        input: input.into(),
                        reason: "`#N` selects a record of a .json or .csv file; a Markdown file holds one issue".into(),
                    });
                };
                return Ok(IssueRef::File { path, record });
            }
            if let Some(repo) = owner_repo(left) {
                let number = parse_number(input, right)?;
                return Ok(IssueRef::Remote { repo, number });
            }
            if looks_like_path(left) {
                return Err(RefError::Missing {
                    input: input.into(),
                    path,
                });
            }
            return Err(RefError::Malformed {
                input: input.into(),
                reason: format!("{left:?} is neither owner/repo nor an existing file"),
            });
        }

        let path = resolve(s);
        if path.is_dir() {
            return Ok(IssueRef::Dir(path));
        }
        if path.is_file() {
            return Ok(IssueRef::File {
                path,
                record: Record::All,
            });
        }
        if let Some(repo) = owner_repo(s) {
            return Ok(IssueRef::Repo(repo));
        }
        if looks_like_path(s) {
            return Err(RefError::Missing {
                input: input.into(),
                path,
            });
        }
        Err(RefError::Malformed {
            input: input.into(),
            reason: "it matches none of the forms".into(),
        })
    }

    fn parse_url(input: &str, s: &str) -> Result<Self, RefError> {
        let rest = s.split_once("://").map_or(s, |(_, r)| r);
        let rest = rest.split(['?', '#']).next().unwrap_or(rest);
        let mut parts = rest.split('/').filter(|p| !p.is_empty());
        let host = parts.next().unwrap_or("").to_lowercase();
        let segments: Vec<&str> = parts.collect();
        // github.com/o/r/issues/N, or GHE with the same path; api URLs are
        // /api/v3/repos/o/r/issues/N.
        let segs: &[&str] = match segments.as_slice() {
            ["api", "v3", "repos", tail @ ..] | ["repos", tail @ ..] => tail,
            all => all,
        };
        let host = if host == "api.github.com" || host == "www.github.com" {
            "github.com".to_string()
        } else {
            host
        };
        match segs {
            [owner, name, "issues", n] if is_name(owner) && is_name(name) => Ok(IssueRef::Remote {
                repo: RepoId {
                    host,
                    owner: (*owner).into(),
                    name: (*name).into(),
                },
                number: parse_number(input, n)?,
            }),
            [_, _, "pull" | "pulls", ..] => Err(RefError::PullRequest {
                input: input.into(),
            }),
            [owner, name] | [owner, name, "issues"] if is_name(owner) && is_name(name) => {
                Ok(IssueRef::Repo(RepoId {
                    host,
                    owner: (*owner).into(),
                    name: (*name).into(),
                }))
            }
            _ => Err(RefError::Malformed {
                input: input.into(),
                reason: "the URL is not an issue page (expected https://HOST/owner/repo/issues/N)"
                    .into(),
            }),
        }
    }
}

/// Issue state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IssueState {
    /// Open.
    #[default]
    Open,
    /// Closed.
    Closed,
}

impl IssueState {
    /// Parse GitHub's and gh's spellings (`open`, `OPEN`, `closed`, `CLOSED`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_lowercase().as_str() {
            "open" | "opened" | "reopened" => Some(Self::Open),
            "closed" | "close" | "resolved" => Some(Self::Closed),
            _ => None,
        }
    }

    /// `open` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// A comment on an issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Comment {
    /// Who wrote it.
    #[serde(default)]
    pub author: Option<String>,
    /// Their association with the repository.
    #[serde(default)]
    pub author_association: Option<String>,
    /// Text.
    #[serde(default)]
    pub body: String,
    /// When (RFC 3339).
    #[serde(default)]
    pub created_at: Option<String>,
}

/// An issue, whatever forge it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Issue {
    /// `owner/name` (or `host/owner/name` off github.com); `local` when unknown.
    pub repo: String,
    /// Issue number (for CSV without a number column: the row).
    pub number: u64,
    /// Title.
    pub title: String,
    /// Body (Markdown).
    #[serde(default)]
    pub body: String,
    /// Label names.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Open or closed.
    #[serde(default)]
    pub state: IssueState,
    /// Author login.
    #[serde(default)]
    pub author: Option<String>,
    /// OWNER, MEMBER, COLLABORATOR, CONTRIBUTOR, NONE…; unknown for most local sources.
    #[serde(default)]
    pub author_association: Option<String>,
    /// Creation time (RFC 3339 when known).
    #[serde(default)]
    pub created_at: Option<String>,
    /// Comments, oldest first.
    #[serde(default)]
    pub comments: Vec<Comment>,
    /// Web URL, when there is one.
    #[serde(default)]
    pub url: Option<String>,
    /// Where it was read from (`FILE`, `FILE:LINE`, `FILE#N`).
    #[serde(default)]
    pub source: Option<String>,
    /// Reactions (👍 and the rest), when the source reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactions: Option<u64>,
    /// Who added the trigger label, and whether they have write access (checked on
    /// GitHub); `None` where it cannot be known (local sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_label_added_by: Option<LabelActor>,
    /// Locked conversation (GitHub).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub locked: bool,
}

/// The person who added a label, and whether they may write to the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelActor {
    /// Their login.
    pub login: String,
    /// admin, maintain or write permission.
    pub can_write: bool,
}

impl Issue {
    /// The canonical reference, `owner/repo#N`.
    pub fn reference(&self) -> String {
        format!("{}#{}", self.repo, self.number)
    }
}

/// Parse a canonical `repo#N` key as stored in memory (`owner/repo#1`, `local#3`).
pub fn parse_key(s: &str) -> Option<(String, u64)> {
    let (repo, n) = s
        .trim()
        .trim_start_matches("https://github.com/")
        .rsplit_once('#')?;
    let n = n.parse().ok()?;
    (!repo.is_empty()).then(|| (repo.to_string(), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(dir: &Path, origin: Option<RepoId>) -> RefContext {
        RefContext {
            cwd: dir.to_path_buf(),
            default_repo: origin,
        }
    }

    #[test]
    fn remote_forms() {
        let d = tempfile::tempdir().unwrap();
        let c = ctx(d.path(), Some(RepoId::github("me", "mine")));
        let p = |s: &str| IssueRef::parse(s, &c).unwrap().to_string();
        assert_eq!(p("rust-lang/rust#123"), "rust-lang/rust#123");
        assert_eq!(p("https://github.com/o/r/issues/9"), "o/r#9");
        assert_eq!(
            p("https://ghe.corp.example/o/r/issues/9?x=1"),
            "ghe.corp.example/o/r#9"
        );
        assert_eq!(p("#5"), "me/mine#5");
        assert_eq!(p("5"), "me/mine#5");
        assert_eq!(p("o/r"), "o/r");
    }

    #[test]
    fn rejects_with_forms() {
        let d = tempfile::tempdir().unwrap();
        let c = ctx(d.path(), None);
        for (input, needle) in [
            ("https://github.com/o/r/pull/3", "is a pull request"),
            ("#12", "no git `origin`"),
            ("o/r#x", "not an issue number"),
            ("o/r#0", "not an issue number"),
            ("what is this", "matches none"),
            ("missing.json#2", "no such file"),
            ("https://github.com/o", "not an issue page"),
        ] {
            let err = IssueRef::parse(input, &c).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
            assert!(err.contains("accepted issue references"), "{input}: {err}");
        }
    }

    #[test]
    fn local_forms() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("issues.json"), "[]").unwrap();
        std::fs::write(d.path().join("data.csv"), "title\n").unwrap();
        std::fs::write(d.path().join("1.md"), "x").unwrap();
        let c = ctx(d.path(), None);
        assert_eq!(
            IssueRef::parse("issues.json#7", &c).unwrap(),
            IssueRef::File {
                path: d.path().join("issues.json"),
                record: Record::Number(7)
            }
        );
        assert_eq!(
            IssueRef::parse("data.csv#12", &c).unwrap(),
            IssueRef::File {
                path: d.path().join("data.csv"),
                record: Record::Row(12)
            }
        );
        assert_eq!(
            IssueRef::parse(".", &c).unwrap(),
            IssueRef::Dir(d.path().join("."))
        );
        assert!(
            IssueRef::parse("1.md#2", &c)
                .unwrap_err()
                .to_string()
                .contains("Markdown file holds one")
        );
    }

    #[test]
    fn remote_urls() {
        for (url, want) in [
            ("https://github.com/o/r.git", RepoId::github("o", "r")),
            ("git@github.com:o/r.git", RepoId::github("o", "r")),
            ("ssh://git@github.com:22/o/r", RepoId::github("o", "r")),
        ] {
            assert_eq!(RepoId::from_remote_url(url), Some(want), "{url}");
        }
        assert_eq!(RepoId::from_remote_url("/local/path"), None);
    }
}
