//! `sluice inspect run`: what a run dropped and what its rewriting stages changed.

use anyhow::{bail, Result};
use sluice_pipeline::config;
use std::io::Write;

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
