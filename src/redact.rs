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
                r#"(?i)(?:aws_?secret_?(?:access_?)?key|secret_?access_?key)(?:\\?["'])?\s*(?:[:=]|%3D)\s*(?:\\?["'])?((?:[A-Za-z0-9+=]|/|%2F|%2B|%3D){40})"#,
                1,
            ),
            ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", 0),
            // A token has a digit or punctuation: "Bearer authentication" is English.
            (
                "bearer-token",
                r"(?i)\bbearer\s+([A-Za-z]*[0-9\-._~+/][A-Za-z0-9\-._~+/]*=*)",
                1,
            ),
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

fn pem_marker(line: &str, word: &str) -> bool {
    line.find(&format!("-----{word} ")).is_some_and(|i| {
        let rest = &line[i..];
        rest.contains("PRIVATE KEY") && rest[5..].contains("-----")
    })
}

/// The base64 body of a PEM line as it appears in text, a diff or a string literal:
/// a diff marker, indentation, quotes and string-joining punctuation around it.
fn pem_body_line(line: &str) -> bool {
    let t = line.strip_prefix(['+', '-', ' ']).unwrap_or(line);
    let t = t.trim_start_matches(|c: char| {
        c.is_whitespace() || matches!(c, '"' | '\'' | '#' | '/' | '*')
    });
    let t = t.trim_end_matches(|c: char| {
        c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '+' | ';' | ')' | '\\')
    });
    let t = t.strip_suffix("\\n").unwrap_or(t);
    if t.starts_with("Proc-Type:") || t.starts_with("DEK-Info:") {
        return true;
    }
    t.len() >= 16
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

/// The last line of a PEM body: base64 of any length with optional padding, or a
/// PGP checksum line.
fn pem_last_line(line: &str) -> bool {
    let t = line.strip_prefix(['+', '-', ' ']).unwrap_or(line);
    let t = t.trim_start_matches(|c: char| {
        c.is_whitespace() || matches!(c, '"' | '\'' | '#' | '/' | '*')
    });
    let t = t.trim_end_matches(|c: char| {
        c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '+' | ';' | ')' | '\\')
    });
    let t = t.strip_suffix("\\n").unwrap_or(t);
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

/// Private-key fragments the whole-block pattern cannot see: the body lines above an
/// `END … PRIVATE KEY` line without its `BEGIN` (a hunk that starts mid-key), and
/// below a `BEGIN` line without its `END`. `None` when there are none.
fn pem_fragments(text: &str) -> Option<String> {
    if !text.contains("PRIVATE KEY") {
        return None;
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut hide = vec![false; lines.len()];
    for (i, line) in lines.iter().enumerate() {
        if pem_marker(line, "END") {
            let mut j = i;
            // The line right above END is the body's last: often short (`…Q==`), or a
            // PGP checksum (`=AbCd`).
            if j > 0 && pem_last_line(lines[j - 1]) && !pem_marker(lines[j - 1], "BEGIN") {
                j -= 1;
                hide[j] = true;
            }
            while j > 0 && pem_body_line(lines[j - 1]) && !pem_marker(lines[j - 1], "BEGIN") {
                j -= 1;
                hide[j] = true;
            }
        }
        if pem_marker(line, "BEGIN") {
            let mut j = i + 1;
            while j < lines.len() && pem_body_line(lines[j]) && !pem_marker(lines[j], "END") {
                hide[j] = true;
                j += 1;
            }
        }
    }
    if !hide.contains(&true) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    for (line, hidden) in lines.iter().zip(&hide) {
        if *hidden {
            // The diff marker stays, so a redacted diff is still a diff.
            if let Some(m) = line.chars().next().filter(|c| matches!(c, '+' | '-' | ' ')) {
                out.push(m);
            }
            out.push_str("[REDACTED:private-key]");
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(line);
        }
    }
    Some(out)
}

/// The length of an AWS secret access key.
const AWS_SECRET_LEN: usize = 40;

/// True when a 40-character run of base64 looks like a random key rather than a
/// word, a path or an identifier: upper and lower case and a digit, no run of 12
/// lowercase letters (words), and the spread of characters random data has
/// (Shannon entropy ≥ 4.3 bits; 99.9% of random keys are above).
fn looks_random(run: &[u8]) -> bool {
    let (mut upper, mut lower, mut digit) = (false, false, false);
    let (mut lower_run, mut longest_lower) = (0, 0);
    let mut counts = [0u32; 128];
    for &b in run {
        upper |= b.is_ascii_uppercase();
        digit |= b.is_ascii_digit();
        if b.is_ascii_lowercase() {
            lower = true;
            lower_run += 1;
            longest_lower = longest_lower.max(lower_run);
        } else {
            lower_run = 0;
        }
        counts[usize::from(b & 0x7f)] += 1;
    }
    if !(upper && lower && digit) || longest_lower >= 12 {
        return false;
    }
    let n = run.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    entropy >= 4.3
}

/// Bare AWS secret access keys in prose replaced; `None` when there are none. A key
/// in a URL (`%2F` for `/`, `%2B` for `+`) counts too.
fn bare_aws_secrets(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let is_b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
    // The length of the key character at `i` (3 for `%2F`/`%2B`), and the character.
    let key_char = |i: usize| -> Option<(usize, u8)> {
        match bytes.get(i)? {
            b'%' => match (
                bytes.get(i + 1),
                bytes.get(i + 2).map(u8::to_ascii_uppercase),
            ) {
                (Some(b'2'), Some(b'F')) => Some((3, b'/')),
                (Some(b'2'), Some(b'B')) => Some((3, b'+')),
                _ => None,
            },
            &b if is_b64(b) => Some((1, b)),
            _ => None,
        }
    };
    let mut hits: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if key_char(i).is_none() {
            i += 1;
            continue;
        }
        let start = i;
        let mut run = Vec::with_capacity(AWS_SECRET_LEN);
        while let Some((len, c)) = key_char(i) {
            run.push(c);
            i += len;
        }
        // A trailing `=` (or `%3D`) is base64 padding: data, not a key.
        let padded = bytes.get(i) == Some(&b'=')
            || text
                .get(i..i + 3)
                .is_some_and(|t| t.eq_ignore_ascii_case("%3D"));
        if run.len() == AWS_SECRET_LEN && !padded && looks_random(&run) {
            hits.push((start, i));
        }
    }
    if hits.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end) in hits {
        out.push_str(&text[last..start]);
        out.push_str("[REDACTED:aws-secret-key]");
        last = end;
    }
    out.push_str(&text[last..]);
    Some(out)
}

