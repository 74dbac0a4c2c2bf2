//! The webhook function's handler in-process: an API Gateway v2 event with a signed
//! delivery → signature check → routing → SendMessage to an SQS FIFO queue on
//! moto_server (started here). Prints the time per delivery.
//! `cargo bench --bench lambda_webhook` (needs `moto_server` on PATH).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use autotriage::serve::route::RouteSettings;
use autotriage::serve::sqs::{SqsQueue, SqsSettings};
use serde_json::{Value, json};

fn main() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut moto = std::process::Command::new("moto_server")
        .args(["-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto_server on PATH (pip install 'moto[server]')");
    let url = format!("http://127.0.0.1:{port}");
    // SAFETY: set before any thread reads them.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let queue_url = loop {
        let conf = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .http_client(autotriage::tls::aws_http_client())
                .region(aws_config::Region::new("us-east-1"))
                .endpoint_url(&url)
                .load(),
        );
        let c = aws_sdk_sqs::Client::new(&conf);
        match rt.block_on(
            c.create_queue()
                .queue_name("bench.fifo")
                .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
                .send(),
        ) {
            Ok(o) => break o.queue_url.unwrap(),
            Err(_) if started.elapsed().as_secs() < 30 => {
                std::thread::sleep(std::time::Duration::from_millis(200))
            }
            Err(e) => panic!("moto: {e}"),
        }
    };
    let queue = rt.block_on(SqsQueue::connect(&SqsSettings {
        url: queue_url,
        region: Some("us-east-1".into()),
        endpoint_url: Some(url),
    }));
    let settings = RouteSettings::new(&["acme/*".to_string()], "autotriage:fix", None).unwrap();
    let secret = b"bench-secret";
    let log: Arc<dyn Fn(Value) + Send + Sync> = Arc::new(|_| {});
    let n = 300;
    let mut times = Vec::new();
    for i in 0..n {
        let body = json!({"action": "opened", "issue": {"number": i % 50 + 1, "title": "t"},
                          "repository": {"full_name": "acme/app"}, "sender": {"login": "r"}})
        .to_string();
        let ev = json!({"headers": {
                "content-type": "application/json", "x-github-event": "issues",
                "x-github-delivery": format!("d-{i}"),
                "x-hub-signature-256": autotriage::serve::signature::sign(secret, body.as_bytes())},
            "body": body, "isBase64Encoded": false});
        let t = Instant::now();
        let out = rt.block_on(autotriage::serve::apigw::handle(
            &ev, secret, &settings, &queue, &log,
        ));
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(out["statusCode"], 202, "{out}");
    }
    moto.kill().ok();
    moto.wait().ok();
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "webhook handler, {n} deliveries (verify + route + SendMessage to moto): median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        times[times.len() - 1]
    );
}
