//! The applier: places each edit by its content, never by line numbers. It tries, in
//! order, exact lines, lines ignoring trailing whitespace, lines ignoring indentation
//! (inserted lines re-indented to the code found), and a fuzzy match that must be
//! clearly the best and unique. Lines an edit removes must be found (whitespace aside);
//! context the file has but the edit lost is kept. Anything ambiguous or unmatched is
//! refused with the closest lines; all edits apply, or none.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use super::edits::{Edit, ParseError, Tag};

/// How an edit was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Every line as written.
    Exact,
    /// Trailing whitespace aside.
    TrailingWhitespace,
    /// Indentation aside; inserted lines re-indented.
    Indentation,
    /// The clearly best, unique near match.
    Fuzzy,
    /// A new file.
    Created,
    /// The file removed.
    Deleted,
}

/// Where and how one edit applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditReport {
    /// The edit (`block 2 (src/a.py)`, `hunk 1 of src/a.py`).
    pub origin: String,
    /// The file.
    pub path: String,
    /// How it was placed.
    pub method: Method,
    /// First line of the place, 1-based.
    pub line: usize,
}

/// The result of applying a candidate's edits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Applied {
    /// Changed files: path → new text (`None`: deleted).
    pub files: BTreeMap<String, Option<String>>,
    /// One report per edit.
    pub reports: Vec<EditReport>,
}

/// Why a candidate's edits were refused. Messages are written for the model as much as
/// for people: they say what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    /// The text holds no readable edit.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// A path edits may not touch.
    #[error("{origin}: {path} is refused: {reason}")]
    Refused {
        /// The edit.
        origin: String,
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file does not exist.
    #[error(
        "{origin}: {path} does not exist; to create it, use an empty SEARCH (or `--- /dev/null`)"
    )]
    NoFile {
        /// The edit.
        origin: String,
        /// The path.
        path: String,
    },
    /// The lines to find are not in the file.
    #[error(
        "{origin}: the lines to find are not in {path}. {closest}\nCopy the current lines exactly (with a few unchanged lines around the change), or give more context."
    )]
    NoMatch {
        /// The edit.
        origin: String,
        /// The path.
        path: String,
        /// The closest lines, numbered.
        closest: String,
    },
    /// The lines to find match several places.
    #[error("{origin}: the lines to find match {} places in {path} (lines {}); add unchanged lines above or below so they match one place", lines.len(), join(lines))]
    Ambiguous {
        /// The edit.
        origin: String,
        /// The path.
        path: String,
        /// First lines of the places, 1-based.
        lines: Vec<usize>,
    },
    /// The file has lines the edit lacks right where its new lines go.
    #[error(
        "{origin}: {path} has line {} (\"{text}\") that the edit does not show, right where its new lines go; include the unchanged lines around the change exactly",
        line
    )]
    Gap {
        /// The edit.
        origin: String,
        /// The path.
        path: String,
        /// The first such line, 1-based.
        line: usize,
        /// Its text.
        text: String,
    },
    /// A header-less edit that no single file matches.
    #[error("{origin}: it names no file and {detail}; start it with the file's path")]
    NoTarget {
        /// The edit.
        origin: String,
        /// What was found.
        detail: String,
    },
    /// Nothing to apply.
    #[error("no edit to apply")]
    Empty,
}

fn join(lines: &[usize]) -> String {
    lines
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Paths edits may never touch: outside the repository, inside `.git/`, or protected.
#[derive(Debug, Clone)]
pub struct PathGuard {
    protected: GlobSet,
}

impl PathGuard {
    /// A guard for `paths.protected` globs.
    pub fn new(protected: &[String]) -> Result<Self, String> {
        let mut b = GlobSetBuilder::new();
        for p in protected {
            b.add(Glob::new(p).map_err(|e| format!("paths.protected {p:?}: {e}"))?);
        }
        Ok(Self {
            protected: b.build().map_err(|e| e.to_string())?,
        })
    }

    /// Why `path` is refused, if it is.
    pub fn check(&self, path: &str) -> Option<&'static str> {
        let p = Path::new(path);
        if p.is_absolute() || path.starts_with('/') || path.starts_with('\\') {
            return Some("an absolute path");
        }
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Some("it leaves the repository (`..`)");
        }
        if p.components()
            .next()
            .is_some_and(|c| c.as_os_str() == ".git")
        {
            return Some("it is inside .git/");
        }
        if self.protected.is_match(p) {
            return Some("it matches paths.protected");
        }
        None
    }
}

