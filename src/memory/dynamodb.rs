//! The [`Memory`] trait on one DynamoDB table, for teams: several machines, CI jobs
//! and the webhook share it.
//!
//! Single-table design; every item has the string keys `pk` and `sk` and a `data`
//! attribute holding the record as JSON (redacted before it is written):
//!
//! | record | `pk` | `sk` |
//! |---|---|---|
//! | schema marker | `META` | `SCHEMA` (`version`: the schema it was written with) |
//! | issue | `REPO#owner/name` | `ISSUE#<number, 12 digits>` (`version`, `seen_at`) |
//! | triage result | `REPO#owner/name` | `TRIAGE#<number>#<created_at>#<run id or ->` |
//! | fix | `REPO#owner/name` | `FIX#<number>#<run id>` |
//! | run | `RUN` | `<run id>` |
//! | learned state (the trained triage model…) | `KV#<key>` | `PART#<4 digits>` (split at 300 KB; `parts` on part 0) |
//!
//! An issue is written with a condition on the `version` it was read at (or on its
//! absence), so two workers never clobber each other: the loser reads again and
//! writes again. Every read pages through `LastEvaluatedKey`. The SDK retries
//! throttling (standard mode, 5 attempts).

use crate::memory::Lease;
use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};

use super::{
    ExportRecord, FixRecord, ImportCounts, IssueSummary, ListFilter, Memory, MemoryError,
    SCHEMA_VERSION, SearchHit, Stats,
};
use crate::issue::Issue;
use crate::redact::Redactor;
use crate::runs::{RunMeta, now_rfc3339};

type Item = HashMap<String, AttributeValue>;

/// Largest `data` chunk of one learned-state item (DynamoDB items stop at 400 KB).
const KV_CHUNK: usize = 300_000;

/// Attempts of a conditional issue write before giving up.
const WRITE_ATTEMPTS: usize = 8;

/// Where the table is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct DynamoSettings {
    /// The table.
    pub table: String,
    /// AWS region (else the standard chain's).
    pub region: Option<String>,
    /// Endpoint override (emulators, VPC endpoints).
    pub endpoint_url: Option<String>,
}

/// Memory in a DynamoDB table.
pub struct DynamoMemory {
    client: Client,
    table: String,
    runtime: tokio::runtime::Runtime,
    redactor: Redactor,
    io: std::sync::Mutex<super::IoCounts>,
}

