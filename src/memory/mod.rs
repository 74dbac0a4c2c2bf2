//! Memory: every issue seen (with labels and state: the labelled history), triage
//! results, runs, and learned state such as trained models. The embedded default is
//! one SQLite file ([`sqlite::SqliteMemory`]).

pub mod dynamodb;
pub mod sqlite;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, HasKind};
use crate::issue::Issue;
use crate::runs::RunMeta;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 4;

/// Memory failures. None of them touches the file: a memory that cannot be read is
/// reported, never repaired or replaced silently.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The file is not a readable autotriage memory.
    #[error(
        "memory file {path} is not a readable autotriage memory ({detail}); it was left untouched\n  fix: move it aside (or restore it from `memory export` output) and run again, or point --memory / AUTOTRIAGE_MEMORY at another file"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// Written by a newer autotriage.
    #[error(
        "memory file {path} has schema version {found}, newer than this autotriage understands ({supported}); it was left untouched\n  fix: upgrade autotriage, or point --memory at another file"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
    /// Another process holds the write lock.
    #[error(
        "memory file {path} is locked by another process (waited {waited_ms} ms)\n  fix: wait for the other autotriage command to finish, then run again"
    )]
    Locked {
        /// The file.
        path: PathBuf,
        /// How long we waited.
        waited_ms: u64,
    },
    /// Stopped by Ctrl-C; the current transaction was rolled back.
    #[error("interrupted; the import in progress was rolled back and memory is unchanged by it")]
    Interrupted,
    /// Any other database failure.
    #[error("memory file {path}: {detail}")]
    Database {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The memory cannot be reached as configured: no region or credentials, a table
    /// that does not exist.
    #[error("memory {location}: {detail}")]
    Unavailable {
        /// `dynamodb:TABLE`.
        location: String,
        /// What is missing and how to fix it.
        detail: String,
    },
    /// An import record that cannot be used.
    #[error("{location}: {message}")]
    BadRecord {
        /// Where.
        location: String,
        /// What.
        message: String,
    },
}

impl HasKind for MemoryError {
    fn kind(&self) -> ErrorKind {
        match self {
            MemoryError::Corrupt { .. }
            | MemoryError::NewerSchema { .. }
            | MemoryError::Unavailable { .. } => ErrorKind::Usage,
            MemoryError::Interrupted => ErrorKind::Interrupted,
            _ => ErrorKind::Runtime,
        }
    }
}

/// Filters for `memory list`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this repository.
    pub repo: Option<String>,
    /// Only issues with this label.
    pub label: Option<String>,
    /// Only `open` or `closed`.
    pub state: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// A short line about an issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssueSummary {
    /// `owner/repo#N`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Title.
    pub title: String,
    /// `open`/`closed`.
    pub state: String,
    /// Labels.
    pub labels: Vec<String>,
}

/// A search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The issue.
    #[serde(flatten)]
    pub issue: IssueSummary,
    /// Relevance in 0..1 (BM25 squashed by `r / (r + 10)`): comparable within one
    /// memory, not a probability.
    pub score: f64,
}

/// Counts for `memory stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Stats {
    /// Schema version of the file.
    pub schema_version: i64,
    /// Issues stored.
    pub issues: u64,
    /// Open ones.
    pub open: u64,
    /// Closed ones.
    pub closed: u64,
    /// Issues with at least one label (the labelled history).
    pub labelled: u64,
    /// Issues per repository.
    pub repos: BTreeMap<String, u64>,
    /// The most used labels with counts.
    pub labels: BTreeMap<String, u64>,
    /// Triage results recorded.
    pub triage_results: u64,
    /// Runs recorded.
    pub runs: u64,
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct ImportCounts {
    /// New issues.
    pub inserted: u64,
    /// Issues already present, replaced by the newer record.
    pub updated: u64,
    /// Other records (triage results, runs, learned state) from an export.
    pub other: u64,
}

/// One line of `memory export --jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ExportRecord {
    /// First line: what wrote the file.
    Header {
        /// Memory schema version.
        schema_version: i64,
        /// Always `autotriage`.
        tool: String,
    },
    /// An issue.
    Issue {
        /// The issue.
        #[serde(flatten)]
        issue: Box<Issue>,
        /// When memory last saw it.
        seen_at: String,
    },
    /// A triage result.
    Triage {
        /// Repository.
        repo: String,
        /// Issue number.
        number: u64,
        /// The run that made it.
        run_id: Option<String>,
        /// When.
        created_at: String,
        /// The result document.
        result: serde_json::Value,
    },
    /// A run.
    Run {
        /// Its `run.json`.
        meta: Box<RunMeta>,
    },
    /// A fix: the files a patch for an issue changed, and what became of it.
    Fix {
        /// The fix.
        #[serde(flatten)]
        fix: FixRecord,
    },
    /// Learned state (trained models, settings learned from outcomes).
    Kv {
        /// Key.
        key: String,
        /// Value.
        value: serde_json::Value,
        /// When.
        updated_at: String,
    },
}