/// A file's lines, with its line-ending style kept.
#[derive(Debug, Clone)]
struct Lines {
    lines: Vec<String>,
    crlf: bool,
    final_newline: bool,
}

impl Lines {
    /// Lines keep their own `\r`: a file that mixes endings keeps them as they are.
    fn parse(text: &str) -> Self {
        let final_newline = text.ends_with('\n') || text.is_empty();
        let body = text.strip_suffix('\n').unwrap_or(text);
        let lines: Vec<String> = if text.is_empty() {
            Vec::new()
        } else {
            body.split('\n').map(str::to_string).collect()
        };
        // New lines take the ending most lines have.
        let crlf = lines.iter().filter(|l| l.ends_with('\r')).count() * 2 > lines.len();
        Self {
            lines,
            crlf,
            final_newline,
        }
    }

    fn render(&self) -> String {
        let mut s = self.lines.join("\n");
        if self.final_newline && !self.lines.is_empty() {
            s.push('\n');
        }
        s
    }
}

/// Apply every edit, or none. `read` gives a file's current text; `candidates` are the
/// files an edit that names none may be for.
pub fn apply(
    edits: &[Edit],
    read: &dyn Fn(&str) -> Option<String>,
    candidates: &[String],
    guard: &PathGuard,
) -> Result<Applied, ApplyError> {
    if edits.is_empty() {
        return Err(ApplyError::Empty);
    }
    // Current state of every file touched so far (None: deleted or absent).
    let mut state: BTreeMap<String, Option<Lines>> = BTreeMap::new();
    let mut reports = Vec::new();
    for edit in edits {
        let path = match &edit.path {
            Some(p) => p.trim_start_matches("./").to_string(),
            None => target(edit, read, candidates, &state)?,
        };
        if let Some(reason) = guard.check(&path) {
            return Err(ApplyError::Refused {
                origin: edit.origin.clone(),
                path,
                reason: reason.into(),
            });
        }
        let current: Option<Lines> = match state.get(&path) {
            Some(s) => s.clone(),
            None => read(&path).map(|t| Lines::parse(&t)),
        };
        if edit.creates {
            if current.as_ref().is_some_and(|c| !c.lines.is_empty()) {
                return Err(ApplyError::NoMatch {
                    origin: edit.origin.clone(),
                    path: path.clone(),
                    closest: "The file exists, and an empty SEARCH would create it.".into(),
                });
            }
            let lines = Lines {
                lines: edit
                    .insert
                    .iter()
                    .map(|(_, l)| l.strip_suffix('\r').unwrap_or(l).to_string())
                    .collect(),
                crlf: false,
                final_newline: true,
            };
            reports.push(EditReport {
                origin: edit.origin.clone(),
                path: path.clone(),
                method: Method::Created,
                line: 1,
            });
            state.insert(path, Some(lines));
            continue;
        }
        let Some(file) = current else {
            return Err(ApplyError::NoFile {
                origin: edit.origin.clone(),
                path,
            });
        };
        let found = find(edit, &file.lines).map_err(|e| e.into_error(edit, &path))?;
        if edit.deletes {
            // Deleting a file takes the whole of it, found as it is.
            let whole = found.start == 0
                && found.end == file.lines.len()
                && matches!(found.method, Method::Exact | Method::TrailingWhitespace)
                && edit.old.iter().all(|(t, _)| *t == Tag::Remove);
            if !whole {
                return Err(ApplyError::NoMatch {
                    origin: edit.origin.clone(),
                    path,
                    closest:
                        "A deletion (`+++ /dev/null`) must remove every line of the file, as it is."
                            .into(),
                });
            }
            reports.push(EditReport {
                origin: edit.origin.clone(),
                path: path.clone(),
                method: Method::Deleted,
                line: 1,
            });
            state.insert(path, None);
            continue;
        }
        if let Some(f) = unclear_gap(edit, &found) {
            return Err(ApplyError::Gap {
                origin: edit.origin.clone(),
                path,
                line: f + 1,
                text: file.lines[f].trim().chars().take(80).collect(),
            });
        }
        let new_lines = splice(edit, &file.lines, &found, file.crlf);
        reports.push(EditReport {
            origin: edit.origin.clone(),
            path: path.clone(),
            method: found.method,
            line: found.start + 1,
        });
        state.insert(
            path,
            Some(Lines {
                lines: new_lines,
                ..file
            }),
        );
    }
    let files = state
        .into_iter()
        .map(|(p, l)| (p, l.map(|l| l.render())))
        .collect();
    Ok(Applied { files, reports })
}

