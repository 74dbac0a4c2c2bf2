//! Webhook benchmark: `autotriage serve` (2 workers triaging against a stub GitHub) on
//! loopback, fed signed `issues.opened` deliveries at a fixed rate, each with its own
//! `X-GitHub-Delivery`. Prints the acknowledgement latency p50/p99 at 200 and 500
//! deliveries/s, the deliveries lost and duplicated when the server is killed with -9
//! in the middle of the load and restarted, and the resident memory after 100,000
//! deliveries. `cargo bench --bench webhook_ack` (set `WEBHOOK_BENCH_SECONDS` to shorten
//! the 30 s runs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "bench-secret";

/// Latencies (ms) of the acknowledged, their delivery ids, and the count refused.
type LoadResult = (Vec<f64>, Vec<String>, usize);

fn start(dir: &Path, api: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_autotriage"))
        .current_dir(dir)
        .env("GITHUB_TOKEN", "ghp_bench000000000000000000000000000000")
        .env("GITHUB_API_URL", api)
        .env("AUTOTRIAGE_WEBHOOK_SECRET", SECRET)
        .env("HOME", dir.join("home"))
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["msg"] == "listening"
            {
                let _ = tx.send(v["addr"].as_str().unwrap_or("").to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    (child, addr)
}

fn delivery(n: usize, repo: &str) -> (String, String) {
    // Each event's body is its own, as GitHub's are (a repeated body is a replay).
    let body =
        json!({"action": "opened", "issue": {"number": n % 1000 + 1, "title": format!("t{n}")},
                      "repository": {"full_name": repo}, "sender": {"login": "someone"}})
        .to_string();
    let sig = autotriage::serve::signature::sign(SECRET.as_bytes(), body.as_bytes());
    (body, sig)
}

/// Send at `rate`/s for `seconds` from 16 client threads; latencies in ms of the 2xx
/// answers, and the ids acknowledged. Stops early when `stop_after` deliveries went out.
fn load(
    addr: &Arc<Mutex<String>>,
    rate: usize,
    seconds: f64,
    prefix: &str,
    repo: &str,
    next: &Arc<AtomicUsize>,
) -> LoadResult {
    let threads = 16;
    let total = (rate as f64 * seconds) as usize;
    let started = Instant::now();
    let out: Arc<Mutex<LoadResult>> = Arc::default();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (out, next, addr) = (out.clone(), next.clone(), addr.clone());
            s.spawn(move || {
                autotriage::tls::install();
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut k = t;
                while k < total {
                    // Open loop: request k goes out at k / rate seconds.
                    let due = Duration::from_secs_f64(k as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let id = format!("{prefix}-{n}");
                    let (body, sig) = delivery(n, repo);
                    let url = format!("http://{}/webhook", addr.lock().unwrap());
                    let sent = Instant::now();
                    let r = client
                        .post(url)
                        .header("X-GitHub-Event", "issues")
                        .header("X-GitHub-Delivery", &id)
                        .header("X-Hub-Signature-256", sig)
                        .header("Content-Type", "application/json")
                        .body(body)
                        .send();
                    let ms = sent.elapsed().as_secs_f64() * 1e3;
                    let mut o = out.lock().unwrap();
                    match r {
                        Ok(resp) if resp.status().is_success() => {
                            o.0.push(ms);
                            o.1.push(id);
                        }
                        _ => o.2 += 1,
                    }
                    k += threads;
                }
            });
        }
    });
    Arc::try_unwrap(out).unwrap().into_inner().unwrap()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let seconds: f64 = std::env::var("WEBHOOK_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // A stub GitHub: every issue exists, has no comments, events or labels; writes succeed.
    let gh = rt.block_on(MockServer::start());
    rt.block_on(async {
        Mock::given(method("GET"))
            .and(path_regex(r"^/user$"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"login": "bot"})))
            .mount(&gh)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(r"^/repos/o/r/issues/\d+$"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "number": 1, "title": "Crash when saving", "body": "It panics on save.",
                "state": "open", "labels": [], "user": {"login": "someone"},
                "author_association": "NONE", "locked": false, "comments": 0,
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"})))
            .mount(&gh)
            .await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
            .mount(&gh)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 1})))
            .mount(&gh)
            .await;
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("autotriage.yaml"),
        "serve:\n  repos: [o/r]\n  coalesce_seconds: 0\n  apply: labels\n",
    )
    .unwrap();
    let (mut child, addr) = start(dir.path(), &gh.uri());
    let addr = Arc::new(Mutex::new(addr));
    let next = Arc::new(AtomicUsize::new(0));
    for rate in [200, 500] {
        let (mut lat, acked, failed) = load(&addr, rate, seconds, "lat", "o/r", &next);
        println!(
            "{rate} deliveries/s for {seconds} s: {} acknowledged, {failed} failed; ack latency p50 {:.2} ms, p99 {:.2} ms (target p99 < 20 ms)",
            acked.len(),
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99)
        );
    }

    // kill -9 in the middle of the load, restart on another port, go on.
    let killer = {
        let pid = child.id();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(seconds / 2.0));
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        })
    };
    let restarter = {
        let (addr, dir, api) = (addr.clone(), dir.path().to_path_buf(), gh.uri());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(seconds / 2.0 + 0.2));
            let (c, a) = start(&dir, &api);
            *addr.lock().unwrap() = a;
            c
        })
    };
    let (_, acked, failed) = load(&addr, 200, seconds, "kill", "o/r", &next);
    killer.join().unwrap();
    let _ = child.wait();
    child = restarter.join().unwrap();
    let queue =
        autotriage::serve::queue::Queue::open(&dir.path().join(".autotriage/queue.sqlite3"))
            .unwrap();
    let lost = acked
        .iter()
        .filter(|id| !queue.has_delivery(id).unwrap_or(false))
        .count();
    // A delivery is one job at most: jobs per delivery id over the killed run.
    let conn = rusqlite::Connection::open(dir.path().join(".autotriage/queue.sqlite3")).unwrap();
    let duplicated: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM (SELECT delivery FROM job_deliveries WHERE delivery LIKE 'kill-%' GROUP BY delivery HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    println!(
        "kill -9 at {:.0} s of {seconds} s at 200/s, restarted: {} acknowledged, {failed} refused while down, lost {lost}, duplicated {duplicated} (targets 0 and 0)",
        seconds / 2.0,
        acked.len()
    );

    // Resident memory after 100,000 deliveries (of a repository not served: each is
    // verified, routed and answered; none becomes a job).
    let started = Instant::now();
    let (_, acked, _) = load(&addr, 2000, 50.0, "rss", "x/y", &next);
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or("VmRSS: ?")
        .to_string();
    println!(
        "after {} more deliveries ({:.0} s): {rss}",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = child.kill();
    let _ = child.wait();
}
