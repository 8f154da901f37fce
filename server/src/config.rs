//! `server.toml`: where data may be read and written, who may call, how much at once.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! data_roots = ["/data/logs", "/data/general"]   # every path a pipeline reads lies in one of these
//! output_root = "/data/sluice"                   # job outputs, the job store, the catalog
//! concurrency = 2                                 # jobs at once
//! queue_limit = 100                               # queued jobs before 429 (scheduled ones too)
//! body_limit = 1048576
//! allowed_urls = ["s3://logs/team-a/"]            # URL inputs/outputs under these (default none)
//! max_glob_files = 100000                         # files one input pattern may match
//! min_schedule_interval = 60                      # seconds between two ticks of a schedule, at least
//! anonymous_read = false                          # true: GETs need no token
//! max_ablation_points = 8                         # grid points one POST /v1/ablations may ask for
//! max_train_steps = 5000                          # optimizer steps of each point's training
//! max_train_memory_mib = 8192                     # weights, optimizer state and one step's activations
//! max_train_tokens = 1000000000                   # steps × batch_size × seq_len × grad_accum of a point
//! [[tokens]]
//! name = "ci"
//! sha256 = "…"                                    # sha256 of the bearer token, hex
//! scope = "write"                                 # or "read", or "metrics" (GET /metrics only)
//! ```
//!
//! The output root may not overlap a data root: jobs never read the store, other jobs'
//! outputs or the catalog as input.

use anyhow::{bail, Context};
use serde::Deserialize;
use sha2::Digest;
use std::path::{Path, PathBuf};

/// The service's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address (default 127.0.0.1:8080).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Inputs must resolve inside one of these folders.
    pub data_roots: Vec<PathBuf>,
    /// Job outputs (`<output_root>/<job id>`), the job store (`jobs.db`) and the catalog.
    pub output_root: PathBuf,
    /// Jobs that run at once (default 1).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Worker threads of each job (default: all cores / concurrency).
    #[serde(default)]
    pub threads_per_job: Option<usize>,
    /// Queued jobs before submissions get 429 (default 100).
    #[serde(default = "default_queue_limit")]
    pub queue_limit: i64,
    /// Largest request body in bytes (default 1 MiB).
    #[serde(default = "default_body_limit")]
    pub body_limit: usize,
    /// API tokens, stored as sha256 hashes.
    #[serde(default)]
    pub tokens: Vec<TokenSpec>,
    /// Time zone of schedules' cron expressions: `UTC` (default) or an offset such as `+08:00`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// URL prefixes (`s3://bucket/prefix/`) that pipelines may read from and write to
    /// (default none: no URL at all).
    #[serde(default)]
    pub allowed_urls: Vec<String>,
    /// Most files one input pattern may match before the submission is refused (default
    /// 100,000).
    #[serde(default = "default_max_glob_files")]
    pub max_glob_files: usize,
    /// Fewest seconds between two ticks of a schedule (default 60).
    #[serde(default = "default_min_schedule_interval")]
    pub min_schedule_interval: u64,
    /// Whether GETs (jobs, reports, schedules, datasets, /mix, /metrics) need no token
    /// (default false: a read or write token).
    #[serde(default)]
    pub anonymous_read: bool,
    /// Grid points one ablation may ask for (default 8).
    #[serde(default = "default_max_ablation_points")]
    pub max_ablation_points: usize,
    /// Optimizer steps each point of an ablation may train (default 5,000).
    #[serde(default = "default_max_train_steps")]
    pub max_train_steps: u64,
    /// Memory one point's training may need, estimated from the model and batch shape before
    /// it starts (default 8,192 MiB).
    #[serde(default = "default_max_train_memory_mib")]
    pub max_train_memory_mib: u64,
    /// Tokens one point of an ablation may train on, steps × batch_size × seq_len × grad_accum
    /// (default 10^9).
    #[serde(default = "default_max_train_tokens")]
    pub max_train_tokens: u64,
}

/// One API token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// Who holds it (in logs).
    pub name: String,
    /// Hex sha256 of the token.
    pub sha256: String,
    /// `write` (submit, cancel), `read` (look only) or `metrics` (`GET /metrics` only).
    pub scope: Scope,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// GET only.
    Read,
    /// Everything.
    Write,
    /// `GET /metrics` only (a scraper's token).
    Metrics,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_concurrency() -> usize {
    1
}
fn default_queue_limit() -> i64 {
    100
}
fn default_body_limit() -> usize {
    1 << 20
}
fn default_max_glob_files() -> usize {
    100_000
}
fn default_min_schedule_interval() -> u64 {
    60
}
fn default_max_ablation_points() -> usize {
    8
}
fn default_max_train_steps() -> u64 {
    5000
}
fn default_max_train_memory_mib() -> u64 {
    8192
}
fn default_max_train_tokens() -> u64 {
    1_000_000_000
}

