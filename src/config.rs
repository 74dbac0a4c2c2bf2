//! `autotriage.yaml`: the schema, the layers and their one merge rule, validation.
//!
//! Layers, later wins: built-in defaults, the user's `~/.config/autotriage/config.yaml`,
//! the repository's `autotriage.yaml` (found by walking up from the current
//! directory), the documented environment variables, `--config FILE`, flags. Maps merge
//! key by key; any other value replaces the one below it. Every leaf remembers which
//! layer set it, for `config show`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::error::{ErrorKind, HasKind};

/// The name of the per-repository config file.
pub const FILE_NAME: &str = "autotriage.yaml";

/// A configuration problem: always names the key, the file (or variable/flag) and,
/// for files, the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read config file {path}: {source}\n  fix: check the path and its permissions")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key, type or value in a file is wrong.
    #[error("{origin}: {message}\n  fix: {hint}")]
    Invalid {
        /// `FILE:LINE` or the variable/flag name.
        origin: String,
        /// What is wrong, naming the key.
        message: String,
        /// What to do.
        hint: String,
    },
}

impl HasKind for ConfigError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Config
    }
}

/// The whole configuration. Every key is public: unknown keys are errors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The repository this checkout triages, `owner/name`.
    pub repo: Option<String>,
    /// Triage settings.
    pub triage: TriageConfig,
    /// Label mapping.
    pub labels: LabelsConfig,
    /// Local issue sources.
    pub sources: SourcesConfig,
    /// Who may trigger `fix`.
    pub trust: TrustConfig,
    /// Paths edits may never touch.
    pub paths: PathsConfig,
    /// Where memory lives.
    pub memory: MemoryConfig,
    /// Where run artifacts live.
    pub runs: RunsConfig,
    /// The `models` entry to use; unset means no model.
    pub model: Option<String>,
    /// Model providers as data.
    pub models: BTreeMap<String, ModelEntry>,
    /// Spending limits.
    pub budget: BudgetConfig,
    /// Retry limits for remote calls.
    pub retry: RetryConfig,
    /// GitHub settings.
    pub github: GithubConfig,
    /// How the code is searched (the locate stage).
    pub locate: LocateConfig,
    /// How patches are written (the repair stage).
    pub repair: RepairConfig,
    /// How tests run.
    pub test: TestConfig,
    /// Extra secret redaction.
    pub redact: RedactConfig,
    /// The webhook service (`autotriage serve`).
    pub serve: ServeConfig,
    /// The job queue of `serve`.
    pub queue: QueueConfig,
    /// The AWS Lambda functions.
    #[serde(rename = "lambda")]
    pub lambda: LambdaConfig,
}

/// `lambda.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LambdaConfig {
    /// The CodeBuild project the worker starts a fix on.
    pub fix_project: Option<String>,
}

/// `serve.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// The variable holding the webhook secret (never the secret itself).
    pub webhook_secret_env: String,
    /// Repositories whose events are acted on (`owner/name` glob patterns); required.
    pub repos: Vec<String>,
    /// What a triage writes back: `labels`, `comment`, `both` or `none`.
    pub apply: ServeApply,
    /// Edits of one issue within this many seconds become one job.
    pub coalesce_seconds: u64,
    /// Attempts before a job is a dead letter.
    pub max_attempts: u32,
    /// Most the service spends on models per day (UTC), USD; jobs wait past it.
    pub daily_budget_usd: f64,
    /// Seconds running jobs get to finish on SIGTERM/SIGINT before their leases go back.
    pub shutdown_grace_seconds: u64,
    /// Seconds a job's lease lasts without a heartbeat.
    pub lease_seconds: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            webhook_secret_env: "AUTOTRIAGE_WEBHOOK_SECRET".into(),
            repos: Vec::new(),
            apply: ServeApply::Both,
            coalesce_seconds: 10,
            max_attempts: 5,
            daily_budget_usd: 5.0,
            shutdown_grace_seconds: 30,
            lease_seconds: 300,
        }
    }
}

/// `serve.apply`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ServeApply {
    /// Labels only.
    Labels,
    /// The bot comment only.
    Comment,
    /// Labels and the bot comment.
    #[default]
    Both,
    /// Record the triage, write nothing to GitHub.
    None,
}

/// `queue.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `sqlite` (one machine) or `sqs` (the Lambda front-ends, and `serve` on many machines).
    pub backend: QueueBackend,
    /// The queue file (default: `queue.sqlite3` beside the memory).
    pub path: Option<PathBuf>,
    /// The SQS FIFO queue's URL (`backend: sqs`).
    pub url: Option<String>,
    /// Its dead-letter queue's URL (`queue list|show|retry|drop` read it).
    pub dead_letter_url: Option<String>,
    /// Its region; unset = the standard AWS chain.
    pub region: Option<String>,
    /// Endpoint override (emulators, VPC endpoints).
    pub endpoint_url: Option<String>,
}

