//! Agent mode end to end: the real binary, a real git repository and its pytest suite
//! in the sandbox, and a scripted model that speaks each provider's tool-call wire
//! format (Anthropic Messages, OpenAI chat completions, Bedrock Converse).

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::suite::common::*;

const OPS_PY: &str = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n";

const TEST_OPS_PY: &str = "from calc.ops import add, mul\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n";

const ISSUE: &str = "---\nrepo: acme/calc\nnumber: 4\ntitle: add() subtracts\nauthor_association: MEMBER\n---\n`add(2, 3)` returns -1 instead of 5, in calc/ops.py.\n";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Provider {
    Anthropic,
    OpenAi,
    Bedrock,
}

/// The model's answer of one turn: one tool call, in the provider's format.
fn reply(p: Provider, turn: usize, name: &str, input: &Value, input_tokens: u64) -> Value {
    let id = format!("call_{turn}");
    match p {
        Provider::Anthropic => json!({
            "id": format!("msg_{turn}"), "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "tool_use", "id": id, "name": name, "input": input}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": input_tokens, "output_tokens": 20,
                      "cache_creation_input_tokens": if turn == 1 { 900 } else { 0 },
                      "cache_read_input_tokens": if turn == 1 { 0 } else { 900 }}
        }),
        Provider::OpenAi => json!({
            "id": format!("chatcmpl-{turn}"), "object": "chat.completion", "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": id, "type": "function",
                                "function": {"name": name, "arguments": input.to_string()}}]}}],
            "usage": {"prompt_tokens": input_tokens + 900, "completion_tokens": 20,
                      "prompt_tokens_details": {"cached_tokens": 900}}
        }),
        Provider::Bedrock => json!({
            "output": {"message": {"role": "assistant", "content": [
                {"toolUse": {"toolUseId": id, "name": name, "input": input}}]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": input_tokens, "outputTokens": 20,
                      "totalTokens": input_tokens + 20,
                      "cacheReadInputTokens": if turn == 1 { 0 } else { 900 },
                      "cacheWriteInputTokens": if turn == 1 { 900 } else { 0 }},
            "metrics": {"latencyMs": 5}
        }),
    }
}

/// A scripted model answering `steps` in order (one tool call each); the last step
/// answers every later request. `slow` delays the answer of that turn.
fn script(
    p: Provider,
    steps: &[(&str, Value)],
    input_tokens: u64,
    slow: Option<usize>,
) -> HttpMock {
    let s = HttpMock::start();
    for (i, (name, input)) in steps.iter().enumerate() {
        let matcher = match p {
            Provider::Anthropic => Mock::given(method("POST")).and(path("/v1/messages")),
            Provider::OpenAi => Mock::given(method("POST")).and(path("/v1/chat/completions")),
            Provider::Bedrock => {
                Mock::given(method("POST")).and(path_regex(r"^/model/.+/converse$"))
            }
        };
        let mut answer =
            ResponseTemplate::new(200).set_body_json(reply(p, i + 1, name, input, input_tokens));
        if slow == Some(i + 1) {
            answer = answer.set_delay(std::time::Duration::from_secs(30));
        }
        let m = matcher.respond_with(answer).with_priority(i as u8 + 1);
        s.mount(if i + 1 < steps.len() {
            m.up_to_n_times(1)
        } else {
            m
        });
    }
    s
}

fn config(p: Provider, s: &HttpMock, extra: &str) -> String {
    let model = match p {
        Provider::Anthropic => format!(
            "  a:\n    provider: anthropic\n    model_id: claude-x\n    base_url: {}\n    price: {{input_per_mtok: 3.0, output_per_mtok: 15.0}}\n",
            s.server.uri()
        ),
        Provider::OpenAi => format!(
            "  a:\n    provider: openai\n    model_id: gpt-4o\n    base_url: {}/v1\n    price: {{input_per_mtok: 2.5, output_per_mtok: 10.0, cache_read_per_mtok: 1.25}}\n",
            s.server.uri()
        ),
        Provider::Bedrock => format!(
            "  a:\n    provider: bedrock\n    model_id: anthropic.claude-3-5-sonnet-20241022-v2:0\n    region: us-east-1\n    endpoint_url: {}\n    stream: false\n",
            s.server.uri()
        ),
    };
    format!(
        "models:\n{model}model: a\ntriage:\n  engine: offline\nrepair:\n  mode: agent\n  candidates: 1\n{extra}test:\n  sandbox: required\n"
    )
}

