//! Terminal output: results to stdout, progress and messages to stderr, colour and
//! progress bars only on a terminal and never with `NO_COLOR`; everything redacted.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::redact::Redactor;

/// One line on stderr. A closed stderr (`… 2>&1 | head -1`) is not worth failing
/// over, let alone panicking: the line is dropped and the work goes on.
pub fn to_stderr(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}

/// The JSON schema version of every document the CLI prints.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// Where and how a command prints.
#[derive(Debug, Clone)]
pub struct Output {
    /// `--json`.
    pub json: bool,
    /// `--quiet`.
    pub quiet: bool,
    /// `-v` count.
    pub verbose: u8,
    /// Colour on stderr/stdout.
    pub color: bool,
    /// stderr is a terminal (progress bars, prompts).
    pub interactive: bool,
    redactor: Redactor,
}

impl Output {
    /// From the global flags and the environment.
    pub fn new(global: &GlobalArgs) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let interactive = std::io::stderr().is_terminal();
        Self {
            json: global.json,
            quiet: global.quiet,
            verbose: global.verbose,
            color: !no_color && std::io::stdout().is_terminal(),
            interactive,
            redactor: Redactor::from_env::<&str>(&[]),
        }
    }

    /// Use this redactor (once config names extra secret variables).
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// A result line on stdout.
    pub fn line(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`| head`) is not an error worth reporting.
        let _ = writeln!(stdout, "{}", self.redactor.redact(text));
    }

    /// `value` as a JSON object with `schema_version` first, redacted.
    fn versioned<T: Serialize>(&self, value: &T) -> serde_json::Value {
        let mut v = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(map) = &mut v {
            let mut with_version = serde_json::Map::new();
            with_version.insert("schema_version".into(), JSON_SCHEMA_VERSION.into());
            with_version.extend(std::mem::take(map));
            *map = with_version;
        }
        self.redactor.redact_json(&mut v);
        v
    }

    /// A JSON document on stdout, with `schema_version` first.
    pub fn json<T: Serialize>(&self, value: &T) {
        self.line(&serde_json::to_string_pretty(&self.versioned(value)).unwrap_or_default());
    }

    /// One JSON line (batches).
    pub fn json_line<T: Serialize>(&self, value: &T) {
        self.line(&self.versioned(value).to_string());
    }

    /// Progress or information on stderr (not with `--quiet`).
    pub fn info(&self, text: &str) {
        if !self.quiet {
            to_stderr(&self.redactor.redact(text));
        }
    }

    /// Detail on stderr with `-v`.
    pub fn debug(&self, text: &str) {
        if self.verbose > 0 && !self.quiet {
            to_stderr(&self.redactor.redact(text));
        }
    }

    /// A warning on stderr (always).
    pub fn warn(&self, text: &str) {
        let prefix = if self.color {
            "\x1b[33mwarning\x1b[0m"
        } else {
            "warning"
        };
        to_stderr(&format!("{prefix}: {}", self.redactor.redact(text)));
    }

    /// A per-item error on stderr (always).
    pub fn error(&self, text: &str) {
        let prefix = if self.color {
            "\x1b[31merror\x1b[0m"
        } else {
            "error"
        };
        to_stderr(&format!("{prefix}: {}", self.redactor.redact(text)));
    }

    /// Bold text when colour is on.
    pub fn bold(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Dim text when colour is on.
    pub fn dim(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[2m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A spinner on a terminal (long single steps); hidden otherwise.
    pub fn spinner(&self, message: &str) -> ProgressBar {
        if !self.interactive || self.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar.set_message(message.to_string());
        bar
    }

    /// A progress bar on a terminal; hidden otherwise.
    pub fn progress(&self, len: u64, message: &str) -> ProgressBar {
        if !self.interactive || self.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message.to_string());
        bar
    }
}
