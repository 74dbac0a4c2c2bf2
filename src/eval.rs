//! Backtesting: measure triage on labelled data. Pure functions returning reports;
//! `commands/eval.rs` prints them.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::triage::classifier::{Example, KindModel, TrainSpec, shuffled};
use crate::triage::duplicates::DuplicateIndex;
use crate::triage::priority;

/// Per-kind figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassReport {
    /// The kind.
    pub kind: String,
    /// Precision, 0..1.
    pub precision: f64,
    /// Recall, 0..1.
    pub recall: f64,
    /// F1, 0..1.
    pub f1: f64,
    /// True examples.
    pub support: usize,
}

/// Precision at one confidence threshold.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ThresholdPoint {
    /// The threshold.
    pub threshold: f64,
    /// Fraction of issues labelled (not abstained).
    pub coverage: f64,
    /// Fraction of those that were right.
    pub precision: f64,
}

/// Kind classification figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KindReport {
    /// Issues evaluated.
    pub issues: usize,
    /// Fraction right, no abstention.
    pub accuracy: f64,
    /// Mean of per-kind F1.
    pub macro_f1: f64,
    /// Per kind.
    pub per_class: Vec<ClassReport>,
    /// `confusion[true][predicted]`, in `kinds` order.
    pub confusion: Vec<Vec<usize>>,
    /// Kinds, in matrix order.
    pub kinds: Vec<String>,
    /// The abstention threshold used.
    pub threshold: f64,
    /// Fraction labelled at the threshold.
    pub coverage: f64,
    /// Fraction right among those labelled.
    pub precision_at_threshold: f64,
    /// Coverage and precision at other thresholds.
    pub curve: Vec<ThresholdPoint>,
    /// Test issues left out because their kind was not in the training data.
    pub skipped_unknown_kind: usize,
}

/// A prediction that names no class (a model answering `unclear`): wrong for accuracy
/// and F1, and never covered at a threshold.
pub const NO_PREDICTION: usize = usize::MAX;

