//! The run store as a folder: `.autotriage/runs/<run-id>/`.
//!
//! Every file is written to a temporary file in the same folder and renamed into
//! place, so a crash never leaves a half-written file; `events.jsonl` is appended one
//! whole line per write. One run per issue at a time: a lock file under
//! `.autotriage/locks/`, held with an OS lock so a crashed process never leaves it
//! stuck.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{
    Event, RUN_SCHEMA_VERSION, RunDetail, RunMeta, RunStoreError, StageRecord, StageStatus,
    now_rfc3339,
};
use crate::redact::Redactor;

/// The folder-backed run store.
#[derive(Debug, Clone)]
pub struct FsRunStore {
    /// `.autotriage/runs`.
    pub root: PathBuf,
    /// Applied to everything written.
    pub redactor: Redactor,
    /// The bucket every file is also written to, and runs are read from.
    pub remote: Option<std::sync::Arc<super::s3::S3Runs>>,
}

/// An open run: its folder, its metadata and the issue lock.
#[derive(Debug)]
pub struct Run {
    /// The run folder.
    pub dir: PathBuf,
    /// `run.json` as last written.
    pub meta: RunMeta,
    redactor: Redactor,
    remote: Option<std::sync::Arc<super::s3::S3Runs>>,
    _lock: File,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunStoreError + '_ {
    move |source| RunStoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Write `bytes` to `path` atomically (temp file in the same folder, then rename).
/// The folder must exist.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    // Keep a replaced file's mode; new files get the usual 0644, not tempfile's 0600.
    let perms = match std::fs::metadata(path) {
        Ok(m) => m.permissions(),
        Err(_) => {
            let mut p = tmp.as_file().metadata()?.permissions();
            #[cfg(unix)]
            std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o644);
            p
        }
    };
    tmp.as_file().set_permissions(perms)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:04x}", h.finish() & 0xffff)
}

fn slug(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    out.trim_matches('-').to_string()
}

