//! Errors of the pipeline library. Errors about input name the file (and line where known);
//! errors about config name the config file and the key.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a pipeline config, located by its key path (`stages[1].min_chars`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Where in the config: a dotted key path, or `line L, column C` for syntax errors.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a stage cannot be built (a rules file that does not parse, a model that does not load,
/// a setting that cannot work) or cannot decide (a mix whose `where` names a column no sample
/// has). The engine reports it as a config issue under the stage's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    /// A file the stage reads.
    #[error("{path}: {message}", path = .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A setting, or data, the stage cannot work with.
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for StageError {
    fn from(message: String) -> StageError {
        StageError::Invalid(message)
    }
}

impl From<&str> for StageError {
    fn from(message: &str) -> StageError {
        StageError::Invalid(message.to_string())
    }
}

impl From<StageError> for String {
    fn from(e: StageError) -> String {
        e.to_string()
    }
}

/// Everything that can stop a run. Bad records never do: they become rejects.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline config is invalid; every issue found is listed.
    #[error("invalid pipeline config {}:\n{}", .file.display(), format_issues(.issues))]
    Config {
        /// The config file.
        file: PathBuf,
        /// Every issue found, in order.
        issues: Vec<ConfigIssue>,
    },
    /// A confined pipeline names a path or URL it may not use (the service answers 403).
    #[error("{key}: {message}")]
    Forbidden {
        /// The key that names it (`stages[2].profiles`).
        key: String,
        /// Why, naming the path as the pipeline spelled it.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A whole input file is unusable (not one bad record: those become rejects).
    #[error("{}: {message}", .path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Writing an output failed.
    #[error("writing {}: {message}", .path.display())]
    Output {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A task-sharded run's work folder: a phase that did not finish in time, or what another
    /// task left there that is refused.
    #[error("{}: {message}", .path.display())]
    Work {
        /// The marker or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Too much of the input could not be parsed.
    #[error("{rejected} of {read} records rejected ({:.2}%), over the allowed {:.2}%; see {}", *.rejected as f64 * 100.0 / (*.read).max(1) as f64, .max_ratio * 100.0, .rejects.display())]
    TooManyRejects {
        /// Records rejected.
        rejected: u64,
        /// Records read.
        read: u64,
        /// The configured ratio.
        max_ratio: f64,
        /// Where the rejects were written.
        rejects: PathBuf,
    },
    /// A trial run's record limit was reached in an input (internal: the engine stops reading
    /// that input and goes on; it never ends a run).
    #[error("the trial's record limit was reached")]
    LimitReached,
    /// A global stage could not decide (a mix whose `where` names a column no sample has); the
    /// engine reports it under the stage's name.
    #[error("{0}")]
    Stage(StageError),
    /// The run was stopped from outside (`RunOptions::cancel`); nothing was published.
    #[error("the run was cancelled; nothing was published")]
    Cancelled,
}

fn format_issues(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The pipeline library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
