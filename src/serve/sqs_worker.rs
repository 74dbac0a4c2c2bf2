//! `serve`'s workers on the SQS FIFO queue (`queue.backend: sqs`): a receive is the
//! claim, the visibility timeout is the lease (extended by the heartbeat while the job
//! runs), a delete is done. A job out of attempts, or failed for good, moves to the
//! dead-letter queue at once when `queue.dead_letter_url` is set, else the queue's
//! redrive policy moves it. On Lambda the event source mapping receives instead, so
//! these calls are `serve`'s alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

use super::queue::{Job, JobState};
use super::sqs::{Message, SqsSettings, group_id, sdk_message};
use super::worker::{JobFailure, JobSource, Keeper, WorkerSettings};

/// SQS's longest visibility timeout (12 hours).
const MAX_VISIBILITY: u64 = 43_200;

/// A received message a worker holds.
#[derive(Debug, Clone)]
struct Held {
    receipt: String,
    message_id: String,
    group: String,
    body: String,
    sequence: Option<String>,
}

/// The queue's consumer side, shared by `serve`'s workers and its `/metrics`.
#[derive(Clone)]
pub struct SqsConsumer {
    client: aws_sdk_sqs::Client,
    runtime: tokio::runtime::Handle,
    url: String,
    dead: Option<String>,
    /// What the workers hold, by local job id (given back at a hard stop).
    held: Arc<Mutex<HashMap<i64, Held>>>,
    next_id: Arc<AtomicI64>,
    /// The last counts and when they were read: `/metrics` is unauthenticated, so a
    /// scrape flood reads SQS at most every [`DEPTH_TTL`].
    depth_cache: Arc<Mutex<Option<(std::time::Instant, Depth)>>>,
}

/// Message counts by state.
type Depth = Vec<(String, i64)>;

/// How long the queue's counts are reused.
const DEPTH_TTL: std::time::Duration = std::time::Duration::from_secs(10);

impl SqsConsumer {
    /// A consumer of `settings.url` (and `dead`, the dead-letter queue), whose calls
    /// run on `runtime` from the worker threads.
    pub async fn connect(
        settings: &SqsSettings,
        dead: Option<&str>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let config = crate::aws::load_config_async(
            settings.region.as_deref(),
            settings.endpoint_url.as_deref(),
        )
        .await;
        Self {
            client: aws_sdk_sqs::Client::new(&config),
            runtime,
            url: settings.url.clone(),
            dead: dead.map(str::to_string),
            held: Arc::new(Mutex::new(HashMap::new())),
            next_id: Arc::new(AtomicI64::new(1)),
            depth_cache: Arc::new(Mutex::new(None)),
        }
    }

    /// A worker's source.
    pub fn source(&self) -> SqsSource {
        SqsSource {
            consumer: self.clone(),
        }
    }

    /// Messages by state (`queued`, `running`: hidden, which includes jobs waiting for
    /// a retry; `dead`), as SQS approximates them, read at most every [`DEPTH_TTL`]
    /// and each within 3 s.
    pub async fn depth(&self) -> Vec<(String, i64)> {
        if let Ok(c) = self.depth_cache.lock()
            && let Some((at, d)) = c.as_ref()
            && at.elapsed() < DEPTH_TTL
        {
            return d.clone();
        }
        let d = tokio::time::timeout(std::time::Duration::from_secs(3), self.read_depth())
            .await
            .unwrap_or_default();
        if let Ok(mut c) = self.depth_cache.lock() {
            *c = Some((std::time::Instant::now(), d.clone()));
        }
        d
    }

