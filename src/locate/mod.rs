//! The locate stage: from an issue to ranked files and symbols, each with the evidence
//! that put it there, and a code context that fits a token budget.
//!
//! Signals: stack frames, named paths, dotted names resolved to modules, identifiers
//! matched to definitions, error messages matched to string literals, BM25 over the
//! code, and files changed by fixes of similar past issues; fused by [`rank::Fusion`].

pub mod context;
pub mod evidence;
pub mod files;
pub mod index;
pub mod rank;
pub mod rerank;
pub mod symbols;
pub mod tokens;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, HasKind};
use context::{Context, ContextQuery};
use evidence::Clues;
use index::{CodeIndex, PathTable, SearchField};
use rank::{Channel, Fusion, RankedFile};

/// Locate failures.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// A git read failed.
    #[error("{repo}: could not {action} {what}: {message}\n  fix: {hint}")]
    Git {
        /// The repository.
        repo: String,
        /// What was being done.
        action: String,
        /// To what.
        what: String,
        /// What git said.
        message: String,
        /// What to do.
        hint: String,
    },
    /// The index folder could not be written or read.
    #[error(
        "code index {path}: {source}\n  fix: check that the folder is writable and the disk is not full"
    )]
    Io {
        /// The folder.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The index is damaged or from another version.
    #[error("code index {dir}: {message}\n  fix: remove the folder; it is rebuilt on the next run")]
    Index {
        /// The folder.
        dir: String,
        /// What is wrong.
        message: String,
    },
    /// A setting is unusable.
    #[error("`{key}`: {message}\n  fix: correct it in the config (see `autotriage config show`)")]
    Config {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl LocateError {
    pub(crate) fn git(repo: &Repository, action: &str, what: &str, e: &git2::Error) -> Self {
        let hint = if e.code() == git2::ErrorCode::NotFound {
            "fetch it (`git fetch origin`) or check the commit".to_string()
        } else {
            "check the repository with `git fsck`".to_string()
        };
        LocateError::Git {
            repo: repo.path().display().to_string(),
            action: action.into(),
            what: what.into(),
            message: e.message().to_string(),
            hint,
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        LocateError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn tantivy(path: &Path, e: tantivy::TantivyError) -> Self {
        LocateError::Index {
            dir: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

impl HasKind for LocateError {
    fn kind(&self) -> ErrorKind {
        match self {
            LocateError::Config { .. } => ErrorKind::Usage,
            _ => ErrorKind::Runtime,
        }
    }
}

/// Settings of the stage (`locate.*`).
#[derive(Debug, Clone)]
pub struct LocateSettings {
    /// What is indexed.
    pub filter: files::FileFilter,
    /// Token budget of the context.
    pub context_tokens: usize,
    /// Files in the ranking.
    pub max_files: usize,
    /// Files the context may draw from.
    pub context_files: usize,
}

impl LocateSettings {
    /// From the `locate` section of the config.
    pub fn from_config(c: &crate::config::LocateConfig) -> Result<Self, LocateError> {
        Ok(Self {
            filter: files::FileFilter::new(&c.exclude, c.max_file_bytes)?,
            context_tokens: c.context_tokens,
            max_files: c.max_files,
            context_files: c.context_files,
        })
    }
}

/// A file changed by the fix of a similar past issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorFile {
    /// Path.
    pub path: String,
    /// The past issue.
    pub reference: String,
    /// How similar that issue is (0..1).
    pub similarity: f64,
}

/// About the index used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexInfo {
    /// Its folder.
    pub dir: String,
    /// Built now (false: reused).
    pub built: bool,
    /// Files indexed.
    pub files: usize,
    /// Bytes of text indexed.
    pub bytes: u64,
    /// What was left out.
    pub skipped: files::Skipped,
    /// Seconds to open or build it.
    pub seconds: f64,
}

/// A model's re-rank of the top files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rerank {
    /// The model entry.
    pub model: String,
    /// The order it gave.
    pub order: Vec<String>,
    /// Its reason.
    pub reason: String,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Answer tokens.
    pub output_tokens: u64,
}

/// The stage's output, `context.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Located {
    /// The commit searched.
    pub commit: String,
    /// Files, best first, with their evidence.
    pub files: Vec<RankedFile>,
    /// The code context for the repair prompt.
    pub context: Context,
    /// The clues read from the issue.
    pub clues: serde_json::Value,
    /// The index used.
    pub index: IndexInfo,
    /// The model's re-rank, when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank: Option<Rerank>,
    /// Seconds spent ranking (index excluded).
    pub seconds: f64,
    /// Seconds of that spent in the index's searches.
    pub search_seconds: f64,
}

/// Open (or build) the index of `commit` under `cache_root`.
pub fn open_index(
    cache_root: &Path,
    repo: &Repository,
    commit: Oid,
    settings: &LocateSettings,
) -> Result<(CodeIndex, IndexInfo), LocateError> {
    let t = Instant::now();
    let index = CodeIndex::open_or_build(cache_root, repo, commit, &settings.filter)?;
    let info = IndexInfo {
        dir: index.dir.display().to_string(),
        built: index.built,
        files: index.manifest.files.len(),
        bytes: index.manifest.bytes,
        skipped: index.manifest.skipped.clone(),
        seconds: t.elapsed().as_secs_f64(),
    };
    Ok((index, info))
}

/// Rank the files of an indexed commit for an issue and build the context.
pub fn locate(
    repo: &Repository,
    index: &CodeIndex,
    info: IndexInfo,
    title: &str,
    body: &str,
    prior: &[PriorFile],
    settings: &LocateSettings,
) -> Located {
    let t = Instant::now();
    let commit = Oid::from_str(&index.manifest.commit).unwrap_or(Oid::ZERO_SHA1);
    let clues = evidence::extract(title, body);
    let table = PathTable::new(&index.manifest.files);
    let mut fusion = Fusion::default();

    // Frames: innermost first.
    let mut ranked = Vec::new();
    for f in &clues.frames {
        for p in table.resolve(&f.path) {
            let func = f
                .function
                .as_deref()
                .map(|x| format!(" in {x}"))
                .unwrap_or_default();
            let at = f.line.map(|l| format!(":{l}")).unwrap_or_default();
            ranked.push((
                p.to_string(),
                format!("{}: {}{at}{func}", f.source, f.path),
                f.line,
            ));
        }
    }
    fusion.add_ranking(Channel::Frame, ranked);

    let mut ranked = Vec::new();
    for m in &clues.paths {
        for p in table.resolve(&m.path) {
            let at = m.line.map(|l| format!(":{l}")).unwrap_or_default();
            ranked.push((
                p.to_string(),
                format!("named in the issue: {}{at}", m.path),
                m.line,
            ));
        }
    }
    fusion.add_ranking(Channel::Path, ranked);

    fusion.add_ranking(Channel::Module, modules(&clues, &table));
    fusion.add_ranking(Channel::Symbol, symbol_matches(&clues, index));
    fusion.add_ranking(
        Channel::Literal,
        literal_matches(&clues, index, repo, commit),
    );

    let words = query_words(title, body, &clues);
    let terms: Vec<(String, f32)> = words.iter().map(|(w, x)| (w.clone(), *x)).collect();
    let text_hits = index.search(SearchField::Body, &terms, 50, 1);
    let top_terms: Vec<&str> = terms.iter().take(6).map(|(w, _)| w.as_str()).collect();
    fusion.add_ranking(
        Channel::Text,
        text_hits
            .into_iter()
            .map(|(p, s)| {
                (
                    p,
                    format!(
                        "BM25 {s:.1} for the issue's words ({}…)",
                        top_terms.join(", ")
                    ),
                    None,
                )
            })
            .collect(),
    );
    let mut title_terms: Vec<(String, f32)> = Vec::new();
    tokens::code_tokens(title, |t, _, _| {
        if t.len() >= 2 && !tokens::is_stopword(t) && !title_terms.iter().any(|(w, _)| w == t) {
            title_terms.push((t.to_string(), 1.0));
        }
    });
    fusion.add_ranking(
        Channel::Title,
        index
            .search(SearchField::Body, &title_terms, 30, 1)
            .into_iter()
            .map(|(p, s)| (p, format!("BM25 {s:.1} for the title's words"), None))
            .collect(),
    );
    let path_terms: Vec<(String, f32)> = terms
        .iter()
        .filter(|(w, _)| w.len() >= 4)
        .cloned()
        .collect();
    fusion.add_ranking(Channel::PathWords, path_words(&table.paths, &path_terms));

    let mut prior_sorted: Vec<&PriorFile> =
        prior.iter().filter(|p| table.contains(&p.path)).collect();
    prior_sorted.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
    fusion.add_ranking(
        Channel::Memory,
        prior_sorted
            .into_iter()
            .map(|p| {
                (
                    p.path.clone(),
                    format!(
                        "changed by the fix of similar issue {} ({:.2})",
                        p.reference, p.similarity
                    ),
                    None,
                )
            })
            .collect(),
    );

    let search_seconds = t.elapsed().as_secs_f64();
    let mut files = fusion.ranked();
    files.truncate(settings.max_files);
    let context = build_context(repo, commit, &files, &clues, &words, settings);
    Located {
        commit: index.manifest.commit.clone(),
        files,
        context,
        clues: serde_json::to_value(&clues).unwrap_or_default(),
        index: info,
        rerank: None,
        seconds: t.elapsed().as_secs_f64(),
        search_seconds,
    }
}

/// Rebuild the context after the ranking changed (a model re-rank).
pub fn rebuild_context(
    repo: &Repository,
    located: &mut Located,
    title: &str,
    body: &str,
    settings: &LocateSettings,
) {
    let commit = Oid::from_str(&located.commit).unwrap_or(Oid::ZERO_SHA1);
    let clues = evidence::extract(title, body);
    let words = query_words(title, body, &clues);
    located.context = build_context(repo, commit, &located.files, &clues, &words, settings);
}

fn build_context(
    repo: &Repository,
    commit: Oid,
    files: &[RankedFile],
    clues: &Clues,
    words: &[(String, f32)],
    settings: &LocateSettings,
) -> Context {
    let word_set: HashSet<String> = words.iter().map(|(w, _)| w.clone()).collect();
    let ident_set: HashSet<String> = clues
        .identifiers
        .iter()
        .map(|(w, _)| w.to_lowercase())
        .collect();
    context::build(
        files,
        &ContextQuery {
            words: &word_set,
            identifiers: &ident_set,
        },
        settings.context_tokens,
        settings.context_files,
        &|p| files::read_at(repo, commit, p),
    )
}

/// The words for BM25, weighted: title words and code identifiers count more.
fn query_words(title: &str, body: &str, clues: &Clues) -> Vec<(String, f32)> {
    let mut w: HashMap<String, (f32, usize)> = HashMap::new();
    let mut order = 0usize;
    let mut add = |t: &str, weight: f32| {
        if t.len() < 2 || tokens::is_stopword(t) {
            return;
        }
        let e = w.entry(t.to_string()).or_insert((0.0, order));
        order += 1;
        e.0 = e.0.max(weight);
    };
    tokens::code_tokens(title, |t, _, _| add(t, 2.0));
    tokens::code_tokens(body, |t, _, _| add(t, 1.0));
    for (ident, weight) in &clues.identifiers {
        add(&ident.to_lowercase(), 1.0 + weight / 2.0);
    }
    let mut v: Vec<(String, f32, usize)> = w.into_iter().map(|(k, (x, o))| (k, x, o)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    v.truncate(256);
    v.into_iter().map(|(k, x, _)| (k, x)).collect()
}

/// Paths that hold the words (rarer words count more), best first. Computed
/// over the path list rather than the index: short fields tie a lot, and ties must
/// fall the same way every time.
fn path_words(paths: &[String], terms: &[(String, f32)]) -> Vec<(String, String, Option<u32>)> {
    let tokenized: Vec<std::collections::HashSet<String>> = paths
        .iter()
        .map(|p| tokens::token_list(p).into_iter().collect())
        .collect();
    let n = paths.len().max(1) as f32;
    let mut scored: Vec<(f32, usize, Vec<&str>)> = Vec::new();
    let df: Vec<usize> = terms
        .iter()
        .map(|(w, _)| tokenized.iter().filter(|t| t.contains(w)).count())
        .collect();
    for (i, toks) in tokenized.iter().enumerate() {
        let mut score = 0.0;
        let mut hit = Vec::new();
        for ((w, weight), d) in terms.iter().zip(&df) {
            if *d > 0 && toks.contains(w) {
                score += weight * (n / *d as f32).ln().max(0.1);
                hit.push(w.as_str());
            }
        }
        if score > 0.0 {
            scored.push((score, i, hit));
        }
    }
    scored.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| paths[a.1].cmp(&paths[b.1]))
    });
    scored
        .into_iter()
        .take(20)
        .map(|(_, i, hit)| {
            let hit: Vec<&str> = hit.into_iter().take(3).collect();
            (
                paths[i].clone(),
                format!("path has the issue's words: {}", hit.join(", ")),
                None,
            )
        })
        .collect()
}

/// Dotted and `::` names resolved to module files: `_pytest.assertion.rewrite` →
/// `src/_pytest/assertion/rewrite.py`, `crate::io::read` → `src/io.rs`.
fn modules(clues: &Clues, table: &PathTable) -> Vec<(String, String, Option<u32>)> {
    const EXTS: &[&str] = &["py", "rs", "js", "ts", "go", "java", "rb"];
    let mut out = Vec::new();
    for q in &clues.qualified {
        let parts: Vec<&str> = q
            .split(['.', ':'])
            .filter(|p| !p.is_empty() && !matches!(*p, "crate" | "self" | "super"))
            .collect();
        // Longest prefix first: the most specific module that exists.
        'prefix: for k in (1..=parts.len()).rev() {
            let stem = parts[..k].join("/");
            let mut cands: Vec<String> = EXTS.iter().map(|e| format!("{stem}.{e}")).collect();
            cands.push(format!("{stem}/__init__.py"));
            cands.push(format!("{stem}/mod.rs"));
            cands.push(format!("{stem}/index.js"));
            cands.push(format!("{stem}/index.ts"));
            for c in cands {
                // A one-part name must be the file's whole name to count (`utils` is not
                // `foo/utils.py` unless nothing else matches better).
                if k < 2 && parts.len() >= 2 {
                    continue;
                }
                let hits = table.resolve(&c);
                if !hits.is_empty() && hits.len() <= 3 {
                    for h in hits {
                        out.push((h.to_string(), format!("module of `{q}`"), None));
                    }
                    break 'prefix;
                }
            }
        }
    }
    out
}

