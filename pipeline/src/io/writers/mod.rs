//! Writers of curated and dropped samples: Parquet (schema in `schemas/curated.md`), JSONL, and
//! the LLaMA-Factory export. Writers receive samples in output order on one thread and produce
//! byte-identical files for identical input; every file is written atomically.

use crate::error::{Error, Result};
use crate::sample::DropReason;
use crate::sample::Sample;
use crate::storage::AtomicFile;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

mod llamafactory;
mod parquet_sink;

pub use llamafactory::{dataset_info, LlamaFactorySink};
pub use parquet_sink::{sample_schema, ParquetSink};

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
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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
    /// A tokenizing sink: the tokenizer and each sample's content tokens from the last
    /// `write` (see [`crate::tokenize::Encoded::content_tokens`]), so the catalog need not
    /// tokenize the same text again.
    fn content_tokens(&self) -> Option<(&crate::tokenize::TokenizerHandle, &[Option<u64>])> {
        None
    }
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
