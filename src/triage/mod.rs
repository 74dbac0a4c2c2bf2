//! The triage stage: kind (or abstain), labels, priority, duplicates, missing
//! information and fixability, from the issue and memory's labelled history. No model
//! and no network.

pub mod classifier;
pub mod duplicates;
pub mod missing;
pub mod model;
pub mod priority;
pub mod text;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::issue::{Issue, IssueState};
use classifier::{Example, KindModel, TrainSpec};
use duplicates::DuplicateIndex;

/// The memory key under which the trained kind model is stored.
pub const MODEL_KEY: &str = "triage/kind-model";

/// Fewest examples of a kind for it to be learned.
pub const MIN_EXAMPLES_PER_KIND: usize = 5;

/// A label to apply, with the confidence behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelSuggestion {
    /// A label the repository has.
    pub name: String,
    /// 0..1.
    pub confidence: f64,
}

/// An earlier issue that looks the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateHit {
    /// `owner/repo#N`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Its title.
    pub title: String,
    /// Cosine similarity, 0..1.
    pub score: f64,
    /// At or above `triage.duplicate_threshold`.
    pub likely: bool,
}

/// What the model behind the kind was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Classifier version.
    pub version: u32,
    /// Labelled issues it learned from.
    pub trained_on: usize,
    /// The kinds it knows.
    pub kinds: Vec<String>,
}

/// `triage.json`: the whole triage of one issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Triage {
    /// `owner/repo#N`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// `bug`, `feature`, `question`…; `None` when abstaining.
    pub kind: Option<String>,
    /// True when the classifier was not sure enough ("needs a human").
    pub abstained: bool,
    /// Calibrated probability of the most likely kind, 0..1.
    pub kind_confidence: f64,
    /// Every kind's probability.
    pub kind_probabilities: BTreeMap<String, f64>,
    /// `P0`…`P3`.
    pub priority: String,
    /// Why that priority.
    pub priority_reasons: Vec<String>,
    /// Labels to apply (only ones the repository has).
    pub labels: Vec<LabelSuggestion>,
    /// Similar earlier issues, best first.
    pub duplicates: Vec<DuplicateHit>,
    /// Missing information codes (bugs only).
    pub missing: Vec<String>,
    /// The comment asking for what is missing, if anything is.
    pub comment: Option<String>,
    /// Whether `fix` should take it.
    pub fixable: bool,
    /// Why (or why not), in words.
    pub reasons: Vec<String>,
    /// `offline` or `model`: which engine decided kind, labels, priority and missing.
    pub engine: String,
    /// The model's reasoning, when a model triaged.
    pub reasoning: Option<String>,
    /// The offline classifier, if there was one.
    pub model: Option<ModelInfo>,
}

/// A kind decision: the kind (or `None` to abstain) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct KindDecision {
    /// The kind, `None` when abstaining.
    pub kind: Option<String>,
    /// Confidence 0..1.
    pub confidence: f64,
    /// Per-kind probabilities (offline classifier).
    pub probabilities: BTreeMap<String, f64>,
    /// Reasons so far.
    pub reasons: Vec<String>,
}

/// What a model answered for an issue (the `record_triage` tool's arguments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelAnswer {
    /// A kind, or `unclear`.
    pub kind: Option<String>,
    /// Its confidence, 0..1.
    pub confidence: f64,
    /// Labels to apply (filtered to the repository's).
    #[serde(default)]
    pub labels: Vec<String>,
    /// `P0`…`P3`.
    pub priority: String,
    /// Why.
    #[serde(default)]
    pub priority_reasons: Vec<String>,
    /// Missing-information codes.
    #[serde(default)]
    pub missing: Vec<String>,
    /// The model's reasoning.
    #[serde(default)]
    pub reasoning: String,
}

/// Labelled history turned into training examples: issues whose labels name exactly
/// one kind through `labels.aliases`.
pub fn kind_of_labels(
    labels: &[String],
    aliases: &BTreeMap<String, Vec<String>>,
) -> Option<String> {
    let mut kinds: Vec<&String> = aliases
        .iter()
        .filter(|(kind, names)| {
            labels.iter().any(|l| {
                l.eq_ignore_ascii_case(kind) || names.iter().any(|n| n.eq_ignore_ascii_case(l))
            })
        })
        .map(|(k, _)| k)
        .collect();
    kinds.dedup();
    match kinds.as_slice() {
        [one] => Some((*one).clone()),
        _ => None,
    }
}

