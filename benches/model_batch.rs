//! Model batch benchmark: `autotriage triage --engine model` over 100 issues against a
//! scripted OpenAI-compatible server that adds a fixed delay per call.
//!
//! `cargo bench --bench model_batch` prints: wall time with 500 ms per call and
//! `--jobs 8` against the ideal 100 × 0.5 s / 8, and the overhead per model call
//! outside the network (model vs offline engine, no delay, `--jobs 1`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn reply() -> serde_json::Value {
    let args = json!({"kind": "bug", "confidence": 0.9, "labels": ["bug"], "priority": "P2", "priority_reasons": ["x"], "missing": [], "reasoning": "r"});
    json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "record_triage", "arguments": args.to_string()}}]}}],
        "usage": {"prompt_tokens": 800, "completion_tokens": 60}})
}

fn setup(dir: &Path, base: &str) {
    std::fs::write(
        dir.join("autotriage.yaml"),
        format!("models:\n  s:\n    provider: openai\n    model_id: m\n    base_url: {base}/v1\n"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("new")).unwrap();
    for n in 1..=100 {
        std::fs::write(dir.join(format!("new/{n}.md")), format!("---\nrepo: acme/widgets\nnumber: {}\ntitle: Issue {n} about the build\n---\nSomething about page {n} fails.\n", 1000 + n)).unwrap();
    }
}

fn run(bin: &Path, dir: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new(bin)
        .current_dir(dir)
        .env("HOME", dir)
        .args(args)
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn main() {
    let bin = Path::new(env!("CARGO_BIN_EXE_autotriage"));
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/issues");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();

    // 500 ms per call, --jobs 8.
    let slow = rt.block_on(MockServer::start());
    rt.block_on(
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(reply())
                    .set_delay(Duration::from_millis(500)),
            )
            .mount(&slow),
    );
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), &slow.uri());
    run(
        bin,
        dir.path(),
        &["memory", "import", examples.to_str().unwrap()],
    );
    run(
        bin,
        dir.path(),
        &["triage", "new/1.md", "--engine", "offline"],
    ); // train once
    let took = run(
        bin,
        dir.path(),
        &[
            "triage", "new", "--engine", "model", "--model", "s", "--jobs", "8", "--json",
        ],
    );
    let ideal = 100.0 * 0.5 / 8.0;
    println!(
        "batch triage, 100 issues, 500 ms per call, --jobs 8: {:.2} s (ideal {ideal:.2} s, {:+.1}%)   [cargo bench --bench model_batch]",
        took.as_secs_f64(),
        (took.as_secs_f64() / ideal - 1.0) * 100.0
    );

    // Overhead per call: model engine with an instant server vs the offline engine.
    let fast = rt.block_on(MockServer::start());
    rt.block_on(
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(reply()))
            .mount(&fast),
    );
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), &fast.uri());
    run(
        bin,
        dir.path(),
        &["memory", "import", examples.to_str().unwrap()],
    );
    run(
        bin,
        dir.path(),
        &["triage", "new/1.md", "--engine", "offline"],
    );
    let mut best_model = f64::MAX;
    let mut best_offline = f64::MAX;
    for _ in 0..3 {
        best_offline = best_offline.min(
            run(
                bin,
                dir.path(),
                &["triage", "new", "--engine", "offline", "--json"],
            )
            .as_secs_f64(),
        );
        best_model = best_model.min(
            run(
                bin,
                dir.path(),
                &[
                    "triage", "new", "--engine", "model", "--model", "s", "--jobs", "1", "--json",
                ],
            )
            .as_secs_f64(),
        );
    }
    println!(
        "overhead per model call (build, redact, budget, HTTP to loopback, validate, record): {:.2} ms   (model {best_model:.3} s - offline {best_offline:.3} s, over 100 calls)",
        (best_model - best_offline) * 1000.0 / 100.0
    );
}
