//! The test stage: run the repository's own tests on the base commit and on each
//! candidate, in throwaway worktrees through a [`Runner`], and compare per test.
//!
//! The verdict of a candidate:
//! - `fixed`: some test failed on the base and passes with it (or a test it adds fails
//!   on the base and passes with it), and nothing that passed now fails;
//! - `unproven`: nothing broke, and no test shows the fix;
//! - `failing`: a test it adds fails;
//! - `regression`: a test that passed on the base fails (twice: a test whose result
//!   changes on a re-run is reported flaky instead);
//! - `suspect`: it changes how tests run (`conftest.py`, pytest/tox settings) or
//!   deletes, renames, skips or xfails tests: whatever it shows, a person must look;
//! - `error`: it could not be tested (no longer applies, setup failed, time limit).
//!
//! When a candidate changes or adds tests, the base is run with only its test changes:
//! a test that fails there and passes with the candidate proves the fix (an extended
//! test counts as much as a new one); a test that passes there shows nothing.

pub mod codebuild;
pub mod detect;
pub mod local;
pub mod results;
pub mod sandbox;
pub mod worktree;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ErrorKind, HasKind};
pub use detect::Flavor;
use results::{Outcome, Results};
use sandbox::Exec;

/// Why the test stage could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Neither config nor detection gave a command.
    #[error(
        "no test command found at {commit}: none of {}\n  fix: set one in autotriage.yaml, e.g.\n    test:\n      command: make check",
        detect::DETECTED_FROM
    )]
    NoCommand {
        /// The base commit, short.
        commit: String,
    },
    /// The setup command failed.
    #[error(
        "the setup command `{command}` failed ({status}); its last lines:\n{tail}\n  fix: correct test.setup in autotriage.yaml, or run it by hand in a clean checkout to see why"
    )]
    Setup {
        /// The command.
        command: String,
        /// `exit 1`, `timed out after 900 s`.
        status: String,
        /// The last lines of its output.
        tail: String,
    },
    /// The tests on the base commit could not finish.
    #[error(
        "the tests at the base commit {commit} {status}; their last lines:\n{tail}\n  fix: check test.command (and raise test.timeout if they are slow)"
    )]
    Baseline {
        /// The base commit, short.
        commit: String,
        /// What happened.
        status: String,
        /// The last lines of the output.
        tail: String,
    },
    /// bubblewrap is required and absent.
    #[error(
        "{0}\n  fix: install bubblewrap (e.g. `apt-get install bubblewrap`), or set test.sandbox: auto"
    )]
    Sandbox(String),
    /// A worktree could not be made (the base commit is missing, say).
    #[error(transparent)]
    Worktree(#[from] worktree::WorktreeError),
    /// The candidate does not apply to the base.
    #[error("candidate {id} no longer applies: {detail}")]
    Patch {
        /// The candidate.
        id: usize,
        /// The applier's message.
        detail: String,
    },
    /// The tests would import the package under test from somewhere else.
    #[error(
        "the tests would import `{package}` from {found}, not from the checkout under test, even with the worktree first on PYTHONPATH; a fix would be judged on that code\n  fix: use an environment where `{package}` is not installed from another checkout (or installed editable from this one), e.g. a venv of this repository in test.command"
    )]
    ImportsElsewhere {
        /// The package.
        package: String,
        /// Where it would come from.
        found: String,
    },
    /// Starting a process or reading a file failed.
    #[error("{0}")]
    Io(String),
    /// Stopped by Ctrl-C.
    #[error("interrupted")]
    Interrupted,
}

impl HasKind for VerifyError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NoCommand { .. }
            | Self::Sandbox(_)
            | Self::Patch { .. }
            | Self::ImportsElsewhere { .. } => ErrorKind::Usage,
            Self::Worktree(worktree::WorktreeError::MissingCommit { .. }) => ErrorKind::Usage,
            Self::Interrupted => ErrorKind::Interrupted,
            _ => ErrorKind::Runtime,
        }
    }
}

/// What a runner did with one worktree.
#[derive(Debug, Clone, Default)]
pub struct RunOutput {
    /// The setup command, when there is one.
    pub setup: Option<Exec>,
    /// The test command (absent when the setup failed).
    pub test: Option<Exec>,
    /// The JUnit XML it wrote, if any.
    pub junit: Option<String>,
}

/// Where tests run: this machine ([`local::LocalRunner`]) or a build service.
pub trait Runner: Send + Sync {
    /// A short description for the report (`local (bubblewrap)`).
    fn describe(&self) -> String;
    /// Whether runs are isolated from the network and the rest of the machine.
    fn sandboxed(&self) -> bool;
    /// Run `setup` (when given) and then `command` in `dir`, each within `timeout`.
    fn run(
        &self,
        dir: &Path,
        setup: Option<&str>,
        command: &str,
        timeout: Duration,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<RunOutput, VerifyError>;
}

/// The commands and limits of a test run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TestPlan {
    /// Run once before the tests in each worktree.
    pub setup: Option<String>,
    /// The test command as configured or detected.
    pub command: String,
    /// Whether it was detected (not configured).
    pub detected: bool,
    /// The runner it invokes.
    pub flavor: Flavor,
    /// Wall-clock limit per command, seconds.
    pub timeout_seconds: u64,
    /// Run the tests nearest the change first (`test.targeted`).
    #[serde(default = "yes")]
    pub targeted: bool,
    /// At most this many test files in that run (`test.max_targets`).
    #[serde(default = "default_max_targets")]
    pub max_targets: usize,
}

fn yes() -> bool {
    true
}

fn default_max_targets() -> usize {
    20
}

impl TestPlan {
    /// The plan for `base`: `test.command`, else the detected one.
    pub fn for_commit(
        setup: Option<String>,
        command: Option<String>,
        timeout: u64,
        read: &dyn Fn(&str) -> Option<String>,
        base: Oid,
    ) -> Result<Self, VerifyError> {
        let (command, detected) = match command {
            Some(c) => (c, false),
            None => (
                detect::detect(read).ok_or_else(|| VerifyError::NoCommand {
                    commit: base.to_string()[..12].to_string(),
                })?,
                true,
            ),
        };
        Ok(Self {
            flavor: detect::flavor(&command),
            setup,
            command,
            detected,
            timeout_seconds: timeout,
            targeted: true,
            max_targets: default_max_targets(),
        })
    }
}

/// One run of the test command, as `test.json` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SuiteRun {
    /// `baseline`, `candidate 1`, `candidate 1 targeted`, `candidate 1 re-run`,
    /// `candidate 1 tests only`.
    pub label: String,
    /// The command line run.
    pub command: String,
    /// Exit code of the test command (`None`: killed, timed out, or setup failed).
    pub exit_code: Option<i32>,
    /// Killed at the limit.
    pub timed_out: bool,
    /// Seconds, setup included.
    pub seconds: f64,
    /// Whether it ran in bubblewrap.
    pub sandboxed: bool,
    /// The setup's exit code, when there is a setup.
    pub setup_exit_code: Option<i32>,
    /// Per-test results.
    pub results: Results,
    /// The combined output (written to `tests/*.log`, not into `test.json`).
    #[serde(skip)]
    pub output: String,
}

