//! Duplicate search over an inverted index of two TF-IDF views, combined as
//! `0.2 · cos(title character 3–5-grams) + 0.8 · cos(title+body words)`.
//!
//! Words are split the way code is written (`org.apache.FooBar` → `org`, `apache`,
//! `foobar`, `foo`, `bar`), unigrams only: on the Hadoop duplicate pairs bigrams made
//! vectors sparser and cost recall, and identifier splitting gained it (see the note
//! on the triage issue for the figures).

use std::collections::HashMap;

use super::text::{self, SparseVec};

/// Weight of the title character view.
pub const TITLE_WEIGHT: f32 = 0.2;
const DIMS_LOG2: u32 = 20;
const MAX_TEXT: usize = 20_000;

/// Split a part like `ZStandardCompressor2` into `z`, `standard`, `compressor`, `2`.
fn camel_pieces(part: &str) -> Vec<String> {
    let chars: Vec<char> = part.chars().collect();
    let mut pieces = Vec::new();
    let mut start = 0;
    for i in 1..chars.len() {
        let (a, b) = (chars[i - 1], chars[i]);
        let next_lower = chars.get(i + 1).is_some_and(|c| c.is_lowercase());
        let boundary = (a.is_lowercase() && b.is_uppercase())
            || (a.is_alphabetic() != b.is_alphabetic()
                && (a.is_alphanumeric() && b.is_alphanumeric()))
            || (a.is_uppercase() && b.is_uppercase() && next_lower)
            || b == '_'
            || a == '_';
        if boundary {
            pieces.push(chars[start..i].iter().collect::<String>());
            start = i;
        }
    }
    pieces.push(chars[start..].iter().collect::<String>());
    pieces
        .into_iter()
        .map(|p| p.trim_matches('_').to_lowercase())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Word tokens of text written by programmers: dotted/dashed/slashed names split into
/// parts, each part kept whole and, when it is camelCase or snake_case, in pieces.
pub fn code_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for token in text.split(|c: char| !(c.is_alphanumeric() || "_$.-#/".contains(c))) {
        for part in token.split(['.', '-', '#', '/']) {
            let part = part.trim_matches('$');
            if part.is_empty() {
                continue;
            }
            let pieces = camel_pieces(part);
            if pieces.len() > 1 {
                out.extend(pieces.into_iter().filter(|p| p.chars().count() >= 2));
            }
            let lower = part.to_lowercase();
            let n = lower.chars().count();
            if (n >= 2 || lower.chars().all(|c| c.is_ascii_digit())) && n <= 60 {
                out.push(lower);
            }
        }
    }
    out
}

fn fnv(prefix: u8, bytes: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(prefix);
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h & ((1u64 << DIMS_LOG2) - 1)) as u32
}

fn count(feats: Vec<u32>) -> SparseVec {
    let mut feats = feats;
    feats.sort_unstable();
    let mut out: SparseVec = Vec::with_capacity(feats.len());
    for i in feats {
        match out.last_mut() {
            Some((j, c)) if *j == i => *c += 1.0,
            _ => out.push((i, 1.0)),
        }
    }
    out
}

fn word_counts(title: &str, body: &str) -> SparseVec {
    let body = &body[..text::floor_char_boundary(body, MAX_TEXT)];
    let text = format!("{title}\n{body}");
    count(
        code_words(&text)
            .iter()
            .map(|w| fnv(b'w', w.as_bytes()))
            .collect(),
    )
}

fn title_char_counts(title: &str) -> SparseVec {
    let mut feats = Vec::new();
    for word in text::words(title).into_iter().chain(
        title
            .split_whitespace()
            .filter(|w| w.chars().count() == 1)
            .map(str::to_lowercase),
    ) {
        let padded = format!(" {word} ");
        let starts: Vec<usize> = padded
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(padded.len()))
            .collect();
        let chars = starts.len() - 1;
        for n in 3..=5 {
            if chars < n {
                break;
            }
            for s in 0..=chars - n {
                feats.push(fnv(b'c', &padded.as_bytes()[starts[s]..starts[s + n]]));
            }
        }
    }
    count(feats)
}

/// One TF-IDF view with its postings.
#[derive(Debug, Clone, Default)]
struct View {
    idf: Vec<f32>,
    postings: HashMap<u32, Vec<(u32, f32)>>,
}

