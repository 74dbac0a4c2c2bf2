//! Glue from flags to stages, and all terminal output. The only module that prints.

pub mod action;
pub mod completions;
pub mod config;
pub mod eval;
pub mod fix;
pub mod init;
pub mod lambda;
pub mod memory;
pub mod output;
pub mod pr;
pub mod queue;
pub(crate) mod render;
pub mod runs;
pub mod serve;
mod service;
pub mod test;
pub mod triage;

use std::path::PathBuf;

use anyhow::Result;

use crate::cli::EngineArg;
use crate::model::registry;
use crate::model::replay::Recorder;
use crate::model::retry::RetryPolicy;
use crate::model::session::{REQUEST_TIMEOUT, Session};
use crate::model::usage::Budget;
use crate::triage::Engine;

use crate::cli::SourceArg;
use crate::cli::{Cli, Command, GlobalArgs};
use crate::config::{Config, Loaded, Locations, MemoryBackend, Overrides};
use crate::error::{CommandError, ErrorKind};
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

/// The kind of an error chain (see [`crate::pipeline::error_kind`]).
pub fn error_kind(err: &anyhow::Error) -> ErrorKind {
    crate::pipeline::error_kind(err)
}

impl crate::pipeline::Backends for Ctx {
    fn open_memory(&self, mode: OpenMode) -> Result<crate::memory::AnyMemory> {
        Ctx::open_memory(self, mode)
    }

    fn open_runs(&self) -> Result<FsRunStore> {
        self.run_store()
    }
}

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

    /// What pipeline jobs run with: this config, redactor, workspace and backends.
    pub fn deps(&self) -> crate::pipeline::Deps<'_> {
        crate::pipeline::Deps {
            config: self.config(),
            redactor: &self.redactor,
            state_dir: self.workspace.state_dir(),
            cache_dir: self.workspace.cache_dir(),
            backends: self,
            github_as: None,
        }
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
            redactor: self.redactor.clone(),
        }
    }

    /// The queue file of `serve` (`queue.path`, else beside the memory).
    pub fn queue_path(&self) -> PathBuf {
        self.config().queue.path.clone().unwrap_or_else(|| {
            self.memory_path().parent().map_or_else(
                || PathBuf::from("queue.sqlite3"),
                |d| d.join("queue.sqlite3"),
            )
        })
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
    pub fn open_memory(&self, mode: OpenMode) -> Result<crate::memory::AnyMemory> {
        match self.config().memory.backend {
            MemoryBackend::Sqlite => Ok(Box::new(SqliteMemory::open(
                &self.memory_path(),
                mode,
                self.redactor.clone(),
            )?)),
            MemoryBackend::Dynamodb => Ok(Box::new(self.dynamo_memory()?)),
        }
    }

    /// The DynamoDB memory of `memory.table` (connecting makes no request).
    pub fn dynamo_memory(&self) -> Result<crate::memory::dynamodb::DynamoMemory> {
        let m = &self.config().memory;
        let Some(table) = m.table.clone() else {
            return Err(CommandError::usage(
                "memory.backend is dynamodb, and memory.table is unset\n  fix: set memory.table, or pass --memory dynamodb:TABLE",
            )
            .into());
        };
        Ok(crate::memory::dynamodb::DynamoMemory::connect(
            &crate::memory::dynamodb::DynamoSettings {
                table,
                region: m.region.clone(),
                endpoint_url: m.endpoint_url.clone(),
            },
            self.redactor.clone(),
        )?)
    }

    /// The run store: the run folder, and with `runs.backend: s3` the bucket too.
    pub fn run_store(&self) -> Result<FsRunStore> {
        let local = FsRunStore::new(self.workspace.runs_dir(), self.redactor.clone());
        match self.config().runs.backend {
            crate::config::RunsBackend::Fs => Ok(local),
            crate::config::RunsBackend::S3 => Ok(local.with_remote(self.s3_runs()?)),
        }
    }

    /// The S3 run store of `runs.bucket`.
    pub fn s3_runs(&self) -> Result<crate::runs::s3::S3Runs> {
        let r = &self.config().runs;
        let Some(bucket) = r.bucket.clone() else {
            return Err(CommandError::usage(
                "runs.backend is s3, and runs.bucket is unset\n  fix: set runs.bucket in autotriage.yaml",
            )
            .into());
        };
        Ok(crate::runs::s3::S3Runs::connect(
            &crate::runs::s3::S3Settings {
                bucket,
                prefix: r.prefix.clone().unwrap_or_else(|| "autotriage/runs".into()),
                region: r.region.clone(),
                endpoint_url: r.endpoint_url.clone(),
            },
        )?)
    }
}