/// A fingerprint of the training examples (and the classifier version and spec).
pub fn fingerprint(examples: &[(String, String, &str, &str)], spec: &TrainSpec) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |s: &str| {
        for b in s.as_bytes().iter().chain(b"\x1f") {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&classifier::MODEL_VERSION.to_string());
    eat(&serde_json::to_string(spec).unwrap_or_default());
    for (key, kind, title, body) in examples {
        eat(key);
        eat(kind);
        eat(title);
        eat(body);
    }
    format!("{h:016x}")
}

/// Train (or reuse) the kind model for a history. Returns the model (if there is
/// enough history) and whether it was trained now.
pub fn model_for_history(
    history: &[Issue],
    aliases: &BTreeMap<String, Vec<String>>,
    stored: Option<KindModel>,
    spec: TrainSpec,
) -> (Option<KindModel>, bool) {
    let mut labelled: Vec<(String, String, &str, &str)> = history
        .iter()
        .filter_map(|i| {
            kind_of_labels(&i.labels, aliases)
                .map(|k| (i.reference(), k, i.title.as_str(), i.body.as_str()))
        })
        .collect();
    labelled.sort_by(|a, b| a.0.cmp(&b.0));
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, k, _, _) in &labelled {
        *counts.entry(k.as_str()).or_default() += 1;
    }
    let classes: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n >= MIN_EXAMPLES_PER_KIND)
        .map(|(k, _)| (*k).to_string())
        .collect();
    if classes.len() < 2 {
        return (None, false);
    }
    labelled.retain(|(_, k, _, _)| classes.contains(k));
    let fp = fingerprint(&labelled, &spec);
    if let Some(m) = stored
        && m.fingerprint == fp
    {
        return (Some(m), false);
    }
    let examples: Vec<Example<'_>> = labelled
        .iter()
        .filter_map(|(_, k, t, b)| {
            classes.iter().position(|c| c == k).map(|class| Example {
                title: t,
                body: b,
                class,
            })
        })
        .collect();
    (Some(KindModel::train(classes, &examples, spec, fp)), true)
}

/// Everything triage needs, built once per command from memory.
pub struct Engine {
    model: Option<KindModel>,
    history_size: usize,
    labelled_size: usize,
    /// Per repository: label → how often it is used.
    repo_labels: HashMap<String, HashMap<String, usize>>,
    /// Per repository: a duplicate index of its issues.
    indexes: HashMap<String, DuplicateIndex>,
    threshold: f64,
    duplicate_threshold: f64,
    /// Labelled issues: reference → (kind, labels).
    labelled: HashMap<String, (String, Vec<String>)>,
    /// `labels.descriptions`.
    descriptions: BTreeMap<String, String>,
    /// Labels a forge reported per repository (name → description).
    forge_labels: HashMap<String, BTreeMap<String, String>>,
    aliases: BTreeMap<String, Vec<String>>,
    trigger_label: String,
}

impl Engine {
    /// Build from the history in memory and a (possibly freshly trained) model.
    pub fn new(history: &[Issue], model: Option<KindModel>, config: &Config) -> Self {
        let mut repo_labels: HashMap<String, HashMap<String, usize>> = HashMap::new();
        let mut by_repo: HashMap<&str, Vec<&Issue>> = HashMap::new();
        for i in history {
            let labels = repo_labels.entry(i.repo.clone()).or_default();
            for l in &i.labels {
                *labels.entry(l.clone()).or_default() += 1;
            }
            by_repo.entry(i.repo.as_str()).or_default().push(i);
        }
        let indexes = by_repo
            .into_iter()
            .map(|(repo, issues)| {
                let idx = DuplicateIndex::build(
                    issues
                        .iter()
                        .map(|i| (i.reference(), i.title.as_str(), i.body.as_str())),
                );
                (repo.to_string(), idx)
            })
            .collect();
        let labelled_size = history
            .iter()
            .filter(|i| kind_of_labels(&i.labels, &config.labels.aliases).is_some())
            .count();
        let labelled = history
            .iter()
            .filter_map(|i| {
                kind_of_labels(&i.labels, &config.labels.aliases)
                    .map(|k| (i.reference(), (k, i.labels.clone())))
            })
            .collect();
        Self {
            model,
            history_size: history.len(),
            labelled_size,
            labelled,
            descriptions: config.labels.descriptions.clone(),
            forge_labels: HashMap::new(),
            repo_labels,
            indexes,
            threshold: config.triage.threshold,
            duplicate_threshold: config.triage.duplicate_threshold,
            aliases: config.labels.aliases.clone(),
            trigger_label: config.trust.trigger_label.clone(),
        }
    }