impl SuiteRun {
    fn from_output(label: &str, command: &str, out: RunOutput) -> Self {
        let setup_exit_code = out.setup.as_ref().and_then(|s| s.exit_code);
        let mut output = String::new();
        let mut seconds = 0.0;
        if let Some(s) = &out.setup {
            output.push_str(&format!("$ {}\n{}\n", s.command, s.output));
            seconds += s.seconds;
        }
        let (exit_code, timed_out, sandboxed, results) = match &out.test {
            Some(t) => {
                output.push_str(&format!("$ {}\n{}", t.command, t.output));
                seconds += t.seconds;
                (
                    t.exit_code,
                    t.timed_out,
                    t.sandboxed,
                    results::read(out.junit.as_deref(), &t.output, t.ok()),
                )
            }
            None => (
                None,
                out.setup.as_ref().is_some_and(|s| s.timed_out),
                out.setup.as_ref().is_some_and(|s| s.sandboxed),
                Results::default(),
            ),
        };
        Self {
            label: label.into(),
            command: command.into(),
            exit_code,
            timed_out,
            seconds,
            sandboxed,
            setup_exit_code,
            results,
            output,
        }
    }

    /// The last `n` lines of the output.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.output.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// The verdict on a candidate (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// A test shows the fix, nothing broke.
    Fixed,
    /// Nothing broke, nothing shows the fix.
    Unproven,
    /// A test the candidate adds fails.
    Failing,
    /// A test that passed on the base fails.
    Regression,
    /// It changes how tests run, or removes, skips or xfails tests.
    Suspect,
    /// Could not be tested.
    Error,
}

impl Verdict {
    /// The word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Unproven => "unproven",
            Self::Failing => "failing",
            Self::Regression => "regression",
            Self::Suspect => "suspect",
            Self::Error => "error",
        }
    }
}

/// One candidate's test evidence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CandidateReport {
    /// The candidate's number.
    pub id: usize,
    /// The repair round that wrote it (0 = the first answers).
    #[serde(default)]
    pub round: usize,
    /// The verdict.
    pub verdict: Verdict,
    /// One line for people.
    pub summary: String,
    /// Failed on the base, pass now.
    pub fixed: Vec<String>,
    /// Passed on the base, fail now (twice).
    pub regressions: Vec<String>,
    /// Failed on the base and still fail.
    pub still_failing: Vec<String>,
    /// New tests (not on the base) that fail.
    pub new_failing: Vec<String>,
    /// New tests that pass.
    pub new_passing: Vec<String>,
    /// New tests that fail on the base (with only the candidate's test changes) and
    /// pass with the fix: reproductions.
    pub reproduced: Vec<String>,
    /// New tests that pass on the base too: they do not show the bug.
    pub not_reproduced: Vec<String>,
    /// Results that changed on a re-run.
    pub flaky: Vec<String>,
    /// Tests of the base that the candidate's run no longer has (deleted, renamed), or
    /// that it skips.
    #[serde(default)]
    pub disappeared: Vec<String>,
    /// Why it is `suspect`: the test infrastructure it changes.
    #[serde(default)]
    pub suspicious: Vec<String>,
    /// Skip and xfail markers it adds to test files (what they hide in the runs made
    /// is in `disappeared`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skips_added: Vec<String>,
    /// With the base's test infrastructure restored, does its proof still hold?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_without_infra: Option<bool>,
    /// Lines added plus removed.
    pub diff_lines: usize,
    /// Why it could not be tested.
    pub error: Option<String>,
    /// The runs made for it.
    pub runs: Vec<SuiteRun>,
}

impl CandidateReport {
    /// The report of a candidate before any run: `error`, no evidence yet.
    pub fn untested(cand: &CandidateInput) -> Self {
        Self {
            id: cand.id,
            round: cand.round,
            verdict: Verdict::Error,
            summary: String::new(),
            fixed: vec![],
            regressions: vec![],
            still_failing: vec![],
            new_failing: vec![],
            new_passing: vec![],
            reproduced: vec![],
            not_reproduced: vec![],
            flaky: vec![],
            disappeared: vec![],
            suspicious: vec![],
            skips_added: vec![],
            proof_without_infra: None,
            diff_lines: diff_lines(&cand.diff),
            error: None,
            runs: vec![],
        }
    }
}

/// A candidate to test.
#[derive(Debug, Clone)]
pub struct CandidateInput {
    /// Its number.
    pub id: usize,
    /// Its diff.
    pub diff: String,
    /// The repair round that wrote it.
    pub round: usize,
}

/// Everything the stage needs, borrowed.
pub struct Verifier<'a> {
    /// The user's repository (read only).
    pub repo: &'a Repository,
    /// The base commit.
    pub base: Oid,
    /// Commands and limits.
    pub plan: &'a TestPlan,
    /// Where tests run.
    pub runner: &'a dyn Runner,
    /// Worktrees are made under this folder, named `<prefix>-<label>`.
    pub worktrees: PathBuf,
    /// Prefix of worktree names (the run id), so `runs prune` can find them.
    pub prefix: String,
    /// Baseline cache folder.
    pub cache: PathBuf,
    /// Protected paths (`paths.protected`).
    pub protected: Vec<String>,
    /// Ctrl-C.
    pub stop: &'a (dyn Fn() -> bool + Sync),
    /// The base run a second time, made when a candidate seems to fix a failure.
    pub base_again: std::cell::OnceCell<Results>,
    /// What goes before the test command so Python imports the worktree's code
    /// (decided once, see [`Verifier::import_prefix`]).
    pub import_prefix: std::cell::OnceCell<String>,
}

/// A worktree ready for test runs.
struct Prepared {
    wt: worktree::Worktree,
    /// The setup command ran in it.
    set_up: std::cell::Cell<bool>,
}

/// The baseline and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    /// The run at the base commit.
    pub run: SuiteRun,
    /// Read from the cache rather than run now.
    pub cached: bool,
}

#[derive(Serialize, Deserialize)]
struct CachedBaseline {
    run: SuiteRun,
    output: String,
}

