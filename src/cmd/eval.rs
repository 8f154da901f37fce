//! `sluice eval build` and `sluice eval run` (the work is [`sluice_lab::eval`]).

use anyhow::Result;
use sluice_lab::eval::build::{build, BuildOptions};
use sluice_lab::eval::mc::McSource;
use sluice_lab::eval::run::{run as run_eval, Group, RunOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// `sluice eval` subcommands.
#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// Build held-out evaluation sets (open and multiple choice) from a curated run, kept apart
    /// from every training split named.
    Build {
        /// The output folder of `sluice run` whose held-out split the sets come from.
        #[arg(long)]
        run: PathBuf,
        /// Where the sets go.
        #[arg(long)]
        out: PathBuf,
        /// The held-out split (its `<split>_*` parts too, e.g. test_domain, test_general).
        #[arg(long, default_value = "test")]
        split: String,
        /// The training split's name in every run.
        #[arg(long, default_value = "train")]
        train_split: String,
        /// Another run whose training split must not leak into the sets (repeatable).
        #[arg(long)]
        against: Vec<PathBuf>,
        /// Your labelled multiple-choice questions, CSV/JSONL/JSON (repeatable); without any,
        /// synthetic ones are made from QA pairs.
        #[arg(long)]
        mc: Vec<PathBuf>,
        /// Domain of `--mc` records that have no `domain`.
        #[arg(long)]
        mc_domain: Option<String>,
        /// Make no synthetic multiple-choice items.
        #[arg(long)]
        no_synthetic: bool,
        /// Options per synthetic item.
        #[arg(long, default_value_t = 4)]
        choices: usize,
        /// Jaccard at which a training sample is a near duplicate of a candidate.
        #[arg(long, default_value_t = 0.7)]
        threshold: f64,
        /// Items per domain and form at most (0: all).
        #[arg(long, default_value_t = 0)]
        max_per_domain: usize,
        /// Seed of sampling and synthetic options.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Score a model (HF layout: config.json, *.safetensors, tokenizer.json) on an evaluation
    /// set: likelihood and perplexity, multiple-choice accuracy, BLEU-4, ROUGE-L, EM, F1.
    Run {
        /// The model folder.
        model: PathBuf,
        /// The evaluation folder (`sluice eval build --out`).
        eval: PathBuf,
        /// Where samples.jsonl and summary.json go.
        #[arg(long)]
        out: PathBuf,
        /// The chat template the model was trained with.
        #[arg(long, default_value = "chatml")]
        template: String,
        /// The tokenizer (default: the model folder's tokenizer.json).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Longest greedy generation in tokens (0: likelihoods only).
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// Items per file at most (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// cpu, cuda, cuda:N or auto.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Tokens of context at most (older turns dropped first, as the shards writer does).
        #[arg(long)]
        max_source_tokens: Option<usize>,
    },
}

fn fmt(v: Option<f64>, scale: f64) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{:.2}", x * scale))
}

fn row(out: &mut impl Write, name: &str, g: &Group) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24} {:>6} {:>9} {:>7} {:>8} {:>6} {:>6} {:>5} {:>6} {:>8}",
        name,
        g.open,
        fmt(g.perplexity, 1.0),
        fmt(g.bleu, 1.0),
        fmt(g.rouge_l, 100.0),
        fmt(g.exact_match, 100.0),
        fmt(g.f1, 100.0),
        g.mc,
        fmt(g.acc, 100.0),
        fmt(g.acc_norm, 100.0),
    )
}

/// Run a `sluice eval` subcommand.
pub fn run(cmd: EvalCommand) -> Result<ExitCode> {
    match cmd {
        EvalCommand::Build {
            run,
            out,
            split,
            train_split,
            against,
            mc,
            mc_domain,
            no_synthetic,
            choices,
            threshold,
            max_per_domain,
            seed,
        } => {
            let m = build(&BuildOptions {
                run,
                split,
                train_split,
                against,
                mc_files: mc,
                mc_source: McSource {
                    domain: mc_domain,
                    task: None,
                },
                synthetic_mc: !no_synthetic,
                choices,
                threshold,
                max_per_domain,
                seed,
                out: out.clone(),
            })?;
            let mut o = std::io::stdout().lock();
            writeln!(
                o,
                "{} held-out samples read ({} labelled questions), {} training samples checked",
                m.candidates, m.labelled_mc, m.training_samples
            )?;
            for (reason, n) in &m.left_out {
                writeln!(o, "  left out, {reason}: {n}")?;
            }
            if m.documents > 0 {
                writeln!(o, "  documents (no dialogue, no item): {}", m.documents)?;
            }
            for (d, tasks) in &m.no_synthetic {
                writeln!(
                    o,
                    "  {d}: no synthetic options for {} (fewer distinct answers than --choices)",
                    tasks.join(", ")
                )?;
            }
            for f in &m.files {
                writeln!(
                    o,
                    "{:<40} {:>6} items{}",
                    f.path,
                    f.items,
                    if f.synthetic > 0 {
                        format!(" ({} synthetic)", f.synthetic)
                    } else {
                        String::new()
                    }
                )?;
            }
            writeln!(
                o,
                "written to {} (manifest.json says how to load them)",
                out.display()
            )?;
        }
        EvalCommand::Run {
            model,
            eval,
            out,
            template,
            tokenizer,
            max_new_tokens,
            limit,
            device,
            max_source_tokens,
        } => {
            let mut last = std::time::Instant::now();
            let s = run_eval(
                &RunOptions {
                    model,
                    eval,
                    out: out.clone(),
                    template,
                    tokenizer,
                    max_new_tokens,
                    limit,
                    device,
                    max_source_tokens,
                },
                &mut |line| {
                    if last.elapsed().as_secs() >= 5 {
                        last = std::time::Instant::now();
                        eprintln!("{line}");
                    }
                },
            )?;
            let mut o = std::io::stdout().lock();
            writeln!(
                o,
                "{:<24} {:>6} {:>9} {:>7} {:>8} {:>6} {:>6} {:>5} {:>6} {:>8}",
                "group", "open", "ppl", "BLEU", "ROUGE-L", "EM", "F1", "mc", "acc", "acc_norm"
            )?;
            row(&mut o, "all", &s.overall)?;
            for (d, g) in &s.by_domain {
                row(&mut o, &format!("domain {d}"), g)?;
            }
            for (t, g) in &s.by_task {
                row(&mut o, &format!("task {t}"), g)?;
            }
            if !s.skipped.is_empty() {
                writeln!(o, "{} items skipped (see summary.json):", s.skipped.len())?;
                for line in s.skipped.iter().take(5) {
                    writeln!(o, "  {line}")?;
                }
            }
            writeln!(
                o,
                "per item: {}; totals: {}",
                out.join("samples.jsonl").display(),
                out.join("summary.json").display()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
