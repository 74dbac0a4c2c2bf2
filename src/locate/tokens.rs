//! Code-aware tokens: identifiers whole and split on camelCase / snake_case, the same
//! for the index and for the questions asked of it.

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// Longest word kept; longer runs are hashes, base64 or minified code.
const MAX_WORD: usize = 64;

/// Call `emit` with each token of `text`: every identifier lowercased whole, then its
/// parts (`parseHTTPResponse` → `parsehttpresponse`, `parse`, `http`, `response`) when
/// it has more than one. Pure numbers are skipped: line numbers and ids are noise.
pub fn code_tokens(text: &str, mut emit: impl FnMut(&str, usize, usize)) {
    let mut lower = String::new();
    let mut part = String::new();
    let mut start: Option<usize> = None;
    let mut end = 0usize;
    let flush = |s: usize,
                 e: usize,
                 lower: &mut String,
                 part: &mut String,
                 emit: &mut dyn FnMut(&str, usize, usize)| {
        let word = &text[s..e];
        let trimmed = word.trim_matches('_');
        if trimmed.is_empty()
            || trimmed.len() > MAX_WORD
            || trimmed.chars().all(|c| c.is_ascii_digit())
        {
            return;
        }
        // Fast path: a plain lowercase ASCII word (most of any code base) has no parts.
        let b = trimmed.as_bytes();
        if b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && !(b.iter().any(u8::is_ascii_digit) && b.iter().any(u8::is_ascii_lowercase))
        {
            emit(trimmed, s, e);
            return;
        }
        lower.clear();
        lower.extend(trimmed.chars().flat_map(char::to_lowercase));
        emit(lower, s, e);
        // Parts: split on `_`, on lower→Upper, on Upper→Upper+lower (HTTPResponse), digits.
        let chars: Vec<char> = trimmed.chars().collect();
        let mut boundaries = Vec::new();
        for i in 0..chars.len() {
            let c = chars[i];
            if c == '_' {
                boundaries.push(i);
                continue;
            }
            if i > 0 {
                let p = chars[i - 1];
                let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
                if (p.is_lowercase() && c.is_uppercase())
                    || (p.is_uppercase() && c.is_uppercase() && next_lower)
                    || (p.is_alphabetic() && c.is_ascii_digit())
                    || (p.is_ascii_digit() && c.is_alphabetic())
                {
                    boundaries.push(i);
                }
            }
        }
        if boundaries.is_empty() {
            return;
        }
        let mut from = 0usize;
        let mut pieces: Vec<(usize, usize)> = Vec::new();
        for b in boundaries.into_iter().chain(std::iter::once(chars.len())) {
            if b > from {
                pieces.push((from, b));
            }
            from = if chars.get(b) == Some(&'_') { b + 1 } else { b };
        }
        for (a, b) in pieces {
            part.clear();
            part.extend(chars[a..b].iter().flat_map(|c| c.to_lowercase()));
            if part.len() >= 2 && !part.chars().all(|c| c.is_ascii_digit()) && **part != **lower {
                emit(part, s, e);
            }
        }
    };
    // Bytes, not chars: code is mostly ASCII; other characters are decoded as met.
    let raw = text.as_bytes();
    let mut i = 0usize;
    while i < raw.len() {
        let b = raw[i];
        let (word, len) = if b < 0x80 {
            (b.is_ascii_alphanumeric() || b == b'_', 1)
        } else {
            match text[i..].chars().next() {
                Some(c) => (c.is_alphanumeric(), c.len_utf8()),
                None => (false, 1),
            }
        };
        if word {
            if start.is_none() {
                start = Some(i);
            }
            end = i + len;
        } else if let Some(s) = start.take() {
            flush(s, end, &mut lower, &mut part, &mut emit);
        }
        i += len;
    }
    if let Some(s) = start {
        flush(s, end, &mut lower, &mut part, &mut emit);
    }
}

/// The tokens of `text` as owned strings.
pub fn token_list(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    code_tokens(text, |t, _, _| out.push(t.to_string()));
    out
}

/// Words that say nothing about where code lives: English glue and keywords common to
/// many languages. Removed from questions, kept in the index.
pub fn is_stopword(word: &str) -> bool {
    STOPWORDS.binary_search(&word).is_ok()
}

// Sorted: `is_stopword` binary-searches it.
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "because", "been", "before", "being", "but", "by", "can", "could", "def", "did", "do",
    "does", "doing", "else", "expected", "false", "fn", "for", "from", "get", "got", "had", "has",
    "have", "here", "how", "i", "if", "import", "in", "instead", "into", "is", "it", "its", "just",
    "let", "like", "me", "more", "my", "new", "no", "none", "not", "null", "of", "on", "one", "or",
    "other", "our", "out", "pass", "please", "print", "pub", "return", "same", "see", "self",
    "should", "so", "some", "such", "than", "that", "the", "their", "them", "then", "there",
    "these", "they", "this", "those", "to", "true", "use", "using", "very", "was", "we", "were",
    "what", "when", "where", "which", "while", "why", "will", "with", "would", "you", "your",
];

/// The tantivy tokenizer over [`code_tokens`].
#[derive(Clone, Default)]
pub struct CodeTokenizer {
    // Reused between texts: the strings keep their allocations.
    tokens: Vec<Token>,
}

/// Tokens of one text, handed out in order.
pub struct CodeTokenStream<'a> {
    tokens: &'a mut [Token],
    at: usize,
}

impl Tokenizer for CodeTokenizer {
    type TokenStream<'a> = CodeTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> CodeTokenStream<'a> {
        let mut n = 0usize;
        let tokens = &mut self.tokens;
        code_tokens(text, |t, s, e| {
            if let Some(tok) = tokens.get_mut(n) {
                tok.text.clear();
                tok.text.push_str(t);
                tok.offset_from = s;
                tok.offset_to = e;
                tok.position = n;
            } else {
                tokens.push(Token {
                    offset_from: s,
                    offset_to: e,
                    position: n,
                    text: t.to_string(),
                    position_length: 1,
                });
            }
            n += 1;
        });
        // Keep the allocations of a big file, but not forever.
        if tokens.len() > 1 << 20 && n < 1 << 16 {
            tokens.truncate(1 << 16);
        }
        CodeTokenStream {
            tokens: &mut self.tokens[..n],
            at: 0,
        }
    }
}

impl TokenStream for CodeTokenStream<'_> {
    fn advance(&mut self) -> bool {
        if self.at < self.tokens.len() {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        &self.tokens[self.at.saturating_sub(1)]
    }

    fn token_mut(&mut self) -> &mut Token {
        let i = self.at.saturating_sub(1);
        &mut self.tokens[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_split_on_case_and_underscores() {
        assert_eq!(
            token_list("parseHTTPResponse snake_case_name x1 42 __init__"),
            [
                "parsehttpresponse",
                "parse",
                "http",
                "response",
                "snake_case_name",
                "snake",
                "case",
                "name",
                "x1",
                "init"
            ]
        );
    }

    #[test]
    fn stopwords_are_sorted() {
        let mut sorted = STOPWORDS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, STOPWORDS);
    }
}
