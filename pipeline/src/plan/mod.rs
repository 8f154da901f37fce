//! The pipeline file (TOML): raw spec types with serde ([`spec`], [`output`]), then a compiled
//! [`Plan`] that resolves paths and globs and collects every error at once ([`compile`], with
//! [`paths`] confining every path a submitted pipeline names). `sluice check` runs only this
//! step. This layer does no network I/O: URL inputs are listed by a fetcher the caller passes
//! in [`CompileOptions::fetch`] (the `config` module passes object storage's).
//!
//! Relative paths are resolved against the directory of the config file, not the working
//! directory, so a pipeline runs the same from anywhere.

mod compile;
pub mod output;
mod paths;
pub mod spec;

pub use crate::io::options::*;
pub use output::*;
pub use spec::*;

use crate::error::{ConfigIssue, Error, Result};
use crate::stages::StageConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Lists the files of a URL input (a glob in object storage), fetched into a local cache:
/// `(local path, name shown in reports)`.
pub type Fetch =
    Arc<dyn Fn(&str) -> std::result::Result<Vec<(PathBuf, String)>, String> + Send + Sync>;

/// A compiled pipeline: everything checked, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Config file it came from.
    pub config_path: PathBuf,
    /// Run name.
    pub name: String,
    /// Seed.
    pub seed: u64,
    /// Batch size.
    pub batch_size: usize,
    /// Bytes at which a batch ends before `batch_size` records.
    pub batch_bytes: usize,
    /// Largest record in bytes.
    pub max_record_bytes: usize,
    /// Largest reject share before the run fails.
    pub max_reject_ratio: f64,
    /// Inputs in order.
    pub inputs: Vec<InputPlan>,
    /// Stage configs in order (built into stages by the engine).
    pub stages: Vec<StageConfig>,
    /// Output directory (absolute or relative to the working directory); for an output URL,
    /// the local staging folder the run is built in before it is uploaded.
    pub output_dir: PathBuf,
    /// Output URL (`s3://…`, `file://…`): the published run is uploaded there.
    pub output_url: Option<String>,
    /// Output formats.
    pub formats: Vec<OutputFormat>,
    /// Rows per output file.
    pub rows_per_file: usize,
    /// LLaMA-Factory export style.
    pub llamafactory_style: LlamaFactoryStyle,
    /// LLaMA-Factory dataset name.
    pub llamafactory_name: String,
    /// Tokenized shards, when configured.
    pub shards: Option<ShardsPlan>,
    /// Catalog options.
    pub catalog: CatalogPlan,
}

impl Plan {
    /// The files besides the inputs that the run reads (tokenizers, a template file, the
    /// files and folders its stages read: models, word lists, rules, profiles), resolved.
    /// Folders are listed one level deep, at most 1,000 files each, in name order.
    pub fn files_read(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for s in &self.stages {
            for p in s.paths() {
                match p.access {
                    crate::confine::Access::Read => out.push(p.path),
                    crate::confine::Access::ReadDir => {
                        let mut files: Vec<PathBuf> = std::fs::read_dir(&p.path)
                            .map(|d| d.flatten().map(|e| e.path()).take(1000).collect())
                            .unwrap_or_default();
                        files.sort();
                        out.extend(files.into_iter().filter(|f| f.is_file()));
                    }
                    crate::confine::Access::Write => {}
                }
            }
        }
        if let Some(s) = &self.shards {
            out.extend(s.tokenizer.iter().cloned());
            if let Some((v, m)) = &s.vocab_merges {
                out.push(v.clone());
                out.push(m.clone());
            }
            if !crate::tokenize::Template::is_builtin(&s.template) {
                out.push(PathBuf::from(&s.template));
            }
        }
        out.extend(self.catalog.tokenizer.iter().cloned());
        out
    }
}

/// Parse and compile a pipeline file.
pub fn load(path: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, path)
}

/// How a pipeline is compiled: trusted (`sluice run`, the default) or confined (the
/// service), and the limits of its glob expansion.
#[derive(Clone, Default)]
pub struct CompileOptions {
    /// Every path the pipeline names must pass this before it is opened, listed or fetched.
    pub confine: Option<crate::confine::Confinement>,
    /// Limits of each glob's expansion (and a cancel flag that stops one).
    pub limits: crate::confine::Limits,
    /// Replaces a local `output.dir` (the service's job folder).
    pub output_dir: Option<PathBuf>,
    /// Lists URL inputs; without one, a URL input is an error.
    pub fetch: Option<Fetch>,
}

impl std::fmt::Debug for CompileOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileOptions")
            .field("confine", &self.confine)
            .field("limits", &self.limits)
            .field("output_dir", &self.output_dir)
            .field("fetch", &self.fetch.as_ref().map(|_| "…"))
            .finish()
    }
}

/// Parse and compile a pipeline from its text; `path` locates relative paths and errors.
pub fn parse(text: &str, path: &Path) -> Result<Plan> {
    parse_with(text, path, &CompileOptions::default())
}

