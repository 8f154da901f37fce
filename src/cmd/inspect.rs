//! `sluice inspect shards` and `sluice inspect run`: look inside outputs.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use sluice_pipeline::config;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// `sluice inspect run`: dropped samples, then (with a pipeline) rewrites as word diffs.
pub fn inspect_run(
    dir: &std::path::Path,
    stage: Option<&str>,
    reason: Option<&str>,
    id: Option<&str>,
    pipeline: Option<&std::path::Path>,
    limit: usize,
) -> Result<()> {
    use sluice_pipeline::inspect;
    if !dir.join("report.json").is_file() {
        bail!("{}: not a run directory (no report.json)", dir.display());
    }
    let mut out = std::io::stdout().lock();
    let (drops, matched) =
        inspect::dropped(dir, stage, reason, id, limit).map_err(anyhow::Error::msg)?;
    if matched > 0 || reason.is_some() {
        writeln!(
            out,
            "dropped: {matched} sample(s) match; showing {}",
            drops.len()
        )?;
    }
    for d in &drops {
        writeln!(
            out,
            "\n{}  {}  {}",
            d.sample["id"].as_str().unwrap_or(""),
            d.stage,
            d.reason
        )?;
        if let Some(detail) = &d.detail {
            writeln!(out, "  why: {detail}")?;
        }
        if let Some(first) = &d.duplicate_of {
            writeln!(out, "  duplicate of: {first}")?;
        }
        let text = d.sample["text"].as_str().map(str::to_string).or_else(|| {
            d.sample["turns"].as_array().map(|ts| {
                ts.iter()
                    .map(|t| {
                        format!(
                            "{}: {}",
                            t["role"].as_str().unwrap_or(""),
                            t["content"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
        });
        if let Some(t) = text {
            let short: String = t.chars().take(160).collect();
            let more = if t.chars().count() > 160 { "…" } else { "" };
            writeln!(out, "  {short}{more}")?;
        }
    }
    match pipeline {
        Some(p) => {
            let plan = config::load(p)?;
            let rewrites =
                inspect::rewrites(&plan, stage, id, limit).map_err(anyhow::Error::msg)?;
            if reason.is_none() {
                writeln!(
                    out,
                    "\nrewrites (read again from {}): {} shown",
                    p.display(),
                    rewrites.len()
                )?;
                for r in &rewrites {
                    writeln!(out, "\n{}  {}", r.id, r.stage)?;
                    for (part, diff) in &r.changes {
                        writeln!(out, "  {part}: {diff}")?;
                    }
                    if let Some(why) = &r.dropped {
                        writeln!(out, "  dropped here: {why}")?;
                    }
                }
            }
        }
        None if reason.is_none() => writeln!(
            out,
            "\n(add --pipeline FILE to see what the rewriting stages changed, as word diffs)"
        )?,
        None => {}
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum Inspect {
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
    /// Diversity and balance of a run's curated samples: per domain and task the counts,
    /// lengths, turns, difficulty, instruction types; near-duplicate clusters; topic clusters;
    /// warnings when one dominates. Writes diversity.json.
    Diversity {
        /// The run directory (with curated/).
        dir: PathBuf,
        /// Only this split (and its `<split>_*` parts); default every curated file.
        #[arg(long)]
        split: Option<String>,
        /// Samples in the topic sample at most.
        #[arg(long, default_value_t = 5000)]
        sample: usize,
        /// Topic clusters.
        #[arg(long, default_value_t = 8)]
        k: usize,
        /// Warn when a domain, task or cluster holds more than this share.
        #[arg(long, default_value_t = 0.5)]
        max_share: f64,
        /// Seed of the topic sample and k-means.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where diversity.json goes (default: the run directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Run it.
pub fn run(what: Inspect) -> Result<ExitCode> {
    match what {
        Inspect::Shards {
            dir,
            split,
            sample,
            tokenizer,
        } => {
            inspect_shards(&dir, &split, sample, tokenizer.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Inspect::Run {
            dir,
            stage,
            reason,
            id,
            pipeline,
            limit,
        } => {
            inspect_run(
                &dir,
                stage.as_deref(),
                reason.as_deref(),
                id.as_deref(),
                pipeline.as_deref(),
                limit,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Inspect::Diversity {
            dir,
            split,
            sample,
            k,
            max_share,
            seed,
            out,
        } => {
            let d = sluice_lab::diversity::compute(&sluice_lab::diversity::Options {
                run: dir.clone(),
                split,
                sample,
                k,
                max_share,
                seed,
            })?;
            let path = sluice_lab::diversity::write(out.as_deref().unwrap_or(&dir), &d)?;
            print_diversity(&d)?;
            println!("all of it in {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_diversity(d: &sluice_lab::diversity::Diversity) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<28} {:>7} {:>6} {:>8} {:>8} {:>7} {:>6} {:>18}  top instruction types",
        "domain / task",
        "samples",
        "share",
        "chars50",
        "chars90",
        "turns",
        "rare",
        "easy/medium/hard"
    )?;
    for g in d.groups.iter().chain(std::iter::once(&d.overall)) {
        let turns: f64 = g
            .turns
            .iter()
            .map(|(t, c)| *t as f64 * *c as f64)
            .sum::<f64>()
            / g.count.max(1) as f64;
        let diff = |k: &str| g.difficulty.get(k).copied().unwrap_or(0);
        writeln!(
            out,
            "{:<28} {:>7} {:>5.0}% {:>8.0} {:>8.0} {:>7.1} {:>5.1}% {:>18}  {}",
            format!("{} / {}", g.domain, g.task),
            g.count,
            g.share * 100.0,
            g.chars.p50,
            g.chars.p90,
            turns,
            g.rare_share.mean * 100.0,
            format!("{}/{}/{}", diff("easy"), diff("medium"), diff("hard")),
            g.instruction_types
                .iter()
                .take(4)
                .map(|(t, c)| format!("{t} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    let c = &d.duplicate_clusters;
    writeln!(
        out,
        "near-duplicate clusters ({}, {} samples): {}",
        c.from,
        c.samples,
        c.sizes
            .iter()
            .map(|(s, n)| format!("size {s}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(out, "topics ({} samples):", d.topic_sample)?;
    for (i, t) in d.topics.iter().enumerate() {
        writeln!(
            out,
            "  {:>2}. {:>5} ({:>4.1}%)  {}  e.g. {}",
            i + 1,
            t.size,
            t.share * 100.0,
            t.terms.join(" "),
            t.examples.first().cloned().unwrap_or_default()
        )?;
    }
    for w in &d.warnings {
        writeln!(out, "warning: {w}")?;
    }
    Ok(())
}

pub fn inspect_shards(
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
