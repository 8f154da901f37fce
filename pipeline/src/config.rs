//! The pipeline file (TOML): raw spec types with serde, then a compiled [`Plan`] that resolves
//! paths and globs and collects every error at once. `sluice check` runs only this step.
//!
//! Relative paths are resolved against the directory of the config file, not the working
//! directory, so a pipeline runs the same from anywhere.

use crate::error::{ConfigIssue, Error, Result};
use crate::sample::Kind;
use crate::stages::StageConfig;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

/// A pipeline file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Name of the run; defaults to the config file's stem.
    #[serde(default)]
    pub name: Option<String>,
    /// Seed for every random choice (default 42).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Records per batch of the parallel engine (default 2048): memory per stage is bounded by it.
    #[serde(default = "default_batch_size")]
    pub batch_size: NonZeroUsize,
    /// Bytes per batch (default 64 MiB): a batch ends at `batch_size` records or once its
    /// records reach this many bytes, whichever comes first, so memory is bounded by bytes too.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: ByteSize,
    /// Largest record accepted, e.g. `"8MiB"` (default 8 MiB); longer records are rejected.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: ByteSize,
    /// Fail the run when more than this share of records is rejected (default 1.0: never).
    #[serde(default = "default_max_reject_ratio")]
    pub max_reject_ratio: f64,
    /// The inputs, read in this order.
    pub inputs: Vec<InputSpec>,
    /// The stages, applied in this order.
    #[serde(default)]
    pub stages: Vec<StageConfig>,
    /// Where and how to write the outputs.
    pub output: OutputSpec,
}

fn default_seed() -> u64 {
    42
}
fn default_batch_size() -> NonZeroUsize {
    NonZeroUsize::new(2048).unwrap_or(NonZeroUsize::MIN)
}
fn default_batch_bytes() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_max_record_bytes() -> ByteSize {
    ByteSize(8 << 20)
}
fn default_max_reject_ratio() -> f64 {
    1.0
}

/// One input: a set of files that share a format, domain, task and kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Name in reports; defaults to `input<N>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Paths or glob patterns, relative to the config file.
    pub paths: Vec<String>,
    /// How the file is laid out (default `auto`: by extension and content).
    #[serde(default)]
    pub reader: ReaderKind,
    /// How a record maps onto a sample (default `auto`: by the record's keys).
    #[serde(default)]
    pub format: RecordFormat,
    /// Compression (default `auto`: by magic bytes).
    #[serde(default)]
    pub compression: Compression,
    /// Text encoding (default `auto`: UTF-8, or GB18030 when the file is in it).
    #[serde(default)]
    pub encoding: Encoding,
    /// Domain of every sample (default: the record's own, else `general`).
    #[serde(default)]
    pub domain: Option<String>,
    /// Task of every sample (default: the record's own, else the input's name).
    #[serde(default)]
    pub task: Option<String>,
    /// Dialogue or document (default: by format; `{text}` and plain text are `pretrain`).
    #[serde(default)]
    pub kind: Option<Kind>,
    /// Column (or JSON key) mapping for flat records: `{ ask = "user", answer = "assistant" }`.
    /// Targets: user, assistant, system, text, id, user_id, domain, task, `tag:<name>`, ignore.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// For plain text files: one document per `line` (default), `paragraph` or `file`.
    #[serde(default)]
    pub text_unit: TextUnit,
    /// Remove spaces that touch CJK characters (LCCC writes `你 好 ！`).
    #[serde(default)]
    pub cjk_despace: bool,
    /// A compressed file may expand at most this many times (default 200; 0: no limit) once
    /// it has given 64 MiB: beyond, the file ends with one reject (a decompression bomb: 2 GB
    /// of zeros gzip to 2 MB). Real logs expand 5–50 times.
    #[serde(default = "default_max_expansion")]
    pub max_expansion: u32,
}

fn default_max_expansion() -> u32 {
    200
}

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

/// A byte count written as a number or with a unit: `"8MiB"`, `"512KB"`, `1048576`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_size(&s).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size {s:?}: expected a number with an optional unit (B, KB, KiB, MB, MiB, GB, GiB)"
                ))
            }),
        }
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "kib" => 1 << 10,
        "mb" | "m" => 1_000_000,
        "mib" => 1 << 20,
        "gb" | "g" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    (num >= 0.0).then_some((num * mult as f64) as u64)
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
    fn parse(s: &str) -> Option<ColumnTarget> {
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
            max_expansion: default_max_expansion(),
            tags: Vec::new(),
        }
    }
}

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

