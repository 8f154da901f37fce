//! The `sluice` command line: a thin layer over the pipeline library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sluice_pipeline::{classifier, config, engine, Error};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// sluice turns raw business dialogue logs into LLM training data.
#[derive(Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline and publish its outputs.
    Run {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Fail when more than this share of records is rejected (overrides the pipeline).
        #[arg(long)]
        max_reject_ratio: Option<f64>,
        /// Output directory (overrides the pipeline's output.dir).
        #[arg(long)]
        out: Option<PathBuf>,
        /// No progress bar or summary.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Check a pipeline file: parse, resolve inputs, validate stages; report every problem.
    Check {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
    },
    /// Train and evaluate fastText classifiers.
    Classifier {
        #[command(subcommand)]
        what: Classifier,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(clap::Args)]
struct LabelledData {
    /// Labelled data: CSV, TSV, JSONL, JSON, Parquet (plain, gzip or zstd; UTF-8 or GB18030).
    #[arg(long)]
    input: PathBuf,
    /// Column (or JSON key) holding the text.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Column (or JSON key) holding the label.
    #[arg(long, default_value = "label")]
    label_column: String,
}

#[derive(Subcommand)]
enum Classifier {
    /// Train a supervised fastText model; writes MODEL and MODEL.sluice.json.
    Train {
        #[command(flatten)]
        data: LabelledData,
        /// The model file to write.
        #[arg(long)]
        output: PathBuf,
        /// Passes over the data.
        #[arg(long, default_value_t = 10)]
        epochs: u32,
        /// Learning rate.
        #[arg(long, default_value_t = 0.5)]
        lr: f64,
        /// Embedding size.
        #[arg(long, default_value_t = 64)]
        dim: u32,
        /// Word n-grams (2: character bigrams for Chinese).
        #[arg(long, default_value_t = 2)]
        word_ngrams: u32,
        /// Minimum token count.
        #[arg(long, default_value_t = 1)]
        min_count: u32,
        /// Hash buckets for word n-grams (model size = (vocabulary + buckets) × dim × 4 bytes).
        #[arg(long, default_value_t = 200_000)]
        bucket: u32,
        /// Seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Training threads (1 is reproducible; more is faster but not byte-for-byte repeatable).
        #[arg(long, default_value_t = 1)]
        threads: u32,
        /// Also evaluate on this held-out file (same columns).
        #[arg(long)]
        valid: Option<PathBuf>,
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

#[derive(Subcommand)]
enum Bench {
    /// Reader throughput in MB/s beside plain serde_json parsing of the same file.
    Read {
        /// Files to read.
        files: Vec<PathBuf>,
        /// Worker threads for sluice's reader (the baseline is single-threaded).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Passes per file; the best is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Classifier predictions per second on one core, beside featurization alone.
    Classify {
        #[command(flatten)]
        data: LabelledData,
        /// The model.
        #[arg(long)]
        model: PathBuf,
        /// Passes; the best is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            // `sluice bench read … | head` closes stdout early: not an error worth a message.
            let broken_pipe = e
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    match Cli::parse().command {
        Command::Run {
            pipeline,
            threads,
            max_reject_ratio,
            out,
            quiet,
        } => {
            if let Some(r) = max_reject_ratio {
                if !(0.0..=1.0).contains(&r) {
                    bail!("--max-reject-ratio {r} is not a share between 0 and 1");
                }
            }
            let plan = config::load(&pipeline)?;
            let show = !quiet && std::io::stderr().is_terminal();
            let bar = show.then(|| {
                let total: u64 = plan.inputs.iter().flat_map(|i| &i.files).map(|(p, _)| std::fs::metadata(p).map_or(0, |m| m.len())).sum();
                let b = ProgressBar::new(total);
                b.set_style(
                    ProgressStyle::with_template("{spinner} {msg:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b
            });
            let progress_bar = bar.clone();
            let out_dir = out.clone().unwrap_or_else(|| plan.output_dir.clone());
            let opts = engine::RunOptions {
                threads,
                max_reject_ratio,
                output_dir: out,
                progress: progress_bar.map(|b| {
                    Box::new(move |p: &engine::Progress| {
                        b.set_position(p.bytes);
                        b.set_message(format!("{} ({} records)", p.phase, p.records));
                    }) as Box<dyn Fn(&engine::Progress) + Send + Sync>
                }),
            };
            let result = engine::run(&plan, opts);
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            match result {
                Ok(report) => {
                    if !quiet {
                        eprint!("{}", report.summary());
                        eprintln!("  outputs in {}", out_dir.display());
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ Error::TooManyRejects { .. }) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e).with_context(|| format!("running {}", pipeline.display())),
            }
        }
        Command::Check { pipeline } => {
            let plan = config::load(&pipeline)?;
            let files: usize = plan.inputs.iter().map(|i| i.files.len()).sum();
            writeln!(
                std::io::stdout(),
                "{}: ok — {} inputs ({} files), {} stages, output {}",
                pipeline.display(),
                plan.inputs.len(),
                files,
                plan.stages.len(),
                plan.output_dir.display()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Classifier { what } => {
            classifier_command(what)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                Bench::Classify {
                    data,
                    model,
                    repeat,
                },
        } => {
            bench_classify(&data, &model, repeat.max(1))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                Bench::Read {
                    files,
                    threads,
                    repeat,
                },
        } => {
            bench_read(&files, threads, repeat.max(1))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn bench_read(files: &[PathBuf], threads: usize, repeat: usize) -> Result<()> {
    if files.is_empty() {
        bail!("name at least one file to read");
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<44} {:>9} {:>8} {:>12} {:>12} {:>7}",
        "file", "MB", "records", "sluice MB/s", "serde MB/s", "ratio"
    )?;
    for f in files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let mb = bytes.len() as f64 / 1e6;
        let mut best_sluice = f64::MAX;
        let mut best_serde = f64::MAX;
        let mut records = 0;
        for _ in 0..repeat {
            let pass = pool.install(|| sluice_pipeline::bench::sluice_read(f, 2048))?;
            records = pass.records;
            best_sluice = best_sluice.min(pass.seconds);
            let base = sluice_pipeline::bench::serde_json_baseline(&bytes);
            best_serde = best_serde.min(base.seconds);
        }
        let (s, b) = (mb / best_sluice, mb / best_serde);
        let name = f.file_name().map_or_else(
            || f.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        writeln!(
            out,
            "{name:<44} {mb:>9.2} {records:>8} {s:>12.1} {b:>12.1} {:>7.2}",
            s / b
        )?;
    }
    writeln!(out, "(sluice: {threads} thread(s), decode + parse + format mapping + validation into samples; serde: 1 thread, parse into serde_json::Value from memory; best of {repeat})")?;
    Ok(())
}

fn load_labelled(d: &LabelledData) -> Result<(classifier::Examples, u64)> {
    Ok(classifier::read_labelled(
        &d.input,
        &d.text_column,
        &d.label_column,
    )?)
}

fn classifier_command(what: Classifier) -> Result<()> {
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
            valid,
        } => {
            let (examples, rejected) = load_labelled(&data)?;
            let params = classifier::TrainParams {
                epochs,
                lr,
                dim,
                word_ngrams,
                min_count,
                bucket,
                seed,
                threads,
                ..Default::default()
            };
            let started = std::time::Instant::now();
            let card = classifier::train(&examples, &params, &data.input, &output)?;
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

fn bench_classify(data: &LabelledData, model: &std::path::Path, repeat: usize) -> Result<()> {
    let model = classifier::Model::load(model)?;
    let (examples, _) = load_labelled(data)?;
    if examples.is_empty() {
        bail!("{}: no examples", data.input.display());
    }
    let mut scratch = String::new();
    let (mut best_feat, mut best_pred) = (f64::MAX, f64::MAX);
    let mut sink = 0usize;
    for _ in 0..repeat {
        let t = std::time::Instant::now();
        for (text, _) in &examples {
            classifier::featurize(text, classifier::Features::Chars, &mut scratch);
            sink += scratch.len();
        }
        best_feat = best_feat.min(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        for (text, _) in &examples {
            sink += model.predict_all(text, &mut scratch).len();
        }
        best_pred = best_pred.min(t.elapsed().as_secs_f64());
    }
    let n = examples.len() as f64;
    let chars: usize = examples.iter().map(|(t, _)| t.chars().count()).sum();
    writeln!(
        std::io::stdout(),
        "{} texts (avg {:.0} chars), one core, best of {repeat}:\n  featurize only:       {:>10.0} texts/s\n  featurize + predict:  {:>10.0} texts/s  ({:.1}% of the time is featurization)\n  (checksum {sink})",
        examples.len(),
        chars as f64 / n,
        n / best_feat,
        n / best_pred,
        100.0 * best_feat / best_pred
    )?;
    Ok(())
}
