//! The team backends against a real AWS emulator (`moto_server`, started here on a free
//! port): memory on DynamoDB.

use serde_json::{Value, json};
use wiremock::{Mock, ResponseTemplate};

use autotriage::memory::Memory;
use autotriage::memory::dynamodb::{DynamoMemory, DynamoSettings};

use crate::suite::common::*;

const AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
];

fn aws_cmd(t: &TestContext, args: &[&str]) -> std::process::Output {
    let mut cmd = t.cmd();
    for (k, v) in AWS_ENV {
        cmd.env(k, v);
    }
    cmd.args(args).output().unwrap()
}

fn dynamo_config(t: &TestContext, name: &str, url: &str, table: &str) -> String {
    t.write(
        name,
        &format!("memory:\n  backend: dynamodb\n  table: {table}\n  endpoint_url: {url}\n"),
    );
    name.to_string()
}

fn copy_examples(t: &TestContext) {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/issues");
    std::fs::create_dir_all(t.path().join("issues")).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        std::fs::copy(e.path(), t.path().join("issues").join(e.file_name())).unwrap();
    }
}

/// The triage JSON lines without what differs between two runs (run ids, times).
fn stable(out: &str) -> Vec<Value> {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for k in [
                    "run_id",
                    "run",
                    "created_at",
                    "updated_at",
                    "seconds",
                    "search_seconds",
                ] {
                    m.remove(k);
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    out.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            strip(&mut v);
            v
        })
        .collect()
}

