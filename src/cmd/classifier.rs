//! `sluice classifier`: train and evaluate fastText classifiers.

use anyhow::{bail, Result};
use clap::Subcommand;
use sluice_pipeline::classifier::{self, TrainParams};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct LabelledData {
    /// Labelled data: CSV, TSV, JSONL, JSON, Parquet (plain, gzip or zstd; UTF-8 or GB18030).
    #[arg(long)]
    pub input: PathBuf,
    /// Column (or JSON key) holding the text.
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// Column (or JSON key) holding the label.
    #[arg(long, default_value = "label")]
    pub label_column: String,
}

#[derive(Subcommand)]
pub enum Classifier {
    /// Train a supervised fastText model; writes MODEL and MODEL.sluice.json.
    Train {
        #[command(flatten)]
        data: LabelledData,
        /// The model file to write.
        #[arg(long)]
        output: PathBuf,
        /// Passes over the data.
        #[arg(long, default_value_t = TrainParams::default().epochs)]
        epochs: u32,
        /// Learning rate.
        #[arg(long, default_value_t = TrainParams::default().lr)]
        lr: f64,
        /// Embedding size.
        #[arg(long, default_value_t = TrainParams::default().dim)]
        dim: u32,
        /// Word n-grams (2: character bigrams for Chinese).
        #[arg(long, default_value_t = TrainParams::default().word_ngrams)]
        word_ngrams: u32,
        /// Minimum token count.
        #[arg(long, default_value_t = TrainParams::default().min_count)]
        min_count: u32,
        /// Hash buckets for word n-grams (model size = (vocabulary + buckets) × dim × 4 bytes).
        #[arg(long, default_value_t = TrainParams::default().bucket)]
        bucket: u32,
        /// Seed.
        #[arg(long, default_value_t = TrainParams::default().seed)]
        seed: u64,
        /// Training threads (1 is reproducible; more is faster but not byte-for-byte repeatable).
        #[arg(long, default_value_t = TrainParams::default().threads)]
        threads: u32,
        /// How text becomes tokens: `chars` (each Chinese character a token, Latin words
        /// whole), `words` (Chinese split into words by jieba, as `jieba.lcut`), or `raw`
        /// (text already split by spaces). Prediction uses what training used.
        #[arg(long, default_value = "chars")]
        features: classifier::Features,
        /// Also evaluate on this held-out file (same columns).
        #[arg(long)]
        valid: Option<PathBuf>,
        /// Search epochs, learning rate, n-grams, dimension and buckets (fastText's autotune),
        /// scoring each trial by F1 on this held-out file (same columns); the chosen values go
        /// to the model card. Not reproducible: the trials depend on the time budget.
        #[arg(long)]
        autotune_valid: Option<PathBuf>,
        /// Seconds the search may take.
        #[arg(long, default_value_t = 300, requires = "autotune_valid")]
        autotune_seconds: u32,
    },
    /// Precision, recall and F1 per label and a threshold sweep on held-out data.
    Evaluate {
        #[command(flatten)]
        data: LabelledData,
        /// The model.
        #[arg(long)]
        model: PathBuf,
        /// The label the threshold sweep is about (default: the last label, e.g. 1).
        #[arg(long)]
        positive: Option<String>,
        /// Write the evaluation as JSON here too.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

pub fn load_labelled(d: &LabelledData) -> Result<(classifier::Examples, u64)> {
    Ok(classifier::read_labelled(
        &d.input,
        &d.text_column,
        &d.label_column,
    )?)
}

pub fn classifier_command(what: Classifier) -> Result<()> {
    match what {
        Classifier::Train {
            data,
            output,
            epochs,
            lr,
            dim,
            word_ngrams,
            min_count,
            bucket,
            seed,
            threads,
            features,
            valid,
            autotune_valid,
            autotune_seconds,
        } => {
            let (examples, rejected) = load_labelled(&data)?;
            let autotune = match &autotune_valid {
                Some(path) => {
                    let held = LabelledData {
                        input: path.clone(),
                        text_column: data.text_column.clone(),
                        label_column: data.label_column.clone(),
                    };
                    Some(classifier::Autotune {
                        valid: load_labelled(&held)?.0,
                        seconds: autotune_seconds,
                    })
                }
                None => None,
            };
            let params = classifier::TrainParams {
                epochs,
                lr,
                dim,
                word_ngrams,
                min_count,
                bucket,
                seed,
                threads,
                features,
            };
            let started = std::time::Instant::now();
            let card = classifier::train_tuned(
                &examples,
                &params,
                &data.input,
                &output,
                autotune.as_ref(),
            )?;
            if autotune.is_some() {
                let p = &card.params;
                eprintln!(
                    "autotune chose epochs {} lr {:.3} dim {} word n-grams {} buckets {} min count {}",
                    p.epochs, p.lr, p.dim, p.word_ngrams, p.bucket, p.min_count
                );
            }
            eprintln!(
                "trained {} on {} examples ({} rejected) in {:.1}s: labels {:?}",
                output.display(),
                examples.len(),
                rejected,
                started.elapsed().as_secs_f64(),
                card.examples
            );
            if let Some(valid) = valid {
                let model = classifier::Model::load(&output)?;
                let held = LabelledData {
                    input: valid,
                    ..data
                };
                let (examples, rejected) = load_labelled(&held)?;
                let eval = classifier::evaluate(&model, &examples, rejected, None)?;
                write!(std::io::stdout(), "{}", eval.table())?;
            }
            Ok(())
        }
        Classifier::Evaluate {
            data,
            model,
            positive,
            json,
        } => {
            let model = classifier::Model::load(&model)?;
            let (examples, rejected) = load_labelled(&data)?;
            if examples.is_empty() {
                bail!("{}: no labelled examples", data.input.display());
            }
            let eval = classifier::evaluate(&model, &examples, rejected, positive.as_deref())?;
            if let Some(path) = json {
                let mut bytes = serde_json::to_vec_pretty(&eval)?;
                bytes.push(b'\n');
                sluice_pipeline::storage::write_atomic(&path, &bytes)?;
            }
            write!(std::io::stdout(), "{}", eval.table())?;
            Ok(())
        }
    }
}