/// True when the issue lives on GitHub, so its live state is what counts: it was read
/// from the API (its source is a URL), came from a `gh issue list --json` export, or
/// its origin is unknown (stored before sources were kept). Only issues from local
/// Markdown or CSV files are taken as they are.
pub(crate) fn from_github(issue: &Issue) -> bool {
    match issue.source.as_deref() {
        None => true,
        Some(s) => {
            s.starts_with("https://")
                || s.starts_with("http://")
                || s.rsplit_once('#')
                    .is_some_and(|(file, _)| file.to_ascii_lowercase().ends_with(".json"))
        }
    }
}

/// The one issue behind a reference: a local file, memory, or GitHub (`from` says
/// which); a reference to many issues is a usage error.
pub(crate) fn resolve_one(
    raw: &str,
    r: &IssueRef,
    from: SourceArg,
    memory: &dyn Memory,
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
                let mut g = GithubForge::from_config(ctx.config(), ListOptions::default())?;
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

/// The checkout to work in: `--repo-dir`; else the current one when it is the issue's
/// repository (or the issue is local); else, for a GitHub issue outside any checkout,
/// a clone cached under the cache folder (`github.clone_url`), fetched when reused.
pub(crate) fn checkout(
    issue: &Issue,
    repo_dir: Option<&std::path::Path>,
    ctx: &Ctx,
) -> Result<(std::path::PathBuf, git2::Repository)> {
    let wanted = crate::pipeline::triage::github_repo(&issue.repo);
    let dir = match repo_dir {
        Some(d) => d.to_path_buf(),
        None => match (&ctx.workspace.git_top, &wanted) {
            (Some(top), _) => {
                if let Some(origin) = &ctx.workspace.origin
                    && let Some(w) = &wanted
                    && !w.to_string().eq_ignore_ascii_case(&origin.to_string())
                {
                    return Err(CommandError::usage(format!(
                        "{}: this checkout is {origin} (its origin), not {}\n  fix: run it inside a checkout of {}, or pass --repo-dir DIR",
                        issue.reference(),
                        issue.repo,
                        issue.repo
                    ))
                    .into());
                }
                top.clone()
            }
            // Only issues read from GitHub: a local file's `repo:` may name no real repository.
            (None, Some(w))
                if issue
                    .source
                    .as_deref()
                    .is_none_or(|s| s.starts_with("https://") || s.starts_with("http://")) =>
            {
                return cached_clone(w, ctx);
            }
            (None, _) => {
                return Err(CommandError::usage(format!(
                    "{}: this needs the repository's code, and {} is not in a git checkout\n  fix: run it inside a checkout of {}, or pass --repo-dir DIR",
                    issue.reference(),
                    ctx.workspace.cwd.display(),
                    issue.repo
                ))
                .into());
            }
        },
    };
    let repo = git2::Repository::open(&dir).map_err(|e| {
        CommandError::usage(format!(
            "--repo-dir {}: not a git repository ({})\n  fix: give the top folder of a checkout of {}",
            dir.display(),
            e.message(),
            issue.repo
        ))
    })?;
    if repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .is_none()
    {
        return Err(CommandError::usage(format!(
            "{}: has no commit to work from (HEAD is unborn)\n  fix: commit the code first",
            dir.display()
        ))
        .into());
    }
    Ok((dir, repo))
}

/// A bare clone of `repo` under `<cache>/repos/owner+name`, made or fetched now; its
/// HEAD follows the remote's default branch.
fn cached_clone(repo: &RepoId, ctx: &Ctx) -> Result<(std::path::PathBuf, git2::Repository)> {
    let url = ctx
        .config()
        .github
        .clone_url
        .replace("{repo}", &format!("{}/{}", repo.owner, repo.name));
    let dir = ctx
        .workspace
        .cache_dir()
        .join("repos")
        .join(format!("{}+{}", repo.owner, repo.name));
    let failed = |e: git2::Error| {
        CommandError::failure(format!(
            "could not clone {url} into {}: {}\n  fix: check github.clone_url and the network, or run inside a checkout (or pass --repo-dir DIR)",
            dir.display(),
            e.message()
        ))
    };
    let git = if dir.join("HEAD").exists() {
        ctx.out.info(&format!(
            "fetching {url} into the cached clone {}",
            dir.display()
        ));
        let git = git2::Repository::open_bare(&dir).map_err(failed)?;
        git.find_remote("origin")
            .and_then(|mut r| r.fetch(&["+refs/heads/*:refs/heads/*"], None, None))
            .map_err(failed)?;
        git
    } else {
        ctx.out
            .info(&format!("cloning {url} into {}", dir.display()));
        std::fs::create_dir_all(dir.parent().unwrap_or(&dir))
            .map_err(|e| CommandError::failure(format!("{}: {e}", dir.display())))?;
        let tmp = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        git2::build::RepoBuilder::new()
            .bare(true)
            .clone(&url, &tmp)
            .map_err(failed)?;
        std::fs::rename(&tmp, &dir)
            .map_err(|e| CommandError::failure(format!("{}: {e}", dir.display())))?;
        git2::Repository::open_bare(&dir).map_err(failed)?
    };
    Ok((dir, git))
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
    // Every redactor made from here on (test output, issues read, the error printed
    // at exit) also hides the configured secret variables.
    crate::redact::configure_secret_vars(&secret_vars);
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
        Command::Test(args) => test::run(&args, &ctx),
        Command::Eval(cmd) => eval::run(cmd, &ctx),
        Command::Pr(args) => pr::run(&args, &ctx),
        Command::Memory(cmd) => memory::run(cmd, &ctx),
        Command::Runs(cmd) => runs::run(cmd, &ctx),
        Command::Config(cmd) => config::run(cmd, &ctx),
        Command::Serve(args) => serve::run(&args, &ctx),
        Command::Queue(cmd) => queue::run(cmd, &ctx),
        Command::HandleEvent(args) => action::handle_event(&args, &ctx),
        Command::Lambda(cmd) => lambda::run(cmd, &ctx),
        Command::Completions(_) | Command::Init(_) => Ok(()),
    }
}