/// Figures from true classes and `(predicted class, confidence)` pairs.
pub fn kind_report(
    kinds: &[String],
    truth: &[usize],
    predicted: &[(usize, f64)],
    threshold: f64,
) -> KindReport {
    let k = kinds.len();
    let mut confusion = vec![vec![0usize; k]; k];
    let mut support = vec![0usize; k];
    for (t, (p, _)) in truth.iter().zip(predicted) {
        support[*t] += 1;
        if *p < k {
            confusion[*t][*p] += 1;
        }
    }
    let n = truth.len().max(1);
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let per_class: Vec<ClassReport> = (0..k)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let predicted_c: usize = (0..k).map(|t| confusion[t][c]).sum();
            let support = support[c];
            let precision = if predicted_c > 0 {
                tp / predicted_c as f64
            } else {
                0.0
            };
            let recall = if support > 0 {
                tp / support as f64
            } else {
                0.0
            };
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassReport {
                kind: kinds[c].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let macro_f1 = per_class.iter().map(|c| c.f1).sum::<f64>() / k.max(1) as f64;
    let at = |th: f64| {
        let covered: Vec<bool> = truth
            .iter()
            .zip(predicted)
            .filter(|(_, (p, conf))| *conf >= th && *p != NO_PREDICTION)
            .map(|(t, (p, _))| t == p)
            .collect();
        let coverage = covered.len() as f64 / n as f64;
        let precision = if covered.is_empty() {
            0.0
        } else {
            covered.iter().filter(|x| **x).count() as f64 / covered.len() as f64
        };
        ThresholdPoint {
            threshold: th,
            coverage,
            precision,
        }
    };
    let here = at(threshold);
    KindReport {
        issues: truth.len(),
        accuracy: correct as f64 / n as f64,
        macro_f1,
        per_class,
        confusion,
        kinds: kinds.to_vec(),
        threshold,
        coverage: here.coverage,
        precision_at_threshold: here.precision,
        curve: [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
            .iter()
            .map(|t| at(*t))
            .collect(),
        skipped_unknown_kind: 0,
    }
}

/// A labelled text.
#[derive(Debug, Clone)]
pub struct LabelledText {
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Kind.
    pub kind: String,
}

fn classes_of(data: &[LabelledText]) -> Vec<String> {
    let mut kinds: Vec<String> = data.iter().map(|d| d.kind.clone()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

fn predict_all(
    model: &KindModel,
    test: &[LabelledText],
    kinds: &[String],
) -> (Vec<usize>, Vec<(usize, f64)>) {
    let mut truth = Vec::new();
    let mut pred = Vec::new();
    for t in test {
        let Some(ti) = kinds.iter().position(|k| *k == t.kind) else {
            continue;
        };
        let p = model.predict(&t.title, &t.body);
        let (best, conf) = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, c)| (i, f64::from(*c)))
            .unwrap_or((0, 0.0));
        // Map the model's class index to the report's.
        let bi = kinds
            .iter()
            .position(|k| *k == model.classes[best])
            .unwrap_or(0);
        truth.push(ti);
        pred.push((bi, conf));
    }
    (truth, pred)
}

fn train_on(data: &[LabelledText], kinds: &[String], spec: TrainSpec) -> KindModel {
    let examples: Vec<Example<'_>> = data
        .iter()
        .filter_map(|d| {
            kinds
                .iter()
                .position(|k| *k == d.kind)
                .map(|class| Example {
                    title: &d.title,
                    body: &d.body,
                    class,
                })
        })
        .collect();
    KindModel::train(kinds.to_vec(), &examples, spec, String::new())
}

/// Train on one set, test on another.
pub fn train_test(
    train: &[LabelledText],
    test: &[LabelledText],
    spec: TrainSpec,
    threshold: f64,
) -> KindReport {
    let kinds = classes_of(train);
    let model = train_on(train, &kinds, spec);
    let (truth, pred) = predict_all(&model, test, &kinds);
    let mut report = kind_report(&kinds, &truth, &pred, threshold);
    report.skipped_unknown_kind = test.len() - truth.len();
    report
}

/// K-fold cross-validation (folds by a seeded shuffle); predictions of every fold
/// pooled into one report.
pub fn cross_validate(
    data: &[LabelledText],
    folds: usize,
    spec: TrainSpec,
    threshold: f64,
) -> KindReport {
    let kinds = classes_of(data);
    let order = shuffled(data.len(), spec.seed);
    let mut truth = Vec::new();
    let mut pred = Vec::new();
    for f in 0..folds {
        let test: Vec<LabelledText> = order
            .iter()
            .enumerate()
            .filter(|(i, _)| i % folds == f)
            .map(|(_, &j)| data[j].clone())
            .collect();
        let train: Vec<LabelledText> = order
            .iter()
            .enumerate()
            .filter(|(i, _)| i % folds != f)
            .map(|(_, &j)| data[j].clone())
            .collect();
        let model = train_on(&train, &kinds, spec);
        let (t, p) = predict_all(&model, &test, &kinds);
        truth.extend(t);
        pred.extend(p);
    }
    kind_report(&kinds, &truth, &pred, threshold)
}

/// Duplicate retrieval figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DuplicateReport {
    /// Queries (reports that appear in a pair).
    pub queries: usize,
    /// Reports ranked against.
    pub corpus: usize,
    /// A known duplicate ranked first.
    pub recall_at_1: f64,
    /// … in the top 5.
    pub recall_at_5: f64,
    /// … in the top 10.
    pub recall_at_10: f64,
    /// Mean reciprocal rank of the first known duplicate (0 when outside the top 100).
    pub mrr: f64,
    /// Fraction of queries whose best match scores at or above the threshold and is a known duplicate.
    pub likely_precision: f64,
    /// Fraction of queries with a match at or above the threshold.
    pub likely_rate: f64,
    /// The threshold used for `likely_*`.
    pub threshold: f64,
}

/// A report in the duplicate corpus.
#[derive(Debug, Clone)]
pub struct Report {
    /// Its id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub body: String,
}

/// Rank every other report for each query; a hit at k when any known duplicate is in
/// the top k.
pub fn duplicates(
    corpus: &[Report],
    pairs: &[(String, String)],
    threshold: f64,
) -> DuplicateReport {
    let index = DuplicateIndex::build(
        corpus
            .iter()
            .map(|r| (r.id.clone(), r.title.as_str(), r.body.as_str())),
    );
    let by_id: HashMap<&str, &Report> = corpus.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut dups: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
    for (a, b) in pairs {
        dups.entry(a.as_str()).or_default().insert(b.as_str());
        dups.entry(b.as_str()).or_default().insert(a.as_str());
    }
    let (mut r1, mut r5, mut r10, mut mrr, mut likely, mut likely_right, mut n) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0usize);
    for (q, known) in &dups {
        let Some(report) = by_id.get(q) else { continue };
        n += 1;
        let ranked = index.query(&report.title, &report.body, 100, Some(q));
        if let Some(pos) = ranked.iter().position(|m| known.contains(m.key.as_str())) {
            if pos < 1 {
                r1 += 1.0;
            }
            if pos < 5 {
                r5 += 1.0;
            }
            if pos < 10 {
                r10 += 1.0;
            }
            mrr += 1.0 / (pos as f64 + 1.0);
        }
        if let Some(top) = ranked.first()
            && f64::from(top.score) >= threshold
        {
            likely += 1.0;
            if known.contains(top.key.as_str()) {
                likely_right += 1.0;
            }
        }
    }
    let d = n.max(1) as f64;
    DuplicateReport {
        queries: n,
        corpus: corpus.len(),
        recall_at_1: r1 / d,
        recall_at_5: r5 / d,
        recall_at_10: r10 / d,
        mrr: mrr / d,
        likely_precision: if likely > 0.0 {
            likely_right / likely
        } else {
            0.0
        },
        likely_rate: likely / d,
        threshold,
    }
}

