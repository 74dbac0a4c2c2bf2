//! Priority P0–P3 from signals in the text and around the issue, with the reasons.

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// A priority and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Priority {
    /// `P0` (drop everything) … `P3` (when there is time).
    pub level: String,
    /// The signals that set it, in words.
    pub reasons: Vec<String>,
}

struct Signal {
    name: &'static str,
    level: u8,
    regex: Regex,
}

fn signals() -> &'static [Signal] {
    static SIGNALS: OnceLock<Vec<Signal>> = OnceLock::new();
    SIGNALS.get_or_init(|| {
        let specs: &[(&str, u8, &str)] = &[
            (
                "security",
                0,
                r"(?i)\b(security (issue|bug|hole|problem|vulnerability)|vulnerab\w*|cve-\d{4}-\d+|exploitable|path traversal|directory traversal|xss|csrf|remote code execution|rce|sql injection|command injection|privilege escalation|arbitrary (code|file)|leaks? (credentials|secrets|tokens|passwords))\b",
            ),
            (
                "data loss",
                0,
                r"(?i)\b(data loss|loses? (data|files|work)|lost (all |my |the )?(data|files|work|changes)|delet(es|ed|ing) (my|all|the|files|data|everything)|corrupt(s|ed|ion|ing)?|wipes? (out )?(my|the|all))\b",
            ),
            (
                "crash",
                1,
                r"(?i)\b(crash(es|ed|ing)?|panic(s|ked)?|segfault\w*|segmentation fault|core dumped|fatal error|sigsegv|sigabrt|stack overflow|nullpointerexception|unhandled exception|uncaught exception)\b",
            ),
            (
                "regression",
                1,
                r"(?i)(\bregression\b|\bused to work\b|\bworked (fine |well )?(before|in|with|on)\b|\bno longer (works|working)\b|\bstopped working\b|\bsince (upgrading|updating|the (last )?(update|upgrade|release))\b|\bafter (upgrading|updating)\b|\bbroke(n)? (in|since|after)\b|\bregressed\b|\bagain (in|since|with|after) v?\d|\b(broken|failing|happening|back) again\b)",
            ),
            (
                "blocker",
                1,
                r"(?i)\b(blocker|showstopper|blocks (us|me|our|the release)|blocking (us|me|our|the release)|cannot use|can't use|completely (broken|unusable)|unusable)\b",
            ),
            ("hang", 1, r"(?i)\b(hangs?|hanging|deadlocks?|freezes|frozen|memory leak|out of memory|oom)\b"),
        ];
        specs
            .iter()
            .filter_map(|(name, level, re)| Regex::new(re).ok().map(|regex| Signal { name, level: *level, regex }))
            .collect()
    })
}

fn dependency_update() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(?i)\b(upgrade|bump|update|updating|upgrading)\b.{0,80}\b(to|from)\b|\bdependency\b|\bdependencies\b").ok())
        .as_ref()
}

fn minor_title() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?i)\b(typos?|spelling|misspel\w*|cosmetic|javadocs?|documentation|docs|log messages?|logging|warnings?|deprecat\w*|unused|clean ?up|checkstyle|findbugs|spotbugs|whitespace|readme|misleading)\b").ok()
    })
    .as_ref()
}

/// Inputs besides the text.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The kind, when the classifier did not abstain.
    pub kind: Option<&'a str>,
    /// 👍 and other reactions, when the forge reports them.
    pub reactions: Option<u64>,
    /// How many earlier issues look like duplicates of this one.
    pub likely_duplicates: usize,
}

/// Assess the priority of an issue.
pub fn assess(title: &str, body: &str, ctx: Context<'_>) -> Priority {
    let text = format!("{title}\n{body}");
    let mut level: u8 = match ctx.kind {
        Some("bug") => 2,
        Some(_) => 3,
        None => 3,
    };
    let mut reasons = Vec::new();
    for s in signals() {
        if let Some(m) = s.regex.find(&text) {
            // Outside bugs only security keeps its weight; a feature request that
            // mentions a crash is not itself urgent.
            let mut effective = if ctx.kind.is_some_and(|k| k != "bug") && s.level > 0 {
                2
            } else {
                s.level
            };
            // A CVE fixed by bumping a dependency is routine work, not an incident.
            if s.name == "security" && dependency_update().is_some_and(|r| r.is_match(title)) {
                effective = effective.max(1);
                reasons.push("security fix in a dependency update".into());
            }
            if effective < level {
                level = effective;
            }
            reasons.push(format!("{}: \"{}\"", s.name, m.as_str().trim()));
        }
    }
    // Bugs in docs, messages and code hygiene wait, unless something above is urgent.
    if level == 2
        && let Some(m) = minor_title().and_then(|r| r.find(title))
    {
        level = 3;
        reasons.push(format!("minor: \"{}\"", m.as_str()));
    }
    if let Some(r) = ctx.reactions
        && r >= 10
    {
        level = level.saturating_sub(1);
        reasons.push(format!("{r} reactions"));
    }
    if ctx.likely_duplicates >= 2 {
        level = level.saturating_sub(1);
        reasons.push(format!("reported {} times before", ctx.likely_duplicates));
    }
    if reasons.is_empty() {
        reasons.push(match ctx.kind {
            Some("bug") => "a bug with no urgency signal".to_string(),
            Some(k) => format!("a {k}, no urgency signal"),
            None => "kind unknown, no urgency signal".to_string(),
        });
    }
    Priority {
        level: format!("P{level}"),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(title: &str, body: &str, kind: Option<&str>) -> String {
        assess(
            title,
            body,
            Context {
                kind,
                ..Default::default()
            },
        )
        .level
    }

    #[test]
    fn levels_follow_signals() {
        assert_eq!(p("Path traversal in dev server", "", Some("bug")), "P0");
        assert_eq!(p("Build deleted my files", "", Some("bug")), "P0");
        assert_eq!(
            p("Crash on start", "thread 'main' panicked", Some("bug")),
            "P1"
        );
        assert_eq!(p("Images missing", "worked fine in 1.1", Some("bug")), "P1");
        assert_eq!(p("Typo in help text", "", Some("bug")), "P3");
        assert_eq!(p("Wrong output for empty input", "", Some("bug")), "P2");
        assert_eq!(
            p(
                "Upgrade jackson to 2.14 to fix CVE-2022-42003",
                "",
                Some("bug")
            ),
            "P1"
        );
        assert_eq!(
            p("CVE-2022-42003 in the upload handler", "", Some("bug")),
            "P0"
        );
        assert_eq!(p("Add dark mode", "", Some("feature")), "P3");
        assert_eq!(p("Add crash reporter", "", Some("feature")), "P2");
        let r = assess(
            "Crash",
            "",
            Context {
                kind: Some("bug"),
                reactions: Some(12),
                likely_duplicates: 0,
            },
        );
        assert_eq!(r.level, "P0");
        assert!(r.reasons.iter().any(|x| x == "12 reactions"));
    }
}