// ---------------------------------------------------------------------------------
// Helpers shared by the front-ends (no command calls another command)
// ---------------------------------------------------------------------------------

/// The model session for `--engine model|auto`, if a model is configured.
pub fn model_session(
    engine: EngineArg,
    record: Option<&std::path::Path>,
    ctx: &Ctx,
) -> Result<Option<Session>> {
    if engine == EngineArg::Offline {
        return Ok(None);
    }
    let resolved = registry::configured(ctx.config(), REQUEST_TIMEOUT)?;
    let Some(mut resolved) = resolved else {
        if engine == EngineArg::Model {
            return Err(CommandError::usage(
                "triage --engine model needs a model, and none is configured\n  fix: set `model:` (and `models:`) in autotriage.yaml, or pass --model NAME / provider:model_id",
            )
            .into());
        }
        return Ok(None);
    };
    if let Some(path) = record {
        resolved.model = std::sync::Arc::new(Recorder::new(resolved.model.clone(), path));
    }
    let cfg = ctx.config();
    Ok(Some(Session::new(
        resolved,
        RetryPolicy::with_max_wait(cfg.retry.max_wait),
        Budget::new(
            cfg.budget.per_issue_usd,
            cfg.budget.per_command_usd,
            ctx.global.max_cost,
        ),
        ctx.redactor.clone(),
    )))
}

/// Load the history, reuse or retrain the kind model, build the engine (saying when
/// the model was trained).
pub fn build_engine(ctx: &Ctx, memory: &mut dyn Memory) -> Result<Engine> {
    let (engine, note) = crate::pipeline::triage::build_engine(ctx.config(), memory)?;
    if let Some(note) = note {
        ctx.out.info(&note);
    }
    Ok(engine)
}

/// The GitHub repository of an issue, for `--forge github`.
pub(crate) fn github_target(issue: &Issue, raw: &str, ctx: &Ctx) -> Result<crate::issue::RepoId> {
    match IssueRef::parse(&issue.reference(), &ctx.ref_context()) {
        Ok(IssueRef::Remote { repo, .. }) => Ok(repo),
        _ => Err(CommandError::usage(format!(
            "{raw}: --forge github needs a GitHub issue (owner/repo#N)\n  fix: use --forge local for local issues"
        ))
        .into()),
    }
}

/// Where the test worktrees of runs live (for `runs prune`).
pub(crate) fn worktrees_dir(ctx: &Ctx) -> PathBuf {
    ctx.workspace.cache_dir().join("worktrees")
}
