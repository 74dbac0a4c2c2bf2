//! Command-line definitions (clap derive). Nothing here runs anything.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Triage GitHub issues, fix the fixable ones, prove the fix with the repository's own
/// tests, and open a draft pull request that explains itself.
#[derive(Debug, Parser)]
#[command(name = "autotriage", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Global flags: accepted before or after the subcommand.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Read this config file on top of the user and repository ones.
    #[arg(long, global = true, env = "AUTOTRIAGE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON document (JSON lines for batches) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Answer yes to every prompt (for scripts).
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// Write nothing to the forge or to any checkout; runs and memory still record.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// More detail on stderr (repeat for more).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// Memory to use: a SQLite file path, or dynamodb:TABLE.
    #[arg(
        long,
        global = true,
        env = "AUTOTRIAGE_MEMORY",
        value_name = "PATH|dynamodb:TABLE"
    )]
    pub memory: Option<String>,
    /// Model entry from `models`, or provider:model_id.
    #[arg(long, global = true, env = "AUTOTRIAGE_MODEL", value_name = "NAME")]
    pub model: Option<String>,
    /// Stop before spending more than this many USD on model calls.
    #[arg(long, global = true, value_name = "USD", value_parser = parse_usd)]
    pub max_cost: Option<f64>,
    /// Issues processed in parallel in batches.
    #[arg(long, short = 'j', global = true, value_name = "N", value_parser = parse_jobs)]
    pub jobs: Option<usize>,
    /// Act even where a safety check says no (trust policy, overwriting files).
    #[arg(long, global = true)]
    pub force: bool,
}

fn parse_usd(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not an amount in USD (a number, 0 or more)"
        )),
    }
}

fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number of jobs from 1 to 256")),
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Triage issues offline: kind (or abstain), labels, priority, duplicates, missing
    /// information, fixability. Learns from memory's labelled history.
    Triage(TriageArgs),
    /// Fix an issue end to end: triage, locate the code, repair (candidate patches from
    /// the model), test each candidate with the repository's own tests in a sandbox,
    /// choose, and publish a draft PR (`--dry-run`: review and publish nothing).
    Fix(FixArgs),
    /// Run the repository's own tests on the base commit and on a run's candidates (or
    /// a patch) in throwaway worktrees, sandboxed; per-test verdicts in `test.json`.
    Test(TestArgs),
    /// Publish a patch for an issue as branch `autotriage/issue-N` in this checkout (one
    /// commit from HEAD; the working tree is not touched) with a PR description in the
    /// run folder (`pr.md`).
    Pr(PrArgs),
    /// Measure triage on labelled data (backtesting).
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Read, search and move the memory of issues, triage results and runs.
    #[command(subcommand)]
    Memory(MemoryCommand),
    /// List, inspect and prune run folders.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Write a commented autotriage.yaml for this checkout and ignore .autotriage/.
    Init(InitArgs),
    /// Show the merged configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Answer GitHub webhooks: verify, queue durably, and triage, fix and learn from
    /// what happens, with workers running the pipeline.
    Serve(ServeArgs),
    /// Inspect and steer the jobs of `serve`: list, show, retry a dead letter, drop.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Handle one GitHub Actions event as `serve` handles a webhook delivery: triage on
    /// `issues`, a fix on the trigger label or a writer's `/autotriage fix` comment.
    HandleEvent(HandleEventArgs),
    /// The AWS Lambda functions (run inside Lambda's provided runtime).
    #[command(subcommand)]
    Lambda(LambdaCommand),
}

/// `lambda …`
#[derive(Debug, Subcommand)]
pub enum LambdaCommand {
    /// API Gateway HTTP API events: verify, route and queue on the SQS FIFO queue.
    Webhook,
    /// SQS batches: triage in the function, fixes started on CodeBuild; only the
    /// messages that failed go back.
    Worker,
}

