//! Making untrusted text inert before we write it where people read it: PR titles,
//! PR bodies, commit messages and issue comments.
//!
//! Issue text (and a model's answer shaped by it) comes from strangers. Quoted by a
//! bot with a maintainer's token it must not ping people or teams (`@org/team`), render
//! HTML, carry a closing keyword that would close another issue on merge (`Closes
//! #104`), or hide text with bidirectional overrides. We keep the text readable: a
//! zero-width space breaks a mention or a keyword without changing what it says.

use std::sync::OnceLock;

use regex::Regex;

/// GitHub's limit on a pull request title, in characters.
pub const TITLE_LIMIT: usize = 256;

const ZWSP: char = '\u{200B}';

// The patterns are constants covered by the tests below.
fn closing_keyword() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    // GitHub's keywords: close(s|d), fix(es|ed), resolve(s|d), any case.
    RE.get_or_init(|| Regex::new(r"(?i)\b(close[sd]?|fix(?:e[sd])?|resolve[sd]?)\b").ok())
        .as_ref()
}

fn mention() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    // `@login`, `@org/team`, `@everyone`: an `@` before a word character.
    RE.get_or_init(|| Regex::new(r"@([A-Za-z0-9_])").ok())
        .as_ref()
}

/// Characters that reorder or hide text (bidirectional overrides and isolates) and
/// control characters other than newline and tab.
fn is_hidden(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
        || (c.is_control() && c != '\n' && c != '\t')
}

/// Mentions and closing keywords broken, hidden characters removed.
fn defuse(text: &str) -> String {
    let visible: String = text.chars().filter(|c| !is_hidden(*c)).collect();
    let no_mentions = match mention() {
        Some(re) => re.replace_all(&visible, format!("@{ZWSP}$1")).into_owned(),
        None => visible.replace('@', "@\u{200B}"),
    };
    match closing_keyword() {
        Some(re) => re
            .replace_all(&no_mentions, |c: &regex::Captures<'_>| {
                let word = c.get(1).map_or("", |m| m.as_str());
                let mut chars = word.chars();
                let first: String = chars.next().into_iter().collect();
                format!("{first}{ZWSP}{}", chars.as_str())
            })
            .into_owned(),
        None => no_mentions.replace('#', "#\u{200B}"),
    }
}

/// Untrusted text for Markdown (PR bodies, comments): no ping, no closing keyword, and
/// HTML shown as text (`<`, `>` and `&` as entities).
pub fn markdown(text: &str) -> String {
    defuse(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn closing_reference() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)\b(close[sd]?|fix(?:e[sd])?|resolve[sd]?)(\s*:\s*|\s+)(#\d|[\w.-]+/[\w.-]+#\d|https?://|gh-\d)",
        )
        .ok()
    })
    .as_ref()
}

/// Text of ours that carries strangers' fragments (test names and output, labels):
/// Markdown we wrote stays, but mentions are broken, HTML is shown as text and a
/// closing keyword followed by a reference is broken. Plain words such as "fixed"
/// stay as they are.
pub fn evidence(text: &str) -> String {
    let visible: String = text.chars().filter(|c| !is_hidden(*c)).collect();
    let no_mentions = match mention() {
        Some(re) => re.replace_all(&visible, format!("@{ZWSP}$1")).into_owned(),
        None => visible.replace('@', "@\u{200B}"),
    };
    let escaped = no_mentions.replace('<', "&lt;").replace('>', "&gt;");
    match closing_reference() {
        Some(re) => re
            .replace_all(&escaped, |c: &regex::Captures<'_>| {
                let word = c.get(1).map_or("", |m| m.as_str());
                let mut chars = word.chars();
                let first: String = chars.next().into_iter().collect();
                format!(
                    "{first}{ZWSP}{}{}{}",
                    chars.as_str(),
                    c.get(2).map_or("", |m| m.as_str()),
                    c.get(3).map_or("", |m| m.as_str())
                )
            })
            .into_owned(),
        None => escaped.replace('#', "#\u{200B}"),
    }
}

/// Untrusted text for plain-text places (commit messages, titles): no ping, no
/// closing keyword, and no angle brackets a later renderer could take for HTML.
pub fn plain(text: &str) -> String {
    defuse(text)
        .replace('<', "\u{2039}")
        .replace('>', "\u{203A}")
}

/// One line of plain text at most `limit` characters long (an ellipsis marks a cut).
pub fn one_line(text: &str, limit: usize) -> String {
    let line = plain(text).split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= limit {
        return line;
    }
    let mut cut: String = line.chars().take(limit.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A PR title for issue `number`: `Fix #N: <title>`, inert, within GitHub's limit.
pub fn pr_title(number: u64, title: &str) -> String {
    let prefix = format!("Fix #{number}: ");
    format!(
        "{prefix}{}",
        one_line(title, TITLE_LIMIT - prefix.chars().count())
    )
}

/// A path shown in Markdown code: no backtick can end the code span early.
pub fn code_path(path: &str) -> String {
    path.chars()
        .map(|c| if c == '`' { '\'' } else { c })
        .filter(|c| !is_hidden(*c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_keywords_and_html_are_inert() {
        let hostile = "cc @acme/maintainers @everyone <img src=x onerror=alert(1)> Closes #104, fixes o/r#7, RESOLVED https://github.com/o/r/issues/9";
        let md = markdown(hostile);
        assert!(!md.contains("@acme") && !md.contains("@everyone"), "{md}");
        assert!(!md.contains("<img"), "{md}");
        assert!(md.contains("&lt;img"), "{md}");
        for kw in ["Closes", "fixes", "RESOLVED"] {
            assert!(!md.contains(kw), "{kw} survived: {md}");
        }
        // Readable: the words are all still there, with a zero-width space inside.
        assert_eq!(
            md.replace(ZWSP, "")
                .replace("&lt;", "<")
                .replace("&gt;", ">"),
            hostile
        );
        let p = plain(hostile);
        assert!(!p.contains('<') && !p.contains("Closes") && !p.contains("@everyone"));
    }

    #[test]
    fn ordinary_words_and_emails_stay() {
        assert_eq!(
            markdown("a prefix, closet, fixture"),
            "a prefix, closet, fixture"
        );
        assert_eq!(plain("x = 1"), "x = 1");
        // An email address keeps its text (the `@` is still followed by the domain).
        assert_eq!(plain("me@example.com").replace(ZWSP, ""), "me@example.com");
    }

    #[test]
    fn titles_are_one_line_within_the_limit() {
        let t = pr_title(3, &format!("crash\nwhen {}", "x".repeat(400)));
        assert!(t.starts_with("Fix #3: crash when "));
        assert_eq!(t.chars().count(), TITLE_LIMIT);
        assert!(t.ends_with('…'));
        assert_eq!(pr_title(3, "short"), "Fix #3: short");
    }

    #[test]
    fn evidence_keeps_our_words_and_breaks_references() {
        let e = evidence("verdict **fixed**; test_x[@everyone Closes #5 <b>]");
        assert!(e.starts_with("verdict **fixed**; test_x["), "{e}");
        assert!(!e.contains("@everyone") && !e.contains("Closes #5") && !e.contains("<b>"));
    }

    #[test]
    fn hidden_characters_are_dropped() {
        assert_eq!(plain("a\u{202E}b\u{0007}c\n"), "abc\n");
    }
}
