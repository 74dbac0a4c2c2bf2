//! Memory in one SQLite file (rusqlite, bundled SQLite, WAL).
//!
//! The schema version lives in `PRAGMA user_version`; migrations run forward only, and
//! a file from a newer build, a file that is not SQLite, or a SQLite file that is not
//! ours is refused untouched. Full-text search is SQLite's FTS5 with BM25 ranking.

use crate::memory::Lease;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use super::{
    ExportRecord, FixRecord, ImportCounts, IssueSummary, ListFilter, Memory, MemoryError,
    SCHEMA_VERSION, SearchHit, Stats,
};
use crate::issue::{Issue, IssueState};
use crate::redact::Redactor;
use crate::runs::{RunMeta, now_rfc3339};

/// How long a command waits for another process's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_millis(3000);

const MIGRATIONS: &[&str] = &[
    // 1: issues with full-text search, triage results, runs, learned state.
    r#"
    CREATE TABLE issues (
        repo TEXT NOT NULL,
        number INTEGER NOT NULL,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        labels TEXT NOT NULL,
        state TEXT NOT NULL,
        author TEXT,
        author_association TEXT,
        created_at TEXT,
        url TEXT,
        comments TEXT NOT NULL,
        source TEXT,
        seen_at TEXT NOT NULL,
        PRIMARY KEY (repo, number)
    );
    CREATE VIRTUAL TABLE issues_fts USING fts5(
        title, body, labels, content='issues', content_rowid='rowid', tokenize='porter unicode61'
    );
    CREATE TRIGGER issues_ai AFTER INSERT ON issues BEGIN
        INSERT INTO issues_fts(rowid, title, body, labels) VALUES (new.rowid, new.title, new.body, new.labels);
    END;
    CREATE TRIGGER issues_ad AFTER DELETE ON issues BEGIN
        INSERT INTO issues_fts(issues_fts, rowid, title, body, labels) VALUES ('delete', old.rowid, old.title, old.body, old.labels);
    END;
    CREATE TRIGGER issues_au AFTER UPDATE ON issues BEGIN
        INSERT INTO issues_fts(issues_fts, rowid, title, body, labels) VALUES ('delete', old.rowid, old.title, old.body, old.labels);
        INSERT INTO issues_fts(rowid, title, body, labels) VALUES (new.rowid, new.title, new.body, new.labels);
    END;
    CREATE TABLE triage_results (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        repo TEXT NOT NULL,
        number INTEGER NOT NULL,
        run_id TEXT,
        created_at TEXT NOT NULL,
        result TEXT NOT NULL,
        UNIQUE (repo, number, run_id, created_at)
    );
    CREATE INDEX triage_results_issue ON triage_results (repo, number);
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        repo TEXT NOT NULL,
        number INTEGER NOT NULL,
        command TEXT NOT NULL,
        created_at TEXT NOT NULL,
        meta TEXT NOT NULL
    );
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    "#,
    // 2: reactions, for priority.
    "ALTER TABLE issues ADD COLUMN reactions INTEGER;",
    // 3: fixes, for the locate prior (files changed by fixes of similar issues).
    r#"
    CREATE TABLE fixes (
        repo TEXT NOT NULL,
        number INTEGER NOT NULL,
        run_id TEXT NOT NULL,
        files TEXT NOT NULL,
        verdict TEXT NOT NULL,
        pr_url TEXT,
        created_at TEXT NOT NULL,
        PRIMARY KEY (repo, number, run_id)
    );
    "#,
    // 4: the branch and commits a fix published, so later runs know which are ours.
    "ALTER TABLE fixes ADD COLUMN branch TEXT; ALTER TABLE fixes ADD COLUMN commits TEXT NOT NULL DEFAULT '[]';",
];

/// Memory in a SQLite file.
pub struct SqliteMemory {
    conn: Connection,
    path: PathBuf,
    redactor: Redactor,
}

impl std::fmt::Debug for SqliteMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteMemory")
            .field("path", &self.path)
            .finish()
    }
}

/// Whether opening may create the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the file (and its folder) when missing.
    Create,
    /// Never create: a missing file reads as an empty memory.
    ReadOnly,
}

