//! The `sluice` command line: a thin layer over the pipeline library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sluice_pipeline::mix::{MixMode, MixSpec, MixUnit, PoolSpec, Ratio};
use sluice_pipeline::{catalog, classifier, config, engine, Error};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

mod inspect_cmd;
mod table;
mod train_cmd;

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
        /// A trial: only the first N records of each input, published to `<output>.trial`
        /// (outside the catalog) unless --out says where.
        #[arg(long)]
        limit: Option<u64>,
        /// Run as task I of a task-sharded run (also from SLURM_ARRAY_TASK_ID or
        /// JOB_COMPLETION_INDEX).
        #[arg(long, requires = "tasks")]
        task_index: Option<usize>,
        /// Number of tasks (also from SLURM_ARRAY_TASK_COUNT or SLUICE_TASKS).
        #[arg(long, requires = "task_index")]
        tasks: Option<usize>,
        /// Work directory every task shares (default: <out>.tasks next to the output).
        #[arg(long)]
        work: Option<PathBuf>,
        /// Seconds a task waits for the others at a phase boundary.
        #[arg(long, default_value_t = 86_400)]
        task_timeout: u64,
    },
    /// Check a pipeline file: parse, resolve inputs, validate stages; report every problem.
    Check {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
    },
    /// Run the REST service: jobs, schedules, mix previews, the catalog.
    Serve {
        /// The server config (TOML: listen, data_roots, output_root, concurrency, tokens).
        #[arg(long, required_unless_present = "hash_token")]
        config: Option<PathBuf>,
        /// Print the sha256 to store in `tokens` for this token, and exit.
        #[arg(long)]
        hash_token: Option<String>,
    },
    /// List and summarize the catalog of curated data (every run's catalog.parquet).
    Catalog {
        /// The catalog root: a folder of run directories (or one run directory).
        #[arg(default_value = "out")]
        root: PathBuf,
        /// Group by these columns (comma-separated), e.g. `domain,task` or `region,age_group`.
        #[arg(long, value_delimiter = ',', default_value = "domain,task")]
        by: Vec<String>,
        /// Only rows matching this condition, e.g. "region = 'east' AND age >= 18" (columns,
        /// literals, comparisons, AND/OR/NOT, IN, LIKE, BETWEEN, IS NULL).
        #[arg(long = "where")]
        filter: Option<String>,
        /// Only these runs (names or folders, comma-separated); default: every run, each
        /// source file counted once.
        #[arg(long, value_delimiter = ',')]
        runs: Option<Vec<String>>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Mix domain and general data by ratio: preview from the catalog, or write the mix.
    Mix {
        #[command(subcommand)]
        what: MixCommand,
    },
    /// Look inside outputs.
    Inspect {
        #[command(subcommand)]
        what: Inspect,
    },
    /// Train and evaluate fastText classifiers.
    Classifier {
        #[command(subcommand)]
        what: Classifier,
    },
    /// Train on shards with the bundled candle trainer, or estimate training memory.
    Train {
        #[command(subcommand)]
        what: train_cmd::TrainCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(clap::Args)]
struct MixArgs {
    /// The catalog root (a folder of run directories).
    #[arg(long, default_value = "out")]
    catalog: PathBuf,
    /// A mix file (TOML, the `mix` stage's keys); the flags below override or stand in for it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The domain pool: samples of this domain.
    #[arg(long)]
    domain: Option<String>,
    /// sft: "1:5" (domain:general) or a domain share; cpt: the largest domain share of tokens.
    #[arg(long)]
    ratio: Option<String>,
    /// sft or cpt.
    #[arg(long)]
    mode: Option<String>,
    /// samples or tokens.
    #[arg(long)]
    unit: Option<String>,
    /// A condition every pool must also meet, e.g. "region = 'east' AND age >= 18".
    #[arg(long = "where")]
    filter: Option<String>,
    /// Only these catalog runs (names or folders, comma-separated); default: every run, each
    /// source file counted once.
    #[arg(long, value_delimiter = ',')]
    runs: Option<Vec<String>>,
    /// Total size in the unit.
    #[arg(long)]
    target: Option<u64>,
    /// Most samples per task.
    #[arg(long)]
    task_cap: Option<u64>,
    /// Sampling temperature across tasks.
    #[arg(long)]
    temperature: Option<f64>,
    /// Most epochs of any task.
    #[arg(long)]
    max_repeats: Option<f64>,
    /// cpt: share of SFT-formatted samples.
    #[arg(long)]
    instruct_share: Option<f64>,
}

#[derive(Subcommand)]
enum MixCommand {
    /// What a mix would select, from the catalog alone: per pool available and selected samples
    /// and tokens, repeats, shares, warnings and example ids.
    Preview {
        #[command(flatten)]
        args: MixArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the mix: read the pools' curated files and run a mix stage over them.
    Run {
        #[command(flatten)]
        args: MixArgs,
        /// Output run directory.
        #[arg(long)]
        out: PathBuf,
        /// Seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// tokenizer.json for token counts (default: the approximation).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
}

#[derive(Subcommand)]
enum Inspect {
    /// Counts, a token-length histogram and a decoded sample (masked tokens marked) of a shard
    /// directory.
    Shards {
        /// The directory with manifest.json.
        dir: PathBuf,
        /// Split to show a sample from.
        #[arg(long, default_value = "train")]
        split: String,
        /// Which sequence of the split's first shard to decode.
        #[arg(long, default_value_t = 0)]
        sample: usize,
        /// Tokenizer to decode with (default: the one recorded in the manifest).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
    },
    /// What a run dropped (stage, reason, detail) and, with --pipeline, what its rewriting
    /// stages (filler, pii, rules, truncate…) changed, as word diffs: [-removed-] {+added+}.
    Run {
        /// The run directory (with report.json and dropped/).
        dir: PathBuf,
        /// Only this stage: its index, type or key (`2`, `filler`, `stages[2].filler`).
        #[arg(long)]
        stage: Option<String>,
        /// Only drops with this reason code (`duplicate`, `too_short`, `dup_ngrams`…).
        #[arg(long)]
        reason: Option<String>,
        /// Only this sample.
        #[arg(long)]
        id: Option<String>,
        /// The pipeline the run came from: its inputs are read again to show each rewriting
        /// stage's before and after.
        #[arg(long)]
        pipeline: Option<PathBuf>,
        /// Most samples shown.
        #[arg(long, default_value_t = 10)]
        limit: usize,
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
    /// Training tokens/s on CPU for a small Llama-shaped model (compare with
    /// trainer/bench/torch_step.py on the same folder).
    Train(train_cmd::BenchTrainArgs),
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
    /// MinHash signatures per second on one core (128 permutations, 5-gram shingles).
    Minhash {
        /// Input file (any format sluice reads).
        #[arg(long)]
        input: PathBuf,
        /// At most this many samples.
        #[arg(long)]
        limit: Option<usize>,
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
            limit,
            task_index,
            tasks,
            work,
            task_timeout,
        } => {
            if limit == Some(0) {
                bail!("--limit must be at least 1 record");
            }
            if limit.is_some() && (task_index.is_some() || tasks.is_some()) {
                bail!("--limit is a trial in one process: it does not combine with --tasks");
            }
            if let Some(r) = max_reject_ratio {
                if !(0.0..=1.0).contains(&r) {
                    bail!("--max-reject-ratio {r} is not a share between 0 and 1");
                }
            }
            let mut plan = config::load(&pipeline)?;
            // `--out s3://…`: build in a local staging folder, upload when published.
            let out = match out {
                Some(o) if sluice_pipeline::remote::is_url(&o.to_string_lossy()) => {
                    let url = o.to_string_lossy().into_owned();
                    plan.output_dir = sluice_pipeline::remote::staging_dir(&url);
                    plan.output_url = Some(url);
                    None
                }
                o => o,
            };
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
            // A trial never replaces the real run, and stays out of the catalog.
            let out = match (limit, out) {
                (Some(_), None) if plan.output_url.is_none() => {
                    let mut trial = plan.output_dir.as_os_str().to_owned();
                    trial.push(".trial");
                    Some(PathBuf::from(trial))
                }
                (_, o) => o,
            };
            let out_dir = out.clone().unwrap_or_else(|| plan.output_dir.clone());
            let spec = sluice_pipeline::tasks::TaskSpec::resolve(task_index, tasks, &|k| {
                std::env::var(k).ok()
            })
            .map_err(anyhow::Error::msg)?;
            let task = if spec.count > 1 {
                let files: Vec<(PathBuf, u64)> = plan
                    .inputs
                    .iter()
                    .flat_map(|i| &i.files)
                    .map(|(p, _)| (p.clone(), std::fs::metadata(p).map_or(0, |m| m.len())))
                    .collect();
                let text = std::fs::read(&pipeline)
                    .with_context(|| format!("reading {}", pipeline.display()))?;
                let key = sluice_pipeline::tasks::run_key(&text, &files, spec.count, &out_dir);
                let work = work.unwrap_or_else(|| {
                    let mut w = out_dir.as_os_str().to_owned();
                    w.push(".tasks");
                    PathBuf::from(w)
                });
                let work_s = work.to_string_lossy().into_owned();
                // A URL work folder (tasks without a shared filesystem): local scratch in the
                // cache, shared files under the URL.
                let (local, shared) = if sluice_pipeline::remote::is_url(&work_s) {
                    (
                        sluice_pipeline::remote::cache_dir()
                            .join("work")
                            .join(&key[..16]),
                        Some(format!("{}/{}", work_s.trim_end_matches('/'), &key[..16])),
                    )
                } else {
                    (work.join(&key[..16]), None)
                };
                Some(engine::TaskRun {
                    spec,
                    work: local,
                    run_key: key,
                    timeout: std::time::Duration::from_secs(task_timeout),
                    shared,
                })
            } else {
                None
            };
            let task_no = task.as_ref().map(|t| t.spec);
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
                cancel: None,
                task,
                limit,
            };
            let result = engine::run(&plan, opts);
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            match result {
                Ok(report) => {
                    if quiet {
                    } else if let Some(s) = task_no.filter(|s| s.index != 0) {
                        eprintln!(
                            "task {} of {}: its part is done ({} records read); task 0 publishes {}",
                            s.index,
                            s.count,
                            report.totals.read,
                            out_dir.display()
                        );
                    } else {
                        eprint!("{}", report.summary());
                        if let Some(n) = limit {
                            eprintln!(
                                "  trial: at most the first {n} records of each input were read"
                            );
                        }
                        match &plan.output_url {
                            Some(url) => eprintln!("  outputs in {url}"),
                            None => eprintln!("  outputs in {}", out_dir.display()),
                        }
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
        Command::Catalog {
            root,
            by,
            filter,
            runs: chosen,
            json,
        } => {
            let by: Vec<String> = by.into_iter().filter(|b| !b.is_empty()).collect();
            let chosen = chosen.as_deref();
            let loaded = catalog::load_versioned(&root, chosen).map_err(anyhow::Error::msg)?;
            let runs = catalog::runs(&root, chosen).map_err(anyhow::Error::msg)?;
            let table = catalog::summary(&root, chosen, &by, filter.as_deref())
                .map_err(anyhow::Error::msg)?;
            let total = catalog::summary(&root, chosen, &[], filter.as_deref())
                .map_err(anyhow::Error::msg)?;
            let mut out = std::io::stdout().lock();
            if json {
                let v = serde_json::json!({
                    "runs": runs,
                    "by": by,
                    "groups": catalog::frame_json(&table),
                    "total": catalog::frame_json(&total),
                    "warnings": loaded.warnings,
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                let methods = catalog::token_methods(&loaded.frame).unwrap_or_default();
                writeln!(
                    out,
                    "catalog {}: {} run{} counted",
                    root.display(),
                    runs.len(),
                    if runs.len() == 1 { "" } else { "s" }
                )?;
                if methods.len() > 1 {
                    writeln!(
                        out,
                        "warning: runs counted tokens differently ({}): token totals mix units",
                        methods.join(", ")
                    )?;
                }
                for r in &runs {
                    writeln!(out, "  {:<30} run {:<24} {}", r.path, r.run, r.files)?;
                }
                writeln!(out)?;
                write!(out, "{}", table::text_table(&table))?;
                writeln!(out)?;
                write!(out, "{}", table::text_table(&total))?;
                for w in &loaded.warnings {
                    writeln!(out, "warning: {w}")?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Mix { what } => mix_command(what),
        Command::Train { what } => train_cmd::run(what),
        Command::Bench {
            what: Bench::Train(args),
        } => {
            train_cmd::bench_train(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config, hash_token } => {
            if let Some(t) = hash_token {
                writeln!(
                    std::io::stdout(),
                    "{}",
                    sluice_server::config::hash_token(&t)
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            let path = config.context("--config is required")?;
            let cfg = sluice_server::ServerConfig::load(&path)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(sluice_server::serve(cfg))?;
            Ok(ExitCode::SUCCESS)
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
        Command::Inspect {
            what:
                Inspect::Shards {
                    dir,
                    split,
                    sample,
                    tokenizer,
                },
        } => {
            inspect_shards(&dir, &split, sample, tokenizer.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect {
            what:
                Inspect::Run {
                    dir,
                    stage,
                    reason,
                    id,
                    pipeline,
                    limit,
                },
        } => {
            inspect_cmd::inspect_run(
                &dir,
                stage.as_deref(),
                reason.as_deref(),
                id.as_deref(),
                pipeline.as_deref(),
                limit,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Classifier { what } => {
            classifier_command(what)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what: Bench::Stages { pipeline, repeat },
        } => {
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
        Command::Bench {
            what:
                Bench::Preview {
                    dir,
                    runs,
                    samples,
                    repeat,
                },
        } => {
            bench_preview(&dir, runs, samples, repeat)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                Bench::Serve {
                    dir,
                    runs,
                    previews,
                    jobs,
                    concurrency,
                },
        } => {
            bench_serve(&dir, runs, previews, jobs, concurrency)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                Bench::Mix {
                    dir,
                    samples,
                    threads,
                },
        } => {
            bench_mix(&dir, samples, threads)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                Bench::Fuzz {
                    seconds,
                    seed,
                    seeds,
                },
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
        Command::Bench {
            what: Bench::Minhash { input, limit },
        } => {
            bench_minhash(&input, limit)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                Bench::Tokenize {
                    input,
                    tokenizer,
                    template,
                    repeat,
                    dump_rendered,
                },
        } => {
            bench_tokenize(
                &input,
                &tokenizer,
                &template,
                repeat.max(1),
                dump_rendered.as_deref(),
            )?;
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

/// The mix spec from `--config` and flags.
fn mix_spec(a: &MixArgs) -> Result<MixSpec> {
    let mut spec = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str::<MixSpec>(&text).with_context(|| format!("parsing {}", p.display()))?
        }
        None => {
            let (Some(domain), Some(ratio)) = (&a.domain, &a.ratio) else {
                bail!("give --domain and --ratio (or --config with a mix file)");
            };
            let mode = match a.mode.as_deref() {
                Some("cpt") => MixMode::Cpt,
                _ => MixMode::Sft,
            };
            MixSpec::for_domain(
                domain,
                Ratio::parse(ratio).map_err(anyhow::Error::msg)?,
                mode,
            )
        }
    };
    if let (Some(d), Some(_)) = (&a.domain, &a.config) {
        spec.pools.domain = Some(PoolSpec {
            domain: vec![d.clone()],
            ..spec.pools.domain.clone().unwrap_or_default()
        });
    }
    if let Some(r) = &a.ratio {
        spec.ratio = Ratio::parse(r).map_err(anyhow::Error::msg)?;
    }
    if let Some(m) = &a.mode {
        spec.mode = match m.as_str() {
            "sft" => MixMode::Sft,
            "cpt" => MixMode::Cpt,
            _ => bail!("--mode {m:?}: expected sft or cpt"),
        };
    }
    if let Some(u) = &a.unit {
        spec.unit = Some(match u.as_str() {
            "samples" => MixUnit::Samples,
            "tokens" => MixUnit::Tokens,
            _ => bail!("--unit {u:?}: expected samples or tokens"),
        });
    }
    if let Some(w) = &a.filter {
        spec.add_filter(w);
    }
    spec.target = a.target.or(spec.target);
    spec.task_cap = a.task_cap.or(spec.task_cap);
    spec.temperature = a.temperature.unwrap_or(spec.temperature);
    spec.max_repeats = a.max_repeats.unwrap_or(spec.max_repeats);
    spec.instruct_share = a.instruct_share.unwrap_or(spec.instruct_share);
    let problems = spec.validate();
    if !problems.is_empty() {
        bail!("the mix is not valid: {}", problems.join("; "));
    }
    Ok(spec)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn bench_preview(dir: &std::path::Path, runs: usize, samples: u64, repeat: usize) -> Result<()> {
    let t = std::time::Instant::now();
    if catalog::catalog_files(dir).len() != runs {
        let _ = std::fs::remove_dir_all(dir);
        let rows = sluice_pipeline::bench::synthetic_catalog(dir, runs, samples)
            .map_err(anyhow::Error::msg)?;
        eprintln!(
            "generated {runs} catalog files, {rows} rows, in {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
    let spec = MixSpec::for_domain(
        "finance",
        Ratio::parse("0.15").map_err(anyhow::Error::msg)?,
        MixMode::Cpt,
    );
    let mut filtered = spec.clone();
    filtered.add_filter("region = 'east' AND age_group <> '<18'");
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<44} {:>9} {:>9} {:>9}",
        "query", "min ms", "p50 ms", "max ms"
    )?;
    let t = std::time::Instant::now();
    let rows = catalog::load(dir, None)
        .map_err(anyhow::Error::msg)?
        .height();
    writeln!(
        std::io::stdout(),
        "{:<44} {:>9.1}   ({rows} rows; later calls reuse it until a catalog file changes)",
        "cold load: read every catalog file",
        t.elapsed().as_secs_f64() * 1e3
    )?;
    let mut time = |name: &str, f: &dyn Fn() -> Result<()>| -> Result<()> {
        let mut ms = Vec::new();
        for _ in 0..repeat.max(1) {
            let t = std::time::Instant::now();
            f()?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        writeln!(
            out,
            "{name:<44} {:>9.1} {:>9.1} {:>9.1}",
            ms[0],
            percentile(&ms, 0.5),
            ms[ms.len() - 1]
        )?;
        Ok(())
    };
    time("baseline: sum(samples, tokens) by domain", &|| {
        catalog::summary(dir, None, &["domain".to_string()], None).map_err(anyhow::Error::msg)?;
        Ok(())
    })?;
    time("preview cpt finance 0.15", &|| {
        let p = catalog::preview(dir, None, &spec).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(p.pools[0].available_samples > 0);
        Ok(())
    })?;
    time("preview cpt finance 0.15 where region/age", &|| {
        catalog::preview(dir, None, &filtered).map_err(anyhow::Error::msg)?;
        Ok(())
    })?;
    let p = catalog::preview(dir, None, &spec).map_err(anyhow::Error::msg)?;
    let described: u64 = p.pools.iter().map(|p| p.available_samples).sum();
    writeln!(
        out,
        "catalog: {} files; pools see {described} samples",
        catalog::catalog_files(dir).len()
    )?;
    Ok(())
}

fn bench_serve(
    dir: &std::path::Path,
    runs: usize,
    previews: usize,
    jobs: usize,
    concurrency: usize,
) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let data = dir.join("data");
    let out = dir.join("out");
    std::fs::create_dir_all(&data)?;
    sluice_pipeline::bench::synthetic_samples(&data.join("logs.jsonl"), 100)
        .map_err(anyhow::Error::msg)?;
    sluice_pipeline::bench::synthetic_catalog(&out, runs, runs as u64 * 10_000)
        .map_err(anyhow::Error::msg)?;
    let token = "load-test-token";
    let mut cfg = sluice_server::ServerConfig {
        listen: "127.0.0.1:0".into(),
        data_roots: vec![data.clone()],
        output_root: out,
        concurrency: 1,
        threads_per_job: Some(1),
        queue_limit: (jobs as i64).max(1) * 2,
        body_limit: 1 << 20,
        tokens: vec![sluice_server::config::TokenSpec {
            name: "load".into(),
            sha256: sluice_server::config::hash_token(token),
            scope: sluice_server::config::Scope::Write,
        }],
        timezone: None,
        allowed_urls: Vec::new(),
        max_glob_files: 100_000,
        min_schedule_interval: 60,
        anonymous_read: false,
    };
    cfg.check()?;
    let state = sluice_server::State::open(cfg)?;
    let input = data.join("logs.jsonl").display().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let phases = rt.block_on(sluice_server::loadtest::run(
        state,
        token,
        &input,
        previews,
        jobs,
        concurrency,
    ))?;
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "{:<32} {:>8} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "phase", "requests", "errors", "seconds", "req/s", "p50 ms", "p99 ms", "max ms"
    )?;
    for p in &phases {
        writeln!(
            o,
            "{:<32} {:>8} {:>7} {:>8.2} {:>9.0} {:>9.2} {:>9.2} {:>9.2}",
            p.name,
            p.requests,
            p.errors,
            p.seconds,
            p.requests as f64 / p.seconds.max(1e-9),
            p.p50_ms,
            p.p99_ms,
            p.max_ms
        )?;
    }
    writeln!(
        o,
        "catalog: {runs} runs, {} rows; concurrency {concurrency}",
        runs * 800
    )?;
    Ok(())
}

fn bench_mix(dir: &std::path::Path, samples: u64, threads: Option<usize>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let input = dir.join(format!("samples-{samples}.jsonl"));
    if !input.is_file() {
        sluice_pipeline::bench::synthetic_samples(&input, samples).map_err(anyhow::Error::msg)?;
    }
    let inputs = format!("[[inputs]]\npaths = [{:?}]\n", input.display().to_string());
    let output = "[output]\ndir = \"out\"\nformats = [\"jsonl\"]\n";
    let stage =
        "[[stages]]\ntype = \"mix\"\nratio = \"1:5\"\npools.domain = { domain = \"finance\" }\n";
    let base = format!("{inputs}{output}");
    let with_mix = format!("{inputs}{stage}{output}");
    let mut out = std::io::stdout().lock();
    let mut base_rate = 0.0;
    for (name, text) in [("baseline: read + write", base), ("mix 1:5", with_mix)] {
        let cfg = dir.join("bench.toml");
        sluice_pipeline::storage::write_atomic(&cfg, text.as_bytes())?;
        let plan = config::load(&cfg)?;
        let t = std::time::Instant::now();
        let report = engine::run(
            &plan,
            engine::RunOptions {
                threads,
                output_dir: Some(dir.join("out")),
                ..Default::default()
            },
        )?;
        let secs = t.elapsed().as_secs_f64();
        let rate = samples as f64 / secs;
        if base_rate == 0.0 {
            base_rate = rate;
        }
        writeln!(
            out,
            "{name:<24} {secs:>7.2}s {rate:>12.0} samples/s {:>6.2}× baseline  (kept {}, copies {}, threads {})",
            rate / base_rate,
            report.totals.kept,
            report.totals.copies,
            report.timings.threads
        )?;
        if let Some(cpu) = report.timings.stage_cpu_seconds.get("stages[0].mix") {
            writeln!(
                out,
                "{:<24} mix stage alone: {cpu:.2} CPU s, {:.0} samples/s",
                "",
                samples as f64 / cpu.max(1e-9)
            )?;
        }
    }
    Ok(())
}

fn mix_command(what: MixCommand) -> Result<ExitCode> {
    match what {
        MixCommand::Preview { args, json } => {
            let spec = mix_spec(&args)?;
            let t = std::time::Instant::now();
            let plan = catalog::preview(&args.catalog, args.runs.as_deref(), &spec)
                .map_err(anyhow::Error::msg)?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&plan)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            let unit = match plan.unit {
                MixUnit::Samples => "samples",
                MixUnit::Tokens => "tokens",
            };
            writeln!(
                out,
                "mix preview ({}, quotas in {unit}, total {:.0}; {ms:.1} ms)",
                match plan.mode {
                    MixMode::Sft => "sft",
                    MixMode::Cpt => "cpt",
                },
                plan.total
            )?;
            writeln!(
                out,
                "{:<9} {:>10} {:>12} {:>12} {:>14} {:>8} {:>8} {:>8}",
                "pool", "avail", "avail_tok", "selected", "selected_tok", "req", "share", "repeat"
            )?;
            for p in &plan.pools {
                writeln!(
                    out,
                    "{:<9} {:>10} {:>12} {:>12.0} {:>14.0} {:>8.4} {:>8.4} {:>8.2}",
                    p.pool.as_str(),
                    p.available_samples,
                    p.available_tokens,
                    p.selected_samples,
                    p.selected_tokens,
                    p.requested_share,
                    p.share,
                    p.repeat
                )?;
                for t in &p.tasks {
                    writeln!(
                        out,
                        "    task {:<24} avail {:>8}  quota {:>12.0}  repeat {:.2}",
                        t.task, t.available_samples, t.quota, t.repeat
                    )?;
                }
                if !p.examples.is_empty() {
                    writeln!(out, "    e.g. {}", p.examples.join(", "))?;
                }
            }
            for w in &plan.warnings {
                writeln!(out, "warning: {w}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        MixCommand::Run {
            args,
            out,
            seed,
            tokenizer,
            threads,
        } => {
            let spec = mix_spec(&args)?;
            let plan = catalog::mix_pipeline(
                &args.catalog,
                args.runs.as_deref(),
                &spec,
                &out,
                seed,
                tokenizer,
            )
            .map_err(anyhow::Error::msg)?;
            // Before the run: its own output joins the catalog once published.
            let overlaps = catalog::load_versioned(&args.catalog, args.runs.as_deref())
                .map(|l| l.warnings)
                .unwrap_or_default();
            let report = match engine::run(
                &plan,
                engine::RunOptions {
                    threads,
                    ..Default::default()
                },
            ) {
                Ok(r) => r,
                Err(e @ Error::TooManyRejects { .. }) => {
                    // The catalog's own files failed to read back: the mix is not published.
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
                Err(e) => return Err(e.into()),
            };
            eprint!("{}", report.summary());
            if let Some(d) = report.stages.iter().find_map(|s| s.details.as_ref()) {
                if let Some(rows) = d.get("achieved").and_then(|a| a.as_array()) {
                    eprintln!(
                        "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7}",
                        "pool", "requested", "achieved", "samples", "distinct", "tokens", "copies"
                    );
                    for r in rows {
                        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
                        eprintln!(
                            "  {:<10} {:>9.4} {:>9.4} {:>9} {:>9} {:>10} {:>7}",
                            r["pool"].as_str().unwrap_or(""),
                            f("requested_share"),
                            f("share"),
                            f("samples"),
                            f("distinct"),
                            f("tokens"),
                            f("max_copies")
                        );
                    }
                }
            }
            for w in &overlaps {
                eprintln!("  warning: {w}");
            }
            eprintln!("  outputs in {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
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

fn inspect_shards(
    dir: &std::path::Path,
    split: &str,
    sample: usize,
    tokenizer: Option<&std::path::Path>,
) -> Result<()> {
    let m = sluice_shards::Manifest::load(dir)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: template {}, tokens {:?}, vocabulary {}, tokenizer sha256 {}…, seed {}{}",
        dir.display(),
        m.template,
        m.dtype,
        m.tokenizer.vocab_size,
        &m.tokenizer.sha256[..m.tokenizer.sha256.len().min(12)],
        m.seed,
        m.seq_len
            .map_or(String::new(), |l| format!(", packed to {l}"))
    )?;
    writeln!(
        out,
        "{:<8} {:>7} {:>9} {:>10} {:>12} {:>12} {:>9} {:>10}",
        "split", "shards", "samples", "sequences", "tokens", "trained", "cut", "turns cut"
    )?;
    for (name, s) in &m.splits {
        writeln!(
            out,
            "{name:<8} {:>7} {:>9} {:>10} {:>12} {:>12} {:>9} {:>10}",
            s.shards.len(),
            s.samples,
            s.sequences,
            s.tokens,
            s.trained_tokens,
            s.truncated_samples,
            s.dropped_turns
        )?;
    }
    let info = m
        .splits
        .get(split)
        .with_context(|| format!("no split {split:?} in {}", dir.display()))?;
    // Sequence lengths in power-of-two buckets, over every shard of the split.
    let mut hist: std::collections::BTreeMap<u32, u64> = Default::default();
    let mut first = None;
    for e in &info.shards {
        let shard = sluice_shards::Shard::open(&dir.join(&e.file))?;
        for i in 0..shard.sequences() {
            let len = shard.sequence(i).map_or(0, |s| s.tokens.len());
            *hist
                .entry(len.max(1).next_power_of_two().trailing_zeros())
                .or_default() += 1;
        }
        first.get_or_insert(shard);
    }
    writeln!(out, "\n{split}: sequence length histogram")?;
    let max = hist.values().copied().max().unwrap_or(1);
    for (b, n) in &hist {
        let lo = if *b == 0 { 0 } else { (1u64 << b) / 2 + 1 };
        writeln!(
            out,
            "  {:>6}..{:<6} {:>8} {}",
            lo,
            1u64 << b,
            n,
            "#".repeat((n * 50 / max) as usize)
        )?;
    }
    let Some(shard) = first else { return Ok(()) };
    let seq = shard.sequence(sample).with_context(|| {
        format!(
            "the first {split} shard has {} sequences",
            shard.sequences()
        )
    })?;
    let tok_path = tokenizer.map(std::path::Path::to_path_buf).or_else(|| {
        m.tokenizer
            .source
            .as_ref()
            .filter(|s| !s.contains(" + "))
            .map(|s| dir.join(s)) // relative to the shards (absolute stays absolute)
    });
    writeln!(
        out,
        "\n{split} sequence {sample} of {} ({} tokens, {} trained, samples start at {:?})",
        info.shards[0].file,
        seq.tokens.len(),
        seq.mask.iter().filter(|&&m| m == 1).count(),
        seq.sample_starts
    )?;
    let colour = std::io::stdout().is_terminal();
    let (open, close) = if colour {
        ("\x1b[2m", "\x1b[0m")
    } else {
        ("⟦", "⟧")
    };
    writeln!(
        out,
        "(masked tokens, not trained, are shown {})\n",
        if colour { "dimmed" } else { "inside ⟦ ⟧" }
    )?;
    let Some(tok_path) = tok_path.filter(|p| p.is_file()) else {
        writeln!(
            out,
            "ids: {:?}\nmask: {:?}\n(pass --tokenizer to decode)",
            seq.tokens, seq.mask
        )?;
        return Ok(());
    };
    let tok = sluice_pipeline::tokenize::TokenizerHandle::from_file(&tok_path)
        .map_err(anyhow::Error::msg)?;
    if tok.sha256 != m.tokenizer.sha256 {
        writeln!(
            out,
            "warning: {} is not the tokenizer these shards were made with",
            tok_path.display()
        )?;
    }
    let mut start = 0;
    while start < seq.tokens.len() {
        let trained = seq.mask[start] == 1;
        let end = (start..seq.tokens.len())
            .find(|&i| (seq.mask[i] == 1) != trained)
            .unwrap_or(seq.tokens.len());
        let text = tok
            .decode(&seq.tokens[start..end])
            .map_err(anyhow::Error::msg)?;
        if trained {
            write!(out, "{text}")?;
        } else {
            write!(out, "{open}{text}{close}")?;
        }
        start = end;
    }
    writeln!(out)?;
    Ok(())
}

fn bench_tokenize(
    input: &std::path::Path,
    tokenizer: &std::path::Path,
    template: &str,
    repeat: usize,
    dump: Option<&std::path::Path>,
) -> Result<()> {
    use sluice_pipeline::tokenize::{
        encode_sample, render_text, Budget, Template, TokenizerHandle, TrainOn,
    };
    let (samples, rejected) = sluice_pipeline::bench::read_samples(input)?;
    if rejected > 0 {
        writeln!(
            std::io::stderr(),
            "note: {rejected} records of {} could not be read and are not measured",
            input.display()
        )?;
    }
    let tok = TokenizerHandle::from_file(tokenizer).map_err(anyhow::Error::msg)?;
    let tpl = Template::load(template).map_err(anyhow::Error::msg)?;
    let rendered: Vec<String> = samples.iter().map(|s| render_text(&tpl, None, s)).collect();
    if let Some(path) = dump {
        sluice_pipeline::storage::write_atomic(path, &serde_json::to_vec(&rendered)?)?;
    }
    let dtype = sluice_shards::TokenDtype::for_vocab(tok.vocab_size);
    let (mut best_full, mut best_plain, mut tokens) = (f64::MAX, f64::MAX, 0usize);
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for _ in 0..repeat {
        let t = std::time::Instant::now();
        let mut builder = sluice_shards::ShardBuilder::new(dtype);
        tokens = 0;
        for s in &samples {
            let e = encode_sample(
                &tok,
                &tpl,
                None,
                s,
                Budget::default(),
                TrainOn::AllAssistant,
            )
            .map_err(anyhow::Error::msg)?;
            tokens += e.ids.len();
            builder.push_sequence(&e.ids, &e.mask)?;
        }
        sluice_shards::native::write_shard(&mut builder, &dir.join("bench.bin"))?;
        best_full = best_full.min(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        let mut plain = 0usize;
        for r in &rendered {
            plain += tok.encode(r).map_err(anyhow::Error::msg)?.len();
        }
        best_plain = best_plain.min(t.elapsed().as_secs_f64());
        if plain != tokens {
            writeln!(
                std::io::stderr(),
                "note: whole-string encoding gives {plain} tokens, segment encoding {tokens}"
            )?;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let n = tokens as f64;
    writeln!(
        std::io::stdout(),
        "{} samples, {} tokens, one core, best of {repeat}:\n  sluice template + tokenize + mask + shard write: {:>10.0} tokens/s\n  tokenizers encode of the rendered strings:       {:>10.0} tokens/s\n  ratio {:.2}",
        samples.len(),
        tokens,
        n / best_full,
        n / best_plain,
        best_plain / best_full
    )?;
    Ok(())
}

fn bench_minhash(input: &std::path::Path, limit: Option<usize>) -> Result<()> {
    use sluice_pipeline::stages::minhash::MinHasher;
    let (mut samples, rejected) = sluice_pipeline::bench::read_samples(input)?;
    if let Some(n) = limit {
        samples.truncate(n);
    }
    let texts: Vec<String> = samples
        .iter()
        .map(|s| sluice_pipeline::stages::exact_dedup::Scope::All.text(s))
        .collect();
    let h = MinHasher::new(0.8, 128, 5, None, 1);
    let t = std::time::Instant::now();
    let mut sink = 0u64;
    for text in &texts {
        if let Some(sig) = h.signature(text) {
            sink = sink.wrapping_add(u64::from(sig[0]));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
    writeln!(
        std::io::stdout(),
        "{} samples ({rejected} unreadable), avg {:.0} chars, one core: {:.0} signatures/s ({:.1} MB/s of text), 128 permutations, 5-gram shingles, bands×rows {}×{} (checksum {sink})",
        texts.len(),
        chars as f64 / texts.len().max(1) as f64,
        texts.len() as f64 / secs,
        texts.iter().map(String::len).sum::<usize>() as f64 / 1e6 / secs,
        h.bands,
        h.rows
    )?;
    Ok(())
}
