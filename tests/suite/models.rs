//! Model providers over real HTTP against a scripted server (wiremock), through the
//! real binary.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::suite::common::*;

type Scripted = HttpMock;

fn answer() -> Value {
    json!({"kind": "bug", "confidence": 0.9, "labels": ["bug", "no-such-label"], "priority": "P1",
           "priority_reasons": ["it breaks the build"], "missing": ["logs_or_trace"],
           "reasoning": "The reporter describes a failure of an existing feature."})
}

fn anthropic_reply(input: Value) -> Value {
    json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-sonnet-x",
           "content": [{"type": "tool_use", "id": "toolu_1", "name": "record_triage", "input": input}],
           "stop_reason": "tool_use", "usage": {"input_tokens": 1000, "output_tokens": 100}})
}

fn openai_reply(args: &Value) -> Value {
    json!({"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls",
           "message": {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
           "function": {"name": "record_triage", "arguments": args.to_string()}}]}}],
           "usage": {"prompt_tokens": 800, "completion_tokens": 60}})
}

fn with_examples(config: &str) -> TestContext {
    let t = TestContext::new();
    t.write("autotriage.yaml", config);
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/issues");
    assert_eq!(code(&t.run(&["memory", "import", ex.to_str().unwrap()])), 0);
    t
}

#[test]
fn anthropic_tool_use_round_trip_fills_the_triage() {
    let s = Scripted::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .and(header("x-api-key", "sk-ant-test-key-000000000000000000"))
            .and(header("anthropic-version", "2023-06-01"))
            .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_reply(answer()))),
    );
    let t = with_examples(&format!(
        "models:\n  a:\n    provider: anthropic\n    model_id: claude-3-5-sonnet-x\n    base_url: {}\n",
        s.server.uri()
    ));
    let o = t
        .cmd()
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args([
            "triage",
            "acme/widgets#26",
            "--engine",
            "model",
            "--model",
            "a",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["engine"], "model");
    assert_eq!(v["kind"], "bug");
    assert_eq!(
        v["labels"],
        json!([{"name": "bug", "confidence": 0.9}]),
        "only labels the repository has"
    );
    assert_eq!(v["priority"], "P1");
    assert_eq!(v["missing"], json!(["logs_or_trace"]));
    assert!(
        v["comment"]
            .as_str()
            .unwrap()
            .contains("Logs or a stack trace")
    );
    assert!(v["reasoning"].as_str().unwrap().starts_with("The reporter"));
    assert!(v["reasons"].as_array().unwrap().iter().any(|r| {
        r.as_str()
            .unwrap()
            .contains("dropped the model's label `no-such-label`")
    }));

    // What the server got: a forced tool call, the issue, the repository's labels.
    let bodies = s.bodies();
    assert_eq!(bodies.len(), 1);
    let b = &bodies[0];
    assert_eq!(
        b["tool_choice"],
        json!({"type": "tool", "name": "record_triage"})
    );
    assert_eq!(b["model"], "claude-3-5-sonnet-x");
    let prompt = b["messages"][0]["content"][0]["text"].as_str().unwrap();
    assert!(
        prompt.contains("## Issue acme/widgets#26: it doesnt work"),
        "{prompt}"
    );
    assert!(prompt.contains("- enhancement"), "{prompt}");

    // Usage and cost: 1000 in at $3/M + 100 out at $15/M.
    let run = t
        .path()
        .join(".autotriage/runs")
        .join(v["run_id"].as_str().unwrap());
    let usage: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("usage.json")).unwrap()).unwrap();
    assert_eq!(usage["calls"][0]["input_tokens"], 1000);
    assert!(
        (usage["total"]["cost_usd"].as_f64().unwrap() - 0.0045).abs() < 1e-9,
        "{usage}"
    );
    let events = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    assert!(events.contains("\"kind\":\"model\""), "{events}");
    let o = t.run(&["runs", "show", v["run_id"].as_str().unwrap()]);
    assert!(
        stdout(&o).contains("spend:   $0.0045 (1000 tokens in, 100 out, 1 model calls)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn openai_retries_a_429_and_repairs_prose() {
    let s = Scripted::start();
    // First a 429 with Retry-After, then prose instead of the tool call, then a valid call.
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(
                ResponseTemplate::new(429)
                    .insert_header("retry-after", "0")
                    .set_body_json(json!({"error": {"message": "slow down"}})),
            )
            .up_to_n_times(1)
            .with_priority(1),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"choices": [{"message": {"role": "assistant", "content": "I think this is a bug."}, "finish_reason": "stop"}]})))
            .up_to_n_times(1)
            .with_priority(2),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(openai_reply(&answer())))
            .with_priority(3),
    );
    let t = with_examples(&format!(
        "models:\n  local:\n    provider: openai\n    model_id: qwen2.5-coder:7b\n    base_url: {}/v1\n",
        s.server.uri()
    ));
    let o = t.run(&[
        "triage",
        "acme/widgets#26",
        "--engine",
        "model",
        "--model",
        "local",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["kind"], "bug");
    let bodies = s.bodies();
    assert_eq!(bodies.len(), 3, "429, prose, valid");
    // The repair attempt shows the model its prose and what was wrong.
    let last = bodies[2]["messages"].as_array().unwrap();
    assert_eq!(last[last.len() - 2]["content"], "I think this is a bug.");
    assert!(
        last[last.len() - 1]["content"]
            .as_str()
            .unwrap()
            .contains("not a call of the tool `record_triage`")
    );
    assert_eq!(
        bodies[2]["tool_choice"],
        json!({"type": "function", "function": {"name": "record_triage"}})
    );
}

