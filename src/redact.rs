//! Secret redaction, applied by every writer: run files, events, memory, output.
//!
//! Issue text is untrusted and may carry credentials pasted by mistake; nothing the
//! tool writes or prints may repeat them.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::Regex;

/// Environment variables whose values are always redacted when set.
pub const DEFAULT_SECRET_VARS: &[&str] = &[
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AUTOTRIAGE_WEBHOOK_SECRET",
];

struct Pattern {
    kind: &'static str,
    regex: Regex,
    /// Capture group holding the secret; 0 means the whole match.
    group: usize,
}

fn patterns() -> &'static [Pattern] {
    static PATTERNS: OnceLock<Vec<Pattern>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let specs: &[(&'static str, &str, usize)] = &[
            (
                "private-key",
                r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----",
                0,
            ),
            ("github-token", r"\bgh[pousr]_[A-Za-z0-9]{30,255}\b", 0),
            ("github-token", r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b", 0),
            ("aws-access-key", r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b", 0),
            (
                "aws-secret-key",
                r#"(?i)(?:aws_?secret_?(?:access_?)?key|secret_?access_?key)(?:\\?["'])?\s*[:=]\s*(?:\\?["'])?([A-Za-z0-9/+=]{40})\b"#,
                1,
            ),
            ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", 0),
            ("bearer-token", r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]{8,}=*)", 1),
            ("api-key", r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}", 0),
            ("slack-token", r"\bxox[baprs]-[A-Za-z0-9-]{10,}", 0),
        ];
        specs
            .iter()
            .filter_map(|(kind, re, group)| {
                // The patterns are constants covered by tests; a bad one is a bug,
                // skipped rather than crashing a run.
                Regex::new(re).ok().map(|regex| Pattern { kind, regex, group: *group })
            })
            .collect()
    })
}

/// Replaces secrets in text with `[REDACTED:kind]`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Literal secret values (from configured environment variables).
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor that also hides the current values of these environment variables
    /// (plus [`DEFAULT_SECRET_VARS`]). Values shorter than 8 characters are ignored:
    /// replacing them would mangle ordinary text.
    pub fn from_env<S: AsRef<str>>(extra_vars: &[S]) -> Self {
        let mut secrets: Vec<String> = DEFAULT_SECRET_VARS
            .iter()
            .copied()
            .chain(extra_vars.iter().map(AsRef::as_ref))
            .filter_map(|name| std::env::var(name).ok())
            .filter(|v| v.len() >= 8)
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// A redactor with explicit secret values (tests, embedding).
    pub fn with_secrets(secrets: Vec<String>) -> Self {
        Self {
            secrets: secrets.into_iter().filter(|s| s.len() >= 8).collect(),
        }
    }

    /// The text with every secret replaced.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out: Cow<'a, str> = Cow::Borrowed(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), "[REDACTED:env]"));
            }
        }
        for p in patterns() {
            if !p.regex.is_match(&out) {
                continue;
            }
            let replaced = p
                .regex
                .replace_all(&out, |caps: &regex::Captures<'_>| {
                    let whole = caps.get(0).map_or("", |m| m.as_str());
                    match caps.get(p.group) {
                        Some(m) if p.group > 0 => {
                            let start = m.start() - caps.get(0).map_or(0, |w| w.start());
                            format!(
                                "{}[REDACTED:{}]{}",
                                &whole[..start],
                                p.kind,
                                &whole[start + m.len()..]
                            )
                        }
                        _ => format!("[REDACTED:{}]", p.kind),
                    }
                })
                .into_owned();
            out = Cow::Owned(replaced);
        }
        out
    }

    /// A copy of any serde value with every string redacted (an issue, a request).
    pub fn redact_value<T: serde::Serialize + serde::de::DeserializeOwned + Clone>(
        &self,
        value: &T,
    ) -> T {
        let mut v = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.redact_json(&mut v);
        serde_json::from_value(v).unwrap_or_else(|_| value.clone())
    }

    /// Redact every string inside a JSON value, in place.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => {
                if let Cow::Owned(r) = self.redact(s) {
                    *s = r;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| self.redact_json(v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One planted secret of every kind the redactor knows.
    pub(crate) const PLANTED: &[&str] = &[
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "gho_abcdefghijklmnopqrstuvwxyz0123456789",
        "ghs_abcdefghijklmnopqrstuvwxyz0123456789",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "MIIEowIBAAKCAQEA7bq",
    ];

    #[test]
    fn every_planted_kind_is_removed() {
        let text = format!(
            "token {} and {} and {}\npat {}\naws {} aws_secret_access_key = {}\njwt {}\n\
             Authorization: Bearer abc.def-ghi_jkl\n-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n",
            PLANTED[0],
            PLANTED[1],
            PLANTED[2],
            PLANTED[3],
            PLANTED[4],
            PLANTED[5],
            PLANTED[6],
            PLANTED[7]
        );
        let out = Redactor::default().redact(&text).into_owned();
        for secret in PLANTED {
            assert!(!out.contains(secret), "{secret} survived in {out}");
        }
        assert!(!out.contains("abc.def-ghi_jkl"));
        assert!(out.contains("[REDACTED:github-token]"));
        assert!(out.contains("[REDACTED:private-key]"));
        assert!(out.contains("aws_secret_access_key = [REDACTED:aws-secret-key]"));
    }

    #[test]
    fn env_values_are_removed_and_plain_text_is_kept() {
        let r = Redactor::with_secrets(vec!["hunter2hunter2".into(), "short".into()]);
        assert_eq!(
            r.redact("pw=hunter2hunter2 short"),
            "pw=[REDACTED:env] short"
        );
        assert!(matches!(r.redact("nothing secret here"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_strings_are_redacted_in_place() {
        let mut v =
            serde_json::json!({"body": ["x ghp_abcdefghijklmnopqrstuvwxyz0123456789"], "n": 1});
        Redactor::default().redact_json(&mut v);
        assert_eq!(v["body"][0], "x [REDACTED:github-token]");
    }
}