impl SqliteMemory {
    /// Open (or create) the memory at `path`.
    pub fn open(path: &Path, mode: OpenMode, redactor: Redactor) -> Result<Self, MemoryError> {
        // A missing or empty file reads as an empty memory without being written to.
        let exists = path.exists()
            && (mode == OpenMode::Create || std::fs::metadata(path).is_ok_and(|m| m.len() > 0));
        if exists {
            check_header(path)?;
        }
        let conn = if !exists && mode == OpenMode::ReadOnly {
            Connection::open_in_memory().map_err(|e| db_err(path, e))?
        } else {
            if let Some(dir) = path.parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|e| MemoryError::Database {
                    path: path.to_path_buf(),
                    detail: format!("cannot create folder {}: {e}", dir.display()),
                })?;
            }
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            Connection::open_with_flags(path, flags).map_err(|e| db_err(path, e))?
        };
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| db_err(path, e))?;
        let mut memory = Self {
            conn,
            path: path.to_path_buf(),
            redactor,
        };
        memory.prepare()?;
        Ok(memory)
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> MemoryError {
        db_err(&self.path, e)
    }

    fn prepare(&mut self) -> Result<(), MemoryError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if version > SCHEMA_VERSION {
            return Err(MemoryError::NewerSchema {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == 0 {
            let tables: i64 = self
                .conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(|e| self.err(e))?;
            if tables > 0 {
                return Err(MemoryError::Corrupt {
                    path: self.path.clone(),
                    detail: "it is a SQLite database, but not one autotriage wrote".into(),
                });
            }
        }
        if version < SCHEMA_VERSION {
            self.conn
                .pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| self.err(e))?;
            let tx = self.conn.transaction().map_err(|e| db_err(&self.path, e))?;
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                tx.execute_batch(sql).map_err(|e| db_err(&self.path, e))?;
                tx.pragma_update(None, "user_version", (i + 1) as i64)
                    .map_err(|e| db_err(&self.path, e))?;
            }
            tx.commit().map_err(|e| db_err(&self.path, e))?;
        }
        // WAL + NORMAL: a commit survives a crash of this process, and one small write
        // per triaged issue stays cheap.
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn upsert_one(
        tx: &rusqlite::Savepoint<'_>,
        issue: &Issue,
        seen_at: &str,
        redactor: &Redactor,
    ) -> rusqlite::Result<bool> {
        let existed: bool = tx
            .query_row(
                "SELECT 1 FROM issues WHERE repo = ?1 AND number = ?2",
                params![issue.repo, issue.number],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        // Every text field is redacted, the whole issue at once (as the run store does).
        let issue = &redactor.redact_value(&redactor.redact_issue(issue));
        let labels = serde_json::to_string(&issue.labels).unwrap_or_else(|_| "[]".into());
        let comments = serde_json::to_string(&issue.comments).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "INSERT INTO issues (repo, number, title, body, labels, state, author, author_association, created_at, url, comments, source, seen_at, reactions)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (repo, number) DO UPDATE SET title = excluded.title, body = excluded.body, labels = excluded.labels,
               state = excluded.state, author = excluded.author, author_association = excluded.author_association,
               created_at = excluded.created_at, url = excluded.url, comments = excluded.comments, source = excluded.source,
               seen_at = excluded.seen_at, reactions = excluded.reactions",
            params![
                issue.repo,
                issue.number,
                issue.title,
                issue.body,
                labels,
                issue.state.as_str(),
                issue.author,
                issue.author_association,
                issue.created_at,
                issue.url,
                comments,
                issue.source,
                seen_at,
                issue.reactions
            ],
        )?;
        Ok(!existed)
    }

    fn row_to_issue(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Issue, String)> {
        let labels: String = row.get("labels")?;
        let comments: String = row.get("comments")?;
        let state: String = row.get("state")?;
        Ok((
            Issue {
                repo: row.get("repo")?,
                number: row.get("number")?,
                title: row.get("title")?,
                body: row.get("body")?,
                labels: serde_json::from_str(&labels).unwrap_or_default(),
                state: IssueState::parse(&state).unwrap_or_default(),
                author: row.get("author")?,
                author_association: row.get("author_association")?,
                created_at: row.get("created_at")?,
                comments: serde_json::from_str(&comments).unwrap_or_default(),
                url: row.get("url")?,
                source: row.get("source")?,
                reactions: row.get("reactions")?,
                trigger_label_added_by: None,
                locked: false,
            },
            row.get("seen_at")?,
        ))
    }

    fn summary(issue: &Issue) -> IssueSummary {
        IssueSummary {
            reference: issue.reference(),
            title: issue.title.clone(),
            state: issue.state.as_str().into(),
            labels: issue.labels.clone(),
        }
    }
}

