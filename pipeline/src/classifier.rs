//! fastText text classification: Chinese-aware features, supervised training through the pure-Rust
//! `fasttext` crate, honest evaluation (per-label precision/recall/F1 and a threshold sweep), and a
//! loaded model that the `classify` stage shares across worker threads.
//!
//! A sluice-trained model is the fastText `.bin` plus a sidecar `<model>.sluice.json` that records
//! how text was turned into tokens, so that prediction sees exactly the features training saw.
//! An official fastText `.bin` without a sidecar (a language-id model, say) gets raw text.

use crate::io::convert::convert;
use crate::io::options::{ColumnTarget, InputPlan, RecordFormat};
use crate::io::read_path;
use crate::normalize::is_cjk;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// fastText's label prefix.
pub const LABEL_PREFIX: &str = "__label__";

/// How text becomes fastText tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Features {
    /// Each CJK character is a token, runs of letters and digits are lower-cased words, other
    /// symbols are tokens of their own; word n-grams then give character bigrams for Chinese.
    #[default]
    Chars,
    /// Chinese split into words by jieba (its default dictionary and HMM, as `jieba.lcut`);
    /// the rest as in `Chars`. Word n-grams then pair words.
    Words,
    /// The text as it is (fastText splits on whitespace): for official models.
    Raw,
}

impl std::str::FromStr for Features {
    type Err = String;

    fn from_str(s: &str) -> Result<Features, String> {
        match s {
            "chars" => Ok(Features::Chars),
            "words" => Ok(Features::Words),
            "raw" => Ok(Features::Raw),
            other => Err(format!("unknown features {other:?}: chars, words or raw")),
        }
    }
}

/// jieba with its default dictionary, loaded once per process (about 0.2 s).
fn jieba() -> &'static jieba_rs::Jieba {
    static JIEBA: std::sync::OnceLock<jieba_rs::Jieba> = std::sync::OnceLock::new();
    JIEBA.get_or_init(jieba_rs::Jieba::new)
}

/// Turn text into space-separated tokens for fastText.
pub fn featurize(text: &str, features: Features, out: &mut String) {
    out.clear();
    if features == Features::Raw {
        // fastText reads one example per line: newlines would split it.
        out.extend(
            text.chars()
                .map(|c| if c == '\n' || c == '\r' { ' ' } else { c }),
        );
        return;
    }
    if features == Features::Words {
        for word in jieba().cut(text, true) {
            if word.chars().any(|c| is_cjk(c) && c.is_alphanumeric()) {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(word);
            } else {
                // Separates its first token from what `out` holds already.
                chars_into(word, out);
            }
        }
        return;
    }
    chars_into(text, out);
}

/// The `Chars` features of `text`, appended to `out`.
fn chars_into(text: &str, out: &mut String) {
    let mut in_word = false;
    for c in text.chars() {
        if c.is_whitespace() {
            in_word = false;
            continue;
        }
        if is_cjk(c) && c.is_alphanumeric() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push(c);
            in_word = false;
        } else if c.is_alphanumeric() {
            if !in_word && !out.is_empty() {
                out.push(' ');
            }
            out.extend(c.to_lowercase());
            in_word = true;
        } else {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push(c);
            in_word = false;
        }
    }
}

/// Hyper-parameters of training, with defaults that suit short Chinese texts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainParams {
    /// Passes over the data (default 10).
    pub epochs: u32,
    /// Learning rate (default 0.5).
    pub lr: f64,
    /// Embedding size (default 64).
    pub dim: u32,
    /// Word n-gram length; 2 gives character bigrams for Chinese (default 2). Less training
    /// (lr 0.2, 8 epochs, 3-grams) scores 0.01 more macro F1 on COLD and on a sentiment set,
    /// but 0.28 less on an imbalanced 11-department medical set: see the README.
    pub word_ngrams: u32,
    /// Drop tokens seen fewer times (default 1).
    pub min_count: u32,
    /// Hash buckets for n-grams (default 200,000: fastText's 2,000,000 makes a 512 MB model at
    /// dim 64 for 0.004 more F1 on COLD; 200,000 makes 53 MB).
    pub bucket: u32,
    /// Seed (default 42).
    pub seed: u64,
    /// Training threads; 1 (default) is deterministic, more is faster but not reproducible.
    pub threads: u32,
    /// Feature extraction.
    pub features: Features,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            epochs: 10,
            lr: 0.5,
            dim: 64,
            word_ngrams: 2,
            min_count: 1,
            bucket: 200_000,
            seed: 42,
            threads: 1,
            features: Features::Chars,
        }
    }
}

