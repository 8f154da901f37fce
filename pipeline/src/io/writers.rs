//! Writers of curated and dropped samples: Parquet (schema in `schemas/curated.md`), JSONL, and
//! the LLaMA-Factory export. Writers receive samples in output order on one thread and produce
//! byte-identical files for identical input; every file is written atomically.

use crate::error::{Error, Result};
use crate::io::options::LlamaFactoryStyle;
use crate::sample::DropReason;
use crate::sample::{Role, Sample};
use crate::storage::{write_atomic, AtomicFile};
use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a dropped sample was dropped, as written next to it.
#[derive(Debug, Clone, Serialize)]
pub struct DropInfo {
    /// The stage that dropped it (`stages[1].length_filter`).
    pub stage: String,
    /// The reason code.
    pub reason: &'static str,
    /// Detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The id kept in its place, for duplicates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
}

impl DropInfo {
    /// From a stage name and its reason.
    pub fn new(stage: &str, r: &DropReason) -> DropInfo {
        DropInfo {
            stage: stage.to_string(),
            reason: r.code,
            detail: r.detail.clone(),
            duplicate_of: r.duplicate_of.clone(),
        }
    }
}

/// One file a writer produced.
#[derive(Debug, Clone, Serialize)]
pub struct OutputFile {
    /// Path relative to the run directory.
    pub path: String,
    /// Records in it.
    pub records: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// A destination for samples (curated or dropped).
pub trait SampleSink {
    /// Write a batch, in order. `drops` is parallel to `samples` for dropped sinks.
    fn write(&mut self, samples: &[Sample], drops: Option<&[DropInfo]>) -> Result<()>;
    /// Close every file and report them.
    fn finish(self: Box<Self>) -> Result<Vec<OutputFile>>;
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Parquet parts `part-00000.parquet`, … of at most `rows_per_file` rows each.
pub struct ParquetSink {
    prefix: String,
    root: PathBuf,
    dir: PathBuf,
    rows_per_file: usize,
    with_drop: bool,
    schema: Arc<Schema>,
    current: Option<(ArrowWriter<AtomicFile>, PathBuf, u64)>,
    files: Vec<OutputFile>,
    /// Rows waiting for a full chunk, with their drop reasons and bytes.
    pending: Vec<Sample>,
    pending_drops: Vec<DropInfo>,
    pending_bytes: usize,
}

/// Rows per Parquet write: the file's pages are cut the same whatever batches the samples
/// came in (a run split into tasks writes the bytes of a run in one process).
const CHUNK_ROWS: usize = 1024;
/// Bytes at which a chunk is written before it has `CHUNK_ROWS` rows (bounds the buffer).
const CHUNK_BYTES: usize = 16 << 20;

/// Bytes a sample holds, roughly: its strings.
fn sample_bytes(s: &Sample) -> usize {
    let tags: usize = s.tags.iter().map(|(k, v)| k.len() + v.len()).sum();
    s.content_parts().map(|(_, c)| c.len() + 16).sum::<usize>()
        + s.id.len()
        + s.source.len()
        + s.tools.as_ref().map_or(0, |t| t.len())
        + tags
        + 64
}

/// The Arrow schema of curated samples (plus drop columns for dropped samples).
pub fn sample_schema(with_drop: bool) -> Schema {
    let turn = Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ]);
    // Tags are a list of {key, value} rather than an Arrow map: HF `datasets` cannot load maps.
    let tag = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
    ]);
    let mut fields = vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("domain", DataType::Utf8, false),
        Field::new("task", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("system", DataType::Utf8, true),
        Field::new("tools", DataType::Utf8, true),
        Field::new(
            "turns",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(turn), true))),
            false,
        ),
        Field::new("text", DataType::Utf8, true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(tag), true))),
            false,
        ),
    ];
    if with_drop {
        fields.extend([
            Field::new("drop_stage", DataType::Utf8, false),
            Field::new("drop_reason", DataType::Utf8, false),
            Field::new("drop_detail", DataType::Utf8, true),
            Field::new("duplicate_of", DataType::Utf8, true),
        ]);
    }
    Schema::new(fields)
}