    /// The abstention threshold.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Labelled issues similar to this one, as (title, kind, labels): examples of
    /// past triages for a model prompt.
    pub fn examples(&self, issue: &Issue, k: usize) -> Vec<(String, String, Vec<String>)> {
        let Some(idx) = self.indexes.get(&issue.repo) else {
            return Vec::new();
        };
        idx.query(&issue.title, &issue.body, 4 * k, Some(&issue.reference()))
            .into_iter()
            .filter_map(|m| {
                self.labelled
                    .get(&m.key)
                    .map(|(kind, labels)| (m.title, kind.clone(), labels.clone()))
            })
            .take(k)
            .collect()
    }

    /// The kind model in use.
    pub fn model(&self) -> Option<&KindModel> {
        self.model.as_ref()
    }

    /// Issues in the history.
    pub fn history_size(&self) -> usize {
        self.history_size
    }

    /// Triage one issue with the offline engine.
    pub fn triage(&self, issue: &Issue) -> Triage {
        let decision = self.offline_kind(issue);
        self.assemble(issue, decision, None)
    }

    /// Triage one issue with a model's answer for kind, labels, priority and missing
    /// information; duplicates, trust and fixability are still decided here.
    pub fn triage_with_answer(&self, issue: &Issue, answer: &ModelAnswer) -> Triage {
        let mut reasons = Vec::new();
        let confidence = answer.confidence.clamp(0.0, 1.0);
        let mut kind = answer.kind.clone().filter(|k| k != "unclear");
        if kind.is_none() {
            reasons.push("needs a human: the model found the kind unclear".to_string());
        } else if confidence < self.threshold {
            reasons.push(format!(
                "needs a human: the model's kind, {}, has confidence {confidence:.2}, below triage.threshold {:.2}",
                kind.as_deref().unwrap_or(""),
                self.threshold
            ));
            kind = None;
        }
        let decision = KindDecision {
            kind,
            confidence: answer.confidence.clamp(0.0, 1.0),
            probabilities: BTreeMap::new(),
            reasons,
        };
        self.assemble(issue, decision, Some(answer))
    }