/// The sidecar written next to a sluice-trained model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    /// Feature extraction used in training.
    pub features: Features,
    /// Labels, without the `__label__` prefix.
    pub labels: Vec<String>,
    /// Training examples per label.
    pub examples: BTreeMap<String, u64>,
    /// Hyper-parameters.
    pub params: TrainParams,
}

/// Problems of the classifier, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    /// The model file is missing.
    #[error("model {}: no such file", .0.display())]
    Missing(PathBuf),
    /// The model file is not a fastText model.
    #[error("model {path}: not a readable fastText model ({why})", path = .0.display(), why = .1)]
    Corrupt(PathBuf, String),
    /// No usable training example.
    #[error("{path}: no labelled examples with non-empty text (checked {n} records, {bad} rejected; see the column names)", path = .0.display(), n = .1, bad = .2)]
    NoData(PathBuf, u64, u64),
    /// Training needs two labels.
    #[error("{path}: only one label ({label:?}) in the training data; a classifier needs at least two", path = .0.display(), label = .1)]
    OneLabel(PathBuf, String),
    /// Reading the data failed.
    #[error("{0}")]
    Read(String),
    /// fastText failed.
    #[error("fastText: {0}")]
    FastText(String),
}

/// Labelled examples: (text, label).
pub type Examples = Vec<(String, String)>;

/// Read (text, label) pairs from any input sluice reads (CSV, JSONL, Parquet, …, any encoding
/// or compression). Records without text or label are counted as rejected, not used.
pub fn read_labelled(
    path: &Path,
    text_col: &str,
    label_col: &str,
) -> Result<(Examples, u64), ClassifierError> {
    let mut plan = InputPlan::new("labelled");
    plan.format = RecordFormat::Columns;
    plan.kind = Some(crate::sample::Kind::Pretrain);
    plan.columns = vec![
        (text_col.to_string(), ColumnTarget::Text),
        (label_col.to_string(), ColumnTarget::Tag("label".into())),
    ];
    let plan = Arc::new(plan);
    let display = path.to_string_lossy().into_owned();
    let mut out = Vec::new();
    let mut rejected = 0u64;
    let mut first_error: Option<String> = None;
    read_path(&plan, path, 8 << 20, &mut |rec| {
        match convert(&rec) {
            Ok((s, _)) => match (s.text, s.tags.get("label")) {
                (Some(t), Some(l)) if !l.trim().is_empty() => out.push((t, l.trim().to_string())),
                _ => rejected += 1,
            },
            Err(e) => {
                rejected += 1;
                first_error.get_or_insert(format!("line {}: {e}", rec.line));
            }
        }
        Ok(())
    })
    .map_err(|e| ClassifierError::Read(e.to_string()))?
    .map_err(|e| ClassifierError::Read(format!("{display}: {e}")))?;
    if out.is_empty() {
        if let Some(e) = first_error {
            return Err(ClassifierError::Read(format!(
                "{display}: no usable record; first problem at {e}"
            )));
        }
    }
    Ok((out, rejected))
}

/// A loaded model, ready to predict from many threads.
pub struct Model {
    ft: fasttext::FastText,
    features: Features,
    labels: Vec<String>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("features", &self.features)
            .field("labels", &self.labels)
            .finish()
    }
}

fn card_path(model: &Path) -> PathBuf {
    let mut p = model.as_os_str().to_owned();
    p.push(".sluice.json");
    PathBuf::from(p)
}