/// `queue.backend`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// A SQLite file, synced before a delivery is acknowledged.
    #[default]
    Sqlite,
    /// An SQS FIFO queue: one message group per issue, the delivery id deduplicates.
    Sqs,
}

/// `triage.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TriageConfig {
    /// Below this calibrated probability the classifier abstains (0..1).
    pub threshold: f64,
    /// At or above this similarity a match is reported as a likely duplicate (0..1).
    pub duplicate_threshold: f64,
    /// Who decides when `triage --engine` is not given, and in `fix`: `offline`,
    /// `auto` (offline, and the configured model where offline abstains) or `model`.
    pub engine: TriageEngine,
}

/// `triage.engine`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TriageEngine {
    /// The offline classifier and rules only.
    Offline,
    /// Offline, and the configured model where offline abstains.
    #[default]
    Auto,
    /// The configured model for every issue.
    Model,
}

impl Default for TriageConfig {
    fn default() -> Self {
        Self {
            threshold: 0.6,
            duplicate_threshold: 0.6,
            engine: TriageEngine::Auto,
        }
    }
}

/// `labels.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsConfig {
    /// Kind → the repository labels that mean it (first existing one is applied).
    pub aliases: BTreeMap<String, Vec<String>>,
    /// The repository's labels with their descriptions: labels declared here exist
    /// even before any issue in memory carries them, and a model prompt shows the
    /// descriptions.
    pub descriptions: BTreeMap<String, String>,
}

impl Default for LabelsConfig {
    fn default() -> Self {
        let list = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut aliases = BTreeMap::new();
        aliases.insert(
            "bug".into(),
            list(&["bug", "type: bug", "kind/bug", "defect"]),
        );
        aliases.insert(
            "feature".into(),
            list(&[
                "enhancement",
                "feature",
                "feature request",
                "type: feature",
                "kind/feature",
            ]),
        );
        aliases.insert(
            "question".into(),
            list(&["question", "type: question", "support"]),
        );
        Self {
            aliases,
            descriptions: BTreeMap::new(),
        }
    }
}

/// `sources.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Column names for CSV issue files.
    pub csv: CsvColumns,
}

/// `sources.csv.*`: column names; the defaults fit the NLBSE issue-label set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CsvColumns {
    /// Title column.
    pub title: String,
    /// Body column.
    pub body: String,
    /// Label column (one label, or several separated by `,` or `;`).
    pub label: String,
    /// Issue number column; when absent the row number (from 1) is the number.
    pub number: Option<String>,
    /// Repository column; when absent the config's `repo`.
    pub repo: Option<String>,
    /// State column (open/closed).
    pub state: Option<String>,
    /// Creation time column.
    pub created_at: Option<String>,
}

impl Default for CsvColumns {
    fn default() -> Self {
        Self {
            title: "title".into(),
            body: "body".into(),
            label: "label".into(),
            number: None,
            repo: Some("repo".into()),
            state: None,
            created_at: Some("created_at".into()),
        }
    }
}

/// `trust.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// A label that makes any issue eligible for `fix`.
    pub trigger_label: String,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            trigger_label: "autotriage:fix".into(),
        }
    }
}

/// `paths.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// Globs that edits may never touch.
    pub protected: Vec<String>,
}

impl Default for PathsConfig {
    fn default() -> Self {
        Self {
            protected: vec![".github/workflows/**".into()],
        }
    }
}

/// Memory backends.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MemoryBackend {
    /// One SQLite file.
    #[default]
    Sqlite,
    /// A DynamoDB table.
    Dynamodb,
}

/// `memory.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// `sqlite` or `dynamodb`.
    pub backend: MemoryBackend,
    /// SQLite file; default `.autotriage/memory.sqlite3`.
    pub path: Option<PathBuf>,
    /// DynamoDB table.
    pub table: Option<String>,
    /// AWS region.
    pub region: Option<String>,
    /// Endpoint override (emulators, VPC endpoints).
    pub endpoint_url: Option<String>,
    /// How long a `fix`'s hold on its issue lasts unless renewed (it is renewed every
    /// third of it while the fix runs), seconds; unset = 600.
    pub lease_seconds: Option<u64>,
}

/// Run store backends.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunsBackend {
    /// The `.autotriage/runs` folder.
    #[default]
    Fs,
    /// An S3 bucket.
    S3,
}

/// `runs.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RunsConfig {
    /// `fs` or `s3`.
    pub backend: RunsBackend,
    /// S3 bucket.
    pub bucket: Option<String>,
    /// S3 key prefix (default `autotriage/runs`).
    pub prefix: Option<String>,
    /// AWS region of the bucket.
    pub region: Option<String>,
    /// Endpoint override (emulators, VPC endpoints).
    pub endpoint_url: Option<String>,
}