/// The files a fix of an issue changed: the prior that similar issues are fixed in
/// the same places.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixRecord {
    /// Repository.
    pub repo: String,
    /// Issue number.
    pub number: u64,
    /// The run (or PR) that made it.
    pub run_id: String,
    /// Paths changed.
    pub files: Vec<String>,
    /// `published`, `passed`, `failed`, `merged`, `rejected`…
    pub verdict: String,
    /// The pull request, when one exists.
    #[serde(default)]
    pub pr_url: Option<String>,
    /// When.
    pub created_at: String,
    /// The branch it was published on (`autotriage/issue-N`, or `-2`… when that name
    /// held someone else's work).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The commits we made for it: a branch whose commits past the base are all in
    /// this list is ours to update.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<String>,
}

/// The memory backend interface.
pub trait Memory {
    /// Group the writes that follow into one transaction until [`Memory::end_batch`]
    /// (many small writes, one commit). Each write stays atomic on its own.
    fn begin_batch(&mut self) -> Result<(), MemoryError>;
    /// Commit the writes since [`Memory::begin_batch`].
    fn end_batch(&mut self) -> Result<(), MemoryError>;
    /// Insert or replace issues in one transaction; `stop` is polled between records
    /// and, when it returns true, the transaction is rolled back.
    fn upsert_issues(
        &mut self,
        issues: &[Issue],
        stop: &dyn Fn() -> bool,
    ) -> Result<ImportCounts, MemoryError>;
    /// Import the records of an export in one transaction.
    fn import_records(
        &mut self,
        records: &[ExportRecord],
        stop: &dyn Fn() -> bool,
    ) -> Result<ImportCounts, MemoryError>;
    /// One issue.
    fn issue(&self, repo: &str, number: u64) -> Result<Option<Issue>, MemoryError>;
    /// Issues matching a filter, by repository and number.
    fn list(&self, filter: &ListFilter) -> Result<Vec<IssueSummary>, MemoryError>;
    /// Full-text search, best first.
    fn search(&self, text: &str, limit: usize) -> Result<Vec<SearchHit>, MemoryError>;
    /// Counts.
    fn stats(&self) -> Result<Stats, MemoryError>;
    /// Remove an issue and its triage results; false when it was not there.
    fn forget(&mut self, repo: &str, number: u64) -> Result<bool, MemoryError>;
    /// Record a triage result.
    fn record_triage(
        &mut self,
        repo: &str,
        number: u64,
        run_id: Option<&str>,
        result: &serde_json::Value,
    ) -> Result<(), MemoryError>;
    /// The triage results of an issue, oldest first.
    fn triage_results(
        &self,
        repo: &str,
        number: u64,
    ) -> Result<Vec<serde_json::Value>, MemoryError>;
    /// Record (or update) a run.
    fn record_run(&mut self, meta: &RunMeta) -> Result<(), MemoryError>;
    /// Every issue (for training and duplicate search).
    fn all_issues(&self) -> Result<Vec<Issue>, MemoryError>;
    /// Learned state by key.
    fn get_kv(&self, key: &str) -> Result<Option<serde_json::Value>, MemoryError>;
    /// Store learned state.
    fn put_kv(&mut self, key: &str, value: &serde_json::Value) -> Result<(), MemoryError>;
    /// Record (or replace) a fix.
    fn record_fix(&mut self, fix: &FixRecord) -> Result<(), MemoryError>;
    /// The fixes of an issue, oldest first.
    fn fixes(&self, repo: &str, number: u64) -> Result<Vec<FixRecord>, MemoryError>;
    /// Everything, as export records, in a stable order.
    fn export(&self) -> Result<Vec<ExportRecord>, MemoryError>;
    /// Where it lives, for messages: a file path, or `dynamodb:TABLE`.
    fn location(&self) -> String;
    /// Requests made so far, for a remote memory.
    fn io_counts(&self) -> Option<IoCounts> {
        None
    }
    /// Take the lease `key` for `holder` for `ttl_seconds`: `Ok(None)` when granted
    /// (it was free, had lapsed, or was `holder`'s already: a renewal), else the lease
    /// that stands. One conditional write, so two processes never both get it.
    fn acquire_lease(
        &mut self,
        key: &str,
        holder: &str,
        ttl_seconds: u64,
    ) -> Result<Option<Lease>, MemoryError>;
    /// Give the lease back when `holder` still has it.
    fn release_lease(&mut self, key: &str, holder: &str) -> Result<(), MemoryError>;
    /// The newest triage result of an issue with when it was made (RFC 3339).
    fn latest_triage(
        &self,
        repo: &str,
        number: u64,
    ) -> Result<Option<(String, serde_json::Value)>, MemoryError>;
}

/// The words memory search matches on: lower-cased runs of letters and digits, two
/// characters or more. Both backends use it, so they agree on what a query means.
pub(crate) fn search_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(str::to_lowercase)
        .collect()
}

/// Requests a remote memory made.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IoCounts {
    /// Read requests (GetItem, Query and Scan pages).
    pub reads: u64,
    /// Write requests (PutItem, DeleteItem).
    pub writes: u64,
    /// Time spent waiting on them, ms.
    pub millis: f64,
}

/// A lease another process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Who: `user@host pid N`.
    pub holder: String,
    /// When it lapses unless renewed, seconds since the Unix epoch.
    pub expires_at: i64,
}

/// Any memory backend, chosen in config.
pub type AnyMemory = Box<dyn Memory + Send>;