impl Model {
    /// Load a model (sluice-trained with its sidecar, or an official fastText `.bin`).
    pub fn load(path: &Path) -> Result<Model, ClassifierError> {
        if !path.is_file() {
            return Err(ClassifierError::Missing(path.to_path_buf()));
        }
        let ft = fasttext::FastText::load_model(path)
            .map_err(|e| ClassifierError::Corrupt(path.to_path_buf(), e.to_string()))?;
        let card = card_path(path);
        let features = match std::fs::read(&card) {
            Ok(bytes) => {
                serde_json::from_slice::<ModelCard>(&bytes)
                    .map_err(|e| ClassifierError::Corrupt(card.clone(), e.to_string()))?
                    .features
            }
            Err(_) => Features::Raw,
        };
        let prefix = ft.args().label.clone();
        let labels = ft
            .get_labels()
            .0
            .into_iter()
            .map(|l| l.strip_prefix(&prefix).unwrap_or(&l).to_string())
            .collect();
        Ok(Model {
            ft,
            features,
            labels,
        })
    }

    /// The model's labels, without prefix.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Every label with its probability, best first.
    pub fn predict_all(&self, text: &str, scratch: &mut String) -> Vec<(String, f32)> {
        featurize(text, self.features, scratch);
        let prefix = &self.ft.args().label;
        self.ft
            .predict(scratch, self.labels.len(), 0.0)
            .into_iter()
            .map(|p| {
                (
                    p.label
                        .strip_prefix(prefix.as_str())
                        .unwrap_or(&p.label)
                        .to_string(),
                    p.prob,
                )
            })
            .collect()
    }

    /// The probability of one label.
    pub fn prob_of(&self, text: &str, label: &str, scratch: &mut String) -> f32 {
        self.predict_all(text, scratch)
            .into_iter()
            .find(|(l, _)| l == label)
            .map_or(0.0, |(_, p)| p)
    }
}

/// A hyper-parameter search (fastText's autotune): trials of epochs, learning rate, n-grams,
/// dimension and buckets scored by F1 on held-out examples, within a time budget. The best
/// trial's parameters are retrained and recorded in the model card. The result depends on
/// how many trials the budget allows, so it is not reproducible run to run.
#[derive(Debug, Clone)]
pub struct Autotune {
    /// Held-out labelled examples the trials are scored on.
    pub valid: Vec<(String, String)>,
    /// Seconds the search may take.
    pub seconds: u32,
}

/// Train a model on labelled examples and write `<model>` and its sidecar atomically.
pub fn train(
    examples: &[(String, String)],
    params: &TrainParams,
    source: &Path,
    model_path: &Path,
) -> Result<ModelCard, ClassifierError> {
    train_tuned(examples, params, source, model_path, None)
}