/// Model wire protocols.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Amazon Bedrock Converse.
    Bedrock,
    /// Anthropic Messages.
    Anthropic,
    /// Any OpenAI-compatible chat completions server.
    Openai,
    /// Recorded cassettes.
    Replay,
}

/// One `models.NAME` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Wire protocol.
    pub provider: Provider,
    /// The provider's model id.
    pub model_id: String,
    /// AWS region (bedrock).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override, any provider.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Base URL (openai-compatible servers).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Prices in USD per million tokens.
    #[serde(default)]
    pub price: Option<Price>,
    /// AWS profile (bedrock); the standard chain otherwise.
    #[serde(default)]
    pub profile: Option<String>,
    /// Stream replies (bedrock ConverseStream); default true.
    #[serde(default)]
    pub stream: Option<bool>,
}

/// Prices per million tokens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per million input tokens.
    pub input_per_mtok: f64,
    /// USD per million output tokens.
    pub output_per_mtok: f64,
    /// USD per million prompt tokens written to the cache (default 1.25 × input, the
    /// Anthropic and Bedrock price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
    /// USD per million prompt tokens read from the cache (default 0.1 × input; set it
    /// for OpenAI models, whose discount differs by model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_mtok: Option<f64>,
}

/// `budget.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Most a single issue may cost in model calls, USD.
    pub per_issue_usd: f64,
    /// Most one command may cost, USD.
    pub per_command_usd: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            per_issue_usd: 1.0,
            per_command_usd: 10.0,
        }
    }
}

/// `retry.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Longest total wait across retries of one call, seconds.
    pub max_wait: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { max_wait: 120 }
    }
}

/// `github.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GithubConfig {
    /// REST API base URL (GitHub Enterprise: `https://HOST/api/v3`).
    pub api_url: String,
    /// Labels put on the pull requests `pr` opens.
    pub pr_labels: Vec<String>,
    /// Create a label we apply (triage labels and `pr_labels`) that the repository
    /// lacks; off, such a label is skipped and the reason names it.
    pub create_labels: bool,
    /// The login our token acts as, for tokens that cannot ask `GET /user` (a GitHub
    /// App installation token, such as an Action's `GITHUB_TOKEN`:
    /// `github-actions[bot]`). Our comments are the ones this login wrote.
    pub bot_login: Option<String>,
    /// Where `fix` and `test` clone a repository from when no checkout is at hand;
    /// `{repo}` becomes `owner/name`.
    pub clone_url: String,
    /// A GitHub App's id: `serve` then acts as the App (a JWT signed with its private key
    /// gets an installation token per repository, renewed before it expires).
    pub app_id: Option<u64>,
    /// The App's private key file (PEM), or
    pub app_private_key: Option<PathBuf>,
    /// the variable holding the PEM itself.
    pub app_private_key_env: Option<String>,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            api_url: "https://api.github.com".into(),
            pr_labels: Vec::new(),
            create_labels: false,
            bot_login: None,
            clone_url: "https://github.com/{repo}.git".into(),
            app_id: None,
            app_private_key: None,
            app_private_key_env: None,
        }
    }
}

/// Sandbox policy for test runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SandboxPolicy {
    /// bubblewrap must be present.
    Required,
    /// Use bubblewrap when present, say so when not.
    #[default]
    Auto,
    /// Never sandbox.
    Off,
}

/// Test runners.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TestRunner {
    /// This machine.
    #[default]
    Local,
    /// AWS CodeBuild.
    Codebuild,
}

/// `test.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TestConfig {
    /// Command run once before the tests.
    pub setup: Option<String>,
    /// The setup command keeps the network (to install dependencies); the tests
    /// never have it.
    pub setup_network: bool,
    /// The test command; detected from the files present when unset.
    pub command: Option<String>,
    /// Wall-clock limit per test run, seconds.
    pub timeout: u64,
    /// `required`, `auto` or `off`.
    pub sandbox: SandboxPolicy,
    /// `local` or `codebuild`.
    pub runner: TestRunner,
    /// CodeBuild project.
    pub project: Option<String>,
    /// Environment variables passed to test runs besides the built-in allow-list.
    pub pass_env: Vec<String>,
    /// Run the tests nearest the change first (the tests it adds or edits, the ones
    /// mirroring or importing a changed module); `false` runs only the command.
    pub targeted: bool,
    /// At most this many test files in that first run.
    pub max_targets: usize,
    /// CodeBuild: the bucket for sources and outputs (default `runs.bucket`).
    pub bucket: Option<String>,
    /// CodeBuild: AWS region.
    pub region: Option<String>,
    /// CodeBuild: endpoint override for CodeBuild and S3.
    pub endpoint_url: Option<String>,
}

