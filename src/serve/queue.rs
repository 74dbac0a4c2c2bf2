//! The durable job queue of `serve`: one SQLite file (WAL, `synchronous=FULL`), so a
//! delivery is on disk before GitHub gets its 2xx. Deliveries are remembered by their
//! `X-GitHub-Delivery` id (a redelivery of one done is not run again; of one that died,
//! it runs again); triage jobs of one issue waiting together become one; a job is
//! claimed with a lease that a heartbeat extends, so a worker that dies gives it back;
//! never two jobs of one issue run at once; failures retry with backoff and jitter until
//! `max_attempts`, then the job is a dead letter.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::route::JobSpec;
use crate::error::{ErrorKind, HasKind};

/// A queue failure.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The file could not be opened or written.
    #[error(
        "the queue {path}: {message}\n  fix: check that the folder is writable and no other program holds the file"
    )]
    Store {
        /// The file.
        path: String,
        /// What SQLite said.
        message: String,
    },
    /// No job with that id.
    #[error("no job {0} in the queue\n  fix: see `autotriage queue list`")]
    NoJob(i64),
}

impl HasKind for QueueError {
    fn kind(&self) -> ErrorKind {
        match self {
            QueueError::Store { .. } => ErrorKind::Runtime,
            QueueError::NoJob(_) => ErrorKind::NotFound,
        }
    }
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting (maybe until `not_before`).
    Queued,
    /// Claimed by a worker, under a lease.
    Running,
    /// Finished.
    Done,
    /// Failed `max_attempts` times: a dead letter.
    Dead,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "running" => JobState::Running,
            "done" => JobState::Done,
            "dead" => JobState::Dead,
            _ => JobState::Queued,
        }
    }
}

/// One job as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// Its id.
    pub id: i64,
    /// The last delivery folded into it.
    pub delivery: String,
    /// What to do.
    pub spec: JobSpec,
    /// `owner/repo#N`: jobs of one key never run at once.
    pub key: String,
    /// Its state.
    pub state: JobState,
    /// Attempts so far.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// Unix seconds it was queued.
    pub created_at: i64,
    /// Unix seconds it may run from.
    pub not_before: i64,
    /// Its SQS FIFO sequence number (the order SQS gave it within its issue's group),
    /// for the SQS front-ends' coalescing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
}

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// New jobs with these ids.
    Queued(Vec<i64>),
    /// Folded into a waiting job of the same issue.
    Coalesced(i64),
    /// Seen before and not dead: acknowledged, nothing to run.
    Duplicate,
    /// Seen before and dead: queued again.
    Retried(Vec<i64>),
}

