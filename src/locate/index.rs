//! The code index: BM25 (tantivy) over a commit's files, with the names each file
//! defines as their own field (string literals are matched in the text, then
//! verified in the file). Built once per commit and settings, cached
//! under `.autotriage/index/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Index, IndexReader, TantivyDocument, Term};

use super::LocateError;
use super::files::{self, FileFilter, Skipped};
use super::tokens::CodeTokenizer;

/// Bumped when what the index holds changes: old caches are rebuilt, never misread.
pub const INDEX_VERSION: u32 = 3;

/// How many cached indexes to keep; older ones are removed when a new one is built.
const KEEP_INDEXES: usize = 8;

const TOKENIZER: &str = "code";

/// A field of the index that can be searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchField {
    /// The whole text.
    Body,
    /// Names the file defines.
    Defs,
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    path: Field,
    body: Field,
    defs: Field,
}

impl Fields {
    fn get(&self, f: SearchField) -> Field {
        match f {
            SearchField::Body => self.body,
            SearchField::Defs => self.defs,
        }
    }
}

/// What `files.json` beside the index records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`INDEX_VERSION`].
    pub version: u32,
    /// The commit indexed.
    pub commit: String,
    /// Every indexed path.
    pub files: Vec<String>,
    /// What was left out.
    pub skipped: Skipped,
    /// Bytes of text indexed.
    pub bytes: u64,
}

/// An open index of one commit.
pub struct CodeIndex {
    reader: IndexReader,
    fields: Fields,
    /// Paths, statistics.
    pub manifest: Manifest,
    /// The folder it lives in.
    pub dir: PathBuf,
    /// Whether this call built it (false: reused from the cache).
    pub built: bool,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    // Only the body needs term frequencies; names and literals count once per file.
    let basic = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::Basic),
    );
    let fields = Fields {
        path: b.add_text_field("path", STRING | STORED),
        body: b.add_text_field("body", text),
        defs: b.add_text_field("defs", basic),
    };
    (b.build(), fields)
}

fn register(index: &Index) {
    index.tokenizers().register(
        TOKENIZER,
        TextAnalyzer::builder(CodeTokenizer::default()).build(),
    );
}

impl CodeIndex {
    /// Open the cached index of `commit` under `cache_root`, or build it.
    pub fn open_or_build(
        cache_root: &Path,
        repo: &Repository,
        commit: Oid,
        filter: &FileFilter,
    ) -> Result<Self, LocateError> {
        let dir = cache_root.join(format!("{commit}-{}", filter.fingerprint));
        if dir.join("files.json").is_file() {
            match Self::open(&dir) {
                Ok(i) => return Ok(i),
                // A damaged cache is rebuilt, not trusted.
                Err(_) => {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        std::fs::create_dir_all(cache_root).map_err(|e| LocateError::io(cache_root, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(".building-")
            .tempdir_in(cache_root)
            .map_err(|e| LocateError::io(cache_root, e))?;
        build(tmp.path(), repo, commit, filter)?;
        let tmp_path = tmp.keep();
        if let Err(e) = std::fs::rename(&tmp_path, &dir) {
            let _ = std::fs::remove_dir_all(&tmp_path);
            // Another process built the same index first: use theirs.
            if !dir.join("files.json").is_file() {
                return Err(LocateError::io(&dir, e));
            }
        }
        prune(cache_root, &dir);
        let mut i = Self::open(&dir)?;
        i.built = true;
        Ok(i)
    }

    fn open(dir: &Path) -> Result<Self, LocateError> {
        let manifest: Manifest = std::fs::read(dir.join("files.json"))
            .map_err(|e| LocateError::io(dir, e))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| LocateError::Index {
                    dir: dir.display().to_string(),
                    message: e.to_string(),
                })
            })?;
        if manifest.version != INDEX_VERSION {
            return Err(LocateError::Index {
                dir: dir.display().to_string(),
                message: format!("index version {}", manifest.version),
            });
        }
        let index = Index::open_in_dir(dir).map_err(|e| LocateError::tantivy(dir, e))?;
        register(&index);
        let (_, fields) = schema();
        let reader = index.reader().map_err(|e| LocateError::tantivy(dir, e))?;
        Ok(Self {
            reader,
            fields,
            manifest,
            dir: dir.to_path_buf(),
            built: false,
        })
    }

    /// The best `limit` files for weighted terms on one field, best first. With
    /// `min_match`, a file must hold at least that many of the terms.
    pub fn search(
        &self,
        field: SearchField,
        terms: &[(String, f32)],
        limit: usize,
        min_match: usize,
    ) -> Vec<(String, f32)> {
        if terms.is_empty() {
            return Vec::new();
        }
        let f = self.fields.get(field);
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|(t, w)| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(f, t),
                    IndexRecordOption::WithFreqs,
                ));
                let q: Box<dyn Query> = if (*w - 1.0).abs() > f32::EPSILON {
                    Box::new(BoostQuery::new(q, *w))
                } else {
                    q
                };
                (Occur::Should, q)
            })
            .collect();
        let query = if min_match > 1 {
            BooleanQuery::with_minimum_required_clauses(clauses, min_match.min(terms.len()))
        } else {
            BooleanQuery::new(clauses)
        };
        let searcher = self.reader.searcher();
        // A few more than asked, so equal scores at the cut are settled by path, not by
        // the order the indexing threads happened to write documents in.
        let Ok(top) = searcher.search(&query, &TopDocs::with_limit(limit * 2 + 8).order_by_score())
        else {
            return Vec::new();
        };
        let mut hits: Vec<(String, f32)> = top
            .into_iter()
            .filter_map(|(score, addr)| {
                let doc: TantivyDocument = searcher.doc(addr).ok()?;
                let path = doc.get_first(self.fields.path)?.as_str()?.to_string();
                // Rounded: the same file scores the same whichever segment holds it.
                Some((path, (score * 1e4).round() / 1e4))
            })
            .collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        hits.truncate(limit);
        hits
    }

    /// How many files define or mention `term` in a field (its document frequency).
    pub fn doc_freq(&self, field: SearchField, term: &str) -> u64 {
        let searcher = self.reader.searcher();
        searcher
            .doc_freq(&Term::from_field_text(self.fields.get(field), term))
            .unwrap_or(0)
    }
}

