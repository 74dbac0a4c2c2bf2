//! Missing information in a bug report, and the comment that asks for it.

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// The hidden marker of the bot's triage comment (it is updated, never repeated).
pub const COMMENT_MARKER: &str = "<!-- autotriage:triage -->";

/// What a good bug report has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    /// Steps to reproduce.
    ReproductionSteps,
    /// What was expected and what happened.
    ExpectedVsActual,
    /// Version and environment.
    VersionEnvironment,
    /// Logs or a stack trace.
    LogsOrTrace,
}

impl Item {
    /// All items, in the order the comment lists them.
    pub const ALL: [Item; 4] = [
        Item::ReproductionSteps,
        Item::ExpectedVsActual,
        Item::VersionEnvironment,
        Item::LogsOrTrace,
    ];

    /// The stable code used in JSON.
    pub fn code(self) -> &'static str {
        match self {
            Item::ReproductionSteps => "reproduction_steps",
            Item::ExpectedVsActual => "expected_vs_actual",
            Item::VersionEnvironment => "version_environment",
            Item::LogsOrTrace => "logs_or_trace",
        }
    }

    /// The bullet in the comment.
    fn ask(self) -> &'static str {
        match self {
            Item::ReproductionSteps => {
                "**Steps to reproduce**: the exact commands or actions, starting from a fresh setup"
            }
            Item::ExpectedVsActual => {
                "**Expected and actual behaviour**: what you expected to happen, and what happened instead"
            }
            Item::VersionEnvironment => {
                "**Version and environment**: the version you run, your operating system, and anything else relevant"
            }
            Item::LogsOrTrace => {
                "**Logs or a stack trace**: the full error output, pasted in a code block"
            }
        }
    }

    fn patterns(self) -> &'static [Regex] {
        static P: OnceLock<Vec<Vec<Regex>>> = OnceLock::new();
        let all = P.get_or_init(|| {
            let specs: [&[&str]; 4] = [
                &[
                    r"(?i)\b(steps? to reproduce|to reproduce|repro(duction)? steps|how to reproduce|reproduc(e|ible|tion) (it|this|with|by|the)|minimal (example|repro))",
                    r"(?m)^\s*(1[.)]|-|\*)\s+\S.*\n\s*(2[.)]|-|\*)\s+\S",
                    r"(?i)\b(run|running|execute|call|calling|open|click|type)\b[^\n]{0,80}(`|\n\s*```)",
                    r"`[a-z][\w.-]* [^`\n]*--?[a-z][^`\n]*`",
                ],
                &[
                    r"(?is)\b(expected|expect|should)\b.{0,400}\b(actual(ly)?|instead|but (it|i|we|the|got|nothing)|got|observed|receive[ds]?|returns?)\b",
                    r"(?is)\b(actual(ly)?|observed)\b.{0,400}\b(expected|should)\b",
                ],
                &[
                    r"(?i)\bv?\d+\.\d+(\.\d+)?([-.][a-z0-9]+)?\b",
                    r"(?i)\b(version|windows|macos|mac os|os x|linux|ubuntu|debian|fedora|centos|arch linux|android|ios|chrome|firefox|safari|node(\.js)?|python|rustc|jdk|java)\b",
                ],
                &[
                    r"```",
                    r"(?i)(traceback \(most recent call last\)|panicked at|stack ?trace|backtrace|exception in thread|\bat [\w.$<>]+\([\w.]+:\d+\)|\.rs:\d+|\.py\x22, line \d+|\.(js|ts):\d+:\d+|\berror(\[\w+\])?:|\bfatal:|^\s+at .+:\d+)",
                ],
            ];
            specs.iter().map(|s| s.iter().filter_map(|r| Regex::new(r).ok()).collect()).collect()
        });
        &all[self as usize]
    }

    /// True when the text shows this item.
    pub fn present(self, text: &str) -> bool {
        self.patterns().iter().any(|r| r.is_match(text))
    }
}

/// The items a bug report lacks.
pub fn check(text: &str) -> Vec<Item> {
    Item::ALL.into_iter().filter(|i| !i.present(text)).collect()
}

/// The comment asking the reporter for what is missing (starts with the marker).
pub fn comment(missing: &[Item], author: Option<&str>) -> String {
    let who = author.map(|a| format!(", @{a}")).unwrap_or_default();
    let mut out = format!(
        "{COMMENT_MARKER}\nThanks for the report{who}! To help a maintainer reproduce and fix this, could you add:\n\n"
    );
    for item in missing {
        out.push_str(&format!("- {}\n", item.ask()));
    }
    out.push_str("\nYou can edit the issue description or reply here. (Written by autotriage; a maintainer will follow up.)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_report_misses_nothing() {
        let text = "Steps to reproduce:\n1. run `widgets build`\n2. see\n\nExpected: it builds. Actual: it panics.\n\n```\nthread 'main' panicked at src/page.rs:57:22\n```\nwidgets 1.3.0 on Debian 12";
        assert_eq!(check(text), vec![]);
    }

    #[test]
    fn vague_report_misses_everything() {
        assert_eq!(
            check("I installed it and it doesn't work. Please fix."),
            Item::ALL.to_vec()
        );
        let c = comment(&[Item::LogsOrTrace], Some("ann"));
        assert!(c.starts_with(COMMENT_MARKER));
        assert!(c.contains("@ann") && c.contains("Logs or a stack trace"));
    }
}
