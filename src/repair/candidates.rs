//! Candidates: N answers from the model, each applied (one retry with the error shown
//! when its edits are refused), kept as a unified diff, deduplicated.

use serde::{Deserialize, Serialize};

use super::apply::{EditReport, PathGuard, apply};
use super::edits::parse;
use super::prompt;
use crate::model::Request;
use crate::model::session::Session;
use crate::model::usage::CallUsage;

/// One candidate patch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// 1-based; `candidates/<id>.diff`.
    pub id: usize,
    /// The change as a unified diff against the base commit (empty when refused).
    pub diff: String,
    /// What the model said it does.
    pub explanation: String,
    /// How each edit applied.
    pub edits: Vec<EditReport>,
    /// Files changed, with lines added and removed.
    pub files: Vec<(String, usize, usize)>,
    /// Model calls (the first answer and the retry, if any).
    pub usage: Vec<CallUsage>,
    /// Answers asked for (1, or 2 after a refusal).
    pub attempts: usize,
    /// Why its edits were refused, when they were (after the retry).
    #[serde(default)]
    pub error: Option<String>,
    /// Same diff as an earlier candidate (that one's id).
    #[serde(default)]
    pub duplicate_of: Option<usize>,
    /// The round that wrote it: 0 for the first answers, then 1, 2… for answers to
    /// test evidence.
    #[serde(default)]
    pub round: usize,
    /// The candidate whose evidence it answers (rounds after the first).
    #[serde(default)]
    pub parent: Option<usize>,
    /// `agent` when an agent run submitted it (its trace is in `agent.jsonl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// For an agent's candidate: one line per tool call (tools called, tests run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<String>,
    /// The frozen reproduction test was added to it (it brought no test of its own).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub with_reproduction: bool,
}

/// Settings of the stage.
#[derive(Debug, Clone)]
pub struct RepairSettings {
    /// Candidates asked for.
    pub candidates: usize,
    /// Answer length limit.
    pub max_tokens: u32,
    /// Sampling temperature of the second and later candidates (the first uses 0).
    pub temperature: f32,
    /// How big a candidate may be.
    pub limits: PatchLimits,
}

/// How big a candidate may be (`repair.max_patch_*`).
#[derive(Debug, Clone, Copy)]
pub struct PatchLimits {
    /// Bytes of its diff.
    pub bytes: usize,
    /// Files it changes.
    pub files: usize,
    /// Lines it adds and removes.
    pub lines: usize,
}

impl PatchLimits {
    /// Why a diff over the limits is refused, if it is.
    pub fn check(&self, diff: &str, files: usize) -> Option<String> {
        let lines = crate::verify::diff_lines(diff);
        if diff.len() > self.bytes {
            Some(format!(
                "refused: the patch is {} bytes, over repair.max_patch_bytes ({})",
                diff.len(),
                self.bytes
            ))
        } else if files > self.files {
            Some(format!(
                "refused: the patch changes {files} files, over repair.max_patch_files ({})",
                self.files
            ))
        } else if lines > self.lines {
            Some(format!(
                "refused: the patch adds and removes {lines} lines, over repair.max_patch_lines ({})",
                self.lines
            ))
        } else {
            None
        }
    }
}

