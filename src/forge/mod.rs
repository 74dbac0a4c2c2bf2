//! Forges: where issues come from and where results go.
//!
//! The embedded default is [`local::LocalForge`]: Markdown files with front matter,
//! `gh issue list --json` output and CSV files.

pub mod github;
pub mod github_app;
pub mod github_pr;
pub mod local;

use std::path::PathBuf;

use crate::error::{ErrorKind, HasKind};
use crate::issue::{Issue, IssueRef};

/// One record of a batch that could not be read; the rest of the batch goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordError {
    /// `FILE:LINE` or `FILE record N`.
    pub location: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// What a reference yielded: issues and the records that failed, in source order.
pub type Batch = Vec<Result<Issue, RecordError>>;

/// A whole input could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// The file or folder could not be read.
    #[error("cannot read {path}: {source}\n  fix: check the path and its permissions")]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The input as a whole is malformed (not JSON, no header, a missing column…).
    #[error("{location}: {message}")]
    Malformed {
        /// `FILE[:LINE]`.
        location: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The named record is not in the input.
    #[error("{reference}: {message}")]
    NotFound {
        /// The reference as typed.
        reference: String,
        /// What was looked for.
        message: String,
    },
    /// GitHub (or another forge's API) answered with an error status.
    #[error("{reference}: {message}")]
    Http {
        /// What was being read or written.
        reference: String,
        /// The HTTP status.
        status: u16,
        /// What the server said, and what to do.
        message: String,
    },
    /// The server could not be reached, after the retries.
    #[error("{reference}: {message}")]
    Network {
        /// What was being read or written.
        reference: String,
        /// What failed, and what to do.
        message: String,
    },
    /// The retries ran out (rate limits, server errors).
    #[error("{reference}: {message}")]
    Exhausted {
        /// What was being read or written.
        reference: String,
        /// What failed, and what to do.
        message: String,
    },
    /// No credentials, or no identity to act as.
    #[error("{reference}: {message}")]
    Credentials {
        /// What needed them.
        reference: String,
        /// What is missing, and how to provide it.
        message: String,
    },
    /// This forge cannot serve the reference.
    #[error("{reference}: {message}")]
    Unsupported {
        /// The reference.
        reference: String,
        /// Why and what to do.
        message: String,
    },
}

impl HasKind for ForgeError {
    fn kind(&self) -> ErrorKind {
        match self {
            ForgeError::Http {
                status: 401 | 403, ..
            }
            | ForgeError::Credentials { .. } => ErrorKind::Credentials,
            ForgeError::Http {
                status: 404 | 410, ..
            }
            | ForgeError::NotFound { .. } => ErrorKind::NotFound,
            ForgeError::Http { .. } | ForgeError::Exhausted { .. } => ErrorKind::Service,
            ForgeError::Network { .. } => ErrorKind::Network,
            ForgeError::Unreadable { .. }
            | ForgeError::Malformed { .. }
            | ForgeError::Unsupported { .. } => ErrorKind::Usage,
        }
    }
}

impl ForgeError {
    /// True for an HTTP 404 answer (a file, branch or label that does not exist).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ForgeError::Http { status: 404, .. })
    }
}

/// A source of issues.
pub trait Forge {
    /// Read what a reference names: one issue, or every issue of a source.
    fn read(&self, reference: &IssueRef) -> Result<Batch, ForgeError>;
}
