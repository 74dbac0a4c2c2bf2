//! What a job reports as it runs. One format for the terminal, the run's
//! `events.jsonl` and (next) the server: every event names its issue, its run, its
//! stage, says what happened in one human line, and carries its details under `kind`
//! and `data`.

use serde::{Deserialize, Serialize};

use crate::model::usage::CallUsage;
use crate::repair::candidates::Candidate;
use crate::runs::fs::Run;

/// One event of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When (RFC 3339, UTC).
    pub ts: String,
    /// The issue (`owner/repo#N`).
    pub issue: String,
    /// The run it belongs to, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// `triage`, `locate`, `repair`, `test`, `pr`, `forge`, or `job`.
    pub stage: String,
    /// What happened, in one line (redacted before it is written).
    pub message: String,
    /// What kind of event, with its details.
    #[serde(flatten)]
    pub what: What,
}

/// The kinds of event, with their details (`kind`, `data` in JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum What {
    /// A stage began.
    StageStarted,
    /// A stage ended; `error` when it failed.
    StageFinished {
        /// Why it failed.
        error: Option<String>,
    },
    /// An interrupted run is picked up after its last finished stage.
    Resumed {
        /// That stage.
        after: Option<String>,
    },
    /// Something read from outside (a forge, an index, a cache).
    Read(serde_json::Value),
    /// Something written outside the run (a branch, a comment, labels).
    Write(serde_json::Value),
    /// A model call and what it cost.
    Model(CallUsage),
    /// A decision and its grounds.
    Decision(serde_json::Value),
    /// A failure that the job records and goes on from.
    Error,
    /// Something the user should know; the job goes on.
    Warning,
    /// Information (a resumed run, a fetched commit).
    Info,
    /// Work under way (a spinner or a bar on a terminal); never written to the run.
    Progress {
        /// Steps done, when the work is counted.
        step: Option<u64>,
        /// Steps in all.
        of: Option<u64>,
    },
    /// The work under way is over; never written to the run.
    ProgressDone,
    /// The triage of the issue.
    Triaged {
        /// The whole triage (`triage.json`).
        triage: Box<crate::triage::Triage>,
        /// The issue's title.
        title: String,
        /// Taken from memory rather than decided again.
        reused: bool,
        /// What was written to GitHub (`triage --apply`).
        applied: Option<crate::forge::github::Applied>,
    },
    /// The files located for the fix.
    Located {
        /// The first ranked files.
        top: Vec<String>,
        /// Tokens of code in the context.
        context_tokens: usize,
    },
    /// The candidates of the repair stage.
    Candidates {
        /// Those that applied.
        applied: Vec<usize>,
        /// Those refused.
        refused: Vec<usize>,
        /// The one chosen for testing first.
        chosen: Option<usize>,
    },
    /// The test stage's verdict.
    Tested {
        /// `fixed`, `unproven`, `regression`, …
        verdict: String,
        /// The candidate chosen.
        chosen: Option<usize>,
        /// The best attempt when none was chosen.
        best: Option<usize>,
    },
    /// What was published.
    Published {
        /// The PR's URL (GitHub).
        url: Option<String>,
        /// The branch.
        branch: Option<String>,
        /// `created`, `updated`, `unchanged`, …
        status: String,
    },
    /// The job's spend so far.
    Spent {
        /// USD.
        usd: f64,
    },
    /// The job ended.
    Finished {
        /// The verdict, or the stage it stopped after.
        verdict: String,
        /// Why it failed.
        error: Option<String>,
    },
}

impl What {
    /// Whether the event is kept in the run's `events.jsonl` (progress is not).
    pub fn persisted(&self) -> bool {
        !matches!(self, What::Progress { .. } | What::ProgressDone)
    }
}

/// A candidate edited by a person at the review.
#[derive(Debug, Clone)]
pub struct Edited {
    /// The new diff.
    pub diff: String,
    /// Changed files with lines added and removed.
    pub files: Vec<(String, usize, usize)>,
    /// How each edit applied.
    pub edits: Vec<crate::repair::EditReport>,
}

/// The dry-run review question: which candidate, if any, goes on to the tests.
pub struct Review<'a> {
    /// The ranked files.
    pub located: &'a crate::locate::Located,
    /// The candidates (refused ones included; a front-end shows those that applied).
    pub candidates: &'a [Candidate],
    /// Applies a person's edit of a candidate to the base, or says why it does not.
    pub check_edit: &'a dyn Fn(&str) -> Result<Edited, String>,
}