/// Ask for, apply and record the candidates. `read` gives a file's text at the base;
/// `files` are the context's files (where an edit without a path may go). Stops early
/// with what it has when the model fails (the error is returned beside them).
#[allow(clippy::too_many_arguments)]
pub fn generate(
    session: &Session,
    base_request: &dyn Fn(f32) -> Request,
    read: &dyn Fn(&str) -> Option<String>,
    files: &[String],
    guard: &PathGuard,
    settings: &RepairSettings,
    spent: &mut f64,
    on_progress: &dyn Fn(usize),
) -> (Vec<Candidate>, Option<crate::model::ModelError>) {
    let mut out: Vec<Candidate> = Vec::new();
    for i in 0..settings.candidates {
        on_progress(i + 1);
        let temperature = if i == 0 { 0.0 } else { settings.temperature };
        let id = out.len() + 1;
        match ask(
            session,
            &base_request(temperature),
            read,
            files,
            guard,
            settings,
            spent,
            id,
            &out,
            "repair",
        ) {
            Ok(c) => out.push(c),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// One candidate from `first` (and one retry with the applier's refusal when its
/// edits do not apply), numbered `id`, checked against the limits, the secrets rule
/// and the candidates before it.
#[allow(clippy::too_many_arguments)]
pub fn ask(
    session: &Session,
    first: &Request,
    read: &dyn Fn(&str) -> Option<String>,
    files: &[String],
    guard: &PathGuard,
    settings: &RepairSettings,
    spent: &mut f64,
    id: usize,
    earlier: &[Candidate],
    stage: &str,
) -> Result<Candidate, crate::model::ModelError> {
    let mut usage = Vec::new();
    let (r, u) = session.call(stage, first, spent)?;
    let answer = r.text();
    usage.push(u);
    let mut attempts = 1;
    let mut result = parse(&answer)
        .map_err(super::ApplyError::from)
        .and_then(|edits| apply(&edits, read, files, guard));
    let mut final_answer = answer.clone();
    if let Err(e) = &result {
        attempts = 2;
        let again = prompt::retry(first, &answer, &e.to_string());
        let (r, u) = session.call(stage, &again, spent)?;
        usage.push(u);
        final_answer = r.text();
        result = parse(&final_answer)
            .map_err(super::ApplyError::from)
            .and_then(|edits| apply(&edits, read, files, guard));
    }
    let explanation = prompt::explanation(&final_answer);
    let mut candidate = Candidate {
        id,
        diff: String::new(),
        explanation,
        edits: Vec::new(),
        files: Vec::new(),
        usage,
        attempts,
        error: None,
        duplicate_of: None,
        round: 0,
        parent: None,
        by: None,
        trace: Vec::new(),
        with_reproduction: false,
    };
    match result {
        Ok(applied) => {
            let (diff, changed) = unified_diff(&applied.files, read);
            settle(
                &mut candidate,
                diff,
                changed,
                applied.reports,
                changed_is_empty(&applied.files, read),
                &session.redactor,
                settings,
                earlier,
            );
        }
        Err(e) => candidate.error = Some(e.to_string()),
    }
    Ok(candidate)
}

/// Fill in an applied candidate: refused over the limits (the patch itself is not
/// kept), when it changes nothing or adds a secret; marked as a duplicate of an
/// earlier candidate with the same change.
#[allow(clippy::too_many_arguments)]
pub fn settle(
    candidate: &mut Candidate,
    diff: String,
    changed: Vec<(String, usize, usize)>,
    reports: Vec<EditReport>,
    unchanged: bool,
    redactor: &crate::redact::Redactor,
    settings: &RepairSettings,
    earlier: &[Candidate],
) {
    if let Some(why) = settings.limits.check(&diff, changed.len()) {
        candidate.explanation = candidate.explanation.chars().take(2_000).collect();
        candidate.error = Some(why);
        return;
    }
    candidate.error = if unchanged {
        Some("the edits change nothing".to_string())
    } else {
        adds_secret(redactor, &diff)
    };
    candidate.duplicate_of = earlier
        .iter()
        .find(|c| c.error.is_none() && normalized(&c.diff) == normalized(&diff))
        .map(|c| c.id);
    candidate.diff = diff;
    candidate.files = changed;
    candidate.edits = reports;
}

/// True when an added line is part of a private key: in the new text of its hunk the
/// redactor hides it as one, or it belongs to a run of three or more added lines of
/// 64 base64 characters (the shape of a PEM body, whatever file it goes to).
fn added_key_lines(redactor: &crate::redact::Redactor, diff: &str) -> bool {
    let mut hunk: Vec<&str> = Vec::new();
    let check = |hunk: &mut Vec<&str>| -> bool {
        let text: String = hunk.iter().map(|l| format!("{}\n", &l[1..])).collect();
        let hidden = redactor.redact(&text);
        let body_like = |l: &str| {
            let t = l.trim().trim_matches(|c| c == '"' || c == '\'');
            t.len() >= 8
                && t.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
        };
        let leaked = hidden.contains("[REDACTED:private-key]")
            && hunk
                .iter()
                .filter(|l| l.starts_with('+'))
                .any(|l| body_like(&l[1..]) && !hidden.contains(&l[1..]));
        hunk.clear();
        leaked
    };
    let mut pem_run = 0;
    for line in diff.lines() {
        let body = line
            .strip_prefix('+')
            .filter(|_| !line.starts_with("+++"))
            .map(|l| l.trim().trim_matches(|c| c == '"' || c == '\''));
        if body.is_some_and(|b| {
            b.len() == 64
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
        }) {
            pem_run += 1;
            if pem_run >= 3 {
                return true;
            }
        } else {
            pem_run = 0;
        }
        if line.starts_with("@@") || line.starts_with("diff --git") {
            if check(&mut hunk) {
                return true;
            }
            continue;
        }
        if (line.starts_with('+') && !line.starts_with("+++")) || (line.starts_with(' ')) {
            hunk.push(line);
        }
    }
    check(&mut hunk)
}

/// Why a patch is refused when the lines it adds carry a secret (a token, a key, a
/// private key, a value of a secret variable): a fix never writes credentials into a
/// repository, and publishing it redacted would publish a broken file.
pub fn adds_secret(redactor: &crate::redact::Redactor, diff: &str) -> Option<String> {
    let added: String = diff
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut kinds = redactor.findings(&added);
    // Key lines written between markers the file already has: the hunk's new text
    // (context and added lines) shows the key, and an added line is part of it.
    if !kinds.contains(&"private-key") && added_key_lines(redactor, diff) {
        kinds.push("private-key");
    }
    (!kinds.is_empty()).then(|| {
        format!(
            "refused: the patch adds a secret ({}) to the repository; a fix never carries credentials",
            kinds.join(", ")
        )
    })
}

fn changed_is_empty(
    files: &std::collections::BTreeMap<String, Option<String>>,
    read: &dyn Fn(&str) -> Option<String>,
) -> bool {
    files.iter().all(|(p, t)| read(p) == *t)
}

/// A diff with whitespace runs collapsed and hunk headers dropped, for deduplication.
pub fn normalized(diff: &str) -> String {
    diff.lines()
        .filter(|l| !l.starts_with("@@"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The changes as one `git diff`-style unified diff, and per file lines added/removed.
pub fn unified_diff(
    files: &std::collections::BTreeMap<String, Option<String>>,
    read: &dyn Fn(&str) -> Option<String>,
) -> (String, Vec<(String, usize, usize)>) {
    let mut out = String::new();
    let mut stats = Vec::new();
    for (path, after) in files {
        let before = read(path);
        if before == *after {
            continue;
        }
        let old = before.clone().unwrap_or_default();
        let new = after.clone().unwrap_or_default();
        let diff = similar::TextDiff::from_lines(&old, &new);
        let (a, b) = (
            if before.is_some() {
                format!("a/{path}")
            } else {
                "/dev/null".into()
            },
            if after.is_some() {
                format!("b/{path}")
            } else {
                "/dev/null".into()
            },
        );
        out.push_str(&format!("diff --git a/{path} b/{path}\n"));
        if before.is_none() {
            out.push_str("new file mode 100644\n");
        }
        if after.is_none() {
            out.push_str("deleted file mode 100644\n");
        }
        out.push_str(
            &diff
                .unified_diff()
                .context_radius(3)
                .header(&a, &b)
                .to_string(),
        );
        let (mut add, mut del) = (0, 0);
        for c in diff.iter_all_changes() {
            match c.tag() {
                similar::ChangeTag::Insert => add += 1,
                similar::ChangeTag::Delete => del += 1,
                similar::ChangeTag::Equal => {}
            }
        }
        stats.push((path.clone(), add, del));
    }
    (out, stats)
}