/// [`train`], with an optional [`Autotune`] search in place of the given epochs, learning
/// rate, dimension, n-grams and buckets.
pub fn train_tuned(
    examples: &[(String, String)],
    params: &TrainParams,
    source: &Path,
    model_path: &Path,
    autotune: Option<&Autotune>,
) -> Result<ModelCard, ClassifierError> {
    if examples.is_empty() {
        return Err(ClassifierError::NoData(source.to_path_buf(), 0, 0));
    }
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (_, l) in examples {
        *counts.entry(l.clone()).or_default() += 1;
    }
    if counts.len() < 2 {
        let only = counts.keys().next().cloned().unwrap_or_default();
        return Err(ClassifierError::OneLabel(source.to_path_buf(), only));
    }
    let dir = tempfile_dir()?;
    let train_file = dir.join("train.txt");
    write_fasttext_file(&train_file, examples, params.features)?;
    let valid_file = dir.join("valid.txt");
    if let Some(tune) = autotune {
        write_fasttext_file(&valid_file, &tune.valid, params.features)?;
    }
    let mut args = fasttext::args::Args::new();
    args.input = train_file.clone();
    args.apply_supervised_defaults();
    args.epoch = params.epochs as i32;
    args.lr = params.lr;
    args.dim = params.dim as i32;
    args.word_ngrams = params.word_ngrams as i32;
    args.min_count = params.min_count as i32;
    args.bucket = if params.word_ngrams > 1 {
        params.bucket as i32
    } else {
        0
    };
    args.thread = params.threads.max(1) as i32;
    args.seed = params.seed as i32;
    args.verbose = 0;
    let result = match autotune {
        Some(tune) => {
            args.autotune_validation_file = valid_file;
            args.autotune_duration = tune.seconds.max(1) as i32;
            args.autotune_metric = "f1".into();
            fasttext::autotune::Autotune::run(args)
        }
        None => fasttext::FastText::train(args),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let ft = result.map_err(|e| ClassifierError::FastText(e.to_string()))?;
    let mut params = params.clone();
    if autotune.is_some() {
        // What the search chose.
        let a = ft.args();
        params.epochs = a.epoch.max(0) as u32;
        params.lr = a.lr;
        params.dim = a.dim.max(0) as u32;
        params.word_ngrams = a.word_ngrams.max(0) as u32;
        params.min_count = a.min_count.max(0) as u32;
        params.bucket = a.bucket.max(0) as u32;
    }
    // Save through a temporary name, then rename: a crash never leaves half a model.
    let mut tmp = model_path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if let Some(parent) = model_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| ClassifierError::Read(format!("{}: {e}", parent.display())))?;
    }
    ft.save_model(&tmp)
        .map_err(|e| ClassifierError::FastText(e.to_string()))?;
    let card = ModelCard {
        features: params.features,
        labels: counts.keys().cloned().collect(),
        examples: counts,
        params,
    };
    let json =
        serde_json::to_vec_pretty(&card).map_err(|e| ClassifierError::Read(e.to_string()))?;
    crate::storage::write_atomic(&card_path(model_path), &json)
        .map_err(|e| ClassifierError::Read(e.to_string()))?;
    crate::storage::rename(&tmp, model_path).map_err(|e| ClassifierError::Read(e.to_string()))?;
    Ok(card)
}

/// Labelled examples in fastText's input format (`__label__<label> <features>` per line).
fn write_fasttext_file(
    path: &Path,
    examples: &[(String, String)],
    features: Features,
) -> Result<(), ClassifierError> {
    let mut f = crate::storage::AtomicFile::create(path)
        .map_err(|e| ClassifierError::Read(e.to_string()))?;
    let mut buf = String::new();
    for (text, label) in examples {
        featurize(text, features, &mut buf);
        let label = label.replace(char::is_whitespace, "_");
        writeln!(f, "{LABEL_PREFIX}{label} {buf}")
            .map_err(|e| ClassifierError::Read(e.to_string()))?;
    }
    f.commit().map_err(|e| ClassifierError::Read(e.to_string()))
}