/// Files that define the identifiers the issue names, rarer names first.
fn symbol_matches(clues: &Clues, index: &CodeIndex) -> Vec<(String, String, Option<u32>)> {
    let mut per_file: HashMap<String, (f32, Vec<String>)> = HashMap::new();
    // Names the issue marks as code count more than words of its fenced blocks
    // (which hold real API names, but also output and prose).
    for (ident, weight) in clues.identifiers.iter().take(60) {
        let weight = if clues.marked.binary_search(ident).is_ok() {
            *weight
        } else {
            weight / 2.0
        };
        let term = ident.to_lowercase();
        let df = index.doc_freq(SearchField::Defs, &term);
        if df == 0 || df > 15 {
            continue;
        }
        for (path, _) in index.search(SearchField::Defs, &[(term.clone(), 1.0)], 15, 1) {
            let e = per_file.entry(path).or_default();
            e.0 += weight / df as f32;
            if e.1.len() < 4 {
                e.1.push(ident.clone());
            }
        }
    }
    let mut v: Vec<(String, (f32, Vec<String>))> = per_file.into_iter().collect();
    v.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
    v.into_iter()
        .take(30)
        .map(|(p, (_, names))| {
            let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            (p, format!("defines {}", names.join(", ")), None)
        })
        .collect()
}

