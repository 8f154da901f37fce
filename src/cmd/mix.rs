//! `sluice mix preview` and `sluice mix run`.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use sluice_pipeline::mix::{MixMode, MixSpec, MixUnit, PoolSpec, Ratio};
use sluice_pipeline::{catalog, engine, Error};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct MixArgs {
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
pub enum MixCommand {
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

/// The mix spec from `--config` and flags.
pub fn mix_spec(a: &MixArgs) -> Result<MixSpec> {
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

pub fn mix_command(what: MixCommand) -> Result<ExitCode> {
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
