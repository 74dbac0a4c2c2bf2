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
        let config =
            crate::aws::load_config_async(s.region.as_deref(), s.endpoint_url.as_deref()).await;
        Self {
            client: aws_sdk_sqs::Client::new(&config),
            url: s.url.clone(),
        }
    }

    /// Queue one job of a delivery; `index` tells a delivery's jobs apart and
    /// `dedup_key` deduplicates (the body's SHA-256: a redelivery, or the same signed
    /// body replayed under a new delivery id, within SQS's five minutes, is one message).
    pub async fn send(
        &self,
        spec: &JobSpec,
        delivery: &str,
        dedup_key: &str,
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
            .message_deduplication_id(dedup_id(dedup_key, index))
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

/// An SQS error as one line: the service's code and message, else the whole chain.
pub(super) fn sdk_message<
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

/// A message waiting in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// SQS's message id (what `queue show|retry|drop` take).
    pub id: String,
    /// `owner/repo#N`.
    pub key: String,
    /// The job, when its body reads as one.
    pub message: Option<Message>,
    /// The raw body when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// How many times it was received (its failed attempts).
    pub receive_count: u32,
}

/// The dead-letter queue of the SQS backend, for `queue list|show|retry|drop`.
pub struct DeadLetters {
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_sqs::Client,
    /// The dead-letter queue.
    pub dead: String,
    /// The queue a retried job goes back to.
    pub queue: String,
}

impl DeadLetters {
    /// Both queues (`queue.url`, `queue.dead_letter_url`).
    pub fn connect(s: &SqsSettings, dead: &str) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let queue = runtime.block_on(SqsQueue::connect(s));
        Ok(Self {
            runtime,
            client: queue.client,
            dead: dead.to_string(),
            queue: s.url.clone(),
        })
    }

    /// Up to `limit` dead letters, without taking them (a zero visibility timeout).
    pub fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, String> {
        Ok(self
            .receive(limit, 0)?
            .into_iter()
            .map(|(d, _)| d)
            .collect())
    }

    /// One dead letter.
    pub fn show(&self, id: &str) -> Result<DeadLetter, String> {
        self.list(1000)?
            .into_iter()
            .find(|d| d.id == id)
            .ok_or_else(|| self.missing(id))
    }

    /// Send the job back to the queue and remove the dead letter.
    pub fn retry(&self, id: &str) -> Result<DeadLetter, String> {
        let (d, receipt) = self.take(id)?;
        let body = match (&d.message, &d.body) {
            (Some(m), _) => serde_json::to_string(m).map_err(|e| e.to_string())?,
            (None, Some(b)) => b.clone(),
            (None, None) => String::new(),
        };
        self.runtime
            .block_on(
                self.client
                    .send_message()
                    .queue_url(&self.queue)
                    .message_body(body)
                    .message_group_id(group_id(&d.key))
                    .message_deduplication_id(format!("retry-{}", d.id))
                    .send(),
            )
            .map_err(|e| format!("SQS SendMessage to {}: {}", self.queue, sdk_message(&e)))?;
        self.delete(&receipt)?;
        Ok(d)
    }

    /// Remove the dead letter.
    pub fn drop_letter(&self, id: &str) -> Result<DeadLetter, String> {
        let (d, receipt) = self.take(id)?;
        self.delete(&receipt)?;
        Ok(d)
    }

    fn missing(&self, id: &str) -> String {
        format!(
            "no dead letter {id} in {}\n  fix: `autotriage queue list` shows the ones there",
            self.dead
        )
    }

    /// The dead letter and a receipt to delete it with. Received without hiding it (or
    /// the others: nobody else reads a dead-letter queue), so a later command sees them.
    fn take(&self, id: &str) -> Result<(DeadLetter, String), String> {
        self.receive(1000, 0)?
            .into_iter()
            .find(|(d, _)| d.id == id)
            .ok_or_else(|| self.missing(id))
    }

    fn delete(&self, receipt: &str) -> Result<(), String> {
        self.runtime
            .block_on(
                self.client
                    .delete_message()
                    .queue_url(&self.dead)
                    .receipt_handle(receipt)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| format!("SQS DeleteMessage on {}: {}", self.dead, sdk_message(&e)))
    }

    /// Receive until `limit` distinct messages or none new, with this visibility.
    fn receive(&self, limit: usize, visibility: i32) -> Result<Vec<(DeadLetter, String)>, String> {
        let mut out: Vec<(DeadLetter, String)> = Vec::new();
        let mut idle = 0;
        while out.len() < limit && idle < 2 {
            let got = self
                .runtime
                .block_on(
                    self.client
                        .receive_message()
                        .queue_url(&self.dead)
                        .max_number_of_messages(10)
                        .visibility_timeout(visibility)
                        .message_system_attribute_names(
                            aws_sdk_sqs::types::MessageSystemAttributeName::All,
                        )
                        .send(),
                )
                .map_err(|e| format!("SQS ReceiveMessage on {}: {}", self.dead, sdk_message(&e)))?;
            let before = out.len();
            for m in got.messages.unwrap_or_default() {
                let id = m.message_id().unwrap_or_default().to_string();
                if out.iter().any(|(d, _)| d.id == id) {
                    continue;
                }
                let attrs = m.attributes.clone().unwrap_or_default();
                let attr = |k: aws_sdk_sqs::types::MessageSystemAttributeName| {
                    attrs.get(&k).cloned().unwrap_or_default()
                };
                let body = m.body().unwrap_or_default().to_string();
                let message: Option<Message> = serde_json::from_str(&body).ok();
                out.push((
                    DeadLetter {
                        id,
                        key: message.as_ref().map_or_else(
                            || attr(aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId),
                            |m| m.spec.key(),
                        ),
                        body: message.is_none().then_some(body),
                        message,
                        receive_count: attr(
                            aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
                        )
                        .parse()
                        .unwrap_or(0),
                    },
                    m.receipt_handle().unwrap_or_default().to_string(),
                ));
            }
            if out.len() == before {
                idle += 1;
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}
