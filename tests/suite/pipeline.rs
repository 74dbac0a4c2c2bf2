//! The pipeline in-process, with a recording sink: the events a front-end sees for a
//! triage job, a fix that publishes, one the trust gate refuses, one resumed, one the
//! budget stops. Real git repositories, real SQLite, real pytest, a scripted model.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use autotriage::cli::{EngineArg, FixStage};
use autotriage::config::Config;
use autotriage::issue::Issue;
use autotriage::memory::AnyMemory;
use autotriage::memory::sqlite::{OpenMode, SqliteMemory};
use autotriage::model::retry::RetryPolicy;
use autotriage::model::session::Session;
use autotriage::model::usage::Budget;
use autotriage::pipeline::fix::{FixJob, FixOutcome, FixPlan, PublishTo, run_fix};
use autotriage::pipeline::triage::{TriageBatch, run_batch};
use autotriage::pipeline::{Backends, Deps, Event, RecordingSink, What};
use autotriage::redact::Redactor;
use autotriage::runs::fs::FsRunStore;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use super::common::{HttpMock, TestContext, commit_files, emulators_required};

const OPS_PY: &str = "def add(a, b):\n    return a - b\n";
const TEST_OPS_PY: &str =
    "from calc.ops import add\n\n\ndef test_zero():\n    assert add(0, 0) == 0\n";
const FIX: &str = "Use `+`, with a test.\n\n```diff\ndiff --git a/calc/ops.py b/calc/ops.py\n--- a/calc/ops.py\n+++ b/calc/ops.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\ndiff --git a/tests/test_ops.py b/tests/test_ops.py\n--- a/tests/test_ops.py\n+++ b/tests/test_ops.py\n@@ -4,1 +4,5 @@\n def test_zero():\n     assert add(0, 0) == 0\n+\n+\n+def test_add():\n+    assert add(2, 3) == 5\n```\n";

/// Memory and runs in the test's folder.
struct Folder {
    root: PathBuf,
}

impl Backends for Folder {
    fn open_memory(&self, mode: OpenMode) -> anyhow::Result<AnyMemory> {
        Ok(Box::new(SqliteMemory::open(
            &self.root.join(".autotriage/memory.db"),
            mode,
            Redactor::default(),
        )?))
    }

    fn open_runs(&self) -> anyhow::Result<FsRunStore> {
        Ok(FsRunStore::new(
            self.root.join(".autotriage/runs"),
            Redactor::default(),
        ))
    }
}

fn python_repo(association: &str) -> (TestContext, Issue) {
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
    let text = format!(
        "---\nrepo: acme/calc\nnumber: 4\ntitle: add() subtracts\nauthor_association: {association}\n---\n`add(2, 3)` returns -1 instead of 5, in calc/ops.py.\n"
    );
    let local = autotriage::forge::local::LocalForge {
        default_repo: "acme/calc".into(),
        csv: Default::default(),
        redactor: Redactor::default(),
    };
    let issue = local
        .parse_markdown(&t.path().join("issue.md"), &text)
        .unwrap();
    (t, issue)
}

fn scripted_model(answer: &str) -> HttpMock {
    let s = HttpMock::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [{"type": "text", "text": answer}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 1000, "output_tokens": 100}}))),
    );
    s
}

/// The config: a scripted, priced model (its key from a variable every process has),
/// offline triage, no sandbox (the events, not the sandbox, are under test).
fn config(s: &HttpMock, extra: &str) -> Config {
    serde_yaml::from_str(&format!(
        "models:\n  a:\n    provider: anthropic\n    model_id: claude-x\n    base_url: {}\n    api_key_env: PATH\n    price: {{input_per_mtok: 3.0, output_per_mtok: 15.0}}\nmodel: a\ntriage:\n  engine: offline\ntest:\n  sandbox: off\n  command: python3 -m pytest tests\n{extra}",
        s.server.uri()
    ))
    .unwrap()
}

fn session(config: &Config) -> Session {
    let resolved = autotriage::model::registry::configured(config, Duration::from_secs(30))
        .unwrap()
        .unwrap();
    Session::new(
        resolved,
        RetryPolicy::with_max_wait(config.retry.max_wait),
        Budget::new(
            config.budget.per_issue_usd,
            config.budget.per_command_usd,
            None,
        ),
        Redactor::default(),
    )
}