#[test]
fn a_budget_stops_a_batch_before_the_call_that_would_exceed_it() {
    let s = Scripted::start();
    let mut reply = anthropic_reply(answer());
    reply["usage"] = json!({"input_tokens": 0, "output_tokens": 100});
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(reply)),
    );
    // Worst case per call: 1024 tokens × $10/M = $0.01024; each call really costs $0.001.
    // With $0.0125: calls 1–3 fit (0.002 + 0.01024 ≤ 0.0125), call 4 would not.
    let t = with_examples(&format!(
        "models:\n  a:\n    provider: anthropic\n    model_id: claude-3-5-haiku-x\n    base_url: {}\n    price: {{input_per_mtok: 0, output_per_mtok: 10}}\n",
        s.server.uri()
    ));
    let o = t
        .cmd()
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args([
            "triage",
            "acme/widgets",
            "--engine",
            "model",
            "--model",
            "a",
            "--max-cost",
            "0.0125",
            "--jobs",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(s.bodies().len(), 3);
    let triaged = stdout(&o)
        .lines()
        .filter(|l| l.contains("\"engine\":\"model\""))
        .count();
    assert_eq!(triaged, 3, "{}", stdout(&o));
    assert!(stderr(&o).contains("stopped before a model call that could cost up to $0.0102: this command has spent $0.0030 of its $0.0125 budget"), "{}", stderr(&o));

    // In parallel, calls in flight count against the budget too: never more calls
    // than the budget allows, whatever the interleaving.
    let before = s.bodies().len();
    let o = t
        .cmd()
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args([
            "triage",
            "acme/widgets",
            "--engine",
            "model",
            "--model",
            "a",
            "--max-cost",
            "0.0125",
            "--jobs",
            "4",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let made = s.bodies().len() - before;
    assert!((1..=3).contains(&made), "{made} calls");
    assert!(
        stderr(&o).contains("stopped before a model call"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_recorded_cassette_replays_the_same_triage_and_a_missing_request_is_named() {
    let s = Scripted::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_reply(answer()))),
    );
    let t = with_examples(&format!(
        "models:\n  a:\n    provider: anthropic\n    model_id: claude-3-5-haiku-x\n    base_url: {}\n",
        s.server.uri()
    ));
    let o = t
        .cmd()
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args([
            "triage",
            "acme/widgets#26",
            "--engine",
            "model",
            "--model",
            "a",
            "--record",
            "cassette.jsonl",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut live = json(&o);
    let o = t.run(&[
        "triage",
        "acme/widgets#26",
        "--engine",
        "model",
        "--model",
        "replay:cassette.jsonl",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut replayed = json(&o);
    for v in [&mut live, &mut replayed] {
        v.as_object_mut().unwrap().remove("run_id");
    }
    assert_eq!(live, replayed);
    assert_eq!(s.bodies().len(), 1, "the replay made no HTTP call");

    let o = t.run(&[
        "triage",
        "acme/widgets#25",
        "--engine",
        "model",
        "--model",
        "replay:cassette.jsonl",
    ]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("has no recorded reply for request"),
        "{}",
        stderr(&o)
    );
    t.write("broken.jsonl", "{\"fingerprint\": \"x\"}\nnot json\n");
    let o = t.run(&[
        "triage",
        "acme/widgets#25",
        "--engine",
        "model",
        "--model",
        "replay:broken.jsonl",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("broken.jsonl:1: not a recorded exchange"),
        "{}",
        stderr(&o)
    );
    let o = t.run(&[
        "triage",
        "acme/widgets#25",
        "--engine",
        "model",
        "--model",
        "replay:missing.jsonl",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("cannot read cassette"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_planted_secret_never_reaches_the_model() {
    let s = Scripted::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(openai_reply(&answer()))),
    );
    let t = with_examples(&format!(
        "models:\n  l:\n    provider: openai\n    model_id: m\n    base_url: {}/v1\n",
        s.server.uri()
    ));
    t.write("new/50.md", "---\nrepo: acme/widgets\ntitle: Crash with my token\n---\nGITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789 and AKIAIOSFODNN7EXAMPLE\n");
    let o = t.run(&["triage", "new/50.md", "--engine", "model", "--model", "l"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let sent = serde_json::to_string(&s.bodies()).unwrap();
    assert!(sent.contains("Crash with my token"));
    assert!(
        !sent.contains("ghp_abcdefghijklmnopqrstuvwxyz0123456789")
            && !sent.contains("AKIAIOSFODNN7EXAMPLE"),
        "{sent}"
    );
    assert!(sent.contains("[REDACTED:github-token]"));
}

#[test]
fn model_configuration_errors_are_clear_and_fast() {
    let t = with_examples(
        "models:\n  a:\n    provider: anthropic\n    model_id: claude-3-5-haiku-x\n  dead:\n    provider: openai\n    model_id: m\n    base_url: http://127.0.0.1:9/v1\n",
    );
    let o = t.run(&[
        "triage",
        "acme/widgets#26",
        "--engine",
        "model",
        "--model",
        "a",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("needs an API key in $ANTHROPIC_API_KEY"),
        "{}",
        stderr(&o)
    );
    let o = t.run(&[
        "triage",
        "acme/widgets#26",
        "--engine",
        "model",
        "--model",
        "nope",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("`model` is \"nope\", which is not an entry of `models`"),
        "{}",
        stderr(&o)
    );
    let o = t.run(&["triage", "acme/widgets#26", "--engine", "model"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("needs a model, and none is configured"),
        "{}",
        stderr(&o)
    );
    let start = Instant::now();
    let o = t.run(&[
        "triage",
        "acme/widgets#26",
        "--engine",
        "model",
        "--model",
        "dead",
    ]);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("cannot connect to http://127.0.0.1:9/v1/chat/completions"),
        "{}",
        stderr(&o)
    );
    // Auto without a model is the offline engine.
    let o = t.run(&["triage", "acme/widgets#26", "--json"]);
    assert_eq!(json(&o)["engine"], "offline");
}

/// Bedrock through the real AWS SDK against ministack (PyPI), which serves Converse and
/// ConverseStream and forwards the model's work to an OpenAI-compatible server: here
/// the scripted one, so the tool call round-trips through Bedrock's wire format.
#[test]
fn bedrock_converse_and_converse_stream_against_ministack() {
    let s = Scripted::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(openai_reply(&answer()))),
    );
    let Some(ms) = Emulator::start(
        "ministack",
        &[],
        "GATEWAY_PORT",
        &[
            ("MINISTACK_BEDROCK_PROXY_URL", s.server.uri()),
            ("IOT_MTLS_ENABLED", "0".into()),
            ("SFTP_ENABLED", "0".into()),
        ],
    ) else {
        return;
    };
    for stream in [false, true] {
        let t = with_examples(&format!(
            "models:\n  br:\n    provider: bedrock\n    model_id: anthropic.claude-3-5-sonnet-20241022-v2:0\n    region: us-east-1\n    endpoint_url: {}\n    stream: {stream}\n",
            ms.url
        ));
        let o = t
            .cmd()
            .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env(
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            )
            .args([
                "triage",
                "acme/widgets#26",
                "--engine",
                "model",
                "--model",
                "br",
                "--json",
            ])
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "stream={stream}: {}", stderr(&o));
        let v = json(&o);
        assert_eq!(v["engine"], "model", "stream={stream}");
        assert_eq!(v["kind"], "bug");
        assert_eq!(v["priority"], "P1");
        let run = t
            .path()
            .join(".autotriage/runs")
            .join(v["run_id"].as_str().unwrap());
        let usage: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("usage.json")).unwrap())
                .unwrap();
        assert_eq!(
            usage["calls"][0]["model"],
            "bedrock:anthropic.claude-3-5-sonnet-20241022-v2:0"
        );
        assert_eq!(
            usage["calls"][0]["reported"], true,
            "Bedrock reports usage: {usage}"
        );
    }
    // What reached the model behind Bedrock: the tool, forced, and the issue.
    let bodies = s.bodies();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[1]["tools"][0]["function"]["name"], "record_triage");
    assert!(
        serde_json::to_string(&bodies[1]["messages"])
            .unwrap()
            .contains("it doesnt work")
    );
}

#[test]
fn eval_triage_with_a_model_scores_its_answers() {
    use wiremock::matchers::body_string_contains;
    let s = Scripted::start();
    for (needle, kind) in [
        ("Crash number", "bug"),
        ("Add option", "feature"),
        ("How do I configure", "unclear"),
    ] {
        let mut a = answer();
        a["kind"] = json!(kind);
        s.mount(
            Mock::given(method("POST"))
                .and(path("/v1/messages"))
                .and(body_string_contains(needle))
                .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_reply(a))),
        );
    }
    let t = TestContext::new();
    t.write("autotriage.yaml", &format!("models:\n  a:\n    provider: anthropic\n    model_id: claude-3-5-sonnet-x\n    base_url: {}\n", s.server.uri()));
    let mut csv = String::from("title,body,label\n");
    for i in 0..2 {
        csv.push_str(&format!("Crash number {i},it crashes,bug\nAdd option {i},please add,feature\nHow do I configure {i}?,how,question\n"));
    }
    t.write("l.csv", &csv);
    let o = t
        .cmd()
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args([
            "eval", "triage", "--engine", "model", "--model", "a", "--data", "l.csv", "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["issues"], 6);
    assert!(
        (v["accuracy"].as_f64().unwrap() - 4.0 / 6.0).abs() < 1e-9,
        "{v}"
    );
    assert!(
        (v["coverage"].as_f64().unwrap() - 4.0 / 6.0).abs() < 1e-9,
        "unclear is never covered: {v}"
    );
    assert_eq!(v["precision_at_threshold"], 1.0);
    assert!(
        (v["cost_usd"].as_f64().unwrap() - 6.0 * 0.0045).abs() < 1e-9,
        "{v}"
    );
}

#[test]
fn an_overload_burst_is_retried_and_a_schema_violation_repaired() {
    let s = Scripted::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(529).insert_header("retry-after", "0").set_body_json(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})))
            .up_to_n_times(3)
            .with_priority(1),
    );
    let mut bad = answer();
    bad["kind"] = json!("documentation");
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_reply(bad)))
            .up_to_n_times(1)
            .with_priority(2),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_reply(answer())))
            .with_priority(3),
    );
    let t = with_examples(&format!(
        "models:\n  a:\n    provider: anthropic\n    model_id: claude-3-5-haiku-x\n    base_url: {}\n",
        s.server.uri()
    ));
    let o = t
        .cmd()
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args([
            "triage",
            "acme/widgets#26",
            "--engine",
            "model",
            "--model",
            "a",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["kind"], "bug");
    let bodies = s.bodies();
    assert_eq!(bodies.len(), 5, "3 overloaded, 1 invalid, 1 valid");
    // The repair answers the tool call with the validation error.
    let last = bodies[4]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["is_error"], true);
    assert!(
        last["content"][0]["content"]
            .as_str()
            .unwrap()
            .contains("$.kind: \"documentation\" is not one of"),
        "{last}"
    );
}