/// Whether a match of a pattern is a secret rather than words: a bearer "token" of
/// English (`Bearer authentication`, `a Bearer token.`) is not one.
fn plausible(kind: &str, secret: &str) -> bool {
    match kind {
        "bearer-token" => {
            let t = secret.trim_end_matches(['.', ',', ';', ':', ')']);
            t.len() >= 8 && t.chars().any(|c| !c.is_ascii_alphabetic())
        }
        _ => true,
    }
}

/// `redact.secret_vars` of the loaded configuration, for every redactor made after it
/// is loaded (the error printed at exit, test output, issues read).
static CONFIGURED_VARS: OnceLock<Vec<String>> = OnceLock::new();

/// Make `redact.secret_vars` part of every redactor this process makes from now on.
/// The first call wins (one configuration per process).
pub fn configure_secret_vars(vars: &[String]) {
    let _ = CONFIGURED_VARS.set(vars.to_vec());
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
        let configured = CONFIGURED_VARS.get().cloned().unwrap_or_default();
        let mut secrets: Vec<String> = DEFAULT_SECRET_VARS
            .iter()
            .copied()
            .chain(extra_vars.iter().map(AsRef::as_ref))
            .chain(configured.iter().map(String::as_str))
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

    /// The text with every secret replaced. Safe for code: git SHAs, hashes and base64
    /// data stay as they are; a private key is caught even when a diff shows only
    /// part of it (no `BEGIN` line, or no `END` line).
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
                    if !plausible(p.kind, caps.get(p.group).map_or(whole, |m| m.as_str())) {
                        return whole.to_string();
                    }
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
        if let Some(fixed) = pem_fragments(&out) {
            out = Cow::Owned(fixed);
        }
        out
    }

    /// [`Redactor::redact`] for prose written by people or printed by programs (issue
    /// text, comments, test output): also a bare AWS secret access key with no keyword
    /// next to it, recognised by its shape (40 characters of base64 with mixed case,
    /// digits and a random-looking spread). Code is never redacted this way, so
    /// base64 test data in a diff stays intact.
    pub fn redact_prose<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.redact(text) {
            Cow::Borrowed(t) => match bare_aws_secrets(t) {
                Some(fixed) => Cow::Owned(fixed),
                None => Cow::Borrowed(t),
            },
            Cow::Owned(t) => Cow::Owned(bare_aws_secrets(&t).unwrap_or(t)),
        }
    }

    /// An issue with its title, body and comments redacted as prose: what is stored,
    /// sent to a model or quoted is the redacted copy.
    pub fn redact_issue(&self, issue: &crate::issue::Issue) -> crate::issue::Issue {
        let mut out = issue.clone();
        let prose = |t: &str| self.redact_prose(t).into_owned();
        out.title = prose(&issue.title);
        out.body = prose(&issue.body);
        for c in &mut out.comments {
            c.body = prose(&c.body);
        }
        out
    }

    /// The kinds of secret found in `text` (as [`Redactor::redact`] sees them): a
    /// patch that would add one to a repository is refused, never published redacted.
    pub fn findings(&self, text: &str) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.secrets.iter().any(|s| text.contains(s.as_str())) {
            kinds.push("env");
        }
        for p in patterns() {
            let found = p.regex.captures_iter(text).any(|c| {
                let whole = c.get(0).map_or("", |m| m.as_str());
                plausible(p.kind, c.get(p.group).map_or(whole, |m| m.as_str()))
            });
            if found && !kinds.contains(&p.kind) {
                kinds.push(p.kind);
            }
        }
        if !kinds.contains(&"private-key") && pem_fragments(text).is_some() {
            kinds.push("private-key");
        }
        kinds
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

    /// A real-shaped RSA key body (random base64, 64 per line).
    const KEY_LINES: &[&str] = &[
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
        "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
        "LxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo",
        "9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ0iT9wCS0DRTXu269V264Vf/3jvre",
    ];

    #[test]
    fn a_private_key_without_its_begin_or_end_line_is_removed() {
        // A hunk that starts mid-key: no BEGIN line.
        let mut diff = String::from("@@ -10,6 +10,6 @@\n");
        for l in KEY_LINES {
            diff.push_str(&format!(" {l}\n"));
        }
        diff.push_str(" -----END RSA PRIVATE KEY-----\n-x = 1\n+x = 2\n");
        let out = Redactor::default().redact(&diff).into_owned();
        for l in KEY_LINES {
            assert!(!out.contains(l), "{l} survived:\n{out}");
        }
        assert!(out.contains(" [REDACTED:private-key]\n"), "{out}");
        assert!(
            out.ends_with("-x = 1\n+x = 2\n"),
            "the rest of the diff stays: {out}"
        );
        // A hunk that ends mid-key: no END line; as a string literal in code.
        let mut code = String::from("+KEY = (\"-----BEGIN PRIVATE KEY-----\\n\"\n");
        for l in KEY_LINES {
            code.push_str(&format!("+    \"{l}\\n\"\n"));
        }
        let out = Redactor::default().redact(&code).into_owned();
        for l in KEY_LINES {
            assert!(!out.contains(l), "{l} survived:\n{out}");
        }
        assert_eq!(
            Redactor::default().findings(&code),
            vec!["private-key"],
            "a patch adding it is refused"
        );
    }

    #[test]
    fn a_bare_aws_secret_key_is_removed_from_prose_only() {
        let r = Redactor::default();
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let prose = format!("my key is {secret}, oops\nAWS_SECRET={secret}\n");
        let out = r.redact_prose(&prose).into_owned();
        assert!(!out.contains(secret), "{out}");
        assert_eq!(out.matches("[REDACTED:aws-secret-key]").count(), 2, "{out}");
        // Code keeps it: `redact` is for code and diffs.
        assert!(r.redact(&prose).contains(secret));
    }

    #[test]
    fn shas_hashes_paths_and_base64_data_are_not_secrets() {
        let r = Redactor::default();
        let keep = [
            // A git SHA-1 and a SHA-256 digest.
            "commit 3f9a1c2b7d4e5f60718293a4b5c6d7e8f9012345 is the base",
            "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            // Paths and identifiers of 40 characters.
            "at tests/unit/TestSomethingVeryLongName1234 line 3",
            "ThisIsAVeryLongIdentifierNameForTesting1",
            // Base64 data with padding, and longer than a key.
            "data = \"SGVsbG8gd29ybGQhIFRoaXMgaXMgdGVzdCBkYXRhIQ==\"",
            "blob: QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0MTIzNDU2Nzg5MGFiY2RlZmdo",
        ];
        for k in keep {
            assert_eq!(r.redact_prose(k), k);
        }
        // A diff of test data: 40 characters of unpadded base64 in code stays.
        let code = "+EXPECTED = \"Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRkdI\"\n";
        assert_eq!(r.redact(code), code);
        assert!(r.findings(code).is_empty());
    }

    #[test]
    fn json_strings_are_redacted_in_place() {
        let mut v =
            serde_json::json!({"body": ["x ghp_abcdefghijklmnopqrstuvwxyz0123456789"], "n": 1});
        Redactor::default().redact_json(&mut v);
        assert_eq!(v["body"][0], "x [REDACTED:github-token]");
    }
}