/// Files whose string literals hold the error messages, verified line by line.
fn literal_matches(
    clues: &Clues,
    index: &CodeIndex,
    repo: &Repository,
    commit: Oid,
) -> Vec<(String, String, Option<u32>)> {
    let mut out: Vec<(usize, String, String, Option<u32>)> = Vec::new();
    for message in clues.messages.iter().take(5) {
        let mut words: Vec<String> = Vec::new();
        tokens::code_tokens(message, |t, _, _| {
            if t.len() >= 2 && !tokens::is_stopword(t) && !words.iter().any(|w| w == t) {
                words.push(t.to_string());
            }
        });
        words.truncate(16);
        if words.is_empty() {
            continue;
        }
        let terms: Vec<(String, f32)> = words.iter().map(|w| (w.clone(), 1.0)).collect();
        // Messages carry runtime values the literal lacks: half the words must match;
        // the file is then checked for the literal itself.
        let need = words.len().div_ceil(2);
        for (path, _) in index.search(SearchField::Body, &terms, 20, need) {
            let Some(text) = files::read_at(repo, commit, &path) else {
                continue;
            };
            if let Some((len, line)) = best_literal(&text, message) {
                let short: String = message.chars().take(60).collect();
                out.push((
                    len,
                    path,
                    format!("error message \"{short}\" is a string here"),
                    Some(line),
                ));
            }
        }
    }
    out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    out.into_iter().map(|(_, p, d, l)| (p, d, l)).collect()
}

