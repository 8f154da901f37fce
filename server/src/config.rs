//! `server.toml`: where data may be read and written, who may call, how much at once.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! data_roots = ["/data/logs", "/data/general"]   # inputs must resolve inside one of these
//! output_root = "/data/sluice"                   # job outputs, the job store, the catalog
//! concurrency = 2                                 # jobs at once
//! queue_limit = 100                               # queued jobs before 429
//! body_limit = "1MiB"
//! [[tokens]]
//! name = "ci"
//! sha256 = "…"                                    # sha256 of the bearer token, hex
//! scope = "write"                                 # or "read"
//! ```

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
}

/// One API token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// Who holds it (in logs).
    pub name: String,
    /// Hex sha256 of the token.
    pub sha256: String,
    /// `write` (submit, cancel) or `read` (look only).
    pub scope: Scope,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// GET only.
    Read,
    /// Everything.
    Write,
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
        let h = hash_token(token);
        self.tokens
            .iter()
            .find(|t| t.sha256.eq_ignore_ascii_case(&h))
            .map(|t| t.scope)
    }

    /// Whether `p` (after resolving `..` and symlinks) lies inside a data root or the output
    /// root. A path that does not exist yet is judged by its nearest existing ancestor.
    pub fn allowed(&self, p: &Path) -> bool {
        let Some(real) = resolve(p) else { return false };
        self.data_roots
            .iter()
            .chain(std::iter::once(&self.output_root))
            .any(|root| real.starts_with(root))
    }
}

/// Canonical form of a path whose tail may not exist yet.
fn resolve(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Some(c);
    }
    let mut tail = Vec::new();
    let mut cur = p.to_path_buf();
    loop {
        let name = cur.file_name()?.to_os_string();
        if name == ".." {
            return None;
        }
        tail.push(name);
        cur = cur.parent()?.to_path_buf();
        if let Ok(c) = cur.canonicalize() {
            let mut out = c;
            for n in tail.iter().rev() {
                out.push(n);
            }
            return Some(out);
        }
    }
}
