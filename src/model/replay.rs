//! Cassettes: recorded exchanges keyed by a fingerprint of the request, so a prompt
//! change can be regression-tested and a demo can run offline. A request the cassette
//! lacks is an error naming its fingerprint, never a silent fallback.
//!
//! The file is JSON lines: `{"fingerprint", "model", "request", "response"}`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Model, ModelError, Request, Response};

/// One recorded exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// sha256 of the canonical request JSON (first 16 hex digits).
    pub fingerprint: String,
    /// The model that answered.
    pub model: String,
    /// The request (already redacted when it was sent).
    pub request: Request,
    /// The reply.
    pub response: Response,
}

/// The fingerprint of a request.
pub fn fingerprint(request: &Request) -> String {
    let canonical = serde_json::to_string(request).unwrap_or_default();
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Answers from a cassette.
#[derive(Debug)]
pub struct Replay {
    path: PathBuf,
    answers: HashMap<String, Response>,
}

impl Replay {
    /// Load a cassette.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ModelError::Cassette(format!(
                "cannot read cassette {}: {e}\n  fix: record one with --record {} (wrapping a real provider)",
                path.display(),
                path.display()
            ))
        })?;
        let mut answers = HashMap::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let ex: Exchange = serde_json::from_str(line).map_err(|e| {
                ModelError::Cassette(format!(
                    "cassette {}:{}: not a recorded exchange: {e}\n  fix: re-record the cassette",
                    path.display(),
                    i + 1
                ))
            })?;
            answers.insert(ex.fingerprint, ex.response);
        }
        Ok(Self {
            path: path.to_path_buf(),
            answers,
        })
    }
}

impl Model for Replay {
    fn id(&self) -> String {
        format!("replay:{}", self.path.display())
    }

    fn complete(&self, request: &Request) -> Result<Response, ModelError> {
        let fp = fingerprint(request);
        self.answers.get(&fp).cloned().ok_or_else(|| {
            ModelError::Cassette(format!(
                "cassette {} has no recorded reply for request {fp} ({} recorded)\n  fix: the prompt changed since recording; re-record with --record",
                self.path.display(),
                self.answers.len()
            ))
        })
    }
}

/// Wraps a provider and appends every exchange to a cassette.
pub struct Recorder {
    inner: Arc<dyn Model>,
    path: PathBuf,
    lock: Mutex<()>,
}

impl Recorder {
    /// Record `inner`'s answers into `path` (appending).
    pub fn new(inner: Arc<dyn Model>, path: &Path) -> Self {
        Self {
            inner,
            path: path.to_path_buf(),
            lock: Mutex::new(()),
        }
    }
}

impl Model for Recorder {
    fn id(&self) -> String {
        self.inner.id()
    }

    fn complete(&self, request: &Request) -> Result<Response, ModelError> {
        self.complete_streaming(request, &|_| {})
    }

    fn complete_streaming(
        &self,
        request: &Request,
        on_progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Response, ModelError> {
        let response = self.inner.complete_streaming(request, on_progress)?;
        let ex = Exchange {
            fingerprint: fingerprint(request),
            model: self.inner.id(),
            request: request.clone(),
            response: response.clone(),
        };
        let line = serde_json::to_string(&ex).map_err(|e| ModelError::Cassette(e.to_string()))?;
        let _guard = self
            .lock
            .lock()
            .map_err(|_| ModelError::Cassette("cassette writer poisoned".into()))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| {
                ModelError::Cassette(format!(
                    "cannot write cassette {}: {e}",
                    self.path.display()
                ))
            })?;
        f.write_all(format!("{line}\n").as_bytes()).map_err(|e| {
            ModelError::Cassette(format!(
                "cannot write cassette {}: {e}",
                self.path.display()
            ))
        })?;
        Ok(response)
    }
}
