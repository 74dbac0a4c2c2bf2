//! The Lambda functions end to end: the real binary run through the real Lambda runtime
//! client against a Runtime API served on loopback here, API Gateway v2 and SQS events,
//! an SQS FIFO queue and CodeBuild on moto, and the fake GitHub.

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::suite::common::*;
use crate::suite::fake_github::{BOT, FakeGithub, fake, import_history};

const SECRET: &str = "lambda-webhook-secret";

/// A Runtime API handing out `events` in order (then none), and the function running
/// against it until it has answered them all. Returns the answers, by request id.
fn invoke(t: &TestContext, env: &[(&str, String)], function: &str, events: &[Value]) -> Vec<Value> {
    invoke_logged(t, env, function, events).0
}

/// [`invoke`], with the function's log lines.
fn invoke_logged(
    t: &TestContext,
    env: &[(&str, String)],
    function: &str,
    events: &[Value],
) -> (Vec<Value>, Vec<Value>) {
    let api = HttpMock::start();
    for (i, e) in events.iter().enumerate() {
        api.mount(
            Mock::given(method("GET"))
                .and(path("/2018-06-01/runtime/invocation/next"))
                .respond_with(
                    ResponseTemplate::new(200)
                        .insert_header("lambda-runtime-aws-request-id", format!("req-{i}").as_str())
                        .insert_header("lambda-runtime-deadline-ms", "4102444800000")
                        .insert_header(
                            "lambda-runtime-invoked-function-arn",
                            "arn:aws:lambda:us-east-1:123456789012:function:autotriage",
                        )
                        .set_body_json(e.clone()),
                )
                .with_priority(i as u8 + 1)
                .up_to_n_times(1),
        );
    }
    // Then the next event never comes (the function waits, as in Lambda).
    api.mount(
        Mock::given(method("GET"))
            .and(path("/2018-06-01/runtime/invocation/next"))
            .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(600)))
            .with_priority(200),
    );
    api.mount(
        Mock::given(method("POST"))
            .and(path_regex(
                r"^/2018-06-01/runtime/invocation/.+/(response|error)$",
            ))
            .respond_with(ResponseTemplate::new(202)),
    );
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("autotriage"));
    cmd.current_dir(t.path())
        .env_clear()
        .env("HOME", t.home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", api.server.address().to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "autotriage")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .args(["lambda", function])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let started = std::time::Instant::now();
    let answers = loop {
        let posted: Vec<(String, Value)> = api
            .requests()
            .iter()
            .filter(|r| r.method.as_str() == "POST")
            .map(|r| {
                (
                    r.url.path().to_string(),
                    serde_json::from_slice(&r.body).unwrap_or(Value::Null),
                )
            })
            .collect();
        if posted.len() >= events.len() {
            let mut by_id: Vec<(String, Value)> = posted;
            by_id.sort_by(|a, b| a.0.cmp(&b.0));
            break by_id
                .into_iter()
                .map(|(p, v)| {
                    assert!(p.ends_with("/response"), "{p}: {v}");
                    v
                })
                .collect::<Vec<Value>>();
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("lambda {function} exited ({status}): {err}");
        }
        assert!(
            started.elapsed().as_secs() < 120,
            "no answer from lambda {function}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    let logs = err
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (answers, logs)
}

/// An API Gateway HTTP API (v2) event of a signed delivery.
fn api_event(event: &str, delivery: &str, body: &Value, secret: &str) -> Value {
    let text = body.to_string();
    json!({
        "version": "2.0", "routeKey": "POST /webhook", "rawPath": "/webhook", "rawQueryString": "",
        "headers": {
            "content-type": "application/json",
            "x-github-event": event,
            "x-github-delivery": delivery,
            "x-hub-signature-256": autotriage::serve::signature::sign(secret.as_bytes(), text.as_bytes()),
        },
        "requestContext": {"http": {"method": "POST", "path": "/webhook"}, "stage": "$default"},
        "body": text, "isBase64Encoded": false
    })
}

pub(super) fn sqs_client(url: &str) -> (tokio::runtime::Runtime, aws_sdk_sqs::Client) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let conf = rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(autotriage::tls::aws_http_client())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(url)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load(),
    );
    (rt, aws_sdk_sqs::Client::new(&conf))
}

fn world(gh: &FakeGithub) {
    super::serve::crash_issue(gh);
}