/// The longest piece of a string literal of `text` (split at format placeholders) that
/// the message contains, at least 8 characters: its length and line.
fn best_literal(text: &str, message: &str) -> Option<(usize, u32)> {
    let msg = message.to_lowercase();
    let mut best: Option<(usize, u32)> = None;
    for (n, line) in text.lines().enumerate() {
        for lit in index::literals(line) {
            for piece in split_placeholders(lit) {
                let p = piece.trim().to_lowercase();
                if p.len() >= 8 && msg.contains(&p) && best.is_none_or(|(l, _)| p.len() > l) {
                    best = Some((p.len(), n as u32 + 1));
                }
            }
        }
    }
    best
}

fn split_placeholders(lit: &str) -> Vec<&str> {
    // `%s`, `%(name)s`, `{}`, `{name}`, `${x}`: the parts between them are fixed text.
    let mut out = Vec::new();
    let bytes = lit.as_bytes();
    let mut start = 0usize;
    let mut i = 0usize;
    while i < bytes.len() {
        // Ends are moved to a character boundary: the byte after `%` may start a
        // multi-byte character.
        let next_char_end = |at: usize| {
            let mut e = (at + 1).min(bytes.len());
            while e < bytes.len() && !lit.is_char_boundary(e) {
                e += 1;
            }
            e
        };
        let end = match bytes[i] {
            b'%' if i + 1 < bytes.len() => {
                if bytes[i + 1] == b'(' {
                    lit[i..].find(')').map(|c| next_char_end(i + c + 1))
                } else {
                    Some(next_char_end(i + 1))
                }
            }
            b'{' => lit[i..].find('}').map(|c| i + c + 1),
            b'$' if bytes.get(i + 1) == Some(&b'{') => lit[i..].find('}').map(|c| i + c + 1),
            _ => None,
        };
        if let Some(e) = end {
            out.push(&lit[start..i]);
            start = e.min(bytes.len());
            i = start;
        } else {
            i += 1;
        }
    }
    out.push(&lit[start.min(lit.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_next_to_multibyte_characters_do_not_split_them() {
        assert_eq!(
            split_placeholders("完成 50%，请稍候"),
            ["完成 50", "请稍候"]
        );
        assert_eq!(split_placeholders("%(name)é ok"), ["", " ok"]);
    }

    #[test]
    fn placeholders_split_fixed_text() {
        assert_eq!(
            split_placeholders("invalid %s for {name}: ${x} here"),
            ["invalid ", " for ", ": ", " here"]
        );
        assert_eq!(
            best_literal(
                "x = 1\nraise ValueError(\"job id must be positive, got %r\")\n",
                "job id must be positive, got -3"
            ),
            Some((28, 2))
        );
    }
}