impl Default for TestConfig {
    fn default() -> Self {
        Self {
            setup: None,
            setup_network: false,
            command: None,
            timeout: 900,
            sandbox: SandboxPolicy::Auto,
            runner: TestRunner::Local,
            project: None,
            pass_env: Vec::new(),
            targeted: true,
            max_targets: 20,
            bucket: None,
            region: None,
            endpoint_url: None,
        }
    }
}

/// `locate.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LocateConfig {
    /// Globs of files never indexed (vendored, generated, lock files…); replaces the
    /// default list.
    pub exclude: Vec<String>,
    /// Files larger than this many bytes are not indexed.
    pub max_file_bytes: u64,
    /// Token budget of the code context given to the repair prompt.
    pub context_tokens: usize,
    /// Files in the ranking.
    pub max_files: usize,
    /// Files the context may draw from (best first).
    pub context_files: usize,
    /// Ask the configured model to re-rank the top files.
    pub rerank: bool,
    /// How many top files the model re-ranks.
    pub rerank_files: usize,
}

impl Default for LocateConfig {
    fn default() -> Self {
        Self {
            exclude: crate::locate::files::DEFAULT_EXCLUDE
                .iter()
                .map(|s| (*s).to_string())
                .collect(),
            max_file_bytes: 1_000_000,
            context_tokens: 12_000,
            max_files: 20,
            context_files: 8,
            rerank: false,
            rerank_files: 10,
        }
    }
}

/// `repair.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RepairConfig {
    /// Candidate patches asked for per issue.
    pub candidates: usize,
    /// Answer length limit, tokens.
    pub max_tokens: u32,
    /// Sampling temperature of the second and later candidates (the first uses 0).
    pub temperature: f32,
    /// A candidate whose diff is larger than this many bytes is refused.
    pub max_patch_bytes: usize,
    /// A candidate that changes more files than this is refused.
    pub max_patch_files: usize,
    /// A candidate that adds and removes more lines than this is refused.
    pub max_patch_lines: usize,
    /// Rounds after the first in which each failed candidate goes back to the model
    /// with its test evidence (0 = none).
    pub rounds: usize,
    /// How candidates are written: one answer per candidate, an agent with tools, or
    /// the pipeline first and the agent when nothing is proven.
    pub mode: RepairMode,
    /// Model turns an agent run may take.
    pub max_turns: usize,
    /// Before repair, ask for a test that reproduces the issue and run it on the base.
    pub reproduce: bool,
}

/// `repair.mode`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RepairMode {
    /// Independent answers (and rounds with feedback).
    #[default]
    Pipeline,
    /// A model working through tools: search, read, edit, run tests, submit.
    Agent,
    /// The pipeline; the agent when no candidate is proven.
    Auto,
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self {
            candidates: 2,
            max_tokens: 4096,
            temperature: 0.7,
            max_patch_bytes: 1_000_000,
            max_patch_files: 50,
            max_patch_lines: 5_000,
            rounds: 1,
            mode: RepairMode::Pipeline,
            max_turns: 30,
            reproduce: false,
        }
    }
}

/// `redact.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RedactConfig {
    /// More environment variables whose values must never be written.
    pub secret_vars: Vec<String>,
}

/// Values that come from flags (and their environment variables), the top layers.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE` (or `AUTOTRIAGE_CONFIG`).
    pub config_file: Option<PathBuf>,
    /// `--memory` from the command line.
    pub memory_flag: Option<String>,
    /// `--memory` from `AUTOTRIAGE_MEMORY`.
    pub memory_env: Option<String>,
    /// `--model` from the command line.
    pub model_flag: Option<String>,
    /// `--model` from `AUTOTRIAGE_MODEL`.
    pub model_env: Option<String>,
    /// `GITHUB_API_URL`.
    pub github_api_url_env: Option<String>,
    /// `AUTOTRIAGE_SET`: `key.path=value` settings separated by `;` or newlines (a
    /// deployment's environment, where no file can be written).
    pub settings_env: Option<String>,
}

/// Where the layers are looked for.
#[derive(Debug, Clone)]
pub struct Locations {
    /// The directory the command runs in.
    pub cwd: PathBuf,
    /// The user config file (`~/.config/autotriage/config.yaml`), if a home is known.
    pub user_file: Option<PathBuf>,
}

impl Locations {
    /// The standard locations for this process.
    pub fn from_env(cwd: PathBuf) -> Self {
        let config_home = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        Self {
            cwd,
            user_file: config_home.map(|d| d.join("autotriage").join("config.yaml")),
        }
    }
}

/// The merged configuration and the source of each leaf.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The typed, validated result.
    pub config: Config,
    /// Dotted key → where its value came from (`default`, a file path, `env X`, `flag --x`).
    pub sources: BTreeMap<String, String>,
    /// The merged tree, for display.
    pub tree: Value,
    /// The repository config file found by walking up, if any.
    pub repo_file: Option<PathBuf>,
}