impl DynamoMemory {
    /// Connect (no request is made until the first read or write).
    pub fn connect(settings: &DynamoSettings, redactor: Redactor) -> Result<Self, MemoryError> {
        let table = settings.table.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| aws_error(&table, format!("could not start the AWS client: {e}")))?;
        let config = crate::aws::load_config(
            &runtime,
            settings.region.as_deref(),
            settings.endpoint_url.as_deref(),
        );
        if config.region().is_none() {
            return Err(unavailable(
                &table,
                "no AWS region is set\n  fix: set memory.region in autotriage.yaml, or AWS_REGION / AWS_DEFAULT_REGION, or a region in your AWS profile".into(),
            ));
        }
        Ok(Self {
            client: Client::new(&config),
            table,
            runtime,
            redactor,
            io: Default::default(),
        })
    }

    /// Create the table (on-demand billing) and write the schema marker. True when it
    /// was created, false when it existed already.
    pub fn init(&self) -> Result<bool, MemoryError> {
        let exists = self
            .runtime
            .block_on(self.client.describe_table().table_name(&self.table).send());
        let created = match exists {
            Ok(_) => false,
            Err(e) if is_missing(&e) => {
                let key = |name: &str, kind: KeyType| {
                    KeySchemaElement::builder()
                        .attribute_name(name)
                        .key_type(kind)
                        .build()
                };
                let attr = |name: &str| {
                    AttributeDefinition::builder()
                        .attribute_name(name)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                };
                let (Ok(pk), Ok(sk), Ok(apk), Ok(ask)) = (
                    key("pk", KeyType::Hash),
                    key("sk", KeyType::Range),
                    attr("pk"),
                    attr("sk"),
                ) else {
                    return Err(aws_error(&self.table, "could not describe the keys".into()));
                };
                self.runtime
                    .block_on(
                        self.client
                            .create_table()
                            .table_name(&self.table)
                            .billing_mode(BillingMode::PayPerRequest)
                            .key_schema(pk)
                            .key_schema(sk)
                            .attribute_definitions(apk)
                            .attribute_definitions(ask)
                            .send(),
                    )
                    .map_err(|e| self.sdk_error("CreateTable", e))?;
                // A new table takes a while to become ACTIVE on AWS.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
                loop {
                    let d = self
                        .runtime
                        .block_on(self.client.describe_table().table_name(&self.table).send())
                        .map_err(|e| self.sdk_error("DescribeTable", e))?;
                    let active = d.table().and_then(|t| t.table_status()).map(|s| s.as_str())
                        == Some("ACTIVE");
                    if active || std::time::Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                // Lapsed leases (`expires_at`, seconds since the epoch) are removed by
                // DynamoDB itself.
                let ttl = aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                    .attribute_name("expires_at")
                    .enabled(true)
                    .build()
                    .map_err(|e| aws_error(&self.table, e.to_string()))?;
                self.runtime
                    .block_on(
                        self.client
                            .update_time_to_live()
                            .table_name(&self.table)
                            .time_to_live_specification(ttl)
                            .send(),
                    )
                    .map_err(|e| self.sdk_error("UpdateTimeToLive", e))?;
                true
            }
            Err(e) => return Err(self.sdk_error("DescribeTable", e)),
        };
        self.check_schema(true)?;
        Ok(created)
    }

    /// Refuse a table written by a newer schema; with `write`, record ours when absent.
    fn check_schema(&self, write: bool) -> Result<(), MemoryError> {
        let item = self.get("META", "SCHEMA")?;
        match item.as_ref().and_then(|i| num(i, "version")) {
            Some(v) if v as i64 > SCHEMA_VERSION => Err(MemoryError::NewerSchema {
                path: self.location().into(),
                found: v as i64,
                supported: SCHEMA_VERSION,
            }),
            Some(_) => Ok(()),
            None if write => {
                let mut i = keys("META", "SCHEMA");
                i.insert(
                    "version".into(),
                    AttributeValue::N(SCHEMA_VERSION.to_string()),
                );
                self.put(i, None)
            }
            None => Ok(()),
        }
    }

    /// Count a request and the time it took.
    fn count(&self, write: bool, started: std::time::Instant) {
        if let Ok(mut io) = self.io.lock() {
            if write {
                io.writes += 1;
            } else {
                io.reads += 1;
            }
            io.millis += started.elapsed().as_secs_f64() * 1000.0;
        }
    }

    fn sdk_error<E, R>(&self, action: &str, e: SdkError<E, R>) -> MemoryError
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::fmt::Debug,
        R: std::fmt::Debug,
    {
        let code = match &e {
            SdkError::ServiceError(s) => s.err().code().map(String::from),
            _ => None,
        };
        let message = match &e {
            SdkError::ServiceError(s) => s.err().message().map(String::from),
            _ => None,
        };
        let debug = format!("{e:?}");
        let detail = match code.as_deref() {
            Some("ResourceNotFoundException") => {
                return unavailable(
                    &self.table,
                    format!(
                        "the table {} does not exist\n  fix: create it with `autotriage memory init` (on-demand billing), or correct memory.table",
                        self.table
                    ),
                );
            }
            Some("UnrecognizedClientException")
            | Some("ExpiredTokenException")
            | Some("InvalidSignatureException") => {
                return unavailable(
                    &self.table,
                    format!(
                        "the AWS credentials were refused ({}: {})\n  fix: check AWS_PROFILE / AWS_ACCESS_KEY_ID, or run `aws sso login`",
                        code.as_deref().unwrap_or(""),
                        message.unwrap_or_default()
                    ),
                );
            }
            Some("AccessDeniedException") => format!(
                "access denied to dynamodb:{action} on table {}: {}\n  fix: allow dynamodb:{action} on the table for these credentials (AWS_PROFILE / AWS_ACCESS_KEY_ID)",
                self.table,
                message.unwrap_or_default()
            ),
            Some(c) => format!(
                "dynamodb:{action} failed: {c}: {}",
                message.unwrap_or_default()
            ),
            None if crate::aws::credentials_missing(&debug) => {
                return unavailable(
                    &self.table,
                    "no AWS credentials could be loaded\n  fix: set AWS_PROFILE (and run `aws sso login` for SSO profiles), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
                );
            }
            None => format!(
                "dynamodb:{action} failed: {}",
                match &e {
                    SdkError::DispatchFailure(_) =>
                        "could not reach DynamoDB (check memory.endpoint_url and the network)"
                            .to_string(),
                    SdkError::TimeoutError(_) => "timed out".to_string(),
                    _ => debug.chars().take(300).collect(),
                }
            ),
        };
        aws_error(&self.table, detail)
    }

    fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, MemoryError> {
        let started = std::time::Instant::now();
        let out = self
            .runtime
            .block_on(
                self.client
                    .get_item()
                    .table_name(&self.table)
                    .set_key(Some(keys(pk, sk)))
                    .consistent_read(true)
                    .send(),
            )
            .map_err(|e| self.sdk_error("GetItem", e))?;
        self.count(false, started);
        Ok(out.item)
    }

    /// Put an item; with `version`, only if the stored one is at that version (`0`:
    /// only if absent). `Ok(false)`-like conflicts come back as `Err(None)` through
    /// [`DynamoMemory::put_versioned`].
    fn put(&self, item: Item, condition: Option<(&str, Item)>) -> Result<(), MemoryError> {
        let started = std::time::Instant::now();
        let result = self
            .runtime
            .block_on(async {
                let mut req = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item));
                if let Some((expr, values)) = condition {
                    req = req.condition_expression(expr);
                    if !values.is_empty() {
                        req = req.set_expression_attribute_values(Some(values));
                    }
                }
                req.send().await
            })
            .map(|_| ())
            .map_err(|e| self.sdk_error("PutItem", e));
        self.count(true, started);
        result
    }

    /// Write an issue item only if the stored one is still at `expected` (0: absent).
    /// `Ok(false)` when another writer got there first.
    pub fn put_versioned(&self, mut item: Item, expected: u64) -> Result<bool, MemoryError> {
        item.insert(
            "version".into(),
            AttributeValue::N((expected + 1).to_string()),
        );
        let started = std::time::Instant::now();
        let result = self.runtime.block_on(async {
            let req = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item));
            let req = if expected == 0 {
                req.condition_expression("attribute_not_exists(pk)")
            } else {
                req.condition_expression("version = :v")
                    .expression_attribute_values(":v", AttributeValue::N(expected.to_string()))
            };
            req.send().await
        });
        self.count(true, started);
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(s)) if s.err().is_conditional_check_failed_exception() => {
                Ok(false)
            }
            Err(e) => Err(self.sdk_error("PutItem", e)),
        }
    }

    /// The stored version of an issue (0: absent).
    pub fn issue_version(&self, repo: &str, number: u64) -> Result<u64, MemoryError> {
        Ok(self
            .get(&repo_pk(repo), &issue_sk(number))?
            .and_then(|i| num(&i, "version"))
            .unwrap_or(0))
    }

    /// The item for an issue (redacted), without its version.
    pub fn issue_item(&self, issue: &Issue, seen_at: &str) -> Result<Item, MemoryError> {
        let mut issue = self
            .redactor
            .redact_value(&self.redactor.redact_issue(issue));
        // What the SQLite memory does not keep is not kept here either: the backends
        // hold the same records (and a stored trust decision could go stale).
        issue.trigger_label_added_by = None;
        issue.locked = false;
        let mut item = keys(&repo_pk(&issue.repo), &issue_sk(issue.number));
        item.insert("data".into(), AttributeValue::S(to_json(&issue)?));
        item.insert("seen_at".into(), AttributeValue::S(seen_at.into()));
        Ok(item)
    }

    /// Insert or replace one issue with a conditional write, reading again after a
    /// conflict. True when it was new.
    fn upsert_one(&self, issue: &Issue, seen_at: &str) -> Result<bool, MemoryError> {
        let item = self.issue_item(issue, seen_at)?;
        for _ in 0..WRITE_ATTEMPTS {
            let version = self.issue_version(&issue.repo, issue.number)?;
            if self.put_versioned(item.clone(), version)? {
                return Ok(version == 0);
            }
        }
        Err(aws_error(
            &self.table,
            format!(
                "{}#{} changed under every one of {WRITE_ATTEMPTS} writes\n  fix: run again when the other writers are done",
                issue.repo, issue.number
            ),
        ))
    }

    /// Every item whose `pk` is `pk` and whose `sk` starts with `prefix`, paged.
    fn query(&self, pk: &str, prefix: &str) -> Result<Vec<Item>, MemoryError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let started = std::time::Instant::now();
            let page = self
                .runtime
                .block_on(
                    self.client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                        .expression_attribute_values(":pk", AttributeValue::S(pk.into()))
                        .expression_attribute_values(":p", AttributeValue::S(prefix.into()))
                        .consistent_read(true)
                        .set_exclusive_start_key(start.take())
                        .send(),
                )
                .map_err(|e| self.sdk_error("Query", e))?;
            self.count(false, started);
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Every item of the table, paged.
    fn scan(&self) -> Result<Vec<Item>, MemoryError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let started = std::time::Instant::now();
            let page = self
                .runtime
                .block_on(
                    self.client
                        .scan()
                        .table_name(&self.table)
                        .consistent_read(true)
                        .set_exclusive_start_key(start.take())
                        .send(),
                )
                .map_err(|e| self.sdk_error("Scan", e))?;
            self.count(false, started);
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    fn delete(&self, pk: &str, sk: &str) -> Result<(), MemoryError> {
        self.count(true, std::time::Instant::now());
        self.runtime
            .block_on(
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(keys(pk, sk)))
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| self.sdk_error("DeleteItem", e))
    }

    /// Every issue with its `seen_at`, by repository and number.
    fn issues_with_seen(&self) -> Result<Vec<(Issue, String)>, MemoryError> {
        let mut out = Vec::new();
        for item in self.scan()? {
            if sk_of(&item).starts_with("ISSUE#") && pk_of(&item).starts_with("REPO#") {
                let issue: Issue = from_item(&item, &self.table)?;
                let seen = text(&item, "seen_at").unwrap_or_default();
                out.push((issue, seen));
            }
        }
        out.sort_by(|a, b| (&a.0.repo, a.0.number).cmp(&(&b.0.repo, b.0.number)));
        Ok(out)
    }

    fn triage_item(
        &self,
        repo: &str,
        number: u64,
        run_id: Option<&str>,
        created_at: &str,
        result: &serde_json::Value,
    ) -> Result<Item, MemoryError> {
        let mut result = result.clone();
        self.redactor.redact_json(&mut result);
        let mut item = keys(
            &repo_pk(repo),
            &format!(
                "TRIAGE#{number:012}#{created_at}#{}",
                match run_id {
                    Some(r) => r.to_string(),
                    // Without a run id, results of one second are told apart (as SQLite
                    // keeps each NULL-run row).
                    None => format!(
                        "-{:09}",
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.subsec_nanos())
                            .unwrap_or(0)
                    ),
                }
            ),
        );
        let record = serde_json::json!({
            "repo": repo, "number": number, "run_id": run_id,
            "created_at": created_at, "result": result,
        });
        item.insert("data".into(), AttributeValue::S(record.to_string()));
        Ok(item)
    }

    fn fix_item(&self, fix: &FixRecord) -> Result<Item, MemoryError> {
        let mut item = keys(
            &repo_pk(&fix.repo),
            &format!("FIX#{:012}#{}", fix.number, fix.run_id),
        );
        item.insert(
            "data".into(),
            AttributeValue::S(to_json(&self.redactor.redact_value(fix))?),
        );
        Ok(item)
    }

    fn run_item(&self, meta: &RunMeta) -> Result<Item, MemoryError> {
        let mut item = keys("RUN", &meta.id);
        item.insert(
            "data".into(),
            AttributeValue::S(to_json(&self.redactor.redact_value(meta))?),
        );
        Ok(item)
    }

    fn put_kv_at(
        &self,
        key: &str,
        value: &serde_json::Value,
        updated_at: &str,
    ) -> Result<(), MemoryError> {
        let text = value.to_string();
        let mut chunks: Vec<&str> = Vec::new();
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let mut end = rest.len().min(KV_CHUNK);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            chunks.push(&rest[..end]);
            rest = &rest[end..];
        }
        if chunks.is_empty() {
            chunks.push("");
        }
        // The parts go under a new generation; the HEAD item naming it is written last,
        // so a reader sees the old value or the new one, never a mix, and a crash
        // midway leaves the old value whole. Older generations are removed after.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let generation = format!("{nanos:020}");
        let pk = format!("KV#{key}");
        for (i, chunk) in chunks.iter().enumerate() {
            let mut item = keys(&pk, &format!("PART#{generation}#{i:04}"));
            item.insert("data".into(), AttributeValue::S((*chunk).to_string()));
            self.put(item, None)?;
        }
        let mut head = keys(&pk, "HEAD");
        head.insert("generation".into(), AttributeValue::S(generation.clone()));
        head.insert("parts".into(), AttributeValue::N(chunks.len().to_string()));
        head.insert("updated_at".into(), AttributeValue::S(updated_at.into()));
        self.put(head, None)?;
        for item in self.query(&pk, "PART#")? {
            let sk = sk_of(&item);
            if !sk.starts_with(&format!("PART#{generation}#")) {
                self.delete(&pk, &sk)?;
            }
        }
        Ok(())
    }

    fn get_kv_with_time(
        &self,
        key: &str,
    ) -> Result<Option<(serde_json::Value, String)>, MemoryError> {
        let pk = format!("KV#{key}");
        // A writer may replace the value between reading HEAD and its parts: read again.
        let mut joined = String::new();
        let mut head_item = None;
        for _ in 0..3 {
            let Some(head) = self.get(&pk, "HEAD")? else {
                return Ok(None);
            };
            let generation = text_of(&head, "generation");
            let count = num(&head, "parts").unwrap_or(1) as usize;
            let mut parts = self.query(&pk, &format!("PART#{generation}#"))?;
            parts.sort_by_key(sk_of);
            if parts.len() == count {
                joined = parts.iter().filter_map(|i| text(i, "data")).collect();
                head_item = Some(head);
                break;
            }
        }
        let Some(first) = head_item else {
            return Err(MemoryError::Corrupt {
                path: self.location().into(),
                detail: format!("learned state {key} kept changing while it was read"),
            });
        };
        let text = joined;
        let value = serde_json::from_str(&text).map_err(|e| MemoryError::Corrupt {
            path: self.location().into(),
            detail: format!("learned state {key} does not parse: {e}"),
        })?;
        Ok(Some((value, text_of(&first, "updated_at"))))
    }
}

