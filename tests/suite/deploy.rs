//! The AWS deployment (`deploy/aws/template.yaml`): cfn-lint passes, each role allows
//! exactly the calls its code makes (from `autotriage::aws::CALLS`) plus what the
//! service itself needs on its behalf, and the fix project runs what the worker sends.

use std::collections::BTreeSet;

use serde_yaml::Value;

use crate::suite::common::*;

fn template_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/aws/template.yaml")
}

fn template() -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(template_path()).unwrap()).unwrap()
}

/// The actions a role's inline policies allow.
fn role_actions(t: &Value, role: &str) -> BTreeSet<String> {
    let r = &t["Resources"][role];
    assert_eq!(r["Type"], "AWS::IAM::Role", "{role}");
    let mut out = BTreeSet::new();
    for p in r["Properties"]["Policies"].as_sequence().unwrap() {
        for st in p["PolicyDocument"]["Statement"].as_sequence().unwrap() {
            assert_eq!(st["Effect"], "Allow");
            for a in st["Action"].as_sequence().unwrap() {
                out.insert(a.as_str().unwrap().to_string());
            }
        }
    }
    out
}

#[test]
fn each_role_allows_exactly_what_its_code_calls() {
    let t = template();
    let logs = [
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    ];
    let cases: [(&str, &[&str], Vec<&str>); 4] = [
        ("WebhookRole", &["src/serve/sqs.rs"], vec![]),
        (
            "WorkerRole",
            &[
                "src/memory/dynamodb.rs",
                "src/runs/s3.rs",
                "src/commands/lambda.rs",
                "src/model/bedrock.rs",
            ],
            // Lambda's SQS trigger reads the queue on the function's behalf.
            vec![
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ChangeMessageVisibility",
            ],
        ),
        (
            "FixRole",
            &[
                "src/memory/dynamodb.rs",
                "src/runs/s3.rs",
                "src/verify/codebuild.rs",
                "src/model/bedrock.rs",
            ],
            // CodeBuild writes the build's log and resolves its secret variables.
            logs.iter()
                .copied()
                .chain(["secretsmanager:GetSecretValue"])
                .collect(),
        ),
        (
            "TestRole",
            &[],
            // CodeBuild fetches the source and the build writes its results.
            logs.iter()
                .copied()
                .chain(["s3:GetObject", "s3:PutObject"])
                .collect(),
        ),
    ];
    for (role, files, service) in cases {
        let mut want: BTreeSet<String> = autotriage::aws::actions_of(files)
            .into_iter()
            .map(String::from)
            .collect();
        want.extend(service.iter().map(|s| s.to_string()));
        assert_eq!(role_actions(&t, role), want, "{role}");
    }
    // The functions use their own role, with only the basic execution policy beside it.
    for (f, role) in [
        ("WebhookFunction", "WebhookRole"),
        ("WorkerFunction", "WorkerRole"),
    ] {
        let props = &t["Resources"][f]["Properties"];
        assert!(props["Policies"].is_null(), "{f}: policies beside its role");
        assert!(format!("{:?}", props["Role"]).contains(role), "{f}");
        let managed = &t["Resources"][role]["Properties"]["ManagedPolicyArns"];
        assert_eq!(
            managed.as_sequence().unwrap().len(),
            1,
            "{role}: {managed:?}"
        );
    }
    // The test project holds no secret.
    let test_env = &t["Resources"]["TestProject"]["Properties"]["Environment"];
    assert!(test_env["EnvironmentVariables"].is_null());
}

#[test]
fn the_fix_project_runs_the_buildspec_the_worker_sends() {
    let t = template();
    let spec = t["Resources"]["FixProject"]["Properties"]["Source"]["BuildSpec"]
        .as_str()
        .unwrap();
    assert_eq!(spec, autotriage::commands::lambda::FIX_BUILDSPEC);
    // Its secrets are Secrets Manager references, never values.
    for v in t["Resources"]["FixProject"]["Properties"]["Environment"]["EnvironmentVariables"]
        .as_sequence()
        .unwrap()
    {
        let name = v["Name"].as_str().unwrap();
        if name.ends_with("TOKEN") || name.ends_with("KEY") {
            assert_eq!(v["Type"], "SECRETS_MANAGER", "{name}");
        }
    }
}

#[test]
fn cfn_lint_passes_on_the_template() {
    let present = std::process::Command::new("cfn-lint")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            !emulators_required(),
            "CI needs cfn-lint (`pip install cfn-lint`)"
        );
        eprintln!("skipped: cfn-lint is not installed");
        return;
    }
    let o = std::process::Command::new("cfn-lint")
        .arg(template_path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
