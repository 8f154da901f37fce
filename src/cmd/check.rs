//! `sluice check`: compile a pipeline file and report every problem.

use anyhow::Result;
use sluice_pipeline::config;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Check a pipeline file: parse, resolve inputs, validate stages; report every problem.
#[derive(clap::Args)]
pub struct Args {
    /// The pipeline file (TOML).
    pub pipeline: PathBuf,
}

/// Check it.
pub fn run(args: Args) -> Result<ExitCode> {
    let Args { pipeline } = args;
    let plan = config::load(&pipeline)?;
    let files: usize = plan.inputs.iter().map(|i| i.files.len()).sum();
    writeln!(
        std::io::stdout(),
        "{}: ok — {} inputs ({} files), {} stages, output {}",
        pipeline.display(),
        plan.inputs.len(),
        files,
        plan.stages.len(),
        plan.output_dir.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
