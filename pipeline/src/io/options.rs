//! How files are read and outputs written: the options of an input (layout, format,
//! compression, encoding, column mapping) and of the tokenized and LLaMA-Factory outputs. The
//! plan compiles them from the pipeline file; the readers and writers take them as they are.

use crate::sample::Kind;
use serde::Deserialize;
use std::path::PathBuf;

/// Lines a quoted CSV field may span (see `max_quoted_lines` of an input).
pub const DEFAULT_MAX_QUOTED_LINES: usize = 1000;

/// How many times a compressed file may expand (see `max_expansion` of an input).
pub const DEFAULT_MAX_EXPANSION: u32 = 200;

/// File layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReaderKind {
    /// By extension, then by content.
    #[default]
    Auto,
    /// One JSON value per line.
    Jsonl,
    /// A JSON document: an array of records, one record, or `{split: [records]}`.
    Json,
    /// Comma-separated with a header row.
    Csv,
    /// Tab-separated with a header row.
    Tsv,
    /// Apache Parquet.
    Parquet,
    /// Plain text documents.
    Text,
}

/// Record layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    /// Decided per record by its keys.
    #[default]
    Auto,
    /// sluice's own record (`turns: [{role, content}]`), as written by its writers.
    Sluice,
    /// `{prompt, response, history}`.
    Dialogue,
    /// `{instruction, input, output, system, history}`.
    Alpaca,
    /// `{conversations: [{from, value}], system?, tools?}`.
    Sharegpt,
    /// `{messages: [{role, content}]}`.
    Openai,
    /// `{text}` documents (and plain text files).
    Text,
    /// A list of utterances, alternating user and assistant (LCCC).
    Utterances,
    /// A flat record mapped by `columns`.
    Columns,
}

impl RecordFormat {
    /// The name used in configs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordFormat::Auto => "auto",
            RecordFormat::Sluice => "sluice",
            RecordFormat::Dialogue => "dialogue",
            RecordFormat::Alpaca => "alpaca",
            RecordFormat::Sharegpt => "sharegpt",
            RecordFormat::Openai => "openai",
            RecordFormat::Text => "text",
            RecordFormat::Utterances => "utterances",
            RecordFormat::Columns => "columns",
        }
    }
}

/// Compression of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// By magic bytes.
    #[default]
    Auto,
    /// Not compressed.
    None,
    /// gzip (also multi-member).
    Gzip,
    /// Zstandard.
    Zstd,
}

/// Text encoding of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Encoding {
    /// UTF-8, or GB18030 when the file's start is not UTF-8 but is valid GB18030.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// UTF-8; invalid lines are rejected.
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    /// GB18030, a superset of GBK and GB2312.
    #[serde(rename = "gb18030", alias = "gbk", alias = "gb2312")]
    Gb18030,
}

/// What one document is in a plain text file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TextUnit {
    /// Each non-empty line.
    #[default]
    Line,
    /// Each block of lines separated by blank lines.
    Paragraph,
    /// The whole file.
    File,
}

/// A column mapping target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnTarget {
    /// A user turn (several user columns are joined with a newline).
    User,
    /// An assistant turn.
    Assistant,
    /// The system prompt.
    System,
    /// Document text.
    Text,
    /// The sample id.
    Id,
    /// The user id.
    UserId,
    /// The domain.
    Domain,
    /// The task.
    Task,
    /// A tag of this name.
    Tag(String),
    /// Not used.
    Ignore,
}

impl ColumnTarget {
    /// Parse a target as written in `columns` (`user`, `tag:<name>`, …).
    pub fn parse(s: &str) -> Option<ColumnTarget> {
        Some(match s {
            "user" | "human" | "prompt" => ColumnTarget::User,
            "assistant" | "gpt" | "response" => ColumnTarget::Assistant,
            "system" => ColumnTarget::System,
            "text" => ColumnTarget::Text,
            "id" => ColumnTarget::Id,
            "user_id" => ColumnTarget::UserId,
            "domain" => ColumnTarget::Domain,
            "task" => ColumnTarget::Task,
            "ignore" => ColumnTarget::Ignore,
            _ => {
                let name = s.strip_prefix("tag:")?;
                if name.is_empty() {
                    return None;
                }
                ColumnTarget::Tag(name.to_string())
            }
        })
    }
}