/// Hex sha256 of a token, as `tokens[].sha256` stores it.
pub fn hash_token(token: &str) -> String {
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl ServerConfig {
    /// Read and check a server.toml; relative paths are relative to its folder.
    pub fn load(path: &Path) -> anyhow::Result<ServerConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut cfg: ServerConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        for r in &mut cfg.data_roots {
            *r = base.join(&*r);
        }
        cfg.output_root = base.join(&cfg.output_root);
        cfg.check()?;
        Ok(cfg)
    }

    /// Check values; canonicalize the roots (they must exist, the output root is created).
    pub fn check(&mut self) -> anyhow::Result<()> {
        if self.data_roots.is_empty() {
            bail!("data_roots: at least one folder is needed");
        }
        for r in &mut self.data_roots {
            *r = r
                .canonicalize()
                .with_context(|| format!("data root {}", r.display()))?;
        }
        std::fs::create_dir_all(&self.output_root)
            .with_context(|| format!("output root {}", self.output_root.display()))?;
        self.output_root = self.output_root.canonicalize()?;
        for r in &self.data_roots {
            if r.starts_with(&self.output_root) || self.output_root.starts_with(r) {
                bail!(
                    "data root {} overlaps the output root {}: jobs would read the job store and other jobs' outputs",
                    r.display(),
                    self.output_root.display()
                );
            }
        }
        for u in &self.allowed_urls {
            if !sluice_pipeline::remote::is_url(u) || u.contains("..") {
                bail!("allowed_urls: {u:?} is not a URL prefix such as \"s3://bucket/prefix/\"");
            }
        }
        if self.max_glob_files == 0 {
            bail!("max_glob_files must be at least 1");
        }
        crate::schedule::offset(self.timezone.as_deref()).map_err(anyhow::Error::msg)?;
        if self.concurrency == 0 {
            bail!("concurrency must be at least 1");
        }
        for t in &self.tokens {
            if t.sha256.len() != 64 || !t.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!(
                    "tokens.{}: sha256 must be 64 hex digits (sluice serve --hash-token prints it)",
                    t.name
                );
            }
        }
        Ok(())
    }

    /// The scope of a bearer token, if it is one of ours.
    pub fn scope_of(&self, token: &str) -> Option<Scope> {
        self.token(token).map(|t| t.scope)
    }

    /// The configured token whose hash `token` has.
    pub fn token(&self, token: &str) -> Option<&TokenSpec> {
        let h = hash_token(token);
        self.tokens
            .iter()
            .find(|t| t.sha256.eq_ignore_ascii_case(&h))
    }

    /// Whether `p` (after resolving `..` and symlinks) lies inside a data root. The output
    /// root is not one: jobs never read the store or other jobs' outputs.
    pub fn allowed(&self, p: &Path) -> bool {
        use sluice_pipeline::confine::{lexical_normalize, real_path};
        let inside = |q: &Path| {
            real_path(q).is_some_and(|real| self.data_roots.iter().any(|r| real.starts_with(r)))
        };
        // As the kernel opens it (`link/..` through the link) and as folded: both inside.
        inside(p) && inside(&lexical_normalize(p))
    }

    /// A message with the data roots' and the output root's absolute paths taken out: paths
    /// are shown relative to the root they belong to.
    pub fn relative_paths(&self, message: &str) -> String {
        let mut out = message.to_string();
        // Deepest roots first, so that a root inside another is taken out whole.
        let mut roots: Vec<&PathBuf> = self
            .data_roots
            .iter()
            .chain(std::iter::once(&self.output_root))
            .collect();
        roots.sort_by_key(|r| std::cmp::Reverse(r.as_os_str().len()));
        for root in &roots {
            let r = root.to_string_lossy();
            out = replace_path(&out, &format!("{r}/"), "", true);
            out = replace_path(&out, &r, ".", false);
        }
        if let Some(b) =
            sluice_pipeline::confine::bundled_root().and_then(|b| b.canonicalize().ok())
        {
            out = out.replace(&format!("{}/", b.to_string_lossy()), "sluice:");
        }
        // The folders above the roots (a glob's `../*` names them) are the server's business.
        let mut above: Vec<PathBuf> = roots
            .iter()
            .flat_map(|r| r.ancestors().skip(1).map(Path::to_path_buf))
            .filter(|a| a.components().count() > 1)
            .collect();
        above.sort_by_key(|a| std::cmp::Reverse(a.as_os_str().len()));
        above.dedup();
        for a in above {
            out = replace_path(
                &out,
                &a.to_string_lossy(),
                "(a folder outside the roots)",
                false,
            );
        }
        out
    }
}

/// `text` with `path` replaced by `with` where it stands as a whole path: what follows it is
/// not a character a path component continues with (a letter, digit, `-`, `_` or `.`), unless
/// `prefix` (the pattern ends with `/`, so anything may follow).
fn replace_path(text: &str, path: &str, with: &str, prefix: bool) -> String {
    if path.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(path) {
        let after = &rest[i + path.len()..];
        let whole = prefix
            || !after
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
        out.push_str(&rest[..i]);
        out.push_str(if whole { with } else { path });
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn roots_are_taken_out_only_as_whole_paths() {
        let cfg = ServerConfig {
            listen: String::new(),
            data_roots: vec![PathBuf::from("/srv/data")],
            output_root: PathBuf::from("/srv/out"),
            concurrency: 1,
            threads_per_job: None,
            queue_limit: 1,
            body_limit: 1,
            tokens: Vec::new(),
            timezone: None,
            allowed_urls: Vec::new(),
            max_glob_files: 1,
            min_schedule_interval: 1,
            anonymous_read: false,
            max_ablation_points: 1,
            max_train_steps: 1,
            max_train_memory_mib: 1,
            max_train_tokens: 1,
        };
        let shown = |m: &str| cfg.relative_paths(m);
        assert_eq!(shown("/srv/data/a.jsonl: bad"), "a.jsonl: bad");
        assert_eq!(shown("in /srv/out, now"), "in ., now");
        // A sibling that merely starts like a root is not one.
        assert_eq!(
            shown("/srv/outside/config.json is outside"),
            "(a folder outside the roots)/outside/config.json is outside"
        );
        assert_eq!(
            shown("/srv/data2/x"),
            "(a folder outside the roots)/data2/x"
        );
        assert_eq!(
            shown("/srv is outside the data roots"),
            "(a folder outside the roots) is outside the data roots"
        );
        assert!(!shown("/srv/outside/x").contains("/srv"));
    }
}