/// `handle-event`
#[derive(Debug, Args)]
pub struct HandleEventArgs {
    /// The event's name (`issues`, `issue_comment`…).
    #[arg(long, value_name = "NAME", env = "GITHUB_EVENT_NAME")]
    pub event: Option<String>,
    /// The file holding the event's payload (JSON).
    #[arg(long, value_name = "FILE", env = "GITHUB_EVENT_PATH")]
    pub event_path: Option<std::path::PathBuf>,
}

/// `serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8787",
        env = "AUTOTRIAGE_LISTEN"
    )]
    pub listen: String,
    /// Workers running jobs at once.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub workers: usize,
    /// First ask GitHub to redeliver the App webhook's failed deliveries of the last
    /// HOURS that the queue never received (GitHub does not redeliver by itself; needs
    /// `github.app_id`).
    #[arg(long, value_name = "HOURS")]
    pub catch_up: Option<u64>,
}

/// `queue …`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Jobs, newest first.
    List(QueueListArgs),
    /// One job in full.
    Show(QueueJobArgs),
    /// Queue a job again from its first attempt (a dead letter, say).
    Retry(QueueJobArgs),
    /// Remove a job that is not running.
    Drop(QueueJobArgs),
}

/// `queue list`
#[derive(Debug, Args)]
pub struct QueueListArgs {
    /// Only jobs in this state: queued, running, done, dead.
    #[arg(long, value_name = "STATE", value_parser = ["queued", "running", "done", "dead"])]
    pub state: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// `queue show|retry|drop`
#[derive(Debug, Args)]
pub struct QueueJobArgs {
    /// The job's id (a number; with `queue.backend: sqs`, the dead letter's message id).
    #[arg(value_name = "JOB")]
    pub id: String,
}

/// `memory …`
#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// Import issues: Markdown files or folders, gh JSON, CSV, or a `memory export`.
    Import(MemoryImportArgs),
    /// List stored issues.
    List(MemoryListArgs),
    /// Show one stored issue and its triage results.
    Show(MemoryRefArgs),
    /// Search stored issues by text, best first, with scores.
    Search(MemorySearchArgs),
    /// Counts: issues, labels, repositories, results, runs.
    Stats,
    /// Remove one issue and its triage results.
    Forget(MemoryRefArgs),
    /// Write everything as JSON lines (to stdout or a file).
    Export(MemoryExportArgs),
    /// Create the memory where it does not exist yet: the DynamoDB table (on-demand
    /// billing) for `memory.backend: dynamodb`, the SQLite file otherwise. Other
    /// commands never create a table.
    Init,
}

/// `memory import`
#[derive(Debug, Args)]
pub struct MemoryImportArgs {
    /// Sources: a .md file, a folder of them, gh JSON (`issues.json`, `issues.json#7`),
    /// CSV (`data.csv`, `data.csv#12`) or a `memory export` JSONL file.
    #[arg(required = true, value_name = "SOURCE")]
    pub sources: Vec<String>,
}

/// `memory list`
#[derive(Debug, Args)]
pub struct MemoryListArgs {
    /// Only this repository (owner/name).
    #[arg(long)]
    pub repo: Option<String>,
    /// Only issues with this label.
    #[arg(long)]
    pub label: Option<String>,
    /// Only open or closed issues.
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// Issue states for filters.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StateArg {
    /// Open issues.
    Open,
    /// Closed issues.
    Closed,
}

/// A stored issue.
#[derive(Debug, Args)]
pub struct MemoryRefArgs {
    /// `owner/repo#N` (or `#N` / `N` for this checkout's repository).
    #[arg(value_name = "REF")]
    pub reference: String,
}

/// `memory search`
#[derive(Debug, Args)]
pub struct MemorySearchArgs {
    /// Words to look for.
    #[arg(required = true, value_name = "TEXT")]
    pub text: Vec<String>,
    /// At most this many results.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
}

/// `memory export`
#[derive(Debug, Args)]
pub struct MemoryExportArgs {
    /// JSON lines (the only format; accepted for clarity in scripts).
    #[arg(long)]
    pub jsonl: bool,
    /// Write to this file (atomically) instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `runs …`
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List(RunsListArgs),
    /// Show a run's stages and files (an id or a unique prefix).
    Show(RunsShowArgs),
    /// Delete runs older than a number of days.
    Prune(RunsPruneArgs),
}

