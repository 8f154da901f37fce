//! The pipeline file as written: top-level settings and inputs, deserialized with serde (every
//! unknown key is an error), and the value types they use (sizes, column targets).

use super::output::OutputSpec;
use crate::io::options::{Compression, Encoding, ReaderKind, RecordFormat, TextUnit};
use crate::sample::Kind;
use crate::stages::StageConfig;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::num::NonZeroUsize;

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
    /// CSV/TSV: a quoted field may span at most this many lines (default 1000; its bytes are
    /// bounded by `max_record_bytes` too); beyond, it is a reject at the line it opened on and
    /// reading resumes on the next line.
    #[serde(default = "default_max_quoted_lines")]
    pub max_quoted_lines: usize,
}

pub(super) fn default_max_quoted_lines() -> usize {
    crate::io::options::DEFAULT_MAX_QUOTED_LINES
}

pub(super) fn default_max_expansion() -> u32 {
    crate::io::options::DEFAULT_MAX_EXPANSION
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

pub(super) fn parse_size(s: &str) -> Option<u64> {
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