/// The file a header-less edit is for: the only candidate, or the one candidate its
/// lines match.
fn target(
    edit: &Edit,
    read: &dyn Fn(&str) -> Option<String>,
    candidates: &[String],
    state: &BTreeMap<String, Option<Lines>>,
) -> Result<String, ApplyError> {
    if let [only] = candidates {
        return Ok(only.clone());
    }
    let mut hits = Vec::new();
    for c in candidates {
        let lines = match state.get(c) {
            Some(Some(l)) => l.lines.clone(),
            Some(None) => continue,
            None => match read(c) {
                Some(t) => Lines::parse(&t).lines,
                None => continue,
            },
        };
        if find(edit, &lines).is_ok() {
            hits.push(c.clone());
        }
    }
    match hits.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ApplyError::NoTarget {
            origin: edit.origin.clone(),
            detail: format!("its lines are in none of {}", candidates.join(", ")),
        }),
        many => Err(ApplyError::NoTarget {
            origin: edit.origin.clone(),
            detail: format!("its lines match several files ({})", many.join(", ")),
        }),
    }
}

/// Where an edit's old lines are in a file.
#[derive(Debug, Clone)]
struct Found {
    method: Method,
    /// First file line of the place (0-based).
    start: usize,
    /// One past the last.
    end: usize,
    /// For each old line, the file line it is (absolute, 0-based).
    align: Vec<Option<usize>>,
}

enum Miss {
    None { closest: String },
    Many { lines: Vec<usize> },
}

impl Miss {
    fn into_error(self, edit: &Edit, path: &str) -> ApplyError {
        match self {
            Miss::None { closest } => ApplyError::NoMatch {
                origin: edit.origin.clone(),
                path: path.into(),
                closest,
            },
            Miss::Many { lines } => ApplyError::Ambiguous {
                origin: edit.origin.clone(),
                path: path.into(),
                lines,
            },
        }
    }
}

fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Least lines of context for a place to count as found, by a fuzzy match.
const FUZZY_MIN_SHARE: f64 = 0.75;
/// A fuzzy best must beat any other place by this share of the lines.
const FUZZY_MARGIN: f64 = 0.2;

fn find(edit: &Edit, file: &[String]) -> Result<Found, Miss> {
    let old: Vec<&str> = edit.old.iter().map(|(_, l)| l.as_str()).collect();
    let m = old.len();
    if m == 0 {
        return Err(Miss::None {
            closest: "An insertion without any unchanged line around it cannot be placed.".into(),
        });
    }
    type Eq = fn(&str, &str) -> bool;
    let levels: [(Method, Eq); 3] = [
        (Method::Exact, |a, b| a == b.strip_suffix('\r').unwrap_or(b)),
        (Method::TrailingWhitespace, |a, b| {
            a.trim_end() == b.trim_end()
        }),
        (Method::Indentation, |a, b| a.trim() == b.trim()),
    ];
    if file.len() >= m {
        for (method, eq) in levels {
            let starts: Vec<usize> = (0..=file.len() - m)
                .filter(|&s| (0..m).all(|k| eq(old[k], &file[s + k])))
                .collect();
            match starts.as_slice() {
                [] => continue,
                [s] => {
                    return Ok(Found {
                        method,
                        start: *s,
                        end: s + m,
                        align: (0..m).map(|k| Some(s + k)).collect(),
                    });
                }
                many => {
                    // A diff's header may settle it: the one place that starts exactly
                    // on a line the header states (as `git apply` tries first). A
                    // guessed number rarely lands on one of the places exactly.
                    let stated: Vec<usize> = many
                        .iter()
                        .copied()
                        .filter(|s| edit.stated_lines.contains(&(s + 1)))
                        .collect();
                    if let ([s], Method::Exact | Method::TrailingWhitespace) =
                        (stated.as_slice(), method)
                    {
                        return Ok(Found {
                            method,
                            start: *s,
                            end: s + m,
                            align: (0..m).map(|k| Some(s + k)).collect(),
                        });
                    }
                    return Err(Miss::Many {
                        lines: many.iter().map(|s| s + 1).collect(),
                    });
                }
            }
        }
    }
    fuzzy(edit, file)
}