#[test]
fn memory_on_dynamodb_triages_as_sqlite_does_and_moves_between_backends_losslessly() {
    let Some(moto) = Emulator::moto() else { return };
    let t = TestContext::new();
    copy_examples(&t);

    // SQLite: the reference.
    let o = aws_cmd(&t, &["memory", "import", "issues"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = aws_cmd(&t, &["triage", "acme/widgets", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let on_sqlite = stable(&stdout(&o));
    assert_eq!(on_sqlite.len(), 6);
    let o = aws_cmd(&t, &["memory", "export", "--jsonl", "-o", "sqlite.jsonl"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // DynamoDB: the table is created only when asked.
    let cfg = dynamo_config(&t, "team.yaml", &moto.url, "autotriage-team");
    let o = aws_cmd(&t, &["--config", &cfg, "memory", "list"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the table autotriage-team does not exist")
            && stderr(&o).contains("autotriage memory init"),
        "{}",
        stderr(&o)
    );
    let o = aws_cmd(&t, &["--config", &cfg, "memory", "init"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "created dynamodb:autotriage-team");
    let o = aws_cmd(&t, &["--config", &cfg, "memory", "init"]);
    assert!(stdout(&o).contains("exists already"), "{}", stdout(&o));
    let o = aws_cmd(&t, &["--config", &cfg, "memory", "import", "issues"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("28 new"), "{}", stdout(&o));
    let o = aws_cmd(&t, &["--config", &cfg, "triage", "acme/widgets", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stable(&stdout(&o)), on_sqlite);
    let o = aws_cmd(&t, &["--config", &cfg, "memory", "stats", "--json"]);
    let stats = json(&o);
    assert_eq!(stats["stats"]["issues"], 28);
    assert_eq!(stats["stats"]["triage_results"], 6);
    let o = aws_cmd(
        &t,
        &[
            "--config",
            &cfg,
            "memory",
            "search",
            "crash empty title",
            "--json",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        json(&o)["results"][0]["ref"],
        "acme/widgets#23",
        "{}",
        stdout(&o)
    );

    // SQLite → DynamoDB → SQLite loses nothing: the exports are identical.
    let cfg2 = dynamo_config(&t, "fresh.yaml", &moto.url, "autotriage-fresh");
    assert_eq!(
        code(&aws_cmd(&t, &["--config", &cfg2, "memory", "init"])),
        0
    );
    let o = aws_cmd(&t, &["--config", &cfg2, "memory", "import", "sqlite.jsonl"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = aws_cmd(
        &t,
        &[
            "--config",
            &cfg2,
            "memory",
            "export",
            "--jsonl",
            "-o",
            "dynamo.jsonl",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let original = std::fs::read_to_string(t.path().join("sqlite.jsonl")).unwrap();
    let through = std::fs::read_to_string(t.path().join("dynamo.jsonl")).unwrap();
    assert!(
        original.lines().any(|l| l.contains("\"type\":\"kv\"")),
        "the trained model is exported"
    );
    assert_eq!(through, original);
    let o = aws_cmd(
        &t,
        &[
            "--memory",
            "back.sqlite3",
            "memory",
            "import",
            "dynamo.jsonl",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = aws_cmd(
        &t,
        &["--memory", "back.sqlite3", "memory", "export", "--jsonl"],
    );
    assert_eq!(stdout(&o), original);
}

#[test]
fn two_writers_of_one_issue_are_resolved_by_the_conditional_write() {
    let Some(moto) = Emulator::moto() else { return };
    for (k, v) in AWS_ENV {
        // SAFETY: every test sets these to the same values; nothing reads them racily
        // with a different expectation.
        unsafe { std::env::set_var(k, v) };
    }
    let settings = DynamoSettings {
        table: "autotriage-race".into(),
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.url.clone()),
    };
    let mut one = DynamoMemory::connect(&settings, Default::default()).unwrap();
    let mut two = DynamoMemory::connect(&settings, Default::default()).unwrap();
    assert!(one.init().unwrap());
    let issue = |title: &str| autotriage::issue::Issue {
        repo: "o/r".into(),
        number: 7,
        title: title.into(),
        ..Default::default()
    };
    one.upsert_issues(&[issue("first")], &|| false).unwrap();
    // Both workers read version 1, both write on top of it: only one write lands.
    assert_eq!(one.issue_version("o/r", 7).unwrap(), 1);
    assert_eq!(two.issue_version("o/r", 7).unwrap(), 1);
    let a = one.issue_item(&issue("from worker one"), "t1").unwrap();
    let b = two.issue_item(&issue("from worker two"), "t2").unwrap();
    assert!(one.put_versioned(a, 1).unwrap());
    assert!(
        !two.put_versioned(b, 1).unwrap(),
        "the stale write is refused"
    );
    assert_eq!(
        one.issue("o/r", 7).unwrap().unwrap().title,
        "from worker one"
    );
    // The loser's upsert reads again and writes on top of the winner's version.
    let counts = two
        .upsert_issues(&[issue("from worker two")], &|| false)
        .unwrap();
    assert_eq!(counts.updated, 1);
    assert_eq!(one.issue_version("o/r", 7).unwrap(), 3);
    assert_eq!(
        one.issue("o/r", 7).unwrap().unwrap().title,
        "from worker two"
    );
    // Learned state larger than one item is split and read back whole.
    let big = json!({"weights": "x".repeat(700_000)});
    one.put_kv("model", &big).unwrap();
    assert_eq!(two.get_kv("model").unwrap().unwrap(), big);
    one.put_kv("model", &json!({"weights": "small"})).unwrap();
    assert_eq!(
        two.get_kv("model").unwrap().unwrap(),
        json!({"weights": "small"})
    );
}

#[test]
fn a_table_written_by_a_newer_schema_is_refused() {
    let Some(moto) = Emulator::moto() else { return };
    let t = TestContext::new();
    let cfg = dynamo_config(&t, "team.yaml", &moto.url, "autotriage-newer");
    assert_eq!(code(&aws_cmd(&t, &["--config", &cfg, "memory", "init"])), 0);
    // A newer autotriage marks the table with its schema.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let conf = aws_sdk_dynamodb::config::Builder::new()
            .http_client(autotriage::tls::aws_http_client())
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .endpoint_url(&moto.url)
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
            .put_item()
            .table_name("autotriage-newer")
            .item(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S("META".into()),
            )
            .item(
                "sk",
                aws_sdk_dynamodb::types::AttributeValue::S("SCHEMA".into()),
            )
            .item(
                "version",
                aws_sdk_dynamodb::types::AttributeValue::N("99".into()),
            )
            .send()
            .await
            .unwrap();
    });
    let o = aws_cmd(&t, &["--config", &cfg, "memory", "stats"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("has schema version 99, newer than this autotriage understands"),
        "{}",
        stderr(&o)
    );
    t.write("issue.md", "---\nrepo: o/r\nnumber: 1\ntitle: x\n---\ny\n");
    let o = aws_cmd(&t, &["--config", &cfg, "memory", "import", "issue.md"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn throttling_from_dynamodb_is_retried() {
    let server = HttpMock::start();
    let throttled = ResponseTemplate::new(400)
        .insert_header("content-type", "application/x-amz-json-1.0")
        .set_body_json(json!({"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "Rate of requests exceeds the allowed throughput."}));
    server.mount(
        Mock::given(wiremock::matchers::method("POST"))
            .respond_with(throttled)
            .up_to_n_times(2)
            .with_priority(1),
    );
    server.mount(
        Mock::given(wiremock::matchers::method("POST")).respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/x-amz-json-1.0")
                .set_body_json(json!({})),
        ),
    );
    let t = TestContext::new();
    let cfg = dynamo_config(&t, "team.yaml", &server.server.uri(), "autotriage-busy");
    let o = aws_cmd(&t, &["--config", &cfg, "memory", "show", "o/r#1"]);
    // Two throttled answers, then the schema read and the issue read succeed.
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("o/r#1 is not in memory"),
        "{}",
        stderr(&o)
    );
    let targets: Vec<String> = server
        .requests()
        .iter()
        .map(|r| {
            r.headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(
        targets,
        vec!["DynamoDB_20120810.GetItem"; 4],
        "three tries of the schema read, then the issue"
    );
}

#[test]
fn runs_on_s3_are_read_from_the_bucket_and_fix_gives_the_same_output() {
    let Some(moto) = Emulator::moto() else { return };
    let t = TestContext::new();
    copy_examples(&t);
    commit_files(
        t.path(),
        &[
            (
                "pkg/core.py",
                "def run_job(job_id):\n    if job_id < 0:\n        raise ValueError(\"job id must be positive\")\n    return job_id * 2\n",
            ),
            (
                "pkg/cli.py",
                "import sys\n\n\ndef main():\n    print(sys.argv)\n",
            ),
            (".gitignore", ".autotriage/\n"),
        ],
        "init",
    );
    t.write(
        "bug.md",
        "---\nrepo: acme/jobs\nnumber: 3\ntitle: job id 0 is accepted\n---\n`run_job(0)` returns 0; ids must be positive.\n```\n  File \"/venv/pkg/core.py\", line 2, in run_job\n```\n",
    );
    t.write(
        "team.yaml",
        &format!(
            "memory:\n  backend: dynamodb\n  table: autotriage-runs-test\n  endpoint_url: {0}\nruns:\n  backend: s3\n  bucket: autotriage-runs\n  endpoint_url: {0}\n",
            moto.url
        ),
    );
    // Not set up yet: say how.
    let o = aws_cmd(&t, &["--config", "team.yaml", "runs", "list"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the bucket autotriage-runs does not exist")
            && stderr(&o).contains("memory init"),
        "{}",
        stderr(&o)
    );
    let o = aws_cmd(&t, &["--config", "team.yaml", "memory", "init"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "created dynamodb:autotriage-runs-test\ncreated s3://autotriage-runs\n"
    );

    // The same fix (up to locate) on the embedded defaults and on the team backends.
    let local = aws_cmd(&t, &["fix", "bug.md", "--until", "locate", "--json"]);
    assert_eq!(code(&local), 0, "{}", stderr(&local));
    let team = aws_cmd(
        &t,
        &[
            "--config",
            "team.yaml",
            "fix",
            "bug.md",
            "--until",
            "locate",
            "--json",
        ],
    );
    assert_eq!(code(&team), 0, "{}", stderr(&team));
    let strip = |o: &std::process::Output| {
        let mut v = stable(&stdout(o));
        for x in v.iter_mut() {
            if let Some(l) = x.get_mut("locate").and_then(|l| l.as_object_mut()) {
                l.remove("index");
            }
        }
        v
    };
    assert_eq!(strip(&team), strip(&local));
    assert_eq!(json(&team)["locate"]["files"][0]["path"], "pkg/core.py");
    let run_id = json(&team)["run_id"].as_str().unwrap().to_string();

    // The run is in the bucket: read back with no local copy.
    std::fs::remove_dir_all(t.path().join(".autotriage/runs")).unwrap();
    let o = aws_cmd(&t, &["--config", "team.yaml", "runs", "list", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["store"], "s3://autotriage-runs/autotriage/runs");
    assert_eq!(v["runs"][0]["id"], run_id.as_str());
    let o = aws_cmd(
        &t,
        &[
            "--config",
            "team.yaml",
            "runs",
            "show",
            &run_id[..20],
            "--file",
            "context.json",
            "--json",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let context: Value = serde_json::from_str(json(&o)["content"].as_str().unwrap()).unwrap();
    assert_eq!(context["files"][0]["path"], "pkg/core.py");
    let names: Vec<String> = json(&o)["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    for f in [
        "context.json",
        "events.jsonl",
        "issue.json",
        "run.json",
        "triage.json",
    ] {
        assert!(names.contains(&f.to_string()), "{names:?}");
    }
    // The run is in the team memory too.
    let o = aws_cmd(&t, &["--config", "team.yaml", "memory", "stats", "--json"]);
    assert_eq!(json(&o)["stats"]["runs"], 1);
}

#[test]
fn large_run_files_go_to_s3_in_parts() {
    let Some(moto) = Emulator::moto() else { return };
    for (k, v) in AWS_ENV {
        // SAFETY: every test sets these to the same values.
        unsafe { std::env::set_var(k, v) };
    }
    let s3 = autotriage::runs::s3::S3Runs::connect(&autotriage::runs::s3::S3Settings {
        bucket: "autotriage-big".into(),
        prefix: "team/runs".into(),
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.url.clone()),
    })
    .unwrap();
    assert!(s3.init().unwrap());
    // 17 MiB: three parts of at most 8 MiB.
    let big: Vec<u8> = (0..17 * 1024 * 1024)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    s3.put("run-1", "tests/baseline.log", &big).unwrap();
    assert_eq!(s3.get("run-1", "tests/baseline.log").unwrap().unwrap(), big);
    assert_eq!(
        s3.files("run-1").unwrap(),
        vec![("tests/baseline.log".to_string(), big.len() as u64)]
    );
    assert_eq!(s3.get("run-1", "missing.json").unwrap(), None);
}

/// A stand-in for the CodeBuild fleet (moto completes builds without running them): it
/// watches the bucket for uploaded sources, reads the code in each, and writes the
/// outputs a real build of it would: pytest's JUnit XML, the log and the exit code.
fn fake_build_agent(
    url: String,
    bucket: &'static str,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let conf = aws_sdk_s3::config::Builder::new()
            .http_client(autotriage::tls::aws_http_client())
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&url)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .build();
        let s3 = aws_sdk_s3::Client::from_conf(conf);
        let mut handled: Vec<String> = Vec::new();
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let keys: Vec<String> = rt
                .block_on(s3.list_objects_v2().bucket(bucket).send())
                .map(|o| {
                    o.contents()
                        .iter()
                        .filter_map(|c| c.key().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            for key in keys.iter().filter(|k| k.ends_with("/source.zip")) {
                if handled.contains(key) {
                    continue;
                }
                let bytes = rt.block_on(async {
                    let o = s3
                        .get_object()
                        .bucket(bucket)
                        .key(key)
                        .send()
                        .await
                        .unwrap();
                    o.body.collect().await.unwrap().into_bytes().to_vec()
                });
                let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
                let names: Vec<String> = zip.file_names().map(String::from).collect();
                assert!(!names.iter().any(|n| n.starts_with(".git/")), "{names:?}");
                let mut ops = String::new();
                std::io::Read::read_to_string(&mut zip.by_name("calc/ops.py").unwrap(), &mut ops)
                    .unwrap();
                let fixed = ops.contains("a + b");
                let add = if fixed {
                    "<testcase classname=\"tests.test_ops\" name=\"test_add\"/>".to_string()
                } else {
                    "<testcase classname=\"tests.test_ops\" name=\"test_add\"><failure message=\"assert -1 == 5\"/></testcase>".to_string()
                };
                let junit = format!(
                    "<testsuites><testsuite name=\"pytest\">{add}<testcase classname=\"tests.test_ops\" name=\"test_mul\"/></testsuite></testsuites>"
                );
                let out = key.trim_end_matches("source.zip");
                for (name, body) in [
                    ("setup-exit-code", "0\n".to_string()),
                    ("exit-code", if fixed { "0\n" } else { "1\n" }.to_string()),
                    (
                        "output.log",
                        format!("ran the tests on CodeBuild; fixed: {fixed}\n"),
                    ),
                    ("junit.xml", junit),
                ] {
                    rt.block_on(
                        s3.put_object()
                            .bucket(bucket)
                            .key(format!("{out}out/{name}"))
                            .body(aws_sdk_s3::primitives::ByteStream::from(body.into_bytes()))
                            .send(),
                    )
                    .unwrap();
                }
                handled.push(key.clone());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        handled
    })
}

#[test]
fn a_codebuild_run_goes_start_poll_result_with_the_same_verdict() {
    let Some(moto) = Emulator::moto() else { return };
    let t = TestContext::new();
    commit_files(
        t.path(),
        &[
            ("calc/__init__.py", ""),
            (
                "calc/ops.py",
                "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n",
            ),
            (
                "tests/test_ops.py",
                "from calc.ops import add, mul\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n",
            ),
            ("pyproject.toml", "[tool.pytest.ini_options]\n"),
        ],
        "init",
    );
    t.write(
        "issue.md",
        "---\nrepo: acme/calc\nnumber: 4\ntitle: add() subtracts\n---\nadd(2, 3) is -1.\n",
    );
    t.write("fix.diff", "calc/ops.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n");
    // The bucket and the project exist beforehand (made by the team's infrastructure).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let creds =
            aws_sdk_codebuild::config::Credentials::new("testing", "testing", None, None, "test");
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::new()
                .http_client(autotriage::tls::aws_http_client())
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .region(aws_sdk_s3::config::Region::new("us-east-1"))
                .endpoint_url(&moto.url)
                .force_path_style(true)
                .credentials_provider(creds.clone())
                .build(),
        );
        s3.create_bucket()
            .bucket("autotriage-builds")
            .send()
            .await
            .unwrap();
        let cb = aws_sdk_codebuild::Client::from_conf(
            aws_sdk_codebuild::config::Builder::new()
                .http_client(autotriage::tls::aws_http_client())
                .behavior_version(aws_sdk_codebuild::config::BehaviorVersion::latest())
                .region(aws_sdk_codebuild::config::Region::new("us-east-1"))
                .endpoint_url(&moto.url)
                .credentials_provider(creds)
                .build(),
        );
        use aws_sdk_codebuild::types::*;
        cb.create_project()
            .name("autotriage-tests")
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
            .service_role("arn:aws:iam::123456789012:role/autotriage-codebuild")
            .send()
            .await
            .unwrap();
    });
    t.write(
        "autotriage.yaml",
        &format!(
            "test:\n  runner: codebuild\n  project: autotriage-tests\n  bucket: autotriage-builds\n  endpoint_url: {}\n",
            moto.url
        ),
    );
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let agent = fake_build_agent(moto.url.clone(), "autotriage-builds", done.clone());
    let o = aws_cmd(&t, &["test", "issue.md", "--patch", "fix.diff", "--json"]);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let builds = agent.join().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["test"]["runner"], "CodeBuild project autotriage-tests");
    assert_eq!(v["test"]["verdict"], "fixed");
    assert_eq!(
        v["test"]["baseline"]["run"]["results"]["tests"],
        json!({"tests.test_ops::test_add": "failed", "tests.test_ops::test_mul": "passed"})
    );
    let c = &v["test"]["candidates"][0];
    assert_eq!(c["fixed"], json!(["tests.test_ops::test_add"]));
    assert_eq!(c["runs"][0]["label"], "candidate 1 targeted");
    // The baseline, the candidate's targeted run and suite, and the base re-run.
    assert_eq!(builds.len(), 4, "{builds:?}");
    let log = {
        let id = v["run_id"].as_str().unwrap();
        let o = t.run(&["runs", "show", id, "--file", "tests/baseline.log", "--json"]);
        json(&o)["content"].as_str().unwrap().to_string()
    };
    assert!(
        log.contains("ran the tests on CodeBuild; fixed: false"),
        "{log}"
    );

    // A project that does not exist: exit 2, naming it.
    t.write(
        "autotriage.yaml",
        &format!(
            "test:\n  runner: codebuild\n  project: nowhere\n  bucket: autotriage-builds\n  endpoint_url: {}\n",
            moto.url
        ),
    );
    let o = aws_cmd(&t, &["test", "issue.md", "--patch", "fix.diff"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the CodeBuild project nowhere does not exist"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_aws_setup_is_explained() {
    let server = HttpMock::start();
    server.mount(
        Mock::given(wiremock::matchers::method("POST")).respond_with(
            ResponseTemplate::new(400)
                .insert_header("content-type", "application/x-amz-json-1.0")
                .set_body_json(json!({"__type": "com.amazon.coral.service#AccessDeniedException", "message": "User: arn:aws:iam::1:user/ci is not authorized to perform: dynamodb:GetItem"})),
        ),
    );
    let t = TestContext::new();
    let cfg = dynamo_config(&t, "team.yaml", &server.server.uri(), "autotriage-locked");
    // Access denied: the action is named.
    let o = aws_cmd(&t, &["--config", &cfg, "memory", "show", "o/r#1"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("access denied to dynamodb:GetItem on table autotriage-locked"),
        "{}",
        stderr(&o)
    );
    // No region anywhere: say how to set one.
    let o = t
        .cmd()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .args(["--config", &cfg, "memory", "list"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no AWS region is set"),
        "{}",
        stderr(&o)
    );
    // `--memory dynamodb:TABLE` is the shorthand for the backend and the table.
    t.write(
        "endpoint.yaml",
        &format!("memory:\n  endpoint_url: {}\n", server.server.uri()),
    );
    let o = aws_cmd(
        &t,
        &[
            "--config",
            "endpoint.yaml",
            "--memory",
            "dynamodb:other-table",
            "memory",
            "stats",
        ],
    );
    assert!(
        stderr(&o).contains("on table other-table"),
        "{}",
        stderr(&o)
    );
    // runs.backend s3 without a bucket.
    t.write("runs.yaml", "runs:\n  backend: s3\n");
    let o = aws_cmd(&t, &["--config", "runs.yaml", "runs", "list"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("runs.bucket"), "{}", stderr(&o));
}

/// `aws_cmd` with the scripted model's key.
fn team_cmd(t: &TestContext, args: &[&str]) -> std::process::Output {
    let mut cmd = t.cmd();
    for (k, v) in AWS_ENV {
        cmd.env(k, v);
    }
    cmd.env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args(args)
        .output()
        .unwrap()
}

/// A checkout of `acme/jobs` with its bug report, and the team memory config.
fn jobs_checkout(moto_url: &str, model_url: &str, lease_seconds: u64) -> TestContext {
    let t = TestContext::new();
    commit_files(
        t.path(),
        &[
            (
                "pkg/core.py",
                "def run_job(job_id):\n    if job_id < 0:\n        raise ValueError(\"job id must be positive\")\n    return job_id * 2\n",
            ),
            (".gitignore", ".autotriage/\n"),
        ],
        "init",
    );
    t.write(
        "bug.md",
        "---\nrepo: acme/jobs\nnumber: 3\ntitle: job id 0 is accepted\nauthor_association: MEMBER\n---\n`run_job(0)` returns 0; ids must be positive.\n",
    );
    t.write(
        "team.yaml",
        &format!(
            "memory:\n  backend: dynamodb\n  table: autotriage-lease-test\n  endpoint_url: {moto_url}\n  lease_seconds: {lease_seconds}\nmodels:\n  a:\n    provider: anthropic\n    model_id: claude-x\n    base_url: {model_url}\n    price: {{input_per_mtok: 3.0, output_per_mtok: 15.0}}\nmodel: a\ntriage:\n  engine: offline\nrepair:\n  candidates: 1\n  rounds: 0\n"
        ),
    );
    t
}

#[test]
fn two_machines_never_fix_one_issue_at_once_and_a_lapsed_hold_is_taken_over() {
    let Some(moto) = Emulator::moto() else { return };
    // A model that takes 60 s to answer: the first fix holds the issue meanwhile.
    let model = HttpMock::start();
    model.mount(
        Mock::given(wiremock::matchers::method("POST")).respond_with(
            ResponseTemplate::new(200)
                .set_delay(std::time::Duration::from_secs(60))
                .set_body_json(json!({"id": "m", "type": "message", "role": "assistant",
                    "content": [{"type": "text", "text": "no edit"}], "stop_reason": "end_turn",
                    "usage": {"input_tokens": 10, "output_tokens": 2}})),
        ),
    );
    let first = jobs_checkout(&moto.url, &model.server.uri(), 3);
    let second = jobs_checkout(&moto.url, &model.server.uri(), 3);
    let o = aws_cmd(&first, &["--config", "team.yaml", "memory", "init"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("autotriage"));
    cmd.current_dir(first.path())
        .env_clear()
        .env("HOME", first.home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-000000000000000000")
        .args([
            "--config",
            "team.yaml",
            "fix",
            "bug.md",
            "--until",
            "repair",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in AWS_ENV {
        cmd.env(k, v);
    }
    let mut running = cmd.spawn().unwrap();
    let pid = running.id();
    // Wait until it asks the model (it holds the issue by then).
    let started = std::time::Instant::now();
    while model.requests().is_empty() {
        assert!(
            started.elapsed().as_secs() < 60,
            "the first fix never reached the model"
        );
        assert!(
            running.try_wait().unwrap().is_none(),
            "the first fix ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Another machine (its own checkout, home and run store; the same team memory).
    let o = team_cmd(
        &second,
        &[
            "--config",
            "team.yaml",
            "fix",
            "bug.md",
            "--until",
            "locate",
        ],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("another autotriage run of acme/jobs#3 is in progress, held by")
            && err.contains(&format!(
                "pid {pid} (its hold in dynamodb:autotriage-lease-test)"
            )),
        "{err}"
    );
    assert!(
        !second.path().join(".autotriage/runs").exists()
            || std::fs::read_dir(second.path().join(".autotriage/runs"))
                .unwrap()
                .count()
                == 0
    );
    // Renewed while it runs: still held after the lease time has passed.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let o = team_cmd(
        &second,
        &[
            "--config",
            "team.yaml",
            "fix",
            "bug.md",
            "--until",
            "locate",
        ],
    );
    assert_eq!(code(&o), 1, "renewed: {}", stderr(&o));

    // The holder dies without giving the issue back: a process of this machine that
    // is gone, so its hold is taken over at once.
    running.kill().unwrap();
    running.wait().unwrap();
    let o = team_cmd(
        &second,
        &[
            "--config",
            "team.yaml",
            "fix",
            "bug.md",
            "--until",
            "locate",
            "--json",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["locate"]["files"][0]["path"], "pkg/core.py");

    // A holder on another machine that stopped renewing: refused until its hold lapses.
    for (k, v) in AWS_ENV {
        // SAFETY: every test sets these to the same values; nothing reads them racily
        // with a different expectation.
        unsafe { std::env::set_var(k, v) };
    }
    let settings = DynamoSettings {
        table: "autotriage-lease-test".into(),
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.url.clone()),
    };
    let mut other = DynamoMemory::connect(&settings, Default::default()).unwrap();
    assert_eq!(
        other
            .acquire_lease("fix/acme/jobs#3", "ci@build-7 pid 1", 3)
            .unwrap(),
        None
    );
    let o = team_cmd(
        &second,
        &[
            "--config",
            "team.yaml",
            "fix",
            "bug.md",
            "--until",
            "locate",
            "--restart",
        ],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("held by ci@build-7 pid 1"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("a crashed run's hold lapses at"),
        "{}",
        stderr(&o)
    );
    std::thread::sleep(std::time::Duration::from_secs(4));
    let o = team_cmd(
        &second,
        &[
            "--config",
            "team.yaml",
            "fix",
            "bug.md",
            "--until",
            "locate",
            "--restart",
        ],
    );
    assert_eq!(code(&o), 0, "lapsed: {}", stderr(&o));
    // Given back at the end: the first machine may fix it at once.
    let o = team_cmd(
        &first,
        &[
            "--config",
            "team.yaml",
            "fix",
            "bug.md",
            "--until",
            "locate",
            "--restart",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}