/// The answer to a [`Review`].
#[derive(Debug, Clone)]
pub enum ReviewAnswer {
    /// No one reviewed (not a terminal, `--yes`, `--json`): the first that applied goes on.
    NotAsked,
    /// A person chose (`None`: rejected them all), possibly after editing it.
    Chosen {
        /// The candidate accepted.
        id: Option<usize>,
        /// Its edited form.
        edited: Option<Edited>,
    },
    /// The review could not be held (the prompt or the editor failed).
    Failed(String),
}

/// Where a job's events go, and who answers its questions. A front-end implements it:
/// the terminal renders events and prompts; a server logs them and never prompts.
pub trait Sink: Sync {
    /// One event, in the order the job emits them.
    fn emit(&self, event: &Event);

    /// The dry-run review. A non-interactive front-end answers [`ReviewAnswer::NotAsked`].
    fn review(&self, _question: &Review<'_>) -> ReviewAnswer {
        ReviewAnswer::NotAsked
    }

    /// Whether [`Sink::confirm`] puts the question to a person (then a forge is read
    /// first for a preview).
    fn asks(&self) -> bool {
        false
    }

    /// Whether to write `question` (a branch, a pull request), shown with `preview`. A
    /// non-interactive front-end answers yes: the flags already said what to do.
    fn confirm(&self, _preview: &str, _question: &str) -> bool {
        true
    }
}

/// A sink that keeps every event (for tests and for replaying a job's events).
#[derive(Default)]
pub struct RecordingSink {
    events: std::sync::Mutex<Vec<Event>>,
}

impl RecordingSink {
    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .map(|e| e.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl Sink for RecordingSink {
    fn emit(&self, event: &Event) {
        match self.events.lock() {
            Ok(mut e) => e.push(event.clone()),
            Err(p) => p.into_inner().push(event.clone()),
        }
    }
}

/// A sink that drops every event (a job whose caller only wants its outcome).
pub struct NullSink;

impl Sink for NullSink {
    fn emit(&self, _event: &Event) {}
}

/// Emits one issue's events: to the sink, and (persisted kinds) to the run's log.
pub struct Emitter<'a> {
    sink: &'a dyn Sink,
    issue: String,
}

impl<'a> Emitter<'a> {
    /// Events of `issue` into `sink`.
    pub fn new(sink: &'a dyn Sink, issue: impl Into<String>) -> Self {
        Self {
            sink,
            issue: issue.into(),
        }
    }

    /// The sink, for its questions.
    pub fn sink(&self) -> &'a dyn Sink {
        self.sink
    }

    /// Emit an event of `run` (written to its `events.jsonl` unless it is progress).
    pub fn run_event(
        &self,
        run: &Run,
        stage: &str,
        message: impl Into<String>,
        what: What,
    ) -> Result<(), crate::runs::RunStoreError> {
        let event = self.event(Some(run.id()), stage, message.into(), what);
        if event.what.persisted() {
            run.append_event(serde_json::to_value(&event).unwrap_or_default())?;
        }
        self.sink.emit(&event);
        Ok(())
    }

    /// Emit an event with no run (before there is one, or progress).
    pub fn say(&self, stage: &str, message: impl Into<String>, what: What) {
        let event = self.event(None, stage, message.into(), what);
        self.sink.emit(&event);
    }

    fn event(&self, run_id: Option<&str>, stage: &str, message: String, what: What) -> Event {
        Event {
            ts: crate::runs::now_rfc3339(),
            issue: self.issue.clone(),
            run_id: run_id.map(String::from),
            stage: stage.into(),
            message,
            what,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_the_run_log_format_and_read_back() {
        let e = Event {
            ts: "2026-11-30T00:00:00Z".into(),
            issue: "o/r#1".into(),
            run_id: Some("r1".into()),
            stage: "triage".into(),
            message: "engine offline".into(),
            what: What::Decision(serde_json::json!({"labels": ["bug"]})),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "decision");
        assert_eq!(v["data"]["labels"][0], "bug");
        assert_eq!(v["message"], "engine offline");
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
        let started = Event {
            what: What::StageStarted,
            ..e.clone()
        };
        let v = serde_json::to_value(&started).unwrap();
        assert_eq!(v["kind"], "stage_started");
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), started);
    }
}
