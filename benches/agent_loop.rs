//! Agent-loop benchmark: a scripted agent run of 30 turns (search, find a symbol, read,
//! list, edit, run tests, submit) on a real repository — this crate's own sources
//! committed to a temporary git repository and indexed — with the transcript written
//! to a real run folder. Prints requests, input and output tokens per issue, the share
//! of input tokens inside the cacheable prefix (system, tools, first message), and the
//! time each turn adds outside the model and the test command.
//! `cargo bench --bench agent_loop`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autotriage::agent::tools::Workspace;
use autotriage::agent::{Agent, Entry};
use autotriage::config::Price;
use autotriage::issue::Issue;
use autotriage::model::registry::ResolvedModel;
use autotriage::model::retry::RetryPolicy;
use autotriage::model::session::Session;
use autotriage::model::usage::{Budget, estimate_input_tokens};
use autotriage::model::{Block, Model, ModelError, Request, Response, StopReason, Usage};
use autotriage::redact::Redactor;
use autotriage::runs::fs::FsRunStore;
use serde_json::{Value, json};

/// Answers a fixed script of tool calls and measures each request.
struct Scripted {
    steps: Vec<(String, Value)>,
    seen: Mutex<Vec<(u64, u64)>>,
}

fn prefix_tokens(r: &Request) -> u64 {
    let mut first = r.clone();
    first.messages.truncate(1);
    estimate_input_tokens(&first)
}

impl Model for Scripted {
    fn id(&self) -> String {
        "scripted".into()
    }

    fn complete(&self, request: &Request) -> Result<Response, ModelError> {
        let mut seen = self.seen.lock().unwrap();
        let n = seen.len();
        let input = estimate_input_tokens(request);
        seen.push((input, prefix_tokens(request)));
        let (name, args) = self.steps[n.min(self.steps.len() - 1)].clone();
        let output = (args.to_string().len() as u64).div_ceil(4) + 20;
        Ok(Response {
            content: vec![Block::ToolUse {
                id: format!("call_{n}"),
                name,
                input: args,
            }],
            stop_reason: StopReason::ToolUse,
            usage: Some(Usage {
                input_tokens: input,
                output_tokens: output,
                ..Default::default()
            }),
        })
    }
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(dir.path()).unwrap();
    let mut index = repo.index().unwrap();
    let mut files = 0;
    for entry in walk(&root.join("src")) {
        let rel = entry
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let dst = dir.path().join(&rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &dst).unwrap();
        index.add_path(std::path::Path::new(&rel)).unwrap();
        files += 1;
    }
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("b", "b@example.com").unwrap();
    let base = repo
        .commit(Some("HEAD"), &sig, &sig, "base", &tree, &[])
        .unwrap();
    let settings = autotriage::locate::LocateSettings::from_config(
        &autotriage::config::LocateConfig::default(),
    )
    .unwrap();
    let (code_index, _) =
        autotriage::locate::open_index(&dir.path().join("index"), &repo, base, &settings).unwrap();
    let base_paths = autotriage::verify::tree_paths(&repo, base);