/// Priority agreement figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PriorityReport {
    /// Issues with a usable priority.
    pub issues: usize,
    /// Predicted level equals the people's level.
    pub agreement: f64,
    /// Within one level.
    pub within_one: f64,
    /// Agreement of always answering the most common level (the bar to beat).
    pub majority_baseline: f64,
    /// `confusion[people][predicted]`, P0..P3.
    pub confusion: Vec<Vec<usize>>,
    /// How the corpus's priority names were mapped to levels.
    pub mapping: BTreeMap<String, String>,
}

/// Map a Jira/GitHub priority name to P0–P3.
pub fn priority_level(name: &str) -> Option<usize> {
    match name.trim().to_lowercase().as_str() {
        "blocker" | "p0" | "highest" | "urgent" => Some(0),
        "critical" | "p1" | "high" => Some(1),
        "major" | "p2" | "medium" | "normal" => Some(2),
        "minor" | "trivial" | "p3" | "low" | "lowest" => Some(3),
        _ => None,
    }
}

/// Compare the rules (all reports taken as bugs) with people's priorities.
pub fn priority(reports: &[(String, String, String)]) -> PriorityReport {
    let mut confusion = vec![vec![0usize; 4]; 4];
    let mut mapping = BTreeMap::new();
    for (title, body, people) in reports {
        let Some(truth) = priority_level(people) else {
            continue;
        };
        mapping.insert(people.clone(), format!("P{truth}"));
        let p = priority::assess(
            title,
            body,
            priority::Context {
                kind: Some("bug"),
                ..Default::default()
            },
        );
        let predicted: usize = p.level.trim_start_matches('P').parse().unwrap_or(3);
        confusion[truth][predicted] += 1;
    }
    let n: usize = confusion.iter().flatten().sum();
    let d = n.max(1) as f64;
    let agree: usize = (0..4).map(|i| confusion[i][i]).sum();
    let within: usize = (0..4)
        .flat_map(|i| (0..4).map(move |j| (i, j)))
        .filter(|(i, j): &(usize, usize)| i.abs_diff(*j) <= 1)
        .map(|(i, j)| confusion[i][j])
        .sum();
    let majority = confusion
        .iter()
        .map(|row| row.iter().sum::<usize>())
        .max()
        .unwrap_or(0);
    PriorityReport {
        issues: n,
        agreement: agree as f64 / d,
        within_one: within as f64 / d,
        majority_baseline: majority as f64 / d,
        confusion,
        mapping,
    }
}