impl Verifier<'_> {
    fn short_base(&self) -> String {
        self.base.to_string()[..12].to_string()
    }

    fn cache_file(&self) -> PathBuf {
        let mut h = Sha256::new();
        h.update(self.base.to_string());
        h.update([0]);
        h.update(self.plan.setup.as_deref().unwrap_or(""));
        h.update([0]);
        h.update(&self.plan.command);
        h.update([0]);
        h.update(self.runner.describe());
        h.update([0]);
        // The interpreter or tool the command resolves to, and the environment that
        // picks it: a fixed environment must not reuse a broken baseline.
        h.update(environment_fingerprint(&self.plan.command));
        h.update([0]);
        h.update(self.import_prefix.get().map_or("", String::as_str));
        let hex: String = h
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        self.cache.join(format!("{}-{hex}.json", self.short_base()))
    }

    /// A worktree at the base with `tree` written over it (or the base itself).
    fn prepare(&self, label: &str, tree: Option<Oid>) -> Result<Prepared, VerifyError> {
        if (self.stop)() {
            return Err(VerifyError::Interrupted);
        }
        let name = format!("{}-{}", self.prefix, label.replace(' ', "-"));
        let wt = worktree::create(self.repo, self.base, &self.worktrees.join(name))?;
        if let Some(t) = tree {
            // The tree's objects are in the user's object database (`apply_patch`
            // wrote the new blobs there), which the worktree borrows.
            wt.write_tree(t)?;
        }
        Ok(Prepared {
            wt,
            set_up: std::cell::Cell::new(false),
        })
    }

    /// Run `command` on the base with `tree` written over it, in a worktree of its own.
    fn run_in_worktree(
        &self,
        label: &str,
        tree: Option<Oid>,
        targets: &[String],
    ) -> Result<SuiteRun, VerifyError> {
        let p = self.prepare(label, tree)?;
        self.run_in(&p, label, targets)
    }

    /// Run the command on the base with `tree` written over it, narrowed to `targets`
    /// (test ids the caller has checked), in a throwaway worktree: the agent's
    /// `run_tests`.
    pub fn run_tree(
        &self,
        label: &str,
        tree: Option<Oid>,
        targets: &[String],
    ) -> Result<SuiteRun, VerifyError> {
        self.run_in_worktree(label, tree, targets)
    }

    /// Run the tests in a prepared worktree; the setup runs once per worktree.
    fn run_in(
        &self,
        p: &Prepared,
        label: &str,
        targets: &[String],
    ) -> Result<SuiteRun, VerifyError> {
        if (self.stop)() {
            return Err(VerifyError::Interrupted);
        }
        let command = format!(
            "{}{}",
            self.import_prefix()?,
            detect::instrument(&self.plan.command, self.plan.flavor, targets)
        );
        let setup = self.plan.setup.as_deref().filter(|_| !p.set_up.get());
        let mut out = self.runner.run(
            &p.wt.dir,
            setup,
            &command,
            Duration::from_secs(self.plan.timeout_seconds),
            self.stop,
        )?;
        // Test output is prose printed by strangers' code: secrets it prints (even a
        // bare AWS key) are gone before anything is parsed, cached or written.
        let redactor = crate::redact::Redactor::from_env::<&str>(&[]);
        for exec in [out.setup.as_mut(), out.test.as_mut()]
            .into_iter()
            .flatten()
        {
            if let std::borrow::Cow::Owned(r) = redactor.redact_prose(&exec.output) {
                exec.output = r;
            }
        }
        if let Some(j) = out.junit.as_mut()
            && let std::borrow::Cow::Owned(r) = redactor.redact_prose(j)
        {
            *j = r;
        }
        if (self.stop)() {
            return Err(VerifyError::Interrupted);
        }
        if let Some(s) = out.setup.as_ref().filter(|s| !s.ok()) {
            return Err(VerifyError::Setup {
                command: s.command.clone(),
                status: status_of(s, self.plan.timeout_seconds),
                tail: s.tail(20),
            });
        }
        p.set_up.set(true);
        Ok(SuiteRun::from_output(label, &command, out))
    }

    /// The suite at the base commit, from the cache when this commit, setup, command
    /// and runner ran before.
    pub fn baseline(&self) -> Result<Baseline, VerifyError> {
        // Decided before the cache key: where the code under test is imported from.
        self.import_prefix()?;
        let file = self.cache_file();
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Ok(c) = serde_json::from_str::<CachedBaseline>(&text)
        {
            let mut run = c.run;
            run.output = c.output;
            return Ok(Baseline { run, cached: true });
        }
        let run = self.run_in_worktree("baseline", None, &[])?;
        // A baseline that could not run proves nothing and is never cached: the
        // command or its interpreter missing, tests that could not be collected, no
        // test executed at all.
        if let Some(why) = unusable_baseline(&run, self.plan.flavor) {
            return Err(VerifyError::Baseline {
                commit: self.short_base(),
                status: why,
                tail: run.tail(20),
            });
        }
        if run.timed_out || (run.exit_code.is_none() && run.results.tests.len() <= 1) {
            return Err(VerifyError::Baseline {
                commit: self.short_base(),
                status: if run.timed_out {
                    format!(
                        "took longer than test.timeout ({} s)",
                        self.plan.timeout_seconds
                    )
                } else {
                    "were killed".into()
                },
                tail: run.tail(20),
            });
        }
        let cached = CachedBaseline {
            run: run.clone(),
            output: run.output.clone(),
        };
        // A run that could not run returned an error above: what is left is worth keeping.
        if let Ok(text) = serde_json::to_string(&cached) {
            let _ = std::fs::create_dir_all(&self.cache);
            let _ = crate::runs::fs::write_atomic(&file, text.as_bytes());
        }
        Ok(Baseline { run, cached: false })
    }

    /// Test one candidate against the baseline: targeted tests first (a regression
    /// there stops it), then the suite, a re-run when something broke, and a
    /// reproduction check for the tests it adds.
    pub fn test_candidate(
        &self,
        cand: &CandidateInput,
        baseline: &Results,
        all_files: &[String],
    ) -> Result<CandidateReport, VerifyError> {
        let mut report = CandidateReport::untested(cand);
        let (tree, changed) =
            match crate::pr::apply_patch(self.repo, self.base, &cand.diff, &self.protected) {
                Ok((tree, changes, _)) => (
                    tree,
                    changes.into_iter().map(|c| c.path).collect::<Vec<_>>(),
                ),
                Err(e) => {
                    report.error = Some(e.to_string());
                    report.summary = format!("does not apply: {e}");
                    return Ok(report);
                }
            };
        let label = format!("candidate {}", cand.id);
        let read = |p: &str| crate::locate::files::read_at(self.repo, self.base, p);
        let read_new = |p: &str| read_tree_file(self.repo, tree, p).or_else(|| read(p));
        report.suspicious = suspicious_changes(&changed, &read, &read_new);
        report.skips_added = added_skips(&cand.diff);
        let mut files: Vec<String> = all_files.to_vec();
        files.extend(changed.iter().filter(|c| !all_files.contains(c)).cloned());
        // Never appended to a command that already names its tests (they would run
        // twice); off with `test.targeted: false`.
        let targets = if self.plan.targeted && !detect::names_tests(&self.plan.command) {
            detect::targets(
                self.plan.flavor,
                &changed,
                &files,
                &read_new,
                self.plan.max_targets,
            )
        } else {
            Vec::new()
        };
        let step = |r: Result<SuiteRun, VerifyError>,
                    report: &mut CandidateReport|
         -> Result<Option<SuiteRun>, VerifyError> {
            match r {
                Ok(run) => Ok(Some(run)),
                Err(VerifyError::Setup {
                    command,
                    status,
                    tail,
                }) => {
                    report.error = Some(format!("setup `{command}` {status}"));
                    report.summary = format!(
                        "setup failed ({status}): {}",
                        tail.lines().last().unwrap_or("")
                    );
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        };
        // One worktree for the candidate's targeted run, suite and re-runs.
        let prepared = self.prepare(&label, Some(tree))?;
        let passed = |run: &SuiteRun, t: &str| {
            run.results.tests.get(t) == Some(&Outcome::Passed)
                || (t == results::EXIT_CODE_TEST && run.exit_code == Some(0))
        };
        let timed_out = |report: &mut CandidateReport, run: SuiteRun| {
            report.error = Some(format!(
                "the run `{}` took longer than test.timeout ({} s)",
                run.label, self.plan.timeout_seconds
            ));
            report.summary = format!(
                "`{}` timed out after {} s{}",
                run.label,
                self.plan.timeout_seconds,
                if run.label.ends_with("targeted") {
                    " (narrow it with test.max_targets, or turn it off with test.targeted: false)"
                } else {
                    ""
                }
            );
            report.runs.push(run);
        };
        // Targets the candidate deletes cannot be run.
        let targets: Vec<String> = targets
            .into_iter()
            .filter(|t| t.starts_with("./") || t == "." || read_new(t).is_some())
            .collect();
        if !targets.is_empty() {
            let Some(run) = step(
                self.run_in(&prepared, &format!("{label} targeted"), &targets),
                &mut report,
            )?
            else {
                return Ok(report);
            };
            if run.timed_out {
                timed_out(&mut report, run);
                return Ok(report);
            }
            // A narrowed run's exit code says little (a path it could not collect, a
            // coverage threshold): only named tests count here; the suite decides.
            let mut broken =
                compare(baseline, &run.results, run.exit_code.is_some(), false).regressions;
            broken.retain(|t| t != results::EXIT_CODE_TEST);
            report.runs.push(run);
            if !broken.is_empty() {
                let rerun =
                    self.run_in(&prepared, &format!("{label} targeted re-run"), &targets)?;
                let (still, flaky): (Vec<String>, Vec<String>) =
                    broken.into_iter().partition(|t| !passed(&rerun, t));
                report.flaky = flaky;
                report.runs.push(rerun);
                if !still.is_empty() {
                    // A test it skips is gone from the evidence, not just broken.
                    if let Some(targeted) = report.runs.first() {
                        report.disappeared = still
                            .iter()
                            .filter(|t| targeted.results.tests.get(*t) == Some(&Outcome::Skipped))
                            .cloned()
                            .collect();
                    }
                    report.regressions = still;
                    report.verdict =
                        if report.suspicious.is_empty() && report.disappeared.is_empty() {
                            Verdict::Regression
                        } else {
                            Verdict::Suspect
                        };
                    report.summary = format!(
                        "breaks {} (targeted tests; the suite was not run)",
                        list(&report.regressions)
                    );
                    if report.verdict == Verdict::Suspect {
                        report.summary = format!("{}; {}", summarize(&report), report.summary);
                    }
                    return Ok(report);
                }
            }
        }
        let Some(run) = step(self.run_in(&prepared, &label, &[]), &mut report)? else {
            return Ok(report);
        };
        if run.timed_out {
            timed_out(&mut report, run);
            return Ok(report);
        }
        let mut cmp = compare(baseline, &run.results, run.exit_code.is_some(), true);
        report.runs.push(run);
        if !cmp.regressions.is_empty() {
            let rerun = self.run_in(&prepared, &format!("{label} re-run"), &[])?;
            let (still, flaky): (Vec<String>, Vec<String>) = cmp
                .regressions
                .iter()
                .cloned()
                .partition(|t| !passed(&rerun, t));
            for t in flaky {
                if !report.flaky.contains(&t) {
                    report.flaky.push(t);
                }
            }
            cmp.regressions = still;
            report.runs.push(rerun);
        }
        // A failure on the base that a second run of the base does not repeat is flaky,
        // not a fix.
        if !cmp.fixed.is_empty() {
            let again = self.base_rerun()?;
            let (fixed, flaky): (Vec<String>, Vec<String>) = cmp
                .fixed
                .into_iter()
                .partition(|t| again.tests.get(t) != Some(&Outcome::Passed));
            cmp.fixed = fixed;
            report.flaky.extend(flaky);
        }
        report.fixed = cmp.fixed;
        report.regressions = cmp.regressions;
        report.still_failing = cmp.still_failing;
        report.new_failing = cmp.new_failing;
        report.new_passing = cmp.new_passing;
        // Tests of the base the candidate's finished run no longer has, or now skips:
        // deleted, renamed, skipped. Listed, and never `fixed` automatically.
        if let Some(full) = report.runs.iter().rev().find(|r| r.label == label)
            && full.exit_code.is_some()
            && !full.timed_out
        {
            for (id, was) in &baseline.tests {
                if id == results::EXIT_CODE_TEST {
                    continue;
                }
                match full.results.tests.get(id) {
                    None => report.disappeared.push(id.clone()),
                    Some(Outcome::Skipped) if *was != Outcome::Skipped => {
                        report.disappeared.push(id.clone())
                    }
                    _ => {}
                }
            }
        }
        // When the candidate changes tests (or how they run), the evidence must come
        // from its code: run the base with only its test changes. A test that fails
        // there and passes with the candidate proves the fix — a new test or an
        // existing one it extends; one that passes there shows nothing.
        let test_only = only_test_files(&cand.diff, &detect::named_test_paths(&self.plan.command));
        if !test_only.is_empty()
            && let Ok((t_tree, _, _)) =
                crate::pr::apply_patch(self.repo, self.base, &test_only, &self.protected)
        {
            let tests_only = step(
                self.run_in_worktree(&format!("{label} tests only"), Some(t_tree), &[]),
                &mut report,
            )?;
            report.error = None;
            if let Some(run) = tests_only {
                let finished = !run.timed_out && run.exit_code.is_some();
                let failed_there =
                    |t: &str| finished && run.results.tests.get(t) == Some(&Outcome::Failed);
                for t in std::mem::take(&mut report.new_passing) {
                    if failed_there(&t) {
                        report.reproduced.push(t.clone());
                    } else {
                        report.not_reproduced.push(t.clone());
                    }
                    report.new_passing.push(t);
                }
                // Existing tests the candidate extends: they passed on the base (old
                // body), fail with the new body on the base, and pass with the fix.
                if let Some(full) = report.runs.iter().rev().find(|r| r.label == label) {
                    for (t, o) in &full.results.tests {
                        if *o == Outcome::Passed
                            && baseline.tests.get(t) == Some(&Outcome::Passed)
                            && failed_there(t)
                            && t != results::EXIT_CODE_TEST
                        {
                            report.reproduced.push(t.clone());
                        }
                    }
                }
                let (fixed, by_tests): (Vec<String>, Vec<String>) = report
                    .fixed
                    .iter()
                    .cloned()
                    .partition(|t| run.results.tests.get(t) != Some(&Outcome::Passed));
                report.fixed = fixed;
                report.not_reproduced.extend(by_tests);
                report.runs.push(run);
            } else {
                // Its test changes alone could not be run: nothing they show counts.
                report
                    .not_reproduced
                    .append(&mut report.new_passing.clone());
            }
        }
        // A proof that leans on changed test infrastructure must hold without it.
        let infra: Vec<String> = changed
            .iter()
            .filter(|p| is_test_infrastructure(p, &read, &read_new))
            .cloned()
            .collect();
        let claimed: Vec<String> = report
            .fixed
            .iter()
            .chain(&report.reproduced)
            .cloned()
            .collect();
        if !infra.is_empty() && !claimed.is_empty() {
            let without = without_files(&cand.diff, &infra);
            let restored = if without.trim().is_empty() {
                None
            } else {
                crate::pr::apply_patch(self.repo, self.base, &without, &self.protected)
                    .ok()
                    .map(|(t, _, _)| t)
            };
            let holds = match restored {
                Some(t) => match step(
                    self.run_in_worktree(&format!("{label} infra restored"), Some(t), &[]),
                    &mut report,
                )? {
                    Some(run) => {
                        let ok = claimed
                            .iter()
                            .all(|t| run.results.tests.get(t) == Some(&Outcome::Passed));
                        report.runs.push(run);
                        ok
                    }
                    None => false,
                },
                None => false,
            };
            report.error = None;
            report.proof_without_infra = Some(holds);
        }
        report.verdict = if !report.suspicious.is_empty() || !report.disappeared.is_empty() {
            Verdict::Suspect
        } else if !report.regressions.is_empty() {
            Verdict::Regression
        } else if !report.new_failing.is_empty() {
            Verdict::Failing
        } else if !report.fixed.is_empty() || !report.reproduced.is_empty() {
            Verdict::Fixed
        } else {
            Verdict::Unproven
        };
        report.summary = summarize(&report);
        Ok(report)
    }

    /// For a Python repository: make sure the tests import the worktree's code. Users'
    /// environments often have the package installed from another checkout (an
    /// editable install elsewhere, a `src/` layout that only installs make
    /// importable); tests would then judge that code, not the candidate's. The
    /// packages at the top of the tree (or under `src/`) are located with the test
    /// command's interpreter in a worktree; when one resolves elsewhere, the worktree
    /// (and its `src/`) go first on `PYTHONPATH`; when it still does, the stage stops
    /// naming where it would have imported from. Returns the prefix for the command.
    pub fn import_prefix(&self) -> Result<&str, VerifyError> {
        if let Some(p) = self.import_prefix.get() {
            return Ok(p);
        }
        let prefix = self.decide_import_prefix()?;
        Ok(self.import_prefix.get_or_init(|| prefix))
    }

    fn decide_import_prefix(&self) -> Result<String, VerifyError> {
        // Locally only: a probe on a build service would be a build of its own.
        if self.plan.flavor != Flavor::Pytest || !self.runner.describe().starts_with("local") {
            return Ok(String::new());
        }
        let paths = tree_paths(self.repo, self.base);
        let packages = python_packages(&paths);
        if packages.is_empty() {
            return Ok(String::new());
        }
        let python = python_of(&self.plan.command);
        let names: Vec<&str> = packages.iter().map(|(n, _)| n.as_str()).collect();
        let script = format!(
            "import importlib.util, os\nfor n in {names:?}:\n    try:\n        s = importlib.util.find_spec(n)\n    except Exception:\n        s = None\n    o = (s.origin or (list(s.submodule_search_locations or []) or [''])[0]) if s else ''\n    print('AUTOTRIAGE-IMPORT', n, os.path.realpath(o) if o else '-')\n"
        );
        let src_layout = packages.iter().any(|(_, p)| p.starts_with("src/"));
        let with_path = if src_layout {
            "PYTHONPATH=\"$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}\" "
        } else {
            "PYTHONPATH=\"$PWD${PYTHONPATH:+:$PYTHONPATH}\" "
        };
        let p = self.prepare("import check", None)?;
        let dir = std::fs::canonicalize(&p.wt.dir).unwrap_or(p.wt.dir.clone());
        let probe = |prefix: &str| -> Result<Vec<(String, String)>, VerifyError> {
            let out = self.runner.run(
                &p.wt.dir,
                None,
                &format!("{prefix}{python} -c {}", detect::shell_quote(&script)),
                Duration::from_secs(120),
                self.stop,
            )?;
            let text = out.test.map(|e| e.output).unwrap_or_default();
            // Each package not imported from the worktree: found elsewhere, or not
            // found at all (`-`: a `src/` layout nothing installed).
            Ok(text
                .lines()
                .filter_map(|l| l.strip_prefix("AUTOTRIAGE-IMPORT "))
                .filter_map(|l| l.split_once(' '))
                .filter(|(_, o)| !Path::new(o).starts_with(&dir))
                .map(|(n, o)| (n.to_string(), o.to_string()))
                .collect())
        };
        if probe("")?.is_empty() {
            return Ok(String::new());
        }
        // Still not found is left to the tests to report; found elsewhere is not.
        match probe(with_path)?.into_iter().find(|(_, o)| o != "-") {
            None => Ok(with_path.to_string()),
            Some((package, found)) => Err(VerifyError::ImportsElsewhere { package, found }),
        }
    }

    /// A second run of the base (once per stage), to tell flaky failures from real ones.
    fn base_rerun(&self) -> Result<&Results, VerifyError> {
        if let Some(r) = self.base_again.get() {
            return Ok(r);
        }
        let run = self.run_in_worktree("baseline re-run", None, &[])?;
        Ok(self.base_again.get_or_init(|| run.results))
    }
}

/// The outcome of one test-file read from a tree.
fn read_tree_file(repo: &Repository, tree: Oid, path: &str) -> Option<String> {
    let tree = repo.find_tree(tree).ok()?;
    let entry = tree.get_path(Path::new(path)).ok()?;
    let blob = repo.find_blob(entry.id()).ok()?;
    std::str::from_utf8(blob.content()).ok().map(String::from)
}

fn status_of(e: &Exec, timeout: u64) -> String {
    if e.timed_out {
        format!("timed out after {timeout} s")
    } else {
        match e.exit_code {
            Some(c) => format!("exit {c}"),
            None => "killed by a signal".into(),
        }
    }
}

/// Per-test comparison of a run with the baseline.
#[derive(Debug, Default, PartialEq)]
pub struct Comparison {
    /// fail → pass.
    pub fixed: Vec<String>,
    /// pass → fail (or pass → missing when the run failed).
    pub regressions: Vec<String>,
    /// fail → fail.
    pub still_failing: Vec<String>,
    /// (absent) → fail.
    pub new_failing: Vec<String>,
    /// (absent) → pass.
    pub new_passing: Vec<String>,
}

/// Compare `after` with `before`. In a run of the whole suite (`full`), a test that
/// passed before and is missing after counts as broken when the run did not finish
/// normally (`finished` false) or when it failed (a compile error hides every test).
pub fn compare(before: &Results, after: &Results, finished: bool, full: bool) -> Comparison {
    let mut c = Comparison::default();
    let after_failed = after.tests.values().any(|o| *o == Outcome::Failed);
    for (id, now) in &after.tests {
        match (before.tests.get(id), now) {
            (Some(Outcome::Failed), Outcome::Passed) => c.fixed.push(id.clone()),
            // Skipping a test that passed hides it: as bad as breaking it.
            (Some(Outcome::Passed), Outcome::Failed | Outcome::Skipped) => {
                c.regressions.push(id.clone())
            }
            (Some(Outcome::Failed), Outcome::Failed) => c.still_failing.push(id.clone()),
            (None, Outcome::Failed) => c.new_failing.push(id.clone()),
            (None, Outcome::Passed) => c.new_passing.push(id.clone()),
            _ => {}
        }
    }
    // The exit-code stand-in is not a test the candidate adds.
    if let Some(i) = c
        .new_failing
        .iter()
        .position(|t| t == results::EXIT_CODE_TEST)
    {
        let t = c.new_failing.remove(i);
        c.regressions.push(t);
    }
    c.new_passing.retain(|t| t != results::EXIT_CODE_TEST);
    if full && (!finished || after_failed) {
        for (id, was) in &before.tests {
            if *was == Outcome::Passed
                && !after.tests.contains_key(id)
                && id != results::EXIT_CODE_TEST
            {
                c.regressions.push(id.clone());
            }
        }
    }
    c.regressions.sort();
    c
}

fn list(tests: &[String]) -> String {
    let shown: Vec<&str> = tests.iter().take(3).map(String::as_str).collect();
    if tests.len() > 3 {
        format!("{} and {} more", shown.join(", "), tests.len() - 3)
    } else {
        shown.join(", ")
    }
}

fn summarize(r: &CandidateReport) -> String {
    let mut parts = Vec::new();
    if r.verdict == Verdict::Suspect {
        let mut why = r.suspicious.clone();
        if !r.disappeared.is_empty() {
            why.push(format!(
                "{} test(s) of the base are gone or skipped: {}",
                r.disappeared.len(),
                list(&r.disappeared)
            ));
        }
        parts.push(format!(
            "suspect, a person must review it: {}",
            why.join("; ")
        ));
        if let Some(holds) = r.proof_without_infra {
            parts.push(if holds {
                "its proof holds with the base's test infrastructure".to_string()
            } else {
                "its proof does NOT hold with the base's test infrastructure".to_string()
            });
        }
    }
    match r.verdict {
        Verdict::Regression => parts.push(format!("breaks {}", list(&r.regressions))),
        Verdict::Failing => parts.push(format!("its new tests fail: {}", list(&r.new_failing))),
        _ => {}
    }
    if !r.fixed.is_empty() {
        parts.push(format!(
            "{} failing → passing ({})",
            r.fixed.len(),
            list(&r.fixed)
        ));
    }
    if !r.reproduced.is_empty() {
        parts.push(format!(
            "{} new test(s) fail without the fix and pass with it ({})",
            r.reproduced.len(),
            list(&r.reproduced)
        ));
    }
    if !r.not_reproduced.is_empty() {
        parts.push(format!(
            "{} new test(s) pass without the fix too",
            r.not_reproduced.len()
        ));
    }
    if !r.still_failing.is_empty() {
        parts.push(format!(
            "{} still failing as on the base",
            r.still_failing.len()
        ));
    }
    if !r.flaky.is_empty() {
        parts.push(format!("flaky: {}", list(&r.flaky)));
    }
    if !r.skips_added.is_empty() {
        parts.push(r.skips_added.join(", "));
    }
    if r.verdict == Verdict::Unproven {
        parts.push("no test shows the fix; nothing broke".into());
    }
    if r.verdict == Verdict::Fixed && r.regressions.is_empty() {
        parts.push("no regressions".into());
    }
    parts.join("; ")
}

/// Lines added plus removed in a unified diff.
pub fn diff_lines(diff: &str) -> usize {
    diff.lines()
        .filter(|l| {
            (l.starts_with('+') && !l.starts_with("+++"))
                || (l.starts_with('-') && !l.starts_with("---"))
        })
        .count()
}

/// The parts of a `diff --git` patch that change test files: test files by their path,
/// and the files and folders the test command names (`named`).
pub fn only_test_files(diff: &str, named: &[String]) -> String {
    let mut out = String::new();
    let mut keep = false;
    for line in diff.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            let path = rest
                .split_whitespace()
                .last()
                .map(|p| p.trim_start_matches("b/"))
                .unwrap_or("");
            keep = detect::is_test_support(path)
                || named
                    .iter()
                    .any(|n| path == n || path.starts_with(&format!("{n}/")));
        }
        if keep {
            out.push_str(line);
        }
    }
    out
}