fn tempfile_dir() -> Result<PathBuf, ClassifierError> {
    let dir = std::env::temp_dir().join(format!(
        "sluice-train-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| ClassifierError::Read(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

/// Precision, recall and F1 of one label.
#[derive(Debug, Clone, Serialize)]
pub struct LabelScores {
    /// The label.
    pub label: String,
    /// Examples with this true label.
    pub support: u64,
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
}

/// One point of the threshold sweep for the positive label.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// Predict positive when its probability is at least this.
    pub threshold: f64,
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// Share of examples predicted positive.
    pub flagged: f64,
}

/// An evaluation on held-out data.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Examples evaluated.
    pub examples: u64,
    /// Records that could not be used.
    pub rejected: u64,
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// Per label (top-1 prediction).
    pub labels: Vec<LabelScores>,
    /// Mean F1 over labels.
    pub macro_f1: f64,
    /// The label the sweep is about.
    pub positive: String,
    /// Thresholds 0.05 … 0.95 on the positive label's probability.
    pub sweep: Vec<SweepPoint>,
    /// Labels in the data that the model does not know.
    pub unknown_labels: Vec<String>,
}

fn prf(tp: u64, fp: u64, fn_: u64) -> (f64, f64, f64) {
    let p = if tp + fp == 0 {
        0.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    let r = if tp + fn_ == 0 {
        0.0
    } else {
        tp as f64 / (tp + fn_) as f64
    };
    let f = if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    };
    (p, r, f)
}

/// Evaluate a model on labelled examples. `positive` defaults to the model's last label in
/// sorted order (`1` for 0/1 labels).
pub fn evaluate(
    model: &Model,
    examples: &[(String, String)],
    rejected: u64,
    positive: Option<&str>,
) -> Result<Evaluation, ClassifierError> {
    let mut labels: Vec<String> = model.labels().to_vec();
    labels.sort();
    let positive = match positive {
        Some(p) if labels.iter().any(|l| l == p) => p.to_string(),
        Some(p) => {
            return Err(ClassifierError::Read(format!(
                "unknown label {p:?}: the model knows {labels:?}"
            )))
        }
        None => labels.last().cloned().unwrap_or_default(),
    };
    let mut scratch = String::new();
    let mut top: Vec<(String, f32)> = Vec::with_capacity(examples.len());
    for (text, _) in examples {
        let all = model.predict_all(text, &mut scratch);
        let pos = all
            .iter()
            .find(|(l, _)| *l == positive)
            .map_or(0.0, |(_, p)| *p);
        let best = all.into_iter().next().map_or(String::new(), |(l, _)| l);
        top.push((best, pos));
    }
    let mut per = Vec::new();
    let mut correct = 0u64;
    for (i, (_, truth)) in examples.iter().enumerate() {
        if top[i].0 == *truth {
            correct += 1;
        }
    }
    for label in &labels {
        let (mut tp, mut fp, mut fn_, mut support) = (0, 0, 0, 0);
        for (i, (_, truth)) in examples.iter().enumerate() {
            let pred = &top[i].0;
            match (truth == label, pred == label) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fn_ += 1,
                _ => {}
            }
            support += u64::from(truth == label);
        }
        let (precision, recall, f1) = prf(tp, fp, fn_);
        per.push(LabelScores {
            label: label.clone(),
            support,
            precision,
            recall,
            f1,
        });
    }
    let sweep = (1..20)
        .map(|k| {
            let t = k as f64 * 0.05;
            let (mut tp, mut fp, mut fn_, mut flagged) = (0, 0, 0, 0u64);
            for (i, (_, truth)) in examples.iter().enumerate() {
                let pred = f64::from(top[i].1) >= t;
                flagged += u64::from(pred);
                match (*truth == positive, pred) {
                    (true, true) => tp += 1,
                    (false, true) => fp += 1,
                    (true, false) => fn_ += 1,
                    _ => {}
                }
            }
            let (precision, recall, f1) = prf(tp, fp, fn_);
            SweepPoint {
                threshold: (t * 100.0).round() / 100.0,
                precision,
                recall,
                f1,
                flagged: flagged as f64 / examples.len().max(1) as f64,
            }
        })
        .collect();
    let mut unknown: Vec<String> = examples
        .iter()
        .map(|(_, l)| l.clone())
        .filter(|l| !labels.contains(l))
        .collect();
    unknown.sort();
    unknown.dedup();
    let macro_f1 = per.iter().map(|s| s.f1).sum::<f64>() / per.len().max(1) as f64;
    Ok(Evaluation {
        examples: examples.len() as u64,
        rejected,
        accuracy: correct as f64 / examples.len().max(1) as f64,
        labels: per,
        macro_f1,
        positive,
        sweep,
        unknown_labels: unknown,
    })
}