fn build(
    dir: &Path,
    repo: &Repository,
    commit: Oid,
    filter: &FileFilter,
) -> Result<(), LocateError> {
    let (schema, fields) = schema();
    let index = Index::create_in_dir(dir, schema).map_err(|e| LocateError::tantivy(dir, e))?;
    register(&index);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4);
    let mut writer = index
        .writer_with_num_threads::<TantivyDocument>(threads, 64_000_000 * threads)
        .map_err(|e| LocateError::tantivy(dir, e))?;
    let mut skipped = Skipped::default();
    let candidates = files::tree_files(repo, commit, filter, &mut skipped)?;
    let mut paths = Vec::with_capacity(candidates.len());
    let mut bytes = 0u64;
    for f in candidates {
        let Some(text) = files::blob_text(repo, f.oid, filter, &mut skipped) else {
            continue;
        };
        bytes += text.len() as u64;
        let mut doc = TantivyDocument::default();
        doc.add_text(fields.path, &f.path);
        doc.add_text(fields.defs, definitions(&text).join(" "));
        doc.add_text(fields.body, text);
        writer
            .add_document(doc)
            .map_err(|e| LocateError::tantivy(dir, e))?;
        paths.push(f.path);
    }
    writer.commit().map_err(|e| LocateError::tantivy(dir, e))?;
    writer
        .wait_merging_threads()
        .map_err(|e| LocateError::tantivy(dir, e))?;
    let manifest = Manifest {
        version: INDEX_VERSION,
        commit: commit.to_string(),
        files: paths,
        skipped,
        bytes,
    };
    let json = serde_json::to_vec(&manifest).map_err(|e| LocateError::Index {
        dir: dir.display().to_string(),
        message: e.to_string(),
    })?;
    std::fs::write(dir.join("files.json"), json).map_err(|e| LocateError::io(dir, e))
}