fn check_header(path: &Path) -> Result<(), MemoryError> {
    let mut header = [0u8; 16];
    let mut file = std::fs::File::open(path).map_err(|e| MemoryError::Database {
        path: path.to_path_buf(),
        detail: format!("cannot open: {e}"),
    })?;
    let n = file.read(&mut header).map_err(|e| MemoryError::Database {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if n == 0 {
        return Ok(());
    }
    if n < 16 || &header != b"SQLite format 3\0" {
        return Err(MemoryError::Corrupt {
            path: path.to_path_buf(),
            detail: "it is not a SQLite database".into(),
        });
    }
    Ok(())
}

fn db_err(path: &Path, e: rusqlite::Error) -> MemoryError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                return MemoryError::Locked {
                    path: path.to_path_buf(),
                    waited_ms: BUSY_TIMEOUT.as_millis() as u64,
                };
            }
            ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => {
                return MemoryError::Corrupt {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                };
            }
            _ => {}
        }
    }
    MemoryError::Database {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// An FTS5 query that ORs the words of free text (quoted, so no operator injection).
fn fts_query(text: &str) -> Option<String> {
    let mut words = super::search_words(text);
    words.sort();
    words.dedup();
    words.truncate(256);
    (!words.is_empty()).then(|| {
        words
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" OR ")
    })
}

impl SqliteMemory {
    /// Start a write: outside a batch, `BEGIN IMMEDIATE` takes the write lock up front,
    /// so a busy file is waited on (`BUSY_TIMEOUT`) instead of failing on a lock upgrade.
    /// Returns whether this call opened the transaction.
    fn begin_write(&self) -> Result<bool, MemoryError> {
        if self.conn.is_autocommit() {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| self.err(e))?;
            return Ok(true);
        }
        Ok(false)
    }

    /// End a write started by [`SqliteMemory::begin_write`].
    fn end_write<T>(&self, opened: bool, result: Result<T, MemoryError>) -> Result<T, MemoryError> {
        if opened {
            let sql = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            if let Err(e) = self.conn.execute_batch(sql) {
                return result.and(Err(self.err(e)));
            }
        }
        result
    }
}

impl SqliteMemory {
    fn upsert_issues_tx(
        &mut self,
        issues: &[Issue],
        stop: &dyn Fn() -> bool,
    ) -> Result<ImportCounts, MemoryError> {
        let path = self.path.clone();
        let redactor = self.redactor.clone();
        let tx = self.conn.savepoint().map_err(|e| db_err(&path, e))?;
        let seen_at = now_rfc3339();
        let mut counts = ImportCounts::default();
        for issue in issues {
            if stop() {
                drop(tx);
                return Err(MemoryError::Interrupted);
            }
            if Self::upsert_one(&tx, issue, &seen_at, &redactor).map_err(|e| db_err(&path, e))? {
                counts.inserted += 1;
            } else {
                counts.updated += 1;
            }
        }
        tx.commit().map_err(|e| db_err(&path, e))?;
        Ok(counts)
    }