impl Evaluation {
    /// A readable table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} examples ({} rejected), accuracy {:.4}, macro F1 {:.4}\n\n",
            self.examples, self.rejected, self.accuracy, self.macro_f1
        );
        s += &format!(
            "{:<16} {:>8} {:>10} {:>8} {:>8}\n",
            "label", "support", "precision", "recall", "F1"
        );
        for l in &self.labels {
            s += &format!(
                "{:<16} {:>8} {:>10.4} {:>8.4} {:>8.4}\n",
                l.label, l.support, l.precision, l.recall, l.f1
            );
        }
        s += &format!(
            "\nthreshold sweep for label {:?} (predict it when its probability >= threshold)\n",
            self.positive
        );
        s += &format!(
            "{:>9} {:>10} {:>8} {:>8} {:>8}\n",
            "threshold", "precision", "recall", "F1", "flagged"
        );
        for p in &self.sweep {
            s += &format!(
                "{:>9.2} {:>10.4} {:>8.4} {:>8.4} {:>8.4}\n",
                p.threshold, p.precision, p.recall, p.f1, p.flagged
            );
        }
        if !self.unknown_labels.is_empty() {
            s += &format!(
                "\nlabels in the data the model does not know: {:?}\n",
                self.unknown_labels
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autotune_searches_and_records_what_it_chose() {
        let good = ["服务很好", "非常满意", "速度很快", "质量不错", "推荐购买"];
        let bad = ["服务很差", "非常失望", "速度太慢", "质量很差", "不要购买"];
        let mut examples = Vec::new();
        for i in 0..200 {
            examples.push((format!("{}，第{i}次", good[i % 5]), "pos".to_string()));
            examples.push((format!("{}，第{i}次", bad[i % 5]), "neg".to_string()));
        }
        let valid: Vec<(String, String)> = examples.iter().step_by(7).cloned().collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let model = dir.path().join("m.bin");
        let tune = Autotune { valid, seconds: 2 };
        let card = train_tuned(
            &examples,
            &TrainParams::default(),
            Path::new("reviews.csv"),
            &model,
            Some(&tune),
        )
        .expect("tunes");
        let written: ModelCard =
            serde_json::from_slice(&std::fs::read(card_path(&model)).expect("card written"))
                .expect("card parses");
        assert_eq!(written.params.epochs, card.params.epochs);
        assert!(card.params.epochs >= 1 && card.params.dim >= 1);
        let m = Model::load(&model).expect("loads");
        let mut scratch = String::new();
        let top = m.predict_all("服务很差，非常失望", &mut scratch);
        assert_eq!(top.first().map(|p| p.0.as_str()), Some("neg"), "{top:?}");
    }

    #[test]
    fn chinese_becomes_characters_and_latin_words_stay_whole() {
        let mut out = String::new();
        featurize("你好，World 2024年!", Features::Chars, &mut out);
        assert_eq!(out, "你 好 ， world 2024 年 !");
        featurize("a\nb", Features::Raw, &mut out);
        assert_eq!(out, "a b");
    }

    #[test]
    fn words_are_jieba_words_and_the_rest_as_chars() {
        let mut out = String::new();
        featurize("我们今天去北京大学，OK? 2024年", Features::Words, &mut out);
        assert_eq!(out, "我们 今天 去 北京大学 ， ok ? 2024 年");
        featurize("", Features::Words, &mut out);
        assert_eq!(out, "");
        assert_eq!("words".parse::<Features>(), Ok(Features::Words));
        assert!("jieba".parse::<Features>().is_err());
    }

    #[test]
    fn scores_are_computed_from_counts() {
        let (p, r, f) = prf(3, 1, 2);
        assert!((p - 0.75).abs() < 1e-12 && (r - 0.6).abs() < 1e-12);
        assert!((f - 2.0 * 0.75 * 0.6 / 1.35).abs() < 1e-12);
        assert_eq!(prf(0, 0, 0), (0.0, 0.0, 0.0));
    }

    #[test]
    fn missing_and_corrupt_models_say_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.bin");
        assert!(matches!(
            Model::load(&missing),
            Err(ClassifierError::Missing(_))
        ));
        let bad = dir.path().join("bad.bin");
        crate::storage::write_atomic(&bad, b"not a model at all").expect("write");
        let err = Model::load(&bad).expect_err("corrupt");
        assert!(
            err.to_string().contains("not a readable fastText model"),
            "{err}"
        );
    }

    #[test]
    fn training_needs_data_and_two_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = dir.path().join("m.bin");
        let p = TrainParams::default();
        assert!(matches!(
            train(&[], &p, Path::new("x.csv"), &m),
            Err(ClassifierError::NoData(..))
        ));
        let one = vec![("好".to_string(), "0".to_string())];
        assert!(matches!(
            train(&one, &p, Path::new("x.csv"), &m),
            Err(ClassifierError::OneLabel(..))
        ));
    }
}
