//! `sluice bench …`: benchmarks, each printing ratios against a baseline it measures in the
//! same run.

mod classify;
mod minhash;
mod mix;
mod pipeline;
mod preview;
mod read;
mod serve;
mod tasks;
mod tokenize;

use crate::cmd::classifier::LabelledData;
use anyhow::{bail, Result};
use clap::Subcommand;
use sluice_pipeline::config;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum Bench {
    /// Training tokens/s on CPU for a small Llama-shaped model (compare with
    /// trainer/bench/torch_step.py on the same folder).
    Train(crate::cmd::train::BenchTrainArgs),
    /// Fuzz the readers: inputs mutated from seed files under every reader and compression;
    /// no case may panic, hang, lose a record or leave a reject without a location.
    Fuzz {
        /// How long to run.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seed of the mutations.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Folder of seed files (default: the bundled examples/data).
        #[arg(long, default_value = "examples/data")]
        seeds: PathBuf,
    },
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
    /// Templating + tokenizing + shard writing in tokens/s on one core, beside whole-string
    /// encoding of the same rendered texts with the same tokenizer.
    Tokenize {
        /// Input file (any format sluice reads).
        #[arg(long)]
        input: PathBuf,
        /// tokenizer.json.
        #[arg(long)]
        tokenizer: PathBuf,
        /// Chat template.
        #[arg(long, default_value = "chatml")]
        template: String,
        /// Passes; the best is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Write the rendered texts here (JSON array of strings) for an external baseline.
        #[arg(long)]
        dump_rendered: Option<PathBuf>,
    },
    /// Mix preview latency over a generated catalog (runs × 800 groups), beside a plain
    /// polars scan-and-sum of the same catalog as the baseline.
    Preview {
        /// Where to write the generated catalog (reused when it exists).
        #[arg(long)]
        dir: PathBuf,
        /// Run directories (catalog files).
        #[arg(long, default_value_t = 1000)]
        runs: usize,
        /// Samples the catalog describes.
        #[arg(long, default_value_t = 10_000_000)]
        samples: u64,
        /// Previews timed.
        #[arg(long, default_value_t = 20)]
        repeat: usize,
    },
    /// A bounded load test of the REST service on loopback: mix previews over a generated
    /// catalog at a given concurrency, then job submissions; p50/p99 latency and errors.
    Serve {
        /// Scratch folder (data root, output root with a generated catalog).
        #[arg(long)]
        dir: PathBuf,
        /// Catalog runs to generate (800 rows each).
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// Preview (and health) requests.
        #[arg(long, default_value_t = 10_000)]
        previews: usize,
        /// Job submissions.
        #[arg(long, default_value_t = 1000)]
        jobs: usize,
        /// Concurrent connections.
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
    },
    /// Mix throughput: `sluice run` over generated samples with a mix stage, beside the same
    /// run without stages (read + write only) as the baseline.
    Mix {
        /// Where to write the generated samples and outputs.
        #[arg(long)]
        dir: PathBuf,
        /// Samples.
        #[arg(long, default_value_t = 1_000_000)]
        samples: u64,
        /// Worker threads.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Write a generated long-document corpus (Chinese or English dialogues or documents of
    /// 0.5–20 KB from real sentences, with fillers, phone numbers and near duplicates).
    Corpus(pipeline::CorpusArgs),
    /// A pipeline end to end over 1/16, 1/4 and all of its inputs: MB/s per core, linearity,
    /// each stage's share of the CPU time and peak memory, beside reading alone.
    Pipeline {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Input sizes, relative (the largest reads everything).
        #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
        scales: Vec<u64>,
    },
    /// A pipeline as 1, 2, 4, 8 local tasks meeting in a work folder, beside one process: wall,
    /// CPU per task (task 0 against the others), peak bytes in the work folder, task 0's
    /// phases, and whether the published files equal the one process run's.
    Tasks {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Task counts to run.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
        tasks: Vec<usize>,
        /// Worker threads per task (and for the one process run).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Also run each task count in phases (`sluice run --phase`), at most this many
        /// processes at once: a throttled job array, phase after phase.
        #[arg(long)]
        slots: Option<usize>,
    },
    /// MinHash signatures per second on one core (128 permutations, 5-gram shingles); with
    /// --accuracy, precision and recall at 0.7/0.8/0.9 on a generated near-duplicate corpus,
    /// sluice beside datasketch's banding and estimate.
    Minhash {
        /// Input file (any format sluice reads).
        #[arg(long, required_unless_present = "accuracy")]
        input: Option<PathBuf>,
        /// At most this many samples.
        #[arg(long)]
        limit: Option<usize>,
        /// Measure accuracy on a generated corpus in place of speed.
        #[arg(long)]
        accuracy: bool,
        /// Samples of the generated corpus.
        #[arg(long, default_value_t = 20_000)]
        docs: usize,
        /// Language of the generated corpus (zh or en).
        #[arg(long, default_value = "zh")]
        lang: String,
    },
    /// Every record stage of a pipeline alone on one core over the pipeline's inputs:
    /// samples/s per core and build (load) time, beside serializing each sample to JSON as the
    /// baseline.
    Stages {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Passes per stage; the best is reported.
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

/// Run one.
pub fn run(what: Bench) -> Result<ExitCode> {
    match what {
        Bench::Train(args) => {
            crate::cmd::train::bench_train(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Bench::Stages { pipeline, repeat } => {
            let plan = config::load(&pipeline)?;
            let passes = sluice_pipeline::bench::stage_throughput(&plan, repeat)
                .map_err(anyhow::Error::msg)?;
            let mut out = std::io::stdout();
            writeln!(
                out,
                "{:<30} {:>8} {:>8} {:>11} {:>12} {:>9}",
                "stage", "samples", "kept", "samples/s", "× baseline", "build ms"
            )?;
            let base = passes.first().map_or(1.0, |p| p.seconds.max(1e-9));
            for p in &passes {
                writeln!(
                    out,
                    "{:<30} {:>8} {:>8} {:>11.0} {:>12.2} {:>9.1}",
                    p.name,
                    p.samples,
                    p.kept,
                    p.samples as f64 / p.seconds.max(1e-9),
                    base / p.seconds.max(1e-9),
                    p.build_seconds * 1e3
                )?;
            }
            if let Some(slow) = passes
                .iter()
                .skip(1)
                .max_by(|a, b| a.seconds.total_cmp(&b.seconds))
            {
                writeln!(out, "slowest: {}", slow.name)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Bench::Preview {
            dir,
            runs,
            samples,
            repeat,
        } => {
            preview::bench_preview(&dir, runs, samples, repeat)?;
            Ok(ExitCode::SUCCESS)
        }
        Bench::Serve {
            dir,
            runs,
            previews,
            jobs,
            concurrency,
        } => {
            serve::bench_serve(&dir, runs, previews, jobs, concurrency)?;
            Ok(ExitCode::SUCCESS)
        }
        Bench::Mix {
            dir,
            samples,
            threads,
        } => {
            mix::bench_mix(&dir, samples, threads)?;
            Ok(ExitCode::SUCCESS)
        }
        Bench::Fuzz {
            seconds,
            seed,
            seeds,
        } => {
            let files = sluice_pipeline::fuzz::seeds_from(&seeds, 256);
            if files.is_empty() {
                bail!("no seed files under {}", seeds.display());
            }
            let dir = std::env::temp_dir().join(format!("sluice-fuzz-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let r = sluice_pipeline::fuzz::run(
                &files,
                &dir,
                seed,
                u64::MAX,
                std::time::Duration::from_secs(seconds),
                std::time::Duration::from_secs(30),
            );
            let _ = std::fs::remove_dir_all(&dir);
            writeln!(
            std::io::stdout(),
            "fuzz: {} cases from {} seeds in {seconds} s: {} records, {} rejected, {} file errors, slowest case {:?}, {} failure(s)",
            r.cases,
            files.len(),
            r.records,
            r.rejected,
            r.file_errors,
            r.slowest,
            r.failures.len()
        )?;
            for f in &r.failures {
                writeln!(std::io::stdout(), "  {f}")?;
            }
            Ok(if r.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Bench::Corpus(args) => {
            pipeline::bench_corpus(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Bench::Pipeline {
            pipeline: file,
            threads,
            scales,
        } => {
            pipeline::bench_pipeline(&file, threads.max(1), &scales)?;
            Ok(ExitCode::SUCCESS)
        }
        Bench::Tasks {
            pipeline: file,
            tasks: counts,
            threads,
            slots,
        } => {
            tasks::bench_tasks(&file, &counts, threads.max(1), slots)?;
            Ok(ExitCode::SUCCESS)
        }
        Bench::Minhash {
            input,
            limit,
            accuracy,
            docs,
            lang,
        } => {
            match (accuracy, input) {
                (true, _) => minhash::bench_accuracy(docs, &lang)?,
                (false, Some(input)) => minhash::bench_minhash(&input, limit)?,
                (false, None) => bail!("--input FILE, or --accuracy"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Bench::Tokenize {
            input,
            tokenizer,
            template,
            repeat,
            dump_rendered,
        } => {
            tokenize::bench_tokenize(
                &input,
                &tokenizer,
                &template,
                repeat.max(1),
                dump_rendered.as_deref(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Bench::Classify {
            data,
            model,
            repeat,
        } => {
            classify::bench_classify(&data, &model, repeat.max(1))?;
            Ok(ExitCode::SUCCESS)
        }
        Bench::Read {
            files,
            threads,
            repeat,
        } => {
            read::bench_read(&files, threads, repeat.max(1))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