/// The Python packages a repository holds: folders with an `__init__.py` at the top
/// or under `src/`, other than tests, docs and examples.
pub fn python_packages(paths: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for p in paths {
        let rest = p.strip_prefix("src/").unwrap_or(p);
        let Some(name) = rest.strip_suffix("/__init__.py") else {
            continue;
        };
        if name.contains('/')
            || matches!(
                name.to_ascii_lowercase().as_str(),
                "tests"
                    | "test"
                    | "testing"
                    | "docs"
                    | "doc"
                    | "examples"
                    | "example"
                    | "benchmarks"
                    | "scripts"
            )
        {
            continue;
        }
        let dir = p.trim_end_matches("/__init__.py").to_string();
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.to_string(), dir));
        }
    }
    out
}

/// The interpreter a pytest command runs under: its program when that is a Python,
/// else `python3`.
fn python_of(command: &str) -> String {
    command
        .split_whitespace()
        .find(|w| !w.contains('='))
        .filter(|w| {
            w.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("python"))
        })
        .unwrap_or("python3")
        .to_string()
}

/// Why a baseline run cannot serve as the base of a comparison, if it cannot.
fn unusable_baseline(run: &SuiteRun, flavor: Flavor) -> Option<String> {
    let real_tests = run
        .results
        .tests
        .keys()
        .filter(|t| *t != results::EXIT_CODE_TEST)
        .count();
    match run.exit_code {
        Some(126) | Some(127) => {
            return Some(format!(
                "could not start (exit {}: the command or its interpreter was not found or is not executable)",
                run.exit_code.unwrap_or_default()
            ));
        }
        Some(4) if flavor == Flavor::Pytest => {
            return Some("were refused by pytest (exit 4: a usage error, such as a test path that does not exist)".into());
        }
        Some(5) if flavor == Flavor::Pytest => {
            return Some("collected no tests (pytest exit 5)".into());
        }
        _ => {}
    }
    // pytest's own verdict line (`!!! Interrupted: 1 error during collection !!!`)
    // with its exit code 2 — not the words in some test's output.
    if flavor == Flavor::Pytest
        && run.exit_code == Some(2)
        && run
            .output
            .lines()
            .any(|l| l.contains("Interrupted:") && l.contains("during collection"))
    {
        return Some("could not be collected (pytest reported errors during collection)".into());
    }
    if real_tests == 0 && run.exit_code.is_some_and(|c| c != 0) && !run.timed_out {
        return Some(format!(
            "ran no test (exit {})",
            run.exit_code.unwrap_or_default()
        ));
    }
    None
}

