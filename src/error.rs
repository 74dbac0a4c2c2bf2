//! What kind of failure an error is, and the error a command raises itself.
//!
//! This module imports nothing from the rest of the crate: every module's typed error
//! says which [`ErrorKind`] it is (through [`HasKind`]), `commands::error_kind` finds
//! the kind of an error chain, and only `main.rs` turns a kind into an exit code (the
//! table in the README).

use std::fmt;

/// What kind of failure happened; the binary maps each kind to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Bad flags, a bad reference, or an unreadable input named on the command line.
    Usage,
    /// The configuration is wrong.
    Config,
    /// Credentials are missing, or the service refused them (401/403 of the token).
    Credentials,
    /// The repository or issue does not exist (or the token cannot see it).
    NotFound,
    /// The issue is not eligible, or no candidate was proven.
    NotEligible,
    /// Interrupted by the user.
    Interrupted,
    /// The network failed after the retries.
    Network,
    /// The service answered with an error: 5xx, 422, a rate limit that did not lift.
    Service,
    /// Some writes were made and others failed; what was written is reported.
    Partial,
    /// Any other runtime failure.
    Runtime,
}

/// Errors that know which kind of failure they are.
pub trait HasKind {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;
}

/// A failure raised directly by a command, with its kind.
#[derive(Debug)]
pub struct CommandError {
    /// The kind of failure.
    pub kind: ErrorKind,
    /// What happened and what to do.
    pub message: String,
}

impl CommandError {
    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }
    /// A runtime failure.
    pub fn failure(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Runtime, message)
    }
    /// Interrupted by the user.
    pub fn interrupted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Interrupted, message)
    }
    /// The issue is not eligible, or nothing was proven.
    pub fn not_eligible(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotEligible, message)
    }
    /// An error of any kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CommandError {}

impl HasKind for CommandError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}
