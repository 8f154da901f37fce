//! `sluice ablate run ABLATE.toml`: from mix to outcome (the work is [`sluice_lab::ablate`]).
//! This file reads the ablation file, runs it with the pipeline compiled as `sluice run`
//! compiles it, and prints the table and the reasoning.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sluice_lab::ablate::{Ablation, Grid, Host, Settings, MAX_POINTS};
use sluice_trainer::TrainConfig;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `sluice ablate` subcommands.
#[derive(clap::Subcommand)]
pub enum AblateCommand {
    /// Run every grid point (mix, train, evaluate; finished points are kept) and recommend one.
    Run {
        /// The ablation file.
        config: PathBuf,
    },
    /// Check an ablation file and list its points and what each has done, running nothing.
    Plan {
        /// The ablation file.
        config: PathBuf,
    },
}

/// The ablation file: where things are, and the settings ([`Settings`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AblateFile {
    /// Name in reports (default: the file's stem).
    #[serde(default)]
    name: Option<String>,
    /// Where the points and results go.
    output: PathBuf,
    /// The pipeline file: a `split` stage, a `mix` stage with `holdout` and
    /// `holdout_split_by_pool = true`, and `[output.shards]`.
    pipeline: PathBuf,
    /// The train file (model, optimizer, steps, seed); its output and shards are set per point.
    train: PathBuf,
    #[serde(default)]
    eval_split: Option<String>,
    #[serde(default)]
    tolerance: Option<f64>,
    #[serde(default)]
    eval_sequences: usize,
    /// An evaluation folder of `sluice eval build` every trained point is also scored on.
    #[serde(default)]
    eval_set: Option<PathBuf>,
    #[serde(default)]
    eval_limit: Option<usize>,
    #[serde(default)]
    eval_max_new_tokens: Option<usize>,
    grid: Grid,
}

/// The pipeline compiled as `sluice run` compiles it (paths relative to its file); the train
/// file as `sluice train run` loads it.
struct CliHost {
    pipeline: PathBuf,
    train: PathBuf,
}

impl Host for CliHost {
    fn compile(&self, text: &str, _output: &Path) -> Result<sluice_pipeline::config::Plan> {
        sluice_pipeline::config::parse(text, &self.pipeline)
            .with_context(|| format!("pipeline = {}", self.pipeline.display()))
    }

    fn train_config(&self) -> Result<TrainConfig> {
        TrainConfig::load(&self.train).with_context(|| format!("train = {}", self.train.display()))
    }

    fn say(&self, line: &str) {
        eprintln!("{line}");
    }
}

/// Load and check an ablation file; paths become relative to its folder.
fn load(path: &Path) -> Result<(Ablation, CliHost)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut f: AblateFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in [&mut f.output, &mut f.pipeline, &mut f.train]
        .into_iter()
        .chain(f.eval_set.as_mut())
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    let mut settings = Settings::new(f.grid);
    settings.name = f
        .name
        .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()));
    if let Some(s) = f.eval_split {
        settings.eval_split = s;
    }
    if let Some(t) = f.tolerance {
        settings.tolerance = t;
    }
    settings.eval_sequences = f.eval_sequences;
    settings.eval_set = f.eval_set;
    if let Some(n) = f.eval_limit {
        settings.eval_limit = n;
    }
    if let Some(n) = f.eval_max_new_tokens {
        settings.eval_max_new_tokens = n;
    }
    let problems = settings.problems(MAX_POINTS);
    if !problems.is_empty() {
        bail!("{}: {}", path.display(), problems.join("; "));
    }
    let pipeline_text = std::fs::read_to_string(&f.pipeline)
        .with_context(|| format!("pipeline = {}", f.pipeline.display()))?;
    let train_text = std::fs::read_to_string(&f.train)
        .with_context(|| format!("train = {}", f.train.display()))?;
    let ablation = Ablation {
        settings,
        output: f.output,
        pipeline_text,
        train_text,
    };
    let host = CliHost {
        pipeline: f.pipeline,
        train: f.train,
    };
    for w in ablation.check(&host)? {
        eprintln!("warning: {w}");
    }
    Ok((ablation, host))
}

/// Run a `sluice ablate` subcommand.
pub fn run(cmd: AblateCommand) -> Result<ExitCode> {
    let config = match cmd {
        AblateCommand::Run { config } => config,
        AblateCommand::Plan { config } => {
            let (a, host) = load(&config)?;
            let status = a.status()?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{} points; each: {}, then {}; evaluated on {}_domain and {}_general",
                status.len(),
                host.pipeline.display(),
                host.train.display(),
                a.settings.eval_split,
                a.settings.eval_split
            )?;
            for p in &status {
                writeln!(
                    out,
                    "  {:<32} {}",
                    p.label,
                    if p.result.is_some() { "done" } else { "to run" }
                )?;
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let (a, host) = load(&config)?;
    let outcome = a.run(&host)?;
    let results = &outcome.points;
    let rec = &outcome.recommendation;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<28} {:>11} {:>12} {:>11} {:>12} {:>9} {:>8}",
        "point", "domain loss", "general loss", "forgetting", "mix d/g", "tokens", "time s"
    )?;
    for r in results {
        writeln!(
            out,
            "{:<28} {:>11.4} {:>12.4} {:>+10.1}% {:>12} {:>9} {:>8.0}",
            r.label,
            r.domain_loss,
            r.general_loss,
            r.forgetting_share * 100.0,
            format!(
                "{}/{}",
                r.mixed_samples.get("domain").copied().unwrap_or(0),
                r.mixed_samples.get("general").copied().unwrap_or(0)
            ),
            r.tokens_seen,
            r.pipeline_seconds + r.train_seconds
        )?;
    }
    if let Some(first) = results.first() {
        writeln!(
            out,
            "base model: domain loss {:.4}, general loss {:.4}",
            first.base_domain_loss, first.base_general_loss
        )?;
    }
    if results.iter().any(|r| r.eval.is_some()) {
        writeln!(
            out,
            "{:<28} {:>10} {:>7} {:>8} {:>6} {:>6}",
            "evaluation set", "perplexity", "BLEU", "ROUGE-L", "acc", "acc_norm"
        )?;
        let f =
            |v: Option<f64>, scale: f64| v.map_or("-".to_string(), |x| format!("{:.2}", x * scale));
        for r in results {
            if let Some(e) = &r.eval {
                writeln!(
                    out,
                    "{:<28} {:>10} {:>7} {:>8} {:>6} {:>6}",
                    r.label,
                    f(e.perplexity, 1.0),
                    f(e.bleu, 1.0),
                    f(e.rouge_l, 100.0),
                    f(e.acc, 100.0),
                    f(e.acc_norm, 100.0)
                )?;
            }
        }
    }
    match &rec.chosen {
        Some(c) => writeln!(out, "recommended: {c}")?,
        None => writeln!(out, "recommended: none")?,
    }
    for line in &rec.reasoning {
        writeln!(out, "  {line}")?;
    }
    writeln!(
        out,
        "results in {} and {}",
        a.output.join("results.json").display(),
        a.output.join("report.html").display()
    )?;
    Ok(ExitCode::SUCCESS)
}
