//! What the AWS team backends share: one way to load the SDK configuration.

/// The standard AWS chain (profile, environment, SSO…), with `region` and
/// `endpoint_url` overriding it, and the SDK's standard retry (5 attempts, which covers
/// throttling). Loaded on the caller's runtime.
pub fn load_config(
    runtime: &tokio::runtime::Runtime,
    region: Option<&str>,
    endpoint_url: Option<&str>,
) -> aws_config::SdkConfig {
    runtime.block_on(load_config_async(region, endpoint_url))
}

/// [`load_config`] on the caller's async runtime (the Lambda functions).
pub async fn load_config_async(
    region: Option<&str>,
    endpoint_url: Option<&str>,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(crate::tls::aws_http_client())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5));
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_string()));
    }
    if let Some(u) = endpoint_url {
        loader = loader.endpoint_url(u);
    }
    loader.load().await
}

/// Whether an SDK error (its `Debug` text) says no credentials could be loaded: the
/// chain found none, or a provider in it (SSO, the instance metadata) failed.
pub fn credentials_missing(debug: &str) -> bool {
    debug.contains("CredentialsNotLoaded")
        || debug.contains("NoCredentials")
        || debug.contains("ProviderError")
}

/// The AWS calls each source file makes, as (the SDK's fluent method, the IAM action
/// it needs). The deployment's roles are checked against these
/// (`tests/suite/deploy.rs`), and the test below checks each file against its list:
/// a call added without its action, or an action listed for a call the file no longer
/// makes, fails.
pub const CALLS: &[(&str, &[(&str, &str)])] = &[
    (
        "src/serve/sqs.rs",
        &[
            ("send_message", "sqs:SendMessage"),
            // `queue list|show|retry|drop` on the dead-letter queue (an operator's).
            ("receive_message", "sqs:ReceiveMessage"),
            ("delete_message", "sqs:DeleteMessage"),
        ],
    ),
    (
        // `serve`'s workers on SQS (on Lambda the event source mapping receives).
        "src/serve/sqs_worker.rs",
        &[
            ("receive_message", "sqs:ReceiveMessage"),
            ("delete_message", "sqs:DeleteMessage"),
            ("change_message_visibility", "sqs:ChangeMessageVisibility"),
            ("get_queue_attributes", "sqs:GetQueueAttributes"),
            // A job out of attempts moves to the dead-letter queue.
            ("send_message", "sqs:SendMessage"),
        ],
    ),
    (
        "src/memory/dynamodb.rs",
        &[
            ("get_item", "dynamodb:GetItem"),
            ("put_item", "dynamodb:PutItem"),
            ("delete_item", "dynamodb:DeleteItem"),
            ("query", "dynamodb:Query"),
            ("scan", "dynamodb:Scan"),
            ("describe_table", "dynamodb:DescribeTable"),
            ("create_table", "dynamodb:CreateTable"),
            ("update_time_to_live", "dynamodb:UpdateTimeToLive"),
        ],
    ),
    (
        "src/runs/s3.rs",
        &[
            ("get_object", "s3:GetObject"),
            ("put_object", "s3:PutObject"),
            ("delete_object", "s3:DeleteObject"),
            ("list_objects_v2", "s3:ListBucket"),
            ("head_bucket", "s3:ListBucket"),
            ("create_bucket", "s3:CreateBucket"),
            ("create_multipart_upload", "s3:PutObject"),
            ("upload_part", "s3:PutObject"),
            ("complete_multipart_upload", "s3:PutObject"),
            ("abort_multipart_upload", "s3:AbortMultipartUpload"),
        ],
    ),
    (
        "src/verify/codebuild.rs",
        &[
            ("start_build", "codebuild:StartBuild"),
            ("batch_get_builds", "codebuild:BatchGetBuilds"),
            ("stop_build", "codebuild:StopBuild"),
            // The build's source goes up and its results come back through the bucket.
            ("put_object", "s3:PutObject"),
            ("get_object", "s3:GetObject"),
        ],
    ),
    (
        "src/commands/lambda.rs",
        &[("start_build", "codebuild:StartBuild")],
    ),
    (
        "src/model/bedrock.rs",
        &[
            ("converse", "bedrock:InvokeModel"),
            ("converse_stream", "bedrock:InvokeModelWithResponseStream"),
        ],
    ),
];

/// Calls only a person's commands make (`memory init` setting the backends up, `queue
/// …` on the dead letters), never a job.
pub const SETUP_ONLY: &[&str] = &[
    "dynamodb:CreateTable",
    "dynamodb:UpdateTimeToLive",
    "s3:CreateBucket",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
];

/// The IAM actions the files make calls for, setup calls left out.
pub fn actions_of(files: &[&str]) -> std::collections::BTreeSet<&'static str> {
    CALLS
        .iter()
        .filter(|(f, _)| files.contains(f))
        .flat_map(|(_, calls)| calls.iter().map(|(_, a)| *a))
        .filter(|a| !SETUP_ONLY.contains(a))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_aws_call_in_the_code_has_its_iam_action_listed_and_no_more() {
        let re =
            regex::Regex::new(r"(?:client|codebuild|s3|sqs)\s*\.\s*([a-z][a-z0-9_]*)\(\)").unwrap();
        for (file, calls) in CALLS {
            let text =
                std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            let found: std::collections::BTreeSet<&str> = re
                .captures_iter(&text)
                .map(|c| c.get(1).unwrap().as_str())
                .filter(|m| !matches!(*m, "clone" | "build" | "send" | "load"))
                .collect();
            let listed: std::collections::BTreeSet<&str> = calls.iter().map(|(m, _)| *m).collect();
            assert_eq!(found, listed, "{file}");
        }
    }
}
