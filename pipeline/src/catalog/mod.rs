//! The catalog of curated data. Every run writes `catalog.parquet` into its run directory (so
//! it is published atomically with the data it describes): one row per group of curated samples
//! sharing domain, task, source, kind and the values of the catalog's dimension tags (language,
//! split, user tags), with their samples, turns, tokens and characters and a few example ids.
//!
//! A catalog root is a folder of run directories. Queries scan every `*/catalog.parquet` under
//! it with polars lazy scans (runs with different tag columns are concatenated diagonally), so a
//! summary or a mix preview reads a few kilobytes per run and never a sample.

mod builder;
mod load;
mod query;

pub use builder::*;
pub use load::*;
pub use query::*;

use crate::sample::Sample;
use crate::tokenize::TokenizerHandle;
use std::path::Path;
use std::sync::Arc;

/// Catalog query results are polars frames.
pub use polars::prelude::DataFrame;

/// The file name of a run's catalog.
pub const CATALOG_FILE: &str = "catalog.parquet";

/// Columns every catalog row has, besides the dimension tags. `path` and `published` are
/// added when a catalog is loaded (where the run lies, when it was published); `source_hash`
/// (the content hash of the group's source file, when the run read it), `source_content`
/// (`<samples>:<sum of their content hashes>` over the run's samples of that source: the same
/// samples give the same value, whatever file they came from) and `mixed` (the run is a mix)
/// are missing from catalogs written before they were kept.
pub const FIXED_COLUMNS: [&str; 18] = [
    "run",
    "path",
    "files",
    "tokens_by",
    "domain",
    "task",
    "source",
    "kind",
    "samples",
    "turns",
    "tokens",
    "chars",
    "copies",
    "examples",
    "source_hash",
    "source_content",
    "mixed",
    "published",
];

/// The tag `sluice mix run` puts on every sample it reads back: the catalog run (folder) it
/// came from.
pub const RUN_TAG: &str = "catalog_run";

/// Tag values that mean "no value" when a tag is compared as a number.
pub(super) const MISSING: [&str; 3] = ["", "unknown", "und"];

/// Counts tokens of samples: with a tokenizer, or approximately (one per CJK character, one
/// per four bytes of other words) when none is configured.
#[derive(Clone)]
pub enum TokenCounter {
    /// An HF tokenizer.
    Tokenizer {
        /// The tokenizer.
        handle: Arc<TokenizerHandle>,
        /// How it is named in the catalog (`tokenizer.json:<first 12 hex of its sha256>`).
        name: String,
    },
    /// The approximation.
    Approx,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl TokenCounter {
    /// A counter with the tokenizer at `path`, or the approximation for `None`.
    pub fn new(path: Option<&Path>) -> Result<TokenCounter, String> {
        let Some(path) = path else {
            return Ok(TokenCounter::Approx);
        };
        let handle = TokenizerHandle::shared(path)?;
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        use sha2::Digest;
        let hash = sha2::Sha256::digest(&bytes);
        let hex: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let file = path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        Ok(TokenCounter::Tokenizer {
            handle,
            name: format!("{file}:{hex}"),
        })
    }

    /// The name recorded in the catalog's `tokens_by` column.
    pub fn name(&self) -> String {
        match self {
            TokenCounter::Tokenizer { name, .. } => name.clone(),
            TokenCounter::Approx => "approx".into(),
        }
    }

    /// Tokens of a sample's content (system prompt, turns or text), without template tokens.
    pub fn count(&self, s: &Sample) -> u64 {
        s.content_parts()
            .map(|(_, text)| match self {
                TokenCounter::Tokenizer { handle, .. } => handle
                    .count(text)
                    .map_or_else(|_| approx_tokens(text), |n| n as u64),
                TokenCounter::Approx => approx_tokens(text),
            })
            .sum()
    }
}

/// One token per CJK character, about one per four bytes of other words, one per symbol.
pub fn approx_tokens(text: &str) -> u64 {
    let mut n = 0u64;
    let mut word = 0u64;
    for c in text.chars() {
        if c.is_alphanumeric() && (c as u32) < 0x2E80 {
            word += c.len_utf8() as u64;
            continue;
        }
        n += word.div_ceil(4);
        word = 0;
        if !c.is_whitespace() {
            n += 1;
        }
    }
    n + word.div_ceil(4)
}

/// A sample's content as a 128-bit hash: its system prompt, turns (with roles) and text,
/// exactly as written (two files holding the same dialogues give the same hashes).
pub fn content_hash(s: &Sample) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (label, part) in s.content_parts() {
        h.update(label.as_bytes());
        h.update(b"\x01");
        h.update(part.as_bytes());
        h.update(b"\x02");
    }
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    #[test]
    fn approx_tokens_counts_cjk_per_character_and_words_by_length() {
        assert_eq!(approx_tokens("你好，世界"), 5);
        assert_eq!(approx_tokens("hello world"), 4);
        assert_eq!(approx_tokens(""), 0);
    }

    #[test]
    fn numeric_tags_compare_as_numbers_and_unknown_is_null() {
        let df = DataFrame::new_infer_height(vec![
            Column::new(
                "age".into(),
                vec![Some("17"), Some("30"), Some("unknown"), None],
            ),
            Column::new(
                "region".into(),
                vec![Some("east"), Some("west"), Some("east"), None],
            ),
        ])
        .expect("frame");
        let df = numeric_tags(df, &["age".into(), "region".into()]).expect("cast");
        assert_eq!(
            df.column("age").map(|c| c.dtype().clone()).ok(),
            Some(DataType::Float64)
        );
        let out = df
            .lazy()
            .filter(polars::sql::sql_expr("age >= 18 AND region = 'west'").expect("sql"))
            .collect()
            .expect("filter");
        assert_eq!(out.height(), 1);
    }
}
