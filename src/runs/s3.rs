//! The run store on S3, for teams: the same run layout under `s3://BUCKET/PREFIX/<run
//! id>/<file>`. A run is written to the local run folder as it goes (its working
//! copy, and the issue lock) and every file is uploaded when written; `runs list`,
//! `runs show`, `pr --run` and a resumed `fix` read from the bucket, so a run started
//! on one machine is seen on another. Files over 8 MiB go up in parts (multipart).

use std::path::Path;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::{RunMeta, RunStoreError};

/// Files larger than this are uploaded in parts of this size.
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// Where the runs are kept.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// Key prefix (`autotriage/runs` by default).
    pub prefix: String,
    /// AWS region (else the standard chain's).
    pub region: Option<String>,
    /// Endpoint override (emulators, VPC endpoints); path-style addressing with it.
    pub endpoint_url: Option<String>,
}

/// Runs in a bucket.
#[derive(Debug)]
pub struct S3Runs {
    client: Client,
    runtime: tokio::runtime::Runtime,
    /// The bucket.
    pub bucket: String,
    prefix: String,
    region: Option<String>,
}

fn remote(detail: String) -> RunStoreError {
    RunStoreError::Remote { detail }
}

impl S3Runs {
    /// Connect (no request is made yet).
    pub fn connect(s: &S3Settings) -> Result<Self, RunStoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| remote(format!("could not start the AWS client: {e}")))?;
        let config =
            crate::aws::load_config(&runtime, s.region.as_deref(), s.endpoint_url.as_deref());
        if config.region().is_none() {
            return Err(RunStoreError::Unavailable {
                detail: format!(
                    "s3://{}: no AWS region is set\n  fix: set runs.region in autotriage.yaml, or AWS_REGION / AWS_DEFAULT_REGION",
                    s.bucket
                ),
            });
        }
        let conf = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(s.endpoint_url.is_some())
            .build();
        Ok(Self {
            client: Client::from_conf(conf),
            runtime,
            bucket: s.bucket.clone(),
            prefix: s.prefix.trim_matches('/').to_string(),
            region: config.region().map(|r| r.to_string()),
        })
    }

    fn key(&self, id: &str, name: &str) -> String {
        if self.prefix.is_empty() {
            format!("{id}/{name}")
        } else {
            format!("{}/{id}/{name}", self.prefix)
        }
    }

    fn run_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    fn error<E, R>(&self, action: &str, e: SdkError<E, R>) -> RunStoreError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
        R: std::fmt::Debug,
    {
        let (code, message) = match &e {
            SdkError::ServiceError(s) => (
                s.err().code().map(String::from),
                s.err().message().map(String::from),
            ),
            _ => (None, None),
        };
        let debug = format!("{e:?}");
        match code.as_deref() {
            Some("NoSuchBucket") => RunStoreError::Unavailable {
                detail: format!(
                    "the bucket {} does not exist\n  fix: create it with `autotriage memory init` (runs.backend: s3), or correct runs.bucket",
                    self.bucket
                ),
            },
            Some("InvalidAccessKeyId") | Some("SignatureDoesNotMatch") | Some("ExpiredToken") => {
                RunStoreError::Unavailable {
                    detail: format!(
                        "the AWS credentials were refused by S3 ({}: {})\n  fix: check AWS_PROFILE / AWS_ACCESS_KEY_ID, or run `aws sso login`",
                        code.as_deref().unwrap_or(""),
                        message.unwrap_or_default()
                    ),
                }
            }
            Some("AccessDenied") => {
                remote(format!(
                    "access denied to s3:{action} on s3://{}/{}: {}\n  fix: allow s3:{action} on the bucket for these credentials",
                    self.bucket,
                    self.prefix,
                    message.unwrap_or_default()
                ))
            }
            Some(c) => remote(format!("s3:{action} failed: {c}: {}", message.unwrap_or_default())),
            None if crate::aws::credentials_missing(&debug) => {
                RunStoreError::Unavailable {
                    detail: "no AWS credentials could be loaded\n  fix: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
                }
            }
            None => remote(format!(
                "s3:{action} on s3://{} failed: {}",
                self.bucket,
                match &e {
                    SdkError::DispatchFailure(_) => {
                        "could not reach S3 (check runs.endpoint_url and the network)".to_string()
                    }
                    _ => debug.chars().take(300).collect(),
                }
            )),
        }
    }

    /// Create the bucket; false when it exists already.
    pub fn init(&self) -> Result<bool, RunStoreError> {
        let exists = self
            .runtime
            .block_on(self.client.head_bucket().bucket(&self.bucket).send());
        match exists {
            Ok(_) => return Ok(false),
            // Only a bucket that is not there is made; a refusal is reported.
            Err(SdkError::ServiceError(s)) if s.err().is_not_found() => {}
            Err(e) => return Err(self.error("HeadBucket", e)),
        }
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        if let Some(r) = self.region.as_deref().filter(|r| *r != "us-east-1") {
            req = req.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(r))
                    .build(),
            );
        }
        self.runtime
            .block_on(req.send())
            .map_err(|e| self.error("CreateBucket", e))?;
        Ok(true)
    }

    /// Upload one file of a run (in parts when large).
    pub fn put(&self, id: &str, name: &str, bytes: &[u8]) -> Result<(), RunStoreError> {
        let key = self.key(id, name);
        if bytes.len() <= PART_BYTES {
            return self
                .runtime
                .block_on(
                    self.client
                        .put_object()
                        .bucket(&self.bucket)
                        .key(&key)
                        .body(ByteStream::from(bytes.to_vec()))
                        .send(),
                )
                .map(|_| ())
                .map_err(|e| self.error("PutObject", e));
        }
        self.runtime.block_on(async {
            let upload = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| self.error("CreateMultipartUpload", e))?;
            let upload_id = upload.upload_id().unwrap_or_default().to_string();
            let mut parts = Vec::new();
            for (i, chunk) in bytes.chunks(PART_BYTES).enumerate() {
                let n = i as i32 + 1;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .body(ByteStream::from(chunk.to_vec()))
                    .send()
                    .await;
                let part = match part {
                    Ok(p) => p,
                    Err(e) => {
                        // Leave no half upload behind.
                        let _ = self
                            .client
                            .abort_multipart_upload()
                            .bucket(&self.bucket)
                            .key(&key)
                            .upload_id(&upload_id)
                            .send()
                            .await;
                        return Err(self.error("UploadPart", e));
                    }
                };
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(part.e_tag().map(String::from))
                        .build(),
                );
            }
            let done = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await;
            match done {
                Ok(_) => Ok(()),
                Err(e) => {
                    let _ = self
                        .client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(&key)
                        .upload_id(&upload_id)
                        .send()
                        .await;
                    Err(self.error("CompleteMultipartUpload", e))
                }
            }
        })
    }

    /// One file of a run; `None` when it is not there.
    pub fn get(&self, id: &str, name: &str) -> Result<Option<Vec<u8>>, RunStoreError> {
        let got = self.runtime.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.key(id, name))
                .send()
                .await;
            match out {
                Ok(o) => o
                    .body
                    .collect()
                    .await
                    .map(|b| Some(b.into_bytes().to_vec()))
                    .map_err(|e| remote(format!("s3:GetObject: {e}"))),
                Err(SdkError::ServiceError(s)) if s.err().is_no_such_key() => Ok(None),
                Err(e) => Err(self.error("GetObject", e)),
            }
        })?;
        Ok(got)
    }

    /// Every key under the store's prefix with its size, paged.
    fn keys(&self, under: &str) -> Result<Vec<(String, u64)>, RunStoreError> {
        self.runtime.block_on(async {
            let mut out = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(under)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| self.error("ListObjectsV2", e))?;
                for o in page.contents() {
                    if let Some(k) = o.key() {
                        out.push((k.to_string(), o.size().unwrap_or(0).max(0) as u64));
                    }
                }
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.into()),
                    _ => break,
                }
            }
            Ok(out)
        })
    }

    /// Every run's `run.json`, newest first.
    pub fn list(&self) -> Result<Vec<RunMeta>, RunStoreError> {
        let base = self.run_prefix();
        let mut runs = Vec::new();
        for (key, _) in self.keys(&base)? {
            let Some(rest) = key.strip_prefix(&base) else {
                continue;
            };
            let Some(id) = rest.strip_suffix("/run.json") else {
                continue;
            };
            if id.contains('/') {
                continue;
            }
            if let Some(bytes) = self.get(id, "run.json")?
                && let Ok(meta) = serde_json::from_slice::<RunMeta>(&bytes)
            {
                runs.push(meta);
            }
        }
        runs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(runs)
    }

    /// The files of a run (relative names) with their sizes.
    pub fn files(&self, id: &str) -> Result<Vec<(String, u64)>, RunStoreError> {
        let base = self.key(id, "");
        let mut out: Vec<(String, u64)> = self
            .keys(&base)?
            .into_iter()
            .filter_map(|(k, n)| k.strip_prefix(&base).map(|r| (r.to_string(), n)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Copy a run's files into `dir` (to resume it here).
    pub fn download(&self, id: &str, dir: &Path) -> Result<(), RunStoreError> {
        for (name, _) in self.files(id)? {
            // Only plain relative names: a key cannot write outside the run folder.
            let plain = Path::new(&name)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !plain {
                continue;
            }
            if let Some(bytes) = self.get(id, &name)? {
                let path = dir.join(&name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| RunStoreError::Io {
                        path: parent.display().to_string(),
                        source: e,
                    })?;
                }
                std::fs::write(&path, bytes).map_err(|e| RunStoreError::Io {
                    path: path.display().to_string(),
                    source: e,
                })?;
            }
        }
        Ok(())
    }

    /// Delete a run's files.
    pub fn delete(&self, id: &str) -> Result<(), RunStoreError> {
        // `run.json` last: a delete cut short leaves a run still listed, to prune again.
        let mut files = self.files(id)?;
        files.sort_by_key(|(n, _)| n == "run.json");
        for (name, _) in files {
            self.runtime
                .block_on(
                    self.client
                        .delete_object()
                        .bucket(&self.bucket)
                        .key(self.key(id, &name))
                        .send(),
                )
                .map_err(|e| self.error("DeleteObject", e))?;
        }
        Ok(())
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}
