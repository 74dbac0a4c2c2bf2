//! Exit codes and the mapping from library errors to them.
//!
//! Library modules return their own typed errors; the binary edge wraps them in
//! `anyhow` and asks [`exit_code_for`] which code the chain deserves.

use std::fmt;

/// The process exit codes DESIGN.md fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Runtime failure, including a batch where some items failed.
    Failure = 1,
    /// Usage, config, a bad ref, or an unreadable input named on the command line.
    Usage = 2,
    /// The issue is not eligible or no candidate passed.
    NotEligible = 3,
    /// Interrupted by Ctrl-C.
    Interrupted = 130,
}

/// Errors that know which exit code they deserve.
pub trait ExitCoded {
    /// The exit code this error maps to.
    fn exit(&self) -> Exit;
}

/// A failure raised directly by a command with a chosen exit code.
#[derive(Debug)]
pub struct CommandError {
    /// The exit code.
    pub exit: Exit,
    /// What happened and what to do.
    pub message: String,
}

impl CommandError {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Usage,
            message: message.into(),
        }
    }
    /// A runtime failure (exit 1).
    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Failure,
            message: message.into(),
        }
    }
    /// Interrupted by the user (exit 130).
    pub fn interrupted(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Interrupted,
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

impl ExitCoded for CommandError {
    fn exit(&self) -> Exit {
        self.exit
    }
}

/// The exit code for an error chain: the first typed error found decides; anything
/// else is a runtime failure.
pub fn exit_code_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CommandError>() {
            return e.exit();
        }
        if let Some(e) = cause.downcast_ref::<crate::config::ConfigError>() {
            return e.exit();
        }
        if let Some(e) = cause.downcast_ref::<crate::issue::RefError>() {
            return e.exit();
        }
        if let Some(e) = cause.downcast_ref::<crate::forge::ForgeError>() {
            return e.exit();
        }
        if let Some(e) = cause.downcast_ref::<crate::memory::MemoryError>() {
            return e.exit();
        }
        if let Some(e) = cause.downcast_ref::<crate::runs::RunStoreError>() {
            return e.exit();
        }
        if let Some(e) = cause.downcast_ref::<crate::model::ModelError>() {
            return e.exit();
        }
        if let Some(e) = cause.downcast_ref::<crate::pr::PatchError>() {
            return e.exit();
        }
        if let Some(e) = cause.downcast_ref::<crate::locate::LocateError>() {
            return e.exit();
        }
        if let Some(e) = cause.downcast_ref::<crate::forge::github_pr::PrError>() {
            return e.exit();
        }
        if let Some(e) = cause.downcast_ref::<crate::verify::VerifyError>() {
            return e.exit();
        }
    }
    Exit::Failure
}
