//! The context a repair prompt gets: for the best files, the most relevant functions in
//! full and a skeleton of the rest, within a token budget.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::rank::{Channel, RankedFile};
use super::symbols::{self, Symbol};
use super::tokens::{code_tokens, is_stopword};

/// Tokens of text, estimated as one per four bytes (close for code in the tokenizers
/// of current models; the budget is a guide, not a bill).
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(4)
}

/// A symbol of a ranked file with its relevance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedSymbol {
    /// Name.
    pub name: String,
    /// Kind (`function`, `class`…).
    pub kind: String,
    /// First line, 1-based.
    pub start_line: u32,
    /// Last line.
    pub end_line: u32,
    /// Relevance (comparable within a file).
    pub score: f64,
    /// Why.
    pub why: Vec<String>,
}

/// A piece of a file in the context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snippet {
    /// `full` (a whole definition), `skeleton` (signatures only) or `excerpt` (lines
    /// around a clue, for files without a grammar).
    pub kind: String,
    /// First line, 1-based.
    pub start_line: u32,
    /// Last line.
    pub end_line: u32,
    /// The text, each line prefixed with its number.
    pub text: String,
}

/// One file of the context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextFile {
    /// Path.
    pub path: String,
    /// Its place in the ranking, 1-based.
    pub rank: usize,
    /// Its best symbols.
    pub symbols: Vec<RankedSymbol>,
    /// What of it the context holds.
    pub snippets: Vec<Snippet>,
    /// Tokens of its snippets.
    pub tokens: usize,
}

/// The code context within a budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Context {
    /// The budget, tokens.
    pub budget_tokens: usize,
    /// Tokens used.
    pub used_tokens: usize,
    /// The files, in rank order.
    pub files: Vec<ContextFile>,
}

impl Context {
    /// The context as prompt text: per file a heading and its numbered snippets.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.files {
            out.push_str(&format!("### {}\n", f.path));
            for s in &f.snippets {
                out.push_str(&format!(
                    "```\n# {} lines {}-{}\n{}```\n",
                    s.kind, s.start_line, s.end_line, s.text
                ));
            }
        }
        out
    }
}

/// What the builder needs to know about the issue.
pub struct ContextQuery<'a> {
    /// Lowercased issue words (no stopwords).
    pub words: &'a HashSet<String>,
    /// Identifiers the issue names, lowercased.
    pub identifiers: &'a HashSet<String>,
}

/// Most whole definitions a file contributes.
const FULL_PER_FILE: usize = 3;
/// Longest definition shown in full, lines; longer ones are cut around their clue.
const MAX_FULL_LINES: u32 = 150;

/// Build the context for ranked files. `read` gives a file's text.
pub fn build(
    ranked: &[RankedFile],
    query: &ContextQuery<'_>,
    budget_tokens: usize,
    max_files: usize,
    read: &dyn Fn(&str) -> Option<String>,
) -> Context {
    let mut ctx = Context {
        budget_tokens,
        ..Context::default()
    };
    for (i, file) in ranked.iter().take(max_files).enumerate() {
        let Some(text) = read(&file.path) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let clue_lines: Vec<u32> = file.evidence.iter().filter_map(|e| e.line).collect();
        let left = budget_tokens.saturating_sub(ctx.used_tokens);
        if left < 50 {
            break;
        }
        let (symbols, snippets) = match symbols::symbols(&file.path, &text) {
            Some(syms) => with_symbols(&syms, &lines, &clue_lines, file, query, left),
            None => (Vec::new(), excerpts(&lines, &clue_lines, left)),
        };
        let tokens: usize = snippets.iter().map(|s| estimate_tokens(&s.text)).sum();
        if snippets.is_empty() {
            continue;
        }
        ctx.used_tokens += tokens;
        ctx.files.push(ContextFile {
            path: file.path.clone(),
            rank: i + 1,
            symbols,
            snippets,
            tokens,
        });
    }
    ctx
}

fn numbered(lines: &[&str], from: u32, to: u32) -> String {
    let mut s = String::new();
    for n in from..=to {
        if let Some(l) = lines.get(n as usize - 1) {
            s.push_str(&format!("{n:>5} {l}\n"));
        }
    }
    s
}

fn score_symbol(
    sym: &Symbol,
    lines: &[&str],
    clue_lines: &[u32],
    file: &RankedFile,
    query: &ContextQuery<'_>,
) -> (f64, Vec<String>) {
    let mut score = 0.0;
    let mut why = Vec::new();
    if let Some(l) = clue_lines
        .iter()
        .find(|l| (sym.start_line..=sym.end_line).contains(l))
    {
        score += 5.0;
        why.push(format!("line {l} is named by the issue"));
    }
    if query.identifiers.contains(&sym.name.to_lowercase()) {
        score += 3.0;
        why.push(format!("the issue names `{}`", sym.name));
    }
    let named_by_symbol_channel = file
        .evidence
        .iter()
        .any(|e| e.channel == Channel::Symbol && e.detail.contains(&format!("`{}`", sym.name)));
    if named_by_symbol_channel && why.len() < 2 && !why.iter().any(|w| w.contains("names")) {
        score += 1.0;
    }
    let body = lines
        .get(sym.start_line as usize - 1..(sym.end_line as usize).min(lines.len()))
        .map(|l| l.join("\n"))
        .unwrap_or_default();
    let mut seen: HashSet<String> = HashSet::new();
    code_tokens(&body, |t, _, _| {
        if query.words.contains(t) && !is_stopword(t) {
            seen.insert(t.to_string());
        }
    });
    if !seen.is_empty() {
        let len = f64::from(sym.end_line - sym.start_line + 1);
        score += seen.len() as f64 / len.sqrt().max(1.0);
        why.push(format!("{} of the issue's words", seen.len()));
    }
    (score, why)
}

