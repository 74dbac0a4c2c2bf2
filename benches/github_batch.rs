//! GitHub batch benchmark: `autotriage triage o/r --from github` over 500 issues on a
//! fake GitHub (5 pages of 100, joined by `Link` headers). Prints wall time and the
//! API calls made. `cargo bench --bench github_batch`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn main() {
    let bin = Path::new(env!("CARGO_BIN_EXE_autotriage"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(MockServer::start());
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/github/issue.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for page in 1..=5u64 {
        let issues: Vec<serde_json::Value> = (1..=100u64)
            .map(|i| {
                let n = (page - 1) * 100 + i;
                let mut v = record.clone();
                v["number"] = json!(n);
                v["title"] = json!(format!("Issue {n}: the build fails on page {n}"));
                v["body"] = json!(format!(
                    "Running `widgets build` fails with an error on page {n}. Expected: it builds."
                ));
                v
            })
            .collect();
        let mut resp = ResponseTemplate::new(200).set_body_json(issues);
        if page < 5 {
            resp = resp.insert_header(
                "link",
                format!(
                    "<{}/repos/o/r/issues?state=open&per_page=100&page={}>; rel=\"next\"",
                    server.uri(),
                    page + 1
                )
                .as_str(),
            );
        }
        let mut m = Mock::given(method("GET")).and(path("/repos/o/r/issues"));
        if page > 1 {
            m = m.and(query_param("page", page.to_string()));
        }
        rt.block_on(
            m.respond_with(resp)
                .with_priority(if page == 1 { 2 } else { 1 })
                .mount(&server),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = Command::new(bin)
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("GITHUB_TOKEN", "ghp_benchtoken000000000000000000000000001")
        .env("GITHUB_API_URL", server.uri())
        .args(["triage", "o/r", "--from", "github", "--json"])
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let triaged = String::from_utf8_lossy(&out.stdout).lines().count();
    let calls = rt.block_on(server.received_requests()).unwrap().len();
    println!(
        "batch triage of {triaged} GitHub issues on a fake server: {:.2} s wall, {calls} API calls   [cargo bench --bench github_batch]",
        took.as_secs_f64()
    );
}
