//! The test stage and the whole `fix` flow, end to end: the real binary, a scripted
//! model, the fake GitHub, real git repositories and the repositories' own tests run
//! in the sandbox.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::suite::common::*;
use crate::suite::github::{FakeRepo, RepoState, ctx_with, issue, sha};

const OPS_PY: &str = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n";

const TEST_OPS_PY: &str = "from calc.ops import add, mul\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n";

const PY_ISSUE: &str = "---\nrepo: acme/calc\nnumber: 4\ntitle: add() subtracts\nauthor_association: MEMBER\n---\n`add(2, 3)` returns -1 instead of 5, in calc/ops.py.\n";

const PY_FIX: &str = "The `-` should be `+`.\n\ncalc/ops.py\n```python\n<<<<<<< SEARCH\ndef add(a, b):\n    return a - b\n=======\ndef add(a, b):\n    return a + b\n>>>>>>> REPLACE\n```\n";

/// Fixes add() and breaks mul().
const PY_BREAKS_MUL: &str = "Fix add; tidy mul.\n\ncalc/ops.py\n```python\n<<<<<<< SEARCH\ndef add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n=======\ndef add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a ** b\n>>>>>>> REPLACE\n```\n";

const LIB_RS: &str = "/// `x` clamped into `lo..=hi`.\npub fn clamp(x: i32, lo: i32, hi: i32) -> i32 {\n    if x < lo {\n        lo\n    } else if x > hi {\n        lo\n    } else {\n        x\n    }\n}\n\n/// Twice `x`.\npub fn double(x: i32) -> i32 {\n    x * 2\n}\n\n#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n    fn clamps_high_values() {\n        assert_eq!(clamp(12, 0, 10), 10);\n    }\n\n    #[test]\n    fn keeps_values_inside() {\n        assert_eq!(clamp(5, 0, 10), 5);\n    }\n\n    #[test]\n    fn doubles() {\n        assert_eq!(double(4), 8);\n    }\n}\n";

const CARGO_TOML: &str =
    "[package]\nname = \"mini\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n";

const RS_FIX: &str = "Values above `hi` returned `lo`.\n\nsrc/lib.rs\n```rust\n<<<<<<< SEARCH\n    } else if x > hi {\n        lo\n=======\n    } else if x > hi {\n        hi\n>>>>>>> REPLACE\n```\n";

const RS_FIX_DIFF: &str = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -3,7 +3,7 @@\n     if x < lo {\n         lo\n     } else if x > hi {\n-        lo\n+        hi\n     } else {\n         x\n     }\n";

fn reply(text: &str) -> Value {
    json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
           "content": [{"type": "text", "text": text}],
           "stop_reason": "end_turn", "usage": {"input_tokens": 1000, "output_tokens": 100}})
}

/// The model answers these, in order; the last one from then on.
fn script_model(s: &HttpMock, answers: &[&str]) {
    for (i, a) in answers.iter().enumerate() {
        let m = Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(reply(a)))
            .with_priority(i as u8 + 1);
        s.mount(if i + 1 < answers.len() {
            m.up_to_n_times(1)
        } else {
            m
        });
    }
}

/// A scripted model; the triage stays offline (the scripted answers are patches)
/// unless `extra` sets `triage:`.
fn model_config(s: &HttpMock, extra: &str) -> String {
    let triage = if extra.contains("triage:") {
        ""
    } else {
        "triage:\n  engine: offline\n"
    };
    format!(
        "models:\n  a:\n    provider: anthropic\n    model_id: claude-x\n    base_url: {}\n    price: {{input_per_mtok: 3.0, output_per_mtok: 15.0}}\nmodel: a\n{triage}{extra}",
        s.server.uri()
    )
}

/// Where the Rust toolchain lives, so `cargo` works under the test's own HOME.
fn toolchain_env() -> Vec<(String, String)> {
    let home = std::env::var("HOME").unwrap_or_default();
    let mut out = Vec::new();
    for (var, default) in [("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo")] {
        let v = std::env::var(var).unwrap_or_else(|_| format!("{home}/{default}"));
        if std::path::Path::new(&v).exists() {
            out.push((var.to_string(), v));
        }
    }
    out
}

fn python_repo() -> TestContext {
    let t = TestContext::new();
    commit_files(
        t.path(),
        &[
            ("calc/__init__.py", ""),
            ("calc/ops.py", OPS_PY),
            ("tests/test_ops.py", TEST_OPS_PY),
            ("pyproject.toml", "[tool.pytest.ini_options]\n"),
            (".gitignore", ".autotriage/\n.pytest_cache/\n"),
        ],
        "init",
    );
    t.write("issue.md", PY_ISSUE);
    t
}

fn run_with(t: &TestContext, env: &[(String, String)], args: &[&str]) -> std::process::Output {
    let mut cmd = t.cmd();
    cmd.env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().unwrap()
}

fn run_file(t: &TestContext, run_id: &str, name: &str) -> String {
    let o = t.run(&["runs", "show", run_id, "--file", name, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    json(&o)["content"].as_str().unwrap().to_string()
}

fn branch_file(t: &TestContext, branch: &str, file: &str) -> Option<String> {
    let repo = git2::Repository::open(t.path()).unwrap();
    let commit = repo
        .find_reference(&format!("refs/heads/{branch}"))
        .ok()?
        .peel_to_commit()
        .ok()?;
    let entry = commit
        .tree()
        .ok()?
        .get_path(std::path::Path::new(file))
        .ok()?;
    let blob = repo.find_blob(entry.id()).ok()?;
    Some(String::from_utf8(blob.content().to_vec()).unwrap())
}

/// Whether `python3 -m pytest` runs here (a skip locally, a failure in CI).
fn pytest_present() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-m", "pytest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !emulators_required(),
            "CI needs pytest (`pip install pytest`) for the test-stage tests"
        );
        eprintln!("skipped: pytest is not installed");
    }
    ok
}

fn bwrap_present() -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("bwrap").is_file()))
        .unwrap_or(false);
    if !found {
        assert!(
            !emulators_required(),
            "CI needs bubblewrap (`bwrap`) for the sandbox tests"
        );
        eprintln!("skipped: bubblewrap is not installed");
    }
    found
}