/// What picks the program a test command runs: its resolved path (and, for a Python
/// interpreter, its version and prefix) and the variables that steer it.
pub fn environment_fingerprint(command: &str) -> String {
    let program = command
        .split_whitespace()
        .find(|w| !w.contains('=') || w.starts_with('-'))
        .unwrap_or("");
    let mut out = format!("program={program}\n");
    for var in ["PATH", "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH"] {
        out.push_str(&format!(
            "{var}={}\n",
            std::env::var(var).unwrap_or_default()
        ));
    }
    let resolved = if program.contains('/') {
        Some(PathBuf::from(program))
    } else {
        sandbox::find_on_path(program)
    };
    if let Some(path) = resolved {
        let real = std::fs::canonicalize(&path).unwrap_or(path.clone());
        let modified = std::fs::metadata(&real)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or_default();
        out.push_str(&format!(
            "path={} real={} mtime={modified}\n",
            path.display(),
            real.display()
        ));
        let name = real.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if (name.starts_with("python") || program.starts_with("python"))
            && let Ok(o) = std::process::Command::new(&path)
                .args(["-c", "import sys; print(sys.version); print(sys.prefix)"])
                .output()
        {
            out.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    out
}

/// A file that decides how tests run: `conftest.py`, `pytest.ini`, `tox.ini`,
/// `noxfile.py`, or the pytest/tox/coverage sections of `setup.cfg` and
/// `pyproject.toml` when the candidate changes them.
pub fn is_test_infrastructure(
    path: &str,
    before: &dyn Fn(&str) -> Option<String>,
    after: &dyn Fn(&str) -> Option<String>,
) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    match name.as_str() {
        "conftest.py" | "pytest.ini" | "tox.ini" | "noxfile.py" | ".coveragerc" => true,
        "setup.cfg" | "pyproject.toml" => {
            let sections = |text: Option<String>| -> String {
                let mut keep = false;
                let mut out = String::new();
                for line in text.unwrap_or_default().lines() {
                    let t = line.trim();
                    if t.starts_with('[') {
                        let l = t.to_ascii_lowercase();
                        keep = [
                            "[tool:pytest",
                            "[pytest",
                            "[tox",
                            "[testenv",
                            "[tool.pytest",
                            "[tool.tox",
                            "[coverage",
                            "[tool.coverage",
                        ]
                        .iter()
                        .any(|p| l.starts_with(p));
                    }
                    if keep {
                        out.push_str(t);
                        out.push('\n');
                    }
                }
                out
            };
            sections(before(path)) != sections(after(path))
        }
        _ => false,
    }
}

/// Why a candidate's change to tests needs a person: the test infrastructure it
/// changes. (Skips and xfails are judged by what they do: a test of the base that the
/// candidate's run skips or no longer has is in `disappeared`.)
fn suspicious_changes(
    changed: &[String],
    before: &dyn Fn(&str) -> Option<String>,
    after: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    changed
        .iter()
        .filter(|p| is_test_infrastructure(p, before, after))
        .map(|p| format!("changes how tests run ({p})"))
        .collect()
}

/// The skip and xfail markers a candidate adds to test files, for the record: a real
/// fix may add a `skipif` for another platform; what it skips in the runs made counts
/// through `disappeared`.
fn added_skips(diff: &str) -> Vec<String> {
    const SKIPS: &[&str] = &[
        "pytest.mark.skip",
        "pytest.mark.xfail",
        "pytest.skip(",
        "pytest.xfail(",
        "unittest.skip",
        "unittest.expectedFailure",
        "#[ignore",
        "t.Skip(",
        ".skip(",
        "xit(",
        "xdescribe(",
    ];
    let mut out: Vec<String> = Vec::new();
    let mut file = String::new();
    for line in diff.lines() {
        if let Some(rest) = line.strip_prefix("+++ ") {
            file = rest.trim_start_matches("b/").to_string();
            continue;
        }
        if line.starts_with('+')
            && detect::is_test_file(&file)
            && let Some(m) = SKIPS.iter().find(|m| line.contains(*m))
        {
            let what = format!("adds `{}` in {file}", m.trim_end_matches('('));
            if !out.contains(&what) {
                out.push(what);
            }
        }
    }
    out
}

/// The parts of a `diff --git` patch that do not touch `paths`.
pub fn without_files(diff: &str, paths: &[String]) -> String {
    let mut out = String::new();
    let mut keep = true;
    for line in diff.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            let path = rest
                .split_whitespace()
                .last()
                .map(|p| p.trim_start_matches("b/"))
                .unwrap_or("");
            keep = !paths.iter().any(|p| p == path);
        }
        if keep {
            out.push_str(line);
        }
    }
    out
}