    async fn read_depth(&self) -> Vec<(String, i64)> {
        let count = |url: String, attr: QueueAttributeName| {
            let client = self.client.clone();
            async move {
                client
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(attr.clone())
                    .send()
                    .await
                    .ok()
                    .and_then(|o| o.attributes.and_then(|a| a.get(&attr).cloned()))
                    .and_then(|n| n.parse::<i64>().ok())
            }
        };
        let mut out = Vec::new();
        if let Some(n) = count(
            self.url.clone(),
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        )
        .await
        {
            out.push(("running".to_string(), n));
        }
        if let Some(n) = count(
            self.url.clone(),
            QueueAttributeName::ApproximateNumberOfMessages,
        )
        .await
        {
            out.push(("queued".to_string(), n));
        }
        if let Some(dead) = &self.dead
            && let Some(n) = count(
                dead.clone(),
                QueueAttributeName::ApproximateNumberOfMessages,
            )
            .await
        {
            out.push(("dead".to_string(), n));
        }
        out.sort();
        out
    }

    /// Give back every message the workers hold (visible again at once): a stop that
    /// could not wait for its jobs. How many.
    pub fn release_all(&self) -> usize {
        let held: Vec<Held> = self
            .held
            .lock()
            .map(|mut h| h.drain().map(|(_, v)| v).collect())
            .unwrap_or_default();
        held.iter()
            .filter(|h| self.set_visibility(&h.receipt, 0).is_ok())
            .count()
    }

    fn held(&self, job: &Job) -> Result<Held, String> {
        self.held
            .lock()
            .ok()
            .and_then(|h| h.get(&job.id).cloned())
            .ok_or_else(|| format!("job {} is not held by this service", job.id))
    }

    fn forget(&self, job: &Job) {
        if let Ok(mut h) = self.held.lock() {
            h.remove(&job.id);
        }
    }

    fn set_visibility(&self, receipt: &str, seconds: u64) -> Result<(), String> {
        self.runtime
            .block_on(
                self.client
                    .change_message_visibility()
                    .queue_url(&self.url)
                    .receipt_handle(receipt)
                    .visibility_timeout(seconds.min(MAX_VISIBILITY) as i32)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "SQS ChangeMessageVisibility on {}: {}",
                    self.url,
                    sdk_message(&e)
                )
            })
    }

    fn delete(&self, receipt: &str) -> Result<(), String> {
        self.runtime
            .block_on(
                self.client
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(receipt)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| format!("SQS DeleteMessage on {}: {}", self.url, sdk_message(&e)))
    }

    /// Move a message to the dead-letter queue: a copy there, then the original
    /// deleted. False when there is no dead-letter queue to move it to.
    fn bury(&self, held: &Held) -> Result<bool, String> {
        let Some(dead) = &self.dead else {
            return Ok(false);
        };
        self.runtime
            .block_on(
                self.client
                    .send_message()
                    .queue_url(dead)
                    .message_body(&held.body)
                    .message_group_id(&held.group)
                    .message_deduplication_id(format!("dead-{}", held.message_id))
                    .send(),
            )
            .map_err(|e| format!("SQS SendMessage to {dead}: {}", sdk_message(&e)))?;
        // The copy is there: the original must not run again, whatever the delete does.
        let mut deleted = self.delete(&held.receipt);
        for _ in 0..3 {
            if deleted.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            deleted = self.delete(&held.receipt);
        }
        if deleted.is_err() {
            self.set_visibility(&held.receipt, MAX_VISIBILITY)?;
        }
        Ok(true)
    }

    /// One message, waiting up to a second for it, hidden for `lease` seconds.
    fn receive(&self, lease: u64) -> Result<Option<(Held, Option<Message>, u32)>, String> {
        let out = self
            .runtime
            .block_on(
                self.client
                    .receive_message()
                    .queue_url(&self.url)
                    .max_number_of_messages(1)
                    .wait_time_seconds(1)
                    .visibility_timeout(lease.min(MAX_VISIBILITY) as i32)
                    .message_system_attribute_names(MessageSystemAttributeName::All)
                    .send(),
            )
            .map_err(|e| format!("SQS ReceiveMessage on {}: {}", self.url, sdk_message(&e)))?;
        let Some(m) = out.messages.unwrap_or_default().into_iter().next() else {
            return Ok(None);
        };
        let attrs = m.attributes.clone().unwrap_or_default();
        let body = m.body().unwrap_or_default().to_string();
        let message: Option<Message> = serde_json::from_str(&body).ok();
        let group = attrs
            .get(&MessageSystemAttributeName::MessageGroupId)
            .cloned()
            .or_else(|| message.as_ref().map(|m| group_id(&m.spec.key())))
            .unwrap_or_else(|| "unknown".into());
        let count = attrs
            .get(&MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let sequence = attrs
            .get(&MessageSystemAttributeName::SequenceNumber)
            .cloned();
        Ok(Some((
            Held {
                receipt: m.receipt_handle().unwrap_or_default().to_string(),
                message_id: m.message_id().unwrap_or_default().to_string(),
                group,
                body,
                sequence,
            },
            message,
            count,
        )))
    }
}