/// Load and merge every layer.
pub fn load(locations: &Locations, overrides: &Overrides) -> Result<Loaded, ConfigError> {
    let mut tree = to_value(&Config::default());
    let mut sources = BTreeMap::new();
    record_sources(&tree, "", "default", &mut sources);

    if let Some(user) = &locations.user_file
        && user.is_file()
    {
        apply_file(&mut tree, &mut sources, user)?;
    }
    let repo_file = find_repo_file(&locations.cwd);
    if let Some(file) = &repo_file {
        apply_file(&mut tree, &mut sources, file)?;
    }

    // Environment variables.
    if let Some(all) = &overrides.settings_env {
        for item in all
            .split([';', '\n'])
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            let bad = |why: &str| {
                ConfigError::Invalid {
                origin: "env AUTOTRIAGE_SET".into(),
                message: format!("{item:?}: {why}"),
                hint: "write key.path=value pairs separated by `;`, e.g. queue.backend=sqs;serve.repos=[acme/app]".into(),
            }
            };
            let (key, value) = item.split_once('=').ok_or_else(|| bad("no `=`"))?;
            let key = key.trim();
            if key.is_empty()
                || !key.split('.').all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                })
            {
                return Err(bad("the key is not a dotted setting name"));
            }
            let v: Value = serde_yaml::from_str(value.trim())
                .map_err(|e| bad(&format!("the value is not YAML: {e}")))?;
            set_leaf(&mut tree, &mut sources, key, v, "env AUTOTRIAGE_SET");
        }
    }
    if let Some(v) = &overrides.github_api_url_env {
        set_leaf(
            &mut tree,
            &mut sources,
            "github.api_url",
            Value::String(v.clone()),
            "env GITHUB_API_URL",
        );
    }
    if let Some(v) = &overrides.memory_env {
        apply_memory_shorthand(
            &mut tree,
            &mut sources,
            v,
            "env AUTOTRIAGE_MEMORY",
            &locations.cwd,
        )?;
    }
    if let Some(v) = &overrides.model_env {
        set_leaf(
            &mut tree,
            &mut sources,
            "model",
            Value::String(v.clone()),
            "env AUTOTRIAGE_MODEL",
        );
    }

    if let Some(file) = &overrides.config_file {
        let file = if file.is_absolute() {
            file.clone()
        } else {
            locations.cwd.join(file)
        };
        if !file.is_file() {
            return Err(ConfigError::Invalid {
                origin: format!("--config {}", file.display()),
                message: "the file does not exist".into(),
                hint: "pass an existing autotriage.yaml, or drop --config / AUTOTRIAGE_CONFIG"
                    .into(),
            });
        }
        apply_file(&mut tree, &mut sources, &file)?;
    }

    // Flags.
    if let Some(v) = &overrides.memory_flag {
        apply_memory_shorthand(&mut tree, &mut sources, v, "flag --memory", &locations.cwd)?;
    }
    if let Some(v) = &overrides.model_flag {
        set_leaf(
            &mut tree,
            &mut sources,
            "model",
            Value::String(v.clone()),
            "flag --model",
        );
    }

    let config: Config =
        serde_yaml::from_value(tree.clone()).map_err(|e| ConfigError::Invalid {
            origin: "merged config".into(),
            message: e.to_string(),
            hint: "check the values given by environment variables and flags".into(),
        })?;
    validate(&config, &sources)?;
    Ok(Loaded {
        config,
        sources,
        tree,
        repo_file,
    })
}

/// The repository's `autotriage.yaml`, walking up from `start`.
pub fn find_repo_file(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|d| d.join(FILE_NAME))
        .find(|p| p.is_file())
}

fn to_value(config: &Config) -> Value {
    // Serialising our own plain struct cannot fail.
    serde_yaml::to_value(config).unwrap_or(Value::Null)
}

/// Parse one file strictly (unknown keys, types and enum values are errors with a
/// line), then merge it.
fn apply_file(
    tree: &mut Value,
    sources: &mut BTreeMap<String, String>,
    path: &Path,
) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let layer = parse_layer(&text, path)?;
    let mut layer = layer;
    // A relative memory path in a file is relative to that file.
    if let Some(Value::String(p)) = get_path(&layer, "memory.path").cloned()
        && Path::new(&p).is_relative()
        && let Some(dir) = path.parent()
    {
        set_path(
            &mut layer,
            "memory.path",
            Value::String(dir.join(&p).display().to_string()),
        );
    }
    let origin = path.display().to_string();
    merge(tree, &layer);
    record_sources(&layer, "", &origin, sources);
    Ok(())
}