/// `runs list`
#[derive(Debug, Args)]
pub struct RunsListArgs {
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// `runs show`
#[derive(Debug, Args)]
pub struct RunsShowArgs {
    /// Run id (or a unique prefix).
    #[arg(value_name = "RUN")]
    pub run: String,
    /// Also print this file of the run (e.g. triage.json).
    #[arg(long, value_name = "NAME")]
    pub file: Option<String>,
}

/// `runs prune`
#[derive(Debug, Args)]
pub struct RunsPruneArgs {
    /// Delete runs created more than this many days ago (0 = all, at most 36500).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u64).range(0..=36500))]
    pub older_than: u64,
}

/// `init`
#[derive(Debug, Args)]
pub struct InitArgs {}

/// `config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the merged config and where each value came from.
    Show,
}

/// `completions`
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `triage`
#[derive(Debug, Args)]
pub struct TriageArgs {
    /// Issues: `owner/repo#N` or `#N` (stored in memory), `owner/repo` (its open issues in
    /// memory), a Markdown file or folder, `issues.json[#N]`, `data.csv[#ROW]`.
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
    /// Who decides: `offline` (no model), `model` (every issue), `auto` (offline, and
    /// the configured model for what the offline engine abstains on). Default:
    /// `triage.engine` (auto).
    #[arg(long, value_enum)]
    pub engine: Option<EngineArg>,
    /// Save every model exchange to this cassette (replay it with `--model replay:FILE`).
    #[arg(long, value_name = "CASSETTE")]
    pub record: Option<PathBuf>,
    /// Where `owner/repo#N` and `owner/repo` are read from: `memory`, `github`
    /// (GITHUB_TOKEN / GH_TOKEN / `gh auth token`), or `auto` (memory when it has them,
    /// else GitHub).
    #[arg(long, value_enum, default_value_t = SourceArg::Auto)]
    pub from: SourceArg,
    /// For `owner/repo`: `open`, `closed` or `all`.
    #[arg(long, default_value = "open", value_parser = ["open", "closed", "all"])]
    pub state: String,
    /// For `owner/repo`: only issues with this label.
    #[arg(long)]
    pub label: Option<String>,
    /// For `owner/repo` on GitHub: only issues updated since (ISO 8601, e.g. 2024-01-31).
    #[arg(long)]
    pub since: Option<String>,
    /// For `owner/repo`: at most this many issues.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write the triage to GitHub: add the labels the issue lacks, and create or
    /// update the one bot comment (missing information, likely duplicate). Without it
    /// nothing is written; with --dry-run it says what it would write.
    #[arg(long)]
    pub apply: bool,
}

/// Where GitHub references are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceArg {
    /// Memory when it has the issue(s), else GitHub.
    Auto,
    /// Memory only.
    Memory,
    /// GitHub only.
    Github,
}

impl From<crate::config::TriageEngine> for EngineArg {
    fn from(e: crate::config::TriageEngine) -> Self {
        match e {
            crate::config::TriageEngine::Offline => Self::Offline,
            crate::config::TriageEngine::Auto => Self::Auto,
            crate::config::TriageEngine::Model => Self::Model,
        }
    }
}

/// Triage engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// The offline classifier and rules only.
    Offline,
    /// The configured model for every issue.
    Model,
    /// Offline, and the model (when configured) where offline abstains.
    Auto,
}