/// The candidate to publish: a `fixed` one, then fewer tests still failing, then the
/// smallest diff, then the model's order. The best attempt when none is `fixed`.
pub fn choose(reports: &[CandidateReport]) -> (Option<usize>, Option<usize>) {
    let mut ranked: Vec<&CandidateReport> = reports.iter().collect();
    ranked.sort_by_key(|r| (r.verdict, r.still_failing.len(), r.diff_lines, r.id));
    let best = ranked
        .first()
        .filter(|r| r.verdict != Verdict::Error)
        .map(|r| r.id);
    let chosen = ranked
        .first()
        .filter(|r| r.verdict == Verdict::Fixed)
        .map(|r| r.id);
    (chosen, best)
}

/// Per-verdict counts, for summaries.
pub fn counts(reports: &[CandidateReport]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for r in reports {
        *m.entry(r.verdict.as_str()).or_insert(0) += 1;
    }
    m
}

/// `test.json`: the baseline, each candidate's evidence, the chosen one and the verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TestReport {
    /// The base commit.
    pub base_commit: String,
    /// Commands and limits.
    pub plan: TestPlan,
    /// Where the tests ran.
    pub runner: String,
    /// Whether they ran sandboxed.
    pub sandboxed: bool,
    /// The suite on the base.
    pub baseline: Baseline,
    /// Each candidate.
    pub candidates: Vec<CandidateReport>,
    /// The candidate to publish (a `fixed` one).
    pub chosen: Option<usize>,
    /// The best attempt, kept for review when none is chosen.
    pub best: Option<usize>,
    /// The chosen candidate's verdict, else the best attempt's (`error` when none).
    pub verdict: String,
    /// One line: what the tests showed.
    pub summary: String,
    /// Rounds with feedback after the first (`repair.rounds`) that were tested.
    #[serde(default)]
    pub rounds: usize,
    /// Whether and how the issue was reproduced before repair (`repair.reproduce`):
    /// status, why, the tests and files of the frozen test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reproduction: Option<serde_json::Value>,
}

