//! The kind classifier: hashed word + character n-gram TF-IDF and multinomial logistic
//! regression trained by SGD with a fixed seed, its probabilities calibrated by
//! temperature scaling on out-of-fold predictions. Same data, same model.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::text::{self, FeatureSpec, SparseVec};

/// Bumped whenever features or training change, so stored models are retrained.
pub const MODEL_VERSION: u32 = 3;

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    /// Features.
    pub features: FeatureSpec,
    /// L2 regularisation strength.
    pub l2: f32,
    /// Passes over the data.
    pub epochs: usize,
    /// Initial learning rate.
    pub learning_rate: f32,
    /// Shuffling seed.
    pub seed: u64,
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            features: FeatureSpec {
                dims_log2: 18,
                word_ngrams: 2,
                char_min: 2,
                char_max: 5,
                title_weight: 2.0,
                body_chars: 3000,
            },
            l2: 1e-5,
            epochs: 12,
            learning_rate: 0.5,
            seed: 42,
        }
    }
}

/// One labelled example.
#[derive(Debug, Clone)]
pub struct Example<'a> {
    /// Title.
    pub title: &'a str,
    /// Body.
    pub body: &'a str,
    /// Index into the class list.
    pub class: usize,
}

/// A trained model.
#[derive(Debug, Clone, PartialEq)]
pub struct KindModel {
    /// Kinds, in weight-row order.
    pub classes: Vec<String>,
    /// How it was trained.
    pub spec: TrainSpec,
    /// IDF per bucket (both blocks: words then characters).
    pub idf: Vec<f32>,
    /// `classes.len()` rows of weights.
    pub weights: Vec<f32>,
    /// One bias per class.
    pub bias: Vec<f32>,
    /// Softmax temperature fitted on held-out data.
    pub temperature: f32,
    /// Examples it was trained on.
    pub trained_on: usize,
    /// Identifies the labelled history it was trained on.
    pub fingerprint: String,
}

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Shuffle indices `0..n` with a seed (used for folds too).
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1).shuffle(&mut idx);
    idx
}

