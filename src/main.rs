//! The `sluice` command line: a thin layer over the pipeline library, one module per command
//! under `cmd/`.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod cmd;
mod table;

/// sluice turns raw business dialogue logs into LLM training data.
#[derive(Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline and publish its outputs.
    Run(cmd::run::Args),
    /// Check a pipeline file: parse, resolve inputs, validate stages; report every problem.
    Check(cmd::check::Args),
    /// Run the REST service: jobs, schedules, mix previews, the catalog.
    Serve(cmd::serve::Args),
    /// List and summarize the catalog of curated data (every run's catalog.parquet).
    Catalog(cmd::catalog::Args),
    /// Mix domain and general data by ratio: preview from the catalog, or write the mix.
    Mix {
        #[command(subcommand)]
        what: cmd::mix::MixCommand,
    },
    /// Look inside outputs.
    Inspect {
        #[command(subcommand)]
        what: cmd::inspect::Inspect,
    },
    /// Train and evaluate fastText classifiers.
    Classifier {
        #[command(subcommand)]
        what: cmd::classifier::Classifier,
    },
    /// Train on shards with the bundled candle trainer, or estimate training memory.
    Train {
        #[command(subcommand)]
        what: cmd::train::TrainCommand,
    },
    /// Compare mixes by outcome: build each, train on it, evaluate forgetting, recommend one.
    Ablate {
        #[command(subcommand)]
        what: cmd::ablate::AblateCommand,
    },
    /// Evaluation sets kept apart from training, and model scores on them.
    Eval {
        #[command(subcommand)]
        what: cmd::eval::EvalCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: cmd::bench::Bench,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            // `sluice bench read … | head` closes stdout early: not an error worth a message.
            let broken_pipe = e
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    match Cli::parse().command {
        Command::Run(args) => cmd::run::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Catalog(args) => cmd::catalog::run(args),
        Command::Mix { what } => cmd::mix::mix_command(what),
        Command::Train { what } => cmd::train::run(what),
        Command::Inspect { what } => cmd::inspect::run(what),
        Command::Classifier { what } => {
            cmd::classifier::classifier_command(what)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ablate { what } => cmd::ablate::run(what),
        Command::Eval { what } => cmd::eval::run(what),
        Command::Bench { what } => cmd::bench::run(what),
    }
}