#[test]
fn a_reply_cut_off_twice_fails_clearly_and_is_kept() {
    let s = Scripted::start();
    let mut cut = anthropic_reply(json!({}));
    cut["content"] =
        json!([{"type": "text", "text": "Let me think about this issue carefully. First,"}]);
    cut["stop_reason"] = json!("max_tokens");
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(cut)),
    );
    let t = with_examples(&format!(
        "models:\n  a:\n    provider: anthropic\n    model_id: claude-3-5-haiku-x\n    base_url: {}\n",
        s.server.uri()
    ));
    let o = t
        .cmd()
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args([
            "triage",
            "acme/widgets#26",
            "--engine",
            "model",
            "--model",
            "a",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("no valid `record_triage` call after a repair attempt: the reply was cut off at max_tokens"), "{}", stderr(&o));
    let runs = t.path().join(".autotriage/runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("model-failure.json").exists())
        .expect("the failed run keeps the reply");
    let kept = std::fs::read_to_string(run.join("model-failure.json")).unwrap();
    assert!(
        kept.contains("Let me think about this issue carefully"),
        "{kept}"
    );
    // With --engine auto the offline triage stands in, saying why.
    let o = t
        .cmd()
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args(["triage", "acme/widgets#26", "--model", "a", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["engine"], "offline");
    assert!(
        v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("the model could not help")),
        "{v}"
    );
    let t2 =
        with_examples("models:\n  next:\n    provider: anthropic\n    model_id: claude-next\n");
    let o = t2
        .cmd()
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args(["triage", "acme/widgets#26", "--model", "next"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains(
            "no price is known for claude-next (anthropic), so budgets cannot be enforced"
        ),
        "{}",
        stderr(&o)
    );
    let o = t.run(&["triage", "acme/widgets#26", "--model", "frob:x"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("unknown provider \"frob\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn secrets_across_the_prompt_cut_and_in_cassettes_are_redacted() {
    let s = Scripted::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(openai_reply(&answer()))),
    );
    let t = with_examples(&format!(
        "models:\n  l:\n    provider: openai\n    model_id: m\n    base_url: {}/v1\n    api_key_env: MY_LOCAL_KEY\n",
        s.server.uri()
    ));
    // A token straddling the 6000-character cut, then a private key block across it.
    let body = format!(
        "{}\nGITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789 and more\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretmaterial\n{}\n-----END RSA PRIVATE KEY-----\n",
        "x".repeat(5975),
        "y".repeat(200)
    );
    t.write(
        "new/60.md",
        &format!("---\nrepo: acme/widgets\ntitle: Crash\n---\n{body}"),
    );
    let o = t
        .cmd()
        .env("MY_LOCAL_KEY", "local-key-value-1234567890")
        .args([
            "triage",
            "new/60.md",
            "--engine",
            "model",
            "--model",
            "l",
            "--record",
            "c.jsonl",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let sent = serde_json::to_string(&s.bodies()).unwrap();
    let cassette = std::fs::read_to_string(t.path().join("c.jsonl")).unwrap();
    for (what, text) in [("request", &sent), ("cassette", &cassette)] {
        for fragment in [
            "ghp_abc",
            "MIIEowIBAAKCAQEA",
            "secretmaterial",
            "local-key-value-1234567890",
        ] {
            assert!(!text.contains(fragment), "{fragment} in the {what}");
        }
    }
    let headers = s.rt.block_on(s.server.received_requests()).unwrap();
    assert_eq!(
        headers[0].headers.get("authorization").unwrap(),
        "Bearer local-key-value-1234567890",
        "the key is sent as the key, nowhere else"
    );
}

fn sse(events: &[(&str, Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

#[test]
fn anthropic_streams_a_tool_call_in_pieces() {
    let s = Scripted::start();
    let args = answer().to_string();
    let (a, b) = args.split_at(args.len() / 2);
    let body = sse(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": [], "usage": {"input_tokens": 1200, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Recording the triage."}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "record_triage", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": a}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": b}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 90}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")),
    );
    let t = with_examples(&format!(
        "models:\n  a:\n    provider: anthropic\n    model_id: claude-3-5-sonnet-x\n    base_url: {}\n",
        s.server.uri()
    ));
    let o = t
        .cmd()
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args([
            "triage",
            "acme/widgets#26",
            "--engine",
            "model",
            "--model",
            "a",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["kind"], "bug");
    assert_eq!(s.bodies()[0]["stream"], true);
    let run = t
        .path()
        .join(".autotriage/runs")
        .join(v["run_id"].as_str().unwrap());
    let usage: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("usage.json")).unwrap()).unwrap();
    assert_eq!(
        (
            usage["calls"][0]["input_tokens"].as_u64(),
            usage["calls"][0]["output_tokens"].as_u64()
        ),
        (Some(1200), Some(90))
    );

    // An overload reported inside the stream is retried like a 529.
    let s2 = Scripted::start();
    s2.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(sse(&[("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))]), "text/event-stream"))
            .up_to_n_times(1)
            .with_priority(1),
    );
    s2.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_reply(answer())))
            .with_priority(2),
    );
    let t = with_examples(&format!(
        "models:\n  a:\n    provider: anthropic\n    model_id: claude-3-5-sonnet-x\n    base_url: {}\n",
        s2.server.uri()
    ));
    let o = t
        .cmd()
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args([
            "triage",
            "acme/widgets#26",
            "--engine",
            "model",
            "--model",
            "a",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(s2.bodies().len(), 2);
}

#[test]
fn openai_compatible_streams_when_asked() {
    let s = Scripted::start();
    let args = answer().to_string();
    let (a, b) = args.split_at(args.len() / 3);
    let chunks = [
        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_7", "type": "function", "function": {"name": "record_triage", "arguments": ""}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": a}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": b}}]}, "finish_reason": "tool_calls"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 700, "completion_tokens": 50}}),
    ];
    let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")),
    );
    let t = with_examples(&format!(
        "models:\n  l:\n    provider: openai\n    model_id: m\n    base_url: {}/v1\n    stream: true\n",
        s.server.uri()
    ));
    let o = t.run(&[
        "triage",
        "acme/widgets#26",
        "--engine",
        "model",
        "--model",
        "l",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["kind"], "bug");
    let sent = &s.bodies()[0];
    assert_eq!(
        (
            sent["stream"].as_bool(),
            sent["stream_options"]["include_usage"].as_bool()
        ),
        (Some(true), Some(true))
    );
    let run = t
        .path()
        .join(".autotriage/runs")
        .join(v["run_id"].as_str().unwrap());
    let usage: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("usage.json")).unwrap()).unwrap();
    assert_eq!(usage["calls"][0]["input_tokens"], 700);
}