#[test]
fn a_delivery_goes_webhook_to_sqs_fifo_to_worker_and_only_a_bad_message_returns() {
    let Some(moto) = Emulator::moto() else { return };
    let gh = fake();
    world(&gh);
    let (rt, sqs) = sqs_client(&moto.url);
    let url = rt
        .block_on(
            sqs.create_queue()
                .queue_name("autotriage-jobs.fifo")
                .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
                .send(),
        )
        .unwrap()
        .queue_url
        .unwrap();
    let t = TestContext::new();
    import_history(&t);
    t.write(
        "autotriage.yaml",
        &format!(
            "serve:\n  repos: [o/r]\nqueue:\n  backend: sqs\n  url: {url}\n  endpoint_url: {}\ngithub:\n  bot_login: autotriage-bot\n",
            moto.url
        ),
    );
    let mut env = gh.env(BOT);
    env.push(("AUTOTRIAGE_WEBHOOK_SECRET", SECRET.to_string()));
    let opened = json!({"action": "opened", "issue": {"number": 7, "title": "t"},
                        "repository": {"full_name": "o/r"}, "sender": {"login": "reporter"}});
    let answers = invoke(
        &t,
        &env,
        "webhook",
        &[
            api_event("issues", "d-1", &opened, SECRET),
            // GitHub's redelivery keeps the id: the FIFO queue deduplicates it.
            api_event("issues", "d-1", &opened, SECRET),
            // The same signed body replayed under a new delivery id: one message still.
            api_event("issues", "d-1-replayed", &opened, SECRET),
            api_event("issues", "d-2", &opened, "another-secret"),
            api_event(
                "ping",
                "d-3",
                &json!({"zen": "hi", "repository": {"full_name": "o/r"}}),
                SECRET,
            ),
        ],
    );
    let status: Vec<u64> = answers
        .iter()
        .map(|a| a["statusCode"].as_u64().unwrap())
        .collect();
    assert_eq!(status, vec![202, 202, 202, 401, 200], "{answers:#?}");
    assert_eq!(answers[0]["body"], "queued 1 job(s)\n");

    // One message: the delivery twice is one job, grouped by its issue.
    let got = rt
        .block_on(
            sqs.receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
                .send(),
        )
        .unwrap();
    let messages = got.messages.unwrap_or_default();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let m = &messages[0];
    let attrs = m.attributes.clone().unwrap_or_default();
    assert_eq!(
        attrs
            .get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
            .map(String::as_str),
        Some("o/r#7")
    );
    assert!(
        gh.writes("o/r").is_empty(),
        "the webhook writes nothing to GitHub"
    );

    // The worker gets the batch as Lambda's SQS trigger hands it, plus a broken record.
    let sequence: u128 = attrs
        .get(&aws_sdk_sqs::types::MessageSystemAttributeName::SequenceNumber)
        .unwrap()
        .parse()
        .unwrap();
    let record = |id: &str, body: &str, sequence: u128| {
        json!({"messageId": id, "receiptHandle": "rh", "body": body,
               "attributes": {"ApproximateReceiveCount": "1", "MessageGroupId": "o/r#7",
                              "SequenceNumber": sequence.to_string()},
               "eventSource": "aws:sqs", "awsRegion": "us-east-1"})
    };
    let batch = json!({"Records": [
        record(m.message_id().unwrap(), m.body().unwrap(), sequence),
        record("broken-1", "not a job", sequence + 1),
    ]});
    let (answers, logs) = invoke_logged(&t, &env, "worker", &[batch]);
    assert_eq!(
        answers[0],
        json!({"batchItemFailures": [{"itemIdentifier": "broken-1"}]})
    );
    // The job's log line carries its metrics in CloudWatch's embedded metric format.
    let done = logs
        .iter()
        .find(|l| l["msg"] == "job done")
        .unwrap_or_else(|| panic!("{logs:#?}"));
    assert_eq!(
        done["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
        "SpendUSD"
    );
    assert_eq!(done["SpendUSD"], 0.0);
    assert_eq!(done["Function"], "worker");
    {
        let w = gh.world();
        let issue = w.issue("o/r", 7);
        assert_eq!(issue.labels, vec!["bug"]);
        assert_eq!(issue.comments.len(), 1);
        assert_eq!(issue.comments[0].author, "autotriage-bot");
    }
    // An older triage of the same issue arriving late (a lower sequence number, whatever
    // its clock says) is skipped: a newer one was done. So is the done message again.
    let writes = gh.writes("o/r").len();
    let mut older: Value = serde_json::from_str(m.body().unwrap()).unwrap();
    older["queued_at"] = json!(older["queued_at"].as_i64().unwrap() + 3600);
    older["delivery"] = json!("d-0");
    let late = json!({"Records": [
        record("late-1", &older.to_string(), sequence - 1),
        record(m.message_id().unwrap(), m.body().unwrap(), sequence),
    ]});
    let (answers, logs) = invoke_logged(&t, &env, "worker", &[late]);
    assert_eq!(answers[0], json!({"batchItemFailures": []}));
    let why: Vec<&str> = logs
        .iter()
        .filter(|l| l["msg"] == "skipped")
        .map(|l| l["why"].as_str().unwrap())
        .collect();
    assert_eq!(
        why,
        [
            "a newer triage of this issue was already done",
            "this message was already done"
        ],
        "{logs:#?}"
    );
    assert_eq!(gh.writes("o/r").len(), writes);
}

#[test]
fn a_fix_job_starts_a_codebuild_build_with_no_secret_in_the_request() {
    let Some(moto) = Emulator::moto() else { return };
    let gh = fake();
    world(&gh);
    gh.world().label_issue("o/r", 7, "autotriage:fix", "maint");
    let (rt, _) = sqs_client(&moto.url);
    let conf = rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(autotriage::tls::aws_http_client())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&moto.url)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load(),
    );
    let cb = aws_sdk_codebuild::Client::new(&conf);
    use aws_sdk_codebuild::types::*;
    rt.block_on(
        cb.create_project()
            .name("autotriage-fix")
            .source(
                ProjectSource::builder()
                    .r#type(SourceType::S3)
                    .location("autotriage-builds/placeholder.zip")
                    .build()
                    .unwrap(),
            )
            .artifacts(
                ProjectArtifacts::builder()
                    .r#type(ArtifactsType::NoArtifacts)
                    .build()
                    .unwrap(),
            )
            .environment(
                ProjectEnvironment::builder()
                    .r#type(EnvironmentType::LinuxContainer)
                    .image("aws/codebuild/standard:7.0")
                    .compute_type(ComputeType::BuildGeneral1Small)
                    .build()
                    .unwrap(),
            )
            .service_role("arn:aws:iam::123456789012:role/autotriage-fix")
            .send(),
    )
    .unwrap();
    let t = TestContext::new();
    t.write(
        "autotriage.yaml",
        &format!(
            "serve:\n  repos: [o/r]\nqueue:\n  backend: sqs\n  url: http://unused\ngithub:\n  bot_login: autotriage-bot\nlambda:\n  fix_project: autotriage-fix\ntest:\n  endpoint_url: {}\n  region: us-east-1\n",
            moto.url
        ),
    );
    let message = json!({"spec": {"kind": "fix", "repo": "o/r", "number": 7, "granted_by": null},
                         "delivery": "d-9", "queued_at": 0});
    let batch = json!({"Records": [{"messageId": "m-1", "body": message.to_string(),
                                    "attributes": {"ApproximateReceiveCount": "1"}}]});
    let answers = invoke(&t, &gh.env(BOT), "worker", std::slice::from_ref(&batch));
    assert_eq!(answers[0], json!({"batchItemFailures": []}));
    let ids = rt
        .block_on(
            cb.list_builds_for_project()
                .project_name("autotriage-fix")
                .send(),
        )
        .unwrap()
        .ids
        .unwrap_or_default();
    assert_eq!(ids.len(), 1);
    // moto keeps no overrides: what the request carried, from a scripted CodeBuild.
    let scripted = HttpMock::start();
    scripted.mount(
        Mock::given(method("POST"))
            .and(wiremock::matchers::header(
                "x-amz-target",
                "CodeBuild_20161006.StartBuild",
            ))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("content-type", "application/x-amz-json-1.1")
                    .set_body_json(json!({"build": {"id": "autotriage-fix:b-1"}})),
            ),
    );
    t.write(
        "autotriage.yaml",
        &format!(
            "serve:\n  repos: [o/r]\nqueue:\n  backend: sqs\n  url: http://unused\ngithub:\n  bot_login: autotriage-bot\nlambda:\n  fix_project: autotriage-fix\ntest:\n  endpoint_url: {}\n  region: us-east-1\n",
            scripted.server.uri()
        ),
    );
    let answers = invoke(&t, &gh.env(BOT), "worker", &[batch]);
    assert_eq!(answers[0], json!({"batchItemFailures": []}));
    let bodies = scripted.bodies();
    assert_eq!(bodies.len(), 1);
    let req = &bodies[0];
    assert_eq!(req["projectName"], "autotriage-fix");
    assert!(
        req["buildspecOverride"]
            .as_str()
            .unwrap()
            .contains("autotriage fix \"$AUTOTRIAGE_ISSUE\" --yes $AUTOTRIAGE_FIX_FLAGS")
    );
    let env: Vec<(String, String, String)> = req["environmentVariablesOverride"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["value"].as_str().unwrap().to_string(),
                v["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        env,
        vec![
            (
                "AUTOTRIAGE_ISSUE".into(),
                "o/r#7".into(),
                "PLAINTEXT".into()
            ),
            ("AUTOTRIAGE_FIX_FLAGS".into(), "".into(), "PLAINTEXT".into()),
        ]
    );
    // Nothing secret travels in the request: not the token, nor anything like one.
    let redactor = autotriage::redact::Redactor::default();
    let text = req.to_string();
    assert!(redactor.findings(&text).is_empty(), "{text}");
    assert!(!text.contains(BOT));

    // A writer's `/autotriage fix`: the grant's limits go with the build, to be checked
    // again where the fix runs.
    let body = gh.world().issue("o/r", 7).body.clone();
    gh.world().set_permission("o/r", "maint", "write");
    let said = gh.world().add_comment("o/r", 7, "maint", "/autotriage fix");
    let digest = autotriage::serve::route::body_digest(&body);
    let command = json!({"spec": {"kind": "command", "repo": "o/r", "number": 7, "command": "fix",
                                  "commenter": "maint", "comment_id": said,
                                  "at": "2026-11-30T10:00:00Z", "body_sha256": digest},
                         "delivery": "d-10", "queued_at": 1});
    let batch = json!({"Records": [{"messageId": "m-2", "body": command.to_string(),
                                    "attributes": {"ApproximateReceiveCount": "1"}}]});
    let answers = invoke(&t, &gh.env(BOT), "worker", std::slice::from_ref(&batch));
    assert_eq!(answers[0], json!({"batchItemFailures": []}));
    let bodies = scripted.bodies();
    assert_eq!(bodies.len(), 2);
    let flags = bodies[1]["environmentVariablesOverride"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "AUTOTRIAGE_FIX_FLAGS")
        .unwrap()["value"]
        .clone();
    assert_eq!(
        flags,
        json!(format!(
            "--force --granted-as-of 2026-11-30T10:00:00Z --granted-body-sha256 {digest}"
        ))
    );
    // No model was asked and nothing written: the build does the fix.
    assert!(gh.world().repo("o/r").pulls.is_empty());
}

