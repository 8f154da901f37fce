//! `sluice bench corpus` writes a long-document corpus; `sluice bench pipeline` runs a pipeline
//! end to end over growing prefixes of its inputs and reports MB/s per core, each stage's share
//! of the CPU time, and peak memory, beside reading alone as the baseline.

use anyhow::{bail, Context, Result};
use sluice_pipeline::bench::corpus::{self, Lang, Spec};
use sluice_pipeline::{config, engine};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `sluice bench corpus`.
#[derive(clap::Args)]
pub struct CorpusArgs {
    /// Where to write the corpus (JSONL).
    #[arg(long)]
    pub out: PathBuf,
    /// `zh` or `en`.
    #[arg(long, default_value = "zh")]
    pub lang: String,
    /// Samples.
    #[arg(long, default_value_t = 100_000)]
    pub docs: usize,
    /// Bytes of content per sample: one number, or a range `500-20000` drawn log-uniformly.
    #[arg(long, default_value = "1900")]
    pub bytes: String,
    /// Share of near duplicates (edited copies of earlier samples).
    #[arg(long, default_value_t = 0.3)]
    pub near_dup: f64,
    /// Plain documents (`{"text"}`) in place of dialogues.
    #[arg(long)]
    pub documents: bool,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Files the sentences come from (default: the bundled examples/data of the language).
    #[arg(long)]
    pub sources: Vec<PathBuf>,
}

fn parse_bytes(s: &str) -> Result<(usize, usize)> {
    let parse = |v: &str| {
        v.trim()
            .parse::<usize>()
            .with_context(|| format!("--bytes {s:?}: a number or a range like 500-20000"))
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => (parse(s)?, parse(s)?),
    };
    if lo == 0 || hi < lo || hi > 10 << 20 {
        bail!("--bytes {s:?}: between 1 and 10 MiB, low end first");
    }
    Ok((lo, hi))
}

