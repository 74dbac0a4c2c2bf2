//! Text features: tokens, hashed word and character n-grams, TF-IDF vectors.
//!
//! Hashing (FNV-1a, fixed) keeps the feature space a fixed size with no vocabulary to
//! store, and makes the same text give the same vector on every machine.

/// A sparse vector: sorted, unique indices with weights.
pub type SparseVec = Vec<(u32, f32)>;

/// Which features a vectorizer extracts.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureSpec {
    /// log2 of the number of hash buckets.
    pub dims_log2: u32,
    /// Word n-grams up to this length (1 = unigrams).
    pub word_ngrams: usize,
    /// Shortest character n-gram (0 disables them).
    pub char_min: usize,
    /// Longest character n-gram.
    pub char_max: usize,
    /// Title words are counted this many more times (and also as their own features).
    pub title_weight: f32,
    /// Characters of the body read (bodies are long-tailed; the start says the most).
    pub body_chars: usize,
}

impl FeatureSpec {
    /// The number of buckets.
    pub fn dims(&self) -> usize {
        1usize << self.dims_log2
    }
}

/// FNV-1a over the bytes of several parts.
fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Lower-cased word tokens (letters, digits, `_`) of 2..=40 characters.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        if raw.is_empty() {
            continue;
        }
        let lower = raw.to_lowercase();
        let n = lower.chars().count();
        if (2..=40).contains(&n) {
            out.push(lower);
        }
    }
    out
}

/// The largest char boundary at or below `max`.
pub fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

fn truncate(s: &str, max: usize) -> &str {
    &s[..floor_char_boundary(s, max)]
}

/// Raw term counts of a document in two blocks (words, characters), each hashed into
/// `dims` buckets.
pub fn counts(spec: &FeatureSpec, title: &str, body: &str) -> (SparseVec, SparseVec) {
    let mask = (spec.dims() - 1) as u64;
    let body = truncate(body, spec.body_chars);
    let mut word_feats: Vec<(u32, f32)> = Vec::new();
    let push = |target: &mut Vec<(u32, f32)>, h: u64, w: f32| {
        target.push(((h & mask) as u32, w));
    };
    let title_words = words(title);
    let body_words = words(body);
    for (tokens, weight) in [(&title_words, spec.title_weight), (&body_words, 1.0)] {
        for n in 1..=spec.word_ngrams {
            if tokens.len() < n {
                break;
            }
            for gram in tokens.windows(n) {
                let parts: Vec<&[u8]> = std::iter::once(&b"w"[..])
                    .chain(gram.iter().map(|s| s.as_bytes()))
                    .collect();
                push(&mut word_feats, hash(&parts), weight);
            }
        }
    }
    for t in &title_words {
        push(&mut word_feats, hash(&[b"t", t.as_bytes()]), 1.0);
    }
    let mut char_feats = Vec::new();
    if spec.char_min > 0 {
        for (tokens, weight) in [(&title_words, spec.title_weight), (&body_words, 1.0)] {
            for t in tokens.iter() {
                // Hash each character window of " token " straight from the bytes.
                let padded = format!(" {t} ");
                let starts: Vec<usize> = padded
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain(std::iter::once(padded.len()))
                    .collect();
                let chars = starts.len() - 1;
                for n in spec.char_min..=spec.char_max {
                    if chars < n {
                        break;
                    }
                    for s in 0..=chars - n {
                        let gram = &padded.as_bytes()[starts[s]..starts[s + n]];
                        push(&mut char_feats, hash(&[b"c", gram]), weight);
                    }
                }
            }
        }
    }
    (merge(word_feats), merge(char_feats))
}

/// Sort and sum duplicate indices.
fn merge(mut feats: Vec<(u32, f32)>) -> SparseVec {
    feats.sort_unstable_by_key(|(i, _)| *i);
    let mut out: SparseVec = Vec::with_capacity(feats.len());
    for (i, w) in feats {
        match out.last_mut() {
            Some((j, acc)) if *j == i => *acc += w,
            _ => out.push((i, w)),
        }
    }
    out
}

/// Document frequencies to inverse document frequencies (smoothed, as scikit-learn).
pub fn idf_from_df(df: &[u32], n_docs: usize) -> Vec<f32> {
    df.iter()
        .map(|&d| (((1 + n_docs) as f32) / ((1 + d) as f32)).ln() + 1.0)
        .collect()
}

/// Count in how many documents each bucket occurs.
pub fn add_df(df: &mut [u32], vec: &SparseVec) {
    for (i, _) in vec {
        df[*i as usize] += 1;
    }
}

/// Sublinear TF times IDF, L2-normalised.
pub fn tfidf(counts: &SparseVec, idf: &[f32]) -> SparseVec {
    let mut v: SparseVec = counts
        .iter()
        .map(|&(i, c)| {
            (
                i,
                (1.0 + c.max(1e-6).ln()) * idf.get(i as usize).copied().unwrap_or(1.0),
            )
        })
        .collect();
    normalize(&mut v);
    v
}

/// Scale to unit length (no-op for the zero vector).
pub fn normalize(v: &mut SparseVec) {
    let norm = v.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|(_, w)| *w /= norm);
    }
}

/// Concatenate two blocks living in the same index space by offsetting the second.
pub fn concat(a: SparseVec, b: SparseVec, offset: u32) -> SparseVec {
    let mut out = a;
    out.extend(b.into_iter().map(|(i, w)| (i + offset, w)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_features_and_camel_split_free() {
        let spec = FeatureSpec {
            dims_log2: 12,
            word_ngrams: 2,
            char_min: 3,
            char_max: 4,
            title_weight: 2.0,
            body_chars: 1000,
        };
        let a = counts(&spec, "Crash on start", "It crashes when started");
        let b = counts(&spec, "Crash on start", "It crashes when started");
        assert_eq!(a, b);
        assert!(a.0.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(words("Foo-bar baz_qux é x"), vec!["foo", "bar", "baz_qux"]);
    }

    #[test]
    fn tfidf_is_unit_length() {
        let v = tfidf(&vec![(1, 2.0), (5, 1.0)], &[1.0; 8]);
        let n: f32 = v.iter().map(|(_, w)| w * w).sum();
        assert!((n - 1.0).abs() < 1e-5);
    }
}