/// `fix`
#[derive(Debug, Args)]
pub struct FixArgs {
    /// Issues, as for `triage`; `owner/repo` means its open issues in memory (with
    /// `--label`, those with that label).
    #[arg(value_name = "REF", required = true)]
    pub refs: Vec<String>,
    /// For `owner/repo`: only issues with this label.
    #[arg(long)]
    pub label: Option<String>,
    /// For `owner/repo`: at most this many issues.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Where the fix is published: `local` (branch `autotriage/issue-N` in the checkout
    /// and `pr.md`) or `github` (a draft PR). Default: github for a GitHub issue when a
    /// token is set, else local.
    #[arg(long, value_enum)]
    pub forge: Option<ForgeArg>,
    /// Start a new run even when an interrupted one of the issue could be resumed.
    #[arg(long)]
    pub restart: bool,
    /// Save every model exchange to this cassette (replay it with `--model replay:FILE`).
    #[arg(long, value_name = "CASSETTE")]
    pub record: Option<PathBuf>,
    /// Stop after this stage (default: as far as the setup allows; repair needs a model).
    #[arg(long, value_enum)]
    pub until: Option<FixStage>,
    /// The checkout to work in (default: the current one; its `origin` must be the
    /// issue's repository).
    #[arg(long, value_name = "DIR", env = "AUTOTRIAGE_REPO_DIR")]
    pub repo_dir: Option<PathBuf>,
    /// Ask the configured model to re-rank the top files (locate.rerank).
    #[arg(long, overrides_with = "no_rerank")]
    pub rerank: bool,
    /// Do not re-rank with the model, whatever the config says.
    #[arg(long)]
    pub no_rerank: bool,
    /// Where GitHub references are read from.
    #[arg(long, value_enum, default_value_t = SourceArg::Auto)]
    pub from: SourceArg,
    /// A maintainer's grant covers the issue as it was then (RFC 3339): later comments
    /// are left out (the service passes it to a fix it starts elsewhere).
    #[arg(long, value_name = "TIME", hide = true)]
    pub granted_as_of: Option<String>,
    /// …and its body as the maintainer read it (SHA-256): an edited body stops the fix.
    #[arg(long, value_name = "HEX", hide = true)]
    pub granted_body_sha256: Option<String>,
}

/// The stages of `fix`, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum FixStage {
    /// Kind, priority, labels, duplicates, what is missing.
    Triage,
    /// Ranked files and symbols with evidence; the code context.
    Locate,
    /// Candidate patches from the model, applied and kept as diffs.
    Repair,
    /// The repository's tests on the base and on each candidate; the chosen candidate.
    Test,
    /// The draft pull request (or local branch) for the chosen candidate.
    Pr,
}

/// `test`
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The issue (as for `triage`).
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Test this run's candidates (default: the latest run with candidates).
    #[arg(long, value_name = "ID", conflicts_with = "patch")]
    pub run: Option<String>,
    /// Test this patch (a unified diff or edit blocks) against HEAD, in a new run.
    #[arg(long, value_name = "FILE")]
    pub patch: Option<PathBuf>,
    /// Only this candidate of the run.
    #[arg(long, value_name = "N", conflicts_with = "patch")]
    pub candidate: Option<usize>,
    /// The checkout to test in (default: the current one; its `origin` must be the
    /// issue's repository).
    #[arg(long, value_name = "DIR", env = "AUTOTRIAGE_REPO_DIR")]
    pub repo_dir: Option<PathBuf>,
    /// Where GitHub references are read from.
    #[arg(long, value_enum, default_value_t = SourceArg::Auto)]
    pub from: SourceArg,
}

/// `pr`
#[derive(Debug, Args)]
pub struct PrArgs {
    /// The issue the patch fixes (as for `triage`).
    #[arg(value_name = "REF")]
    pub reference: String,
    /// The change, as a unified diff (`git diff` output).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "run",
        conflicts_with = "run"
    )]
    pub patch: Option<PathBuf>,
    /// Publish this run's chosen candidate (`test.json`'s `chosen`, else
    /// `candidates.json`'s), with its test evidence in the description.
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
    /// `local`: a branch in this checkout and `pr.md`; `github`: a branch and a draft
    /// pull request on GitHub (GITHUB_TOKEN), and a comment on the issue linking it.
    #[arg(long, value_enum, default_value_t = ForgeArg::Local)]
    pub forge: ForgeArg,
}

/// Where `pr` publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ForgeArg {
    /// This checkout.
    Local,
    /// GitHub.
    Github,
}