/// `stage:kind` of each event, progress left out (spinners are the terminal's).
fn sequence(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.what.persisted())
        .map(|e| {
            let v = serde_json::to_value(e).unwrap();
            format!("{}:{}", e.stage, v["kind"].as_str().unwrap())
        })
        .collect()
}

/// The run's `events.jsonl`, as `stage:kind`.
fn logged(root: &std::path::Path, run_id: &str) -> Vec<String> {
    std::fs::read_to_string(
        root.join(".autotriage/runs")
            .join(run_id)
            .join("events.jsonl"),
    )
    .unwrap()
    .lines()
    .map(|l| {
        let v: Value = serde_json::from_str(l).unwrap();
        format!(
            "{}:{}",
            v["stage"].as_str().unwrap(),
            v["kind"].as_str().unwrap()
        )
    })
    .collect()
}

fn fix(
    t: &TestContext,
    issue: Issue,
    config: &Config,
    session: Option<&Session>,
    until: FixStage,
    sink: &RecordingSink,
) -> FixOutcome {
    let folder = Folder {
        root: t.path().to_path_buf(),
    };
    let redactor = Redactor::default();
    let deps = Deps {
        config,
        redactor: &redactor,
        state_dir: t.path().join(".autotriage"),
        cache_dir: t.path().join(".autotriage/cache"),
        backends: &folder,
        github_as: None,
    };
    let mut memory = folder.open_memory(OpenMode::Create).unwrap();
    let (engine, _) = autotriage::pipeline::triage::build_engine(config, &mut *memory).unwrap();
    drop(memory);
    let settings = autotriage::locate::LocateSettings::from_config(&config.locate).unwrap();
    let guard = autotriage::repair::PathGuard::new(&config.paths.protected).unwrap();
    let plan = FixPlan {
        until,
        rerank: false,
        settings: &settings,
        guard: &guard,
        restart: false,
        dry_run: false,
        force: false,
    };
    let job = FixJob {
        issue,
        dir: t.path().to_path_buf(),
        repo: Mutex::new(git2::Repository::open(t.path()).unwrap()),
        publish_to: PublishTo::Local,
    };
    run_fix(&deps, &plan, session, &engine, &job, sink)
}

fn pytest_present() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-m", "pytest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || !emulators_required(),
        "CI needs pytest (`pip install pytest`) for the pipeline tests"
    );
    ok
}