/// Write a corpus.
pub fn bench_corpus(a: &CorpusArgs) -> Result<()> {
    let lang: Lang = a.lang.parse().map_err(anyhow::Error::msg)?;
    if !(0.0..1.0).contains(&a.near_dup) {
        bail!("--near-dup {} is not a share in [0, 1)", a.near_dup);
    }
    let sources = if a.sources.is_empty() {
        Spec::default_sources(lang)
    } else {
        a.sources.clone()
    };
    let spec = Spec {
        lang,
        docs: a.docs,
        bytes: parse_bytes(&a.bytes)?,
        near_dup: a.near_dup,
        dialogue: !a.documents,
        seed: a.seed,
        sources,
    };
    let pool = corpus::sentences(lang, &spec.sources).context(
        "reading the sentence sources (run from the repository root, or pass --sources)",
    )?;
    let t = Instant::now();
    let docs = corpus::generate(&spec, &pool);
    let bytes = corpus::write_jsonl(&a.out, &docs)?;
    let dups = docs.iter().filter(|d| d.copy_of.is_some()).count();
    writeln!(
        std::io::stdout(),
        "{}: {} samples ({dups} near duplicates), {:.1} MB, avg {:.0} bytes per line, from {} sentences, in {:.1} s",
        a.out.display(),
        docs.len(),
        bytes as f64 / 1e6,
        bytes as f64 / docs.len().max(1) as f64,
        pool.len(),
        t.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// Process CPU seconds (user + system) from /proc/self/stat; `None` elsewhere.
fn process_cpu() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = &stat[stat.rfind(") ")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Reset the peak resident set (Linux: `5` to clear_refs) so the next reading is this run's.
fn reset_peak_rss() {
    #[allow(clippy::disallowed_methods)] // a kernel control file, not an output
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set in MB since the last reset (VmHWM); `None` off Linux.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

struct Measured {
    records: u64,
    mb: f64,
    wall: f64,
    cpu: Option<f64>,
    rss: Option<f64>,
    report: sluice_pipeline::report::Report,
}

/// Run the pipeline over growing prefixes of its inputs.
pub fn bench_pipeline(pipeline: &Path, threads: usize, scales: &[u64]) -> Result<()> {
    let plan = config::load(pipeline)?;
    let mut scales = scales.to_vec();
    scales.sort_unstable();
    scales.dedup();
    let Some(&top) = scales.last().filter(|&&s| s > 0) else {
        bail!("--scales: positive numbers, e.g. 1,4,16");
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    // The baseline, and the record counts the prefixes are cut from: every input read and
    // converted to samples, with no stage and no output.
    let (mut most, mut base_records, mut base_mb) = (0u64, 0u64, 0.0f64);
    let started = Instant::now();
    for input in &plan.inputs {
        let mut records = 0;
        for (path, _) in &input.files {
            let pass = pool.install(|| sluice_pipeline::bench::sluice_read(path, 4096))?;
            records += pass.records;
            base_mb += std::fs::metadata(path).map_or(0, |m| m.len()) as f64 / 1e6;
        }
        base_records += records;
        most = most.max(records);
    }
    let base_wall = started.elapsed().as_secs_f64();
    let base_per_core = base_mb / base_wall / threads as f64;
    if most == 0 {
        bail!("{}: the inputs hold no records", pipeline.display());
    }
    let scratch = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    let mut runs = Vec::new();
    for &s in &scales {
        let limit = (most * s).div_ceil(top);
        let out = scratch.join(format!("x{s}"));
        reset_peak_rss();
        let cpu0 = process_cpu();
        let t = Instant::now();
        let report = engine::run(
            &plan,
            engine::RunOptions {
                threads: Some(threads),
                max_reject_ratio: None,
                output_dir: Some(out.clone()),
                progress: None,
                cancel: None,
                task: None,
                limit: (s != top).then_some(limit),
            },
        )
        .with_context(|| format!("running {} at scale {s}", pipeline.display()))?;
        let wall = t.elapsed().as_secs_f64();
        let cpu = process_cpu().zip(cpu0).map(|(b, a)| b - a);
        let bytes: f64 = if s == top {
            base_mb
        } else {
            base_mb * report.totals.read as f64 / base_records.max(1) as f64
        };
        runs.push((
            s,
            Measured {
                records: report.totals.read,
                mb: bytes,
                wall,
                cpu,
                rss: peak_rss_mb(),
                report,
            },
        ));
        let _ = std::fs::remove_dir_all(&out);
    }
    let _ = std::fs::remove_dir_all(&scratch);

    let mut o = std::io::stdout();
    writeln!(
        o,
        "{} on {threads} thread(s); baseline: reading + converting alone, {} records, {:.1} MB in {:.2} s = {:.2} MB/s per core",
        pipeline.display(),
        base_records,
        base_mb,
        base_wall,
        base_per_core
    )?;
    writeln!(
        o,
        "{:>8} {:>9} {:>9} {:>8} {:>11} {:>12} {:>9} {:>9}",
        "of input", "records", "MB", "wall s", "MB/s/core", "÷ read rate", "s per MB", "peak MB"
    )?;
    for (s, m) in &runs {
        let per_core = m.mb / m.wall / threads as f64;
        // How much of each input this run read: the largest scale reads all of it.
        let share = if *s == top {
            "all".to_string()
        } else {
            format!("{s}/{top}")
        };
        writeln!(
            o,
            "{:>8} {:>9} {:>9.1} {:>8.2} {:>11.2} {:>12.3} {:>9.3} {:>9}",
            share,
            m.records,
            m.mb,
            m.wall,
            per_core,
            per_core / base_per_core,
            m.wall / m.mb.max(1e-9),
            m.rss.map_or("-".into(), |r| format!("{r:.0}")),
        )?;
    }
    if let Some((_, m)) = runs.last() {
        let r = &m.report;
        let cpu = m.cpu.unwrap_or(m.wall * threads as f64);
        writeln!(
            o,
            "share of CPU time at the largest scale ({cpu:.1} CPU s):"
        )?;
        let mut rows: Vec<(String, f64)> = r
            .timings
            .stage_cpu_seconds
            .iter()
            .map(|(k, v)| (format!("stage {k}"), *v))
            .collect();
        rows.push((
            "convert (parse, recognise)".into(),
            r.timings.convert_cpu_seconds,
        ));
        rows.push((
            "write (template, tokenize, encode; wall)".into(),
            r.timings.write_seconds,
        ));
        let known: f64 = rows.iter().map(|r| r.1).sum();
        rows.push((
            "rest (read, decompress, batch)".into(),
            (cpu - known).max(0.0),
        ));
        for (name, secs) in rows {
            // A share under 10 ms has no meaningful rate.
            let rate = if secs < 0.01 {
                "-".to_string()
            } else {
                format!("{:.2}", m.mb / secs)
            };
            writeln!(
                o,
                "  {name:<44} {secs:>8.2} s {:>6.1}% {rate:>9} MB/s",
                100.0 * secs / cpu.max(1e-9),
            )?;
        }
        if threads > 1 {
            writeln!(
                o,
                "  (write is wall time on {threads} threads; the other rows are CPU time)"
            )?;
        }
    }
    Ok(())
}