/// Parse a config file's text, checking it against the schema.
pub fn parse_layer(text: &str, path: &Path) -> Result<Value, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Value::Mapping(Default::default()));
    }
    if let Err(e) = serde_yaml::from_str::<Config>(text) {
        return Err(describe_yaml_error(&e, text, path));
    }
    let value: Value =
        serde_yaml::from_str(text).map_err(|e| describe_yaml_error(&e, text, path))?;
    match value {
        Value::Null => Ok(Value::Mapping(Default::default())),
        v @ Value::Mapping(_) => {
            let config: Config = serde_yaml::from_value(v.clone())
                .map_err(|e| describe_yaml_error(&e, text, path))?;
            let sources: BTreeMap<String, String> = {
                let mut s = BTreeMap::new();
                record_sources(&v, "", &path.display().to_string(), &mut s);
                s
            };
            validate_with_text(&config, &sources, Some((text, path)))?;
            Ok(v)
        }
        _ => Err(ConfigError::Invalid {
            origin: format!("{}:1", path.display()),
            message: "the file must be a YAML mapping of keys".into(),
            hint: "see autotriage.example.yaml for the layout".into(),
        }),
    }
}

fn describe_yaml_error(e: &serde_yaml::Error, text: &str, path: &Path) -> ConfigError {
    let raw = e.to_string();
    // serde_yaml appends " at line L column C"; we show the line in the origin instead.
    let message = match raw.find(" at line ") {
        Some(i) => raw[..i].to_string(),
        None => raw.clone(),
    };
    let line = e.location().map(|l| l.line()).or_else(|| {
        // Errors found after parsing carry no location; find the key by name.
        unknown_key(&message).and_then(|(parent, key)| {
            let dotted = if parent.is_empty() {
                key
            } else {
                format!("{parent}.{key}")
            };
            find_key_line(text, &dotted)
        })
    });
    let (message, hint) = match unknown_key(&message) {
        Some((parent, key)) => {
            let dotted = if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            };
            let expected = message
                .split_once(", expected ")
                .map(|(_, x)| x.to_string());
            (
                format!("unknown key `{dotted}`"),
                match expected {
                    Some(x) => format!("remove it or use one of the known keys here: {x}"),
                    None => "remove it; autotriage.example.yaml lists every key".into(),
                },
            )
        }
        None => (
            message,
            "correct the value; autotriage.example.yaml documents every key".into(),
        ),
    };
    ConfigError::Invalid {
        origin: match line {
            Some(l) => format!("{}:{l}", path.display()),
            None => path.display().to_string(),
        },
        message,
        hint,
    }
}

/// From serde's "PARENT: unknown field `KEY`, expected ..." the parent path and key.
fn unknown_key(message: &str) -> Option<(String, String)> {
    let idx = message.find("unknown field `")?;
    let rest = &message[idx + "unknown field `".len()..];
    let key = rest.split('`').next()?.to_string();
    let parent = message[..idx].trim_end_matches(": ").trim().to_string();
    Some((parent, key))
}

/// The 1-based line where a dotted key is defined, found by indentation.
pub fn find_key_line(text: &str, dotted: &str) -> Option<usize> {
    let parts: Vec<&str> = dotted.split('.').collect();
    let mut depth = 0;
    let mut min_indent = 0usize;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if depth > 0 && indent < min_indent {
            return None;
        }
        let key = trimmed
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(['"', '\'']);
        let indent_ok = if depth == 0 {
            indent == 0
        } else {
            indent >= min_indent
        };
        if key == parts[depth] && trimmed.contains(':') && indent_ok {
            depth += 1;
            if depth == parts.len() {
                return Some(i + 1);
            }
            min_indent = indent + 1;
        }
    }
    None
}

fn validate(config: &Config, sources: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    validate_with_text(config, sources, None)
}

