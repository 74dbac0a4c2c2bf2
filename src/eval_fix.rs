//! `eval fix`: known patches (SWE-bench format: `patch` + `test_patch`) replayed as the
//! model's answer through the real `fix` flow, to see whether its verdicts hold on real
//! bugs in real Python environments.
//!
//! For each instance, in scratch clones of the checkout at its base commit:
//! 1. **Preflight**, outside autotriage (plain subprocesses, no sandbox): the instance's
//!    `FAIL_TO_PASS` tests must fail (or be missing) at base + `test_patch` and pass at
//!    base + `patch` + `test_patch`. The checkout (and its `src/`) is put first on
//!    `PYTHONPATH` there, so the preflight tests the checkout whatever the environment
//!    has installed. An instance that fails it is excluded, with the reason.
//! 2. **Replay**: the binary itself runs `fix ISSUE.md --json --force --yes` in a fresh
//!    clone at the base commit, with a generated configuration (the test command,
//!    `repair.candidates: 1`, sandbox as configured) and a replay cassette whose
//!    wildcard exchange answers every model request with the patch as a unified diff:
//!    - `real`: `patch` + `test_patch` (should be `fixed`);
//!    - `tests-only`: `test_patch` alone (must not be `fixed`);
//!    - `other`: the `patch` of another instance of the same repository (the next one
//!      in the dataset, cyclically, that applies here) + this `test_patch`, so the
//!      tests that show the bug are present and a wrong fix must not pass them.
//! 3. **Judgement**: the verdict, whether the published branch's tree equals base +
//!    `patch` + `test_patch`, and whether every `FAIL_TO_PASS` test is among the tests
//!    `test.json` counts as proof (`fixed`, or `reproduced` for new tests). **Proven**
//!    means all three.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The version of the `--json` document.
pub const SCHEMA_VERSION: u32 = 1;

/// The default test command: `{python}` is the environment's interpreter, `{tests}`
/// the instance's `FAIL_TO_PASS` test files.
pub const DEFAULT_COMMAND: &str = "{python} -m pytest {tests}";

/// Why `eval fix` cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EvalFixError {
    /// The dataset cannot be read.
    #[error("cannot read {path}: {detail}\n  fix: check the path")]
    Read {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// A dataset line is not a SWE-bench record.
    #[error(
        "{path}:{line}: not a SWE-bench record: {detail}\n  fix: each line needs repo, instance_id, base_commit, patch, test_patch, FAIL_TO_PASS and problem_statement"
    )]
    Record {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// The parser's message.
        detail: String,
    },
    /// The environments file is malformed.
    #[error(
        "{path}: not an environments file: {detail}\n  fix: map each owner/name to {{python, setup, command, versions: {{VERSION: {{python, setup, command}}}}}}"
    )]
    Envs {
        /// The file.
        path: String,
        /// The parser's message.
        detail: String,
    },
}

/// One SWE-bench-format instance.
#[derive(Debug, Clone, Deserialize)]
pub struct Instance {
    /// `owner/name`.
    pub repo: String,
    /// `owner__name-123`.
    pub instance_id: String,
    /// The commit the patches apply to.
    pub base_commit: String,
    /// The real fix (no test changes).
    pub patch: String,
    /// The test changes that show the bug.
    pub test_patch: String,
    /// The issue text.
    #[serde(default)]
    pub problem_statement: String,
    /// The repository version (selects the environment).
    #[serde(default)]
    pub version: Option<String>,
    /// Tests that fail before the fix and pass after (a JSON list, or a string holding one).
    #[serde(rename = "FAIL_TO_PASS", default, deserialize_with = "string_list")]
    pub fail_to_pass: Vec<String>,
    /// Tests that pass before and after.
    #[serde(rename = "PASS_TO_PASS", default, deserialize_with = "string_list")]
    pub pass_to_pass: Vec<String>,
}

fn string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(vec![]),
        Value::String(s) if s.trim().is_empty() => Ok(vec![]),
        Value::String(s) => serde_json::from_str(&s).map_err(serde::de::Error::custom),
        v => serde_json::from_value(v).map_err(serde::de::Error::custom),
    }
}

impl Instance {
    /// The issue number: the digits after the last `-` of the id (else 1).
    pub fn number(&self) -> u64 {
        self.instance_id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(1)
    }

    /// The files of the `FAIL_TO_PASS` tests, in order, once each.
    pub fn test_files(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in &self.fail_to_pass {
            let f = t.split("::").next().unwrap_or(t).to_string();
            if !f.is_empty() && !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }

    /// The instance as a Markdown issue with front matter (a trusted author).
    pub fn issue_markdown(&self) -> String {
        let first = self
            .problem_statement
            .lines()
            .map(|l| l.trim().trim_start_matches('#').trim())
            .find(|l| !l.is_empty())
            .unwrap_or(&self.instance_id);
        let title: String = first.chars().take(120).collect();
        let front = json!({
            "repo": self.repo,
            "number": self.number(),
            "title": title,
            "author_association": "MEMBER",
        });
        let yaml = serde_yaml::to_string(&front).unwrap_or_default();
        format!("---\n{yaml}---\n{}\n", self.problem_statement.trim())
    }
}

/// Read a dataset (JSON lines).
pub fn read_dataset(path: &Path) -> Result<Vec<Instance>, EvalFixError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalFixError::Read {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let inst: Instance = serde_json::from_str(line).map_err(|e| EvalFixError::Record {
            path: path.display().to_string(),
            line: i + 1,
            detail: e.to_string(),
        })?;
        // The id names scratch folders that are made and removed: one plain name.
        let mut parts = Path::new(&inst.instance_id).components();
        if !matches!(
            (parts.next(), parts.next()),
            (Some(std::path::Component::Normal(_)), None)
        ) {
            return Err(EvalFixError::Record {
                path: path.display().to_string(),
                line: i + 1,
                detail: format!(
                    "instance_id {:?} is not a plain name (no `/`, `..` or absolute path)",
                    inst.instance_id
                ),
            });
        }
        out.push(inst);
    }
    Ok(out)
}