    let mut steps: Vec<(String, Value)> = Vec::new();
    let cycle = [
        ("search_code", json!({"query": "redact secret token"})),
        ("find_symbol", json!({"name": "redact"})),
        (
            "read_file",
            json!({"path": "src/redact.rs", "start": 1, "end": 120}),
        ),
        ("list_dir", json!({"path": "src/model"})),
        (
            "edit_file",
            json!({"path": "src/model/retry.rs", "search": "/// How to retry.\n", "replace": "/// How to retry (edited).\n"}),
        ),
        ("run_tests", json!({"tests": ["src/model/retry.rs"]})),
    ];
    for i in 0..29 {
        let (n, a) = &cycle[i % cycle.len()];
        let mut a = a.clone();
        // Each edit changes what the previous one wrote.
        if *n == "edit_file" {
            let k = i / cycle.len();
            let before = if k == 0 {
                "/// How to retry.\n".to_string()
            } else {
                format!("/// How to retry (edit {}).\n", k - 1)
            };
            a = json!({"path": "src/model/retry.rs", "search": before, "replace": format!("/// How to retry (edit {k}).\n")});
        }
        steps.push((n.to_string(), a));
    }
    steps.push(("submit".into(), json!({"explanation": "done"})));
    let model = Arc::new(Scripted {
        steps,
        seen: Mutex::new(Vec::new()),
    });
    let session = Session::new(
        ResolvedModel {
            name: "scripted".into(),
            model: model.clone(),
            price: Price {
                input_per_mtok: 3.0,
                output_per_mtok: 15.0,
                cache_write_per_mtok: None,
                cache_read_per_mtok: None,
            },
        },
        RetryPolicy::with_max_wait(0),
        Budget::new(100.0, 100.0, None),
        Redactor::default(),
    );
    let issue = Issue {
        repo: "acme/autotriage".into(),
        number: 1,
        title: "A token in a retry message is not redacted".into(),
        body:
            "When a request is retried, the log line shows the bearer token. Expected `[REDACTED]`."
                .into(),
        ..Default::default()
    };
    // The repository map from the files the index ranks for the issue's words.
    let terms: Vec<(String, f32)> = autotriage::locate::tokens::token_list(&issue.title)
        .into_iter()
        .map(|w| (w, 1.0))
        .collect();
    let ranked: Vec<String> = code_index
        .search(autotriage::locate::index::SearchField::Body, &terms, 15, 1)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let store = FsRunStore::new(dir.path().join("runs"), Redactor::default());
    let run = store.begin("acme/autotriage", 1, "fix").unwrap();
    let read_base = |p: &str| autotriage::locate::files::read_at(&repo, base, p);
    let guard = autotriage::repair::PathGuard::new(&[".github/**".to_string()]).unwrap();
    let mut ws = Workspace {
        read_base: &read_base,
        base_paths: &base_paths,
        guard: &guard,
        index: Some(&code_index),
        changed: BTreeMap::new(),
        reports: Vec::new(),
        frozen: Vec::new(),
    };
    let tests_time = Mutex::new(Duration::ZERO);
    let run_tests = |_turn: usize, _c: &BTreeMap<String, Option<String>>, _ids: &[String]| {
        // The test command's own time is measured by `sandbox_overhead`; here it is
        // a fixed answer, so the figure below is the loop's own cost.
        let t = Instant::now();
        let out = ("exit code 0; 1 passed, 0 failed\n".to_string(), 0);
        *tests_time.lock().unwrap() += t.elapsed();
        out
    };
    let turn_times: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    let record = |e: &Entry| {
        if matches!(e, Entry::Response { .. }) {
            turn_times.lock().unwrap().push(Instant::now());
        }
        run.append_line("agent.jsonl", serde_json::to_value(e)?)?;
        Ok(())
    };
    let agent = Agent {
        session: &session,
        issue: &issue,
        repo_map: autotriage::agent::repo_map(&ranked, &read_base),
        max_tokens: 4096,
        max_turns: 30,
        run_tests: &run_tests,
        recorded: Vec::new(),
        record: &record,
        stop: &|| false,
    };
    let started = Instant::now();
    let mut spent = 0.0;
    let result = agent.run(&mut ws, &mut spent).unwrap();
    let total = started.elapsed();
    let seen = model.seen.lock().unwrap().clone();
    let input: u64 = seen.iter().map(|(i, _)| i).sum();
    let prefix: u64 = seen.iter().map(|(_, p)| p).sum();
    let output: u64 = result.usage.iter().map(|u| u.output_tokens).sum();
    let times = turn_times.lock().unwrap().clone();
    let mut gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let pct = |p: f64| gaps[((gaps.len() - 1) as f64 * p).round() as usize];
    println!(
        "agent loop: {files} files indexed, {} turns, stop {:?}",
        result.turns, result.stop
    );
    println!(
        "requests {} | input tokens {input} | output tokens {output} | cacheable prefix {:.1}% of input ({prefix} tokens)",
        seen.len(),
        prefix as f64 * 100.0 / input as f64
    );
    println!(
        "time per turn outside the model and the test command: median {:.2} ms, p90 {:.2} ms, max {:.2} ms; whole loop {:.1} ms",
        pct(0.5),
        pct(0.9),
        gaps.last().copied().unwrap_or(0.0),
        total.as_secs_f64() * 1e3
    );
    // At Anthropic's published prices (cache write 1.25×, read 0.1× input), the input
    // cost with the prefix cached after the first turn, relative to uncached.
    let first_prefix = seen.first().map_or(0, |(_, p)| *p) as f64;
    let cached =
        (input as f64 - prefix as f64) + first_prefix * 1.25 + (prefix as f64 - first_prefix) * 0.1;
    // With a second breakpoint on the newest message, each turn reads the previous
    // request from the cache and writes only what is new.
    let mut rolling = 0.0;
    let mut previous = 0.0;
    for (i, _) in seen.iter() {
        let now = *i as f64;
        rolling += previous * 0.1 + (now - previous).max(0.0) * 1.25;
        previous = now;
    }
    println!(
        "input cost, Anthropic prices: fixed prefix cached {:.1}% of uncached; with the rolling breakpoint {:.1}%",
        cached * 100.0 / input as f64,
        rolling * 100.0 / input as f64
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