fn aws_error(table: &str, detail: String) -> MemoryError {
    MemoryError::Database {
        path: format!("dynamodb:{table}").into(),
        detail,
    }
}

fn unavailable(table: &str, detail: String) -> MemoryError {
    MemoryError::Unavailable {
        location: format!("dynamodb:{table}"),
        detail,
    }
}

fn is_missing<E, R>(e: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    matches!(e, SdkError::ServiceError(s) if s.err().code() == Some("ResourceNotFoundException"))
}

fn keys(pk: &str, sk: &str) -> Item {
    let mut m = HashMap::new();
    m.insert("pk".to_string(), AttributeValue::S(pk.into()));
    m.insert("sk".to_string(), AttributeValue::S(sk.into()));
    m
}

fn repo_pk(repo: &str) -> String {
    format!("REPO#{repo}")
}

fn issue_sk(number: u64) -> String {
    format!("ISSUE#{number:012}")
}

fn text(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    }
}

fn text_of(item: &Item, name: &str) -> String {
    text(item, name).unwrap_or_default()
}

fn pk_of(item: &Item) -> String {
    text_of(item, "pk")
}

fn sk_of(item: &Item) -> String {
    text_of(item, "sk")
}

fn num(item: &Item, name: &str) -> Option<u64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, MemoryError> {
    serde_json::to_string(value).map_err(|e| MemoryError::BadRecord {
        location: "memory".into(),
        message: e.to_string(),
    })
}