/// One environment: the interpreter, a setup command, a test command template.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSpec {
    /// The interpreter (`python3`, `/path/to/venv/bin/python`, or the venv folder).
    #[serde(default)]
    pub python: Option<String>,
    /// Run once in each checkout before the tests (`test.setup`).
    #[serde(default)]
    pub setup: Option<String>,
    /// The test command; `{python}` and `{tests}` are filled in.
    #[serde(default)]
    pub command: Option<String>,
}

/// A repository's environment, optionally per version.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoEnv {
    /// The default for every version.
    #[serde(flatten)]
    pub default: EnvSpec,
    /// Per version (the dataset's `version`), overriding the default key by key.
    #[serde(default)]
    pub versions: BTreeMap<String, EnvSpec>,
}

/// The `--envs` file: `owner/name` → environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Envs {
    /// Per repository.
    pub repos: BTreeMap<String, RepoEnv>,
}

impl Envs {
    /// Read a YAML or JSON environments file.
    pub fn read(path: &Path) -> Result<Self, EvalFixError> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalFixError::Read {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let repos: BTreeMap<String, RepoEnv> =
            serde_yaml::from_str(&text).map_err(|e| EvalFixError::Envs {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
        Ok(Self { repos })
    }

    /// The environment of `repo` at `version`, when the file has one.
    pub fn resolve(&self, repo: &str, version: Option<&str>) -> Option<EnvSpec> {
        let r = self.repos.get(repo)?;
        let mut spec = r.default.clone();
        if let Some(v) = version.and_then(|v| r.versions.get(v)) {
            spec.python = v.python.clone().or(spec.python);
            spec.setup = v.setup.clone().or(spec.setup);
            spec.command = v.command.clone().or(spec.command);
        }
        Some(spec)
    }
}

/// The interpreter of an environment (a venv folder becomes its `bin/python`).
pub fn interpreter(spec: &EnvSpec) -> String {
    let p = spec.python.clone().unwrap_or_else(|| "python3".into());
    let path = Path::new(&p);
    if path.is_dir() && path.join("bin/python").exists() {
        return path.join("bin/python").display().to_string();
    }
    p
}

/// The virtualenv an interpreter belongs to (`…/bin/python` next to `pyvenv.cfg`).
pub fn venv_of(python: &str) -> Option<PathBuf> {
    let root = Path::new(python).parent()?.parent()?;
    root.join("pyvenv.cfg")
        .is_file()
        .then(|| root.to_path_buf())
}

/// Quote a word for `sh` when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The test command for an instance in an environment.
pub fn test_command(spec: &EnvSpec, instance: &Instance) -> String {
    let tests: Vec<String> = instance
        .test_files()
        .iter()
        .map(|f| shell_quote(f))
        .collect();
    spec.command
        .as_deref()
        .unwrap_or(DEFAULT_COMMAND)
        .replace("{python}", &shell_quote(&interpreter(spec)))
        .replace("{tests}", &tests.join(" "))
}

/// The checkout of `owner/name` under `root`: `root/owner__name`, else `root/name`.
pub fn find_checkout(root: &Path, repo: &str) -> Option<PathBuf> {
    let (owner, name) = repo.split_once('/')?;
    [root.join(format!("{owner}__{name}")), root.join(name)]
        .into_iter()
        .find(|p| git2::Repository::open(p).is_ok())
}

/// A test id in one spelling for both pytest node ids (`tests/test_a.py::TestX::test_b[p]`)
/// and JUnit ids (`tests.test_a.TestX::test_b[p]`): dots, no `.py`, parameters kept.
pub fn normalize_test_id(id: &str) -> String {
    let (head, params) = match id.find('[') {
        Some(i) => id.split_at(i),
        None => (id, ""),
    };
    let mut parts: Vec<String> = head.split("::").map(str::to_string).collect();
    if let Some(first) = parts.first_mut() {
        let f = first.strip_suffix(".py").unwrap_or(first);
        *first = f.replace('/', ".");
    }
    format!("{}{params}", parts.join("."))
}

/// What a plain subprocess did.
#[derive(Debug, Clone, Default)]
pub struct Shell {
    /// Exit code (`None`: killed or timed out).
    pub exit_code: Option<i32>,
    /// Killed at the limit.
    pub timed_out: bool,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// stdout and stderr (stdout only when asked to keep them apart).
    pub output: String,
    /// stderr, when kept apart.
    pub stderr: String,
}

impl Shell {
    /// The last `n` lines of the output.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.output.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Run `cmd` (its own process group) with a time limit; output through files in
/// `scratch`, so a chatty command never blocks on a pipe.
pub fn run_limited(
    mut cmd: Command,
    scratch: &Path,
    name: &str,
    timeout: Duration,
    separate_stderr: bool,
) -> std::io::Result<Shell> {
    use std::os::unix::process::CommandExt;
    let out_path = scratch.join(format!("{name}.out"));
    let err_path = scratch.join(format!("{name}.err"));
    let out = std::fs::File::create(&out_path)?;
    let err = if separate_stderr {
        std::fs::File::create(&err_path)?
    } else {
        out.try_clone()?
    };
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let pgid = child.id();
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() >= timeout || crate::interrupt::requested() {
            timed_out = start.elapsed() >= timeout;
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Nothing it started outlives it.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let status = match status {
        Some(s) => Some(s),
        None => child.wait().ok(),
    };
    let read = |p: &Path| {
        std::fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    Ok(Shell {
        exit_code: if timed_out {
            None
        } else {
            status.and_then(|s| s.code())
        },
        timed_out,
        seconds: start.elapsed().as_secs_f64(),
        output: read(&out_path),
        stderr: if separate_stderr {
            read(&err_path)
        } else {
            String::new()
        },
    })
}

fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| format!("git {}: {e}", args.join(" ")))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "git {} failed: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// A fresh clone of `checkout` at `commit` in `dst` (objects shared, not copied).
pub fn clone_at(checkout: &Path, commit: &str, dst: &Path) -> Result<(), String> {
    let o = Command::new("git")
        .args(["clone", "-q", "--shared", "--no-checkout"])
        .arg(checkout)
        .arg(dst)
        .output()
        .map_err(|e| format!("git clone: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "git clone {} failed: {}",
            checkout.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    git(dst, &["checkout", "-q", "--detach", commit])?;
    // `git checkout` exits 0 even when blobs are missing (a snapshot without its large
    // files): the tree would not be the commit's, so the instance cannot be measured.
    let status = git(dst, &["status", "--porcelain", "--untracked-files=no"])?;
    if !status.trim().is_empty() {
        return Err(format!(
            "the checkout at {commit} is incomplete (the repository lacks objects): {}",
            status.lines().take(3).collect::<Vec<_>>().join("; ")
        ));
    }
    Ok(())
}

/// Apply a unified diff to the working tree with `git apply`.
pub fn git_apply(dir: &Path, patch: &str, name: &str) -> Result<(), String> {
    let file = dir.join(".git").join(format!("eval-{name}.diff"));
    std::fs::write(&file, patch).map_err(|e| format!("{}: {e}", file.display()))?;
    let path = file.display().to_string();
    git(dir, &["apply", "--whitespace=nowarn", &path])
        .map(|_| ())
        .map_err(|e| format!("the {name} does not apply: {e}"))
}

/// The tree of `base` with `patches` applied by `git apply --cached` (the reference
/// applier: libgit2's `apply_to_tree` drops an unchanged executable bit), written into
/// the object database of the repository at `dir`.
pub fn expected_tree(dir: &Path, base: &str, patches: &[&str]) -> Result<String, String> {
    let index = dir.join(".git").join("eval-expected.index");
    let _ = std::fs::remove_file(&index);
    let run = |args: &[&str], input: Option<&str>| -> Result<String, String> {
        let mut cmd = Command::new("git");
        cmd.arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_INDEX_FILE", &index)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("git {}: {e}", args.join(" ")))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(text.as_bytes())
                .map_err(|e| format!("git {}: {e}", args.join(" ")))?;
        }
        let o = child
            .wait_with_output()
            .map_err(|e| format!("git {}: {e}", args.join(" ")))?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        } else {
            Err(format!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
    };
    let result = (|| {
        run(&["read-tree", base], None)?;
        for p in patches.iter().filter(|p| !p.trim().is_empty()) {
            run(&["apply", "--cached", "--whitespace=nowarn", "-"], Some(p))?;
        }
        run(&["write-tree"], None)
    })();
    let _ = std::fs::remove_file(&index);
    result
}

/// Which known patch is replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PatchKind {
    /// `patch` + `test_patch`: should be fixed.
    Real,
    /// `test_patch` alone: must not be fixed.
    TestsOnly,
    /// Another instance's `patch` + this `test_patch`: must not be fixed.
    Other,
}

impl PatchKind {
    /// The word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Real => "real",
            Self::TestsOnly => "tests-only",
            Self::Other => "other",
        }
    }
}

/// What one instance came to.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InstanceOutcome {
    /// The instance.
    pub instance_id: String,
    /// `owner/name`.
    pub repo: String,
    /// Its version.
    pub version: Option<String>,
    /// `ok` or `excluded`.
    pub preflight: String,
    /// Why it was excluded, or why the replay could not finish.
    pub reason: Option<String>,
    /// The other instance whose patch was played (`--patches other`).
    pub other: Option<String>,
    /// Whether `fix`'s applier applies that patch here (else the answer is refused).
    pub other_applies: Option<bool>,
    /// The test command.
    pub command: Option<String>,
    /// The verdict of `fix` (`fixed`, `unproven`, …; `no candidate` when the answer was
    /// refused; `error` when fix failed before testing).
    pub verdict: Option<String>,
    /// `fix`'s exit code.
    pub exit_code: Option<i32>,
    /// The published branch's tree equals base + patch + test_patch.
    pub tree_equal: bool,
    /// When it does not: the paths that differ, or why the trees could not be compared.
    pub tree_difference: Option<String>,
    /// Every FAIL_TO_PASS test is among the tests counted as proof.
    pub fail_to_pass_fixed: bool,
    /// FAIL_TO_PASS tests not counted as proof (with what test.json says of them).
    pub fail_to_pass_missing: Vec<String>,
    /// Verdict fixed, tree equal and FAIL_TO_PASS among the proof.
    pub proven: bool,
    /// The test runs sandboxed.
    pub sandboxed: Option<bool>,
    /// The run folder's id, in the scratch clone.
    pub run_id: Option<String>,
    /// One line from test.json.
    pub summary: Option<String>,
    /// Seconds of the preflight.
    pub preflight_seconds: f64,
    /// Seconds of `fix`.
    pub seconds: f64,
    /// Seconds of the targeted run of the candidate, when there was one.
    pub targeted_seconds: Option<f64>,
    /// Seconds of the configured command on the candidate.
    pub command_seconds: Option<f64>,
}

/// Everything an instance run needs.
pub struct RunSpec<'a> {
    /// `--repos`.
    pub repos: &'a Path,
    /// `--envs`.
    pub envs: &'a Envs,
    /// The binary to run `fix` with.
    pub exe: &'a Path,
    /// Scratch folder (clones, configs, caches).
    pub scratch: &'a Path,
    /// Per-command time limit, seconds.
    pub timeout: u64,
    /// What to replay.
    pub kind: PatchKind,
    /// `test.sandbox` for the fix runs (`auto` unless told).
    pub sandbox: &'a str,
    /// Keep the scratch clones and run folders.
    pub keep: bool,
    /// Play the patch through agent mode's tools.
    pub agent: bool,
}

/// The tests at base + `patches` (preflight).
fn preflight_run(
    spec: &RunSpec<'_>,
    dir: &Path,
    env: &EnvSpec,
    command: &str,
    label: &str,
) -> Result<crate::verify::results::Results, String> {
    let junit = dir.join(".git").join(format!("eval-{label}.xml"));
    let _ = std::fs::remove_file(&junit);
    let mut pythonpath = vec![dir.display().to_string()];
    if dir.join("src").is_dir() {
        pythonpath.insert(0, dir.join("src").display().to_string());
    }
    if let Some(p) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
        pythonpath.push(p.to_string_lossy().into_owned());
    }
    let script = format!(
        "{command} -rA -p no:cacheprovider --junitxml={}",
        shell_quote(&junit.display().to_string())
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(&script).current_dir(dir);
    cmd.env("PYTHONPATH", pythonpath.join(":"));
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    activate(&mut cmd, &interpreter(env));
    let scratch = dir.join(".git");
    let run = run_limited(
        cmd,
        &scratch,
        &format!("eval-{label}"),
        Duration::from_secs(spec.timeout),
        false,
    )
    .map_err(|e| format!("cannot run `{script}`: {e}"))?;
    if run.timed_out {
        return Err(format!("{label}: timed out after {} s", spec.timeout));
    }
    let xml = std::fs::read_to_string(&junit).ok();
    let results =
        crate::verify::results::read(xml.as_deref(), &run.output, run.exit_code == Some(0));
    if xml.is_none() {
        return Err(format!(
            "{label}: `{command}` wrote no JUnit report (exit {:?}): {}",
            run.exit_code,
            run.tail(3).replace('\n', " | ")
        ));
    }
    Ok(results)
}

/// Environment variables of an activated venv, when the interpreter is in one.
fn activate(cmd: &mut Command, python: &str) {
    if let Some(venv) = venv_of(python) {
        let mut path = vec![venv.join("bin")];
        if let Some(p) = std::env::var_os("PATH") {
            path.extend(std::env::split_paths(&p));
        }
        if let Ok(p) = std::env::join_paths(path) {
            cmd.env("PATH", p);
        }
        cmd.env("VIRTUAL_ENV", venv);
    }
}

/// The FAIL_TO_PASS tests with their outcome in `results` (`None`: not there).
fn outcomes_of<'a>(
    ids: &'a [String],
    results: &crate::verify::results::Results,
) -> Vec<(&'a str, Option<crate::verify::results::Outcome>)> {
    let by_norm: BTreeMap<String, crate::verify::results::Outcome> = results
        .tests
        .iter()
        .map(|(k, v)| (normalize_test_id(k), *v))
        .collect();
    ids.iter()
        .map(|id| (id.as_str(), by_norm.get(&normalize_test_id(id)).copied()))
        .collect()
}