/// Files a unified diff changes (the `b/` side, or `a/` for deletions).
pub fn patch_files(patch: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in patch.lines() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            if let Some((_, b)) = rest.split_once(" b/") {
                let p = b.to_string();
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        } else if let Some(rest) = line.strip_prefix("+++ b/") {
            let p = rest.trim_end().to_string();
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// One localization instance's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct LocalizeOutcome {
    /// The instance.
    pub instance_id: String,
    /// Files its fix changed.
    pub gold: Vec<String>,
    /// 1-based rank of the first gold file, when ranked.
    pub first_rank: Option<usize>,
    /// Share of gold files in the top 1, 3, 5, 10.
    pub recall: [f64; 4],
    /// Tokens of the context built.
    pub context_tokens: usize,
    /// Whether a gold file is in the context.
    pub gold_in_context: bool,
    /// Seconds to open or build the index.
    pub index_seconds: f64,
    /// Seconds to rank and build the context.
    pub locate_seconds: f64,
    /// Seconds of that in the index's searches (the warm query).
    pub search_seconds: f64,
    /// Estimated tokens (bytes/4) of the repair request built from this context.
    pub prompt_tokens: usize,
    /// Estimated tokens of the real fix written as SEARCH/REPLACE blocks, the answer a
    /// model would give.
    pub answer_tokens: usize,
}

/// Score a ranking against the gold files.
pub fn localize_outcome(instance_id: &str, gold: &[String], ranked: &[String]) -> LocalizeOutcome {
    let first_rank = ranked.iter().position(|p| gold.contains(p)).map(|i| i + 1);
    let recall_at = |k: usize| {
        if gold.is_empty() {
            return 0.0;
        }
        gold.iter()
            .filter(|g| ranked.iter().take(k).any(|p| p == *g))
            .count() as f64
            / gold.len() as f64
    };
    LocalizeOutcome {
        instance_id: instance_id.to_string(),
        gold: gold.to_vec(),
        first_rank,
        recall: [recall_at(1), recall_at(3), recall_at(5), recall_at(10)],
        context_tokens: 0,
        gold_in_context: false,
        index_seconds: 0.0,
        locate_seconds: 0.0,
        search_seconds: 0.0,
        prompt_tokens: 0,
        answer_tokens: 0,
    }
}

/// The figures of `eval localize`.
#[derive(Debug, Clone, Serialize)]
pub struct LocalizeReport {
    /// Instances measured.
    pub instances: usize,
    /// Mean share of gold files in the top 1.
    pub recall_at_1: f64,
    /// … top 3.
    pub recall_at_3: f64,
    /// … top 5.
    pub recall_at_5: f64,
    /// … top 10.
    pub recall_at_10: f64,
    /// Mean reciprocal rank of the first gold file (0 when not ranked).
    pub mrr: f64,
    /// Median tokens of the context.
    pub median_context_tokens: f64,
    /// Share of instances whose context holds a gold file.
    pub gold_in_context: f64,
    /// Median seconds per instance (index plus ranking).
    pub median_seconds: f64,
    /// Median seconds to rank and build the context (index excluded).
    pub median_locate_seconds: f64,
    /// Median seconds of the searches alone (the warm query).
    pub median_search_seconds: f64,
    /// Median estimated tokens of the repair request (system, issue, context).
    pub median_prompt_tokens: f64,
    /// Median estimated tokens of the real fix as edit blocks.
    pub median_answer_tokens: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Aggregate outcomes.
pub fn localize_report(outcomes: &[LocalizeOutcome]) -> LocalizeReport {
    let n = outcomes.len().max(1) as f64;
    let mean = |f: &dyn Fn(&LocalizeOutcome) -> f64| outcomes.iter().map(f).sum::<f64>() / n;
    LocalizeReport {
        instances: outcomes.len(),
        recall_at_1: mean(&|o| o.recall[0]),
        recall_at_3: mean(&|o| o.recall[1]),
        recall_at_5: mean(&|o| o.recall[2]),
        recall_at_10: mean(&|o| o.recall[3]),
        mrr: mean(&|o| o.first_rank.map_or(0.0, |r| 1.0 / r as f64)),
        median_context_tokens: median(outcomes.iter().map(|o| o.context_tokens as f64).collect()),
        gold_in_context: mean(&|o| if o.gold_in_context { 1.0 } else { 0.0 }),
        median_seconds: median(
            outcomes
                .iter()
                .map(|o| o.index_seconds + o.locate_seconds)
                .collect(),
        ),
        median_locate_seconds: median(outcomes.iter().map(|o| o.locate_seconds).collect()),
        median_search_seconds: median(outcomes.iter().map(|o| o.search_seconds).collect()),
        median_prompt_tokens: median(outcomes.iter().map(|o| o.prompt_tokens as f64).collect()),
        median_answer_tokens: median(outcomes.iter().map(|o| o.answer_tokens as f64).collect()),
    }
}

/// What became of one `eval apply` case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Applied, and the files are what was intended.
    Right,
    /// Applied, and some file is not.
    Wrong,
    /// Refused.
    Refused,
}

/// Shares of outcomes.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ApplyShares {
    /// Cases.
    pub cases: usize,
    /// Applied and right.
    pub right: f64,
    /// Applied but wrong.
    pub wrong: f64,
    /// Refused.
    pub refused: f64,
}

