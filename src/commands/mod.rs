//! Glue from flags to stages, and all terminal output. The only module that prints.

pub mod completions;
pub mod config;
pub mod eval;
pub mod fix;
pub mod init;
pub mod memory;
pub mod output;
pub mod pr;
pub mod runs;
pub mod triage;

use std::path::PathBuf;

use anyhow::Result;

use crate::cli::SourceArg;
use crate::cli::{Cli, Command, GlobalArgs};
use crate::config::{Config, Loaded, Locations, MemoryBackend, Overrides};
use crate::error::CommandError;
use crate::forge::Forge;
use crate::forge::github::{GithubForge, ListOptions};
use crate::forge::local::LocalForge;
use crate::issue::{Issue, IssueRef, RefContext, RepoId};
use crate::memory::Memory;
use crate::memory::sqlite::{OpenMode, SqliteMemory};
use crate::redact::Redactor;
use crate::runs::fs::FsRunStore;
use crate::workspace::Workspace;

pub use output::Output;

/// Everything a command needs: flags, config, where things live, output.
pub struct Ctx {
    /// Global flags.
    pub global: GlobalArgs,
    /// The current directory and its git facts.
    pub workspace: Workspace,
    /// The merged config with sources.
    pub loaded: Loaded,
    /// Secret redaction for everything written.
    pub redactor: Redactor,
    /// Terminal output.
    pub out: Output,
}

impl Ctx {
    /// The merged config.
    pub fn config(&self) -> &Config {
        &self.loaded.config
    }

    /// The repository `#N` refers to: `origin`, else config `repo`.
    pub fn default_repo(&self) -> Option<RepoId> {
        let api_host = self
            .config()
            .github
            .api_url
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or("")
            .to_lowercase();
        let github_origin = self.workspace.origin.clone().filter(|o| {
            o.host == "github.com"
                || api_host == o.host
                || api_host.strip_prefix("api.") == Some(o.host.as_str())
        });
        github_origin.or_else(|| {
            self.config()
                .repo
                .as_deref()
                .and_then(|r| r.split_once('/'))
                .map(|(o, n)| RepoId::github(o, n))
        })
    }

    /// What issue references resolve against.
    pub fn ref_context(&self) -> RefContext {
        RefContext {
            cwd: self.workspace.cwd.clone(),
            default_repo: self.default_repo(),
        }
    }

    /// The local forge with this config's CSV columns.
    pub fn local_forge(&self) -> LocalForge {
        LocalForge {
            default_repo: self
                .default_repo()
                .map_or_else(|| "local".to_string(), |r| r.to_string()),
            csv: self.config().sources.csv.clone(),
        }
    }

    /// The SQLite memory file in use.
    pub fn memory_path(&self) -> PathBuf {
        self.config()
            .memory
            .path
            .clone()
            .unwrap_or_else(|| self.workspace.default_memory_path())
    }

    /// Open memory. `OpenMode::ReadOnly` never creates a missing file.
    pub fn open_memory(&self, mode: OpenMode) -> Result<SqliteMemory> {
        match self.config().memory.backend {
            MemoryBackend::Sqlite => Ok(SqliteMemory::open(&self.memory_path(), mode, self.redactor.clone())?),
            MemoryBackend::Dynamodb => Err(CommandError::usage(format!(
                "memory backend `dynamodb` (set by {}) is not available in this build\n  fix: use the SQLite memory (memory.backend: sqlite, or --memory PATH)",
                self.loaded.sources.get("memory.backend").map_or("config", String::as_str)
            ))
            .into()),
        }
    }

    /// The run store.
    pub fn run_store(&self) -> FsRunStore {
        FsRunStore::new(self.workspace.runs_dir(), self.redactor.clone())
    }
}