fn repo() -> TestContext {
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
    t.write("issue.md", ISSUE);
    t
}

fn command(t: &TestContext, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("autotriage"));
    cmd.current_dir(t.path())
        .env_clear()
        .env("HOME", t.home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1");
    cmd.env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .env("OPENAI_API_KEY", "sk-test-openai-0000000000000000")
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        )
        .args(args);
    cmd
}

/// pytest and bubblewrap: agent mode needs the sandbox (a failure in CI when absent).
fn tools_present() -> bool {
    let pytest = std::process::Command::new("python3")
        .args(["-m", "pytest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let bwrap = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("bwrap").is_file()))
        .unwrap_or(false);
    if !(pytest && bwrap) {
        assert!(
            !emulators_required(),
            "CI needs pytest and bubblewrap for the agent tests"
        );
        eprintln!("skipped: pytest or bubblewrap is missing");
    }
    pytest && bwrap
}

fn transcript(t: &TestContext, run_id: &str) -> Vec<Value> {
    std::fs::read_to_string(
        t.path()
            .join(".autotriage/runs")
            .join(run_id)
            .join("agent.jsonl"),
    )
    .unwrap_or_default()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

/// The messages of a request, as one string, whatever the provider.
fn messages(b: &Value) -> String {
    b["messages"].to_string()
}

/// Searches, reads, makes a wrong edit, tries two refused calls, runs the tests, sees
/// the failure, corrects the edit, runs them again and submits.
fn the_working_script() -> Vec<(&'static str, Value)> {
    vec![
        ("search_code", json!({"query": "add"})),
        ("read_file", json!({"path": "../../etc/passwd"})),
        ("read_file", json!({"path": "calc/ops.py"})),
        (
            "edit_file",
            json!({"path": "calc/ops.py", "search": "def add(a, b):\n    return a - b\n", "replace": "def add(a, b):\n    return a * b\n"}),
        ),
        (
            "run_tests",
            json!({"tests": ["tests/test_ops.py; touch /tmp/pwned"]}),
        ),
        ("run_tests", json!({"tests": ["tests/test_ops.py"]})),
        (
            "edit_file",
            json!({"path": "calc/ops.py", "search": "def add(a, b):\n    return a * b\n", "replace": "def add(a, b):\n    return a + b\n"}),
        ),
        ("edit_file", json!({"path": "calc/ops.py"})),
        (
            "run_tests",
            json!({"tests": ["tests/test_ops.py::test_add"]}),
        ),
        (
            "submit",
            json!({"explanation": "add() subtracted; it adds now."}),
        ),
    ]
}

fn an_agent_run_corrects_itself_from_the_test_output(p: Provider) {
    let t = repo();
    let steps = the_working_script();
    let s = script(p, &steps, 1000, None);
    t.write("autotriage.yaml", &config(p, &s, ""));
    let o = command(&t, &["fix", "issue.md", "--until", "test", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{p:?}: {}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["test"]["chosen"], 1, "{p:?}: {}", v["test"]);
    assert_eq!(v["test"]["candidates"][0]["verdict"], "fixed");
    let c = &v["repair"]["candidates"][0];
    assert_eq!(c["by"], "agent");
    assert_eq!(
        c["diff"],
        "diff --git a/calc/ops.py b/calc/ops.py\n--- a/calc/ops.py\n+++ b/calc/ops.py\n@@ -1,5 +1,5 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n \n \n def mul(a, b):\n"
    );
    assert_eq!(c["explanation"], "add() subtracted; it adds now.");
    // One request per step; the submit ends the loop.
    let bodies = s.bodies();
    assert_eq!(bodies.len(), steps.len(), "{p:?}");
    // The transcript: every call and what came back, errors marked.
    let run_id = v["run_id"].as_str().unwrap();
    let entries = transcript(&t, run_id);
    let tools: Vec<(String, bool)> = entries
        .iter()
        .filter(|e| e["kind"] == "tool")
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["is_error"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, bool)> = [
        ("search_code", false),
        ("read_file", true),
        ("read_file", false),
        ("edit_file", false),
        ("run_tests", true),
        ("run_tests", false),
        ("edit_file", false),
        ("edit_file", true),
        ("run_tests", false),
        ("submit", false),
    ]
    .iter()
    .map(|(n, e)| (n.to_string(), *e))
    .collect();
    assert_eq!(tools, expected, "{p:?}");
    assert_eq!(
        entries.iter().filter(|e| e["kind"] == "response").count(),
        steps.len()
    );
    // What the model was told: the refusals, then the failing test's output.
    let escape = entries
        .iter()
        .find(|e| e["kind"] == "tool" && e["turn"] == 2)
        .unwrap();
    assert!(
        escape["content"]
            .as_str()
            .unwrap()
            .contains("leaves the repository"),
        "{escape}"
    );
    let injected = entries
        .iter()
        .find(|e| e["kind"] == "tool" && e["turn"] == 5)
        .unwrap();
    assert!(
        injected["content"]
            .as_str()
            .unwrap()
            .contains("is not a test id"),
        "{injected}"
    );
    assert!(!std::path::Path::new("/tmp/pwned").exists());
    let after_failure = messages(&bodies[6]);
    assert!(after_failure.contains("assert 6 == 5"), "{p:?}");
    assert!(!messages(&bodies[5]).contains("assert 6 == 5"));
    let bad_args = entries
        .iter()
        .find(|e| e["kind"] == "tool" && e["turn"] == 8)
        .unwrap();
    assert!(
        bad_args["content"]
            .as_str()
            .unwrap()
            .contains("needs `path`, `search` and `replace`")
    );
    let last = entries
        .iter()
        .find(|e| e["kind"] == "tool" && e["turn"] == 9)
        .unwrap();
    assert_eq!(last["failed"], 0, "{last}");
    // The cacheable prefix: marked where the provider has caching, counted everywhere.
    match p {
        Provider::Anthropic => assert_eq!(
            bodies[0]["messages"][0]["content"][0]["cache_control"],
            json!({"type": "ephemeral"})
        ),
        Provider::Bedrock => assert!(
            bodies[0]["messages"][0]["content"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b.get("cachePoint").is_some()),
            "{}",
            bodies[0]["messages"][0]
        ),
        Provider::OpenAi => {}
    }
    let usage: Value = serde_json::from_str(
        &std::fs::read_to_string(
            t.path()
                .join(".autotriage/runs")
                .join(run_id)
                .join("usage.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let calls = usage["calls"].as_array().unwrap();
    assert_eq!(calls.len(), steps.len());
    assert_eq!(calls[1]["cache_read_tokens"], 900, "{p:?}: {usage}");
    assert_eq!(calls[1]["input_tokens"], 1000, "{p:?}: {usage}");
}

#[test]
fn an_agent_run_through_anthropic_tool_use() {
    if tools_present() {
        an_agent_run_corrects_itself_from_the_test_output(Provider::Anthropic);
    }
}

#[test]
fn an_agent_run_through_openai_tools() {
    if tools_present() {
        an_agent_run_corrects_itself_from_the_test_output(Provider::OpenAi);
    }
}

#[test]
fn an_agent_run_through_bedrock_converse_tool_config() {
    if tools_present() {
        an_agent_run_corrects_itself_from_the_test_output(Provider::Bedrock);
    }
}

#[test]
fn agent_mode_without_the_sandbox_is_refused_before_anything_runs() {
    let t = repo();
    let s = script(Provider::Anthropic, &the_working_script(), 1000, None);
    t.write(
        "autotriage.yaml",
        &config(Provider::Anthropic, &s, "").replace("sandbox: required", "sandbox: auto"),
    );
    let o = command(&t, &["fix", "issue.md"]).output().unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("set test.sandbox: required"),
        "{}",
        stderr(&o)
    );
    assert!(s.requests().is_empty());
    assert!(!t.path().join(".autotriage/runs").exists());
}

#[test]
fn max_turns_stops_with_the_best_tested_state() {
    if !tools_present() {
        return;
    }
    let t = repo();
    // Fixes, proves it, then breaks it again and never submits.
    let steps = vec![
        (
            "edit_file",
            json!({"path": "calc/ops.py", "search": "    return a - b\n", "replace": "    return a + b\n"}),
        ),
        ("run_tests", json!({"tests": ["tests/test_ops.py"]})),
        (
            "edit_file",
            json!({"path": "calc/ops.py", "search": "    return a + b\n", "replace": "    return a - b - 0\n"}),
        ),
        ("run_tests", json!({"tests": ["tests/test_ops.py"]})),
        ("read_file", json!({"path": "calc/ops.py"})),
    ];
    let s = script(Provider::Anthropic, &steps, 1000, None);
    t.write(
        "autotriage.yaml",
        &config(Provider::Anthropic, &s, "  max_turns: 4\n"),
    );
    let o = command(&t, &["fix", "issue.md", "--until", "test", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(s.requests().len(), 4);
    let v = json(&o);
    let c = &v["repair"]["candidates"][0];
    assert!(
        c["diff"].as_str().unwrap().contains("+    return a + b"),
        "{c}"
    );
    assert_eq!(v["test"]["candidates"][0]["verdict"], "fixed");
}

#[test]
fn a_budget_stop_mid_loop_sends_no_further_request() {
    if !tools_present() {
        return;
    }
    let t = repo();
    // Each answer reports 100,000 input tokens ($0.30): the second request's worst
    // case no longer fits in $0.31.
    let s = script(Provider::Anthropic, &the_working_script(), 100_000, None);
    t.write(
        "autotriage.yaml",
        &config(Provider::Anthropic, &s, "").replace(
            "test:\n",
            "budget:\n  per_issue_usd: 0.31\n  per_command_usd: 5\ntest:\n",
        ),
    );
    let o = command(&t, &["fix", "issue.md", "--until", "test", "--json"])
        .output()
        .unwrap();
    assert_eq!(s.requests().len(), 1, "{}", stderr(&o));
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("no candidate patch applied"), "{err}");
}

#[test]
fn a_run_killed_mid_loop_resumes_from_its_transcript_without_asking_again() {
    if !tools_present() {
        return;
    }
    let t = repo();
    let steps = the_working_script();
    // The fourth answer takes 30 s: the process is killed while waiting for it.
    let s = script(Provider::Anthropic, &steps, 1000, Some(4));
    t.write("autotriage.yaml", &config(Provider::Anthropic, &s, ""));
    let mut child = command(&t, &["fix", "issue.md", "--until", "test", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let run_id = loop {
        let runs = t.path().join(".autotriage/runs");
        let found = std::fs::read_dir(&runs).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .find(|id| transcript(&t, id).len() >= 6)
        });
        if let Some(id) = found
            && s.requests().len() >= 4
        {
            break id;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "the agent never got going"
        );
        assert!(child.try_wait().unwrap().is_none(), "fix ended early");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(transcript(&t, &run_id).len(), 6, "three turns recorded");
    // The slow answer is gone with the process; the rest of the script answers now.
    s.rt.block_on(s.server.reset());
    script_rest(&s, &steps[3..]);
    let o = command(&t, &["fix", "issue.md", "--until", "test", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["run_id"], run_id.as_str());
    assert_eq!(v["test"]["candidates"][0]["verdict"], "fixed");
    // After the reset: only the turns not recorded were asked for, each once.
    let asked: Vec<usize> = s
        .bodies()
        .iter()
        .map(|b| b["messages"].as_array().unwrap().len())
        .collect();
    assert_eq!(asked, vec![7, 9, 11, 13, 15, 17, 19], "{asked:?}");
    assert_eq!(transcript(&t, &run_id).len(), 2 * steps.len());
}

/// Mount the remaining steps (turn numbers continue) on a reset server.
fn script_rest(s: &HttpMock, steps: &[(&str, Value)]) {
    for (i, (name, input)) in steps.iter().enumerate() {
        let m = Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(reply(
                Provider::Anthropic,
                i + 4,
                name,
                input,
                1000,
            )))
            .with_priority(i as u8 + 1);
        s.mount(if i + 1 < steps.len() {
            m.up_to_n_times(1)
        } else {
            m
        });
    }
}