fn validate_with_text(
    config: &Config,
    sources: &BTreeMap<String, String>,
    file: Option<(&str, &Path)>,
) -> Result<(), ConfigError> {
    let fail = |key: &str, message: String, hint: &str| {
        let origin = match file {
            Some((text, path)) => match find_key_line(text, key) {
                Some(l) => format!("{}:{l}", path.display()),
                None => path.display().to_string(),
            },
            None => sources.get(key).cloned().unwrap_or_else(|| "config".into()),
        };
        Err(ConfigError::Invalid {
            origin,
            message,
            hint: hint.into(),
        })
    };
    let t = &config.triage;
    for (key, v) in [
        ("triage.threshold", t.threshold),
        ("triage.duplicate_threshold", t.duplicate_threshold),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return fail(
                key,
                format!("`{key}` is {v}, outside 0..1"),
                "use a fraction such as 0.6",
            );
        }
    }
    if let Some(repo) = &config.repo
        && !is_owner_repo(repo)
    {
        return fail(
            "repo",
            format!("`repo` is {repo:?}, not owner/name"),
            "write it as owner/name, e.g. rust-lang/rust",
        );
    }
    if let Some(model) = &config.model
        && !config.models.contains_key(model)
        && !crate::model::registry::BUILTINS
            .iter()
            .any(|(n, ..)| n == model)
        && !model.contains(':')
    {
        let known: Vec<&str> = config.models.keys().map(String::as_str).collect();
        return fail(
            "model",
            format!("`model` is {model:?}, which is not an entry of `models`"),
            &format!(
                "add models.{model} (provider, model_id) or pick one of [{}], or use provider:model_id",
                known
                    .into_iter()
                    .chain(crate::model::registry::BUILTINS.iter().map(|(n, ..)| *n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    if config.memory.backend == MemoryBackend::Dynamodb && config.memory.table.is_none() {
        return fail(
            "memory.backend",
            "`memory.backend` is dynamodb but `memory.table` is unset".into(),
            "set memory.table, or use --memory dynamodb:TABLE",
        );
    }
    if config.runs.backend == RunsBackend::S3 && config.runs.bucket.is_none() {
        return fail(
            "runs.backend",
            "`runs.backend` is s3 but `runs.bucket` is unset".into(),
            "set runs.bucket",
        );
    }
    for (key, v, min) in [
        ("locate.context_tokens", config.locate.context_tokens, 500),
        ("locate.max_files", config.locate.max_files, 1),
        ("locate.context_files", config.locate.context_files, 1),
        ("locate.rerank_files", config.locate.rerank_files, 2),
        ("repair.candidates", config.repair.candidates, 1),
        ("repair.max_tokens", config.repair.max_tokens as usize, 256),
    ] {
        if v < min {
            return fail(
                key,
                format!("`{key}` is {v}, below {min}"),
                &format!("give a number of at least {min}"),
            );
        }
    }
    if config.repair.candidates > 10 {
        return fail(
            "repair.candidates",
            format!(
                "`repair.candidates` is {}, above 10",
                config.repair.candidates
            ),
            "ask for 1 to 10 candidates",
        );
    }
    if config.repair.rounds > 5 {
        return fail(
            "repair.rounds",
            format!("`repair.rounds` is {}, above 5", config.repair.rounds),
            "use 0 to 5 rounds (each can cost as much as the first)",
        );
    }
    if !(1..=200).contains(&config.repair.max_turns) {
        return fail(
            "repair.max_turns",
            format!(
                "`repair.max_turns` is {}, outside 1..200",
                config.repair.max_turns
            ),
            "use a value such as 30",
        );
    }
    if config.repair.mode != RepairMode::Pipeline
        && config.test.sandbox != SandboxPolicy::Required
        && config.test.runner == TestRunner::Local
    {
        return fail(
            "repair.mode",
            format!(
                "`repair.mode` is {:?}, and the agent's code runs every turn, but test.sandbox is not `required`",
                config.repair.mode
            )
            .to_lowercase(),
            "set test.sandbox: required (bubblewrap), or repair.mode: pipeline",
        );
    }
    if !(0.0..=2.0).contains(&config.repair.temperature) {
        return fail(
            "repair.temperature",
            format!(
                "`repair.temperature` is {}, outside 0..2",
                config.repair.temperature
            ),
            "use a value such as 0.7",
        );
    }
    if config.locate.max_file_bytes == 0 {
        return fail(
            "locate.max_file_bytes",
            "`locate.max_file_bytes` is 0".into(),
            "give a size in bytes, e.g. 1000000",
        );
    }
    if config.test.timeout == 0 {
        return fail(
            "test.timeout",
            "`test.timeout` is 0".into(),
            "give a number of seconds, e.g. 900",
        );
    }
    for (key, v) in [
        ("budget.per_issue_usd", config.budget.per_issue_usd),
        ("budget.per_command_usd", config.budget.per_command_usd),
    ] {
        if v < 0.0 || !v.is_finite() {
            return fail(
                key,
                format!("`{key}` is {v}"),
                "give a non-negative amount in USD",
            );
        }
    }
    if !config.github.api_url.starts_with("http://")
        && !config.github.api_url.starts_with("https://")
    {
        return fail(
            "github.api_url",
            format!(
                "`github.api_url` is {:?}, not an http(s) URL",
                config.github.api_url
            ),
            "e.g. https://github.example.com/api/v3",
        );
    }
    Ok(())
}

/// `owner/name` with GitHub's allowed characters.
pub fn is_owner_repo(s: &str) -> bool {
    let ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    matches!(s.split_once('/'), Some((o, r)) if ok(o) && ok(r) && !r.contains('/'))
}

fn apply_memory_shorthand(
    tree: &mut Value,
    sources: &mut BTreeMap<String, String>,
    raw: &str,
    origin: &str,
    cwd: &Path,
) -> Result<(), ConfigError> {
    if let Some(table) = raw.strip_prefix("dynamodb:") {
        if table.is_empty() {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                message: format!("memory {raw:?} names no table"),
                hint: "write dynamodb:TABLE, or a path to a SQLite file".into(),
            });
        }
        set_leaf(
            tree,
            sources,
            "memory.backend",
            Value::String("dynamodb".into()),
            origin,
        );
        set_leaf(
            tree,
            sources,
            "memory.table",
            Value::String(table.into()),
            origin,
        );
    } else {
        let path = raw.strip_prefix("sqlite:").unwrap_or(raw);
        if path.is_empty() {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                message: "memory path is empty".into(),
                hint: "give a path to a SQLite file, or dynamodb:TABLE".into(),
            });
        }
        let p = Path::new(path);
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        };
        set_leaf(
            tree,
            sources,
            "memory.backend",
            Value::String("sqlite".into()),
            origin,
        );
        set_leaf(
            tree,
            sources,
            "memory.path",
            Value::String(abs.display().to_string()),
            origin,
        );
    }
    Ok(())
}