fn from_item<T: serde::de::DeserializeOwned>(item: &Item, table: &str) -> Result<T, MemoryError> {
    serde_json::from_str(&text_of(item, "data")).map_err(|e| MemoryError::Corrupt {
        path: format!("dynamodb:{table}").into(),
        detail: format!(
            "item {} / {} does not parse ({e}); it may come from a newer autotriage",
            pk_of(item),
            sk_of(item)
        ),
    })
}

fn summary(issue: &Issue) -> IssueSummary {
    IssueSummary {
        reference: format!("{}#{}", issue.repo, issue.number),
        title: issue.title.clone(),
        state: issue.state.as_str().to_string(),
        labels: issue.labels.clone(),
    }
}

impl Memory for DynamoMemory {
    fn begin_batch(&mut self) -> Result<(), MemoryError> {
        Ok(())
    }

    fn end_batch(&mut self) -> Result<(), MemoryError> {
        Ok(())
    }

    fn upsert_issues(
        &mut self,
        issues: &[Issue],
        stop: &dyn Fn() -> bool,
    ) -> Result<ImportCounts, MemoryError> {
        self.check_schema(true)?;
        let seen_at = now_rfc3339();
        let mut counts = ImportCounts::default();
        for issue in issues {
            // Each issue is its own write; what was written before a stop stays.
            if stop() {
                return Err(MemoryError::Interrupted);
            }
            if self.upsert_one(issue, &seen_at)? {
                counts.inserted += 1;
            } else {
                counts.updated += 1;
            }
        }
        Ok(counts)
    }