impl TestReport {
    /// Put the report together and choose.
    pub fn new(
        base: Oid,
        plan: TestPlan,
        runner: &dyn Runner,
        baseline: Baseline,
        candidates: Vec<CandidateReport>,
    ) -> Self {
        let (chosen, best) = choose(&candidates);
        let pick = chosen.or(best);
        let report = pick.and_then(|id| candidates.iter().find(|c| c.id == id));
        let verdict = report.map_or("error", |r| r.verdict.as_str()).to_string();
        let failing_before = baseline.run.results.with(Outcome::Failed).len();
        let passing_before = baseline.run.results.with(Outcome::Passed).len();
        let summary = match report {
            Some(r) => format!(
                "candidate {} {}: {} (base: {} passing, {} failing; `{}`, {})",
                r.id,
                r.verdict.as_str(),
                r.summary,
                passing_before,
                failing_before,
                plan.command,
                runner.describe()
            ),
            None => format!(
                "no candidate could be tested (base: {passing_before} passing, {failing_before} failing)"
            ),
        };
        Self {
            base_commit: base.to_string(),
            runner: runner.describe(),
            sandboxed: runner.sandboxed(),
            plan,
            baseline,
            candidates,
            chosen,
            best,
            rounds: 0,
            reproduction: None,
            verdict,
            summary,
        }
    }
}

