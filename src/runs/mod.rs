//! The run store: one folder per run holding each stage's output as JSON, the audit
//! trail and the usage. The embedded default is the `.autotriage/runs` folder
//! ([`fs::FsRunStore`]).

pub mod fs;
pub mod s3;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, HasKind};

/// Version of `run.json` and the run folder layout.
pub const RUN_SCHEMA_VERSION: u32 = 1;

/// Run store failures.
#[derive(Debug, thiserror::Error)]
pub enum RunStoreError {
    /// Reading or writing the store failed.
    #[error(
        "run store {path}: {source}\n  fix: check that the folder is writable and the disk is not full"
    )]
    Io {
        /// The file or folder.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No run with that id.
    #[error("no run {id:?} in {store}\n  fix: `autotriage runs list` shows the runs there are")]
    NotFound {
        /// The id asked for.
        id: String,
        /// Where it was looked for.
        store: String,
    },
    /// The run has no such file.
    #[error("run {id} has no file {name:?}\n  fix: pick one of: {files}")]
    NoSuchFile {
        /// The run.
        id: String,
        /// The file asked for.
        name: String,
        /// The files it has.
        files: String,
    },
    /// An id prefix matches several runs.
    #[error("{id:?} matches several runs ({matches}, …)\n  fix: give more of the id")]
    Ambiguous {
        /// The prefix.
        id: String,
        /// Some of the matches.
        matches: String,
    },
    /// Another process holds this issue: its local lock, or its lease in memory.
    #[error(
        "another autotriage run of {reference} is in progress, held by {holder}\n  fix: wait for it to finish, then run again{lapse}"
    )]
    Busy {
        /// The issue.
        reference: String,
        /// Who holds it (`user@host pid N`, and where).
        holder: String,
        /// When a crashed holder's lease lapses, said as advice.
        lapse: String,
    },
    /// The remote store (S3) failed.
    #[error("run store: {detail}")]
    Remote {
        /// What failed, and what to do.
        detail: String,
    },
    /// The remote store cannot be reached as configured (no region or credentials, a
    /// bucket that does not exist).
    #[error("run store: {detail}")]
    Unavailable {
        /// What is missing, and how to fix it.
        detail: String,
    },
    /// A run file is not what this build understands.
    #[error(
        "{path}: {message}\n  fix: remove the run with `autotriage runs prune` or upgrade autotriage"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl HasKind for RunStoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            RunStoreError::NotFound { .. }
            | RunStoreError::NoSuchFile { .. }
            | RunStoreError::Ambiguous { .. }
            | RunStoreError::Unavailable { .. } => ErrorKind::Usage,
            _ => ErrorKind::Runtime,
        }
    }
}

/// Who this process is, for holds on an issue: `user@host pid N`.
pub fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    // Containers may share a host name: the pid namespace tells them apart.
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.to_string_lossy().trim_start_matches("pid:").to_string())
        .map(|n| format!("{host}{n}"))
        .unwrap_or(host);
    format!("{user}@{ns} pid {}", std::process::id())
}

/// True when `holder` (from [`holder`]) is a process of this machine that no longer
/// runs: its hold can be taken over at once instead of waiting for it to lapse. Where
/// that cannot be known (no `/proc`), false.
pub fn holder_is_gone(holder: &str) -> bool {
    let ours = self::holder();
    let host_of = |h: &str| {
        h.split_once('@')
            .and_then(|(_, rest)| rest.split(" pid ").next())
            .map(str::to_string)
    };
    let Some(pid) = holder
        .rsplit(" pid ")
        .next()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return false;
    };
    host_of(holder).is_some()
        && host_of(holder) == host_of(&ours)
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The state of one stage in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    /// Started, not finished (or the process died).
    Running,
    /// Finished with an output.
    Done,
    /// Finished with an error.
    Failed,
}

/// One stage's record in `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// Its status.
    pub status: StageStatus,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// The error, when it failed (redacted).
    #[serde(default)]
    pub error: Option<String>,
}

/// `run.json`: what the run is and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Layout version.
    pub schema_version: u32,
    /// `20261124T120000Z-widgets-123-a1b2`.
    pub id: String,
    /// The issue, `owner/repo#N`.
    pub reference: String,
    /// The repository.
    pub repo: String,
    /// The issue number.
    pub number: u64,
    /// The command that made the run (`triage`, `fix`…).
    pub command: String,
    /// The commit the run's code stages work from, once known.
    #[serde(default)]
    pub base_commit: Option<String>,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// Stage name → state.
    #[serde(default)]
    pub stages: BTreeMap<String, StageRecord>,
    /// What the run's model calls cost, USD, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl RunMeta {
    /// Whether the stage finished without an error.
    pub fn done(&self, stage: &str) -> bool {
        self.stages
            .get(stage)
            .is_some_and(|s| s.status == StageStatus::Done)
    }

    /// Whether the run was cut short: a stage still marked running (the process died)
    /// or one stopped by Ctrl-C.
    pub fn interrupted(&self) -> bool {
        self.stages.values().any(|s| {
            s.status == StageStatus::Running
                || (s.status == StageStatus::Failed
                    && s.error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("interrupted")))
        })
    }
}

/// One line of `events.jsonl`: an external read or write, a model call, a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When (RFC 3339, UTC).
    pub ts: String,
    /// The stage that emitted it.
    pub stage: String,
    /// `read`, `write`, `model`, `decision`, `error`.
    pub kind: String,
    /// What happened (redacted before writing).
    pub message: String,
    /// Structured details.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

/// A run folder's summary for `runs show`.
#[derive(Debug, Clone, Serialize)]
pub struct RunDetail {
    /// `run.json`.
    pub meta: RunMeta,
    /// Files in the folder with their sizes in bytes.
    pub files: Vec<(String, u64)>,
}

/// Now, as RFC 3339 UTC with seconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