    /// The offline classifier's decision (or abstention).
    pub fn offline_kind(&self, issue: &Issue) -> KindDecision {
        let mut reasons = Vec::new();
        let (kind, confidence, probabilities) = match &self.model {
            Some(m) => {
                let p = m.predict(&issue.title, &issue.body);
                let (best, conf) = p
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, c)| (m.classes[i].clone(), f64::from(*c)))
                    .unwrap_or_default();
                let probs = m
                    .classes
                    .iter()
                    .cloned()
                    .zip(p.iter().map(|v| round3(f64::from(*v))))
                    .collect();
                if conf >= self.threshold {
                    (Some(best), conf, probs)
                } else {
                    reasons.push(format!(
                        "needs a human: the most likely kind, {best}, has confidence {conf:.2}, below triage.threshold {:.2}",
                        self.threshold
                    ));
                    (None, conf, probs)
                }
            }
            None => {
                reasons.push(format!(
                    "needs a human: memory has {} labelled issues, too few to learn kinds (at least {MIN_EXAMPLES_PER_KIND} of two kinds); import labelled history with `autotriage memory import`",
                    self.labelled_size
                ));
                (None, 0.0, BTreeMap::new())
            }
        };

        KindDecision {
            kind,
            confidence,
            probabilities,
            reasons,
        }
    }

    /// The repository's labels as far as memory knows them, most used first.
    pub fn repo_labels(&self, repo: &str) -> Vec<String> {
        let mut v: Vec<(&String, &usize)> = self
            .repo_labels
            .get(repo)
            .map(|m| m.iter().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut out: Vec<String> = v.into_iter().map(|(l, _)| l.clone()).collect();
        // Labels declared in `labels.descriptions`, or reported by the forge, exist too.
        for (l, _) in self.declared_labels(repo) {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(&l)) {
                out.push(l);
            }
        }
        out
    }

    /// Record the labels a forge says a repository has (with descriptions).
    pub fn declare_labels(&mut self, repo: &str, labels: Vec<(String, Option<String>)>) {
        let entry = self.forge_labels.entry(repo.to_string()).or_default();
        for (name, description) in labels {
            entry.insert(name, description.unwrap_or_default());
        }
    }

    /// Labels known to exist without any issue in memory carrying them: the config's
    /// and the forge's, with descriptions ("" when none).
    fn declared_labels(&self, repo: &str) -> Vec<(String, String)> {
        self.descriptions
            .iter()
            .chain(self.forge_labels.get(repo).into_iter().flatten())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The repository's labels with their descriptions (from `labels.descriptions`).
    pub fn described_labels(&self, repo: &str) -> Vec<(String, Option<String>)> {
        self.repo_labels(repo)
            .into_iter()
            .map(|l| {
                let d = self
                    .declared_labels(repo)
                    .into_iter()
                    .find(|(k, d)| k.eq_ignore_ascii_case(&l) && !d.is_empty())
                    .map(|(_, d)| d);
                (l, d)
            })
            .collect()
    }

    /// Similar earlier issues of the same repository.
    pub fn similar(&self, issue: &Issue, k: usize) -> Vec<DuplicateHit> {
        self.indexes
            .get(&issue.repo)
            .map(|idx| idx.query(&issue.title, &issue.body, k, Some(&issue.reference())))
            .unwrap_or_default()
            .into_iter()
            .filter(|m| f64::from(m.score) >= 0.2)
            .map(|m| DuplicateHit {
                reference: m.key,
                title: m.title,
                score: round3(f64::from(m.score)),
                likely: f64::from(m.score) >= self.duplicate_threshold,
            })
            .collect()
    }

    fn assemble(
        &self,
        issue: &Issue,
        decision: KindDecision,
        answer: Option<&ModelAnswer>,
    ) -> Triage {
        let KindDecision {
            kind,
            confidence,
            probabilities,
            mut reasons,
        } = decision;
        let text = issue_text(issue);

        // Labels: the repository's own label for the kind.
        let mut labels = Vec::new();
        if let Some(k) = &kind {
            let used = self.repo_labels.get(&issue.repo);
            let mut candidates: Vec<&String> = self
                .aliases
                .get(k)
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            if !candidates.iter().any(|c| c.eq_ignore_ascii_case(k)) {
                candidates.push(k);
            }
            let best = candidates
                .iter()
                .filter_map(|c| {
                    used.and_then(|u| u.iter().find(|(l, _)| l.eq_ignore_ascii_case(c)))
                        .map(|(l, n)| (l.clone(), *n))
                        // A declared label that no issue carries yet still exists.
                        .or_else(|| {
                            self.declared_labels(&issue.repo)
                                .into_iter()
                                .find(|(l, _)| l.eq_ignore_ascii_case(c))
                                .map(|(l, _)| (l, 0))
                        })
                })
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
            match best {
                Some((name, _)) => labels.push(LabelSuggestion {
                    name,
                    confidence: round3(confidence),
                }),
                None => reasons.push(format!(
                    "no label applied: {} has no label for kind {k} (looked for {})",
                    issue.repo,
                    candidates
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }

        // A model may add other labels; only ones the repository has are kept.
        if let Some(a) = answer {
            let known = self.repo_labels(&issue.repo);
            for l in &a.labels {
                let existing = known.iter().find(|k| k.eq_ignore_ascii_case(l));
                match existing {
                    Some(k) if !labels.iter().any(|x: &LabelSuggestion| x.name == *k) => labels
                        .push(LabelSuggestion {
                            name: k.clone(),
                            confidence: round3(confidence),
                        }),
                    Some(_) => {}
                    None => reasons.push(format!(
                        "dropped the model's label `{l}`: {} has no such label",
                        issue.repo
                    )),
                }
            }
        }

        // Duplicates within the same repository.
        let duplicates = self.similar(issue, 5);
        let likely: Vec<&DuplicateHit> = duplicates.iter().filter(|d| d.likely).collect();

        // Priority.
        let pr = match answer {
            Some(a) => priority::Priority {
                level: a.priority.clone(),
                reasons: a
                    .priority_reasons
                    .iter()
                    .map(|r| format!("model: {r}"))
                    .collect(),
            },
            None => priority::assess(
                &issue.title,
                &issue.body,
                priority::Context {
                    kind: kind.as_deref(),
                    reactions: issue.reactions,
                    likely_duplicates: likely.len(),
                },
            ),
        };

        // Missing information (bugs only).
        let is_bug = kind.as_deref() == Some("bug");
        let missing_items = match answer {
            _ if !is_bug => Vec::new(),
            Some(a) => missing::Item::ALL
                .into_iter()
                .filter(|i| a.missing.iter().any(|m| m == i.code()))
                .collect(),
            None => missing::check(&text),
        };
        let comment = (!missing_items.is_empty())
            .then(|| missing::comment(&missing_items, issue.author.as_deref()));

        // Fixability.
        let trust = crate::trust::evaluate(issue, &self.trigger_label);
        let has_evidence = is_bug
            && !(missing_items.contains(&missing::Item::ReproductionSteps)
                && missing_items.contains(&missing::Item::LogsOrTrace));
        let enough_info = is_bug && has_evidence && missing_items.len() <= 2;
        let mut fixable = true;
        match kind.as_deref() {
            Some("bug") => reasons.push(format!("kind is bug ({:.2})", round3(confidence))),
            Some(k) => {
                fixable = false;
                reasons.push(format!("not a bug but a {k}; fix takes bugs"));
            }
            None => fixable = false,
        }
        if is_bug {
            if enough_info {
                reasons.push(if missing_items.is_empty() {
                    "the report has everything a fix needs".to_string()
                } else {
                    format!(
                        "enough information (missing only {})",
                        codes(&missing_items).join(", ")
                    )
                });
            } else {
                fixable = false;
                reasons.push(format!(
                    "not enough information to fix (missing {})",
                    codes(&missing_items).join(", ")
                ));
            }
        }
        if let Some(d) = likely.first() {
            fixable = false;
            reasons.push(format!(
                "likely a duplicate of {} ({:.2})",
                d.reference, d.score
            ));
        }
        if issue.state == IssueState::Closed {
            fixable = false;
            reasons.push("the issue is closed".into());
        }
        if trust.eligible {
            reasons.push(format!("trusted: {}", trust.reason));
        } else {
            fixable = false;
            reasons.push(format!("not trusted: {}", trust.reason));
        }

        Triage {
            reference: issue.reference(),
            abstained: kind.is_none(),
            kind,
            kind_confidence: round3(confidence),
            kind_probabilities: probabilities,
            priority: pr.level,
            priority_reasons: pr.reasons,
            labels,
            duplicates,
            missing: codes(&missing_items),
            comment,
            fixable,
            reasons,
            engine: if answer.is_some() { "model" } else { "offline" }.to_string(),
            reasoning: answer.map(|a| a.reasoning.clone()),
            model: self.model.as_ref().map(|m| ModelInfo {
                version: classifier::MODEL_VERSION,
                trained_on: m.trained_on,
                kinds: m.classes.clone(),
            }),
        }
    }
}

fn codes(items: &[missing::Item]) -> Vec<String> {
    items.iter().map(|i| i.code().to_string()).collect()
}

/// Title, body and the reporter's own comments: where a report's details are.
fn issue_text(issue: &Issue) -> String {
    let mut text = format!("{}\n{}", issue.title, issue.body);
    for c in &issue.comments {
        if c.author.is_some() && c.author == issue.author {
            text.push('\n');
            text.push_str(&c.body);
        }
    }
    text
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