/// [`parse`] with options: a confined pipeline gets [`Error::Forbidden`] for the first path
/// outside its roots, before any file is touched.
pub fn parse_with(text: &str, path: &Path, opts: &CompileOptions) -> Result<Plan> {
    let config_error = |issues| Error::Config {
        file: path.to_path_buf(),
        issues,
    };
    // Syntax first: a file that is not TOML has one error, at its place.
    let table: toml::Table =
        toml::from_str(text).map_err(|e| config_error(vec![toml_issue(&e, text, None)]))?;
    // Then every unknown key and bad value, each at its own line; then what compiling finds.
    let collected = crate::spec_check::collect::<PipelineSpec>(text, table);
    let mut issues = collected.issues;
    let Some(spec) = collected.value else {
        return Err(config_error(issues));
    };
    match compile::compile(spec, path, opts) {
        Ok(plan) if issues.is_empty() => Ok(plan),
        Ok(_) => Err(config_error(issues)),
        Err(Error::Config { issues: more, .. }) => {
            let placeholder = |key: &str| {
                collected
                    .placeholders
                    .iter()
                    .any(|i| key.starts_with(&format!("stages[{i}]")))
            };
            issues.extend(more.into_iter().filter(|i| !placeholder(&i.key)));
            Err(config_error(issues))
        }
        Err(e @ Error::Forbidden { .. }) => Err(e),
        Err(e) if issues.is_empty() => Err(e),
        Err(_) => Err(config_error(issues)),
    }
}

/// A TOML error as an issue: the dotted key where known, and the line and column.
fn toml_issue(e: &toml::de::Error, text: &str, key: Option<String>) -> ConfigIssue {
    let at = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {col}")
    });
    let key = match (key.filter(|k| k != "."), at) {
        (Some(k), Some(at)) => format!("{k} ({at})"),
        (Some(k), None) => k,
        (None, Some(at)) => at,
        (None, None) => "config".to_string(),
    };
    ConfigIssue {
        key,
        message: e.message().to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // fixtures
mod tests {
    use super::*;
    use crate::confine::lexical_normalize;
    use spec::parse_size;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn output_paths_are_normalized_lexically() {
        assert_eq!(
            lexical_normalize(Path::new("examples/../out/q")),
            PathBuf::from("out/q")
        );
        assert_eq!(
            lexical_normalize(Path::new("../x/./y")),
            PathBuf::from("../x/y")
        );
        assert_eq!(
            lexical_normalize(Path::new("/a/b/../../c")),
            PathBuf::from("/c")
        );
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("8MiB"), Some(8 << 20));
        assert_eq!(parse_size("512 KB"), Some(512_000));
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("3 parsecs"), None);
    }

    #[test]
    fn a_good_config_compiles_with_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.jsonl", "{}\n");
        write(dir.path(), "b.jsonl", "{}\n");
        let cfg = write(
            dir.path(),
            "p.toml",
            r#"
            [[inputs]]
            paths = ["*.jsonl"]
            domain = "finance"
            [[stages]]
            type = "exact_dedup"
            [output]
            dir = "out"
            "#,
        );
        let plan = load(&cfg).expect("compiles");
        assert_eq!(plan.name, "p");
        assert_eq!(plan.inputs[0].files.len(), 2);
        assert_eq!(plan.inputs[0].files[0].1, "a.jsonl");
        assert_eq!(plan.batch_size, 2048);
        assert_eq!(plan.output_dir, dir.path().join("out"));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("p.toml");
        let err = parse(
            "[[inputs]]\npaths = [\"x\"]\nformatt = \"alpaca\"\n[output]\ndir = \"o\"\n",
            &cfg,
        )
        .expect_err("typo");
        let msg = err.to_string();
        assert!(msg.contains("p.toml"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("formatt"), "{msg}");

        let err = parse(
            "[[inputs]]\npaths = [\"x\"]\nformat = \"alpacca\"\n[output]\ndir = \"o\"\n",
            &cfg,
        )
        .expect_err("bad value");
        assert!(err.to_string().contains("alpacca"), "{err}");
        assert!(
            err.to_string().contains("inputs[0].format (line 3"),
            "{err}"
        );

        let err = parse(
            "[[inputs]]\npaths = [\"missing/*.json\"]\ncolumns = { ask = \"usr\" }\n[[stages]]\ntype = \"length_filter\"\nmin_chars = 10\nmax_chars = 5\n[output]\ndir = \"o\"\n",
            &cfg,
        )
        .expect_err("several issues");
        let Error::Config { issues, .. } = err else {
            panic!("not a config error")
        };
        let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
        assert!(keys.contains(&"inputs[0].paths"), "{keys:?}");
        assert!(keys.contains(&"inputs[0].columns.ask"), "{keys:?}");
        assert!(keys.iter().any(|k| k.starts_with("stages[0]")), "{keys:?}");
    }
}