impl FsRunStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: PathBuf, redactor: Redactor) -> Self {
        Self {
            root,
            redactor,
            remote: None,
        }
    }

    /// Keep runs in a bucket too (the team store): files are uploaded as written, and
    /// runs are listed and read from there.
    pub fn with_remote(mut self, remote: super::s3::S3Runs) -> Self {
        self.remote = Some(std::sync::Arc::new(remote));
        self
    }

    /// Where runs are listed from, for messages.
    pub fn location(&self) -> String {
        match &self.remote {
            Some(r) => r.location(),
            None => self.root.display().to_string(),
        }
    }

    fn locks_dir(&self) -> PathBuf {
        self.root.parent().unwrap_or(&self.root).join("locks")
    }

    fn lock(&self, repo: &str, number: u64) -> Result<File, RunStoreError> {
        let dir = self.locks_dir();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(format!("{}-{number}.lock", slug(repo)));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for the process that finds it held.
                let mut f = &file;
                let _ = file.set_len(0);
                let _ = f
                    .write_all(format!("{} since {}\n", super::holder(), now_rfc3339()).as_bytes());
                Ok(file)
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(RunStoreError::Busy {
                reference: format!("{repo}#{number}"),
                holder: format!(
                    "{} (lock {})",
                    std::fs::read_to_string(&path)
                        .ok()
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "another process".into()),
                    path.display()
                ),
                lapse: String::new(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
        }
    }

    /// Start a run for an issue: take its lock and make the folder. `run.json` is
    /// written at the first stage end or [`Run::checkpoint`] (one write instead of a
    /// rewrite per step); until then `runs list` does not show the run.
    pub fn begin(&self, repo: &str, number: u64, command: &str) -> Result<Run, RunStoreError> {
        let lock = self.lock(repo, number)?;
        let now = chrono::Utc::now();
        let name = repo.rsplit('/').next().unwrap_or(repo);
        let id = format!(
            "{}-{}-{number}-{}",
            now.format("%Y%m%dT%H%M%SZ"),
            slug(name),
            random_suffix()
        );
        let dir = self.root.join(&id);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let ts = now_rfc3339();
        let meta = RunMeta {
            schema_version: RUN_SCHEMA_VERSION,
            id,
            reference: format!("{repo}#{number}"),
            repo: repo.to_string(),
            number,
            command: command.to_string(),
            base_commit: None,
            cost_usd: None,
            created_at: ts.clone(),
            updated_at: ts,
            stages: Default::default(),
        };
        Ok(Run {
            dir,
            meta,
            redactor: self.redactor.clone(),
            remote: self.remote.clone(),
            _lock: lock,
        })
    }

    /// Open an existing run to add to it (a later stage, a resumed `fix`): take the
    /// issue's lock and read `run.json`. Accepts a unique prefix of the id.
    pub fn reopen(&self, id: &str) -> Result<Run, RunStoreError> {
        let dir = match &self.remote {
            Some(r) => {
                // A run started on another machine is copied here first.
                let id = self.resolve_remote(id)?;
                let dir = self.root.join(&id);
                // The bucket has the newest state when another machine went on with it.
                let local = read_meta(&dir.join("run.json")).ok();
                let remote: Option<RunMeta> = r
                    .get(&id, "run.json")?
                    .and_then(|b| serde_json::from_slice(&b).ok());
                let stale = match (&local, &remote) {
                    (None, _) => true,
                    (Some(l), Some(rm)) => rm.updated_at > l.updated_at,
                    (Some(_), None) => false,
                };
                if stale {
                    r.download(&id, &dir)?;
                }
                dir
            }
            None => self.resolve(id)?,
        };
        let meta = read_meta(&dir.join("run.json"))?;
        let lock = self.lock(&meta.repo, meta.number)?;
        Ok(Run {
            dir,
            meta,
            redactor: self.redactor.clone(),
            remote: self.remote.clone(),
            _lock: lock,
        })
    }

    /// Every run, newest first. Folders without a readable `run.json` are skipped.
    pub fn list(&self) -> Result<Vec<RunMeta>, RunStoreError> {
        if let Some(r) = &self.remote {
            return r.list();
        }
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.root)(e)),
        };
        let mut runs: Vec<RunMeta> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| read_meta(&e.path().join("run.json")).ok())
            .collect();
        runs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(runs)
    }

    /// The latest run of an issue.
    pub fn latest_for(&self, repo: &str, number: u64) -> Result<Option<RunMeta>, RunStoreError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|m| m.repo == repo && m.number == number))
    }

    /// A run's metadata and files. Accepts a unique prefix of the id.
    pub fn show(&self, id: &str) -> Result<RunDetail, RunStoreError> {
        if let Some(r) = &self.remote {
            let id = self.resolve_remote(id)?;
            let bytes = r.get(&id, "run.json")?.unwrap_or_default();
            let meta: RunMeta =
                serde_json::from_slice(&bytes).map_err(|e| RunStoreError::Corrupt {
                    path: format!("{}/{id}/run.json", r.location()),
                    message: e.to_string(),
                })?;
            return Ok(RunDetail {
                meta,
                files: r.files(&id)?,
            });
        }
        let dir = self.resolve(id)?;
        let meta = read_meta(&dir.join("run.json"))?;
        let mut files = Vec::new();
        collect_files(&dir, &dir, &mut files).map_err(io_err(&dir))?;
        files.sort();
        Ok(RunDetail { meta, files })
    }

    /// Read one file of a run.
    pub fn read_file(&self, id: &str, name: &str) -> Result<String, RunStoreError> {
        if let Some(r) = &self.remote {
            let id = self.resolve_remote(id)?;
            return match r.get(&id, name)? {
                Some(bytes) if !name.contains("..") => {
                    Ok(String::from_utf8_lossy(&bytes).into_owned())
                }
                _ => Err(RunStoreError::NoSuchFile {
                    id: id.clone(),
                    name: name.to_string(),
                    files: r
                        .files(&id)?
                        .into_iter()
                        .map(|(n, _)| n)
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            };
        }
        let dir = self.resolve(id)?;
        let mut files = Vec::new();
        collect_files(&dir, &dir, &mut files).map_err(io_err(&dir))?;
        files.sort();
        // Only a file of the run: no `..`, no absolute paths.
        if !files.iter().any(|(n, _)| n == name) {
            return Err(RunStoreError::NoSuchFile {
                id: id.to_string(),
                name: name.to_string(),
                files: files
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(io_err(&path))
    }

    /// The full id of a run in the bucket (a unique prefix is accepted).
    fn resolve_remote(&self, id: &str) -> Result<String, RunStoreError> {
        let matches: Vec<String> = self
            .list()?
            .into_iter()
            .map(|m| m.id)
            .filter(|m| m.starts_with(id) && !id.is_empty())
            .collect();
        if let Some(exact) = matches.iter().find(|m| *m == id) {
            return Ok(exact.clone());
        }
        match matches.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(RunStoreError::NotFound {
                id: id.to_string(),
                store: self.location(),
            }),
            many => Err(RunStoreError::Ambiguous {
                id: id.to_string(),
                matches: many.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            }),
        }
    }

    fn resolve(&self, id: &str) -> Result<PathBuf, RunStoreError> {
        let not_found = || RunStoreError::NotFound {
            id: id.to_string(),
            store: self.root.display().to_string(),
        };
        if id.is_empty() || id.contains('/') || id.contains("..") {
            return Err(not_found());
        }
        let exact = self.root.join(id);
        if exact.join("run.json").is_file() {
            return Ok(exact);
        }
        let matches: Vec<RunMeta> = self
            .list()?
            .into_iter()
            .filter(|m| m.id.starts_with(id))
            .collect();
        match matches.as_slice() {
            [one] => Ok(self.root.join(&one.id)),
            [] => Err(not_found()),
            many => Err(RunStoreError::Ambiguous {
                id: id.to_string(),
                matches: many
                    .iter()
                    .take(5)
                    .map(|m| m.id.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Remove runs created more than `days` days ago; runs whose issue is locked by a
    /// live process are kept. Returns the removed ids (with `dry_run`, the ids that
    /// would be removed).
    pub fn prune(&self, days: u64, dry_run: bool) -> Result<Vec<String>, RunStoreError> {
        let cutoff = chrono::Duration::try_days(days.min(36_500) as i64)
            .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let mut removed = Vec::new();
        for meta in self.list()? {
            let created = chrono::DateTime::parse_from_rfc3339(&meta.created_at)
                .map(|d| d.with_timezone(&chrono::Utc));
            if !matches!(created, Ok(c) if c <= cutoff) {
                continue;
            }
            let Ok(_lock) = self.lock(&meta.repo, meta.number) else {
                continue;
            };
            if !dry_run {
                if let Some(r) = &self.remote {
                    r.delete(&meta.id)?;
                }
                let dir = self.root.join(&meta.id);
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
                }
            }
            removed.push(meta.id);
        }
        // Folders of runs that died before their first save have no run.json.
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|t| chrono::DateTime::<chrono::Utc>::from(t) <= cutoff)
                    .unwrap_or(false);
                if path.is_dir() && !path.join("run.json").exists() && old {
                    if !dry_run {
                        std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
                    }
                    removed.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Ok(removed)
    }
}

fn collect_files(base: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = path
            .strip_prefix(base)
            .unwrap_or(&path)
            .display()
            .to_string();
        if name.starts_with(".tmp-") {
            continue;
        }
        if path.is_dir() {
            collect_files(base, &path, out)?;
        } else {
            out.push((name, entry.metadata()?.len()));
        }
    }
    Ok(())
}

fn read_meta(path: &Path) -> Result<RunMeta, RunStoreError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| RunStoreError::Corrupt {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

impl Run {
    /// The run id.
    pub fn id(&self) -> &str {
        &self.meta.id
    }

    fn save_meta(&mut self) -> Result<(), RunStoreError> {
        self.meta.updated_at = now_rfc3339();
        let meta = self.meta.clone();
        self.write_json("run.json", &meta)
    }

    /// Write `name` (e.g. `issue.json`) as pretty JSON, redacted, atomically.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), RunStoreError> {
        let path = self.dir.join(name);
        let mut v = serde_json::to_value(value).map_err(|e| RunStoreError::Corrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        self.redactor.redact_json(&mut v);
        let mut text = serde_json::to_string_pretty(&v).map_err(|e| RunStoreError::Corrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        text.push('\n');
        write_atomic(&path, text.as_bytes()).map_err(io_err(&path))?;
        self.upload(name, text.as_bytes())
    }

    /// Send a file just written to the bucket, when there is one.
    fn upload(&self, name: &str, bytes: &[u8]) -> Result<(), RunStoreError> {
        match &self.remote {
            Some(r) => r.put(&self.meta.id, name, bytes),
            None => Ok(()),
        }
    }

    /// Write `usage.json`: every model call of the run and their totals.
    pub fn write_usage(
        &self,
        calls: &[crate::model::usage::CallUsage],
    ) -> Result<(), RunStoreError> {
        let total_in: u64 = calls.iter().map(|c| c.input_tokens).sum();
        let total_out: u64 = calls.iter().map(|c| c.output_tokens).sum();
        let total_cost: f64 = calls.iter().map(|c| c.cost_usd).sum();
        self.write_json(
            "usage.json",
            &serde_json::json!({"calls": calls, "total": {"input_tokens": total_in, "output_tokens": total_out, "cost_usd": total_cost}}),
        )
    }

    /// Write a text file (a diff, `pr.md`), redacted, atomically.
    pub fn write_text(&self, name: &str, text: &str) -> Result<(), RunStoreError> {
        let path = self.dir.join(name);
        // `candidates/1.diff`: the subfolder is made on first use.
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let text = self.redactor.redact(text);
        write_atomic(&path, text.as_bytes()).map_err(io_err(&path))?;
        self.upload(name, text.as_bytes())
    }

    /// Append one event to `events.jsonl`, redacted.
    pub fn event(
        &self,
        stage: &str,
        kind: &str,
        message: &str,
        data: serde_json::Value,
    ) -> Result<(), RunStoreError> {
        let event = serde_json::to_value(Event {
            ts: now_rfc3339(),
            stage: stage.into(),
            kind: kind.into(),
            message: message.into(),
            data,
        })
        .unwrap_or_default();
        self.append_event(event)
    }

    /// Append one event, given as JSON (the pipeline's events), redacted.
    pub fn append_event(&self, event: serde_json::Value) -> Result<(), RunStoreError> {
        self.append_line("events.jsonl", event)
    }

    /// Append one JSON line, redacted, to a JSON-lines file of the run (`agent.jsonl`),
    /// flushed before it returns (and uploaded when the run has a remote).
    pub fn append_line(
        &self,
        name: &str,
        mut event: serde_json::Value,
    ) -> Result<(), RunStoreError> {
        self.redactor.redact_json(&mut event);
        let mut line = event.to_string();
        line.push('\n');
        let path = self.dir.join(name);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(line.as_bytes()).map_err(io_err(&path))?;
        drop(f);
        if self.remote.is_some() {
            let all = std::fs::read(&path).map_err(io_err(&path))?;
            self.upload(name, &all)?;
        }
        Ok(())
    }

    /// Mark a stage as started.
    pub fn stage_started(&mut self, stage: &str) -> Result<(), RunStoreError> {
        self.meta.stages.insert(
            stage.into(),
            StageRecord {
                status: StageStatus::Running,
                started_at: now_rfc3339(),
                finished_at: None,
                error: None,
            },
        );
        self.save_meta()
    }

    /// Mark a stage as finished, with its error when it failed.
    pub fn stage_finished(
        &mut self,
        stage: &str,
        error: Option<&str>,
    ) -> Result<(), RunStoreError> {
        let now = now_rfc3339();
        let error = error.map(|e| self.redactor.redact(e).into_owned());
        let record = self.meta.stages.entry(stage.into()).or_insert(StageRecord {
            status: StageStatus::Running,
            started_at: now.clone(),
            finished_at: None,
            error: None,
        });
        record.status = if error.is_some() {
            StageStatus::Failed
        } else {
            StageStatus::Done
        };
        record.finished_at = Some(now);
        record.error = error;
        self.save_meta()
    }

    /// Record what the run's model calls cost so far.
    pub fn set_cost(&mut self, usd: f64) -> Result<(), RunStoreError> {
        self.meta.cost_usd = Some((usd * 1e6).round() / 1e6);
        self.save_meta()
    }

    /// A text file the run wrote earlier, when there is one.
    pub fn read_text(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name)).ok()
    }

    /// Read a JSON file the run wrote earlier (a finished stage's output).
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<T, RunStoreError> {
        let path = self.dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        serde_json::from_str(&text).map_err(|e| RunStoreError::Corrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Record the base commit the run works from.
    pub fn set_base_commit(&mut self, commit: &str) -> Result<(), RunStoreError> {
        self.meta.base_commit = Some(commit.into());
        self.save_meta()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_blocks_second_run_of_same_issue() {
        let d = tempfile::tempdir().unwrap();
        let store = FsRunStore::new(d.path().join("runs"), Redactor::default());
        let run = store.begin("o/r", 1, "triage").unwrap();
        let err = store.begin("o/r", 1, "triage").unwrap_err();
        assert!(
            err.to_string().contains("another autotriage run of o/r#1"),
            "{err}"
        );
        assert!(store.begin("o/r", 2, "triage").is_ok());
        drop(run);
        assert!(store.begin("o/r", 1, "triage").is_ok());
    }

    #[test]
    fn run_files_and_prune() {
        let d = tempfile::tempdir().unwrap();
        let store = FsRunStore::new(d.path().join("runs"), Redactor::default());
        let mut run = store.begin("o/widgets", 12, "triage").unwrap();
        assert!(run.id().contains("-widgets-12-"), "{}", run.id());
        run.stage_started("triage").unwrap();
        run.write_json(
            "triage.json",
            &serde_json::json!({"token": "ghp_abcdefghijklmnopqrstuvwxyz0123456789"}),
        )
        .unwrap();
        run.event("triage", "decision", "done", serde_json::Value::Null)
            .unwrap();
        run.stage_finished("triage", None).unwrap();
        let id = run.id().to_string();
        drop(run);
        let detail = store.show(&id[..20]).unwrap();
        assert_eq!(detail.meta.stages["triage"].status, StageStatus::Done);
        let names: Vec<&str> = detail.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["events.jsonl", "run.json", "triage.json"]);
        assert!(
            !store
                .read_file(&id, "triage.json")
                .unwrap()
                .contains("ghp_")
        );
        assert!(store.prune(1, false).unwrap().is_empty());
        assert_eq!(store.prune(0, false).unwrap(), vec![id]);
        assert!(store.list().unwrap().is_empty());
    }
}