/// Code blocks, URLs and HTML comments say little about the kind and add many rare
/// features: keep a placeholder for the first two, drop the comments (issue templates
/// hide their instructions there).
pub fn clean_body(body: &str) -> String {
    static RES: std::sync::OnceLock<Vec<(regex::Regex, &'static str)>> = std::sync::OnceLock::new();
    let res = RES.get_or_init(|| {
        [
            (r"(?s)<!--.*?-->", " "),
            (r"(?s)```.*?(```|$)", " codeblock "),
            (r"https?://\S+", " url "),
        ]
        .iter()
        .filter_map(|(re, with)| regex::Regex::new(re).ok().map(|r| (r, *with)))
        .collect()
    });
    let mut out = body[..body.len().min(text::floor_char_boundary(body, 3000))].to_string();
    for (re, with) in res {
        out = re.replace_all(&out, *with).into_owned();
    }
    out
}

fn vectorize_counts(spec: &FeatureSpec, title: &str, body: &str) -> SparseVec {
    let body = clean_body(body);
    let (w, c) = text::counts(spec, title, &body);
    text::concat(w, c, spec.dims() as u32)
}

/// TF-IDF with each block normalised on its own.
fn weigh(spec: &FeatureSpec, counts: &SparseVec, idf: &[f32]) -> SparseVec {
    let split = spec.dims() as u32;
    let (w, c): (SparseVec, SparseVec) = counts.iter().partition(|(i, _)| *i < split);
    let mut out = text::tfidf(&w, idf);
    out.extend(text::tfidf(&c, idf));
    out
}

fn softmax(logits: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for l in logits.iter_mut() {
        *l = (*l - max).exp();
        sum += *l;
    }
    logits.iter_mut().for_each(|l| *l /= sum);
}

struct Raw {
    weights: Vec<f32>,
    bias: Vec<f32>,
}

fn logits(weights: &[f32], bias: &[f32], dims: usize, x: &SparseVec) -> Vec<f32> {
    (0..bias.len())
        .map(|k| {
            bias[k]
                + x.iter()
                    .map(|(i, v)| weights[k * dims + *i as usize] * v)
                    .sum::<f32>()
        })
        .collect()
}

/// SGD on the softmax loss with L2 (Bottou's decaying rate and weight-scale trick).
fn fit(xs: &[SparseVec], ys: &[usize], k: usize, dims: usize, spec: &TrainSpec) -> Raw {
    let mut w = vec![0f32; k * dims];
    let mut b = vec![0f32; k];
    let mut scale = 1f64;
    let mut order: Vec<usize> = (0..xs.len()).collect();
    let mut rng = Rng(spec.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let lambda = f64::from(spec.l2);
    let eta0 = f64::from(spec.learning_rate);
    let mut t = 0f64;
    for _ in 0..spec.epochs {
        rng.shuffle(&mut order);
        for &n in &order {
            let eta = eta0 / (1.0 + eta0 * lambda * t);
            t += 1.0;
            let x = &xs[n];
            let mut p: Vec<f32> = (0..k)
                .map(|c| {
                    b[c] + (scale as f32)
                        * x.iter()
                            .map(|(i, v)| w[c * dims + *i as usize] * v)
                            .sum::<f32>()
                })
                .collect();
            softmax(&mut p);
            scale *= 1.0 - eta * lambda;
            if scale < 1e-6 {
                w.iter_mut().for_each(|v| *v *= scale as f32);
                scale = 1.0;
            }
            for c in 0..k {
                let g = p[c] - if ys[n] == c { 1.0 } else { 0.0 };
                if g == 0.0 {
                    continue;
                }
                let step = (eta / scale) as f32 * g;
                for (i, v) in x {
                    w[c * dims + *i as usize] -= step * v;
                }
                b[c] -= (eta as f32) * g * 0.1;
            }
        }
    }
    w.iter_mut().for_each(|v| *v *= scale as f32);
    Raw {
        weights: w,
        bias: b,
    }
}

fn compute_idf(spec: &FeatureSpec, counts: &[SparseVec]) -> Vec<f32> {
    let mut df = vec![0u32; 2 * spec.dims()];
    counts.iter().for_each(|c| text::add_df(&mut df, c));
    text::idf_from_df(&df, counts.len())
}

/// Negative log-likelihood of held-out logits at a temperature.
fn nll(logit_rows: &[Vec<f32>], ys: &[usize], temperature: f32) -> f64 {
    logit_rows
        .iter()
        .zip(ys)
        .map(|(l, &y)| {
            let mut p: Vec<f32> = l.iter().map(|v| v / temperature).collect();
            softmax(&mut p);
            -f64::from(p[y].max(1e-9)).ln()
        })
        .sum()
}

/// The temperature minimising held-out NLL (golden-section search on log T).
fn fit_temperature(logit_rows: &[Vec<f32>], ys: &[usize]) -> f32 {
    if logit_rows.is_empty() {
        return 1.0;
    }
    let (mut a, mut b) = ((0.05f64).ln(), (20f64).ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..40 {
        let c = b - g * (b - a);
        let d = a + g * (b - a);
        if nll(logit_rows, ys, c.exp() as f32) < nll(logit_rows, ys, d.exp() as f32) {
            b = d;
        } else {
            a = c;
        }
    }
    ((a + b) / 2.0).exp() as f32
}

impl KindModel {
    /// Train on examples: 3-fold out-of-fold logits fit the temperature, then the model
    /// is trained on everything.
    pub fn train(
        classes: Vec<String>,
        examples: &[Example<'_>],
        spec: TrainSpec,
        fingerprint: String,
    ) -> Self {
        let fs = spec.features;
        let dims = 2 * fs.dims();
        let counts: Vec<SparseVec> = examples
            .iter()
            .map(|e| vectorize_counts(&fs, e.title, e.body))
            .collect();
        let ys: Vec<usize> = examples.iter().map(|e| e.class).collect();
        let k = classes.len();

        // Calibration: logits of every example from a model that did not see it
        // (3-fold), pooled, fit the temperature; robust on small histories too.
        let temperature = if examples.len() >= 10 {
            let order = shuffled(examples.len(), spec.seed ^ 0x5eed);
            let folds = 3;
            let mut cal_logits = Vec::new();
            let mut cal_ys = Vec::new();
            for f in 0..folds {
                let fit_idx: Vec<usize> = order
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % folds != f)
                    .map(|(_, &j)| j)
                    .collect();
                let cal_idx: Vec<usize> = order
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % folds == f)
                    .map(|(_, &j)| j)
                    .collect();
                let fit_counts: Vec<SparseVec> =
                    fit_idx.iter().map(|&i| counts[i].clone()).collect();
                let idf = compute_idf(&fs, &fit_counts);
                let xs: Vec<SparseVec> = fit_counts.iter().map(|c| weigh(&fs, c, &idf)).collect();
                let fit_ys: Vec<usize> = fit_idx.iter().map(|&i| ys[i]).collect();
                let raw = fit(&xs, &fit_ys, k, dims, &spec);
                for &i in &cal_idx {
                    cal_logits.push(logits(
                        &raw.weights,
                        &raw.bias,
                        dims,
                        &weigh(&fs, &counts[i], &idf),
                    ));
                    cal_ys.push(ys[i]);
                }
            }
            fit_temperature(&cal_logits, &cal_ys)
        } else {
            1.0
        };

        let idf = compute_idf(&fs, &counts);
        let xs: Vec<SparseVec> = counts.iter().map(|c| weigh(&fs, c, &idf)).collect();
        let raw = fit(&xs, &ys, k, dims, &spec);
        Self {
            classes,
            spec,
            idf,
            weights: raw.weights,
            bias: raw.bias,
            temperature,
            trained_on: examples.len(),
            fingerprint,
        }
    }

    /// Calibrated class probabilities, in `classes` order.
    pub fn predict(&self, title: &str, body: &str) -> Vec<f32> {
        let fs = self.spec.features;
        let x = weigh(&fs, &vectorize_counts(&fs, title, body), &self.idf);
        let mut l = logits(&self.weights, &self.bias, 2 * fs.dims(), &x);
        l.iter_mut().for_each(|v| *v /= self.temperature);
        softmax(&mut l);
        l
    }

    /// The stored form (weights as base64 little-endian f32).
    pub fn to_json(&self) -> serde_json::Value {
        let enc = |v: &[f32]| {
            let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        };
        serde_json::json!({
            "version": MODEL_VERSION,
            "classes": self.classes,
            "spec": self.spec,
            "idf": enc(&self.idf),
            "weights": enc(&self.weights),
            "bias": self.bias,
            "temperature": self.temperature,
            "trained_on": self.trained_on,
            "fingerprint": self.fingerprint,
        })
    }

    /// Read the stored form; `None` when it is from another version or damaged.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        if v.get("version")?.as_u64()? != u64::from(MODEL_VERSION) {
            return None;
        }
        let dec = |s: &serde_json::Value| -> Option<Vec<f32>> {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s.as_str()?)
                .ok()?;
            Some(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        };
        let spec: TrainSpec = serde_json::from_value(v.get("spec")?.clone()).ok()?;
        let classes: Vec<String> = serde_json::from_value(v.get("classes")?.clone()).ok()?;
        let idf = dec(v.get("idf")?)?;
        let weights = dec(v.get("weights")?)?;
        let dims = 2 * spec.features.dims();
        if idf.len() != dims || weights.len() != dims * classes.len() {
            return None;
        }
        Some(Self {
            bias: serde_json::from_value(v.get("bias")?.clone()).ok()?,
            temperature: v.get("temperature")?.as_f64()? as f32,
            trained_on: v.get("trained_on")?.as_u64()? as usize,
            fingerprint: v.get("fingerprint")?.as_str()?.to_string(),
            classes,
            spec,
            idf,
            weights,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Vec<(String, String, usize)> {
        let mut v = Vec::new();
        for i in 0..30 {
            v.push((
                format!("Crash {i} when opening file"),
                "panic stack trace error crash".to_string(),
                0,
            ));
            v.push((
                format!("Add support for feature {i}"),
                "it would be nice to have this enhancement".to_string(),
                1,
            ));
            v.push((
                format!("How do I configure {i}?"),
                "question about usage, how can I".to_string(),
                2,
            ));
        }
        v
    }

    #[test]
    fn learns_separable_kinds_deterministically_and_round_trips() {
        let d = data();
        let ex: Vec<Example<'_>> = d
            .iter()
            .map(|(t, b, c)| Example {
                title: t,
                body: b,
                class: *c,
            })
            .collect();
        let mut spec = TrainSpec::default();
        spec.features.dims_log2 = 12;
        let classes = vec!["bug".to_string(), "feature".into(), "question".into()];
        let a = KindModel::train(classes.clone(), &ex, spec, "fp".into());
        let b = KindModel::train(classes, &ex, spec, "fp".into());
        assert_eq!(a, b, "same data, same model");
        let p = a.predict("The app crashes with a panic", "");
        assert!(p[0] > p[1] && p[0] > p[2], "{p:?}");
        let q = a.predict("How do I set the output folder?", "");
        assert!(q[2] > q[0], "{q:?}");
        let back = KindModel::from_json(&a.to_json()).unwrap();
        assert_eq!(back, a);
    }
}