/// Longest common subsequence of two line lists: pairs of indices. Among equally long
/// ones, the earliest match of each line is taken.
fn lcs(a: &[&str], b: &[&str]) -> Vec<(usize, usize)> {
    lcs_with(a, b, false)
}

/// As [`lcs`]; with `late`, the latest match of each line instead.
fn lcs_with(a: &[&str], b: &[&str], late: bool) -> Vec<(usize, usize)> {
    let (n, m) = (a.len(), b.len());
    let mut t = vec![vec![0u16; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[i][j] = if a[i] == b[j] {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n && j < m {
        if late && a[i] == b[j] && t[i][j + 1] == t[i][j] {
            // An equally long match exists using a later line: take that one.
            j += 1;
        } else if a[i] == b[j] {
            out.push((i, j));
            i += 1;
            j += 1;
        } else if t[i + 1][j] > t[i][j + 1] || (!late && t[i + 1][j] == t[i][j + 1]) {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn fuzzy(edit: &Edit, file: &[String]) -> Result<Found, Miss> {
    let old_norm: Vec<String> = edit.old.iter().map(|(_, l)| normalize(l)).collect();
    let old_ref: Vec<&str> = old_norm.iter().map(String::as_str).collect();
    let file_norm: Vec<String> = file.iter().map(|l| normalize(l)).collect();
    let m = old_ref.len();
    // Blank lines match anywhere; only non-blank matched lines count as evidence.
    let weight = |k: usize| usize::from(!old_ref[k].is_empty());
    let total: usize = (0..m).map(weight).sum::<usize>().max(1);
    let mut places: Vec<(usize, usize, usize, Vec<Option<usize>>)> = Vec::new(); // score, start, end, align
    let slack = 3usize;
    let max_len = (m + slack).min(file.len());
    let starts = likely_starts(&old_ref, &file_norm, slack);
    for len in m.saturating_sub(slack).max(1)..=max_len {
        for &s in starts.iter().filter(|&&s| s + len <= file.len()) {
            let win: Vec<&str> = file_norm[s..s + len].iter().map(String::as_str).collect();
            let pairs = lcs(&old_ref, &win);
            let score: usize = pairs.iter().map(|(k, _)| weight(*k)).sum();
            if score == 0 {
                continue;
            }
            let mut align = vec![None; m];
            for (k, j) in &pairs {
                align[*k] = Some(s + j);
            }
            // Every removed line must be found: never remove a line we did not see.
            if edit
                .old
                .iter()
                .enumerate()
                .any(|(k, (tag, _))| *tag == Tag::Remove && align[k].is_none())
            {
                continue;
            }
            let first = pairs.first().map_or(s, |(_, j)| s + j);
            let last = pairs.last().map_or(s, |(_, j)| s + j + 1);
            places.push((score, first, last, align));
        }
    }
    places.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    places.dedup_by(|a, b| a.1 == b.1 && a.2 == b.2);
    let Some(best) = places.first().cloned() else {
        return Err(Miss::None {
            closest: closest(&old_ref, &file_norm, file),
        });
    };
    let share = best.0 as f64 / total as f64;
    if share < FUZZY_MIN_SHARE {
        return Err(Miss::None {
            closest: closest(&old_ref, &file_norm, file),
        });
    }
    // Another place that does not overlap the best and scores nearly as well: refuse.
    let rival = places
        .iter()
        .skip(1)
        .find(|p| p.2 <= best.1 || p.1 >= best.2)
        .filter(|p| ((best.0 - p.0) as f64 / total as f64) < FUZZY_MARGIN);
    if let Some(r) = rival {
        let mut lines = vec![best.1 + 1, r.1 + 1];
        lines.sort_unstable();
        return Err(Miss::Many { lines });
    }
    // Equal lines inside the place (two `}` lines, say) can align two ways; if the
    // lines to remove or to insert beside would move, the place is not clear.
    let win: Vec<&str> = file_norm[best.1..best.2]
        .iter()
        .map(String::as_str)
        .collect();
    let mut late = vec![None; m];
    for (k, j) in lcs_with(&old_ref, &win, true) {
        late[k] = Some(best.1 + j);
    }
    let anchors: Vec<usize> = edit.insert.iter().filter_map(|(a, _)| *a).collect();
    for (k, (early, late)) in best.3.iter().zip(&late).enumerate() {
        let matters = edit.old[k].0 == Tag::Remove || anchors.contains(&k);
        if matters && late != early {
            let mut lines: Vec<usize> = [*early, *late]
                .into_iter()
                .flatten()
                .map(|l| l + 1)
                .collect();
            lines.sort_unstable();
            lines.dedup();
            return Err(Miss::Many { lines });
        }
    }
    Ok(Found {
        method: Method::Fuzzy,
        start: best.1,
        end: best.2,
        align: best.3,
    })
}

/// Window starts worth scoring: a place that matches most of the edit's lines, in
/// order, within `slack` lines of extra or missing ones, starts near `f - k` for some
/// edit line `k` found at file line `f`. Other windows cannot reach the fuzzy bar, so
/// they are not scored (it keeps a large file or a long edit fast).
fn likely_starts(old: &[&str], file_norm: &[String], slack: usize) -> Vec<usize> {
    let mut at: std::collections::HashMap<&str, Vec<usize>> = std::collections::HashMap::new();
    for (f, l) in file_norm.iter().enumerate() {
        if !l.is_empty() {
            at.entry(l.as_str()).or_default().push(f);
        }
    }
    let mut starts = std::collections::BTreeSet::new();
    for (k, l) in old.iter().enumerate() {
        if l.is_empty() {
            continue;
        }
        for &f in at.get(l).map(Vec::as_slice).unwrap_or(&[]) {
            let centre = f.saturating_sub(k);
            for s in centre.saturating_sub(slack)..=centre + slack {
                if s < file_norm.len() {
                    starts.insert(s);
                }
            }
        }
    }
    starts.into_iter().collect()
}

/// The file's lines most like the edit's, numbered, for the refusal message.
fn closest(old: &[&str], file_norm: &[String], file: &[String]) -> String {
    let m = old.len().max(1);
    let mut best = (0usize, 0usize);
    if file.is_empty() {
        return "The file is empty.".into();
    }
    let last = file.len().saturating_sub(m - 1).max(1);
    for s in likely_starts(old, file_norm, 3)
        .into_iter()
        .filter(|s| *s < last)
    {
        let end = (s + m).min(file.len());
        let win: Vec<&str> = file_norm[s..end].iter().map(String::as_str).collect();
        let score = lcs(old, &win)
            .iter()
            .filter(|(k, _)| !old[*k].is_empty())
            .count();
        if score > best.0 {
            best = (score, s);
        }
    }
    if best.0 == 0 {
        return "No line of it is in the file.".into();
    }
    let (from, to) = (best.1, (best.1 + m).min(file.len()));
    let shown: String = (from..to)
        .map(|i| format!("{:>5} | {}\n", i + 1, file[i]))
        .collect();
    format!(
        "The closest lines are {}-{}:\n{}",
        from + 1,
        to,
        shown.trim_end()
    )
}

/// Leading whitespace of a line.
fn indent(s: &str) -> &str {
    &s[..s.len() - s.trim_start().len()]
}

fn width(ws: &str) -> usize {
    ws.chars().map(|c| if c == '\t' { 4 } else { 1 }).sum()
}

/// The indentation step of some lines: a tab, or the gcd of space indents (2..8).
fn unit_of<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    let mut g = 0usize;
    for l in lines {
        let ws = indent(l);
        if ws.contains('\t') {
            return "\t".into();
        }
        if !l.trim().is_empty() && !ws.is_empty() {
            g = gcd(g, ws.len());
        }
    }
    " ".repeat(if (2..=8).contains(&g) { g } else { 4 })
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Re-indent inserted lines from the edit's indentation to the file's: the indents of
/// the lines both have map one to the other; deeper levels follow the indent steps.
struct Reindent {
    /// Edit indent → file indent, from lines found in the file.
    map: Vec<(String, String)>,
    identity: bool,
    edit_unit: usize,
    file_unit: String,
}

impl Reindent {
    fn new(edit: &Edit, file: &[String], found: &Found) -> Self {
        let mut map: Vec<(String, String)> = Vec::new();
        for (k, (_, l)) in edit.old.iter().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            if let Some(f) = found.align[k] {
                let pair = (indent(l).to_string(), indent(&file[f]).to_string());
                if !map.iter().any(|(e, _)| *e == pair.0) {
                    map.push(pair);
                }
            }
        }
        let identity = map.iter().all(|(e, f)| e == f);
        let edit_lines = edit
            .old
            .iter()
            .map(|(_, l)| l.as_str())
            .chain(edit.insert.iter().map(|(_, l)| l.as_str()));
        let edit_unit = width(&unit_of(edit_lines)).max(1);
        let region = &file[found.start..found.end.max(found.start)];
        let file_unit = unit_of(
            region
                .iter()
                .map(String::as_str)
                .chain(file.iter().take(400).map(String::as_str)),
        );
        Self {
            map,
            identity,
            edit_unit,
            file_unit,
        }
    }

    fn apply(&self, line: &str) -> String {
        let line = line.trim_end();
        if self.identity || line.is_empty() {
            return line.to_string();
        }
        let ws = indent(line);
        let body = line.trim_start();
        if let Some((_, f)) = self.map.iter().find(|(e, _)| e == ws) {
            return format!("{f}{body}");
        }
        // The nearest known indent below this one, then whole steps from there.
        let w = width(ws);
        let below = self
            .map
            .iter()
            .filter(|(e, _)| width(e) <= w)
            .max_by_key(|(e, _)| width(e));
        match below {
            Some((e, f)) => {
                let extra = w - width(e);
                format!(
                    "{f}{}{}{body}",
                    self.file_unit.repeat(extra / self.edit_unit),
                    " ".repeat(extra % self.edit_unit)
                )
            }
            None => {
                let Some((e, f)) = self.map.iter().min_by_key(|(e, _)| width(e)) else {
                    return line.to_string();
                };
                let levels = (width(e) - w).div_ceil(self.edit_unit);
                let mut base = f.clone();
                for _ in 0..levels {
                    if base.ends_with(&self.file_unit) {
                        base.truncate(base.len() - self.file_unit.len());
                    }
                }
                format!("{base}{body}")
            }
        }
    }
}

/// A file line (0-based) the edit does not show, lying where an insertion goes: the
/// insertion could go before or after it, so the edit is not clear.
fn unclear_gap(edit: &Edit, found: &Found) -> Option<usize> {
    let prev_aligned = |k: usize| (0..=k).rev().find_map(|i| found.align[i]);
    let next_aligned = |k: usize| (k..found.align.len()).find_map(|i| found.align[i]);
    for (anchor, _) in &edit.insert {
        // New lines right after a removed one replace it: their place is that line's.
        if anchor.is_some_and(|k| edit.old[k].0 == Tag::Remove && found.align[k].is_some()) {
            continue;
        }
        // Anchored to a line the file lacks, with nothing found on one side of it:
        // whether the new lines go before or after what became of that line is unknown.
        let lost = match anchor {
            None => found.align.first().is_some_and(Option::is_none),
            Some(k) => {
                found.align[*k].is_none()
                    && (prev_aligned(*k).is_none() || next_aligned(k + 1).is_none())
            }
        };
        if lost {
            let near = match anchor {
                None => found.start,
                Some(k) => prev_aligned(*k).unwrap_or(found.start),
            };
            return Some(near.min(found.end.saturating_sub(1)));
        }
        let (lo, hi) = match anchor {
            None => (None, next_aligned(0)),
            Some(k) => (prev_aligned(*k), next_aligned(k + 1)),
        };
        let (Some(lo), Some(hi)) = (lo.or(Some(found.start.wrapping_sub(1))), hi) else {
            continue;
        };
        let first = lo.wrapping_add(1);
        if first < hi && first >= found.start {
            return Some(first);
        }
    }
    None
}

/// The file's lines with the edit made at `found`.
fn splice(edit: &Edit, file: &[String], found: &Found, crlf: bool) -> Vec<String> {
    let re = Reindent::new(edit, file, found);
    // Placed exactly: the new lines are kept as written, trailing spaces too (a diff from
    // `git diff` must give the tree it was made from); only a stray `\r` goes.
    let as_written = |l: &str| l.strip_suffix('\r').unwrap_or(l).to_string();
    let ins = |k: Option<usize>| -> Vec<String> {
        edit.insert
            .iter()
            .filter(|(a, _)| *a == k)
            .map(|(_, l)| {
                if found.method == Method::Exact {
                    as_written(l)
                } else {
                    re.apply(l)
                }
            })
            .map(|l| if crlf { l + "\r" } else { l })
            .collect()
    };
    let mut out: Vec<String> = file[..found.start].to_vec();
    out.extend(ins(None));
    // Old lines by the file line they are.
    let mut at: BTreeMap<usize, usize> = BTreeMap::new();
    for (k, f) in found.align.iter().enumerate() {
        if let Some(f) = f {
            at.insert(*f, k);
        }
    }
    let mut next_old = 0usize; // old lines up to here have had their inserts placed
    for (f, line) in file.iter().enumerate().take(found.end).skip(found.start) {
        if let Some(&k) = at.get(&f) {
            // Inserts after old lines the file lacks go just before the next found one.
            for missing in next_old..k {
                out.extend(ins(Some(missing)));
            }
            if edit.old[k].0 == Tag::Keep {
                out.push(line.clone());
            }
            out.extend(ins(Some(k)));
            next_old = k + 1;
        } else {
            out.push(line.clone());
        }
    }
    for missing in next_old..edit.old.len() {
        out.extend(ins(Some(missing)));
    }
    out.extend(file[found.end..].iter().cloned());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::repair::edits::parse;

    const FILE: &str =
        "def f(x):\n    if x < 0:\n        return 0\n    return x\n\n\ndef g(y):\n    return y\n";

    fn run(patch: &str, text: &str) -> Result<String, ApplyError> {
        let edits = parse(patch)?;
        let guard = PathGuard::new(&["secrets/**".into()]).unwrap();
        let t = text.to_string();
        let read = move |p: &str| (p == "a.py").then(|| t.clone());
        let a = apply(&edits, &read, &["a.py".into()], &guard)?;
        Ok(a.files["a.py"].clone().unwrap_or_default())
    }

    #[test]
    fn exact_trailing_and_indentation() {
        let want = FILE.replace("x < 0", "x <= 0");
        let exact = "a.py\n<<<<<<< SEARCH\n    if x < 0:\n        return 0\n=======\n    if x <= 0:\n        return 0\n>>>>>>> REPLACE\n";
        assert_eq!(run(exact, FILE).unwrap(), want);
        let trailing = "a.py\n<<<<<<< SEARCH\n    if x < 0:  \n        return 0\n=======\n    if x <= 0:   \n        return 0\n>>>>>>> REPLACE\n";
        assert_eq!(run(trailing, FILE).unwrap(), want);
        let dedented = "a.py\n<<<<<<< SEARCH\nif x < 0:\n    return 0\n=======\nif x <= 0:\n    return 0\n    # checked\n>>>>>>> REPLACE\n";
        assert_eq!(
            run(dedented, FILE).unwrap(),
            FILE.replace(
                "x < 0:\n        return 0\n",
                "x <= 0:\n        return 0\n        # checked\n"
            )
        );
    }

    #[test]
    fn diffs_placed_by_context_with_a_dropped_line() {
        // Wrong line numbers and counts, and the `if` context line dropped.
        let d = "--- a/a.py\n+++ b/a.py\n@@ -40,9 +40,2 @@\n def f(x):\n-        return 0\n+        return -1\n     return x\n";
        assert_eq!(run(d, FILE).unwrap(), FILE.replace("return 0", "return -1"));
    }

    #[test]
    fn ambiguous_and_missing_are_refused() {
        let twice = "def a():\n    return 1\n\ndef b():\n    return 1\n";
        let e = run(
            "a.py\n<<<<<<< SEARCH\n    return 1\n=======\n    return 2\n>>>>>>> REPLACE\n",
            twice,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "block 1 (a.py): the lines to find match 2 places in a.py (lines 2, 5); add unchanged lines above or below so they match one place"
        );
        let e = run("a.py\n<<<<<<< SEARCH\n    while True:\n        spin()\n=======\n    pass\n>>>>>>> REPLACE\n", FILE).unwrap_err();
        assert!(matches!(e, ApplyError::NoMatch { .. }), "{e}");
    }

    #[test]
    fn a_diff_header_settles_only_an_exact_tie() {
        let twice = "def a():\n    return 1\n\ndef b():\n    return 1\n";
        // `git diff` numbers: the second place, on line 5 of both sides.
        let d = "--- a/a.py\n+++ b/a.py\n@@ -5 +5 @@\n-    return 1\n+    return 2\n";
        assert_eq!(
            run(d, twice).unwrap(),
            "def a():\n    return 1\n\ndef b():\n    return 2\n"
        );
        // A number that names neither place leaves the tie a tie.
        let guessed = "--- a/a.py\n+++ b/a.py\n@@ -4 +4 @@\n-    return 1\n+    return 2\n";
        let e = run(guessed, twice).unwrap_err();
        assert!(matches!(e, ApplyError::Ambiguous { .. }), "{e}");
    }

    #[test]
    fn exact_diffs_keep_trailing_spaces_as_written() {
        let d =
            "--- a/a.py\n+++ b/a.py\n@@ -7,2 +7,2 @@\n def g(y):\n-    return y\n+    return y  \n";
        assert_eq!(
            run(d, FILE).unwrap(),
            FILE.replace("    return y\n", "    return y  \n")
        );
    }

    #[test]
    fn protected_and_escaping_paths_are_refused() {
        for p in ["secrets/key.txt", "../x.py", "/etc/passwd", ".git/config"] {
            let e = run(
                &format!("{p}\n<<<<<<< SEARCH\n=======\nx\n>>>>>>> REPLACE\n"),
                FILE,
            )
            .unwrap_err();
            assert!(matches!(e, ApplyError::Refused { .. }), "{p}: {e}");
        }
    }

    #[test]
    fn new_lines_beside_a_lost_line_at_the_edge_are_refused() {
        let file = "k1 = 1\nk2 = 2\nk3 = 3\nk4 = 4x\nz = 0\n";
        // The last SEARCH line is not in the file; the new line was anchored after it.
        let e = run("a.py\n<<<<<<< SEARCH\nk1 = 1\nk2 = 2\nk3 = 3\nk4 = 4\n=======\nk1 = 1\nk2 = 2\nk3 = 3\nk4 = 4\nNEW\n>>>>>>> REPLACE\n", file).unwrap_err();
        assert!(matches!(e, ApplyError::Gap { .. }), "{e}");
    }

    #[test]
    fn equal_lines_that_could_align_two_ways_are_refused() {
        let file = "a()\n}\nx()\n}\nb()\n";
        let e = run(
            "a.py\n<<<<<<< SEARCH\na()\n}\nb()\n=======\na()\n}\nNEW\nb()\n>>>>>>> REPLACE\n",
            file,
        )
        .unwrap_err();
        assert!(
            matches!(e, ApplyError::Ambiguous { .. } | ApplyError::Gap { .. }),
            "{e}"
        );
    }

    #[test]
    fn a_deletion_must_match_the_whole_file() {
        let e = run(
            "--- a/a.py\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-def f(x):\n-    if x < 0:\n",
            FILE,
        )
        .unwrap_err();
        assert!(matches!(e, ApplyError::NoMatch { .. }), "{e}");
    }

    #[test]
    fn mixed_line_endings_stay_as_they_are() {
        let out = run(
            "a.py\n<<<<<<< SEARCH\nb\n=======\nB\n>>>>>>> REPLACE\n",
            "a\nb\r\nc\nd\n",
        )
        .unwrap();
        assert_eq!(out, "a\nB\nc\nd\n");
    }

    #[test]
    fn crlf_and_missing_final_newline_survive() {
        let text = "a\r\nb\r\nc";
        let out = run(
            "a.py\n<<<<<<< SEARCH\nb\n=======\nB\n>>>>>>> REPLACE\n",
            text,
        )
        .unwrap();
        assert_eq!(out, "a\r\nB\r\nc");
    }
}
