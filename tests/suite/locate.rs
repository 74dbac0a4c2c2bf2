//! `fix --until locate` and `eval localize` on real git repositories built here.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::suite::common::*;

const CORE_PY: &str = "class Job:\n    def __init__(self, job_id):\n        self.job_id = job_id\n\n    def run_job(self):\n        if self.job_id < 0:\n            raise ValueError(\"job id must be positive, got %r\" % self.job_id)\n        return self.job_id * 2\n\n\ndef unrelated():\n    return 1\n";
const CLI_PY: &str =
    "from pkg.core import Job\n\n\ndef main(argv):\n    return Job(int(argv[0])).run_job()\n";
const NOISE_PY: &str = "# Jobs, job ids and negative job numbers are described here at length.\n# A job id is a number; a job runs; jobs crash when a job id is negative.\ndef describe_job(job):\n    return 'job ' + str(job)\n";

fn issue_md(t: &TestContext, name: &str, number: u64, title: &str, body: &str) {
    t.write(
        name,
        &format!("---\nrepo: acme/jobs\nnumber: {number}\ntitle: {title}\n---\n{body}\n"),
    );
}

fn python_repo() -> TestContext {
    let t = TestContext::new();
    commit_files(
        t.path(),
        &[
            ("pkg/core.py", CORE_PY),
            ("pkg/cli.py", CLI_PY),
            ("pkg/docs_helper.py", NOISE_PY),
            (
                "tests/test_core.py",
                "from pkg.core import Job\n\ndef test_negative_job_id():\n    Job(-1).run_job()\n",
            ),
            (".gitignore", ".autotriage/\n"),
        ],
        "init",
    );
    t
}