/// `eval …`
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Kind classification: train/test files or K-fold cross-validation.
    Triage(EvalTriageArgs),
    /// Duplicate retrieval: recall@1/5/10 and MRR over known duplicate pairs.
    Duplicates(EvalDuplicatesArgs),
    /// Agreement of the priority rules with people's priorities.
    Priority(EvalPriorityArgs),
    /// Edit application on damaged patches: the share applied and right, applied but
    /// wrong, and refused, overall and per kind of damage.
    Apply(EvalApplyArgs),
    /// Code localization on SWE-bench-format issues: file recall@1/3/5/10, MRR and
    /// context size.
    Localize(EvalLocalizeArgs),
    /// Known patches of SWE-bench-format instances replayed as the model's answer
    /// through the real `fix` flow: the share proven, false passes of bad patches,
    /// seconds per instance.
    Fix(EvalFixArgs),
}

/// `eval fix`
#[derive(Debug, Args)]
pub struct EvalFixArgs {
    /// JSON lines in SWE-bench format: `repo`, `instance_id`, `base_commit`, `patch`,
    /// `test_patch`, `FAIL_TO_PASS`, `problem_statement`, `version`.
    #[arg(long, value_name = "FILE.jsonl")]
    pub dataset: PathBuf,
    /// Folder of checkouts: `DIR/owner__name`, else `DIR/name` (holding the base commits).
    #[arg(long, value_name = "DIR")]
    pub repos: PathBuf,
    /// YAML or JSON: `owner/name` → `python` (interpreter or venv), `setup`, `command`
    /// (`{python}`, `{tests}` filled in; default `{python} -m pytest {tests}` on the
    /// FAIL_TO_PASS test files), and `versions: {VERSION: {…}}` overriding them.
    #[arg(long, value_name = "FILE")]
    pub envs: PathBuf,
    /// What is played as the model's answer: `real` (patch + test_patch), `tests-only`
    /// (test_patch alone), `other` (another instance's patch of the same repository +
    /// this test_patch).
    #[arg(long, value_enum, default_value_t = EvalPatches::Real)]
    pub patches: EvalPatches,
    /// Only these instances (repeatable).
    #[arg(long, value_name = "ID")]
    pub instance: Vec<String>,
    /// At most this many instances.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Time limit of each test command, seconds (preflight and `test.timeout`).
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    pub timeout: u64,
    /// `test.sandbox` for the replayed runs (`required` in agent mode).
    #[arg(long, default_value = "auto", value_parser = ["auto", "required", "off"])]
    pub sandbox: String,
    /// How the patch is played: `pipeline` (one answer holding the patch) or `agent`
    /// (the patch as the agent's `edit_file` calls, one per hunk, then `submit`).
    #[arg(long, default_value = "pipeline", value_parser = ["pipeline", "agent"])]
    pub mode: String,
    /// Keep the scratch clones and run folders in this folder (default: a temporary
    /// folder, removed at the end).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

/// Known patches `eval fix` can replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalPatches {
    /// The real fix with its test changes.
    Real,
    /// The test changes alone (a bad patch).
    TestsOnly,
    /// Another instance's fix with this one's test changes (a bad patch).
    Other,
}

/// `eval apply`
#[derive(Debug, Args)]
pub struct EvalApplyArgs {
    /// JSON lines with `patch` (a unified diff or SEARCH/REPLACE blocks), `files` (path →
    /// text before), `expected` (path → text after; null for a deleted file) and an
    /// optional `corruption`.
    #[arg(long, value_name = "FILE.jsonl")]
    pub cases: PathBuf,
}

/// `eval localize`
#[derive(Debug, Args)]
pub struct EvalLocalizeArgs {
    /// JSON lines with `repo`, `instance_id`, `base_commit`, `problem_statement` and
    /// `patch` (SWE-bench format).
    #[arg(long, value_name = "FILE.jsonl")]
    pub dataset: PathBuf,
    /// Folder of git repositories: `DIR/owner+name/repo` or `DIR/owner/name`, bare or not.
    #[arg(long, value_name = "DIR")]
    pub repos: PathBuf,
    /// Only these instances (repeatable).
    #[arg(long, value_name = "ID")]
    pub instance: Vec<String>,
    /// Only odd or even records (tune on one, report the other).
    #[arg(long, value_enum, default_value_t = LineSelection::All)]
    pub lines: LineSelection,
    /// At most this many instances.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Where the code indexes are cached (default: .autotriage/index).
    #[arg(long, value_name = "DIR")]
    pub index_dir: Option<PathBuf>,
}