/// One worker's view of the queue.
pub struct SqsSource {
    consumer: SqsConsumer,
}

impl JobSource for SqsSource {
    fn claim(&mut self, _owner: &str, settings: &WorkerSettings) -> Result<Option<Job>, String> {
        let c = &self.consumer;
        let Some((held, message, count)) = c.receive(settings.lease_seconds)? else {
            return Ok(None);
        };
        let Some(message) = message else {
            // Not a job of ours: kept for a person where it cannot run again.
            let moved = c.bury(&held)?;
            if !moved {
                c.set_visibility(&held.receipt, MAX_VISIBILITY)?;
            }
            return Err(format!(
                "message {} is not a job (dead-lettered: {moved})",
                held.message_id
            ));
        };
        let id = c.next_id.fetch_add(1, Ordering::SeqCst);
        let sequence = held.sequence.clone();
        if let Ok(mut h) = c.held.lock() {
            h.insert(id, held);
        }
        Ok(Some(Job {
            id,
            delivery: message.delivery,
            key: message.spec.key(),
            spec: message.spec,
            state: JobState::Running,
            attempts: count,
            last_error: None,
            created_at: message.queued_at,
            not_before: chrono::Utc::now().timestamp(),
            sequence,
        }))
    }

    fn keeper(&self) -> Keeper<'_> {
        Box::new(move |job, _owner, lease| {
            self.consumer
                .held(job)
                .and_then(|h| self.consumer.set_visibility(&h.receipt, lease))
                .is_ok()
        })
    }

    fn complete(&mut self, job: &Job, _owner: &str) -> Result<(), String> {
        let held = self.consumer.held(job)?;
        self.consumer.delete(&held.receipt)?;
        self.consumer.forget(job);
        Ok(())
    }

    fn hand_back(&mut self, job: &Job, _owner: &str, wait: u64, _note: &str) -> Result<(), String> {
        // SQS cannot undo a receive: a wait uses one of the redrive policy's receives.
        let held = self.consumer.held(job)?;
        self.consumer.forget(job);
        self.consumer.set_visibility(&held.receipt, wait)
    }

    fn fail(
        &mut self,
        job: &Job,
        _owner: &str,
        f: &JobFailure,
        max_attempts: u32,
    ) -> Result<JobState, String> {
        let held = self.consumer.held(job)?;
        self.consumer.forget(job);
        if f.permanent || job.attempts >= max_attempts {
            // Without a dead-letter queue to move it to, it is hidden as long as SQS
            // allows, until the redrive policy takes it on its next receive.
            if !self.consumer.bury(&held)? {
                self.consumer
                    .set_visibility(&held.receipt, MAX_VISIBILITY)?;
            }
            return Ok(JobState::Dead);
        }
        // As the SQLite queue: 2, 4, 8 … s (at most 10 min), plus up to a quarter more.
        let backoff = (1u64 << job.attempts.min(10)).min(600);
        let jitter = (chrono::Utc::now().timestamp() as u64 ^ job.id as u64) % (backoff / 4 + 1);
        self.consumer
            .set_visibility(&held.receipt, f.retry_after.unwrap_or(backoff + jitter))?;
        Ok(JobState::Queued)
    }
}
