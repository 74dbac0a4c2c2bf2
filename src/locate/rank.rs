//! Fusing the signals into one ranking: reciprocal rank fusion, weighted per channel,
//! with tests and docs demoted (a bug's fix lives in the code they describe).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::files::is_secondary;

/// Where a signal came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A stack-trace frame or panic location.
    Frame,
    /// A path named in the text or a repository link.
    Path,
    /// A dotted or `::` name that resolves to a module file.
    Module,
    /// An identifier the file defines.
    Symbol,
    /// An error message found as a string literal.
    Literal,
    /// BM25 over the file text.
    Text,
    /// BM25 over the file text for the title's words alone.
    Title,
    /// The words in the file's path.
    PathWords,
    /// Changed by the fix of a similar past issue.
    Memory,
    /// Placed by the model's re-rank.
    Model,
}

impl Channel {
    /// How much a first place in this channel counts. Set by measuring on the
    /// SWE-bench Lite dev split (odd records to tune, even ones to check).
    pub fn weight(self) -> f64 {
        match self {
            Channel::Frame => 3.0,
            Channel::Path => 2.5,
            Channel::Module => 2.0,
            Channel::Literal => 2.0,
            Channel::Symbol => 0.7,
            Channel::Text => 1.5,
            Channel::Title => 1.0,
            Channel::PathWords => 0.5,
            Channel::Memory => 1.0,
            Channel::Model => 4.0,
        }
    }
}

/// The RRF constant: small, so a first place in a strong channel stands out.
const RRF_K: f64 = 5.0;

/// How much a test, doc or example file keeps of its score.
const SECONDARY_FACTOR: f64 = 0.35;

/// One reason a file ranks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The channel.
    pub channel: Channel,
    /// Its place in that channel, 1-based.
    pub rank: usize,
    /// What matched, for people.
    pub detail: String,
    /// The line it points at, when it points at one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// A file in the ranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedFile {
    /// Path from the repository root.
    pub path: String,
    /// The fused score (comparable within one ranking).
    pub score: f64,
    /// Why it is here, strongest first.
    pub evidence: Vec<Evidence>,
}

/// Collects per-channel rankings and fuses them.
#[derive(Debug, Default)]
pub struct Fusion {
    by_path: HashMap<String, Vec<Evidence>>,
}

impl Fusion {
    /// Record that `path` holds place `rank` (0-based) in `channel`. Only a file's best
    /// place per channel counts; more details of the same channel are kept as evidence.
    pub fn add(
        &mut self,
        channel: Channel,
        rank: usize,
        path: &str,
        detail: String,
        line: Option<u32>,
    ) {
        let list = self.by_path.entry(path.to_string()).or_default();
        // The same frame printed by several tracebacks is one piece of evidence.
        if list
            .iter()
            .any(|e| e.channel == channel && e.detail == detail)
        {
            return;
        }
        list.push(Evidence {
            channel,
            rank: rank + 1,
            detail,
            line,
        });
    }

    /// Add a channel's ranking given as ordered `(path, detail, line)`; equal paths keep
    /// their first place.
    pub fn add_ranking(&mut self, channel: Channel, ranked: Vec<(String, String, Option<u32>)>) {
        let mut place: HashMap<String, usize> = HashMap::new();
        for (path, detail, line) in ranked {
            let next = place.len();
            let r = *place.entry(path.clone()).or_insert(next);
            self.add(channel, r, &path, detail, line);
        }
    }

    /// The files, best first.
    pub fn ranked(self) -> Vec<RankedFile> {
        let mut out: Vec<RankedFile> = self
            .by_path
            .into_iter()
            .map(|(path, mut evidence)| {
                evidence.sort_by(|a, b| {
                    let sa = a.channel.weight() / (RRF_K + a.rank as f64);
                    let sb = b.channel.weight() / (RRF_K + b.rank as f64);
                    sb.total_cmp(&sa).then(a.channel.cmp(&b.channel))
                });
                let mut seen: Vec<Channel> = Vec::new();
                let mut score = 0.0;
                for e in &evidence {
                    if !seen.contains(&e.channel) {
                        seen.push(e.channel);
                        score += e.channel.weight() / (RRF_K + e.rank as f64);
                    }
                }
                if is_secondary(&path) {
                    score *= SECONDARY_FACTOR;
                }
                RankedFile {
                    path,
                    score,
                    evidence,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.path.cmp(&b.path))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_beats_text_and_tests_drop() {
        let mut f = Fusion::default();
        f.add_ranking(
            Channel::Text,
            vec![
                ("src/a.py".into(), "words".into(), None),
                ("src/b.py".into(), "words".into(), None),
                ("tests/test_b.py".into(), "words".into(), None),
            ],
        );
        f.add_ranking(
            Channel::Frame,
            vec![("src/b.py".into(), "frame".into(), Some(3))],
        );
        f.add_ranking(
            Channel::Frame,
            vec![("tests/test_b.py".into(), "frame".into(), None)],
        );
        let r = f.ranked();
        let order: Vec<&str> = r.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(order, ["src/b.py", "src/a.py", "tests/test_b.py"]);
        assert_eq!(r[0].evidence[0].channel, Channel::Frame);
    }
}