/// Every file path in `commit`'s tree.
pub fn tree_paths(repo: &Repository, commit: Oid) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(tree) = repo.find_commit(commit).and_then(|c| c.tree()) {
        let _ = tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob)
                && let Ok(name) = entry.name()
            {
                out.push(format!("{dir}{name}"));
            }
            git2::TreeWalkResult::Ok
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(pairs: &[(&str, Outcome)]) -> Results {
        Results {
            source: "junit".into(),
            tests: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn comparison_sorts_tests_into_fixed_broken_and_new() {
        use Outcome::*;
        let before = res(&[("a", Failed), ("b", Passed), ("c", Failed), ("d", Passed)]);
        let after = res(&[
            ("a", Passed),
            ("b", Failed),
            ("c", Failed),
            ("e", Passed),
            ("f", Failed),
        ]);
        let c = compare(&before, &after, true, true);
        assert_eq!(c.fixed, vec!["a"]);
        // `d` is missing from a run with failures: it counts as broken.
        assert_eq!(c.regressions, vec!["b", "d"]);
        assert_eq!(c.still_failing, vec!["c"]);
        assert_eq!(c.new_failing, vec!["f"]);
        assert_eq!(c.new_passing, vec!["e"]);
        // A targeted run leaves most tests out: missing ones are not broken.
        let c = compare(&before, &after, true, false);
        assert_eq!(c.regressions, vec!["b"]);
    }

    #[test]
    fn the_chosen_candidate_is_fixed_then_smallest() {
        let mk = |id, verdict, diff_lines| CandidateReport {
            id,
            round: 0,
            verdict,
            summary: String::new(),
            fixed: vec![],
            regressions: vec![],
            still_failing: vec![],
            new_failing: vec![],
            new_passing: vec![],
            reproduced: vec![],
            not_reproduced: vec![],
            flaky: vec![],
            disappeared: vec![],
            suspicious: vec![],
            skips_added: vec![],
            proof_without_infra: None,
            diff_lines,
            error: None,
            runs: vec![],
        };
        let r = vec![
            mk(1, Verdict::Regression, 2),
            mk(2, Verdict::Fixed, 9),
            mk(3, Verdict::Fixed, 4),
        ];
        assert_eq!(choose(&r), (Some(3), Some(3)));
        let r = vec![mk(1, Verdict::Regression, 2), mk(2, Verdict::Unproven, 9)];
        assert_eq!(choose(&r), (None, Some(2)));
    }

    #[test]
    fn test_infrastructure_is_the_files_and_sections_that_decide_how_tests_run() {
        let before = |p: &str| match p {
            "setup.cfg" => Some("[metadata]\nname = x\n[tool:pytest]\naddopts = -q\n".to_string()),
            "pyproject.toml" => Some("[project]\nname = \"x\"\n".to_string()),
            _ => None,
        };
        let after = |p: &str| match p {
            "setup.cfg" => Some("[metadata]\nname = y\n[tool:pytest]\naddopts = -q\n".to_string()),
            "pyproject.toml" => Some(
                "[project]\nname = \"x\"\n[tool.pytest.ini_options]\naddopts = \"-p cheat\"\n"
                    .to_string(),
            ),
            _ => None,
        };
        assert!(is_test_infrastructure("tests/conftest.py", &before, &after));
        assert!(is_test_infrastructure("tox.ini", &before, &after));
        // Only the metadata of setup.cfg changed: not how tests run.
        assert!(!is_test_infrastructure("setup.cfg", &before, &after));
        assert!(is_test_infrastructure("pyproject.toml", &before, &after));
        assert!(!is_test_infrastructure("calc/ops.py", &before, &after));
        let diff = "diff --git a/tests/test_x.py b/tests/test_x.py\n--- a/tests/test_x.py\n+++ b/tests/test_x.py\n@@ -1,2 +1,3 @@\n+@pytest.mark.xfail\n def test_x():\n     pass\n";
        assert_eq!(
            added_skips(diff),
            vec!["adds `pytest.mark.xfail` in tests/test_x.py".to_string()]
        );
        assert_eq!(
            suspicious_changes(
                &["tests/test_x.py".into(), "tests/conftest.py".into()],
                &before,
                &after
            ),
            vec!["changes how tests run (tests/conftest.py)".to_string()]
        );
        assert_eq!(
            without_files(
                &format!("{diff}diff --git a/conftest.py b/conftest.py\n+x\n"),
                &["conftest.py".into()]
            ),
            diff
        );
    }

    #[test]
    fn only_the_test_files_of_a_patch_are_kept() {
        let diff = "diff --git a/src/x.py b/src/x.py\n--- a/src/x.py\n+++ b/src/x.py\n@@ -1 +1 @@\n-a\n+b\ndiff --git a/tests/test_x.py b/tests/test_x.py\n--- a/tests/test_x.py\n+++ b/tests/test_x.py\n@@ -1 +1,2 @@\n x\n+y\n";
        assert_eq!(
            only_test_files(diff, &[]),
            "diff --git a/tests/test_x.py b/tests/test_x.py\n--- a/tests/test_x.py\n+++ b/tests/test_x.py\n@@ -1 +1,2 @@\n x\n+y\n"
        );
        assert_eq!(diff_lines(diff), 3);
    }
}
