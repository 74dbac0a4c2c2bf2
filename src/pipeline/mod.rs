//! The agent's flow without a terminal: a triage job and a fix job run from a job
//! description and their dependencies, and report through a [`Sink`]. Nothing here
//! prints, prompts or reads a flag: the CLI (`commands/`), and next the server, the
//! Lambda handlers and the Action, are front-ends that build jobs and render events.
//!
//! - [`triage`]: decide (offline, model, or both) and record one issue, optionally
//!   writing labels and a comment back; a batch of them in input order.
//! - [`fix`]: triage → trust gate → locate → repair → test → choose → publish, each
//!   stage written to the run as it finishes, resumable, under a budget.
//! - [`test`] and [`publish`]: the test and publish stages, shared with the `test` and
//!   `pr` front-ends.

mod agent;
pub mod events;
pub mod fix;
pub mod publish;
pub mod reproduce;
mod rounds;
pub mod test;
pub mod triage;

use std::path::PathBuf;

pub use events::{Emitter, Event, RecordingSink, Review, ReviewAnswer, Sink, What};

use crate::config::Config;
use crate::error::{CommandError, ErrorKind, HasKind};
use crate::memory::AnyMemory;
use crate::memory::sqlite::OpenMode;
use crate::redact::Redactor;
use crate::runs::fs::FsRunStore;

/// The backends a job writes to: memory and the run store. The front-end picks them
/// (SQLite or DynamoDB; the run folder, with S3 or not).
pub trait Backends: Sync {
    /// Open the memory (`ReadOnly` never creates a missing one).
    fn open_memory(&self, mode: OpenMode) -> anyhow::Result<AnyMemory>;
    /// Open the run store.
    fn open_runs(&self) -> anyhow::Result<FsRunStore>;
}

/// What every job runs with: the merged config, the redactor, where caches live, and
/// the backends.
pub struct Deps<'a> {
    /// The merged config.
    pub config: &'a Config,
    /// Redaction for everything written.
    pub redactor: &'a Redactor,
    /// State kept between runs (the code index).
    pub state_dir: PathBuf,
    /// Caches (test worktrees, baselines, build caches).
    pub cache_dir: PathBuf,
    /// Memory and runs.
    pub backends: &'a dyn Backends,
    /// Act on GitHub with this token and login (a GitHub App's installation token)
    /// instead of the environment's token.
    pub github_as: Option<GithubAs>,
}

/// A GitHub identity given to a job: a token and the login it writes as.
#[derive(Clone)]
pub struct GithubAs {
    /// The token.
    pub token: String,
    /// Its login (`<app>[bot]`).
    pub login: String,
}

impl<'a> Deps<'a> {
    /// The GitHub forge this job acts through.
    pub fn github(
        &self,
        list: crate::forge::github::ListOptions,
    ) -> Result<crate::forge::github::GithubForge, crate::forge::ForgeError> {
        match &self.github_as {
            Some(a) => crate::forge::github::GithubForge::from_config_with_token(
                self.config,
                list,
                a.token.clone(),
                &a.login,
            ),
            None => crate::forge::github::GithubForge::from_config(self.config, list),
        }
    }
}

/// The kind of an error chain: the first typed error in it decides; anything else is
/// a runtime failure. The binary maps the kind to an exit code.
pub fn error_kind(err: &anyhow::Error) -> ErrorKind {
    fn of<E: HasKind + std::error::Error + 'static>(
        cause: &(dyn std::error::Error + 'static),
    ) -> Option<ErrorKind> {
        cause.downcast_ref::<E>().map(HasKind::kind)
    }
    for cause in err.chain() {
        let kind = of::<CommandError>(cause)
            .or_else(|| of::<crate::config::ConfigError>(cause))
            .or_else(|| of::<crate::issue::RefError>(cause))
            .or_else(|| of::<crate::forge::ForgeError>(cause))
            .or_else(|| of::<crate::forge::github_pr::PrError>(cause))
            .or_else(|| of::<crate::memory::MemoryError>(cause))
            .or_else(|| of::<crate::runs::RunStoreError>(cause))
            .or_else(|| of::<crate::model::ModelError>(cause))
            .or_else(|| of::<crate::pr::PatchError>(cause))
            .or_else(|| of::<crate::locate::LocateError>(cause))
            .or_else(|| of::<crate::verify::VerifyError>(cause))
            .or_else(|| of::<crate::serve::queue::QueueError>(cause));
        if let Some(kind) = kind {
            return kind;
        }
    }
    ErrorKind::Runtime
}