    fn import_records(
        &mut self,
        records: &[ExportRecord],
        stop: &dyn Fn() -> bool,
    ) -> Result<ImportCounts, MemoryError> {
        self.check_schema(true)?;
        let mut counts = ImportCounts::default();
        for record in records {
            if stop() {
                return Err(MemoryError::Interrupted);
            }
            match record {
                ExportRecord::Header { .. } => {}
                ExportRecord::Issue { issue, seen_at } => {
                    if self.upsert_one(issue, seen_at)? {
                        counts.inserted += 1;
                    } else {
                        counts.updated += 1;
                    }
                }
                ExportRecord::Triage {
                    repo,
                    number,
                    run_id,
                    created_at,
                    result,
                } => {
                    let item =
                        self.triage_item(repo, *number, run_id.as_deref(), created_at, result)?;
                    self.put(item, None)?;
                    counts.other += 1;
                }
                ExportRecord::Run { meta } => {
                    self.put(self.run_item(meta)?, None)?;
                    counts.other += 1;
                }
                ExportRecord::Fix { fix } => {
                    self.put(self.fix_item(fix)?, None)?;
                    counts.other += 1;
                }
                ExportRecord::Kv {
                    key,
                    value,
                    updated_at,
                } => {
                    self.put_kv_at(key, value, updated_at)?;
                    counts.other += 1;
                }
            }
        }
        Ok(counts)
    }

