//! The SQS FIFO queue of the Lambda front-ends: a job is one message whose group is its
//! issue (`owner/repo#N`: one issue's jobs in order, never two at once) and whose
//! deduplication id is the GitHub delivery (a redelivery within SQS's five-minute
//! window is one message). Failed messages return after the visibility timeout and
//! go to the dead-letter queue after the redrive policy's receive count.

use serde::{Deserialize, Serialize};

use super::route::JobSpec;

/// A message body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The job.
    pub spec: JobSpec,
    /// The delivery it came from.
    pub delivery: String,
    /// Unix seconds it was queued.
    pub queued_at: i64,
}

/// Settings of the queue (`queue.url`, `queue.region`, `queue.endpoint_url`).
#[derive(Debug, Clone)]
pub struct SqsSettings {
    /// The queue URL.
    pub url: String,
    /// Region.
    pub region: Option<String>,
    /// Endpoint override.
    pub endpoint_url: Option<String>,
}

/// The queue, for sending.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    /// A client for the queue (credentials from the standard AWS chain).
    pub async fn connect(s: &SqsSettings) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = &s.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(e) = &s.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        let config = loader.load().await;
        Self {
            client: aws_sdk_sqs::Client::new(&config),
            url: s.url.clone(),
        }
    }

    /// Queue one job of a delivery; `index` tells a delivery's jobs apart.
    pub async fn send(
        &self,
        spec: &JobSpec,
        delivery: &str,
        index: usize,
    ) -> Result<String, String> {
        let body = serde_json::to_string(&Message {
            spec: spec.clone(),
            delivery: delivery.to_string(),
            queued_at: chrono::Utc::now().timestamp(),
        })
        .map_err(|e| e.to_string())?;
        let out = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .message_group_id(group_id(&spec.key()))
            .message_deduplication_id(dedup_id(delivery, index))
            .send()
            .await
            .map_err(|e| format!("SQS SendMessage to {}: {}", self.url, sdk_message(&e)))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }
}

/// A message group id from an issue key: SQS allows 128 characters of
/// alphanumerics and punctuation.
pub fn group_id(key: &str) -> String {
    key.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(128)
        .collect()
}

/// A deduplication id: the delivery, and which of its jobs.
pub fn dedup_id(delivery: &str, index: usize) -> String {
    let d: String = delivery
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(100)
        .collect();
    format!("{d}:{index}")
}

fn sdk_message<
    E: std::error::Error + 'static + aws_sdk_sqs::error::ProvideErrorMetadata,
    R: std::fmt::Debug,
>(
    e: &aws_sdk_sqs::error::SdkError<E, R>,
) -> String {
    match e {
        aws_sdk_sqs::error::SdkError::ServiceError(s) => format!(
            "{}: {}",
            s.err().code().unwrap_or("error"),
            s.err().message().unwrap_or("")
        ),
        other => format!("{}", aws_sdk_sqs::error::DisplayErrorContext(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_and_dedup_ids_stay_within_what_sqs_allows() {
        assert_eq!(group_id("acme/calc#4"), "acme/calc#4");
        assert_eq!(group_id("a b"), "ab");
        assert_eq!(
            dedup_id("72d3162e-cc78-11e3-81ab-4c9367dc0958", 1),
            "72d3162e-cc78-11e3-81ab-4c9367dc0958:1"
        );
        assert_eq!(dedup_id("x;y", 0), "xy:0");
    }
}