/// The preflight: FAIL_TO_PASS fails at base + test_patch and passes with the fix.
pub fn preflight(
    spec: &RunSpec<'_>,
    inst: &Instance,
    checkout: &Path,
    env: &EnvSpec,
    command: &str,
) -> Result<(), String> {
    use crate::verify::results::Outcome;
    if inst.fail_to_pass.is_empty() {
        return Err("no FAIL_TO_PASS tests".into());
    }
    let dir = spec.scratch.join(format!("{}-preflight", inst.instance_id));
    let _ = std::fs::remove_dir_all(&dir);
    clone_at(checkout, &inst.base_commit, &dir)?;
    let result = (|| {
        if let Some(setup) = &env.setup {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(setup).current_dir(&dir);
            activate(&mut cmd, &interpreter(env));
            let s = run_limited(
                cmd,
                &dir.join(".git"),
                "eval-setup",
                Duration::from_secs(spec.timeout),
                false,
            )
            .map_err(|e| format!("cannot run the setup: {e}"))?;
            if s.exit_code != Some(0) {
                return Err(format!(
                    "the setup `{setup}` failed: {}",
                    s.tail(3).replace('\n', " | ")
                ));
            }
        }
        git_apply(&dir, &inst.test_patch, "test_patch")?;
        let before = preflight_run(spec, &dir, env, command, "base+test_patch")?;
        let passing: Vec<&str> = outcomes_of(&inst.fail_to_pass, &before)
            .into_iter()
            .filter(|(_, o)| *o == Some(Outcome::Passed))
            .map(|(t, _)| t)
            .collect();
        if !passing.is_empty() {
            return Err(format!(
                "FAIL_TO_PASS passes without the fix: {}",
                passing.join(", ")
            ));
        }
        git_apply(&dir, &inst.patch, "patch")?;
        let after = preflight_run(spec, &dir, env, command, "base+patch+test_patch")?;
        let not_passing: Vec<String> = outcomes_of(&inst.fail_to_pass, &after)
            .into_iter()
            .filter(|(_, o)| *o != Some(Outcome::Passed))
            .map(|(t, o)| match o {
                Some(o) => format!("{t} ({})", format!("{o:?}").to_lowercase()),
                None => format!("{t} (not run)"),
            })
            .collect();
        if !not_passing.is_empty() {
            let failed = after
                .tests
                .iter()
                .filter(|(_, o)| **o == Outcome::Failed)
                .count();
            return Err(format!(
                "FAIL_TO_PASS does not pass with the fix: {} ({} test(s) failed in that run)",
                not_passing.join(", "),
                failed
            ));
        }
        Ok(())
    })();
    if !spec.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// The instance whose patch `--patches other` plays for `inst`: the next one of the
/// same repository in `all` (cyclically) with a different patch that `fix`'s applier
/// applies to `inst`'s base (content-based, as a model's answer is applied); when none
/// does, the next one all the same (its answer is then refused: not fixed either). The
/// flag says whether it applies.
pub fn other_for<'a>(
    repo: &git2::Repository,
    inst: &Instance,
    all: &'a [Instance],
) -> Option<(&'a Instance, bool)> {
    let pos = all.iter().position(|i| i.instance_id == inst.instance_id)?;
    let mut same = (1..all.len())
        .map(|k| &all[(pos + k) % all.len()])
        .filter(|o| o.repo == inst.repo && o.patch != inst.patch)
        .peekable();
    let first = *same.peek()?;
    let base = git2::Oid::from_str(&inst.base_commit).ok()?;
    let read = |p: &str| crate::locate::files::read_at(repo, base, p);
    let guard = crate::repair::PathGuard::new(&Vec::<String>::new()).ok()?;
    let applies = |o: &Instance| {
        crate::repair::parse(&o.patch)
            .ok()
            .is_some_and(|edits| crate::repair::apply(&edits, &read, &[], &guard).is_ok())
    };
    Some(match same.find(|o| applies(o)) {
        Some(o) => (o, true),
        None => (first, false),
    })
}