    fn import_records_tx(
        &mut self,
        records: &[ExportRecord],
        stop: &dyn Fn() -> bool,
    ) -> Result<ImportCounts, MemoryError> {
        let path = self.path.clone();
        let redactor = self.redactor.clone();
        let tx = self.conn.savepoint().map_err(|e| db_err(&path, e))?;
        let mut counts = ImportCounts::default();
        for record in records {
            if stop() {
                drop(tx);
                return Err(MemoryError::Interrupted);
            }
            let res = match record {
                ExportRecord::Header { .. } => continue,
                ExportRecord::Issue { issue, seen_at } => Self::upsert_one(&tx, issue, seen_at, &redactor).map(|new| {
                    if new {
                        counts.inserted += 1
                    } else {
                        counts.updated += 1
                    }
                }),
                ExportRecord::Triage { repo, number, run_id, created_at, result } => tx
                    .execute(
                        "INSERT OR IGNORE INTO triage_results (repo, number, run_id, created_at, result) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![repo, number, run_id, created_at, result.to_string()],
                    )
                    .map(|n| counts.other += n as u64),
                ExportRecord::Run { meta } => tx
                    .execute(
                        "INSERT OR REPLACE INTO runs (run_id, repo, number, command, created_at, meta) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![meta.id, meta.repo, meta.number, meta.command, meta.created_at, serde_json::to_string(meta).unwrap_or_default()],
                    )
                    .map(|n| counts.other += n as u64),
                ExportRecord::Fix { fix } => Self::insert_fix(&tx, fix).map(|n| counts.other += n as u64),
                ExportRecord::Kv { key, value, updated_at } => tx
                    .execute(
                        "INSERT OR REPLACE INTO kv (key, value, updated_at) VALUES (?1, ?2, ?3)",
                        params![key, value.to_string(), updated_at],
                    )
                    .map(|n| counts.other += n as u64),
            };
            res.map_err(|e| db_err(&path, e))?;
        }
        tx.commit().map_err(|e| db_err(&path, e))?;
        Ok(counts)
    }

    fn insert_fix(conn: &Connection, fix: &FixRecord) -> rusqlite::Result<usize> {
        conn.execute(
            "INSERT OR REPLACE INTO fixes (repo, number, run_id, files, verdict, pr_url, created_at, branch, commits) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                fix.repo,
                fix.number,
                fix.run_id,
                serde_json::to_string(&fix.files).unwrap_or_else(|_| "[]".into()),
                fix.verdict,
                fix.pr_url,
                fix.created_at,
                fix.branch,
                serde_json::to_string(&fix.commits).unwrap_or_else(|_| "[]".into())
            ],
        )
    }

    fn read_fixes(&self, filter: Option<(&str, u64)>) -> Result<Vec<FixRecord>, MemoryError> {
        let sql = if filter.is_some() {
            "SELECT repo, number, run_id, files, verdict, pr_url, created_at, branch, commits FROM fixes WHERE repo = ?1 AND number = ?2 ORDER BY created_at, run_id"
        } else {
            "SELECT repo, number, run_id, files, verdict, pr_url, created_at, branch, commits FROM fixes ORDER BY repo, number, created_at, run_id"
        };
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let map = |r: &rusqlite::Row<'_>| {
            let files: String = r.get(3)?;
            Ok(FixRecord {
                repo: r.get(0)?,
                number: r.get(1)?,
                run_id: r.get(2)?,
                files: serde_json::from_str(&files).unwrap_or_default(),
                verdict: r.get(4)?,
                pr_url: r.get(5)?,
                created_at: r.get(6)?,
                branch: r.get(7)?,
                commits: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default(),
            })
        };
        let rows = match filter {
            Some((repo, number)) => stmt.query_map(params![repo, number], map),
            None => stmt.query_map([], map),
        }
        .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    fn forget_tx(&mut self, repo: &str, number: u64) -> Result<bool, MemoryError> {
        let path = self.path.clone();
        let tx = self.conn.savepoint().map_err(|e| db_err(&path, e))?;
        let n = tx
            .execute(
                "DELETE FROM issues WHERE repo = ?1 AND number = ?2",
                params![repo, number],
            )
            .map_err(|e| db_err(&path, e))?;
        tx.execute(
            "DELETE FROM triage_results WHERE repo = ?1 AND number = ?2",
            params![repo, number],
        )
        .map_err(|e| db_err(&path, e))?;
        tx.execute(
            "DELETE FROM fixes WHERE repo = ?1 AND number = ?2",
            params![repo, number],
        )
        .map_err(|e| db_err(&path, e))?;
        tx.commit().map_err(|e| db_err(&path, e))?;
        Ok(n > 0)
    }
}

