//! `sluice bench read`: the readers alone.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::PathBuf;

pub fn bench_read(files: &[PathBuf], threads: usize, repeat: usize) -> Result<()> {
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