/// The figures of `eval apply`.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    /// Cases.
    pub cases: usize,
    /// Share applied and right.
    pub right: f64,
    /// Share applied but wrong.
    pub wrong: f64,
    /// Share refused.
    pub refused: f64,
    /// The same per kind of damage.
    pub by_corruption: BTreeMap<String, ApplyShares>,
    /// Overall, as shares.
    #[serde(skip)]
    pub overall: ApplyShares,
}

fn shares(outcomes: &[ApplyOutcome]) -> ApplyShares {
    let n = outcomes.len().max(1) as f64;
    let count = |o: ApplyOutcome| outcomes.iter().filter(|x| **x == o).count() as f64 / n;
    ApplyShares {
        cases: outcomes.len(),
        right: count(ApplyOutcome::Right),
        wrong: count(ApplyOutcome::Wrong),
        refused: count(ApplyOutcome::Refused),
    }
}

/// Aggregate `(corruption, outcome)` pairs.
pub fn apply_report(outcomes: &[(String, ApplyOutcome)]) -> ApplyReport {
    let all: Vec<ApplyOutcome> = outcomes.iter().map(|(_, o)| *o).collect();
    let overall = shares(&all);
    let mut groups: BTreeMap<String, Vec<ApplyOutcome>> = BTreeMap::new();
    for (c, o) in outcomes {
        groups.entry(c.clone()).or_default().push(*o);
    }
    ApplyReport {
        cases: overall.cases,
        right: overall.right,
        wrong: overall.wrong,
        refused: overall.refused,
        by_corruption: groups.iter().map(|(k, v)| (k.clone(), shares(v))).collect(),
        overall,
    }
}