    fn issue(&self, repo: &str, number: u64) -> Result<Option<Issue>, MemoryError> {
        self.check_schema(false)?;
        match self.get(&repo_pk(repo), &issue_sk(number))? {
            Some(item) => Ok(Some(from_item(&item, &self.table)?)),
            None => Ok(None),
        }
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<IssueSummary>, MemoryError> {
        let issues: Vec<Issue> = match &filter.repo {
            Some(repo) => {
                let mut v: Vec<Issue> = self
                    .query(&repo_pk(repo), "ISSUE#")?
                    .iter()
                    .map(|i| from_item(i, &self.table))
                    .collect::<Result<_, _>>()?;
                v.sort_by_key(|i| i.number);
                v
            }
            None => self
                .issues_with_seen()?
                .into_iter()
                .map(|(i, _)| i)
                .collect(),
        };
        Ok(issues
            .iter()
            .filter(|i| {
                filter
                    .state
                    .as_deref()
                    .is_none_or(|s| i.state.as_str() == s)
            })
            .filter(|i| {
                filter
                    .label
                    .as_deref()
                    .is_none_or(|l| i.labels.iter().any(|x| x.eq_ignore_ascii_case(l)))
            })
            .take(filter.limit.unwrap_or(usize::MAX))
            .map(summary)
            .collect())
    }

    fn search(&self, text: &str, limit: usize) -> Result<Vec<SearchHit>, MemoryError> {
        // BM25 over title (weight 3), body and labels, as the SQLite memory's FTS5
        // ranks; scores mapped to 0..1 the same way.
        let mut query = super::search_words(text);
        query.sort();
        query.dedup();
        if query.is_empty() {
            return Ok(Vec::new());
        }
        let issues = self.all_issues()?;
        let docs: Vec<[Vec<String>; 3]> = issues
            .iter()
            .map(|i| {
                [
                    super::search_words(&i.title),
                    super::search_words(&i.body),
                    super::search_words(&i.labels.join(" ")),
                ]
            })
            .collect();
        let n = docs.len().max(1) as f64;
        let avg: [f64; 3] =
            std::array::from_fn(|f| docs.iter().map(|d| d[f].len() as f64).sum::<f64>() / n);
        let weights = [3.0, 1.0, 1.0];
        let (k1, b) = (1.2, 0.75);
        let mut hits: Vec<(f64, usize)> = Vec::new();
        let idfs: Vec<Option<f64>> = query
            .iter()
            .map(|q| {
                let df = docs
                    .iter()
                    .filter(|d| d.iter().any(|f| f.contains(q)))
                    .count() as f64;
                (df > 0.0).then(|| ((n - df + 0.5) / (df + 0.5) + 1.0).ln())
            })
            .collect();
        for (di, d) in docs.iter().enumerate() {
            let mut score = 0.0;
            for (q, idf) in query.iter().zip(&idfs) {
                let Some(idf) = *idf else {
                    continue;
                };
                for f in 0..3 {
                    let tf = d[f].iter().filter(|w| *w == q).count() as f64;
                    if tf > 0.0 {
                        let norm = 1.0 - b + b * d[f].len() as f64 / avg[f].max(1.0);
                        score += weights[f] * idf * tf * (k1 + 1.0) / (tf + k1 * norm);
                    }
                }
            }
            if score > 0.0 {
                hits.push((score, di));
            }
        }
        hits.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        Ok(hits
            .into_iter()
            .take(limit)
            .map(|(score, di)| SearchHit {
                issue: summary(&issues[di]),
                score: score / (score + 10.0),
            })
            .collect())
    }

    fn stats(&self) -> Result<Stats, MemoryError> {
        self.check_schema(false)?;
        let items = self.scan()?;
        let mut stats = Stats {
            schema_version: SCHEMA_VERSION,
            ..Default::default()
        };
        let mut labels: BTreeMap<String, u64> = BTreeMap::new();
        for item in &items {
            let sk = sk_of(item);
            if pk_of(item) == "RUN" {
                stats.runs += 1;
            } else if sk.starts_with("TRIAGE#") {
                stats.triage_results += 1;
            } else if sk.starts_with("ISSUE#") {
                let issue: Issue = from_item(item, &self.table)?;
                stats.issues += 1;
                match issue.state.as_str() {
                    "open" => stats.open += 1,
                    _ => stats.closed += 1,
                }
                if !issue.labels.is_empty() {
                    stats.labelled += 1;
                }
                *stats.repos.entry(issue.repo.clone()).or_insert(0) += 1;
                for l in issue.labels {
                    *labels.entry(l).or_insert(0) += 1;
                }
            }
        }
        let mut top: Vec<(String, u64)> = labels.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        stats.labels = top.into_iter().take(25).collect();
        Ok(stats)
    }

    fn forget(&mut self, repo: &str, number: u64) -> Result<bool, MemoryError> {
        let existed = self.get(&repo_pk(repo), &issue_sk(number))?.is_some();
        for prefix in [
            format!("TRIAGE#{number:012}#"),
            format!("FIX#{number:012}#"),
        ] {
            for item in self.query(&repo_pk(repo), &prefix)? {
                self.delete(&repo_pk(repo), &sk_of(&item))?;
            }
        }
        self.delete(&repo_pk(repo), &issue_sk(number))?;
        Ok(existed)
    }

    fn record_triage(
        &mut self,
        repo: &str,
        number: u64,
        run_id: Option<&str>,
        result: &serde_json::Value,
    ) -> Result<(), MemoryError> {
        let item = self.triage_item(repo, number, run_id, &now_rfc3339(), result)?;
        self.put(item, None)
    }

    fn triage_results(
        &self,
        repo: &str,
        number: u64,
    ) -> Result<Vec<serde_json::Value>, MemoryError> {
        let mut items = self.query(&repo_pk(repo), &format!("TRIAGE#{number:012}#"))?;
        items.sort_by_key(sk_of);
        items
            .iter()
            .map(|i| from_item::<serde_json::Value>(i, &self.table).map(|v| v["result"].clone()))
            .collect()
    }

    fn record_run(&mut self, meta: &RunMeta) -> Result<(), MemoryError> {
        self.put(self.run_item(meta)?, None)
    }

    fn all_issues(&self) -> Result<Vec<Issue>, MemoryError> {
        self.check_schema(false)?;
        Ok(self
            .issues_with_seen()?
            .into_iter()
            .map(|(i, _)| i)
            .collect())
    }

    fn acquire_lease(
        &mut self,
        key: &str,
        holder: &str,
        ttl_seconds: u64,
    ) -> Result<Option<Lease>, MemoryError> {
        let now = chrono::Utc::now().timestamp();
        let pk = format!("LEASE#{key}");
        let mut item = keys(&pk, "LEASE");
        item.insert("holder".into(), AttributeValue::S(holder.into()));
        // `expires_at` is the table's TTL attribute: a lapsed lease is also removed.
        item.insert(
            "expires_at".into(),
            AttributeValue::N((now + ttl_seconds as i64).to_string()),
        );
        let started = std::time::Instant::now();
        let result = self.runtime.block_on(
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(
                    "attribute_not_exists(pk) OR expires_at < :now OR holder = :me",
                )
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                .expression_attribute_values(":me", AttributeValue::S(holder.into()))
                .send(),
        );
        self.count(true, started);
        match result {
            Ok(_) => Ok(None),
            Err(SdkError::ServiceError(s)) if s.err().is_conditional_check_failed_exception() => {
                let standing = self.get(&pk, "LEASE")?;
                Ok(Some(Lease {
                    holder: standing
                        .as_ref()
                        .and_then(|i| text(i, "holder"))
                        .unwrap_or_else(|| "another process".into()),
                    expires_at: standing
                        .as_ref()
                        .and_then(|i| num(i, "expires_at"))
                        .map_or(now, |n| n as i64),
                }))
            }
            Err(e) => Err(self.sdk_error("PutItem", e)),
        }
    }

    fn release_lease(&mut self, key: &str, holder: &str) -> Result<(), MemoryError> {
        let started = std::time::Instant::now();
        let result = self.runtime.block_on(
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(keys(&format!("LEASE#{key}"), "LEASE")))
                .condition_expression("holder = :me")
                .expression_attribute_values(":me", AttributeValue::S(holder.into()))
                .send(),
        );
        self.count(true, started);
        match result {
            Ok(_) => Ok(()),
            // Taken over after it lapsed: not ours to remove.
            Err(SdkError::ServiceError(s)) if s.err().is_conditional_check_failed_exception() => {
                Ok(())
            }
            Err(e) => Err(self.sdk_error("DeleteItem", e)),
        }
    }