/// The answer the model gives: the patch, as the repair parser reads a unified diff.
pub fn answer_text(inst: &Instance, diff: &str, what: &str) -> String {
    format!(
        "Replayed by `autotriage eval fix`: {what} of {}.\n\n{}",
        inst.instance_id,
        diff.trim_end()
    )
}

/// A cassette whose wildcard exchange answers every request with `text`.
pub fn cassette_line(text: &str) -> String {
    let ex = crate::model::replay::Exchange {
        fingerprint: crate::model::replay::WILDCARD.into(),
        model: "eval-fix".into(),
        request: crate::model::replay::empty_request(),
        response: crate::model::Response {
            content: vec![crate::model::Block::Text {
                text: text.to_string(),
            }],
            stop_reason: crate::model::StopReason::EndTurn,
            usage: Some(crate::model::Usage::default()),
        },
    };
    serde_json::to_string(&ex).unwrap_or_default()
}

/// The patch as an agent's turns: one `edit_file` call per edit the repair parser
/// reads from it (a new file is an edit with an empty `search`), then `submit`; each
/// turn a wildcard exchange, answered in order. A hunk whose lines occur more than once
/// in the file (`read` gives it at the base) gets the file's surrounding lines until it
/// names one place, as an agent told "matches 2 places" would do.
pub fn agent_cassette(
    diff: &str,
    what: &str,
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let edits =
        crate::repair::parse(diff).map_err(|e| format!("the patch does not parse: {}", e.0))?;
    let mut lines = Vec::new();
    let turn = |n: usize, name: &str, input: Value| {
        let ex = crate::model::replay::Exchange {
            fingerprint: crate::model::replay::WILDCARD.into(),
            model: "eval-fix".into(),
            request: crate::model::replay::empty_request(),
            response: crate::model::Response {
                content: vec![crate::model::Block::ToolUse {
                    id: format!("call_{n}"),
                    name: name.into(),
                    input,
                }],
                stop_reason: crate::model::StopReason::ToolUse,
                usage: Some(crate::model::Usage::default()),
            },
        };
        serde_json::to_string(&ex).unwrap_or_default()
    };
    for (i, e) in edits.iter().enumerate() {
        let Some(path) = &e.path else {
            return Err(format!("{} names no file", e.origin));
        };
        let join = |ls: Vec<&str>| {
            let mut s = ls.join("\n");
            if !s.is_empty() {
                s.push('\n');
            }
            s
        };
        let text = read(path).filter(|_| !e.creates).unwrap_or_default();
        let old: Vec<&str> = e.old.iter().map(|(_, l)| l.as_str()).collect();
        let (old, new) = unique_context(&text, old, e.new_lines(), e.stated_lines.first().copied());
        let search = if e.creates { String::new() } else { join(old) };
        lines.push(turn(
            i + 1,
            "edit_file",
            json!({"path": path, "search": search, "replace": join(new)}),
        ));
    }
    lines.push(turn(
        edits.len() + 1,
        "submit",
        json!({"explanation": format!("Replayed by `autotriage eval fix --mode agent`: {what}.")}),
    ));
    Ok(lines.join("\n") + "\n")
}

