//! `sluice bench preview`: mix previews from a generated catalog.

use super::percentile;
use anyhow::Result;
use sluice_pipeline::catalog;
use sluice_pipeline::mix::{MixMode, MixSpec, Ratio};
use std::io::Write;

pub fn bench_preview(
    dir: &std::path::Path,
    runs: usize,
    samples: u64,
    repeat: usize,
) -> Result<()> {
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