#[test]
fn queue_commands_list_retry_and_drop_the_dead_letters_of_the_sqs_backend() {
    let Some(moto) = Emulator::moto() else { return };
    let (rt, sqs) = sqs_client(&moto.url);
    let create = |name: &str| {
        rt.block_on(
            sqs.create_queue()
                .queue_name(name)
                .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
                .send(),
        )
        .unwrap()
        .queue_url
        .unwrap()
    };
    let (url, dead) = (create("jobs.fifo"), create("jobs-dead.fifo"));
    let message = |n: u64| {
        json!({"spec": {"kind": "triage", "repo": "o/r", "number": n}, "delivery": format!("d-{n}"),
               "queued_at": 0})
        .to_string()
    };
    for n in [1, 2] {
        rt.block_on(
            sqs.send_message()
                .queue_url(&dead)
                .message_body(message(n))
                .message_group_id(format!("o/r#{n}"))
                .message_deduplication_id(format!("d-{n}"))
                .send(),
        )
        .unwrap();
    }
    let t = TestContext::new();
    t.write(
        "autotriage.yaml",
        &format!(
            "queue:\n  backend: sqs\n  url: {url}\n  dead_letter_url: {dead}\n  endpoint_url: {}\n  region: us-east-1\n",
            moto.url
        ),
    );
    let run = |args: &[&str]| {
        let mut cmd = t.cmd();
        cmd.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
        cmd.args(args).output().unwrap()
    };
    let o = run(&["queue", "list", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    let letters = v["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{v:#}");
    let id_of = |n: u64| {
        letters
            .iter()
            .find(|d| d["key"] == format!("o/r#{n}"))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (one, two) = (id_of(1), id_of(2));
    let o = run(&["queue", "show", &one, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["message"]["delivery"], "d-1");
    // Retry: back on the queue, gone from the dead letters.
    let o = run(&["queue", "retry", &one]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).starts_with("queued again: "), "{}", stdout(&o));
    let back = rt
        .block_on(
            sqs.receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .send(),
        )
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(back.len(), 1);
    assert!(back[0].body().unwrap().contains("\"d-1\""));
    // Drop: gone.
    let o = run(&["queue", "drop", &two]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(&["queue", "list", "--json"]);
    assert_eq!(json(&o)["dead_letters"], json!([]));
    // An id that is not there: said, exit 2.
    let o = run(&["queue", "drop", &two]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("no dead letter"), "{}", stderr(&o));
}

#[test]
fn the_lambda_functions_outside_lambda_say_so_and_need_the_sqs_queue() {
    let t = TestContext::new();
    let o = t.run(&["lambda", "webhook"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("runs inside AWS Lambda, and $AWS_LAMBDA_RUNTIME_API is not set"),
        "{}",
        stderr(&o)
    );
    // Inside Lambda without the queue configured: said before any event is taken.
    let o = t
        .cmd()
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .env("AWS_LAMBDA_FUNCTION_NAME", "f")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AUTOTRIAGE_WEBHOOK_SECRET", "s")
        .env("AUTOTRIAGE_SET", "serve.repos=[o/r]")
        .args(["lambda", "webhook"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("need queue.backend: sqs and queue.url"),
        "{}",
        stderr(&o)
    );
}