/// A compiled input: globs expanded, options checked.
#[derive(Debug, Clone)]
pub struct InputPlan {
    /// Name in reports.
    pub name: String,
    /// The files, sorted, each with the name it is reported under (relative to the config).
    pub files: Vec<(PathBuf, String)>,
    /// Reader choice.
    pub reader: ReaderKind,
    /// Record format choice.
    pub format: RecordFormat,
    /// Compression choice.
    pub compression: Compression,
    /// Encoding choice.
    pub encoding: Encoding,
    /// Forced domain.
    pub domain: Option<String>,
    /// Forced task (default: the input name when the record has none).
    pub task: String,
    /// Whether the task was given in config (then it overrides the record's).
    pub task_forced: bool,
    /// Forced kind.
    pub kind: Option<Kind>,
    /// Column mapping.
    pub columns: Vec<(String, ColumnTarget)>,
    /// Text unit of plain text files.
    pub text_unit: TextUnit,
    /// Remove spaces around CJK characters.
    pub cjk_despace: bool,
    /// Largest expansion of a compressed file (0: no limit).
    pub max_expansion: u32,
    /// Lines a quoted CSV field may span before it is a reject.
    pub max_quoted_lines: usize,
    /// For a confined pipeline (the service), the folders its files must lie in when they are
    /// opened: checked on the open file, so a path swapped for a link after the check is not
    /// read ([`crate::confine::open_confined`]).
    pub confined_to: Option<std::sync::Arc<[PathBuf]>>,
    /// Tags set on every sample of the input (`sluice mix run` marks the run it read).
    pub tags: Vec<(String, String)>,
}

impl InputPlan {
    /// An input with every option at its default (`auto` everything, no files).
    pub fn new(name: &str) -> InputPlan {
        InputPlan {
            name: name.to_string(),
            files: Vec::new(),
            reader: ReaderKind::Auto,
            format: RecordFormat::Auto,
            compression: Compression::Auto,
            encoding: Encoding::Auto,
            domain: None,
            task: name.to_string(),
            task_forced: false,
            kind: None,
            columns: Vec::new(),
            text_unit: TextUnit::Line,
            cjk_despace: false,
            max_expansion: DEFAULT_MAX_EXPANSION,
            max_quoted_lines: DEFAULT_MAX_QUOTED_LINES,
            confined_to: None,
            tags: Vec::new(),
        }
    }
}

/// A checked `[output.shards]`.
#[derive(Debug, Clone)]
pub struct ShardsPlan {
    /// tokenizer.json.
    pub tokenizer: Option<PathBuf>,
    /// vocab.json + merges.txt.
    pub vocab_merges: Option<(PathBuf, PathBuf)>,
    /// Template name or file.
    pub template: String,
    /// System prompt override.
    pub system: Option<String>,
    /// Budgets.
    pub budget: crate::tokenize::Budget,
    /// Which assistant turns train.
    pub train_on: crate::tokenize::TrainOn,
    /// Packing length.
    pub seq_len: Option<usize>,
    /// Bytes per shard.
    pub shard_bytes: u64,
    /// Megatron output for documents.
    pub megatron: bool,
    /// For a confined pipeline, the folders the tokenizer must lie in when it is opened.
    pub confined_to: Option<std::sync::Arc<[PathBuf]>>,
}

/// LLaMA-Factory's two dataset layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LlamaFactoryStyle {
    /// `{conversations: [{from, value}], system, tools}`.
    #[default]
    Sharegpt,
    /// `{instruction, input, output, system, history}`; needs user/assistant-only dialogues.
    Alpaca,
}
