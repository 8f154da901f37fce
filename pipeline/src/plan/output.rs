//! `[output]` as written (formats, LLaMA-Factory export, shards, catalog) and its checked
//! forms.

use super::spec::ByteSize;
use crate::io::options::LlamaFactoryStyle;
use serde::Deserialize;
use std::num::NonZeroUsize;
use std::path::PathBuf;

/// Where and how outputs are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The run directory, relative to the config file; replaced as a whole when the run succeeds.
    pub dir: String,
    /// Formats of curated (and dropped) samples (default `["parquet", "jsonl"]`).
    #[serde(default = "default_formats")]
    pub formats: Vec<OutputFormat>,
    /// Rows per output file before a new part starts (default 100000).
    #[serde(default = "default_rows_per_file")]
    pub rows_per_file: NonZeroUsize,
    /// Options of the LLaMA-Factory export.
    #[serde(default)]
    pub llamafactory: LlamaFactorySpec,
    /// Tokenized shards for training (written to `shards/` when this section is present).
    #[serde(default)]
    pub shards: Option<ShardsSpec>,
    /// The run's catalog entry (`catalog.parquet`).
    #[serde(default)]
    pub catalog: CatalogSpec,
}

/// `[output.catalog]`: how the run's statistics are grouped and counted.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CatalogSpec {
    /// tokenizer.json that counts tokens (default: `output.shards.tokenizer`, else an
    /// approximation).
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Tags to group by (default: `lang`, `split` and every tag a `tags` stage sets).
    #[serde(default)]
    pub dimensions: Option<Vec<String>>,
}

/// A checked `[output.catalog]`.
#[derive(Debug, Clone, Default)]
pub struct CatalogPlan {
    /// Token counter's tokenizer.json.
    pub tokenizer: Option<PathBuf>,
    /// Dimension tags (None: the default set).
    pub dimensions: Option<Vec<String>>,
    /// For a confined pipeline, the folders the tokenizer must lie in when it is opened.
    pub confined_to: Option<std::sync::Arc<[PathBuf]>>,
}

/// `[output.shards]`: templating, tokenization and shard layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardsSpec {
    /// An HF `tokenizer.json` (relative to the pipeline file).
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Or a byte-level BPE `vocab.json` …
    #[serde(default)]
    pub vocab: Option<String>,
    /// … with its `merges.txt`.
    #[serde(default)]
    pub merges: Option<String>,
    /// Chat template: `chatml` (alias `qwen2`), `llama3`, `alpaca`, or a template file.
    #[serde(default = "default_template")]
    pub template: String,
    /// System prompt for samples without one (default: the template's).
    #[serde(default)]
    pub system: Option<String>,
    /// Tokens before the final answer, at most: old turns go first, then the last question is
    /// cut from its start.
    #[serde(default)]
    pub max_source_tokens: Option<usize>,
    /// Tokens of the final answer, at most.
    #[serde(default)]
    pub max_target_tokens: Option<usize>,
    /// `all_assistant` (default) or `last_assistant`.
    #[serde(default)]
    pub train_on: crate::tokenize::TrainOn,
    /// Pack samples into sequences of at most this many tokens.
    #[serde(default)]
    pub seq_len: Option<usize>,
    /// Approximate bytes per shard (default 128MiB).
    #[serde(default = "default_shard_size")]
    pub shard_size: ByteSize,
    /// Also write documents as Megatron-LM `.bin/.idx` (per split).
    #[serde(default)]
    pub megatron: bool,
}

fn default_template() -> String {
    "chatml".into()
}
fn default_shard_size() -> ByteSize {
    ByteSize(128 << 20)
}

fn default_formats() -> Vec<OutputFormat> {
    vec![OutputFormat::Parquet, OutputFormat::Jsonl]
}
fn default_rows_per_file() -> NonZeroUsize {
    NonZeroUsize::new(100_000).unwrap_or(NonZeroUsize::MIN)
}

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// Parquet, schema in `schemas/curated.md`.
    Parquet,
    /// One sluice record per line.
    Jsonl,
    /// LLaMA-Factory JSON plus a `dataset_info.json` entry.
    Llamafactory,
}

/// Options of the LLaMA-Factory export.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LlamaFactorySpec {
    /// `sharegpt` (default; keeps tool turns) or `alpaca`.
    #[serde(default)]
    pub style: LlamaFactoryStyle,
    /// Dataset name in `dataset_info.json` (default: the run's name).
    #[serde(default)]
    pub dataset_name: Option<String>,
}