fn with_symbols(
    syms: &[Symbol],
    lines: &[&str],
    clue_lines: &[u32],
    file: &RankedFile,
    query: &ContextQuery<'_>,
    left: usize,
) -> (Vec<RankedSymbol>, Vec<Snippet>) {
    let mut scored: Vec<(usize, f64, Vec<String>)> = syms
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (score, why) = score_symbol(s, lines, clue_lines, file, query);
            (i, score, why)
        })
        .collect();
    // Whole classes and impls are too big to show; their methods compete instead.
    let container = |s: &Symbol| {
        matches!(s.kind, "class" | "impl" | "trait" | "module" | "interface")
            && syms.iter().any(|o| {
                o.depth > s.depth && o.start_line > s.start_line && o.end_line <= s.end_line
            })
    };
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let ranked: Vec<RankedSymbol> = scored
        .iter()
        .filter(|(_, s, _)| *s > 0.0)
        .take(8)
        .map(|(i, score, why)| RankedSymbol {
            name: syms[*i].name.clone(),
            kind: syms[*i].kind.to_string(),
            start_line: syms[*i].start_line,
            end_line: syms[*i].end_line,
            score: (score * 1000.0).round() / 1000.0,
            why: why.clone(),
        })
        .collect();
    let mut budget = left;
    let mut snippets: Vec<Snippet> = Vec::new();
    let mut covered: Vec<(u32, u32)> = Vec::new();
    for (i, score, _) in scored
        .iter()
        .filter(|(i, s, _)| *s > 0.0 && !container(&syms[*i]))
    {
        if snippets.len() >= FULL_PER_FILE || *score < 0.5 {
            break;
        }
        let s = &syms[*i];
        if covered
            .iter()
            .any(|(a, b)| s.start_line >= *a && s.end_line <= *b)
        {
            continue;
        }
        let (from, to) = if s.end_line - s.start_line + 1 > MAX_FULL_LINES {
            let centre = clue_lines
                .iter()
                .copied()
                .find(|l| (s.start_line..=s.end_line).contains(l))
                .unwrap_or(s.start_line + MAX_FULL_LINES / 2);
            let from = centre.saturating_sub(MAX_FULL_LINES / 2).max(s.start_line);
            (from, (from + MAX_FULL_LINES - 1).min(s.end_line))
        } else {
            (s.start_line, s.end_line)
        };
        let text = numbered(lines, from, to);
        let t = estimate_tokens(&text);
        if t > budget {
            continue;
        }
        budget -= t;
        covered.push((from, to));
        snippets.push(Snippet {
            kind: "full".into(),
            start_line: from,
            end_line: to,
            text,
        });
    }
    // The skeleton: every signature outside what is shown in full, in file order.
    let mut skeleton = String::new();
    let (mut first, mut last) = (0u32, 0u32);
    for s in syms {
        if covered
            .iter()
            .any(|(a, b)| s.start_line >= *a && s.start_line <= *b)
        {
            continue;
        }
        let part = numbered(lines, s.start_line, s.signature_end.max(s.start_line));
        let indent_ok = s.depth <= 1;
        if !indent_ok || estimate_tokens(&skeleton) + estimate_tokens(&part) > budget {
            continue;
        }
        if first == 0 {
            first = s.start_line;
        }
        last = s.signature_end.max(s.start_line);
        skeleton.push_str(&part);
    }
    if !skeleton.is_empty() {
        snippets.push(Snippet {
            kind: "skeleton".into(),
            start_line: first,
            end_line: last,
            text: skeleton,
        });
    }
    snippets.sort_by_key(|s| (s.kind != "full", s.start_line));
    (ranked, snippets)
}

fn excerpts(lines: &[&str], clue_lines: &[u32], left: usize) -> Vec<Snippet> {
    let total = lines.len() as u32;
    if total == 0 {
        return Vec::new();
    }
    let (from, to) = match clue_lines.first() {
        // A named line past the end (a stale line number) is clamped to the file.
        Some(&l) => {
            let l = l.clamp(1, total);
            (l.saturating_sub(20).max(1), l.saturating_add(20).min(total))
        }
        None => (1, total.min(60)),
    };
    let mut text = numbered(lines, from, to);
    let mut to = to;
    while estimate_tokens(&text) > left && to > from {
        to = from + (to - from) / 2;
        text = numbered(lines, from, to);
    }
    if estimate_tokens(&text) > left {
        return Vec::new();
    }
    vec![Snippet {
        kind: "excerpt".into(),
        start_line: from,
        end_line: to,
        text,
    }]
}