#[test]
fn a_triage_job_reports_its_run_and_decision_in_order() {
    let (t, issue) = python_repo("MEMBER");
    let folder = Folder {
        root: t.path().to_path_buf(),
    };
    let config = Config::default();
    let mut memory = folder.open_memory(OpenMode::Create).unwrap();
    let (engine, _) = autotriage::pipeline::triage::build_engine(&config, &mut *memory).unwrap();
    let sink = RecordingSink::default();
    let issues = vec![issue];
    let done = run_batch(
        &TriageBatch {
            issues: &issues,
            mode: EngineArg::Offline,
            apply: None,
            workers: 1,
            stop_on_error: true,
        },
        &engine,
        None,
        &folder.open_runs().unwrap(),
        &mut *memory,
        &sink,
    )
    .unwrap();
    assert_eq!(done.failed, 0);
    let events = sink.events();
    let all: Vec<String> = events
        .iter()
        .map(|e| {
            serde_json::to_value(e).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        all,
        [
            "progress",
            "read",
            "stage_started",
            "decision",
            "triaged",
            "stage_finished",
            "progress_done"
        ]
    );
    let triaged = events
        .iter()
        .find(|e| matches!(e.what, What::Triaged { .. }))
        .unwrap();
    assert_eq!(triaged.issue, "acme/calc#4");
    let What::Triaged { triage, title, .. } = &triaged.what else {
        unreachable!()
    };
    assert_eq!(title, "add() subtracts");
    assert_eq!(triage.reference, "acme/calc#4");
    // The run's log holds the same events, progress aside.
    let run_id = triaged.run_id.clone().unwrap();
    assert_eq!(logged(t.path(), &run_id), sequence(&events));
}

#[test]
fn a_fix_job_that_publishes_reports_every_stage() {
    if !pytest_present() {
        return;
    }
    let (t, issue) = python_repo("MEMBER");
    let s = scripted_model(FIX);
    let config = config(&s, "repair:\n  candidates: 1\n");
    let session = session(&config);
    let sink = RecordingSink::default();
    let out = fix(&t, issue, &config, Some(&session), FixStage::Pr, &sink);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.verdict, "fixed");
    let events = sink.events();
    assert_eq!(
        sequence(&events),
        [
            "triage:stage_started",
            "triage:decision",
            "triage:triaged",
            "triage:stage_finished",
            "locate:stage_started",
            "locate:read",
            "locate:decision",
            "locate:located",
            "locate:stage_finished",
            "repair:stage_started",
            "repair:model",
            "repair:decision",
            "repair:candidates",
            "repair:stage_finished",
            "test:stage_started",
            "test:decision",
            "test:read",
            "test:decision",
            "test:tested",
            "test:stage_finished",
            "pr:stage_started",
            "pr:write",
            "pr:published",
            "pr:stage_finished",
            "job:spent",
            "job:finished",
        ]
    );
    let published = events
        .iter()
        .find_map(|e| match &e.what {
            What::Published { branch, status, .. } => Some((branch.clone(), status.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        published,
        (
            Some("autotriage/issue-4".to_string()),
            "created".to_string()
        )
    );
    let run_id = out.run_id.clone().unwrap();
    assert!(events.iter().all(|e| e.issue == "acme/calc#4"));
    assert_eq!(logged(t.path(), &run_id), sequence(&events));
    // The spend the events report is the model's price of the one call.
    let spent = events.iter().find_map(|e| match e.what {
        What::Spent { usd } => Some(usd),
        _ => None,
    });
    assert!((spent.unwrap() - 0.0045).abs() < 1e-9, "{spent:?}");
}

#[test]
fn a_fix_the_trust_gate_refuses_asks_the_model_nothing() {
    let (t, issue) = python_repo("NONE");
    let s = scripted_model(FIX);
    let config = config(&s, "");
    let session = session(&config);
    let sink = RecordingSink::default();
    let out = fix(&t, issue, &config, Some(&session), FixStage::Pr, &sink);
    assert_eq!(out.verdict, "not eligible");
    assert!(format!("{:#}", out.error.unwrap()).contains("not eligible for a fix: not trusted"));
    let seq = sequence(&sink.events());
    assert_eq!(
        seq[seq.len() - 3..],
        ["repair:decision", "job:spent", "job:finished"]
    );
    assert!(
        !seq.iter().any(|e| e.starts_with("repair:stage")),
        "{seq:?}"
    );
    assert!(s.requests().is_empty());
}

#[test]
fn a_run_left_running_is_resumed_and_says_so_first() {
    let (t, issue) = python_repo("MEMBER");
    let folder = Folder {
        root: t.path().to_path_buf(),
    };
    let mut left = folder
        .open_runs()
        .unwrap()
        .begin("acme/calc", 4, "fix")
        .unwrap();
    left.stage_started("triage").unwrap();
    let left_id = left.id().to_string();
    drop(left);
    let s = scripted_model(FIX);
    let config = config(&s, "");
    let sink = RecordingSink::default();
    let out = fix(&t, issue, &config, None, FixStage::Triage, &sink);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.run_id.as_deref(), Some(left_id.as_str()));
    let events = sink.events();
    assert!(matches!(events[0].what, What::Resumed { after: None }));
    assert!(
        events[0]
            .message
            .contains(&format!("resuming the interrupted run {left_id}"))
    );
    assert_eq!(
        sequence(&events)[1..],
        [
            "triage:stage_started",
            "triage:decision",
            "triage:triaged",
            "triage:stage_finished",
            "job:spent",
            "job:finished"
        ]
    );
}

#[test]
fn a_fix_the_budget_stops_says_why_and_spends_nothing() {
    let (t, issue) = python_repo("MEMBER");
    let s = scripted_model(FIX);
    let config = config(&s, "budget:\n  per_issue_usd: 0.000001\n");
    let session = session(&config);
    let sink = RecordingSink::default();
    let out = fix(&t, issue, &config, Some(&session), FixStage::Pr, &sink);
    let error = format!("{:#}", out.error.unwrap());
    assert!(error.contains("budget"), "{error}");
    let events = sink.events();
    let seq = sequence(&events);
    assert_eq!(
        seq[seq.len() - 5..],
        [
            "repair:stage_started",
            "repair:candidates",
            "repair:stage_finished",
            "job:spent",
            "job:finished"
        ]
    );
    let finished = events.last().unwrap();
    assert!(matches!(
        &finished.what,
        What::Finished { error: Some(e), .. } if e.contains("budget")
    ));
    assert!(s.requests().is_empty());
    assert_eq!(out.spent, 0.0);
}
