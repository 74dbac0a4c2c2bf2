//! Cassettes: recorded exchanges keyed by a fingerprint of the request, so a prompt
//! change can be regression-tested and a demo can run offline. A request the cassette
//! lacks is an error naming its fingerprint, never a silent fallback.
//!
//! The file is JSON lines: `{"fingerprint", "model", "request", "response"}`.
//!
//! An exchange whose fingerprint is [`WILDCARD`] (`"*"`) answers every request the
//! cassette has no recording for (its `request` may be left out). `eval fix` uses one
//! to play a known patch as the model's answer, whatever the prompt. Several wildcard
//! exchanges answer in file order, the last one from then on: a scripted agent run
//! (tool calls, then `submit`).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Model, ModelError, Request, Response};

/// The fingerprint of an exchange that answers any request without a recording.
pub const WILDCARD: &str = "*";

/// One recorded exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// sha256 of the canonical request JSON (first 16 hex digits), or [`WILDCARD`].
    pub fingerprint: String,
    /// The model that answered.
    pub model: String,
    /// The request (already redacted when it was sent); empty for a wildcard.
    #[serde(default = "empty_request")]
    pub request: Request,
    /// The reply.
    pub response: Response,
}

/// A request with nothing in it (the `request` of a wildcard exchange).
pub fn empty_request() -> Request {
    Request {
        system: None,
        messages: vec![],
        tools: vec![],
        tool_choice: None,
        max_tokens: 0,
        temperature: None,
        stop: vec![],
        cache_prefix: false,
    }
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
    wildcards: Vec<Response>,
    next_wildcard: Mutex<usize>,
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
        let mut wildcards = Vec::new();
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
            if ex.fingerprint == WILDCARD {
                wildcards.push(ex.response);
            } else {
                answers.insert(ex.fingerprint, ex.response);
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            answers,
            wildcards,
            next_wildcard: Mutex::new(0),
        })
    }
}

impl Model for Replay {
    fn id(&self) -> String {
        format!("replay:{}", self.path.display())
    }

    fn complete(&self, request: &Request) -> Result<Response, ModelError> {
        let fp = fingerprint(request);
        let wildcard = || {
            let mut next = self.next_wildcard.lock().ok()?;
            let answer = self
                .wildcards
                .get((*next).min(self.wildcards.len().checked_sub(1)?))
                .cloned();
            *next += 1;
            answer
        };
        self.answers
            .get(&fp)
            .cloned()
            .or_else(wildcard)
            .ok_or_else(|| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_exchange_answers_any_request_a_recording_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        let answer = |t: &str| Response {
            content: vec![super::super::Block::Text { text: t.into() }],
            stop_reason: super::super::StopReason::EndTurn,
            usage: None,
        };
        let mut asked = empty_request();
        asked.max_tokens = 7;
        let recorded = Exchange {
            fingerprint: fingerprint(&asked),
            model: "m".into(),
            request: asked.clone(),
            response: answer("recorded"),
        };
        let text = format!(
            "{}\n{{\"fingerprint\":\"*\",\"model\":\"m\",\"response\":{}}}\n",
            serde_json::to_string(&recorded).unwrap(),
            serde_json::to_string(&answer("any")).unwrap()
        );
        std::fs::write(&path, text).unwrap();
        let r = Replay::open(&path).unwrap();
        assert_eq!(r.complete(&asked).unwrap().text(), "recorded");
        assert_eq!(r.complete(&empty_request()).unwrap().text(), "any");
    }
}