#[test]
fn python_fix_runs_the_tests_before_and_after_and_publishes_a_branch() {
    if !pytest_present() {
        return;
    }
    let s = HttpMock::start();
    script_model(&s, &[PY_FIX]);
    let t = python_repo();
    t.write(
        "autotriage.yaml",
        &model_config(&s, "repair:\n  candidates: 1\n"),
    );
    let o = run_with(&t, &[], &["fix", "issue.md", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["until"], "pr");
    assert_eq!(v["verdict"], "fixed");
    let tests = &v["test"];
    assert_eq!(tests["plan"]["command"], "python3 -m pytest");
    assert_eq!(tests["plan"]["detected"], true);
    assert_eq!(
        tests["baseline"]["run"]["results"]["tests"],
        json!({"tests.test_ops::test_add": "failed", "tests.test_ops::test_mul": "passed"})
    );
    assert_eq!(tests["chosen"], 1);
    let c = &tests["candidates"][0];
    assert_eq!(c["fixed"], json!(["tests.test_ops::test_add"]));
    assert_eq!(c["regressions"], json!([]));
    // Targeted tests first (the test file naming the changed module), then the suite.
    assert_eq!(c["runs"][0]["label"], "candidate 1 targeted");
    assert!(
        c["runs"][0]["command"]
            .as_str()
            .unwrap()
            .ends_with(" tests/test_ops.py")
    );
    assert_eq!(c["runs"][1]["label"], "candidate 1");
    // Published: a branch from the base with the fix, and its description.
    assert_eq!(v["pr"]["forge"], "local");
    assert_eq!(
        branch_file(&t, "autotriage/issue-4", "calc/ops.py").unwrap(),
        OPS_PY.replace("a - b", "a + b")
    );
    let run_id = v["run_id"].as_str().unwrap();
    let body = run_file(&t, run_id, "pr.md");
    assert!(body.contains("verdict **fixed**"), "{body}");
    assert!(
        body.contains("1 failing → passing (tests.test_ops::test_add)"),
        "{body}"
    );
    assert!(body.contains("Fixes #4"), "{body}");
    // The user's checkout is untouched; the worktrees are gone.
    assert_eq!(
        std::fs::read_to_string(t.path().join("calc/ops.py")).unwrap(),
        OPS_PY
    );
    let wt = t.home.path().join(".cache/autotriage/worktrees");
    assert_eq!(std::fs::read_dir(&wt).unwrap().count(), 0);
    // Logs per run, and the fix in memory with its verdict.
    assert!(run_file(&t, run_id, "tests/baseline.log").contains("1 failed, 1 passed"));
    let export = stdout(&t.run(&["memory", "export", "--jsonl"]));
    let fix: Value = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["type"] == "fix")
        .expect("a fix record");
    assert_eq!(fix["verdict"], "fixed");
    assert_eq!(fix["files"], json!(["calc/ops.py"]));
    let runs = json(&t.run(&["runs", "show", run_id, "--json"]));
    assert!(runs["run"]["cost_usd"].as_f64().unwrap() > 0.0);

    // Again: the triage is reused, the baseline comes from the cache, the branch is
    // unchanged.
    let o = run_with(&t, &[], &["fix", "issue.md", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["test"]["baseline"]["cached"], true);
    let events = run_file(&t, v["run_id"].as_str().unwrap(), "events.jsonl");
    assert!(events.contains("reused a triage from memory"), "{events}");
    assert_eq!(v["pr"]["published"]["status"], "unchanged");
}

#[test]
fn a_candidate_that_breaks_another_test_is_rejected() {
    if !pytest_present() {
        return;
    }
    let s = HttpMock::start();
    script_model(&s, &[PY_BREAKS_MUL, PY_FIX]);
    let t = python_repo();
    t.write(
        "autotriage.yaml",
        &model_config(&s, "repair:\n  candidates: 2\n"),
    );
    let o = run_with(&t, &[], &["fix", "issue.md", "--until", "test", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    let c1 = &v["test"]["candidates"][0];
    assert_eq!(c1["verdict"], "regression");
    assert_eq!(c1["regressions"], json!(["tests.test_ops::test_mul"]));
    // Re-run once to tell a regression from a flaky test.
    assert_eq!(c1["runs"][1]["label"], "candidate 1 targeted re-run");
    assert_eq!(v["test"]["candidates"][1]["verdict"], "fixed");
    assert_eq!(v["test"]["chosen"], 2);
    // --until test publishes nothing.
    assert!(branch_file(&t, "autotriage/issue-4", "calc/ops.py").is_none());

    // Only the breaking candidate: exit 3, it is kept for review, nothing published.
    let s = HttpMock::start();
    script_model(&s, &[PY_BREAKS_MUL]);
    t.write(
        "autotriage.yaml",
        &model_config(&s, "repair:\n  candidates: 1\n"),
    );
    let o = run_with(&t, &[], &["fix", "issue.md"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("no candidate passed the tests"), "{err}");
    assert!(err.contains("breaks tests.test_ops::test_mul"), "{err}");
    assert!(
        err.contains("the best attempt, candidate 1, is kept for review"),
        "{err}"
    );
    assert!(
        stdout(&o).contains("candidate 1: regression"),
        "{}",
        stdout(&o)
    );
    assert!(branch_file(&t, "autotriage/issue-4", "calc/ops.py").is_none());
}

#[test]
fn a_failed_candidate_goes_back_with_its_test_output_and_the_next_round_is_proven() {
    if !pytest_present() {
        return;
    }
    let s = HttpMock::start();
    script_model(&s, &[PY_BREAKS_MUL, PY_FIX]);
    let t = python_repo();
    t.write(
        "autotriage.yaml",
        &model_config(&s, "repair:\n  candidates: 1\n  rounds: 1\n"),
    );
    let o = run_with(&t, &[], &["fix", "issue.md", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let bodies = s.bodies();
    assert_eq!(bodies.len(), 2, "one candidate, one round: two requests");
    // The second request carries the first candidate's diff and the failing test's
    // name and output.
    let second = bodies[1]["messages"].to_string();
    assert!(second.contains("a ** b"), "{second}");
    assert!(second.contains("tests.test_ops::test_mul"), "{second}");
    assert!(second.contains("assert 8 == 6"), "{second}");
    assert!(!bodies[0]["messages"].to_string().contains("assert 8 == 6"));
    let run_id = json(&o)["run_id"].as_str().unwrap().to_string();
    let test: Value = serde_json::from_str(&run_file(&t, &run_id, "test.json")).unwrap();
    assert_eq!(test["rounds"], 1);
    assert_eq!(test["chosen"], 2);
    assert_eq!(test["candidates"][0]["verdict"], "regression");
    assert_eq!(test["candidates"][1]["round"], 1);
    assert_eq!(test["candidates"][1]["verdict"], "fixed");
    let usage: Value = serde_json::from_str(&run_file(&t, &run_id, "usage.json")).unwrap();
    assert_eq!(usage["calls"].as_array().unwrap().len(), 2, "{usage}");
    assert_eq!(usage["calls"][1]["stage"], "repair round 1", "{usage}");
    let pr = run_file(&t, &run_id, "pr.md");
    assert!(pr.contains("Written in round 1 with feedback"), "{pr}");
    assert!(pr.contains("1 of them in rounds with feedback"), "{pr}");
    assert_eq!(
        branch_file(&t, "autotriage/issue-4", "calc/ops.py").as_deref(),
        Some(OPS_PY.replace("a - b", "a + b").as_str())
    );
}

/// A reproduction test for PY_ISSUE: it fails on the base with the value the issue names.
const REPRO_ADD: &str = "Checks that add() adds.\n\ntests/test_add_repro.py\n<<<<<<< SEARCH\n=======\nfrom calc.ops import add\n\n\ndef test_add_adds():\n    assert add(2, 3) == 5\n>>>>>>> REPLACE\n";

/// Tests only mul(), which works: nothing on the base shows the bug.
const TEST_MUL_ONLY: &str =
    "from calc.ops import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n";

#[test]
fn a_reproduction_that_fails_with_the_issues_value_is_frozen_and_proves_the_fix() {
    if !pytest_present() {
        return;
    }
    let t = py_repo(&[
        ("calc/ops.py", OPS_PY),
        ("tests/test_ops.py", TEST_MUL_ONLY),
    ]);
    // Candidate 1 fixes add() but rewrites the reproduction into a test that always
    // passes; candidate 2 fixes add() and brings no test.
    let weakens = "Fix and test.\n\ncalc/ops.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n\ntests/test_add_repro.py\n<<<<<<< SEARCH\n=======\ndef test_add_adds():\n    pass\n>>>>>>> REPLACE\n";
    // Candidate 3 leaves add() alone and brings a test of its own that always passes:
    // the frozen test joins it anyway, and fails.
    let dodges = "Tidy mul, with a test.\n\ncalc/ops.py\n<<<<<<< SEARCH\ndef mul(a, b):\n    return a * b\n=======\ndef mul(a, b):\n    return b * a\n>>>>>>> REPLACE\n\ntests/test_extra.py\n<<<<<<< SEARCH\n=======\ndef test_true():\n    assert True\n>>>>>>> REPLACE\n";
    let s = HttpMock::start();
    script_model(&s, &[REPRO_ADD, weakens, PY_FIX, dodges]);
    t.write(
        "autotriage.yaml",
        &model_config(
            &s,
            "repair:\n  candidates: 3\n  rounds: 0\n  reproduce: true\n",
        ),
    );
    let o = run_with(&t, &[], &["fix", "issue.md", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(s.bodies().len(), 4);
    let v = json(&o);
    let run_id = v["run_id"].as_str().unwrap().to_string();
    let repro: Value = serde_json::from_str(&run_file(&t, &run_id, "reproduction.json")).unwrap();
    assert_eq!(repro["status"], "reproduced", "{repro}");
    assert!(
        repro["why"]
            .as_str()
            .unwrap()
            .contains("a value the issue names"),
        "{repro}"
    );
    assert_eq!(
        repro["tests"],
        json!(["tests.test_add_repro::test_add_adds"])
    );
    let tests = &v["test"];
    assert_eq!(tests["reproduction"]["status"], "reproduced");
    let c1 = &tests["candidates"][0];
    assert_eq!(c1["verdict"], "suspect", "{c1}");
    assert!(
        c1["summary"]
            .as_str()
            .unwrap()
            .contains("reproduction test")
    );
    let c2 = &tests["candidates"][1];
    assert_eq!(c2["verdict"], "fixed", "{c2}");
    assert_eq!(
        c2["reproduced"],
        json!(["tests.test_add_repro::test_add_adds"])
    );
    assert_eq!(tests["chosen"], 2);
    let c3 = &tests["candidates"][2];
    assert_eq!(c3["verdict"], "failing", "{c3}");
    assert_eq!(v["repair"]["candidates"][2]["with_reproduction"], true);
    assert_eq!(v["repair"]["candidates"][1]["with_reproduction"], true);
    assert!(v["repair"]["candidates"][0]["with_reproduction"].is_null());
    let pr = run_file(&t, &run_id, "pr.md");
    assert!(pr.contains("Proved by a generated test"), "{pr}");
    // The published branch carries the fix and the generated test.
    assert_eq!(
        branch_file(&t, "autotriage/issue-4", "tests/test_add_repro.py").as_deref(),
        Some("from calc.ops import add\n\n\ndef test_add_adds():\n    assert add(2, 3) == 5\n")
    );
}

#[test]
fn a_reproduction_that_passes_on_the_base_is_dropped() {
    if !pytest_present() {
        return;
    }
    let t = py_repo(&[
        ("calc/ops.py", OPS_PY),
        ("tests/test_ops.py", TEST_MUL_ONLY),
    ]);
    let passes = "Checks mul.\n\ntests/test_mul_repro.py\n<<<<<<< SEARCH\n=======\nfrom calc.ops import mul\n\n\ndef test_mul_again():\n    assert mul(2, 3) == 6\n>>>>>>> REPLACE\n";
    let s = HttpMock::start();
    script_model(&s, &[passes, PY_FIX]);
    t.write(
        "autotriage.yaml",
        &model_config(
            &s,
            "repair:\n  candidates: 1\n  rounds: 0\n  reproduce: true\n",
        ),
    );
    let o = run_with(&t, &[], &["fix", "issue.md", "--until", "test", "--json"]);
    // Nothing shows the fix without the dropped test: unproven, exit 3.
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let runs = t.path().join(".autotriage/runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let repro: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("reproduction.json")).unwrap())
            .unwrap();
    assert_eq!(repro["status"], "dropped", "{repro}");
    assert!(
        repro["why"]
            .as_str()
            .unwrap()
            .contains("passes on the base")
    );
    assert!(!run.join("reproduction.diff").exists());
    let diff = std::fs::read_to_string(run.join("candidates/1.diff")).unwrap();
    assert!(!diff.contains("test_mul_repro"), "{diff}");
    let tests: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("test.json")).unwrap()).unwrap();
    assert_eq!(tests["candidates"][0]["verdict"], "unproven");
    assert_eq!(tests["reproduction"]["status"], "dropped");
}

#[test]
fn rust_fix_opens_a_draft_pr_and_a_killed_run_resumes_without_a_duplicate() {
    let gh = HttpMock::start();
    let state: std::sync::Arc<std::sync::Mutex<RepoState>> = Default::default();
    {
        let mut s = state.lock().unwrap();
        let mut tree = std::collections::BTreeMap::new();
        for (p, c) in [("Cargo.toml", CARGO_TOML), ("src/lib.rs", LIB_RS)] {
            s.files.insert(p.into(), c.into());
            let blob = sha(&format!("blob {c}"));
            s.blobs.insert(blob.clone(), c.into());
            tree.insert(p.to_string(), blob);
        }
        s.trees.insert("tree0".into(), tree);
        s.commits
            .insert("base0".into(), ("tree0".into(), String::new()));
        s.refs.insert("main".into(), "base0".into());
    }
    gh.mount(
        Mock::given(method("GET"))
            .and(path("/repos/o/r/issues/3"))
            .respond_with(ResponseTemplate::new(200).set_body_json(issue(
                3,
                "clamp() returns lo for values above hi",
                "`clamp(12, 0, 10)` gives 0; it should give 10 (src/lib.rs).",
                &["bug"],
                false,
            ))),
    );
    gh.mount(
        Mock::given(wiremock::matchers::path_regex("^/repos/o/r(/.*)?$"))
            .respond_with(FakeRepo(state.clone())),
    );
    let model = HttpMock::start();
    script_model(&model, &[RS_FIX]);
    let (t, gh_env) = ctx_with(&gh.server);
    t.git_init("https://github.com/o/r.git");
    commit_files(
        t.path(),
        &[
            ("Cargo.toml", CARGO_TOML),
            ("src/lib.rs", LIB_RS),
            (".gitignore", ".autotriage/\n/target\n/go\n"),
        ],
        "init",
    );
    // The setup waits for a file the first time, so the run can be killed in the test
    // stage.
    let go = t.path().join("go");
    t.write(
        "autotriage.yaml",
        &model_config(
            &model,
            &format!(
                "repair:\n  candidates: 1\ntest:\n  setup: \"[ -f {} ] || sleep 20\"\n  sandbox: off\n",
                go.display()
            ),
        ),
    );
    let mut env: Vec<(String, String)> = gh_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    env.extend(toolchain_env());

    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("autotriage"));
    cmd.current_dir(t.path())
        .env_clear()
        .env("HOME", t.home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args(["fix", "o/r#3", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    // Wait until the test stage is running, then kill the process outright.
    let runs = t.path().join(".autotriage/runs");
    let started = std::time::Instant::now();
    let run_id = loop {
        let found = std::fs::read_dir(&runs).ok().and_then(|d| {
            d.flatten().find_map(|e| {
                let meta: Value =
                    serde_json::from_str(&std::fs::read_to_string(e.path().join("run.json")).ok()?)
                        .ok()?;
                (meta["stages"]["test"]["status"] == "running")
                    .then(|| meta["id"].as_str().unwrap().to_string())
            })
        });
        if let Some(id) = found {
            break id;
        }
        assert!(
            started.elapsed().as_secs() < 120,
            "the test stage never started"
        );
        assert!(child.try_wait().unwrap().is_none(), "fix ended early");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(state.lock().unwrap().pulls.is_empty());
    std::fs::write(&go, "").unwrap();

    // Resumed: the same run, no new model call, and one draft PR.
    let o = run_with(&t, &env, &["fix", "o/r#3", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "resuming the interrupted run {run_id} after its repair stage"
        )),
        "{}",
        stderr(&o)
    );
    let v = json(&o);
    assert_eq!(v["run_id"], run_id.as_str());
    assert_eq!(model.requests().len(), 1);
    assert_eq!(v["verdict"], "fixed");
    assert_eq!(
        v["test"]["candidates"][0]["fixed"],
        json!(["src/lib.rs::tests::clamps_high_values"])
    );
    assert_eq!(v["test"]["baseline"]["run"]["results"]["source"], "cargo");
    assert_eq!(v["repair"]["candidates"][0]["diff"], RS_FIX_DIFF);
    assert_eq!(v["pr"]["forge"], "github");
    assert_eq!(v["pr"]["url"], "https://github.com/o/r/pull/100");
    {
        let s = state.lock().unwrap();
        assert_eq!(s.pulls.len(), 1);
        assert_eq!(s.pulls[0]["draft"], true);
        let body = s.pulls[0]["body"].as_str().unwrap();
        assert!(body.contains("verdict **fixed**"), "{body}");
        assert!(
            body.contains("src/lib.rs::tests::clamps_high_values"),
            "{body}"
        );
    }

    // A new run of the same fix updates the PR; it never opens a second one.
    let o = run_with(&t, &env, &["fix", "o/r#3", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_ne!(v["run_id"], run_id.as_str());
    assert_eq!(state.lock().unwrap().pulls.len(), 1);
    assert_eq!(v["pr"]["url"], "https://github.com/o/r/pull/100");
}

#[test]
fn tests_in_the_sandbox_see_no_token_and_no_network() {
    if !bwrap_present() || !pytest_present() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = python_repo();
    let probe = format!(
        "import os\nimport socket\n\n\ndef test_no_token():\n    assert \"GITHUB_TOKEN\" not in os.environ\n    assert \"AWS_SECRET_ACCESS_KEY\" not in os.environ\n\n\ndef test_no_network():\n    s = socket.socket()\n    s.settimeout(3)\n    try:\n        s.connect((\"127.0.0.1\", {port}))\n    except OSError:\n        return\n    raise AssertionError(\"connected\")\n"
    );
    let mut patch = String::from(
        "diff --git a/tests/test_probe.py b/tests/test_probe.py\nnew file mode 100644\n--- /dev/null\n+++ b/tests/test_probe.py\n",
    );
    patch.push_str(&format!("@@ -0,0 +1,{} @@\n", probe.lines().count()));
    for l in probe.lines() {
        patch.push_str(&format!("+{l}\n"));
    }
    t.write("probe.diff", &patch);
    let secrets = vec![
        (
            "GITHUB_TOKEN".to_string(),
            "ghp_secret00000000000000000000000000000".to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string(),
        ),
    ];
    t.write("autotriage.yaml", "test:\n  sandbox: required\n");
    let o = run_with(
        &t,
        &secrets,
        &["test", "issue.md", "--patch", "probe.diff", "--json"],
    );
    let v = json(&o);
    let c = &v["test"]["candidates"][0];
    assert_eq!(v["test"]["sandboxed"], true, "{}", stderr(&o));
    assert_eq!(
        c["new_passing"],
        json!([
            "tests.test_probe::test_no_network",
            "tests.test_probe::test_no_token"
        ]),
        "{}",
        stderr(&o)
    );
    assert_eq!(c["new_failing"], json!([]));
    // They pass without the change as well: they prove nothing about the issue.
    assert_eq!(c["verdict"], "unproven");
    assert_eq!(code(&o), 3);

    // Unsandboxed, the environment is still filtered, but the socket connects.
    t.write("autotriage.yaml", "test:\n  sandbox: off\n");
    let o = run_with(
        &t,
        &secrets,
        &["test", "issue.md", "--patch", "probe.diff", "--json"],
    );
    let c = &json(&o)["test"]["candidates"][0];
    assert_eq!(
        c["new_failing"],
        json!(["tests.test_probe::test_no_network"])
    );
    assert_eq!(c["new_passing"], json!(["tests.test_probe::test_no_token"]));
    drop(listener);
}

/// Processes whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) {
                out.push(c);
            }
        }
    }
    out
}

#[test]
fn a_hanging_test_command_is_killed_at_the_limit_with_its_children() {
    let t = python_repo();
    t.write("fix.diff", "calc/ops.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n");
    let mut modes = vec!["off"];
    if bwrap_present() {
        modes.push("required");
    }
    for (i, mode) in modes.iter().enumerate() {
        let marker = format!("{}{}", 7100 + i, std::process::id() % 1000);
        t.write(
            "autotriage.yaml",
            &format!(
                "test:\n  command: \"sleep {marker} & sleep {marker}\"\n  timeout: 2\n  sandbox: {mode}\n"
            ),
        );
        let started = std::time::Instant::now();
        let o = t.run(&["test", "issue.md", "--patch", "fix.diff"]);
        assert_eq!(code(&o), 1, "{}", stderr(&o));
        assert!(
            stderr(&o).contains("took longer than test.timeout (2 s)"),
            "{}",
            stderr(&o)
        );
        assert!(started.elapsed().as_secs() < 30);
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(
            processes_with(&format!("sleep {marker}")),
            Vec::<String>::new(),
            "sandbox {mode}: the command's children were left running"
        );
    }
    let wt = t.home.path().join(".cache/autotriage/worktrees");
    assert_eq!(std::fs::read_dir(&wt).unwrap().count(), 0);
}

#[test]
fn bad_input_to_test_is_refused_and_touches_nothing() {
    let t = python_repo();
    // A dirty checkout stays as it is.
    std::fs::write(t.path().join("calc/ops.py"), "# my work in progress\n").unwrap();
    // A patch that does not apply: exit 2, no run.
    t.write("stale.diff", "calc/ops.py\n<<<<<<< SEARCH\n    return a / b\n=======\n    return a + b\n>>>>>>> REPLACE\n");
    let o = t.run(&["test", "issue.md", "--patch", "stale.diff"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("stale.diff"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("make the patch against HEAD"),
        "{}",
        stderr(&o)
    );
    assert!(!t.path().join(".autotriage/runs").exists());
    // A setup command that fails: its tail is shown.
    t.write("fix.diff", "calc/ops.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n");
    t.write(
        "autotriage.yaml",
        "test:\n  setup: \"echo installing; echo no such package >&2; exit 7\"\n  sandbox: off\n",
    );
    let o = t.run(&["test", "issue.md", "--patch", "fix.diff"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("the setup command `echo installing"), "{err}");
    assert!(err.contains("(exit 7)"), "{err}");
    assert!(err.contains("no such package"), "{err}");
    // No test command found: say how to set one.
    let t2 = TestContext::new();
    commit_files(t2.path(), &[("main.c", "int main(){return 0;}\n")], "init");
    t2.write("issue.md", PY_ISSUE);
    t2.write("fix.diff", "main.c\n<<<<<<< SEARCH\nint main(){return 0;}\n=======\nint main(){return 1;}\n>>>>>>> REPLACE\n");
    let o = t2.run(&["test", "issue.md", "--patch", "fix.diff"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no test command found"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("test:\n      command:"),
        "{}",
        stderr(&o)
    );
    // bubblewrap required but absent.
    t.write("autotriage.yaml", "test:\n  sandbox: required\n");
    let o = t
        .cmd()
        .env("PATH", "/nonexistent")
        .args(["test", "issue.md", "--patch", "fix.diff"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("bubblewrap (`bwrap`) is not on PATH"),
        "{}",
        stderr(&o)
    );
    // A run whose base commit is not in this checkout and cannot be fetched.
    let store = t.path().join(".autotriage/runs");
    let o = t.run(&["runs", "list", "--json"]);
    let id = json(&o)["runs"][0]["id"].as_str().unwrap().to_string();
    let meta_path = store.join(&id).join("run.json");
    let mut meta: Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["base_commit"] = json!("1111111111111111111111111111111111111111");
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    std::fs::write(
        store.join(&id).join("candidates.json"),
        json!({"candidates": [{"id": 1, "error": null, "duplicate_of": null}], "chosen": 1})
            .to_string(),
    )
    .unwrap();
    t.write("autotriage.yaml", "test:\n  sandbox: off\n");
    let o = t.run(&["test", "issue.md", "--run", &id]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("git fetch origin 1111111111111111111111111111111111111111"),
        "{}",
        stderr(&o)
    );
    // Through all of it, the uncommitted work is as it was.
    assert_eq!(
        std::fs::read_to_string(t.path().join("calc/ops.py")).unwrap(),
        "# my work in progress\n"
    );
}

#[test]
fn the_readme_fix_demo_runs_offline_end_to_end() {
    let t = TestContext::new();
    let bin_dir = assert_cmd::cargo::cargo_bin("autotriage")
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fix-demo/run.sh");
    let mut cmd = std::process::Command::new(script);
    cmd.current_dir(t.path())
        .env_clear()
        .env("HOME", t.home.path())
        .env("PATH", path)
        .env("TMPDIR", t.path())
        .env("NO_COLOR", "1")
        .arg("--json");
    for (k, v) in toolchain_env() {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["ref"], "acme/tempo#12");
    assert_eq!(v["locate"]["files"][0]["path"], "src/parse.rs");
    assert_eq!(v["verdict"], "fixed");
    let c = &v["test"]["candidates"][0];
    assert_eq!(
        c["reproduced"],
        json!(["tests/durations.rs::days_are_24_hours"])
    );
    assert_eq!(c["regressions"], json!([]));
    assert_eq!(v["test"]["baseline"]["run"]["results"]["source"], "cargo");
    assert_eq!(v["pr"]["published"]["branch"], "autotriage/issue-12");
    assert_eq!(v["pr"]["published"]["status"], "created");
    let body = std::fs::read_to_string(v["pr"]["body_path"].as_str().unwrap()).unwrap();
    assert!(body.contains("Fixes #12"), "{body}");
    assert!(
        body.contains("1 new test(s) fail without the fix and pass with it"),
        "{body}"
    );
}

#[test]
fn a_batch_runs_in_parallel_and_ends_with_one_table() {
    if !pytest_present() {
        return;
    }
    let s = HttpMock::start();
    script_model(&s, &[PY_FIX]);
    let t = python_repo();
    t.write(
        "other.md",
        "---\nrepo: acme/calc\nnumber: 5\ntitle: mul() should accept strings\nauthor_association: NONE\nlabels: [bug]\n---\nmul('a', 3) should give 'aaa'.\n",
    );
    t.write(
        "autotriage.yaml",
        &model_config(&s, "repair:\n  candidates: 1\n"),
    );
    let o = run_with(&t, &[], &["fix", "issue.md", "other.md", "--jobs", "2"]);
    // One fixed, one not eligible (an unknown author): exit 3, as for a single issue.
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let out = stdout(&o);
    let table: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("issue "))
        .collect();
    assert!(table[0].starts_with("issue "), "{out}");
    assert!(table[1].starts_with("acme/calc#4  fixed "), "{out}");
    assert!(
        table[1].contains("branch autotriage/issue-4 (created)"),
        "{out}"
    );
    assert!(table[2].starts_with("acme/calc#5  not eligible "), "{out}");
    assert!(table[2].contains("not trusted"), "{out}");
    assert!(table[3].starts_with("2 issues, 1 fixed, $"), "{out}");
    assert!(
        stderr(&o).contains("1 of 2 issues got no fix"),
        "{}",
        stderr(&o)
    );
    // The untrusted issue cost nothing: one model call in all.
    assert_eq!(s.requests().len(), 1);

    // A label query over the issues in memory.
    let o = t.run(&["memory", "import", "other.md"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run_with(
        &t,
        &[],
        &[
            "fix",
            "acme/calc",
            "--label",
            "bug",
            "--until",
            "locate",
            "--json",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.last().unwrap();
    assert_eq!(summary["summary"].as_array().unwrap().len(), 1);
    assert_eq!(summary["summary"][0]["ref"], "acme/calc#5");
    assert_eq!(summary["summary"][0]["verdict"], "located");
}

#[test]
fn a_test_that_changes_on_a_rerun_is_flaky_not_a_regression() {
    if !pytest_present() {
        return;
    }
    let s = HttpMock::start();
    // Fixes add(), and makes test_mul fail on its first run in a worktree only.
    let flaky = "Fix add.\n\ncalc/ops.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n\ntests/test_ops.py\n<<<<<<< SEARCH\ndef test_mul():\n    assert mul(2, 3) == 6\n=======\ndef test_mul():\n    import os\n    first = not os.path.exists(\".ran\")\n    open(\".ran\", \"w\").close()\n    assert not first\n    assert mul(2, 3) == 6\n>>>>>>> REPLACE\n";
    script_model(&s, &[flaky]);
    let t = python_repo();
    t.write(
        "autotriage.yaml",
        &model_config(&s, "repair:\n  candidates: 1\ntest:\n  sandbox: off\n"),
    );
    let o = run_with(&t, &[], &["fix", "issue.md", "--until", "test", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let c = &json(&o)["test"]["candidates"][0];
    assert_eq!(c["verdict"], "fixed");
    assert_eq!(c["flaky"], json!(["tests.test_ops::test_mul"]));
    assert_eq!(c["regressions"], json!([]));
    assert!(
        c["summary"]
            .as_str()
            .unwrap()
            .contains("flaky: tests.test_ops::test_mul")
    );
}

#[test]
fn outside_a_checkout_a_github_issue_is_tested_in_a_cached_clone() {
    let gh = HttpMock::start();
    gh.mount(
        Mock::given(method("GET"))
            .and(path("/repos/o/r/issues/3"))
            .respond_with(ResponseTemplate::new(200).set_body_json(issue(
                3,
                "clamp() returns lo for values above hi",
                "`clamp(12, 0, 10)` gives 0.",
                &["bug"],
                false,
            ))),
    );
    gh.mount(
        Mock::given(wiremock::matchers::path_regex("^/repos/o/r/issues/3/.+$"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([]))),
    );
    let (t, gh_env) = ctx_with(&gh.server);
    // "GitHub" for git: a bare repository on disk.
    let remotes = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    commit_files(
        work.path(),
        &[("Cargo.toml", CARGO_TOML), ("src/lib.rs", LIB_RS)],
        "init",
    );
    let bare = remotes.path().join("o/r.git");
    git2::build::RepoBuilder::new()
        .bare(true)
        .clone(work.path().to_str().unwrap(), &bare)
        .unwrap();
    t.write(
        "autotriage.yaml",
        &format!(
            "github:\n  clone_url: \"{}/{{repo}}.git\"\ntest:\n  sandbox: off\n",
            remotes.path().display()
        ),
    );
    t.write("fix.diff", RS_FIX_DIFF);
    let mut env: Vec<(String, String)> = gh_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    env.extend(toolchain_env());
    let o = run_with(
        &t,
        &env,
        &["test", "o/r#3", "--patch", "fix.diff", "--json"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("cloning "), "{}", stderr(&o));
    let clone = t.home.path().join(".cache/autotriage/repos/o+r");
    assert!(clone.join("HEAD").exists());
    let v = json(&o);
    assert_eq!(v["test"]["verdict"], "fixed");
    // Again: the clone is fetched, not made anew.
    let o = run_with(
        &t,
        &env,
        &["test", "o/r#3", "--patch", "fix.diff", "--json"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("fetching "), "{}", stderr(&o));
    // `runs prune` removes what a killed run left in the worktree cache.
    let wt = t.home.path().join(".cache/autotriage/worktrees");
    let run_id = v["run_id"].as_str().unwrap();
    std::fs::create_dir_all(wt.join(format!("{run_id}-candidate-1"))).unwrap();
    let o = t.run(&["runs", "prune", "--older-than", "0"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("removed 1 leftover test worktree"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_dir(&wt).unwrap().count(), 0);
}

#[test]
fn a_candidate_that_edits_the_failing_test_or_skips_one_proves_nothing() {
    if !pytest_present() {
        return;
    }
    // "Fixes" test_add by changing what it expects.
    let cheat = "Adjust the test.\n\ntests/test_ops.py\n<<<<<<< SEARCH\n    assert add(2, 3) == 5\n=======\n    assert add(2, 3) == -1\n>>>>>>> REPLACE\n";
    // Fixes add() but skips test_mul.
    let skip = "Fix add.\n\ncalc/ops.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n\ntests/test_ops.py\n<<<<<<< SEARCH\ndef test_mul():\n=======\nimport pytest\n\n\n@pytest.mark.skip\ndef test_mul():\n>>>>>>> REPLACE\n";
    let s = HttpMock::start();
    script_model(&s, &[cheat, skip]);
    let t = python_repo();
    t.write(
        "autotriage.yaml",
        &model_config(&s, "repair:\n  candidates: 2\ntest:\n  sandbox: off\n"),
    );
    let o = run_with(&t, &[], &["fix", "issue.md", "--until", "test", "--json"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let v = json(&o);
    let c1 = &v["test"]["candidates"][0];
    assert_eq!(c1["verdict"], "unproven", "{c1}");
    assert_eq!(c1["fixed"], json!([]));
    assert_eq!(c1["not_reproduced"], json!(["tests.test_ops::test_add"]));
    let c2 = &v["test"]["candidates"][1];
    assert_eq!(
        c2["verdict"], "suspect",
        "a skip added is for a person: {c2}"
    );
    assert_eq!(c2["regressions"], json!(["tests.test_ops::test_mul"]));
    assert_eq!(c2["disappeared"], json!(["tests.test_ops::test_mul"]));
    assert_eq!(v["test"]["chosen"], Value::Null);
}

#[test]
fn ctrl_c_during_the_tests_stops_them_and_leaves_a_resumable_run() {
    let t = python_repo();
    t.write("fix.diff", "calc/ops.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n");
    let marker = format!("{}", 7300 + std::process::id() % 1000);
    t.write(
        "autotriage.yaml",
        &format!("test:\n  command: \"sleep {marker} & sleep {marker}\"\n  sandbox: off\n"),
    );
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("autotriage"))
        .current_dir(t.path())
        .env_clear()
        .env("HOME", t.home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["test", "issue.md", "--patch", "fix.diff"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while processes_with(&format!("sleep {marker}")).is_empty() {
        assert!(
            started.elapsed().as_secs() < 60,
            "the test command never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        processes_with(&format!("sleep {marker}")),
        Vec::<String>::new()
    );
    // The run says where it stopped; the worktree is gone.
    let runs = json(&t.run(&["runs", "list", "--json"]));
    let stage = &runs["runs"][0]["stages"]["test"];
    assert_eq!(stage["status"], "failed");
    assert_eq!(stage["error"], "interrupted");
    let wt = t.home.path().join(".cache/autotriage/worktrees");
    assert_eq!(std::fs::read_dir(&wt).unwrap().count(), 0);
}

/// A bare AWS secret key (no keyword next to it) and the body of a private key.
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const KEY_BODY: &[&str] = &[
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
    "LxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo",
    "9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ0iT9wCS0DRTXu269V264Vf/3jvre",
    "kMEmSzmGrLzXwnkjO4sIpXtm0dJ8UIQmhNwXbEbPmmAQ7MJyA2h/cAdPKi4FDo7F",
    "8XFp5HGL4aOeGkXThkaQnRq9Z1oWbbAXNSdMO6jJGNwIqGFsGLxyOLvNiOLwmT2p",
];

/// Every file under `.autotriage/` in the working folder, with the planted values
/// that appear in it.
fn leaks(t: &TestContext, planted: &[&str]) -> Vec<String> {
    crate::suite::redaction::all_files(&t.path().join(".autotriage"))
        .into_iter()
        .flat_map(|(p, bytes)| {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            planted
                .iter()
                .filter(|s| text.contains(*s))
                .map(|s| format!("{s} in {}", p.display()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn secrets_in_the_issue_the_test_output_and_the_diff_context_are_never_written() {
    if !pytest_present() {
        return;
    }
    let s = HttpMock::start();
    script_model(&s, &[PY_FIX]);
    let t = TestContext::new();
    // A private key sits three lines above the bug, so the fix's diff shows its last
    // lines and its END line but not its BEGIN line.
    let ops = format!(
        "KEY = \"\"\"-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\"\"\"\n{OPS_PY}",
        KEY_BODY.join("\n")
    );
    // The failing test prints AWS credentials it puts together at run time (so the
    // source never holds them), one with its keyword and one bare.
    let (head, tail) = AWS_SECRET.split_at(20);
    let test_ops = TEST_OPS_PY.replace(
        "def test_add():\n",
        &format!("def test_add():\n    key = \"{head}\" + \"{tail}\"\n    print(\"aws_secret_access_key=\" + key)\n    print(\"creds:\", key)\n"),
    );
    commit_files(
        t.path(),
        &[
            ("calc/__init__.py", ""),
            ("calc/ops.py", &ops),
            ("tests/test_ops.py", &test_ops),
            ("pyproject.toml", "[tool.pytest.ini_options]\n"),
            (".gitignore", ".autotriage/\n.pytest_cache/\n"),
        ],
        "init",
    );
    t.write(
        "issue.md",
        &PY_ISSUE.replace(
            "in calc/ops.py.\n",
            &format!("in calc/ops.py.\n\nMy CI's key, in case it matters: {AWS_SECRET}\n"),
        ),
    );
    t.write(
        "autotriage.yaml",
        &model_config(&s, "repair:\n  candidates: 1\n"),
    );
    let o = run_with(&t, &[], &["fix", "issue.md", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["verdict"], "fixed", "{v}");
    let mut planted = vec![AWS_SECRET];
    planted.extend(KEY_BODY.iter().copied());
    // Not in anything written under .autotriage/ (diffs, candidates, logs, test.json,
    // issue.json, memory), not in the output, not in what the model was sent.
    assert_eq!(leaks(&t, &planted), Vec::<String>::new());
    for (what, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        for p in &planted {
            assert!(!text.contains(p), "{p} in {what}");
        }
    }
    for body in s.bodies() {
        let text = body.to_string();
        for p in &planted {
            assert!(!text.contains(p), "{p} sent to the model");
        }
    }
    // The diff still shows where the key was, and still applies: the branch has the
    // fix with the key intact in the repository.
    let run_id = v["run_id"].as_str().unwrap();
    let diff = run_file(&t, run_id, "candidates/1.diff");
    assert!(diff.contains("[REDACTED:private-key]"), "{diff}");
    assert!(diff.contains("+    return a + b"), "{diff}");
    let log = run_file(&t, run_id, "tests/baseline.log");
    assert!(
        log.contains("creds: [REDACTED:aws-secret-key]"),
        "the bare key the test printed is redacted where it was: {log}"
    );
    assert_eq!(
        branch_file(&t, "autotriage/issue-4", "calc/ops.py").unwrap(),
        ops.replace("a - b", "a + b")
    );
}

#[test]
fn a_candidate_that_adds_a_secret_is_refused_not_published_redacted() {
    let s = HttpMock::start();
    let adds_token = "Use the service token.\n\ncalc/ops.py\n```python\n<<<<<<< SEARCH\ndef add(a, b):\n    return a - b\n=======\nTOKEN = \"ghp_abcdefghijklmnopqrstuvwxyz0123456789\"\n\n\ndef add(a, b):\n    return a + b\n>>>>>>> REPLACE\n```\n";
    script_model(&s, &[adds_token]);
    let t = python_repo();
    t.write(
        "autotriage.yaml",
        &model_config(&s, "repair:\n  candidates: 1\n"),
    );
    let o = run_with(&t, &[], &["fix", "issue.md", "--json"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("adds a secret (github-token)"),
        "{}",
        stdout(&o)
    );
    assert!(branch_file(&t, "autotriage/issue-4", "calc/ops.py").is_none());
    assert_eq!(
        leaks(&t, &["ghp_abcdefghijklmnopqrstuvwxyz0123456789"]),
        Vec::<String>::new()
    );
    // A patch of the user's own that adds one is refused the same way, and nothing is
    // written.
    t.write("leak.diff", "diff --git a/calc/ops.py b/calc/ops.py\n--- a/calc/ops.py\n+++ b/calc/ops.py\n@@ -1,2 +1,3 @@\n+KEY = \"AKIAIOSFODNN7EXAMPLE\"\n def add(a, b):\n     return a - b\n");
    let o = t.run(&["pr", "issue.md", "--patch", "leak.diff"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("adds a secret (aws-access-key)"),
        "{}",
        stderr(&o)
    );
    assert!(branch_file(&t, "autotriage/issue-4", "calc/ops.py").is_none());
}

/// A Python repository with these files committed, and the usual issue.
fn py_repo(files: &[(&str, &str)]) -> TestContext {
    let t = TestContext::new();
    let mut all: Vec<(&str, &str)> = vec![
        ("calc/__init__.py", ""),
        (".gitignore", ".autotriage/\n.pytest_cache/\n"),
    ];
    if !files.iter().any(|(p, _)| *p == "pyproject.toml") {
        all.push(("pyproject.toml", "[tool.pytest.ini_options]\n"));
    }
    all.extend_from_slice(files);
    commit_files(t.path(), &all, "init");
    t.write("issue.md", PY_ISSUE);
    t
}

/// `fix issue.md --until test --json` with the model answering `answers` (one
/// candidate each) and `extra` config.
fn fix_until_test(t: &TestContext, answers: &[&str], extra: &str) -> std::process::Output {
    let s = HttpMock::start();
    script_model(&s, answers);
    t.write(
        "autotriage.yaml",
        &model_config(
            &s,
            &format!("repair:\n  candidates: {}\n{extra}", answers.len()),
        ),
    );
    run_with(t, &[], &["fix", "issue.md", "--until", "test", "--json"])
}

#[test]
fn a_fix_proven_by_an_extended_test_is_fixed() {
    if !pytest_present() {
        return;
    }
    // The existing test passes on the base: it never tried the bug.
    let t = py_repo(&[
        ("calc/ops.py", OPS_PY),
        (
            "tests/test_ops.py",
            "from calc.ops import add\n\n\ndef test_add():\n    assert add(0, 0) == 0\n",
        ),
    ]);
    let extends = "Fix the sign and test it.\n\n```diff\ndiff --git a/calc/ops.py b/calc/ops.py\n--- a/calc/ops.py\n+++ b/calc/ops.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\ndiff --git a/tests/test_ops.py b/tests/test_ops.py\n--- a/tests/test_ops.py\n+++ b/tests/test_ops.py\n@@ -4,1 +4,2 @@\n def test_add():\n     assert add(0, 0) == 0\n+    assert add(2, 3) == 5\n```\n";
    let o = fix_until_test(&t, &[extends], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    let c = &v["test"]["candidates"][0];
    assert_eq!(c["verdict"], "fixed", "{c}");
    assert_eq!(c["reproduced"], json!(["tests.test_ops::test_add"]), "{c}");
    let labels: Vec<&str> = c["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["label"].as_str().unwrap())
        .collect();
    assert!(labels.contains(&"candidate 1 tests only"), "{labels:?}");
}

#[test]
fn a_test_file_the_command_names_counts_as_a_test_whatever_its_name() {
    if !pytest_present() {
        return;
    }
    // pytest's own layout: tests in a file no naming rule calls a test file, which the
    // configured command names. Extending it must prove the fix as any test would.
    let t = py_repo(&[
        ("calc/ops.py", OPS_PY),
        (
            "checks/ops_checks.py",
            "from calc.ops import add\n\n\ndef test_add():\n    assert add(0, 0) == 0\n",
        ),
    ]);
    let extends = "Fix the sign and test it.\n\n```diff\ndiff --git a/calc/ops.py b/calc/ops.py\n--- a/calc/ops.py\n+++ b/calc/ops.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\ndiff --git a/checks/ops_checks.py b/checks/ops_checks.py\n--- a/checks/ops_checks.py\n+++ b/checks/ops_checks.py\n@@ -4,1 +4,2 @@\n def test_add():\n     assert add(0, 0) == 0\n+    assert add(2, 3) == 5\n```\n";
    let o = fix_until_test(
        &t,
        &[extends],
        "test:\n  command: python3 -m pytest checks/ops_checks.py\n",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let c = &json(&o)["test"]["candidates"][0];
    assert_eq!(c["verdict"], "fixed", "{c}");
    assert_eq!(
        c["reproduced"],
        json!(["checks.ops_checks::test_add"]),
        "{c}"
    );
}

#[test]
fn targeted_runs_pick_tests_by_import_under_test_folders_only() {
    if !pytest_present() {
        return;
    }
    let mut files: Vec<(String, String)> = vec![
        (
            "calc/util.py".into(),
            "def clamp(x, lo, hi):\n    return lo if x > hi else x\n".into(),
        ),
        (
            "tests/test_util.py".into(),
            "from calc.util import clamp\n\n\ndef test_clamp():\n    assert clamp(12, 0, 10) == 10\n".into(),
        ),
        (
            "tests/test_uses.py".into(),
            "from calc import util\n\n\ndef test_inside():\n    assert util.clamp(5, 0, 10) == 5\n".into(),
        ),
        // A script at the top whose name starts with test_: collecting it fails.
        (
            "test_release.py".into(),
            "raise SystemExit('a release script, not a test')\n".into(),
        ),
        (
            "pyproject.toml".into(),
            "[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\n".into(),
        ),
    ];
    // Many test files that say the word `util` without importing it.
    for i in 0..12 {
        files.push((
            format!("tests/test_words_{i}.py"),
            "# util is just a word here\n\n\ndef test_word():\n    assert 'util'\n".into(),
        ));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let t = py_repo(&refs);
    let fix = "Clamp to hi.\n\ncalc/util.py\n<<<<<<< SEARCH\n    return lo if x > hi else x\n=======\n    return hi if x > hi else x\n>>>>>>> REPLACE\n";
    let o = fix_until_test(&t, &[fix], "test:\n  command: python3 -m pytest\n");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    let c = &v["test"]["candidates"][0];
    assert_eq!(c["verdict"], "fixed", "{c}");
    assert_eq!(c["runs"][0]["label"], "candidate 1 targeted");
    let cmd = c["runs"][0]["command"].as_str().unwrap();
    assert!(
        cmd.ends_with(" tests/test_util.py tests/test_uses.py"),
        "the mirror and the importer only: {cmd}"
    );
    // A command that already names its tests is never narrowed (nothing runs twice).
    let o = fix_until_test(
        &t,
        &[fix],
        "test:\n  command: python3 -m pytest tests/test_util.py\n",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let c = &json(&o)["test"]["candidates"][0];
    assert_eq!(c["runs"][0]["label"], "candidate 1", "{c}");
    // And `test.targeted: false` turns it off.
    let o = fix_until_test(
        &t,
        &[fix],
        "test:\n  command: python3 -m pytest\n  targeted: false\n",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        json(&o)["test"]["candidates"][0]["runs"][0]["label"],
        "candidate 1"
    );
}

#[test]
fn a_baseline_that_cannot_run_is_an_error_and_is_not_cached() {
    if !pytest_present() {
        return;
    }
    let t = py_repo(&[("calc/ops.py", OPS_PY), ("tests/test_ops.py", TEST_OPS_PY)]);
    let o = fix_until_test(
        &t,
        &[PY_FIX],
        "test:\n  command: python3.99 -m pytest\n  sandbox: off\n",
    );
    assert_eq!(code(&o), 1, "{}\n{}", stderr(&o), stdout(&o));
    assert!(
        stderr(&o).contains("could not start (exit 127"),
        "{}",
        stderr(&o)
    );
    // A collection error at the base is no baseline either.
    commit_files(
        t.path(),
        &[("tests/test_broken.py", "import no_such_module\n")],
        "a broken test module",
    );
    let o = fix_until_test(
        &t,
        &[PY_FIX],
        "test:\n  command: python3 -m pytest\n  sandbox: off\n",
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("could not be collected"),
        "{}",
        stderr(&o)
    );
    // Fixed environment and command: the baseline runs now (nothing stale was kept).
    let o = fix_until_test(
        &t,
        &[PY_FIX],
        "test:\n  command: python3 -m pytest tests/test_ops.py\n  sandbox: off\n",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["test"]["baseline"]["cached"], false);
    assert_eq!(v["verdict"], "fixed");
}

#[test]
fn gamed_verdicts_are_suspect_and_name_what_they_hid() {
    if !pytest_present() {
        return;
    }
    let t = python_repo();
    // A no-op source change plus a conftest.py that turns failures into passes when
    // that change is present.
    let conftest = "import pathlib\n\nimport pytest\n\n\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n    outcome = yield\n    rep = outcome.get_result()\n    src = pathlib.Path(__file__).parent.parent / 'calc' / 'ops.py'\n    if '# checked' in src.read_text() and rep.failed:\n        rep.outcome = 'passed'\n";
    let mut cheat = String::from(
        "Checked.\n\n```diff\ndiff --git a/calc/ops.py b/calc/ops.py\n--- a/calc/ops.py\n+++ b/calc/ops.py\n@@ -1,2 +1,3 @@\n+# checked\n def add(a, b):\n     return a - b\ndiff --git a/tests/conftest.py b/tests/conftest.py\nnew file mode 100644\n--- /dev/null\n+++ b/tests/conftest.py\n",
    );
    cheat.push_str(&format!("@@ -0,0 +1,{} @@\n", conftest.lines().count()));
    for l in conftest.lines() {
        cheat.push_str(&format!("+{l}\n"));
    }
    cheat.push_str("```\n");
    // Deletes the failing test and adds an unrelated one that passes.
    let swap = "Tidy the tests.\n\ntests/test_ops.py\n<<<<<<< SEARCH\ndef test_add():\n    assert add(2, 3) == 5\n=======\ndef test_add_zero():\n    assert add(0, 0) == 0\n>>>>>>> REPLACE\n";
    let o = fix_until_test(&t, &[&cheat, swap], "test:\n  sandbox: off\n");
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["test"]["chosen"], Value::Null, "nothing is published");
    let c1 = &v["test"]["candidates"][0];
    assert_eq!(c1["verdict"], "suspect", "{c1}");
    assert!(
        c1["suspicious"][0]
            .as_str()
            .unwrap()
            .contains("tests/conftest.py"),
        "{c1}"
    );
    assert_eq!(
        c1["proof_without_infra"], false,
        "without its conftest.py the fix shows nothing: {c1}"
    );
    let c2 = &v["test"]["candidates"][1];
    assert_eq!(c2["verdict"], "suspect", "{c2}");
    assert_eq!(
        c2["disappeared"],
        json!(["tests.test_ops::test_add"]),
        "{c2}"
    );
    assert!(
        c2["summary"].as_str().unwrap().contains("gone or skipped"),
        "{c2}"
    );
}

#[test]
fn fix_triages_with_the_configured_engine_and_the_pr_explains_the_change() {
    if !pytest_present() {
        return;
    }
    let s = HttpMock::start();
    // First the triage (the offline engine abstains on an empty memory), then the
    // patch, whose explanation carries a mention and a closing keyword.
    let triage = json!({"id": "msg_t", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "record_triage", "input":
            {"kind": "bug", "confidence": 0.9, "labels": [], "priority": "P2",
             "priority_reasons": ["wrong result"], "missing": [], "reasoning": "add() returns a wrong sum."}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 500, "output_tokens": 50}});
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(triage))
            .up_to_n_times(1)
            .with_priority(1),
    );
    let explained = PY_FIX.replace(
        "The `-` should be `+`.",
        "The `-` should be `+`; cc @everyone, closes #9.",
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(reply(&explained)))
            .with_priority(2),
    );
    let t = python_repo();
    t.write(
        "autotriage.yaml",
        &model_config(&s, "triage:\n  engine: auto\nrepair:\n  candidates: 1\n"),
    );
    let o = run_with(&t, &[], &["fix", "issue.md", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["triage"]["kind"], "bug", "{}", v["triage"]);
    assert_eq!(v["triage"]["engine"], "model", "{}", v["triage"]);
    let first = &s.bodies()[0];
    assert!(
        first.to_string().contains("record_triage"),
        "the first request is the triage"
    );
    let body = run_file(&t, v["run_id"].as_str().unwrap(), "pr.md");
    assert!(
        body.contains("### Why, in the words of the model that wrote it"),
        "{body}"
    );
    assert!(
        body.contains("> The `-` should be `+`; cc @\u{200B}everyone, c\u{200B}loses #9."),
        "{body}"
    );
    assert!(body.contains("kind bug"), "{body}");
}

/// Bytes of every file under `dir`.
fn folder_bytes(dir: &std::path::Path) -> u64 {
    crate::suite::redaction::all_files(dir)
        .iter()
        .map(|(_, b)| b.len() as u64)
        .sum()
}

#[test]
fn an_oversized_answer_or_patch_is_refused_and_not_stored() {
    let t = python_repo();
    // 6,000 added lines: under the answer cap, over repair.max_patch_lines.
    let mut big = String::from(
        "Add a table.\n\ncalc/ops.py\n<<<<<<< SEARCH\ndef add(a, b):\n    return a - b\n=======\n",
    );
    for i in 0..6000 {
        big.push_str(&format!("T{i} = {i}\n"));
    }
    big.push_str("def add(a, b):\n    return a + b\n>>>>>>> REPLACE\n");
    let o = fix_until_test(&t, &[&big], "");
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("over repair.max_patch_lines (5000)"),
        "{}",
        stdout(&o)
    );
    assert!(
        folder_bytes(&t.path().join(".autotriage")) < 2_000_000,
        "the refused patch is not kept"
    );
    // An answer over the 8 MiB cap, whatever max_tokens said: refused as it arrives.
    let t = python_repo();
    let mut huge = String::from(
        "Huge.\n\ncalc/ops.py\n<<<<<<< SEARCH\ndef add(a, b):\n    return a - b\n=======\n",
    );
    while huge.len() < 9 * 1024 * 1024 {
        huge.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    huge.push_str("def add(a, b):\n    return a + b\n>>>>>>> REPLACE\n");
    let o = fix_until_test(&t, &[&huge], "");
    assert_ne!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("larger than 8 MiB"), "{}", stderr(&o));
    assert!(folder_bytes(&t.path().join(".autotriage")) < 2_000_000);
    assert!(branch_file(&t, "autotriage/issue-4", "calc/ops.py").is_none());
}

#[test]
fn a_sandboxed_test_cannot_reach_a_host_socket_outside_tmp_and_run() {
    if !bwrap_present() || !pytest_present() {
        return;
    }
    // A listener in a host folder that is neither /tmp nor /run.
    let dir = tempfile::Builder::new()
        .prefix("autotriage-sock")
        .tempdir_in("/var/tmp")
        .unwrap();
    let sock = dir.path().join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    let t = python_repo();
    let probe = format!(
        "import socket\n\n\ndef test_no_host_socket():\n    s = socket.socket(socket.AF_UNIX)\n    try:\n        s.connect({:?})\n        s.sendall(b'secret data')\n    except OSError:\n        return\n    raise AssertionError('connected')\n",
        sock.display().to_string()
    );
    let mut patch = String::from(
        "diff --git a/tests/test_sock.py b/tests/test_sock.py\nnew file mode 100644\n--- /dev/null\n+++ b/tests/test_sock.py\n",
    );
    patch.push_str(&format!("@@ -0,0 +1,{} @@\n", probe.lines().count()));
    for l in probe.lines() {
        patch.push_str(&format!("+{l}\n"));
    }
    t.write("sock.diff", &patch);
    t.write("autotriage.yaml", "test:\n  sandbox: required\n");
    let o = run_with(
        &t,
        &[],
        &["test", "issue.md", "--patch", "sock.diff", "--json"],
    );
    let v = json(&o);
    assert_eq!(v["test"]["sandboxed"], true, "{}", stderr(&o));
    let c = &v["test"]["candidates"][0];
    assert_eq!(
        c["new_passing"],
        json!(["tests.test_sock::test_no_host_socket"]),
        "{c}"
    );
    assert!(
        listener.accept().is_err(),
        "the listener under /var/tmp received a connection from the sandbox"
    );
    // Unsandboxed, the same test reaches it (so the test can tell).
    t.write("autotriage.yaml", "test:\n  sandbox: off\n");
    let o = run_with(
        &t,
        &[],
        &["test", "issue.md", "--patch", "sock.diff", "--json"],
    );
    let c = &json(&o)["test"]["candidates"][0];
    assert_eq!(
        c["new_failing"],
        json!(["tests.test_sock::test_no_host_socket"]),
        "{c}"
    );
}

#[test]
fn the_tests_import_the_worktree_not_another_checkout_installed_in_the_venv() {
    if !pytest_present() || !bwrap_present() {
        return;
    }
    // A `src/` layout whose package is installed (as an editable install does, by a
    // .pth file) from ANOTHER checkout that already has the fix, in a venv under /tmp
    // named by its path in test.command.
    let t = TestContext::new();
    commit_files(
        t.path(),
        &[
            ("src/calc/__init__.py", ""),
            ("src/calc/ops.py", OPS_PY),
            ("tests/test_ops.py", TEST_OPS_PY),
            ("pyproject.toml", "[tool.pytest.ini_options]\n"),
            (".gitignore", ".autotriage/\n.pytest_cache/\n"),
        ],
        "init",
    );
    t.write("issue.md", PY_ISSUE);
    let elsewhere = tempfile::tempdir().unwrap();
    let other = elsewhere.path().join("other-checkout");
    std::fs::create_dir_all(other.join("src/calc")).unwrap();
    std::fs::write(other.join("src/calc/__init__.py"), "").unwrap();
    std::fs::write(
        other.join("src/calc/ops.py"),
        OPS_PY.replace("a - b", "a + b"),
    )
    .unwrap();
    let venv = elsewhere.path().join("venv");
    let made = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip", "--system-site-packages"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success());
    let site = std::process::Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .unwrap();
    let site = String::from_utf8(site.stdout).unwrap().trim().to_string();
    std::fs::write(
        std::path::Path::new(&site).join("calc-editable.pth"),
        format!("{}\n", other.join("src").display()),
    )
    .unwrap();
    let python = venv.join("bin/python").display().to_string();
    let o = fix_until_test(
        &t,
        &[&PY_FIX.replace("calc/ops.py", "src/calc/ops.py")],
        &format!("test:\n  command: {python} -m pytest\n  sandbox: off\n"),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    // The base fails (the worktree's bug), the candidate passes: proven on its code.
    assert_eq!(
        v["test"]["baseline"]["run"]["results"]["tests"]["tests.test_ops::test_add"], "failed",
        "{}",
        v["test"]["baseline"]
    );
    assert_eq!(v["verdict"], "fixed", "{}", v["test"]["summary"]);
    assert!(
        v["test"]["candidates"][0]["runs"][0]["command"]
            .as_str()
            .unwrap()
            .starts_with("PYTHONPATH=\"$PWD/src:$PWD"),
        "{}",
        v["test"]["candidates"][0]["runs"][0]
    );
    // In the sandbox too: the venv under /tmp is visible by its path.
    let o = fix_until_test(
        &t,
        &[&PY_FIX.replace("calc/ops.py", "src/calc/ops.py")],
        &format!("test:\n  command: {python} -m pytest\n  sandbox: required\n"),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["verdict"], "fixed");
}

#[test]
fn the_setup_may_use_the_network_the_tests_never_and_the_users_venv_stays_as_it_was() {
    if !bwrap_present() || !pytest_present() {
        return;
    }
    // The "network": a listener on the host's loopback that the setup reaches (as pip
    // reaches an index) and the tests must not.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let user_venv = tempfile::tempdir().unwrap();
    let t = python_repo();
    let probe = format!(
        "import socket\n\n\ndef test_no_network():\n    try:\n        socket.create_connection(('127.0.0.1', {port}), 3)\n    except OSError:\n        return\n    raise AssertionError('the tests reached the network')\n"
    );
    let mut patch = String::from(
        "diff --git a/tests/test_net.py b/tests/test_net.py\nnew file mode 100644\n--- /dev/null\n+++ b/tests/test_net.py\n",
    );
    patch.push_str(&format!("@@ -0,0 +1,{} @@\n", probe.lines().count()));
    for l in probe.lines() {
        patch.push_str(&format!("+{l}\n"));
    }
    t.write("net.diff", &patch);
    let setup = format!(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 3).sendall(b'from setup')\" && (touch {}/installed-here 2>/dev/null; true)",
        user_venv.path().display()
    );
    t.write(
        "autotriage.yaml",
        &format!(
            "test:\n  sandbox: required\n  setup_network: true\n  setup: {}\n",
            serde_json::to_string(&setup).unwrap()
        ),
    );
    let env = vec![(
        "VIRTUAL_ENV".to_string(),
        user_venv.path().display().to_string(),
    )];
    let o = run_with(
        &t,
        &env,
        &["test", "issue.md", "--patch", "net.diff", "--json"],
    );
    let v = json(&o);
    assert_eq!(v["test"]["sandboxed"], true, "{}", stderr(&o));
    let c = &v["test"]["candidates"][0];
    assert_eq!(
        c["new_passing"],
        json!(["tests.test_net::test_no_network"]),
        "the tests had no network: {c}"
    );
    let mut got = Vec::new();
    while let Ok((mut s, _)) = listener.accept() {
        use std::io::Read;
        s.set_nonblocking(false).unwrap();
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        got.push(buf);
    }
    assert!(
        got.iter().any(|g| g == "from setup"),
        "the setup reached the network: {got:?}"
    );
    assert!(
        !user_venv.path().join("installed-here").exists(),
        "the user's environment is read-only to the setup"
    );
    // Without setup_network the setup has no network either: it fails, and says so.
    t.write(
        "autotriage.yaml",
        &format!(
            "test:\n  sandbox: required\n  setup: {}\n",
            serde_json::to_string(&setup).unwrap()
        ),
    );
    let o = run_with(
        &t,
        &env,
        &["test", "issue.md", "--patch", "net.diff", "--json"],
    );
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("setup"), "{}", stderr(&o));
}

#[test]
fn a_detected_pytest_command_uses_the_checkouts_own_venv() {
    if !pytest_present() || !bwrap_present() {
        return;
    }
    let t = python_repo();
    let made = std::process::Command::new("python3")
        .args([
            "-m",
            "venv",
            "--without-pip",
            "--system-site-packages",
            ".venv",
        ])
        .current_dir(t.path())
        .status()
        .unwrap();
    assert!(made.success());
    let o = fix_until_test(&t, &[PY_FIX], "test:\n  sandbox: required\n");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    let venv_python = t.path().join(".venv/bin/python").display().to_string();
    assert_eq!(
        v["test"]["plan"]["command"],
        format!("{venv_python} -m pytest"),
        "{}",
        v["test"]["plan"]
    );
    assert_eq!(v["verdict"], "fixed", "{}", v["test"]["summary"]);
}

#[test]
fn a_second_fix_of_one_issue_names_who_holds_it_whether_lease_or_lock() {
    // A model that answers after 60 s: the first fix holds the issue meanwhile.
    let s = HttpMock::start();
    s.mount(
        Mock::given(method("POST")).respond_with(
            ResponseTemplate::new(200)
                .set_delay(std::time::Duration::from_secs(60))
                .set_body_json(reply(PY_FIX)),
        ),
    );
    let t = python_repo();
    t.write(
        "autotriage.yaml",
        &model_config(&s, "repair:\n  candidates: 1\n"),
    );
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("autotriage"));
    cmd.current_dir(t.path())
        .env_clear()
        .env("HOME", t.home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args(["fix", "issue.md", "--until", "repair"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut first = cmd.spawn().unwrap();
    let started = std::time::Instant::now();
    while s.requests().is_empty() {
        assert!(
            started.elapsed().as_secs() < 60,
            "the first fix never asked"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first fix ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = run_with(&t, &[], &["fix", "issue.md", "--until", "locate"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("another autotriage run of acme/calc#4 is in progress, held by")
            && err.contains(&format!("pid {} (its hold in ", first.id()))
            && err.contains("memory.sqlite3)"),
        "{err}"
    );
    first.kill().unwrap();
    first.wait().unwrap();

    // The run store's lock (a memory elsewhere, the same run folder): the same words.
    let locks = t.path().join(".autotriage/locks");
    std::fs::create_dir_all(&locks).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(locks.join("acme-calc-4.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    std::io::Write::write_all(
        &mut &lock,
        b"someone@elsewhere pid 42 since 2026-11-30T10:00:00Z\n",
    )
    .unwrap();
    let o = run_with(
        &t,
        &[],
        &[
            "fix",
            "issue.md",
            "--until",
            "locate",
            "--memory",
            "other.sqlite3",
            "--restart",
        ],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(
            "another autotriage run of acme/calc#4 is in progress, held by someone@elsewhere pid 42 since 2026-11-30T10:00:00Z (lock "
        ),
        "{err}"
    );
    drop(lock);
    // The refused run gave back the hold it had taken in that memory, and the killed
    // first fix's hold in the default memory is taken over at once: its process is gone.
    for memory in ["other.sqlite3", ".autotriage/memory.sqlite3"] {
        let o = run_with(
            &t,
            &[],
            &[
                "fix",
                "issue.md",
                "--until",
                "locate",
                "--memory",
                memory,
                "--restart",
            ],
        );
        assert_eq!(code(&o), 0, "{memory}: {}", stderr(&o));
    }
    let o = run_with(
        &t,
        &[],
        &["fix", "issue.md", "--until", "locate", "--restart"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn a_grant_for_another_body_stops_the_fix_before_any_model_call() {
    let s = HttpMock::start();
    script_model(&s, &[PY_FIX]);
    let t = python_repo();
    t.write(
        "autotriage.yaml",
        &model_config(&s, "repair:\n  candidates: 1\n"),
    );
    let o = run_with(
        &t,
        &[],
        &[
            "fix",
            "issue.md",
            "--force",
            "--granted-body-sha256",
            &"0".repeat(64),
        ],
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the issue was edited after the maintainer asked"),
        "{}",
        stderr(&o)
    );
    assert!(s.requests().is_empty());
    assert!(!t.path().join(".autotriage/runs").exists());
}
