//! `sluice catalog`: list and summarize the catalog of curated data.

use crate::table;
use anyhow::Result;
use sluice_pipeline::catalog;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// List and summarize the catalog of curated data (every run's catalog.parquet).
#[derive(clap::Args)]
pub struct Args {
    /// The catalog root: a folder of run directories (or one run directory).
    #[arg(default_value = "out")]
    pub root: PathBuf,
    /// Group by these columns (comma-separated), e.g. `domain,task` or `region,age_group`.
    #[arg(long, value_delimiter = ',', default_value = "domain,task")]
    pub by: Vec<String>,
    /// Only rows matching this condition, e.g. "region = 'east' AND age >= 18" (columns,
    /// literals, comparisons, AND/OR/NOT, IN, LIKE, BETWEEN, IS NULL).
    #[arg(long = "where")]
    pub filter: Option<String>,
    /// Only these runs (names or folders, comma-separated); default: every run, each
    /// source file counted once.
    #[arg(long, value_delimiter = ',')]
    pub runs: Option<Vec<String>>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Summarize it.
pub fn run(args: Args) -> Result<ExitCode> {
    let Args {
        root,
        by,
        filter,
        runs: chosen,
        json,
    } = args;
    let by: Vec<String> = by.into_iter().filter(|b| !b.is_empty()).collect();
    let chosen = chosen.as_deref();
    let loaded = catalog::load_versioned(&root, chosen).map_err(anyhow::Error::msg)?;
    let runs = catalog::runs(&root, chosen).map_err(anyhow::Error::msg)?;
    let table =
        catalog::summary(&root, chosen, &by, filter.as_deref()).map_err(anyhow::Error::msg)?;
    let total =
        catalog::summary(&root, chosen, &[], filter.as_deref()).map_err(anyhow::Error::msg)?;
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