/// Keep the newest [`KEEP_INDEXES`] indexes; `current` always stays.
fn prune(cache_root: &Path, current: &Path) {
    let Ok(entries) = std::fs::read_dir(cache_root) else {
        return;
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(_, p)| p.join("files.json").is_file())
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    for (_, p) in dirs.into_iter().skip(KEEP_INDEXES) {
        if p != current {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Names a file defines, found by keyword (`def`, `class`, `fn`, `func`, `struct`…):
/// cheap enough for every file; tree-sitter parses only the files that rank.
pub fn definitions(text: &str) -> Vec<&str> {
    const KEYWORDS: &[&str] = &[
        "def",
        "class",
        "fn",
        "func",
        "function",
        "struct",
        "enum",
        "trait",
        "interface",
        "type",
        "impl",
        "mod",
        "macro_rules!",
        "record",
    ];
    let mut out = Vec::new();
    for line in text.lines() {
        // Definitions start with a lowercase keyword or modifier; skip other lines early.
        let t = line.trim_start();
        if !t.as_bytes().first().is_some_and(u8::is_ascii_lowercase) {
            continue;
        }
        if let Some(m) = method_name(t) {
            out.push(m);
        }
        let mut words = t
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '!'))
            .filter(|w| !w.is_empty())
            .take(6)
            .peekable();
        let mut prev: Option<&str> = None;
        while let Some(w) = words.next() {
            if prev.is_some_and(|p| KEYWORDS.contains(&p))
                && w.chars()
                    .next()
                    .is_some_and(|c| c.is_alphabetic() || c == '_')
            {
                out.push(w);
            }
            // Go methods: `func (r *T) Name(`; the receiver's words come first.
            if w == "func" && line.trim_start().starts_with("func (") {
                if let Some(close) = line.find(')') {
                    let rest = &line[close + 1..];
                    if let Some(name) = rest
                        .trim_start()
                        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                        .filter(|n| !n.is_empty())
                    {
                        out.push(name);
                    }
                }
                break;
            }
            prev = Some(w);
            if words.peek().is_none() {
                break;
            }
        }
    }
    out
}

/// Java, C# and Kotlin methods: `public static Type name(` names `name`.
fn method_name(line: &str) -> Option<&str> {
    const MODIFIERS: &[&str] = &[
        "public ",
        "private ",
        "protected ",
        "internal ",
        "static ",
        "final ",
        "abstract ",
        "synchronized ",
        "override ",
    ];
    let t = line.trim_start();
    if !MODIFIERS.iter().any(|m| t.starts_with(m)) {
        return None;
    }
    let head = &t[..t.find('(')?];
    head.rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .filter(|n| !n.is_empty())
}

/// The contents of one-line string literals, quotes removed.
pub fn literals(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in text.lines() {
        let bytes = line.as_bytes();
        let mut i = 0usize;
        while i < bytes.len() {
            let q = bytes[i];
            if q == b'"' || q == b'\'' || q == b'`' {
                let start = i + 1;
                let mut j = start;
                while j < bytes.len() && bytes[j] != q {
                    if bytes[j] == b'\\' {
                        j += 1;
                    }
                    j += 1;
                }
                if j < bytes.len() {
                    let s = &line[start..j];
                    if s.len() >= 4 && s.contains(|c: char| c.is_alphabetic()) {
                        out.push(s);
                    }
                    i = j + 1;
                    continue;
                }
                break;
            }
            i += 1;
        }
    }
    out
}

/// Paths by lowercased file name, for matching the paths an issue mentions.
#[derive(Debug, Default)]
pub struct PathTable {
    by_name: HashMap<String, Vec<usize>>,
    /// All indexed paths.
    pub paths: Vec<String>,
}

impl PathTable {
    /// From the manifest's paths.
    pub fn new(paths: &[String]) -> Self {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in paths.iter().enumerate() {
            let name = p.rsplit('/').next().unwrap_or(p).to_ascii_lowercase();
            by_name.entry(name).or_default().push(i);
        }
        Self {
            by_name,
            paths: paths.to_vec(),
        }
    }

    /// The indexed files that best match a mentioned path by trailing components:
    /// `/site-packages/_pytest/python.py` finds `src/_pytest/python.py`. A mention of
    /// several components must match at least two of them (so a stdlib
    /// `logging/__init__.py` does not match every `__init__.py`).
    pub fn resolve(&self, mention: &str) -> Vec<&str> {
        let mention = mention.replace('\\', "/");
        let parts: Vec<&str> = mention
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        let Some(name) = parts.last() else {
            return Vec::new();
        };
        let Some(ids) = self.by_name.get(&name.to_ascii_lowercase()) else {
            return Vec::new();
        };
        let need = parts.len().min(2);
        let mut best = 0usize;
        let mut out: Vec<&str> = Vec::new();
        for &i in ids {
            let p = &self.paths[i];
            let cand: Vec<&str> = p.split('/').collect();
            let common = parts
                .iter()
                .rev()
                .zip(cand.iter().rev())
                .take_while(|(a, b)| a.eq_ignore_ascii_case(b))
                .count();
            if common < need {
                continue;
            }
            if common > best {
                best = common;
                out.clear();
            }
            if common == best {
                out.push(p);
            }
        }
        out
    }

    /// Whether `path` is indexed.
    pub fn contains(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
        self.by_name
            .get(&name)
            .is_some_and(|ids| ids.iter().any(|&i| self.paths[i] == path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_by_keyword() {
        let text = "class Foo(Base):\n    def bar_baz(self):\n pub fn run_it() {}\nfunc (s *Srv) Serve() {}\nfunction go() {}\n";
        assert_eq!(
            definitions(text),
            ["Foo", "bar_baz", "run_it", "Serve", "go"]
        );
    }

    #[test]
    fn literals_of_one_line() {
        assert_eq!(
            literals(
                r#"raise ValueError("bad value for %s" % x); y = 'ok'; z = "it's \"q\" here""#
            ),
            ["bad value for %s", r#"it's \"q\" here"#]
        );
    }

    #[test]
    fn mentioned_paths_match_by_suffix() {
        let t = PathTable::new(&[
            "src/_pytest/python.py".into(),
            "src/_pytest/__init__.py".into(),
            "testing/python.py".into(),
        ]);
        assert_eq!(
            t.resolve("/usr/lib/python3.9/site-packages/_pytest/python.py"),
            ["src/_pytest/python.py"]
        );
        assert!(
            t.resolve("/usr/lib/python3.9/logging/__init__.py")
                .is_empty()
        );
        assert_eq!(t.resolve("python.py").len(), 2);
    }
}