fn locate(t: &TestContext, args: &[&str]) -> Value {
    let mut all = vec!["fix"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--until", "locate", "--json"]);
    let o = t.run(&all);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    json(&o)
}

fn ranked(v: &Value) -> Vec<String> {
    v["locate"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

fn channels(file: &Value) -> Vec<String> {
    file["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["channel"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_python_traceback_puts_the_failing_file_first_with_its_line() {
    let t = python_repo();
    issue_md(
        &t,
        "issue.md",
        7,
        "Crash on a bad input",
        "```\nTraceback (most recent call last):\n  File \"/venv/lib/python3.11/site-packages/pkg/cli.py\", line 5, in main\n  File \"/venv/lib/python3.11/site-packages/pkg/core.py\", line 7, in run_job\nValueError: bad\n```",
    );
    let v = locate(&t, &["issue.md"]);
    let files = ranked(&v);
    assert_eq!(files[..2], ["pkg/core.py", "pkg/cli.py"]);
    let first = &v["locate"]["files"][0];
    assert_eq!(first["evidence"][0]["channel"], "frame");
    assert_eq!(first["evidence"][0]["line"], 7);
    assert_eq!(
        first["evidence"][0]["detail"],
        "python traceback: /venv/lib/python3.11/site-packages/pkg/core.py:7 in run_job"
    );
    // The context holds run_job in full, numbered, and stays within the budget.
    let ctx = &v["locate"]["context"];
    assert!(ctx["used_tokens"].as_u64().unwrap() <= ctx["budget_tokens"].as_u64().unwrap());
    let core = &ctx["files"][0];
    assert_eq!(core["path"], "pkg/core.py");
    assert_eq!(core["symbols"][0]["name"], "run_job");
    let snippet = core["snippets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["start_line"] == 5)
        .unwrap();
    assert_eq!(snippet["kind"], "full");
    assert_eq!(snippet["end_line"], 8);
    let full = snippet["text"].as_str().unwrap();
    assert!(full.starts_with("    5     def run_job(self):\n"), "{full}");
    assert!(
        full.contains("    7             raise ValueError("),
        "{full}"
    );
    // The run holds the same as context.json, with the stages recorded.
    let run_id = v["run_id"].as_str().unwrap();
    let o = t.run(&["runs", "show", run_id, "--file", "context.json", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let shown = json(&o);
    let stored: Value = serde_json::from_str(shown["content"].as_str().unwrap()).unwrap();
    assert_eq!(stored["files"][0]["path"], "pkg/core.py");
    let run = &shown["run"];
    assert_eq!(run["stages"]["triage"]["status"], "done");
    assert_eq!(run["stages"]["locate"]["status"], "done");
    assert_eq!(run["command"], "fix");
    assert_eq!(run["base_commit"].as_str().unwrap().len(), 40);
}

#[test]
fn the_text_report_lists_ranked_files_with_their_evidence() {
    let t = python_repo();
    issue_md(
        &t,
        "issue.md",
        7,
        "Crash on a bad input",
        "  File \"/venv/site-packages/pkg/core.py\", line 7, in run_job\n",
    );
    let o = t.run(&["fix", "issue.md", "--until", "locate"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("acme/jobs#7  Crash on a bad input"), "{out}");
    assert!(out.contains("    1. pkg/core.py  "), "{out}");
    assert!(
        out.contains(
            "         python traceback: /venv/site-packages/pkg/core.py:7 in run_job (line 7)"
        ),
        "{out}"
    );
    assert!(out.contains("stopped after locate"), "{out}");
}

#[test]
fn a_rust_panic_location_names_the_file() {
    let t = TestContext::new();
    let mut x = String::new();
    for i in 1..=11 {
        x.push_str(&format!("// line {i}\n"));
    }
    x.push_str("pub fn split(v: &[u8]) -> u8 { v[0] - 1 }\n");
    commit_files(
        t.path(),
        &[
            ("src/x.rs", &x),
            (
                "src/y.rs",
                "// subtract overflow attempt: subtract with care, overflow everywhere\npub fn subtract(a: u8, b: u8) -> u8 { a.saturating_sub(b) }\n",
            ),
            ("Cargo.toml", "[package]\nname = \"x\"\n"),
        ],
        "init",
    );
    issue_md(
        &t,
        "issue.md",
        2,
        "Subtract overflow",
        "thread 'main' panicked at src/x.rs:12:5:\nattempt to subtract with overflow\n",
    );
    let v = locate(&t, &["issue.md"]);
    assert_eq!(ranked(&v)[0], "src/x.rs");
    let first = &v["locate"]["files"][0];
    assert_eq!(first["evidence"][0]["channel"], "frame");
    assert_eq!(first["evidence"][0]["detail"], "rust panic: src/x.rs:12");
    assert_eq!(first["evidence"][0]["line"], 12);
}

#[test]
fn an_error_message_is_found_as_a_string_literal() {
    let t = TestContext::new();
    commit_files(
        t.path(),
        &[
            (
                "app/loader.py",
                "def load(path):\n    raise LoadError(\"unknown section header in %s\" % path)\n",
            ),
            // More of the issue's words, but not the message.
            (
                "app/sections.py",
                "# Loading config sections: each section header, config file and section loader.\n# Config sections load; a section header names a section.\ndef section(header):\n    return header\n",
            ),
        ],
        "init",
    );
    issue_md(
        &t,
        "issue.md",
        3,
        "Loading my config fails on section headers",
        "```\nLoadError: unknown section header in /etc/app.cfg\n```",
    );
    let v = locate(&t, &["issue.md"]);
    assert_eq!(ranked(&v)[0], "app/loader.py");
    let first = &v["locate"]["files"][0];
    let lit = first["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["channel"] == "literal")
        .unwrap();
    assert_eq!(lit["line"], 2);
    assert_eq!(
        lit["detail"],
        "error message \"unknown section header in /etc/app.cfg\" is a string here"
    );
    // The other file has none.
    let other = &v["locate"]["files"][1];
    assert!(!channels(other).contains(&"literal".to_string()));
}

#[test]
fn an_identifier_is_matched_to_the_file_that_defines_it() {
    let t = TestContext::new();
    commit_files(
        t.path(),
        &[
            (
                "lib/paths.py",
                "def normalize_segments(parts):\n    return [p for p in parts if p]\n",
            ),
            // Shares the issue's words, but does not define the name.
            (
                "lib/client.py",
                "# The client keeps the last segment of a path, and its slash.\ndef join(parts):\n    return '/'.join(parts)\n",
            ),
            ("lib/other.py", "def trailing():\n    return 'slash'\n"),
        ],
        "init",
    );
    issue_md(
        &t,
        "issue.md",
        4,
        "Empty segments handled wrong",
        "`normalize_segments` drops the empty last segment, so the trailing slash of a path is lost.",
    );
    let v = locate(&t, &["issue.md"]);
    let files = ranked(&v);
    assert_eq!(files[0], "lib/paths.py", "{files:?}");
    let sym = v["locate"]["files"][0]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["channel"] == "symbol")
        .unwrap()
        .clone();
    assert_eq!(sym["detail"], "defines `normalize_segments`");
    let client = v["locate"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "lib/client.py")
        .unwrap();
    assert!(!channels(client).contains(&"symbol".to_string()));
}

#[test]
fn files_matched_by_gitignore_are_never_indexed() {
    let t = python_repo();
    // Tracked anyway (force-added), and full of the issue's words.
    commit_files(
        t.path(),
        &[
            (".gitignore", ".autotriage/\nbuild/\n"),
            (
                "build/generated_jobs.py",
                "# negative job id crash run_job ValueError job id must be positive\n",
            ),
        ],
        "add build output",
    );
    issue_md(
        &t,
        "issue.md",
        7,
        "Negative job id crash",
        "run_job raises ValueError: job id must be positive, got -1",
    );
    let v = locate(&t, &["issue.md"]);
    assert!(!ranked(&v).iter().any(|p| p.starts_with("build/")));
    assert_eq!(v["locate"]["index"]["skipped"]["ignored"], 1);
    let dir = v["locate"]["index"]["dir"].as_str().unwrap();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(std::path::Path::new(dir).join("files.json")).unwrap(),
    )
    .unwrap();
    let files: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(files.contains(&"pkg/core.py"));
    assert!(!files.contains(&"build/generated_jobs.py"));
}

#[test]
fn the_index_is_reused_for_a_commit_and_rebuilt_for_a_new_one() {
    let t = python_repo();
    issue_md(
        &t,
        "issue.md",
        7,
        "Retry budget ignored",
        "The retry budget is not honoured by the scheduler.",
    );
    let first = locate(&t, &["issue.md"]);
    assert_eq!(first["locate"]["index"]["built"], true);
    let second = locate(&t, &["issue.md"]);
    assert_eq!(second["locate"]["index"]["built"], false);
    assert_eq!(
        first["locate"]["index"]["dir"],
        second["locate"]["index"]["dir"]
    );
    assert!(!ranked(&second).contains(&"pkg/scheduler.py".to_string()));

    let head = commit_files(
        t.path(),
        &[(
            "pkg/scheduler.py",
            "def schedule(job, retry_budget):\n    # the retry budget is honoured here\n    return job\n",
        )],
        "scheduler",
    );
    let third = locate(&t, &["issue.md"]);
    assert_eq!(third["locate"]["index"]["built"], true);
    assert_ne!(
        third["locate"]["index"]["dir"],
        first["locate"]["index"]["dir"]
    );
    assert_eq!(third["locate"]["commit"], head.to_string());
    assert_eq!(ranked(&third)[0], "pkg/scheduler.py");
}

#[test]
fn files_changed_by_fixes_of_similar_issues_are_evidence() {
    let t = python_repo();
    // A past issue and its fix, as a memory export would carry them.
    let past = json!({"type": "issue", "repo": "acme/jobs", "number": 1, "title": "Scheduler loses negative job ids",
        "body": "negative job ids vanish from the scheduler queue", "labels": ["bug"], "state": "closed",
        "comments": [], "seen_at": "2026-11-01T00:00:00Z"});
    let fix = json!({"type": "fix", "repo": "acme/jobs", "number": 1, "run_id": "r1", "files": ["pkg/cli.py"],
        "verdict": "merged", "pr_url": null, "created_at": "2026-11-01T00:00:00Z"});
    t.write("past.jsonl", &format!("{past}\n{fix}\n"));
    let o = t.run(&["memory", "import", "past.jsonl"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    issue_md(
        &t,
        "issue.md",
        9,
        "Negative job ids vanish",
        "Negative job ids vanish from the queue again.",
    );
    let v = locate(&t, &["issue.md"]);
    let cli = v["locate"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "pkg/cli.py")
        .unwrap();
    let prior = cli["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["channel"] == "memory")
        .unwrap();
    assert!(
        prior["detail"]
            .as_str()
            .unwrap()
            .starts_with("changed by the fix of similar issue acme/jobs#1 ("),
        "{prior}"
    );
    // The fix survives an export.
    let o = t.run(&["memory", "export", "--jsonl"]);
    assert!(
        stdout(&o)
            .lines()
            .any(|l| l.contains("\"type\":\"fix\"") && l.contains("pkg/cli.py"))
    );
}

#[test]
fn the_model_re_rank_reorders_the_top_files_and_records_its_tokens() {
    let s = HttpMock::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "rank_files",
                    "input": {"files": ["pkg/cli.py", "pkg/core.py"], "reason": "main() passes the id unchecked"}}],
                "stop_reason": "tool_use", "usage": {"input_tokens": 1500, "output_tokens": 40}}))),
    );
    let t = python_repo();
    t.write(
        "autotriage.yaml",
        &format!(
            "models:\n  a:\n    provider: anthropic\n    model_id: claude-x\n    base_url: {}\n    price: {{input_per_mtok: 3.0, output_per_mtok: 15.0}}\nmodel: a\ntriage:\n  engine: offline\n",
            s.server.uri()
        ),
    );
    issue_md(
        &t,
        "issue.md",
        7,
        "Crash",
        "  File \"/venv/site-packages/pkg/core.py\", line 7, in run_job\n  File \"/venv/site-packages/pkg/cli.py\", line 5, in main\n",
    );
    let o = t
        .cmd()
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args(["fix", "issue.md", "--until", "locate", "--rerank", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(ranked(&v)[..2], ["pkg/cli.py", "pkg/core.py"]);
    assert_eq!(v["locate"]["files"][0]["evidence"][0]["channel"], "model");
    assert_eq!(
        v["locate"]["rerank"]["reason"],
        "main() passes the id unchecked"
    );
    assert_eq!(v["locate"]["rerank"]["input_tokens"], 1500);
    // The request named the candidates, and the run recorded the spend.
    let body = &s.bodies()[0];
    assert_eq!(body["tool_choice"]["name"], "rank_files");
    let prompt = body["messages"][0]["content"].to_string();
    assert!(prompt.contains("pkg/core.py") && prompt.contains("pkg/cli.py"));
    let run_id = v["run_id"].as_str().unwrap();
    let shown = json(&t.run(&["runs", "show", run_id, "--file", "usage.json", "--json"]));
    let usage: Value = serde_json::from_str(shown["content"].as_str().unwrap()).unwrap();
    assert_eq!(usage["total"]["input_tokens"], 1500);
    assert_eq!(usage["total"]["output_tokens"], 40);
}

#[test]
fn bad_input_is_refused_with_exit_2_and_no_run() {
    // Not in a checkout.
    let t = TestContext::new();
    issue_md(&t, "issue.md", 1, "x", "y");
    let o = t.run(&["fix", "issue.md", "--until", "locate"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("not in a git checkout"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("--repo-dir"), "{}", stderr(&o));
    assert!(!t.path().join(".autotriage/runs").exists());

    // A checkout of another repository.
    let t = python_repo();
    git2::Repository::open(t.path())
        .unwrap()
        .remote("origin", "https://github.com/acme/other.git")
        .unwrap();
    issue_md(&t, "issue.md", 1, "x", "y");
    let o = t.run(&["fix", "issue.md"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("this checkout is acme/other (its origin), not acme/jobs"),
        "{}",
        stderr(&o)
    );

    // --repo-dir that is not a repository.
    let o = t.run(&["fix", "issue.md", "--repo-dir", "pkg"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("--repo-dir pkg: not a git repository"),
        "{}",
        stderr(&o)
    );

    // A re-rank without a model.
    let t = python_repo();
    issue_md(&t, "issue.md", 1, "x", "y");
    let o = t.run(&["fix", "issue.md", "--rerank"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("needs a model"), "{}", stderr(&o));
    assert!(!t.path().join(".autotriage/runs").exists());

    // A repository whose open issues memory does not hold.
    let o = t.run(&["fix", "acme/jobs"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("memory has no open issues of acme/jobs"),
        "{}",
        stderr(&o)
    );

    // A bad locate setting names its key.
    t.write("autotriage.yaml", "locate:\n  context_tokens: 10\n");
    let o = t.run(&["fix", "issue.md"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("locate.context_tokens"),
        "{}",
        stderr(&o)
    );
}

/// A folder of repositories in the `owner+name/repo` layout, and a dataset about it.
fn eval_fixture(t: &TestContext) -> String {
    let repo_dir = t.path().join("repos/acme+jobs/repo");
    std::fs::create_dir_all(&repo_dir).unwrap();
    let head = commit_files(
        &repo_dir,
        &[
            ("pkg/core.py", CORE_PY),
            ("pkg/cli.py", CLI_PY),
            ("pkg/docs_helper.py", NOISE_PY),
        ],
        "init",
    );
    // A later commit changes core.py: the eval must read the base commit, not HEAD.
    commit_files(&repo_dir, &[("pkg/core.py", "# rewritten\n")], "later");
    let records = [
        json!({"repo": "acme/jobs", "instance_id": "acme__jobs-1", "base_commit": head.to_string(),
            "problem_statement": "run_job crashes\nValueError: job id must be positive, got -1",
            "patch": "diff --git a/pkg/core.py b/pkg/core.py\n--- a/pkg/core.py\n+++ b/pkg/core.py\n@@ -1 +1 @@\n-a\n+b\n"}),
        json!({"repo": "acme/jobs", "instance_id": "acme__jobs-2", "base_commit": head.to_string(),
            "problem_statement": "main ignores argv\nThe `main` entry point should read the job id from argv.",
            "patch": "diff --git a/pkg/cli.py b/pkg/cli.py\n--- a/pkg/cli.py\n+++ b/pkg/cli.py\n@@ -1 +1 @@\n-a\n+b\n"}),
        json!({"repo": "acme/missing", "instance_id": "acme__missing-1", "base_commit": head.to_string(),
            "problem_statement": "x", "patch": ""}),
    ];
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    t.write("dev.jsonl", &text);
    head.to_string()
}

#[test]
fn eval_localize_measures_recall_at_the_base_commit() {
    let t = TestContext::new();
    eval_fixture(&t);
    let o = t.run(&[
        "eval",
        "localize",
        "--dataset",
        "dev.jsonl",
        "--repos",
        "repos",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["instances"], 2);
    assert_eq!(v["skipped"], 1);
    assert_eq!(v["recall_at_1"], 1.0);
    assert_eq!(v["recall_at_5"], 1.0);
    assert_eq!(v["mrr"], 1.0);
    for key in ["recall_at_3", "recall_at_10", "median_context_tokens"] {
        assert!(v[key].is_number(), "{key}");
    }
    assert_eq!(v["per_instance"][0]["gold"], json!(["pkg/core.py"]));
    assert!(
        stderr(&o).contains("skipped acme__missing-1: no git repository for acme/missing"),
        "{}",
        stderr(&o)
    );

    let o = t.run(&[
        "eval",
        "localize",
        "--dataset",
        "dev.jsonl",
        "--repos",
        "repos",
    ]);
    let out = stdout(&o);
    assert!(out.contains("2 instances (1 skipped)"), "{out}");
    assert!(out.contains("file recall@5  1.000"), "{out}");
}

#[test]
fn eval_localize_bad_input() {
    let t = TestContext::new();
    eval_fixture(&t);
    t.write("bad.jsonl", "{\"repo\": \"acme/jobs\"}\n");
    let o = t.run(&[
        "eval",
        "localize",
        "--dataset",
        "bad.jsonl",
        "--repos",
        "repos",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("bad.jsonl:1: not a SWE-bench record"),
        "{}",
        stderr(&o)
    );
    let o = t.run(&[
        "eval",
        "localize",
        "--dataset",
        "dev.jsonl",
        "--repos",
        "nowhere",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("--repos nowhere: not a folder"),
        "{}",
        stderr(&o)
    );
    let o = t.run(&[
        "eval",
        "localize",
        "--dataset",
        "dev.jsonl",
        "--repos",
        "repos",
        "--instance",
        "acme__missing-1",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("no instance of dev.jsonl could be measured"),
        "{}",
        stderr(&o)
    );
}