/// The queue file.
pub struct Queue {
    conn: Connection,
    path: String,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Queue {
    /// Open (or create) the queue at `path`.
    pub fn open(path: &Path) -> Result<Self, QueueError> {
        let shown = path.display().to_string();
        let err = |e: rusqlite::Error| QueueError::Store {
            path: shown.clone(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| QueueError::Store {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS deliveries (
               id TEXT PRIMARY KEY, event TEXT NOT NULL, received_at INTEGER NOT NULL,
               outcome TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS jobs (
               id INTEGER PRIMARY KEY AUTOINCREMENT, delivery TEXT NOT NULL,
               kind TEXT NOT NULL, key TEXT NOT NULL, spec TEXT NOT NULL,
               state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
               not_before INTEGER NOT NULL, lease_until INTEGER, owner TEXT,
               created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, last_error TEXT);
             CREATE TABLE IF NOT EXISTS digests (
               digest TEXT PRIMARY KEY, delivery TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS job_deliveries (
               delivery TEXT NOT NULL, job INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, not_before);",
        )
        .map_err(err)?;
        Ok(Self { conn, path: shown })
    }

    fn err(&self, e: rusqlite::Error) -> QueueError {
        QueueError::Store {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Store a delivery and its jobs in one transaction (synced before it returns).
    /// Triage jobs wait `coalesce_seconds`; a triage of an issue already waiting is
    /// folded into that job.
    pub fn enqueue(
        &mut self,
        delivery: &str,
        digest: &str,
        event: &str,
        outcome: &str,
        specs: &[JobSpec],
        coalesce_seconds: u64,
    ) -> Result<Enqueued, QueueError> {
        let t = now();
        let path = self.path.clone();
        let err = |e: rusqlite::Error| QueueError::Store {
            path: path.clone(),
            message: e.to_string(),
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let seen: Option<String> = tx
            .query_row(
                "SELECT outcome FROM deliveries WHERE id = ?1",
                [delivery],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        // GitHub signs the body, not the delivery id: the same signed body under a new
        // id is a replay, and runs nothing.
        let replayed: Option<String> = tx
            .query_row(
                "SELECT delivery FROM digests WHERE digest = ?1",
                [digest],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        if seen.is_none() && replayed.is_some() {
            tx.commit().map_err(err)?;
            return Ok(Enqueued::Duplicate);
        }
        if seen.is_some() {
            // A redelivery: run again only what died.
            let dead: Vec<i64> = {
                let mut st = tx
                    .prepare(
                        "SELECT j.id FROM jobs j JOIN job_deliveries d ON d.job = j.id
                         WHERE d.delivery = ?1 AND j.state = 'dead'",
                    )
                    .map_err(err)?;
                st.query_map([delivery], |r| r.get(0))
                    .map_err(err)?
                    .collect::<Result<_, _>>()
                    .map_err(err)?
            };
            for id in &dead {
                tx.execute(
                    "UPDATE jobs SET state='queued', attempts=0, not_before=?2, updated_at=?2,
                     lease_until=NULL, owner=NULL WHERE id=?1",
                    params![id, t],
                )
                .map_err(err)?;
            }
            tx.commit().map_err(err)?;
            return Ok(if dead.is_empty() {
                Enqueued::Duplicate
            } else {
                Enqueued::Retried(dead)
            });
        }
        tx.execute(
            "INSERT INTO deliveries (id, event, received_at, outcome) VALUES (?1, ?2, ?3, ?4)",
            params![delivery, event, t, outcome],
        )
        .map_err(err)?;
        tx.execute(
            "INSERT OR IGNORE INTO digests (digest, delivery) VALUES (?1, ?2)",
            params![digest, delivery],
        )
        .map_err(err)?;
        let mut ids = Vec::new();
        let mut coalesced = None;
        for spec in specs {
            let key = spec.key();
            let kind = spec.kind();
            let text = serde_json::to_string(spec).unwrap_or_default();
            if kind == "triage" {
                let waiting: Option<i64> = tx
                    .query_row(
                        "SELECT id FROM jobs WHERE key=?1 AND kind='triage' AND state='queued'
                         ORDER BY id LIMIT 1",
                        [&key],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(err)?;
                if let Some(id) = waiting {
                    tx.execute(
                        "UPDATE jobs SET delivery=?2, updated_at=?3 WHERE id=?1",
                        params![id, delivery, t],
                    )
                    .map_err(err)?;
                    tx.execute(
                        "INSERT INTO job_deliveries (delivery, job) VALUES (?1, ?2)",
                        params![delivery, id],
                    )
                    .map_err(err)?;
                    coalesced = Some(id);
                    continue;
                }
            }
            let wait = if kind == "triage" {
                coalesce_seconds as i64
            } else {
                0
            };
            tx.execute(
                "INSERT INTO jobs (delivery, kind, key, spec, state, not_before, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?6)",
                params![delivery, kind, key, text, t + wait, t],
            )
            .map_err(err)?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO job_deliveries (delivery, job) VALUES (?1, ?2)",
                params![delivery, id],
            )
            .map_err(err)?;
            ids.push(id);
        }
        tx.commit().map_err(err)?;
        Ok(match (ids.is_empty(), coalesced) {
            (true, Some(id)) => Enqueued::Coalesced(id),
            _ => Enqueued::Queued(ids),
        })
    }

    /// Claim the next job that may run: queued and due, or running with an expired
    /// lease, and no other job of its issue running. The lease lasts `lease_seconds`.
    pub fn claim(
        &mut self,
        owner: &str,
        lease_seconds: u64,
        max_attempts: u32,
    ) -> Result<Option<Job>, QueueError> {
        let t = now();
        let path = self.path.clone();
        let err = |e: rusqlite::Error| QueueError::Store {
            path: path.clone(),
            message: e.to_string(),
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        // A job whose worker died at its last attempt (it crashed the process, say) is
        // a dead letter, not claimed again forever.
        tx.execute(
            "UPDATE jobs SET state='dead', lease_until=NULL, owner=NULL, updated_at=?1,
             last_error=COALESCE(last_error, 'its worker stopped during every attempt')
             WHERE state='running' AND lease_until < ?1 AND attempts >= ?2",
            params![t, max_attempts],
        )
        .map_err(err)?;
        let id: Option<i64> = tx
            .query_row(
                "SELECT j.id FROM jobs j
                 WHERE ((j.state='queued' AND j.not_before <= ?1)
                        OR (j.state='running' AND j.lease_until < ?1))
                   AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.key = j.key AND r.id != j.id
                                   AND r.state='running' AND r.lease_until >= ?1)
                 ORDER BY j.id LIMIT 1",
                [t],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        let Some(id) = id else {
            tx.commit().map_err(err)?;
            return Ok(None);
        };
        tx.execute(
            "UPDATE jobs SET state='running', attempts=attempts+1, lease_until=?2, owner=?3,
             updated_at=?4 WHERE id=?1",
            params![id, t + lease_seconds as i64, owner, t],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        self.show(id).map(Some)
    }

    /// Extend a running job's lease (the worker is alive). False when the lease is no
    /// longer `owner`'s (it expired and another worker took the job).
    pub fn heartbeat(
        &mut self,
        id: i64,
        owner: &str,
        lease_seconds: u64,
    ) -> Result<bool, QueueError> {
        let t = now();
        let n = self
            .conn
            .execute(
                "UPDATE jobs SET lease_until=?2, updated_at=?3 WHERE id=?1 AND owner=?4 AND state='running'",
                params![id, t + lease_seconds as i64, t, owner],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    /// The job finished (only the lease holder may say so). False when it was not
    /// `owner`'s any more.
    pub fn complete(&mut self, id: i64, owner: &str) -> Result<bool, QueueError> {
        let n = self
            .conn
            .execute(
                "UPDATE jobs SET state='done', lease_until=NULL, owner=NULL, last_error=NULL,
                 updated_at=?2 WHERE id=?1 AND owner=?3 AND state='running'",
                params![id, now(), owner],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    /// Give one job back unfinished, its attempt undone (shutdown, a budget wait).
    pub fn hand_back(
        &mut self,
        id: i64,
        owner: &str,
        not_before_secs: u64,
        note: &str,
    ) -> Result<bool, QueueError> {
        let t = now();
        let n = self
            .conn
            .execute(
                "UPDATE jobs SET state='queued', attempts=MAX(attempts-1, 0), lease_until=NULL,
                 owner=NULL, not_before=?3, last_error=?4, updated_at=?5
                 WHERE id=?1 AND owner=?2 AND state='running'",
                params![id, owner, t + not_before_secs as i64, note, t],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    /// The job failed: again after `retry_after` seconds (or backoff with jitter), or a
    /// dead letter after `max_attempts`, or at once when `permanent`.
    pub fn fail(
        &mut self,
        id: i64,
        owner: &str,
        error: &str,
        retry_after: Option<u64>,
        permanent: bool,
        max_attempts: u32,
    ) -> Result<JobState, QueueError> {
        let job = self.show(id)?;
        let t = now();
        let state = if permanent || job.attempts >= max_attempts {
            JobState::Dead
        } else {
            JobState::Queued
        };
        // 2, 4, 8 … s after attempts 1, 2, 3 (at most 10 min), plus up to a quarter more
        // so retries spread.
        let backoff = (1u64 << job.attempts.min(10)).min(600);
        let jitter = (t as u64 ^ id as u64) % (backoff / 4 + 1);
        let wait = retry_after.unwrap_or(backoff + jitter) as i64;
        self.conn
            .execute(
                "UPDATE jobs SET state=?2, last_error=?3, not_before=?4, lease_until=NULL,
                 owner=NULL, updated_at=?5 WHERE id=?1 AND owner=?6 AND state='running'",
                params![id, state.as_str(), error, t + wait, t, owner],
            )
            .map_err(|e| self.err(e))?;
        Ok(state)
    }

    /// Give back the leases `owner` holds (a shutdown that could not wait).
    pub fn release(&mut self, owner: &str) -> Result<usize, QueueError> {
        let n = self
            .conn
            .execute(
                "UPDATE jobs SET state='queued', attempts=MAX(attempts-1, 0), lease_until=NULL,
                 owner=NULL WHERE owner=?1 AND state='running'",
                [owner],
            )
            .map_err(|e| self.err(e))?;
        Ok(n)
    }

    /// Whether a delivery id was received.
    pub fn has_delivery(&self, id: &str) -> Result<bool, QueueError> {
        self.conn
            .query_row("SELECT 1 FROM deliveries WHERE id = ?1", [id], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| self.err(e))
    }

    /// One job.
    pub fn show(&self, id: i64) -> Result<Job, QueueError> {
        self.conn
            .query_row(
                "SELECT id, delivery, spec, key, state, attempts, last_error, created_at, not_before
                 FROM jobs WHERE id=?1",
                [id],
                row_to_job,
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or(QueueError::NoJob(id))
    }

    /// Jobs, newest first, in `state` (all when `None`).
    pub fn list(&self, state: Option<JobState>, limit: usize) -> Result<Vec<Job>, QueueError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, delivery, spec, key, state, attempts, last_error, created_at, not_before
                 FROM jobs WHERE (?1 IS NULL OR state = ?1) ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(
                params![state.map(JobState::as_str), limit as i64],
                row_to_job,
            )
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Jobs by state.
    pub fn depth(&self) -> Result<Vec<(String, i64)>, QueueError> {
        let mut st = self
            .conn
            .prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Queue a job again (a dead letter, or one done), from its first attempt.
    pub fn retry(&mut self, id: i64) -> Result<Job, QueueError> {
        self.show(id)?;
        self.conn
            .execute(
                "UPDATE jobs SET state='queued', attempts=0, not_before=?2, lease_until=NULL,
                 owner=NULL, updated_at=?2 WHERE id=?1 AND state != 'running'",
                params![id, now()],
            )
            .map_err(|e| self.err(e))?;
        self.show(id)
    }

    /// Remove a job that is not running.
    pub fn drop_job(&mut self, id: i64) -> Result<Job, QueueError> {
        let job = self.show(id)?;
        self.conn
            .execute("DELETE FROM jobs WHERE id=?1 AND state != 'running'", [id])
            .map_err(|e| self.err(e))?;
        Ok(job)
    }
}

fn row_to_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    let spec: String = r.get(2)?;
    let state: String = r.get(4)?;
    Ok(Job {
        id: r.get(0)?,
        delivery: r.get(1)?,
        spec: serde_json::from_str(&spec).unwrap_or(JobSpec::Unknown),
        key: r.get(3)?,
        state: JobState::parse(&state),
        attempts: r.get::<_, i64>(5)? as u32,
        last_error: r.get(6)?,
        created_at: r.get(7)?,
        not_before: r.get(8)?,
        sequence: None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn triage(n: u64) -> JobSpec {
        JobSpec::Triage {
            repo: "o/r".into(),
            number: n,
        }
    }

    #[test]
    fn deliveries_are_kept_once_coalesced_leased_and_dead_lettered() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(&dir.path().join("q.sqlite3")).unwrap();
        assert_eq!(
            q.enqueue("d1", "x1", "issues", "queued", &[triage(1)], 0)
                .unwrap(),
            Enqueued::Queued(vec![1])
        );
        assert_eq!(
            q.enqueue("d1", "x1", "issues", "queued", &[triage(1)], 0)
                .unwrap(),
            Enqueued::Duplicate
        );
        // An edit of the same issue while its triage waits: one job.
        assert_eq!(
            q.enqueue("d2", "x2", "issues", "queued", &[triage(1)], 0)
                .unwrap(),
            Enqueued::Coalesced(1)
        );
        q.enqueue(
            "d3",
            "x3",
            "issues",
            "queued",
            &[JobSpec::Fix {
                repo: "o/r".into(),
                number: 1,
                granted_by: None,
            }],
            0,
        )
        .unwrap();
        let a = q.claim("w1", 60, 2).unwrap().unwrap();
        assert_eq!(a.id, 1);
        // The fix of the same issue waits while its triage runs.
        assert!(q.claim("w2", 60, 2).unwrap().is_none());
        assert_eq!(
            q.fail(1, "w1", "502 from GitHub", Some(0), false, 2)
                .unwrap(),
            JobState::Queued
        );
        let again = q.claim("w1", 60, 2).unwrap().unwrap();
        assert_eq!((again.id, again.attempts), (1, 2));
        assert_eq!(
            q.fail(1, "w1", "502 from GitHub", Some(0), false, 2)
                .unwrap(),
            JobState::Dead
        );
        // A redelivery of a dead job's delivery runs it again.
        assert_eq!(
            q.enqueue("d1", "x1", "issues", "queued", &[triage(1)], 0)
                .unwrap(),
            Enqueued::Retried(vec![1])
        );
        // A lease that expires gives the job back.
        let b = q.claim("w1", 0, 5).unwrap().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let c = q.claim("w2", 60, 5).unwrap().unwrap();
        assert_eq!(b.id, c.id);
        // The first worker lost the lease: it can neither finish nor fail the job.
        assert!(!q.complete(c.id, "w1").unwrap());
        assert!(!q.heartbeat(c.id, "w1", 60).unwrap());
        assert!(q.heartbeat(c.id, "w2", 60).unwrap());
        assert!(q.complete(c.id, "w2").unwrap());
        // The same signed body under a new delivery id is a replay.
        assert_eq!(
            q.enqueue("d9", "x1", "issues", "queued", &[triage(1)], 0)
                .unwrap(),
            Enqueued::Duplicate
        );
    }
}