/// Widen `old` (and `new` alike) with the lines around it in `text` until it occurs
/// once; where it occurs several times, the place nearest the hunk's stated line.
fn unique_context<'a>(
    text: &'a str,
    old: Vec<&'a str>,
    new: Vec<&'a str>,
    stated: Option<usize>,
) -> (Vec<&'a str>, Vec<&'a str>) {
    let lines: Vec<&str> = text.lines().collect();
    let at = |block: &[&str]| -> Vec<usize> {
        if block.is_empty() || block.len() > lines.len() {
            return Vec::new();
        }
        (0..=lines.len() - block.len())
            .filter(|&p| lines[p..p + block.len()] == *block)
            .collect()
    };
    let places = at(&old);
    if places.len() <= 1 {
        return (old, new);
    }
    let want = stated.unwrap_or(1).saturating_sub(1);
    let Some(&p) = places.iter().min_by_key(|&&p| p.abs_diff(want)) else {
        return (old, new);
    };
    let end = p + old.len();
    for k in 1..=lines.len() {
        let before = &lines[p.saturating_sub(k)..p];
        let after = &lines[end..(end + k).min(lines.len())];
        let wide: Vec<&str> = before.iter().chain(&old).chain(after).copied().collect();
        if at(&wide).len() == 1 {
            let wide_new: Vec<&str> = before.iter().chain(&new).chain(after).copied().collect();
            return (wide, wide_new);
        }
        if before.len() == p && after.len() == lines.len() - end {
            break;
        }
    }
    (old, new)
}