/// A `list<struct<2 × utf8>>` builder for the field `name` of `schema`.
fn pair_list(schema: &Schema, name: &str) -> Result<ListBuilder<StructBuilder>, String> {
    let item = match schema.field_with_name(name).map(|f| f.data_type().clone()) {
        Ok(DataType::List(item)) => item,
        _ => return Err(format!("schema has no {name} list")),
    };
    let fields = match item.data_type() {
        DataType::Struct(f) => f.clone(),
        _ => return Err(format!("{name} items are not structs")),
    };
    Ok(ListBuilder::new(StructBuilder::new(
        fields,
        vec![
            Box::new(StringBuilder::new()),
            Box::new(StringBuilder::new()),
        ],
    ))
    .with_field(item))
}

/// Append one (a, b) struct to a pair list's current row.
fn push_pair(list: &mut ListBuilder<StructBuilder>, a: &str, b: &str) -> Result<(), String> {
    let sb = list.values();
    sb.field_builder::<StringBuilder>(0)
        .ok_or("pair builder")?
        .append_value(a);
    sb.field_builder::<StringBuilder>(1)
        .ok_or("pair builder")?
        .append_value(b);
    sb.append(true);
    Ok(())
}

fn to_batch(
    schema: &Arc<Schema>,
    samples: &[Sample],
    drops: Option<&[DropInfo]>,
) -> Result<RecordBatch, String> {
    let n = samples.len();
    let mut cols: Vec<StringBuilder> = (0..8)
        .map(|_| StringBuilder::with_capacity(n, n * 16))
        .collect();
    let mut turns = pair_list(schema, "turns")?;
    let mut tags = pair_list(schema, "tags")?;
    let mut text = StringBuilder::new();
    for s in samples {
        cols[0].append_value(&s.id);
        cols[1].append_value(&s.source);
        cols[2].append_value(&s.domain);
        cols[3].append_value(&s.task);
        cols[4].append_value(s.kind.as_str());
        cols[5].append_option(s.user_id.as_deref());
        cols[6].append_option(s.system.as_deref());
        cols[7].append_option(s.tools.as_deref());
        for t in &s.turns {
            push_pair(&mut turns, t.role.as_str(), &t.content)?;
        }
        turns.append(true);
        text.append_option(s.text.as_deref());
        for (k, v) in &s.tags {
            push_pair(&mut tags, k, v)?;
        }
        tags.append(true);
    }
    let mut arrays: Vec<ArrayRef> = cols
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    arrays.push(Arc::new(turns.finish()));
    arrays.push(Arc::new(text.finish()));
    arrays.push(Arc::new(tags.finish()));
    if let Some(drops) = drops {
        let mut d: Vec<StringBuilder> = (0..4).map(|_| StringBuilder::new()).collect();
        for info in drops {
            d[0].append_value(&info.stage);
            d[1].append_value(info.reason);
            d[2].append_option(info.detail.as_deref());
            d[3].append_option(info.duplicate_of.as_deref());
        }
        arrays.extend(d.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    }
    RecordBatch::try_new(schema.clone(), arrays).map_err(|e| e.to_string())
}

impl ParquetSink {
    /// Parts go to `dir`; paths are reported relative to `root`.
    pub fn new(root: &Path, dir: PathBuf, rows_per_file: usize, with_drop: bool) -> ParquetSink {
        ParquetSink {
            root: root.to_path_buf(),
            dir,
            prefix: "part".into(),
            rows_per_file,
            with_drop,
            schema: Arc::new(sample_schema(with_drop)),
            current: None,
            files: Vec::new(),
            pending: Vec::new(),
            pending_drops: Vec::new(),
            pending_bytes: 0,
        }
    }

    /// Write the pending rows as one batch, opening the next file as needed.
    fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.current.is_none() {
            let path = self
                .dir
                .join(format!("{}-{:05}.parquet", self.prefix, self.files.len()));
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
                .set_max_row_group_row_count(Some(16 * 1024))
                .build();
            let file = AtomicFile::create(&path)?;
            let w = ArrowWriter::try_new(file, self.schema.clone(), Some(props)).map_err(|e| {
                Error::Output {
                    path: path.clone(),
                    message: e.to_string(),
                }
            })?;
            self.current = Some((w, path, 0));
        }
        let Some((w, path, rows)) = self.current.as_mut() else {
            return Ok(());
        };
        let drops = self.with_drop.then_some(&self.pending_drops[..]);
        let batch = to_batch(&self.schema, &self.pending, drops).map_err(|m| Error::Output {
            path: path.clone(),
            message: m,
        })?;
        w.write(&batch).map_err(|e| Error::Output {
            path: path.clone(),
            message: e.to_string(),
        })?;
        *rows += self.pending.len() as u64;
        self.pending.clear();
        self.pending_drops.clear();
        self.pending_bytes = 0;
        if *rows as usize >= self.rows_per_file {
            self.close_current()?;
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((w, path, rows)) = self.current.take() {
            let file = w.into_inner().map_err(|e| Error::Output {
                path: path.clone(),
                message: e.to_string(),
            })?;
            file.commit()?;
            self.files.push(OutputFile {
                path: rel(&self.root, &path),
                records: rows,
                bytes: file_size(&path),
            });
        }
        Ok(())
    }
}

impl ParquetSink {
    /// Name parts `<prefix>-00000.parquet` (default `part`).
    pub fn with_prefix(mut self, prefix: &str) -> ParquetSink {
        self.prefix = prefix.to_string();
        self
    }
}

impl JsonlSink {
    /// Name parts `<prefix>-00000.jsonl` (default `part`).
    pub fn with_prefix(mut self, prefix: &str) -> JsonlSink {
        self.prefix = prefix.to_string();
        self
    }
}

/// The file-name prefix of a sample's split: `part` without a split tag, else the split
/// (letters, digits, `-` and `_`; anything else as `_`).
pub fn split_prefix(s: &Sample) -> String {
    match s.tags.get("split").filter(|v| !v.is_empty()) {
        None => "part".into(),
        Some(split) => split
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    }
}

/// Opens the sink of one split, given its file-name prefix.
pub type MakeSink = Box<dyn Fn(&str) -> Box<dyn SampleSink>>;

/// Curated files per split: samples tagged `split = valid` go to `valid-00000.*`, untagged
/// ones to `part-00000.*`, each split through its own inner sink, in order.
pub struct SplitSink {
    make: MakeSink,
    sinks: BTreeMap<String, Box<dyn SampleSink>>,
}

impl SplitSink {
    /// `make(prefix)` opens the sink of one split.
    pub fn new(make: MakeSink) -> SplitSink {
        SplitSink {
            make,
            sinks: BTreeMap::new(),
        }
    }
}

impl SampleSink for SplitSink {
    fn write(&mut self, samples: &[Sample], drops: Option<&[DropInfo]>) -> Result<()> {
        // One pass per split present in the batch, keeping the batch's order within each.
        let prefixes: Vec<String> = samples.iter().map(split_prefix).collect();
        let mut present: Vec<&String> = prefixes.iter().collect();
        present.sort();
        present.dedup();
        for p in present {
            let idx: Vec<usize> = (0..samples.len()).filter(|&i| &prefixes[i] == p).collect();
            let part: Vec<Sample> = idx.iter().map(|&i| samples[i].clone()).collect();
            let part_drops: Option<Vec<DropInfo>> =
                drops.map(|d| idx.iter().map(|&i| d[i].clone()).collect());
            if !self.sinks.contains_key(p) {
                let sink = (self.make)(p);
                self.sinks.insert(p.clone(), sink);
            }
            if let Some(sink) = self.sinks.get_mut(p) {
                sink.write(&part, part_drops.as_deref())?;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Vec<OutputFile>> {
        let mut out = Vec::new();
        for (_, sink) in self.sinks {
            out.extend(sink.finish()?);
        }
        Ok(out)
    }
}

impl SampleSink for ParquetSink {
    fn write(&mut self, samples: &[Sample], drops: Option<&[DropInfo]>) -> Result<()> {
        if self.with_drop && drops.is_none() {
            return Err(Error::Output {
                path: self.dir.clone(),
                message: "dropped sink without drop reasons".into(),
            });
        }
        for (i, s) in samples.iter().enumerate() {
            self.pending.push(s.clone());
            if let Some(d) = drops.filter(|_| self.with_drop).and_then(|d| d.get(i)) {
                self.pending_drops.push(d.clone());
            }
            self.pending_bytes += sample_bytes(s);
            let in_file = self.current.as_ref().map_or(0, |c| c.2 as usize);
            let room = self.rows_per_file.saturating_sub(in_file).max(1);
            if self.pending.len() >= CHUNK_ROWS.min(room) || self.pending_bytes >= CHUNK_BYTES {
                self.write_pending()?;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<OutputFile>> {
        self.write_pending()?;
        self.close_current()?;
        Ok(self.files)
    }
}

#[derive(Serialize)]
struct DroppedLine<'a> {
    drop: &'a DropInfo,
    sample: &'a Sample,
}

/// JSONL parts `part-00000.jsonl`, …: one sluice record per line (dropped: `{drop, sample}`).
pub struct JsonlSink {
    root: PathBuf,
    dir: PathBuf,
    prefix: String,
    rows_per_file: usize,
    current: Option<(AtomicFile, u64)>,
    files: Vec<OutputFile>,
}

impl JsonlSink {
    /// Parts go to `dir`; paths are reported relative to `root`.
    pub fn new(root: &Path, dir: PathBuf, rows_per_file: usize) -> JsonlSink {
        JsonlSink {
            root: root.to_path_buf(),
            dir,
            prefix: "part".into(),
            rows_per_file,
            current: None,
            files: Vec::new(),
        }
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((f, rows)) = self.current.take() {
            let path = f.path().to_path_buf();
            f.commit()?;
            self.files.push(OutputFile {
                path: rel(&self.root, &path),
                records: rows,
                bytes: file_size(&path),
            });
        }
        Ok(())
    }
}

impl SampleSink for JsonlSink {
    fn write(&mut self, samples: &[Sample], drops: Option<&[DropInfo]>) -> Result<()> {
        let lines: Vec<Vec<u8>> = (0..samples.len())
            .into_par_iter()
            .map(|i| {
                let mut v = match drops {
                    Some(d) => serde_json::to_vec(&DroppedLine {
                        drop: &d[i],
                        sample: &samples[i],
                    }),
                    None => serde_json::to_vec(&samples[i]),
                }
                .unwrap_or_default();
                v.push(b'\n');
                v
            })
            .collect();
        for line in lines {
            if self
                .current
                .as_ref()
                .is_some_and(|c| c.1 as usize >= self.rows_per_file)
            {
                self.close_current()?;
            }
            if self.current.is_none() {
                let path = self
                    .dir
                    .join(format!("{}-{:05}.jsonl", self.prefix, self.files.len()));
                self.current = Some((AtomicFile::create(path)?, 0));
            }
            if let Some((f, rows)) = self.current.as_mut() {
                f.write_all(&line).map_err(|e| Error::io(f.path(), e))?;
                *rows += 1;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<OutputFile>> {
        self.close_current()?;
        Ok(self.files)
    }
}

/// A JSON array written element by element.
struct JsonArray {
    file: AtomicFile,
    count: u64,
}

impl JsonArray {
    fn open(path: PathBuf) -> Result<JsonArray> {
        let mut file = AtomicFile::create(path)?;
        file.write_all(b"[")
            .map_err(|e| Error::io(file.path(), e))?;
        Ok(JsonArray { file, count: 0 })
    }

    fn push(&mut self, value: &impl Serialize) -> Result<()> {
        let sep: &[u8] = if self.count == 0 { b"\n  " } else { b",\n  " };
        let path = self.file.path().to_path_buf();
        self.file.write_all(sep).map_err(|e| Error::io(&path, e))?;
        serde_json::to_writer(&mut self.file, value).map_err(|e| Error::Output {
            path,
            message: e.to_string(),
        })?;
        self.count += 1;
        Ok(())
    }

    fn close(mut self, root: &Path) -> Result<OutputFile> {
        let path = self.file.path().to_path_buf();
        self.file
            .write_all(b"\n]\n")
            .map_err(|e| Error::io(&path, e))?;
        self.file.commit()?;
        Ok(OutputFile {
            path: rel(root, &path),
            records: self.count,
            bytes: file_size(&path),
        })
    }
}

#[derive(Serialize)]
struct ShareTurn<'a> {
    from: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct ShareRecord<'a> {
    conversations: Vec<ShareTurn<'a>>,
    system: &'a str,
    tools: &'a str,
}

#[derive(Serialize)]
struct AlpacaRecord<'a> {
    instruction: &'a str,
    input: &'a str,
    output: &'a str,
    system: &'a str,
    history: Vec<[&'a str; 2]>,
}

#[derive(Serialize)]
struct TextRecord<'a> {
    text: &'a str,
}

/// The LLaMA-Factory export: `<name>.json` for dialogues and `<name>_pretrain.json` for
/// documents, plus `dataset_info.json` entries that LLaMA-Factory's loader accepts. Samples
/// with a `split` tag go to one dataset per split (`<name>_train`, `<name>_valid`,
/// `<name>_test_pretrain`, …): a held-out sample is never in the dataset one trains on.
pub struct LlamaFactorySink {
    root: PathBuf,
    dir: PathBuf,
    name: String,
    style: LlamaFactoryStyle,
    /// Dialogues by dataset name.
    sft: BTreeMap<String, JsonArray>,
    /// Documents by dataset name.
    pretrain: BTreeMap<String, JsonArray>,
}

/// The dataset a sample goes to: `<name>` without a split, else `<name>_<split>` (the split
/// reduced to letters, digits, `-` and `_`).
fn dataset_of(name: &str, s: &Sample) -> String {
    match s.tags.get("split").filter(|v| !v.is_empty()) {
        None => name.to_string(),
        Some(split) => {
            let clean: String = split
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{name}_{clean}")
        }
    }
}

impl LlamaFactorySink {
    /// Files go to `dir` under dataset name `name`.
    pub fn new(
        root: &Path,
        dir: PathBuf,
        name: &str,
        style: LlamaFactoryStyle,
    ) -> LlamaFactorySink {
        LlamaFactorySink {
            root: root.to_path_buf(),
            dir,
            name: name.to_string(),
            style,
            sft: BTreeMap::new(),
            pretrain: BTreeMap::new(),
        }
    }
}

fn sharegpt_role(r: Role) -> &'static str {
    match r {
        Role::User => "human",
        Role::Assistant => "gpt",
        Role::FunctionCall => "function_call",
        Role::Observation => "observation",
    }
}

impl SampleSink for LlamaFactorySink {
    fn write(&mut self, samples: &[Sample], _drops: Option<&[DropInfo]>) -> Result<()> {
        for s in samples {
            let dataset = dataset_of(&self.name, s);
            if let Some(text) = &s.text {
                let name = format!("{dataset}_pretrain");
                if !self.pretrain.contains_key(&name) {
                    let a = JsonArray::open(self.dir.join(format!("{name}.json")))?;
                    self.pretrain.insert(name.clone(), a);
                }
                if let Some(a) = self.pretrain.get_mut(&name) {
                    a.push(&TextRecord { text })?;
                }
                continue;
            }
            if !self.sft.contains_key(&dataset) {
                let a = JsonArray::open(self.dir.join(format!("{dataset}.json")))?;
                self.sft.insert(dataset.clone(), a);
            }
            let Some(out) = self.sft.get_mut(&dataset) else {
                continue;
            };
            let system = s.system.as_deref().unwrap_or("");
            match self.style {
                LlamaFactoryStyle::Sharegpt => out.push(&ShareRecord {
                    conversations: s
                        .turns
                        .iter()
                        .map(|t| ShareTurn {
                            from: sharegpt_role(t.role),
                            value: &t.content,
                        })
                        .collect(),
                    system,
                    tools: s.tools.as_deref().unwrap_or(""),
                })?,
                LlamaFactoryStyle::Alpaca => {
                    if s.turns
                        .iter()
                        .any(|t| matches!(t.role, Role::FunctionCall | Role::Observation))
                    {
                        return Err(Error::Output {
                            path: self.dir.clone(),
                            message: format!("sample {} has tool turns, which the alpaca layout cannot hold: use llamafactory.style = \"sharegpt\"", s.id),
                        });
                    }
                    let pairs: Vec<[&str; 2]> = s
                        .turns
                        .chunks(2)
                        .map(|p| {
                            [
                                p[0].content.as_str(),
                                p.get(1).map_or("", |t| t.content.as_str()),
                            ]
                        })
                        .collect();
                    let Some((last, history)) = pairs.split_last() else {
                        continue;
                    };
                    out.push(&AlpacaRecord {
                        instruction: last[0],
                        input: "",
                        output: last[1],
                        system,
                        history: history.to_vec(),
                    })?
                }
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Vec<OutputFile>> {
        let mut files = Vec::new();
        let mut info = serde_json::Map::new();
        for (name, a) in self.sft {
            let f = a.close(&self.root)?;
            let file_name = format!("{name}.json");
            let entry = match self.style {
                LlamaFactoryStyle::Sharegpt => serde_json::json!({
                    "file_name": file_name,
                    "formatting": "sharegpt",
                    "columns": {"messages": "conversations", "system": "system", "tools": "tools"}
                }),
                LlamaFactoryStyle::Alpaca => serde_json::json!({
                    "file_name": file_name,
                    "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history"}
                }),
            };
            info.insert(name, entry);
            files.push(f);
        }
        for (name, a) in self.pretrain {
            files.push(a.close(&self.root)?);
            info.insert(
                name.clone(),
                serde_json::json!({"file_name": format!("{name}.json"), "columns": {"prompt": "text"}}),
            );
        }
        let path = self.dir.join("dataset_info.json");
        let mut bytes =
            serde_json::to_vec_pretty(&serde_json::Value::Object(info)).map_err(|e| {
                Error::Output {
                    path: path.clone(),
                    message: e.to_string(),
                }
            })?;
        bytes.push(b'\n');
        write_atomic(&path, &bytes)?;
        files.push(OutputFile {
            path: rel(&self.root, &path),
            records: files.len() as u64,
            bytes: bytes.len() as u64,
        });
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // fixtures
    use super::*;

    fn parquet_bytes(samples: &[Sample], cuts: &[usize]) -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink: Box<dyn SampleSink> = Box::new(ParquetSink::new(
            dir.path(),
            dir.path().to_path_buf(),
            3000,
            false,
        ));
        let mut start = 0;
        for &end in cuts.iter().chain([samples.len()].iter()) {
            sink.write(&samples[start..end], None).expect("write");
            start = end;
        }
        let files = sink.finish().expect("finish");
        files
            .iter()
            .map(|f| std::fs::read(dir.path().join(&f.path)).expect("read"))
            .collect()
    }

    #[test]
    fn parquet_bytes_do_not_depend_on_how_samples_were_batched() {
        let samples: Vec<Sample> = (0..7000)
            .map(|i| {
                Sample::document(
                    format!("d{i}"),
                    format!("{i} {}", "文本 ".repeat(i % 397 + 1)),
                )
            })
            .collect();
        let one = parquet_bytes(&samples, &[]);
        assert_eq!(one.len(), 3, "3000 rows per file");
        assert_eq!(parquet_bytes(&samples, &[1, 1000, 1001, 2999, 5000]), one);
        let small: Vec<usize> = (1..7000).step_by(333).collect();
        assert_eq!(parquet_bytes(&samples, &small), one);
    }
}
