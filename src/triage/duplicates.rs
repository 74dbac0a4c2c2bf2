//! Duplicate search: TF-IDF cosine over word uni/bigrams and character n-grams of
//! title and body, through an inverted index so a query touches only documents that
//! share a feature with it.

use std::collections::HashMap;

use super::text::{self, FeatureSpec, SparseVec};

/// Features used for similarity.
pub const SPEC: FeatureSpec = FeatureSpec {
    dims_log2: 20,
    word_ngrams: 2,
    char_min: 0,
    char_max: 0,
    title_weight: 3.0,
    body_chars: 4000,
};

/// A document in the index.
#[derive(Debug, Clone)]
pub struct Doc {
    /// Its reference (`owner/repo#N`, or an id).
    pub key: String,
    /// Its title, for display.
    pub title: String,
}

/// An inverted TF-IDF index.
#[derive(Debug, Clone)]
pub struct DuplicateIndex {
    spec: FeatureSpec,
    docs: Vec<Doc>,
    idf: Vec<f32>,
    postings: HashMap<u32, Vec<(u32, f32)>>,
}

/// One similar document.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Its key.
    pub key: String,
    /// Its title.
    pub title: String,
    /// Cosine similarity, 0..1.
    pub score: f32,
}

impl DuplicateIndex {
    /// Index documents given as `(key, title, body)`.
    pub fn build<'a>(docs: impl IntoIterator<Item = (String, &'a str, &'a str)>) -> Self {
        Self::build_with(SPEC, docs)
    }

    /// Index with explicit features (evaluation).
    pub fn build_with<'a>(
        spec: FeatureSpec,
        docs: impl IntoIterator<Item = (String, &'a str, &'a str)>,
    ) -> Self {
        let mut meta = Vec::new();
        let mut all_counts = Vec::new();
        for (key, title, body) in docs {
            let (w, c) = text::counts(&spec, title, body);
            all_counts.push(text::concat(w, c, 0));
            meta.push(Doc {
                key,
                title: title.to_string(),
            });
        }
        let mut df = vec![0u32; spec.dims()];
        for c in &all_counts {
            // Blocks share the index space here; merge duplicates first.
            let mut idx: Vec<u32> = c.iter().map(|(i, _)| *i).collect();
            idx.sort_unstable();
            idx.dedup();
            idx.into_iter().for_each(|i| df[i as usize] += 1);
        }
        let idf = text::idf_from_df(&df, all_counts.len());
        let mut postings: HashMap<u32, Vec<(u32, f32)>> = HashMap::new();
        for (d, c) in all_counts.iter().enumerate() {
            for (i, w) in text::tfidf(&dedup(c), &idf) {
                postings.entry(i).or_default().push((d as u32, w));
            }
        }
        Self {
            spec,
            docs: meta,
            idf,
            postings,
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
        let (w, c) = text::counts(&self.spec, title, body);
        let q = text::tfidf(&dedup(&text::concat(w, c, 0)), &self.idf);
        let mut scores = vec![0f32; self.docs.len()];
        for (i, qw) in &q {
            if let Some(list) = self.postings.get(i) {
                for (d, dw) in list {
                    scores[*d as usize] += qw * dw;
                }
            }
        }
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

fn dedup(v: &SparseVec) -> SparseVec {
    let mut v = v.clone();
    v.sort_unstable_by_key(|(i, _)| *i);
    let mut out: SparseVec = Vec::with_capacity(v.len());
    for (i, w) in v {
        match out.last_mut() {
            Some((j, acc)) if *j == i => *acc += w,
            _ => out.push((i, w)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