/// Replay one instance through `fix` (after its preflight passed).
pub fn replay(
    spec: &RunSpec<'_>,
    inst: &Instance,
    checkout: &Path,
    env: &EnvSpec,
    command: &str,
    other: Option<&Instance>,
    out: &mut InstanceOutcome,
) -> Result<(), String> {
    let root = spec.scratch.join(&inst.instance_id);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let dir = root.join("checkout");
    clone_at(checkout, &inst.base_commit, &dir)?;
    let (diff, what) = match spec.kind {
        PatchKind::Real => (
            format!("{}\n{}", inst.patch.trim_end(), inst.test_patch),
            "the real fix and its tests".to_string(),
        ),
        PatchKind::TestsOnly => (
            inst.test_patch.clone(),
            "the test changes alone".to_string(),
        ),
        PatchKind::Other => match other {
            Some(o) => (
                format!("{}\n{}", o.patch.trim_end(), inst.test_patch),
                format!("the fix of {} with the tests", o.instance_id),
            ),
            None => return Err("no other instance's patch applies here".into()),
        },
    };
    let cassette = root.join("cassette.jsonl");
    let config = root.join("autotriage.yaml");
    let issue = root.join("issue.md");
    let write = |p: &Path, text: &str| {
        std::fs::File::create(p)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let played = if spec.agent {
        agent_cassette(&diff, &what, &|p| std::fs::read_to_string(dir.join(p)).ok())?
    } else {
        format!("{}\n", cassette_line(&answer_text(inst, &diff, &what)))
    };
    write(&cassette, &played)?;
    let mut test = serde_json::Map::new();
    test.insert("command".into(), json!(command));
    test.insert("timeout".into(), json!(spec.timeout));
    test.insert("sandbox".into(), json!(spec.sandbox));
    if let Some(s) = &env.setup {
        test.insert("setup".into(), json!(s));
    }
    let cfg = json!({
        "repo": inst.repo,
        "model": format!("replay:{}", cassette.display()),
        "repair": if spec.agent {
            json!({"candidates": 1, "mode": "agent", "max_turns": 200})
        } else {
            json!({"candidates": 1})
        },
        // The cassette answers repair; the triage stays offline.
        "triage": {"engine": "offline"},
        "test": test,
    });
    write(&config, &serde_yaml::to_string(&cfg).unwrap_or_default())?;
    write(&issue, &inst.issue_markdown())?;
    let mut cmd = Command::new(spec.exe);
    cmd.arg("fix")
        .arg(&issue)
        .args(["--json", "--force", "--yes", "--forge", "local", "--config"])
        .arg(&config)
        .current_dir(&dir);
    for var in [
        "AUTOTRIAGE_CONFIG",
        "AUTOTRIAGE_MODEL",
        "AUTOTRIAGE_MEMORY",
        "AUTOTRIAGE_REPO_DIR",
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "VIRTUAL_ENV",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AUTOTRIAGE_CACHE_DIR", spec.scratch.join("cache"));
    cmd.env("NO_COLOR", "1");
    activate(&mut cmd, &interpreter(env));
    // fix's own test runs have the test.timeout limit; this one bounds the rest.
    let limit = Duration::from_secs(spec.timeout.saturating_mul(6).max(600));
    let run = run_limited(cmd, &root, "fix", limit, true)
        .map_err(|e| format!("cannot run {}: {e}", spec.exe.display()))?;
    out.seconds = run.seconds;
    out.exit_code = run.exit_code;
    let doc: Option<Value> = run
        .output
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("run_id").is_some());
    let Some(doc) = doc else {
        out.verdict = Some("error".into());
        return Err(format!(
            "fix printed no result (exit {:?}): {}",
            run.exit_code,
            run.stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
        ));
    };
    judge(inst, &dir, &doc, &run.stderr, out);
    Ok(())
}

/// Fill in the verdict, the tree comparison and the FAIL_TO_PASS check from `fix`'s
/// JSON document.
pub fn judge(inst: &Instance, dir: &Path, doc: &Value, stderr: &str, out: &mut InstanceOutcome) {
    out.run_id = doc["run_id"].as_str().map(String::from);
    let test = &doc["test"];
    out.verdict = Some(match doc["verdict"].as_str() {
        Some(v) => v.to_string(),
        None if doc["repair"]["chosen"].is_null() && !doc["repair"].is_null() => {
            "no candidate".into()
        }
        None => "error".into(),
    });
    if out.verdict.as_deref() != Some("fixed") && out.reason.is_none() {
        let why = doc["repair"]["candidates"][0]["error"]
            .as_str()
            .map(String::from)
            .or_else(|| {
                stderr
                    .lines()
                    .rev()
                    .find(|l| l.starts_with("error"))
                    .map(String::from)
            });
        out.reason = why.map(|w| w.lines().next().unwrap_or("").to_string());
    }
    out.summary = test["summary"].as_str().map(String::from);
    out.sandboxed = test["sandboxed"].as_bool();
    let cand = test["candidates"]
        .as_array()
        .and_then(|c| c.first())
        .cloned()
        .unwrap_or(Value::Null);
    let proof: BTreeSet<String> = ["fixed", "reproduced"]
        .iter()
        .flat_map(|k| cand[*k].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(normalize_test_id))
        .collect();
    // What each run of the candidate said of a test, for the diagnosis.
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let baseline = &test["baseline"]["run"]["results"]["tests"];
    let mut runs: Vec<(&str, &Value)> = vec![("baseline", baseline)];
    if let Some(rs) = cand["runs"].as_array() {
        for r in rs {
            runs.push((r["label"].as_str().unwrap_or("?"), &r["results"]["tests"]));
        }
    }
    for (label, tests) in runs {
        if let Some(m) = tests.as_object() {
            for (k, v) in m {
                seen.entry(normalize_test_id(k)).or_default().push(format!(
                    "{}: {}",
                    label.replace("candidate 1", "cand"),
                    v.as_str().unwrap_or("?")
                ));
            }
        }
    }
    out.fail_to_pass_missing = inst
        .fail_to_pass
        .iter()
        .filter(|t| !proof.contains(&normalize_test_id(t)))
        .map(|t| {
            let n = normalize_test_id(t);
            match seen.get(&n) {
                Some(s) => format!("{t} ({})", s.join(", ")),
                None => format!("{t} (in no run)"),
            }
        })
        .collect();
    out.fail_to_pass_fixed = !inst.fail_to_pass.is_empty() && out.fail_to_pass_missing.is_empty();
    if let Some(rs) = cand["runs"].as_array() {
        out.targeted_seconds = rs
            .iter()
            .find(|r| r["label"] == "candidate 1 targeted")
            .and_then(|r| r["seconds"].as_f64());
        out.command_seconds = rs
            .iter()
            .find(|r| r["label"] == "candidate 1")
            .and_then(|r| r["seconds"].as_f64());
    }
    match doc["pr"]["published"]["commit"].as_str() {
        None => out.tree_difference = Some("nothing was published".into()),
        Some(c) => match compare_trees(dir, c, inst) {
            Ok(differs) if differs.is_empty() => out.tree_equal = true,
            Ok(differs) => out.tree_difference = Some(format!("differs in {}", differs.join(", "))),
            Err(e) => out.tree_difference = Some(format!("cannot compare: {e}")),
        },
    }
    out.proven =
        out.verdict.as_deref() == Some("fixed") && out.tree_equal && out.fail_to_pass_fixed;
}

/// The paths where the published commit's tree and base + patch + test_patch differ.
fn compare_trees(dir: &Path, commit: &str, inst: &Instance) -> Result<Vec<String>, String> {
    let want = expected_tree(dir, &inst.base_commit, &[&inst.patch, &inst.test_patch])?;
    let e = |e: git2::Error| e.to_string();
    let repo = git2::Repository::open(dir).map_err(e)?;
    let got = repo
        .find_commit(git2::Oid::from_str(commit).map_err(e)?)
        .and_then(|c| c.tree())
        .map_err(e)?;
    let want = repo
        .find_tree(git2::Oid::from_str(&want).map_err(e)?)
        .map_err(e)?;
    let diff = repo
        .diff_tree_to_tree(Some(&want), Some(&got), None)
        .map_err(e)?;
    Ok(diff
        .deltas()
        .filter_map(|d| d.new_file().path().or(d.old_file().path()))
        .map(|p| p.display().to_string())
        .collect())
}

/// Run one instance: find its checkout and environment, preflight, replay.
pub fn run_instance(spec: &RunSpec<'_>, inst: &Instance, all: &[Instance]) -> InstanceOutcome {
    let mut out = InstanceOutcome {
        instance_id: inst.instance_id.clone(),
        repo: inst.repo.clone(),
        version: inst.version.clone(),
        preflight: "excluded".into(),
        ..Default::default()
    };
    let Some(checkout) = find_checkout(spec.repos, &inst.repo) else {
        let name = inst.repo.split('/').next_back().unwrap_or("");
        out.reason = Some(format!(
            "no checkout of {} at {}/{} or {}/{name}",
            inst.repo,
            spec.repos.display(),
            inst.repo.replace('/', "__"),
            spec.repos.display()
        ));
        return out;
    };
    let Some(env) = spec.envs.resolve(&inst.repo, inst.version.as_deref()) else {
        out.reason = Some(format!("the envs file has no entry for {}", inst.repo));
        return out;
    };
    match git2::Repository::open(&checkout) {
        Ok(r)
            if git2::Oid::from_str(&inst.base_commit)
                .ok()
                .and_then(|o| r.find_commit(o).ok())
                .is_some() => {}
        _ => {
            out.reason = Some(format!(
                "base commit {} is not in {}",
                inst.base_commit,
                checkout.display()
            ));
            return out;
        }
    }
    let command = test_command(&env, inst);
    out.command = Some(command.clone());
    let other = if spec.kind == PatchKind::Other {
        let found = git2::Repository::open(&checkout).ok().and_then(|r| {
            other_for(&r, inst, all).map(|(o, applies)| (o.instance_id.clone(), applies))
        });
        match found {
            Some((id, applies)) => {
                out.other = Some(id);
                out.other_applies = Some(applies);
                all.iter()
                    .find(|i| Some(&i.instance_id) == out.other.as_ref())
            }
            None => {
                out.reason = Some("no other instance of this repository in the dataset".into());
                return out;
            }
        }
    } else {
        None
    };
    let started = Instant::now();
    let pre = preflight(spec, inst, &checkout, &env, &command);
    out.preflight_seconds = started.elapsed().as_secs_f64();
    if let Err(why) = pre {
        out.reason = Some(format!("preflight: {why}"));
        return out;
    }
    out.preflight = "ok".into();
    if let Err(why) = replay(spec, inst, &checkout, &env, &command, other, &mut out) {
        out.reason = Some(why);
        if out.verdict.is_none() {
            out.verdict = Some("error".into());
        }
    }
    if !spec.keep {
        let _ = std::fs::remove_dir_all(spec.scratch.join(&inst.instance_id));
    }
    out
}

/// The figures of one `eval fix`.
#[derive(Debug, Clone, Serialize)]
pub struct FixReport {
    /// The version of this document.
    pub schema_version: u32,
    /// What was replayed.
    pub patches: PatchKind,
    /// Instances considered.
    pub instances: usize,
    /// Of those, the ones whose preflight passed.
    pub preflight_passed: usize,
    /// The ones excluded (preflight failed, no checkout, no environment).
    pub excluded: usize,
    /// Verdict `fixed`.
    pub fixed: usize,
    /// Proven: fixed, the branch tree equals base + patch + test_patch, FAIL_TO_PASS
    /// among the proof.
    pub proven: usize,
    /// proven / preflight_passed (`real`; 0 for the bad kinds, where nothing can be).
    pub proven_rate: f64,
    /// Bad patches judged `fixed` (`tests-only`, `other`; 0 for `real`).
    pub false_passes: usize,
    /// false_passes / preflight_passed.
    pub false_pass_rate: f64,
    /// Verdicts of the replayed instances.
    pub verdicts: BTreeMap<String, usize>,
    /// Median seconds of `fix` per replayed instance.
    pub median_seconds: f64,
    /// Median seconds of the preflight per replayed instance.
    pub median_preflight_seconds: f64,
    /// Instances whose test.json has both a targeted run and the configured command's.
    pub targeted_runs: usize,
    /// Median seconds of the targeted run, over those.
    pub median_targeted_seconds: f64,
    /// Median seconds of the configured command, over those.
    pub median_command_seconds: f64,
    /// Median of targeted / command over those.
    pub median_targeted_ratio: f64,
    /// Per instance.
    pub per_instance: Vec<InstanceOutcome>,
}

/// The median (0 for none).
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Put the figures together.
pub fn report(kind: PatchKind, outcomes: Vec<InstanceOutcome>) -> FixReport {
    let ran: Vec<&InstanceOutcome> = outcomes.iter().filter(|o| o.preflight == "ok").collect();
    let n = ran.len();
    let fixed = ran
        .iter()
        .filter(|o| o.verdict.as_deref() == Some("fixed"))
        .count();
    let proven = ran.iter().filter(|o| o.proven).count();
    let false_passes = if kind == PatchKind::Real { 0 } else { fixed };
    let mut verdicts = BTreeMap::new();
    for o in &ran {
        *verdicts
            .entry(o.verdict.clone().unwrap_or_else(|| "error".into()))
            .or_insert(0) += 1;
    }
    let frac = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    let both: Vec<(f64, f64)> = ran
        .iter()
        .filter_map(|o| Some((o.targeted_seconds?, o.command_seconds?)))
        .collect();
    FixReport {
        schema_version: SCHEMA_VERSION,
        patches: kind,
        instances: outcomes.len(),
        preflight_passed: n,
        excluded: outcomes.len() - n,
        fixed,
        proven,
        proven_rate: frac(proven),
        false_passes,
        false_pass_rate: frac(false_passes),
        verdicts,
        median_seconds: median(&ran.iter().map(|o| o.seconds).collect::<Vec<_>>()),
        median_preflight_seconds: median(
            &ran.iter().map(|o| o.preflight_seconds).collect::<Vec<_>>(),
        ),
        targeted_runs: both.len(),
        median_targeted_seconds: median(&both.iter().map(|b| b.0).collect::<Vec<_>>()),
        median_command_seconds: median(&both.iter().map(|b| b.1).collect::<Vec<_>>()),
        median_targeted_ratio: median(
            &both
                .iter()
                .filter(|b| b.1 > 0.0)
                .map(|b| b.0 / b.1)
                .collect::<Vec<_>>(),
        ),
        per_instance: outcomes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ids_match_across_spellings() {
        assert_eq!(
            normalize_test_id("tests/test_a.py::TestX::test_b[p/q::r]"),
            normalize_test_id("tests.test_a.TestX::test_b[p/q::r]")
        );
        assert_eq!(
            normalize_test_id("test_requests.py::RequestsTestCase::test_x"),
            "test_requests.RequestsTestCase.test_x"
        );
    }

    #[test]
    fn fail_to_pass_reads_a_string_or_a_list() {
        let a: Instance = serde_json::from_str(r#"{"repo":"a/b","instance_id":"a__b-7","base_commit":"x","patch":"","test_patch":"","FAIL_TO_PASS":"[\"t.py::f\"]"}"#).unwrap();
        assert_eq!(a.fail_to_pass, vec!["t.py::f"]);
        assert_eq!(a.number(), 7);
        let b: Instance = serde_json::from_str(r#"{"repo":"a/b","instance_id":"a__b-x","base_commit":"x","patch":"","test_patch":"","FAIL_TO_PASS":["t.py::f","t.py::g","u.py::h"]}"#).unwrap();
        assert_eq!(b.test_files(), vec!["t.py", "u.py"]);
        assert_eq!(b.number(), 1);
    }

    #[test]
    fn a_unified_diff_answer_parses_and_applies() {
        let diff = "diff --git a/calc/ops.py b/calc/ops.py\nindex 1..2 100644\n--- a/calc/ops.py\n+++ b/calc/ops.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\ndiff --git a/tests/test_new.py b/tests/test_new.py\nnew file mode 100644\n--- /dev/null\n+++ b/tests/test_new.py\n@@ -0,0 +1,2 @@\n+def test_x():\n+    assert True\n";
        let inst: Instance = serde_json::from_str(
            r#"{"repo":"a/b","instance_id":"a__b-1","base_commit":"x","patch":"","test_patch":""}"#,
        )
        .unwrap();
        let edits = crate::repair::parse(&answer_text(&inst, diff, "the fix")).unwrap();
        let read = |p: &str| {
            (p == "calc/ops.py").then(|| "def add(a, b):\n    return a - b\n".to_string())
        };
        let guard = crate::repair::PathGuard::new(&Vec::<String>::new()).unwrap();
        let applied = crate::repair::apply(&edits, &read, &[], &guard).unwrap();
        assert_eq!(
            applied
                .files
                .get("calc/ops.py")
                .cloned()
                .flatten()
                .as_deref(),
            Some("def add(a, b):\n    return a + b\n")
        );
        assert_eq!(
            applied
                .files
                .get("tests/test_new.py")
                .cloned()
                .flatten()
                .as_deref(),
            Some("def test_x():\n    assert True\n")
        );
    }

    #[test]
    fn a_patch_played_as_agent_turns_rebuilds_the_same_files() {
        let diff = "diff --git a/pkg/a.py b/pkg/a.py\n--- a/pkg/a.py\n+++ b/pkg/a.py\n@@ -1,3 +1,3 @@\n def f():\n-    return 1\n+    return 2\n \n@@ -5,2 +5,3 @@\n def g():\n     pass\n+    return 3\ndiff --git a/pkg/new.py b/pkg/new.py\nnew file mode 100644\n--- /dev/null\n+++ b/pkg/new.py\n@@ -0,0 +1,1 @@\n+x = 1\n";
        let text = agent_cassette(diff, "the fix", &|_| None).unwrap();
        let turns: Vec<crate::model::replay::Exchange> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let calls: Vec<(String, Value)> = turns
            .iter()
            .map(|t| match &t.response.content[0] {
                crate::model::Block::ToolUse { name, input, .. } => (name.clone(), input.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            calls.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["edit_file", "edit_file", "edit_file", "submit"]
        );
        // Through the agent's workspace, the calls give the patched files.
        let base: std::collections::BTreeMap<&str, &str> = [(
            "pkg/a.py",
            "def f():\n    return 1\n\n\ndef g():\n    pass\n",
        )]
        .into_iter()
        .collect();
        let read = |p: &str| base.get(p).map(|s| s.to_string());
        let paths = vec!["pkg/a.py".to_string()];
        let guard = crate::repair::PathGuard::new(&[]).unwrap();
        let mut ws = crate::agent::tools::Workspace {
            read_base: &read,
            base_paths: &paths,
            guard: &guard,
            index: None,
            changed: Default::default(),
            reports: vec![],
            frozen: vec![],
        };
        for (name, input) in &calls[..3] {
            let out = ws.call(name, input);
            assert!(!out.is_error, "{out:?}");
        }
        assert_eq!(
            ws.read("pkg/a.py").unwrap(),
            "def f():\n    return 2\n\n\ndef g():\n    pass\n    return 3\n"
        );
        assert_eq!(ws.read("pkg/new.py").unwrap(), "x = 1\n");
    }

    #[test]
    fn a_hunk_that_matches_two_places_is_widened_to_the_one_it_names() {
        let text = "def a():\n    x = 1\n    return x\n\n\ndef b():\n    x = 1\n    return x\n";
        let (old, new) = unique_context(
            text,
            vec!["    x = 1", "    return x"],
            vec!["    x = 2", "    return x"],
            Some(7),
        );
        assert_eq!(old, vec!["def b():", "    x = 1", "    return x"]);
        assert_eq!(new, vec!["def b():", "    x = 2", "    return x"]);
        let (old, _) = unique_context(text, vec!["def a():"], vec!["def c():"], Some(1));
        assert_eq!(old, vec!["def a():"]);
    }

    #[test]
    fn envs_resolve_per_version() {
        let envs: BTreeMap<String, RepoEnv> = serde_yaml::from_str(
            "a/b:\n  python: /v/bin/python\n  versions:\n    '2.0': {command: '{python} -m pytest -x {tests}'}\n",
        )
        .unwrap();
        let envs = Envs { repos: envs };
        let s = envs.resolve("a/b", Some("2.0")).unwrap();
        assert_eq!(s.python.as_deref(), Some("/v/bin/python"));
        assert!(s.command.unwrap().contains("-x"));
        assert!(envs.resolve("a/b", Some("1.0")).unwrap().command.is_none());
        assert!(envs.resolve("c/d", None).is_none());
    }
}