impl View {
    fn build(counts: &[SparseVec]) -> Self {
        let mut df = vec![0u32; 1 << DIMS_LOG2];
        counts.iter().for_each(|c| text::add_df(&mut df, c));
        let idf = text::idf_from_df(&df, counts.len());
        let mut postings: HashMap<u32, Vec<(u32, f32)>> = HashMap::new();
        for (d, c) in counts.iter().enumerate() {
            for (i, w) in text::tfidf(c, &idf) {
                postings.entry(i).or_default().push((d as u32, w));
            }
        }
        Self { idf, postings }
    }

    fn score_into(&self, query: &SparseVec, weight: f32, scores: &mut [f32]) {
        for (i, qw) in text::tfidf(query, &self.idf) {
            if let Some(list) = self.postings.get(&i) {
                for (d, dw) in list {
                    scores[*d as usize] += weight * qw * dw;
                }
            }
        }
    }
}

/// A document in the index.
#[derive(Debug, Clone)]
pub struct Doc {
    /// Its reference (`owner/repo#N`, or an id).
    pub key: String,
    /// Its title, for display.
    pub title: String,
}

/// The index.
#[derive(Debug, Clone)]
pub struct DuplicateIndex {
    docs: Vec<Doc>,
    words: View,
    titles: View,
}

/// One similar document.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Its key.
    pub key: String,
    /// Its title.
    pub title: String,
    /// Similarity, 0..1.
    pub score: f32,
}

impl DuplicateIndex {
    /// Index documents given as `(key, title, body)`.
    pub fn build<'a>(docs: impl IntoIterator<Item = (String, &'a str, &'a str)>) -> Self {
        let mut meta = Vec::new();
        let mut words = Vec::new();
        let mut titles = Vec::new();
        for (key, title, body) in docs {
            words.push(word_counts(title, body));
            titles.push(title_char_counts(title));
            meta.push(Doc {
                key,
                title: title.to_string(),
            });
        }
        Self {
            docs: meta,
            words: View::build(&words),
            titles: View::build(&titles),
        }
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// The `k` most similar documents, best first, skipping `exclude`.
    pub fn query(&self, title: &str, body: &str, k: usize, exclude: Option<&str>) -> Vec<Match> {
        let mut scores = vec![0f32; self.docs.len()];
        self.words
            .score_into(&word_counts(title, body), 1.0 - TITLE_WEIGHT, &mut scores);
        self.titles
            .score_into(&title_char_counts(title), TITLE_WEIGHT, &mut scores);
        let mut ranked: Vec<(usize, f32)> = scores
            .into_iter()
            .enumerate()
            .filter(|(d, s)| *s > 0.0 && Some(self.docs[*d].key.as_str()) != exclude)
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
            .into_iter()
            .take(k)
            .map(|(d, s)| Match {
                key: self.docs[d].key.clone(),
                title: self.docs[d].title.clone(),
                score: s.min(1.0),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_split_and_kept() {
        assert_eq!(
            code_words("ZStandardCompressor in org.apache.hadoop fails: HDFS-1234 snake_case"),
            vec![
                "standard",
                "compressor",
                "zstandardcompressor",
                "in",
                "org",
                "apache",
                "hadoop",
                "fails",
                "hdfs",
                "1234",
                "snake",
                "case",
                "snake_case"
            ]
        );
    }

    #[test]
    fn finds_the_near_duplicate_first() {
        let docs = [
            (
                "a#1".to_string(),
                "Dev server ignores the port setting",
                "serve --port 8080 listens on 3000",
            ),
            (
                "a#2".to_string(),
                "Add dark mode",
                "please add a dark theme",
            ),
            (
                "a#3".to_string(),
                "Images missing from output",
                "static images are not copied",
            ),
        ];
        let idx = DuplicateIndex::build(docs.iter().map(|(k, t, b)| (k.clone(), *t, *b)));
        let m = idx.query(
            "Dev server ignores --port again",
            "--port 9000 listens on 3000",
            2,
            None,
        );
        assert_eq!(m[0].key, "a#1");
        assert!(m[0].score > 0.3 && m[0].score <= 1.0);
        assert!(
            idx.query("Dev server ignores the port setting", "", 3, Some("a#1"))
                .iter()
                .all(|m| m.key != "a#1")
        );
    }
}