impl Memory for SqliteMemory {
    fn begin_batch(&mut self) -> Result<(), MemoryError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err(e))
    }

    fn end_batch(&mut self) -> Result<(), MemoryError> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))
    }

    fn upsert_issues(
        &mut self,
        issues: &[Issue],
        stop: &dyn Fn() -> bool,
    ) -> Result<ImportCounts, MemoryError> {
        let opened = self.begin_write()?;
        let result = self.upsert_issues_tx(issues, stop);
        self.end_write(opened, result)
    }

    fn import_records(
        &mut self,
        records: &[ExportRecord],
        stop: &dyn Fn() -> bool,
    ) -> Result<ImportCounts, MemoryError> {
        let opened = self.begin_write()?;
        let result = self.import_records_tx(records, stop);
        self.end_write(opened, result)
    }

    fn issue(&self, repo: &str, number: u64) -> Result<Option<Issue>, MemoryError> {
        self.conn
            .query_row(
                "SELECT * FROM issues WHERE repo = ?1 AND number = ?2",
                params![repo, number],
                Self::row_to_issue,
            )
            .optional()
            .map(|o| o.map(|(i, _)| i))
            .map_err(|e| self.err(e))
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<IssueSummary>, MemoryError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT * FROM issues WHERE (?1 IS NULL OR repo = ?1) AND (?2 IS NULL OR state = ?2)
                 AND (?3 IS NULL OR EXISTS (SELECT 1 FROM json_each(issues.labels) WHERE lower(value) = lower(?3)))
                 ORDER BY repo, number LIMIT ?4",
            )
            .map_err(|e| self.err(e))?;
        let limit = filter.limit.map_or(-1, |l| l as i64);
        let rows = stmt
            .query_map(
                params![filter.repo, filter.state, filter.label, limit],
                Self::row_to_issue,
            )
            .map_err(|e| self.err(e))?;
        rows.map(|r| r.map(|(i, _)| Self::summary(&i)))
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    fn search(&self, text: &str, limit: usize) -> Result<Vec<SearchHit>, MemoryError> {
        let Some(query) = fts_query(text) else {
            return Ok(Vec::new());
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT i.*, bm25(issues_fts, 3.0, 1.0, 1.0) AS rank FROM issues_fts JOIN issues i ON i.rowid = issues_fts.rowid
                 WHERE issues_fts MATCH ?1 ORDER BY rank LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![query, limit as i64], |row| {
                let (issue, _) = Self::row_to_issue(row)?;
                let rank: f64 = row.get("rank")?;
                Ok((issue, rank))
            })
            .map_err(|e| self.err(e))?;
        rows.map(|r| {
            r.map(|(issue, rank)| {
                let relevance = (-rank).max(0.0);
                SearchHit {
                    issue: Self::summary(&issue),
                    score: relevance / (relevance + 10.0),
                }
            })
        })
        .collect::<Result<_, _>>()
        .map_err(|e| self.err(e))
    }

    fn stats(&self) -> Result<Stats, MemoryError> {
        let q = |sql: &str| -> Result<u64, MemoryError> {
            self.conn
                .query_row(sql, [], |r| r.get(0))
                .map_err(|e| self.err(e))
        };
        let mut stats = Stats {
            schema_version: self
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(|e| self.err(e))?,
            issues: q("SELECT count(*) FROM issues")?,
            open: q("SELECT count(*) FROM issues WHERE state = 'open'")?,
            closed: q("SELECT count(*) FROM issues WHERE state = 'closed'")?,
            labelled: q("SELECT count(*) FROM issues WHERE labels != '[]'")?,
            triage_results: q("SELECT count(*) FROM triage_results")?,
            runs: q("SELECT count(*) FROM runs")?,
            ..Default::default()
        };
        let mut stmt = self
            .conn
            .prepare("SELECT repo, count(*) FROM issues GROUP BY repo")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (repo, n) = row.map_err(|e| self.err(e))?;
            stats.repos.insert(repo, n);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT value, count(*) AS n FROM issues, json_each(issues.labels) GROUP BY value ORDER BY n DESC, value LIMIT 25")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (label, n) = row.map_err(|e| self.err(e))?;
            stats.labels.insert(label, n);
        }
        Ok(stats)
    }

    fn forget(&mut self, repo: &str, number: u64) -> Result<bool, MemoryError> {
        let opened = self.begin_write()?;
        let result = self.forget_tx(repo, number);
        self.end_write(opened, result)
    }

    fn record_triage(
        &mut self,
        repo: &str,
        number: u64,
        run_id: Option<&str>,
        result: &serde_json::Value,
    ) -> Result<(), MemoryError> {
        let mut result = result.clone();
        self.redactor.redact_json(&mut result);
        self.conn
            .execute(
                "INSERT OR IGNORE INTO triage_results (repo, number, run_id, created_at, result) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![repo, number, run_id, now_rfc3339(), result.to_string()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn triage_results(
        &self,
        repo: &str,
        number: u64,
    ) -> Result<Vec<serde_json::Value>, MemoryError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT result FROM triage_results WHERE repo = ?1 AND number = ?2 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![repo, number], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.map(|r| r.map(|s| serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)))
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    fn record_run(&mut self, meta: &RunMeta) -> Result<(), MemoryError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO runs (run_id, repo, number, command, created_at, meta) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![meta.id, meta.repo, meta.number, meta.command, meta.created_at, serde_json::to_string(meta).unwrap_or_default()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn all_issues(&self) -> Result<Vec<Issue>, MemoryError> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM issues ORDER BY repo, number")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], Self::row_to_issue)
            .map_err(|e| self.err(e))?;
        rows.map(|r| r.map(|(i, _)| i))
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    fn get_kv(&self, key: &str) -> Result<Option<serde_json::Value>, MemoryError> {
        let v: Option<String> = self
            .conn
            .query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(v.and_then(|s| serde_json::from_str(&s).ok()))
    }

    fn put_kv(&mut self, key: &str, value: &serde_json::Value) -> Result<(), MemoryError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO kv (key, value, updated_at) VALUES (?1, ?2, ?3)",
                params![key, value.to_string(), now_rfc3339()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn acquire_lease(
        &mut self,
        key: &str,
        holder: &str,
        ttl_seconds: u64,
    ) -> Result<Option<Lease>, MemoryError> {
        let now = chrono::Utc::now().timestamp();
        // Made on first use: an older memory file gains the table without a migration.
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL)",
            )
            .map_err(|e| self.err(e))?;
        let path = self.path.clone();
        let err = |e| db_err(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let current: Option<(String, i64)> = tx
            .query_row(
                "SELECT holder, expires_at FROM leases WHERE key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(err)?;
        if let Some((h, e)) = current
            && h != holder
            && e > now
        {
            return Ok(Some(Lease {
                holder: h,
                expires_at: e,
            }));
        }
        tx.execute(
            "INSERT OR REPLACE INTO leases (key, holder, expires_at) VALUES (?1, ?2, ?3)",
            params![key, holder, now + ttl_seconds as i64],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(None)
    }

    fn release_lease(&mut self, key: &str, holder: &str) -> Result<(), MemoryError> {
        let gone = self
            .conn
            .execute(
                "DELETE FROM leases WHERE key = ?1 AND holder = ?2",
                params![key, holder],
            )
            .map(|_| ());
        match gone {
            Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => {
                Ok(())
            }
            other => other.map_err(|e| self.err(e)),
        }
    }

    fn record_fix(&mut self, fix: &FixRecord) -> Result<(), MemoryError> {
        Self::insert_fix(&self.conn, fix)
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn fixes(&self, repo: &str, number: u64) -> Result<Vec<FixRecord>, MemoryError> {
        self.read_fixes(Some((repo, number)))
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn latest_triage(
        &self,
        repo: &str,
        number: u64,
    ) -> Result<Option<(String, serde_json::Value)>, MemoryError> {
        let mut stmt = self
            .conn
            .prepare("SELECT created_at, result FROM triage_results WHERE repo = ?1 AND number = ?2 ORDER BY id DESC LIMIT 1")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query_map(params![repo, number], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        match rows.next() {
            Some(Ok((at, text))) => Ok(serde_json::from_str(&text).ok().map(|v| (at, v))),
            Some(Err(e)) => Err(self.err(e)),
            None => Ok(None),
        }
    }

    fn export(&self) -> Result<Vec<ExportRecord>, MemoryError> {
        let mut out = vec![ExportRecord::Header {
            schema_version: SCHEMA_VERSION,
            tool: "autotriage".into(),
        }];
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM issues ORDER BY repo, number")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], Self::row_to_issue)
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (issue, seen_at) = row.map_err(|e| self.err(e))?;
            out.push(ExportRecord::Issue {
                issue: Box::new(issue),
                seen_at,
            });
        }
        let mut stmt = self
            .conn
            .prepare("SELECT repo, number, run_id, created_at, result FROM triage_results ORDER BY repo, number, created_at, run_id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let result: String = r.get(4)?;
                Ok(ExportRecord::Triage {
                    repo: r.get(0)?,
                    number: r.get(1)?,
                    run_id: r.get(2)?,
                    created_at: r.get(3)?,
                    result: serde_json::from_str(&result).unwrap_or(serde_json::Value::Null),
                })
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            out.push(row.map_err(|e| self.err(e))?);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT meta FROM runs ORDER BY run_id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        for row in rows {
            let text = row.map_err(|e| self.err(e))?;
            let meta: RunMeta = serde_json::from_str(&text).map_err(|e| MemoryError::Corrupt {
                path: self.path.clone(),
                detail: format!("a stored run does not parse: {e}"),
            })?;
            out.push(ExportRecord::Run {
                meta: Box::new(meta),
            });
        }
        for fix in self.read_fixes(None)? {
            out.push(ExportRecord::Fix { fix });
        }
        let mut stmt = self
            .conn
            .prepare("SELECT key, value, updated_at FROM kv ORDER BY key")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let value: String = r.get(1)?;
                Ok(ExportRecord::Kv {
                    key: r.get(0)?,
                    value: serde_json::from_str(&value).unwrap_or(serde_json::Value::Null),
                    updated_at: r.get(2)?,
                })
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            out.push(row.map_err(|e| self.err(e))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(n: u64, title: &str, labels: &[&str]) -> Issue {
        Issue {
            repo: "o/r".into(),
            number: n,
            title: title.into(),
            body: format!("body of {title}"),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            state: IssueState::Open,
            author: Some("a".into()),
            author_association: None,
            created_at: None,
            comments: vec![],
            url: None,
            source: None,
            reactions: None,
            trigger_label_added_by: None,
            locked: false,
        }
    }

    #[test]
    fn search_ranks_and_forget_removes() {
        let d = tempfile::tempdir().unwrap();
        let mut m = SqliteMemory::open(
            &d.path().join("m.sqlite3"),
            OpenMode::Create,
            Redactor::default(),
        )
        .unwrap();
        let c = m
            .upsert_issues(
                &[
                    issue(1, "Crash when parsing config", &["bug"]),
                    issue(2, "Add dark mode", &["enhancement"]),
                    issue(3, "Parser crash on empty config file", &["bug"]),
                ],
                &|| false,
            )
            .unwrap();
        assert_eq!(c.inserted, 3);
        let hits = m.search("config parser crash", 10).unwrap();
        let refs: Vec<&str> = hits.iter().map(|h| h.issue.reference.as_str()).collect();
        assert_eq!(refs, vec!["o/r#3", "o/r#1"]);
        assert!(hits[0].score > hits[1].score && hits[0].score < 1.0);
        assert_eq!(
            m.list(&ListFilter {
                label: Some("BUG".into()),
                ..Default::default()
            })
            .unwrap()
            .len(),
            2
        );
        assert!(m.forget("o/r", 3).unwrap());
        assert!(!m.forget("o/r", 3).unwrap());
        assert_eq!(m.search("parser", 10).unwrap().len(), 0);
        // Updating an issue keeps the index in step.
        m.upsert_issues(&[issue(1, "Renamed entirely", &[])], &|| false)
            .unwrap();
        assert!(m.search("crash", 10).unwrap().is_empty());
        assert_eq!(m.search("renamed", 10).unwrap().len(), 1);
    }

    #[test]
    fn stop_rolls_back_everything() {
        let d = tempfile::tempdir().unwrap();
        let mut m = SqliteMemory::open(
            &d.path().join("m.sqlite3"),
            OpenMode::Create,
            Redactor::default(),
        )
        .unwrap();
        let calls = std::cell::Cell::new(0);
        let err = m
            .upsert_issues(&[issue(1, "a", &[]), issue(2, "b", &[])], &|| {
                calls.set(calls.get() + 1);
                calls.get() > 1
            })
            .unwrap_err();
        assert!(matches!(err, MemoryError::Interrupted));
        assert_eq!(m.stats().unwrap().issues, 0);
    }
}