/// `eval triage`
#[derive(Debug, Args)]
pub struct EvalTriageArgs {
    /// Training issues (any local source; CSV columns from sources.csv.*).
    #[arg(long, value_name = "FILE", requires = "test", conflicts_with = "data")]
    pub train: Option<String>,
    /// Test issues.
    #[arg(long, value_name = "FILE", requires = "train")]
    pub test: Option<String>,
    /// All issues, for cross-validation.
    #[arg(long, value_name = "FILE", required_unless_present = "train")]
    pub data: Option<String>,
    /// Folds for cross-validation.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..=50))]
    pub folds: u64,
    /// Seed for the folds and for training.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Abstention threshold (default: triage.threshold).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Only every other record: odd (1st, 3rd, …) or even ones (for tuning vs reporting).
    #[arg(long, value_enum, default_value_t = LineSelection::All)]
    pub lines: LineSelection,
    /// `offline` (train and test the classifier) or `model` (ask the configured model
    /// about every test issue; no training).
    #[arg(long, value_enum, default_value_t = EvalEngine::Offline)]
    pub engine: EvalEngine,
    /// Evaluate at most this many issues (after --lines), e.g. to cap model spend.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Training: L2 strength (for tuning experiments).
    #[arg(long, hide = true)]
    pub l2: Option<f32>,
    /// Training: passes over the data (for tuning experiments).
    #[arg(long, hide = true)]
    pub epochs: Option<usize>,
    /// Training: initial learning rate (for tuning experiments).
    #[arg(long, hide = true)]
    pub learning_rate: Option<f32>,
}

/// Engines `eval triage` can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalEngine {
    /// The offline classifier.
    Offline,
    /// The configured model.
    Model,
}

/// Which records of a file to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LineSelection {
    /// Every record.
    All,
    /// Records 1, 3, 5, …
    Odd,
    /// Records 2, 4, 6, …
    Even,
}

/// `eval duplicates`
#[derive(Debug, Args)]
pub struct EvalDuplicatesArgs {
    /// CSV of reports.
    #[arg(long, value_name = "FILE")]
    pub corpus: PathBuf,
    /// JSON lines with `issue_id` and `duplicate_id`.
    #[arg(long, value_name = "FILE")]
    pub pairs: PathBuf,
    /// Which pair lines to use: odd ones for tuning, even ones for reporting.
    #[arg(long, value_enum, default_value_t = LineSelection::All)]
    pub lines: LineSelection,
    /// Id column.
    #[arg(long, default_value = "Issue id")]
    pub id_column: String,
    /// Title column.
    #[arg(long, default_value = "Summary")]
    pub title_column: String,
    /// Body column.
    #[arg(long, default_value = "Description")]
    pub body_column: String,
    /// "Likely duplicate" threshold (default: triage.duplicate_threshold).
    #[arg(long)]
    pub threshold: Option<f64>,
}

/// `eval priority`
#[derive(Debug, Args)]
pub struct EvalPriorityArgs {
    /// CSV of reports with a priority column.
    #[arg(long, value_name = "FILE")]
    pub corpus: PathBuf,
    /// Priority column (Jira names Blocker/Critical/Major/Minor/Trivial, or P0–P3).
    #[arg(long, default_value = "Priority")]
    pub priority_column: String,
    /// Only odd or even records (tune on one, report the other).
    #[arg(long, value_enum, default_value_t = LineSelection::All)]
    pub lines: LineSelection,
    /// Title column.
    #[arg(long, default_value = "Summary")]
    pub title_column: String,
    /// Body column.
    #[arg(long, default_value = "Description")]
    pub body_column: String,
}
