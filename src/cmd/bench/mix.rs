//! `sluice bench mix`: the mix stage over generated pools.

use anyhow::Result;
use sluice_pipeline::{config, engine};
use std::io::Write;

pub fn bench_mix(dir: &std::path::Path, samples: u64, threads: Option<usize>) -> Result<()> {
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