/// The one issue behind a reference: a local file, memory, or GitHub (`from` says
/// which); a reference to many issues is a usage error.
pub(crate) fn resolve_one(
    raw: &str,
    r: &IssueRef,
    from: SourceArg,
    memory: &SqliteMemory,
    github: &mut Option<GithubForge>,
    ctx: &Ctx,
) -> Result<Issue> {
    match r {
        IssueRef::Remote { repo, number } => {
            if from != SourceArg::Github
                && let Some(i) = memory.issue(&repo.to_string(), *number)?
            {
                return Ok(i);
            }
            if from == SourceArg::Memory {
                return Err(CommandError::usage(format!(
                    "{raw}: {repo}#{number} is not in memory\n  fix: import it (`autotriage memory import FILE`) or read it from GitHub (--from github, with GITHUB_TOKEN)"
                ))
                .into());
            }
            if github.is_none() {
                let mut g = GithubForge::new(
                    &ctx.config().github.api_url,
                    ctx.config().retry.max_wait,
                    ListOptions::default(),
                )?;
                g.trigger_label = ctx.config().trust.trigger_label.clone();
                let out = ctx.out.clone();
                g.on_wait = Box::new(move |m| out.info(m));
                *github = Some(g);
            }
            match github.as_ref() {
                Some(g) => Ok(g.issue(repo, *number)?),
                None => Err(CommandError::failure("the GitHub forge could not be made").into()),
            }
        }
        IssueRef::Repo(_) | IssueRef::Dir(_) => Err(CommandError::usage(format!(
            "{raw}: this command works on one issue per reference, and this names many\n  fix: give owner/repo#N, #N, an issue URL, or a file holding one issue"
        ))
        .into()),
        _ => {
            let mut batch = ctx.local_forge().read(r)?;
            if batch.len() != 1 {
                return Err(CommandError::usage(format!(
                    "{raw}: holds {} issues, and this command works on one per reference\n  fix: pick one record, e.g. {raw}#1",
                    batch.len()
                ))
                .into());
            }
            match batch.pop() {
                Some(Ok(issue)) => Ok(issue),
                Some(Err(e)) => Err(CommandError::usage(format!("{}: {}", e.location, e.message)).into()),
                None => Err(CommandError::usage(format!("{raw}: no issue")).into()),
            }
        }
    }
}

/// Parse nothing, run the command, return what `main` maps to an exit code.
pub fn run(cli: Cli, overrides: Overrides) -> Result<()> {
    let cwd = std::env::current_dir()
        .map_err(|e| CommandError::failure(format!("cannot read the current directory: {e}")))?;
    let workspace = Workspace::discover(&cwd);
    let out = Output::new(&cli.global);
    match cli.command {
        Command::Completions(args) => return completions::run(&args, &out),
        Command::Init(args) => return init::run(&args, &cli.global, &workspace, &out),
        _ => {}
    }
    let loaded = crate::config::load(&Locations::from_env(cwd), &overrides)?;
    // Configured secret variables, and every model entry's key variable.
    let secret_vars: Vec<String> = loaded
        .config
        .redact
        .secret_vars
        .iter()
        .cloned()
        .chain(
            loaded
                .config
                .models
                .values()
                .filter_map(|m| m.api_key_env.clone()),
        )
        .collect();
    let redactor = Redactor::from_env(&secret_vars);
    let out = out.with_redactor(redactor.clone());
    let ctx = Ctx {
        global: cli.global,
        workspace,
        loaded,
        redactor,
        out,
    };
    match cli.command {
        Command::Triage(args) => triage::run(&args, &ctx),
        Command::Fix(args) => fix::run(&args, &ctx),
        Command::Eval(cmd) => eval::run(cmd, &ctx),
        Command::Pr(args) => pr::run(&args, &ctx),
        Command::Memory(cmd) => memory::run(cmd, &ctx),
        Command::Runs(cmd) => runs::run(cmd, &ctx),
        Command::Config(cmd) => config::run(cmd, &ctx),
        Command::Completions(_) | Command::Init(_) => Ok(()),
    }
}