fn set_leaf(
    tree: &mut Value,
    sources: &mut BTreeMap<String, String>,
    dotted: &str,
    v: Value,
    origin: &str,
) {
    set_path(tree, dotted, v);
    sources.insert(dotted.to_string(), origin.to_string());
}

fn get_path<'a>(tree: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(tree, |node, key| node.get(key))
}

fn set_path(tree: &mut Value, dotted: &str, v: Value) {
    let mut node = tree;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, key) in parts.iter().enumerate() {
        if !node.is_mapping() {
            *node = Value::Mapping(Default::default());
        }
        let Value::Mapping(map) = node else { return };
        let k = Value::String((*key).to_string());
        if i + 1 == parts.len() {
            map.insert(k, v);
            return;
        }
        node = map.entry(k).or_insert(Value::Mapping(Default::default()));
    }
}

/// The one merge rule: mappings merge key by key (a `models.NAME` entry too), anything
/// else replaces (so a `labels.aliases` list replaces the list below it).
pub fn merge(base: &mut Value, layer: &Value) {
    match (base, layer) {
        (Value::Mapping(b), Value::Mapping(l)) => {
            for (k, v) in l {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, l) => *b = l.clone(),
    }
}

/// Record `origin` for every leaf of `layer`.
fn record_sources(
    layer: &Value,
    prefix: &str,
    origin: &str,
    sources: &mut BTreeMap<String, String>,
) {
    match layer {
        Value::Mapping(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let dotted = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                // Mappings merge, so lower layers' leaves under `dotted` keep their
                // sources; only a leaf replacing a subtree clears them (below).
                record_sources(v, &dotted, origin, sources);
            }
        }
        _ => {
            if !prefix.is_empty() {
                sources.retain(|k, _| !k.starts_with(&format!("{prefix}.")));
                sources.insert(prefix.to_string(), origin.to_string());
            }
        }
    }
}

/// Every leaf of the merged tree as `(dotted key, value)`, in key order.
pub fn leaves(tree: &Value) -> Vec<(String, Value)> {
    fn walk(v: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Mapping(map) if !map.is_empty() => {
                for (k, v) in map {
                    let key = k.as_str().map(str::to_string).unwrap_or_default();
                    let dotted = if prefix.is_empty() {
                        key
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(v, &dotted, out);
                }
            }
            _ => out.push((prefix.to_string(), v.clone())),
        }
    }
    let mut out = Vec::new();
    walk(tree, "", &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_nested_key_names_key_and_line() {
        let text = "repo: a/b\ntriage:\n  threshold: 0.7\n  thresold: 0.5\n";
        let err = parse_layer(text, Path::new("/x/autotriage.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/x/autotriage.yaml:4"), "{err}");
        assert!(err.contains("unknown key `triage.thresold`"), "{err}");
    }

    #[test]
    fn out_of_range_value_names_line() {
        let text = "triage:\n  threshold: 1.5\n";
        let err = parse_layer(text, Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("c.yaml:2: `triage.threshold` is 1.5, outside 0..1"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let text = "test:\n  timeout: soon\n";
        let err = parse_layer(text, Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.yaml:2"), "{err}");
        assert!(err.contains("test.timeout"), "{err}");
    }

    #[test]
    fn merge_maps_and_replace_leaves() {
        let mut base: Value = serde_yaml::from_str("a: {b: 1, c: [1, 2]}\nd: x").unwrap();
        let layer: Value = serde_yaml::from_str("a: {c: [3]}\nd: y").unwrap();
        merge(&mut base, &layer);
        let expected: Value = serde_yaml::from_str("a: {b: 1, c: [3]}\nd: y").unwrap();
        assert_eq!(base, expected);
    }

    #[test]
    fn find_key_line_respects_nesting() {
        let text = "# c\nthreshold: 1\ntriage:\n  # x\n  threshold: 2\n";
        assert_eq!(find_key_line(text, "triage.threshold"), Some(5));
        assert_eq!(find_key_line(text, "threshold"), Some(2));
    }
}