    fn get_kv(&self, key: &str) -> Result<Option<serde_json::Value>, MemoryError> {
        Ok(self.get_kv_with_time(key)?.map(|(v, _)| v))
    }

    fn put_kv(&mut self, key: &str, value: &serde_json::Value) -> Result<(), MemoryError> {
        self.put_kv_at(key, value, &now_rfc3339())
    }

    fn record_fix(&mut self, fix: &FixRecord) -> Result<(), MemoryError> {
        self.put(self.fix_item(fix)?, None)
    }

    fn fixes(&self, repo: &str, number: u64) -> Result<Vec<FixRecord>, MemoryError> {
        let mut items = self.query(&repo_pk(repo), &format!("FIX#{number:012}#"))?;
        items.sort_by_key(sk_of);
        let mut out: Vec<FixRecord> = items
            .iter()
            .map(|i| from_item(i, &self.table))
            .collect::<Result<_, _>>()?;
        out.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.run_id.cmp(&b.run_id))
        });
        Ok(out)
    }

    fn export(&self) -> Result<Vec<ExportRecord>, MemoryError> {
        self.check_schema(false)?;
        let items = self.scan()?;
        let mut out = vec![ExportRecord::Header {
            schema_version: SCHEMA_VERSION,
            tool: "autotriage".into(),
        }];
        let mut issues = Vec::new();
        let mut triage = Vec::new();
        let mut runs = Vec::new();
        let mut fixes = Vec::new();
        let mut kv_keys = Vec::new();
        for item in &items {
            let (pk, sk) = (pk_of(item), sk_of(item));
            if pk == "RUN" {
                runs.push(from_item::<RunMeta>(item, &self.table)?);
            } else if let Some(key) = pk.strip_prefix("KV#") {
                if sk == "HEAD" {
                    kv_keys.push(key.to_string());
                }
            } else if sk.starts_with("ISSUE#") {
                let issue: Issue = from_item(item, &self.table)?;
                issues.push((issue, text_of(item, "seen_at")));
            } else if sk.starts_with("TRIAGE#") {
                triage.push(from_item::<serde_json::Value>(item, &self.table)?);
            } else if sk.starts_with("FIX#") {
                fixes.push(from_item::<FixRecord>(item, &self.table)?);
            }
        }
        issues.sort_by(|a, b| (&a.0.repo, a.0.number).cmp(&(&b.0.repo, b.0.number)));
        for (issue, seen_at) in issues {
            out.push(ExportRecord::Issue {
                issue: Box::new(issue),
                seen_at,
            });
        }
        let key = |v: &serde_json::Value| {
            (
                v["repo"].as_str().unwrap_or("").to_string(),
                v["number"].as_u64().unwrap_or(0),
                v["created_at"].as_str().unwrap_or("").to_string(),
                v["run_id"].as_str().map(String::from),
            )
        };
        triage.sort_by_key(key);
        for v in triage {
            out.push(ExportRecord::Triage {
                repo: v["repo"].as_str().unwrap_or("").into(),
                number: v["number"].as_u64().unwrap_or(0),
                run_id: v["run_id"].as_str().map(String::from),
                created_at: v["created_at"].as_str().unwrap_or("").into(),
                result: v["result"].clone(),
            });
        }
        runs.sort_by(|a, b| a.id.cmp(&b.id));
        for meta in runs {
            out.push(ExportRecord::Run {
                meta: Box::new(meta),
            });
        }
        fixes.sort_by(|a, b| {
            (&a.repo, a.number, &a.created_at, &a.run_id).cmp(&(
                &b.repo,
                b.number,
                &b.created_at,
                &b.run_id,
            ))
        });
        for fix in fixes {
            out.push(ExportRecord::Fix { fix });
        }
        kv_keys.sort();
        for key in kv_keys {
            if let Some((value, updated_at)) = self.get_kv_with_time(&key)? {
                out.push(ExportRecord::Kv {
                    key,
                    value,
                    updated_at,
                });
            }
        }
        Ok(out)
    }

    fn location(&self) -> String {
        format!("dynamodb:{}", self.table)
    }

    fn io_counts(&self) -> Option<super::IoCounts> {
        self.io.lock().ok().map(|io| *io)
    }

    fn latest_triage(
        &self,
        repo: &str,
        number: u64,
    ) -> Result<Option<(String, serde_json::Value)>, MemoryError> {
        let mut items = self.query(&repo_pk(repo), &format!("TRIAGE#{number:012}#"))?;
        items.sort_by_key(sk_of);
        match items.last() {
            Some(i) => {
                let v: serde_json::Value = from_item(i, &self.table)?;
                Ok(Some((
                    v["created_at"].as_str().unwrap_or("").to_string(),
                    v["result"].clone(),
                )))
            }
            None => Ok(None),
        }
    }
}
