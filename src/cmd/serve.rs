//! `sluice serve`: the REST service.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Run the REST service: jobs, schedules, mix previews, the catalog.
#[derive(clap::Args)]
pub struct Args {
    /// The server config (TOML: listen, data_roots, output_root, concurrency, tokens).
    #[arg(long, required_unless_present = "hash_token")]
    pub config: Option<PathBuf>,
    /// Print the sha256 to store in `tokens` for this token, and exit.
    #[arg(long)]
    pub hash_token: Option<String>,
}

/// Serve.
pub fn run(args: Args) -> Result<ExitCode> {
    let Args { config, hash_token } = args;
    if let Some(t) = hash_token {
        writeln!(
            std::io::stdout(),
            "{}",
            sluice_server::config::hash_token(&t)
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let path = config.context("--config is required")?;
    let cfg = sluice_server::ServerConfig::load(&path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(sluice_server::serve(cfg))?;
    Ok(ExitCode::SUCCESS)
}