/// Parse and compile a pipeline file.
pub fn load(path: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, path)
}

/// How a pipeline is compiled: trusted (`sluice run`, the default) or confined (the
/// service), and the limits of its glob expansion.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Every path the pipeline names must pass this before it is opened, listed or fetched.
    pub confine: Option<crate::confine::Confinement>,
    /// Limits of each glob's expansion (and a cancel flag that stops one).
    pub limits: crate::confine::Limits,
    /// Replaces a local `output.dir` (the service's job folder).
    pub output_dir: Option<PathBuf>,
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
    match compile(spec, path, opts) {
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

/// Every path a pipeline names, checked against a confinement before anything is touched.
fn confine_spec(
    spec: &PipelineSpec,
    spelled: &[Vec<crate::confine::NamedPath>],
    base: &Path,
    c: &crate::confine::Confinement,
    output_dir: Option<&Path>,
) -> std::result::Result<(), crate::confine::Forbidden> {
    use crate::confine::Access;
    for (i, input) in spec.inputs.iter().enumerate() {
        for pattern in &input.paths {
            if crate::remote::is_url(pattern) {
                c.check_url(&format!("inputs[{i}].paths"), pattern)?;
            }
        }
    }
    for (i, (stage, spelled)) in spec.stages.iter().zip(spelled).enumerate() {
        for (p, as_written) in stage.paths().iter().zip(spelled) {
            let key = format!("stages[{i}].{}", p.field);
            let shown = as_written.path.to_string_lossy();
            if crate::remote::is_url(&shown) {
                return Err(crate::confine::Forbidden {
                    key,
                    message: format!("{shown}: a stage reads local files only, not URLs"),
                });
            }
            c.check(&key, &p.path, &shown, p.access)?;
        }
    }
    let read = |key: &str, p: &str| {
        let full = crate::confine::resolve(base, Path::new(p));
        c.check(key, &full, p, Access::Read)
    };
    if let Some(s) = &spec.output.shards {
        for (key, p) in [
            ("output.shards.tokenizer", &s.tokenizer),
            ("output.shards.vocab", &s.vocab),
            ("output.shards.merges", &s.merges),
        ] {
            if let Some(p) = p {
                read(key, p)?;
            }
        }
        if !crate::tokenize::Template::is_builtin(&s.template) {
            read("output.shards.template", &s.template)?;
        }
    }
    if let Some(t) = &spec.output.catalog.tokenizer {
        read("output.catalog.tokenizer", t)?;
    }
    let out = &spec.output.dir;
    if crate::remote::is_url(out) {
        c.check_url("output.dir", out)?;
    } else if output_dir.is_none() {
        let full = base.join(out);
        c.check("output.dir", &full, out, Access::Write)?;
    }
    Ok(())
}

fn compile(spec: PipelineSpec, path: &Path, opts: &CompileOptions) -> Result<Plan> {
    let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let mut spec = spec;
    // The paths as written, for messages: a resolved path would show the server's folders.
    let spelled: Vec<_> = spec.stages.iter().map(|s| s.paths()).collect();
    for stage in &mut spec.stages {
        stage.resolve_paths(&base);
    }
    if let Some(c) = &opts.confine {
        confine_spec(&spec, &spelled, &base, c, opts.output_dir.as_deref()).map_err(|f| {
            Error::Forbidden {
                key: f.key,
                message: f.message,
            }
        })?;
    }
    let mut issues = Vec::new();
    let mut issue = |key: String, message: String| issues.push(ConfigIssue { key, message });

    if !(0.0..=1.0).contains(&spec.max_reject_ratio) {
        issue(
            "max_reject_ratio".into(),
            format!("{} is not a share between 0 and 1", spec.max_reject_ratio),
        );
    }
    if spec.inputs.is_empty() {
        issue("inputs".into(), "at least one [[inputs]] is needed".into());
    }
    let mut inputs = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, input) in spec.inputs.iter().enumerate() {
        let key = |k: &str| format!("inputs[{i}].{k}");
        let name = input.name.clone().unwrap_or_else(|| format!("input{i}"));
        if !names.insert(name.clone()) {
            issue(key("name"), format!("duplicate input name {name:?}"));
        }
        if input.paths.is_empty() {
            issue(key("paths"), "at least one path or glob is needed".into());
        }
        let mut files = Vec::new();
        for pattern in &input.paths {
            let found = if crate::remote::is_url(pattern) {
                // Listed in object storage and fetched into the local cache; shown by URL.
                crate::remote::fetch(pattern).map_err(crate::confine::GlobError::Invalid)
            } else {
                crate::confine::expand(&base, pattern, &opts.limits, opts.confine.as_ref())
            };
            match found {
                Ok(found) if found.is_empty() => {
                    issue(key("paths"), format!("no file matches {pattern:?}"))
                }
                Ok(found) => files.extend(found),
                Err(crate::confine::GlobError::Forbidden(message)) => {
                    return Err(Error::Forbidden {
                        key: key("paths"),
                        message,
                    })
                }
                Err(crate::confine::GlobError::Invalid(msg)) => issue(key("paths"), msg),
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        files.retain(|(p, _)| seen.insert(p.clone()));
        let mut columns = Vec::new();
        for (col, target) in &input.columns {
            match ColumnTarget::parse(target) {
                Some(t) => columns.push((col.clone(), t)),
                None => issue(
                    key(&format!("columns.{col}")),
                    format!("unknown target {target:?}: expected user, assistant, system, text, id, user_id, domain, task, tag:<name> or ignore"),
                ),
            }
        }
        let format = match (input.format, columns.is_empty()) {
            (RecordFormat::Auto, false) => RecordFormat::Columns,
            (RecordFormat::Columns, true) => {
                issue(
                    key("format"),
                    "format \"columns\" needs a `columns` mapping".into(),
                );
                RecordFormat::Columns
            }
            (f, false) if f != RecordFormat::Columns => {
                issue(
                    key("columns"),
                    format!("a column mapping only applies to format \"columns\" (or \"auto\"), not {:?}", f.as_str()),
                );
                f
            }
            (f, _) => f,
        };
        if format == RecordFormat::Columns {
            let has = |t: &ColumnTarget| columns.iter().any(|(_, c)| c == t);
            let dialogue = has(&ColumnTarget::User) || has(&ColumnTarget::Assistant);
            if !(dialogue || has(&ColumnTarget::Text)) {
                issue(
                    key("columns"),
                    "map at least one column to user and assistant, or to text".into(),
                );
            } else if dialogue && !(has(&ColumnTarget::User) && has(&ColumnTarget::Assistant)) {
                issue(
                    key("columns"),
                    "a dialogue needs a user column and an assistant column".into(),
                );
            }
        }
        if input.reader == ReaderKind::Parquet && input.encoding == Encoding::Gb18030 {
            issue(
                key("encoding"),
                "Parquet strings are UTF-8 by definition".into(),
            );
        }
        inputs.push(InputPlan {
            task: input.task.clone().unwrap_or_else(|| name.clone()),
            task_forced: input.task.is_some(),
            name,
            files,
            reader: input.reader,
            format,
            compression: input.compression,
            encoding: input.encoding,
            domain: input.domain.clone(),
            kind: input.kind,
            columns,
            text_unit: input.text_unit,
            cjk_despace: input.cjk_despace,
            max_expansion: input.max_expansion,
            tags: Vec::new(),
        });
    }
    for (i, stage) in spec.stages.iter().enumerate() {
        for msg in stage.validate() {
            issue(format!("stages[{i}] ({})", stage.type_name()), msg);
        }
    }
    let mut shards = None;
    if let Some(s) = &spec.output.shards {
        let path = |p: &String| lexical_normalize(&crate::confine::resolve(&base, Path::new(p)));
        let tokenizer = s.tokenizer.as_ref().map(path);
        let vocab_merges = match (&s.vocab, &s.merges) {
            (Some(v), Some(m)) => Some((path(v), path(m))),
            (None, None) => None,
            _ => {
                issue(
                    "output.shards".into(),
                    "vocab and merges go together".into(),
                );
                None
            }
        };
        match (&tokenizer, &vocab_merges) {
            (None, None) => issue(
                "output.shards.tokenizer".into(),
                "set `tokenizer` (a tokenizer.json) or `vocab` + `merges`".into(),
            ),
            (Some(_), Some(_)) => issue(
                "output.shards".into(),
                "set either `tokenizer` or `vocab` + `merges`, not both".into(),
            ),
            _ => {}
        }
        for p in tokenizer
            .iter()
            .chain(vocab_merges.iter().flat_map(|(v, m)| [v, m]))
        {
            if !p.is_file() {
                issue(
                    "output.shards".into(),
                    format!("{}: no such file", p.display()),
                );
            }
        }
        let located = crate::confine::resolve(&base, Path::new(&s.template));
        let template = if !crate::tokenize::Template::is_builtin(&s.template) && located.is_file() {
            located.to_string_lossy().into_owned()
        } else {
            s.template.clone()
        };
        if let Err(e) = crate::tokenize::Template::load(&template) {
            issue("output.shards.template".into(), e);
        }
        if s.seq_len == Some(0) || s.max_source_tokens == Some(0) || s.max_target_tokens == Some(0)
        {
            issue(
                "output.shards".into(),
                "token lengths must be positive".into(),
            );
        }
        shards = Some(ShardsPlan {
            tokenizer,
            vocab_merges,
            template,
            system: s.system.clone(),
            budget: crate::tokenize::Budget {
                max_source_tokens: s.max_source_tokens,
                max_target_tokens: s.max_target_tokens,
            },
            train_on: s.train_on,
            seq_len: s.seq_len,
            shard_bytes: s.shard_size.0.max(1),
            megatron: s.megatron,
        });
    }
    let catalog_tokenizer = match &spec.output.catalog.tokenizer {
        Some(t) => {
            let p = lexical_normalize(&crate::confine::resolve(&base, Path::new(t)));
            if !p.is_file() {
                issue(
                    "output.catalog.tokenizer".into(),
                    format!("{}: no such file", p.display()),
                );
            }
            Some(p)
        }
        None => shards.as_ref().and_then(|s| s.tokenizer.clone()),
    };
    // A mix counts tokens as the catalog does unless told otherwise, and comes after every
    // other global stage (its copies must not meet a dedup).
    let mut mix_at = None;
    for (i, stage) in spec.stages.iter_mut().enumerate() {
        match stage {
            StageConfig::Mix(m) => {
                if mix_at.is_some() {
                    issue(
                        format!("stages[{i}] (mix)"),
                        "only one mix stage per pipeline".into(),
                    );
                }
                mix_at = Some(i);
                if m.tokenizer.is_none() {
                    m.tokenizer = catalog_tokenizer.clone();
                }
            }
            StageConfig::ExactDedup(_) | StageConfig::Minhash(_) | StageConfig::Split(_) => {
                if let Some(m) = mix_at {
                    issue(
                        format!("stages[{i}] ({})", stage.type_name()),
                        format!("global stages must come before the mix (stages[{m}]): its copies would meet them"),
                    );
                }
            }
            _ => {}
        }
    }
    if spec.output.formats.is_empty() {
        issue(
            "output.formats".into(),
            "at least one format is needed".into(),
        );
    }
    if spec.output.dir.trim().is_empty() {
        issue("output.dir".into(), "an output directory is needed".into());
    }
    if !issues.is_empty() {
        return Err(Error::Config {
            file: path.to_path_buf(),
            issues,
        });
    }
    let name = spec.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map_or("run".into(), |s| s.to_string_lossy().into_owned())
    });
    Ok(Plan {
        config_path: path.to_path_buf(),
        llamafactory_name: spec
            .output
            .llamafactory
            .dataset_name
            .clone()
            .unwrap_or_else(|| name.clone()),
        name,
        seed: spec.seed,
        batch_size: spec.batch_size.get(),
        batch_bytes: usize::try_from(spec.batch_bytes.0)
            .unwrap_or(usize::MAX)
            .max(1),
        max_record_bytes: usize::try_from(spec.max_record_bytes.0).unwrap_or(usize::MAX),
        max_reject_ratio: spec.max_reject_ratio,
        inputs,
        stages: spec.stages,
        output_dir: if crate::remote::is_url(&spec.output.dir) {
            crate::remote::staging_dir(&spec.output.dir)
        } else if let Some(dir) = &opts.output_dir {
            dir.clone()
        } else {
            lexical_normalize(&base.join(&spec.output.dir))
        },
        output_url: crate::remote::is_url(&spec.output.dir).then(|| spec.output.dir.clone()),
        formats: spec.output.formats,
        rows_per_file: spec.output.rows_per_file.get(),
        llamafactory_style: spec.output.llamafactory.style,
        shards,
        catalog: CatalogPlan {
            tokenizer: catalog_tokenizer,
            dimensions: spec.output.catalog.dimensions.clone(),
        },
    })
}

use crate::confine::lexical_normalize;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // fixtures
mod tests {
    use super::*;

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
