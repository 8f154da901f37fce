//! The engine: reads inputs in a fixed order, runs record-wise stages in parallel over batches,
//! runs global stages as map → exchange → reduce → finish → apply, and writes outputs.
//!
//! Determinism: records have a position given by input order alone; rayon's ordered collects
//! keep batch order; global stages sort by (key, position); no hash map's iteration order ever
//! reaches an output. So output bytes do not depend on the thread count.
//!
//! Memory: streaming stages hold one batch. A global stage holds its keys (exact dedup: 16 bytes
//! of hash + 8 of position + the sample id, per sample) and its decisions; the samples
//! themselves wait in a spill file in the staging directory, not in memory.

use crate::config::{OutputFormat, Plan};
use crate::error::{Error, Result};
use crate::exchange::ExchangeWriter;
use crate::io::convert::convert;
use crate::io::writers::{
    DropInfo, JsonlSink, LlamaFactorySink, OutputFile, ParquetSink, SampleSink,
};
use crate::io::{read_file, FileSource, Payload, RawRecord, TextEncoding};
use crate::report::{FileReport, InputReport, Report, StageReport, Timings, Totals};
use crate::sample::Sample;
use crate::stages::{Decisions, DropReason, GlobalStage, Stage, StageCx, Verdict};
use crate::storage::{AtomicFile, RunDir};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of one run that are not part of the pipeline file.
#[derive(Default)]
pub struct RunOptions {
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    /// Overrides the pipeline's `max_reject_ratio`.
    pub max_reject_ratio: Option<f64>,
    /// Overrides the pipeline's output directory.
    pub output_dir: Option<PathBuf>,
    /// Called after each batch with progress.
    pub progress: Option<ProgressFn>,
    /// When set, the run stops at its next batch with [`Error::Cancelled`], publishing nothing.
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// A progress callback.
pub type ProgressFn = Box<dyn Fn(&Progress) + Send + Sync>;

/// Progress of a run.
#[derive(Debug, Clone)]
pub struct Progress {
    /// What is happening (`reading`, `stage 2: exact_dedup`).
    pub phase: String,
    /// Input bytes read so far.
    pub bytes: u64,
    /// Input bytes in all.
    pub total_bytes: u64,
    /// Records handled in this phase.
    pub records: u64,
}

/// The tag that marks a mix's extra copy of a sample (its value is the copy number).
pub const COPY_TAG: &str = "mix_copy";

/// Records per parallel work item: large enough to amortize scheduling, small enough to balance.
const CHUNK: usize = 64;

/// One unit of work for the parallel part.
enum Unit {
    Raw(RawRecord),
    Spilled {
        pos: u64,
        input: usize,
        line: Vec<u8>,
    },
}

/// What happened to one unit.
enum Outcome {
    Rejected {
        input: usize,
        reject: Reject,
    },
    Dropped {
        input: usize,
        stage: usize,
        sample: Sample,
        reason: DropReason,
        format: Option<&'static str>,
    },
    Kept {
        input: usize,
        sample: Sample,
        format: Option<&'static str>,
        /// Extra copies to write (a mix's upsampling).
        copies: u32,
    },
}

/// One line of rejects.jsonl.
#[derive(Serialize)]
struct Reject {
    input: String,
    file: String,
    #[serde(skip_serializing_if = "is_zero")]
    line: u64,
    record: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    split: Option<String>,
    error: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    snippet: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The start of a rejected record, decoded with the file's encoding (never mojibake).
fn snippet(p: &Payload, enc: TextEncoding) -> String {
    const MAX: usize = 200;
    let lossy = |b: &[u8]| -> String {
        match enc {
            TextEncoding::Utf8 => String::from_utf8_lossy(b).into_owned(),
            TextEncoding::Gb18030 => encoding_rs::GB18030
                .decode_without_bom_handling(b)
                .0
                .into_owned(),
        }
    };
    let s = match p {
        Payload::Json(b) | Payload::Text(b) => lossy(&b[..b.len().min(MAX * 4)]),
        Payload::Csv(r) => r.iter().map(lossy).collect::<Vec<_>>().join(","),
        Payload::Value(v) => v.to_string(),
        Payload::Error(_) => String::new(),
    };
    s.chars().take(MAX).collect()
}

/// Per-chunk stage statistics, summed in order after each batch.
#[derive(Default, Clone)]
struct StageStats {
    input: u64,
    kept: u64,
    cpu: Duration,
}

struct ChunkResult {
    outcomes: Vec<Outcome>,
    stats: Vec<StageStats>,
    counters: Vec<BTreeMap<String, u64>>,
}

/// A run in progress.
struct Engine<'p> {
    plan: &'p Plan,
    names: Vec<String>,
    run: RunDir,
    inputs: Vec<InputReport>,
    stage_reports: Vec<StageReport>,
    stage_cpu: Vec<Duration>,
    rejects: Option<AtomicFile>,
    rejects_path: PathBuf,
    file_rejects: BTreeMap<(usize, String), u64>,
    curated: Vec<Box<dyn SampleSink>>,
    dropped: Vec<Box<dyn SampleSink>>,
    bytes_read: Arc<AtomicU64>,
    total_bytes: u64,
    progress: Option<ProgressFn>,
    cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    catalog: crate::catalog::CatalogBuilder,
}

/// Run a compiled pipeline and publish its outputs. Returns the report (also written to
/// report.json); a run over `max_reject_ratio` is published to `<dir>.failed` and returns
/// [`Error::TooManyRejects`].
pub fn run(plan: &Plan, opts: RunOptions) -> Result<Report> {
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Output {
            path: plan.output_dir.clone(),
            message: format!("cannot start worker threads: {e}"),
        })?;
    // `--threads 0` means "all cores": report what the pool really has.
    let threads = pool.current_num_threads();
    pool.install(|| run_in_pool(plan, opts, threads))
}

fn run_in_pool(plan: &Plan, opts: RunOptions, threads: usize) -> Result<Report> {
    let started = Instant::now();
    let out_dir = opts
        .output_dir
        .clone()
        .unwrap_or_else(|| plan.output_dir.clone());
    let run = RunDir::begin(&out_dir)?;
    let root = run.path("");
    let mut curated: Vec<Box<dyn SampleSink>> = Vec::new();
    let mut dropped: Vec<Box<dyn SampleSink>> = Vec::new();
    for f in &plan.formats {
        match f {
            OutputFormat::Parquet => {
                curated.push(Box::new(ParquetSink::new(
                    &root,
                    run.path("curated"),
                    plan.rows_per_file,
                    false,
                )));
                dropped.push(Box::new(ParquetSink::new(
                    &root,
                    run.path("dropped"),
                    plan.rows_per_file,
                    true,
                )));
            }
            OutputFormat::Jsonl => {
                curated.push(Box::new(JsonlSink::new(
                    &root,
                    run.path("curated"),
                    plan.rows_per_file,
                )));
                dropped.push(Box::new(JsonlSink::new(
                    &root,
                    run.path("dropped"),
                    plan.rows_per_file,
                )));
            }
            OutputFormat::Llamafactory => curated.push(Box::new(LlamaFactorySink::new(
                &root,
                run.path("export/llamafactory"),
                &plan.llamafactory_name,
                plan.llamafactory_style,
            ))),
        }
    }
    if let Some(sp) = &plan.shards {
        let sink = crate::io::shard_sink::ShardSink::new(
            &root,
            run.path("shards"),
            run.path(".work"),
            sp,
            plan.seed,
        )
        .map_err(|e| Error::Config {
            file: plan.config_path.clone(),
            issues: vec![crate::error::ConfigIssue {
                key: "output.shards".into(),
                message: e.to_string(),
            }],
        })?;
        curated.push(Box::new(sink));
    }
    if dropped.is_empty() {
        // Dropped samples are always written somewhere, whatever the curated formats are.
        dropped.push(Box::new(JsonlSink::new(
            &root,
            run.path("dropped"),
            plan.rows_per_file,
        )));
    }
    let mut stages: Vec<Stage> = Vec::with_capacity(plan.stages.len());
    for (i, s) in plan.stages.iter().enumerate() {
        stages.push(s.build(plan.seed).map_err(|message| Error::Config {
            file: plan.config_path.clone(),
            issues: vec![crate::error::ConfigIssue {
                key: format!("stages[{i}] ({})", s.type_name()),
                message,
            }],
        })?);
    }
    let dims = match &plan.catalog.dimensions {
        Some(d) => d.clone(),
        None => {
            let mut d = vec!["lang".to_string(), "split".to_string()];
            for s in &stages {
                if let Stage::Record(r) = s {
                    for t in r.dimensions() {
                        if !d.contains(&t) {
                            d.push(t);
                        }
                    }
                }
            }
            d
        }
    };
    let counter = crate::catalog::TokenCounter::new(plan.catalog.tokenizer.as_deref()).map_err(
        |message| Error::Config {
            file: plan.config_path.clone(),
            issues: vec![crate::error::ConfigIssue {
                key: "output.catalog.tokenizer".into(),
                message,
            }],
        },
    )?;
    let names: Vec<String> = plan
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| format!("stages[{i}].{}", s.type_name()))
        .collect();
    let total_bytes = plan
        .inputs
        .iter()
        .flat_map(|i| i.files.iter())
        .map(|(p, _)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    let mut engine = Engine {
        plan,
        names,
        inputs: plan
            .inputs
            .iter()
            .map(|i| InputReport {
                name: i.name.clone(),
                ..Default::default()
            })
            .collect(),
        stage_reports: plan
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| StageReport {
                index: i,
                kind: s.type_name().to_string(),
                ..Default::default()
            })
            .collect(),
        stage_cpu: vec![Duration::ZERO; stages.len()],
        rejects: Some(AtomicFile::create(run.path("rejects.jsonl"))?),
        rejects_path: run.path("rejects.jsonl"),
        file_rejects: BTreeMap::new(),
        run,
        curated,
        dropped,
        bytes_read: Arc::new(AtomicU64::new(0)),
        total_bytes,
        progress: opts.progress,
        cancel: opts.cancel,
        catalog: crate::catalog::CatalogBuilder::new(dims, counter),
    };
    engine.execute(&stages)?;
    let report = engine.finish(
        started,
        threads,
        opts.max_reject_ratio.unwrap_or(plan.max_reject_ratio),
    )?;
    // Only a published run may change state that later runs read (e.g. a dedup index).
    for (i, s) in stages.iter().enumerate() {
        s.commit().map_err(|message| Error::Output {
            path: plan.config_path.clone(),
            message: format!("stages[{i}]: {message}"),
        })?;
    }
    Ok(report)
}

/// Where a segment's records come from.
enum Source {
    Inputs,
    Spill {
        path: PathBuf,
        decisions: Decisions,
        stage: usize,
    },
}

impl Engine<'_> {
    /// Split the stage list at global stages and run each segment.
    fn execute(&mut self, stages: &[Stage]) -> Result<()> {
        let mut source = Source::Inputs;
        let mut start = 0;
        let mut spill_no = 0;
        loop {
            let global = (start..stages.len()).find(|&i| !matches!(stages[i], Stage::Record(_)));
            let end = global.unwrap_or(stages.len());
            let record_stages: Vec<usize> = (start..end).collect();
            match global {
                None => {
                    self.segment(stages, source, &record_stages, None)?;
                    return Ok(());
                }
                Some(g) => {
                    let spill = self.run.path(&format!(".work/spill-{spill_no}.jsonl"));
                    spill_no += 1;
                    let decisions =
                        self.segment(stages, source, &record_stages, Some((g, spill.clone())))?;
                    source = Source::Spill {
                        path: spill,
                        decisions,
                        stage: g,
                    };
                    start = g + 1;
                }
            }
        }
    }

    /// Run one segment: its source, its record-wise stages, then either the final sinks or the
    /// map side of global stage `g` (samples spilled to `spill`). Returns g's decisions.
    fn segment(
        &mut self,
        stages: &[Stage],
        source: Source,
        record_stages: &[usize],
        global: Option<(usize, PathBuf)>,
    ) -> Result<Decisions> {
        let mut spill_out = match &global {
            Some((_, p)) => Some(AtomicFile::create(p)?),
            None => None,
        };
        let mut collector = match &global {
            Some((g, spill)) => {
                let dir = spill.with_extension("exchange");
                match &stages[*g] {
                    Stage::ExactDedup(d) => {
                        Some(Collector::ExactDedup(ExchangeWriter::create(d, &dir)?))
                    }
                    Stage::Minhash(m) => {
                        Some(Collector::Minhash(ExchangeWriter::create(&**m, &dir)?))
                    }
                    Stage::Split(s) => Some(Collector::Split(ExchangeWriter::create(s, &dir)?)),
                    Stage::Mix(m) => Some(Collector::Mix(ExchangeWriter::create(&**m, &dir)?)),
                    Stage::Record(_) => None, // segments end at global stages only
                }
            }
            None => None,
        };
        let mut pos = 0u64;
        let mut records = 0u64;
        let after = match &source {
            Source::Inputs => "reading".to_string(),
            Source::Spill { stage, .. } => format!("applying {}", self.names[*stage]),
        };
        let phase = match &global {
            Some((g, _)) => format!("{after} → {}", self.names[*g]),
            None => format!("{after} → writing"),
        };
        let mut on_batch = |eng: &mut Engine<'_>,
                            batch: Vec<Unit>,
                            decisions: Option<(&Decisions, usize)>|
         -> Result<()> {
            if eng
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                return Err(Error::Cancelled);
            }
            records += batch.len() as u64;
            let kept = eng.process_batch(stages, batch, record_stages, decisions)?;
            match (&mut collector, &mut spill_out) {
                (Some(c), Some(out)) => {
                    let lines: Vec<Vec<u8>> = kept
                        .par_iter()
                        .map(|(input, s)| {
                            let mut v = format!("{input}\t").into_bytes();
                            v.extend(serde_json::to_vec(s).unwrap_or_default());
                            v.push(b'\n');
                            v
                        })
                        .collect();
                    for l in &lines {
                        out.write_all(l).map_err(|e| Error::io(out.path(), e))?;
                    }
                    let started = Instant::now();
                    c.map(&kept)?;
                    if let Some((g, _)) = &global {
                        eng.stage_cpu[*g] += started.elapsed();
                    }
                    pos += kept.len() as u64;
                }
                _ => eng.emit_kept(kept)?,
            }
            if let Some(p) = &eng.progress {
                p(&Progress {
                    phase: phase.clone(),
                    bytes: eng.bytes_read.load(Ordering::Relaxed),
                    total_bytes: eng.total_bytes,
                    records,
                });
            }
            Ok(())
        };

        match source {
            Source::Inputs => {
                let batch_size = self.plan.batch_size;
                let mut batch = Vec::with_capacity(batch_size);
                for (i, input) in self.plan.inputs.iter().enumerate() {
                    let iplan = Arc::new(input.clone());
                    for (path, display) in &input.files {
                        let mut records_in_file = 0u64;
                        let bytes_read = self.bytes_read.clone();
                        let mut meta = None;
                        let src = FileSource {
                            input: i,
                            plan: &iplan,
                            path,
                            display,
                            max_record_bytes: self.plan.max_record_bytes,
                            bytes_read: &bytes_read,
                        };
                        let status = read_file(&src, &mut |rec| {
                            records_in_file += 1;
                            if meta.is_none() {
                                meta = Some((
                                    format!("{:?}", rec.cx.reader).to_lowercase(),
                                    rec.cx.encoding.as_str().to_string(),
                                ));
                            }
                            batch.push(Unit::Raw(rec));
                            if batch.len() >= batch_size {
                                let full =
                                    std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                                on_batch(self, full, None)?;
                            }
                            Ok(())
                        })?;
                        let (reader, encoding) = meta.unwrap_or_default();
                        let mut fr = FileReport {
                            path: display.clone(),
                            reader,
                            encoding,
                            records: records_in_file,
                            bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
                            ..Default::default()
                        };
                        // The reader already emitted the error as the file's last record.
                        fr.error = status.err();
                        self.inputs[i].read += fr.records;
                        self.inputs[i].files.push(fr);
                    }
                }
                if !batch.is_empty() {
                    on_batch(self, batch, None)?;
                }
            }
            Source::Spill {
                path,
                decisions,
                stage,
            } => {
                let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                let reader = BufReader::with_capacity(1 << 20, file);
                let mut batch = Vec::with_capacity(self.plan.batch_size);
                for (n, line) in reader.split(b'\n').enumerate() {
                    let mut line = line.map_err(|e| Error::io(&path, e))?;
                    let tab = line.iter().position(|&b| b == b'\t').unwrap_or(0);
                    let input = std::str::from_utf8(&line[..tab])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    line.drain(..=tab);
                    batch.push(Unit::Spilled {
                        pos: n as u64,
                        input,
                        line,
                    });
                    if batch.len() >= self.plan.batch_size {
                        let full =
                            std::mem::replace(&mut batch, Vec::with_capacity(self.plan.batch_size));
                        on_batch(self, full, Some((&decisions, stage)))?;
                    }
                }
                if !batch.is_empty() {
                    on_batch(self, batch, Some((&decisions, stage)))?;
                }
                let _ = std::fs::remove_file(&path);
            }
        }
        if let Some(out) = spill_out {
            out.commit()?;
        }
        let Some((g, _)) = global else {
            return Ok(Decisions::new());
        };
        let started = Instant::now();
        let decisions = match collector {
            Some(c) => c.resolve()?,
            None => Decisions::new(),
        };
        self.stage_cpu[g] += started.elapsed();
        if let Stage::Mix(m) = &stages[g] {
            match m.summary() {
                Some(Ok(summary)) => {
                    self.stage_reports[g].details = serde_json::to_value(summary).ok();
                }
                Some(Err(message)) => {
                    return Err(Error::Config {
                        file: self.plan.config_path.clone(),
                        issues: vec![crate::error::ConfigIssue {
                            key: self.names[g].clone(),
                            message,
                        }],
                    })
                }
                None => {}
            }
        }
        let report = &mut self.stage_reports[g];
        report.input = pos;
        report.kept = pos - decisions.values().filter(|d| d.drop.is_some()).count() as u64;
        Ok(decisions)
    }

    /// Parallel part of a batch, then in-order accounting. Returns kept samples with their input.
    fn process_batch(
        &mut self,
        stages: &[Stage],
        batch: Vec<Unit>,
        record_stages: &[usize],
        decisions: Option<(&Decisions, usize)>,
    ) -> Result<Vec<(usize, Sample)>> {
        let seed = self.plan.seed;
        let inputs = &self.plan.inputs;
        let n_stages = stages.len();
        let chunks: Vec<ChunkResult> = batch
            .par_chunks(CHUNK)
            .map(|chunk| {
                let mut cx = StageCx::new(seed);
                let mut stats = vec![StageStats::default(); n_stages];
                let mut counters = vec![BTreeMap::new(); n_stages];
                let outcomes = chunk
                    .iter()
                    .map(|unit| {
                        let mut copies = 0;
                        let (input, sample, format) = match unit {
                            Unit::Raw(rec) => match convert(rec) {
                                Ok((s, f)) => (rec.cx.input, s, Some(f.as_str())),
                                Err(error) => {
                                    return Outcome::Rejected {
                                        input: rec.cx.input,
                                        reject: Reject {
                                            input: inputs[rec.cx.input].name.clone(),
                                            file: rec.cx.file.to_string(),
                                            line: rec.line,
                                            record: rec.number,
                                            split: rec.split.as_ref().map(|s| s.to_string()),
                                            error,
                                            snippet: snippet(&rec.payload, rec.cx.encoding),
                                        },
                                    }
                                }
                            },
                            Unit::Spilled { pos, input, line } => {
                                let sample: Sample = match serde_json::from_slice(line) {
                                    Ok(s) => s,
                                    Err(e) => {
                                        return Outcome::Rejected {
                                            input: *input,
                                            reject: Reject {
                                                input: inputs[*input].name.clone(),
                                                file: "<spill>".into(),
                                                line: *pos + 1,
                                                record: *pos + 1,
                                                split: None,
                                                error: format!(
                                                    "internal spill record unreadable: {e}"
                                                ),
                                                snippet: String::new(),
                                            },
                                        }
                                    }
                                };
                                let mut sample = sample;
                                if let Some((d, g)) = decisions {
                                    if let Some(decision) = d.get(pos) {
                                        copies = decision.repeat;
                                        for (k, v) in &decision.tags {
                                            sample.tags.insert(k.clone(), v.clone());
                                        }
                                        if let Some(reason) = &decision.drop {
                                            return Outcome::Dropped {
                                                input: *input,
                                                stage: g,
                                                sample,
                                                reason: reason.clone(),
                                                format: None,
                                            };
                                        }
                                    }
                                }
                                (*input, sample, None)
                            }
                        };
                        let mut sample = sample;
                        for &si in record_stages {
                            let Stage::Record(stage) = &stages[si] else {
                                continue;
                            };
                            cx.counters.clear();
                            let t = Instant::now();
                            let verdict = stage.process(sample, &mut cx);
                            stats[si].cpu += t.elapsed();
                            stats[si].input += 1;
                            for (k, v) in std::mem::take(&mut cx.counters) {
                                *counters[si].entry(k).or_default() += v;
                            }
                            match verdict {
                                Verdict::Keep(s) => {
                                    stats[si].kept += 1;
                                    sample = s;
                                }
                                Verdict::Drop(s, reason) => {
                                    return Outcome::Dropped {
                                        input,
                                        stage: si,
                                        sample: s,
                                        reason,
                                        format,
                                    }
                                }
                            }
                        }
                        Outcome::Kept {
                            input,
                            sample,
                            format,
                            copies,
                        }
                    })
                    .collect();
                ChunkResult {
                    outcomes,
                    stats,
                    counters,
                }
            })
            .collect();

        let mut kept = Vec::new();
        let mut dropped: Vec<Sample> = Vec::new();
        let mut drop_infos: Vec<DropInfo> = Vec::new();
        for chunk in chunks {
            for (si, st) in chunk.stats.iter().enumerate() {
                self.stage_reports[si].input += st.input;
                self.stage_reports[si].kept += st.kept;
                self.stage_cpu[si] += st.cpu;
            }
            for (si, c) in chunk.counters.into_iter().enumerate() {
                for (k, v) in c {
                    *self.stage_reports[si].counters.entry(k).or_default() += v;
                }
            }
            for o in chunk.outcomes {
                match o {
                    Outcome::Rejected { input, reject } => self.reject(input, reject)?,
                    Outcome::Dropped {
                        input,
                        stage,
                        sample,
                        reason,
                        format,
                    } => {
                        let rep = &mut self.inputs[input];
                        if let Some(f) = format {
                            *rep.formats.entry(f.to_string()).or_default() += 1;
                        }
                        rep.dropped += 1;
                        *rep.dropped_by
                            .entry(format!("{}/{}", self.names[stage], reason.code))
                            .or_default() += 1;
                        *self.stage_reports[stage]
                            .dropped
                            .entry(reason.code.to_string())
                            .or_default() += 1;
                        drop_infos.push(DropInfo::new(&self.names[stage], &reason));
                        dropped.push(sample);
                    }
                    Outcome::Kept {
                        input,
                        sample,
                        format,
                        copies,
                    } => {
                        if let Some(f) = format {
                            *self.inputs[input].formats.entry(f.to_string()).or_default() += 1;
                        }
                        for n in 1..=copies {
                            let mut copy = sample.clone();
                            copy.id = format!("{}#r{n}", sample.id);
                            copy.tags.insert(COPY_TAG.to_string(), n.to_string());
                            kept.push((input, copy));
                        }
                        kept.push((input, sample));
                    }
                }
            }
        }
        if !dropped.is_empty() {
            for sink in &mut self.dropped {
                sink.write(&dropped, Some(&drop_infos))?;
            }
        }
        Ok(kept)
    }

    fn reject(&mut self, input: usize, reject: Reject) -> Result<()> {
        self.inputs[input].rejected += 1;
        *self
            .file_rejects
            .entry((input, reject.file.clone()))
            .or_default() += 1;
        let mut line = serde_json::to_vec(&reject).unwrap_or_default();
        line.push(b'\n');
        match self.rejects.as_mut() {
            Some(f) => f
                .write_all(&line)
                .map_err(|e| Error::io(&self.rejects_path, e)),
            None => Ok(()),
        }
    }

    fn emit_kept(&mut self, kept: Vec<(usize, Sample)>) -> Result<()> {
        if kept.is_empty() {
            return Ok(());
        }
        let mut samples = Vec::with_capacity(kept.len());
        for (input, s) in kept {
            if s.tags.contains_key(COPY_TAG) {
                self.inputs[input].copies += 1;
            } else {
                self.inputs[input].kept += 1;
            }
            samples.push(s);
        }
        for sink in &mut self.curated {
            sink.write(&samples, None)?;
        }
        self.catalog.add(&samples);
        Ok(())
    }

    fn finish(mut self, started: Instant, threads: usize, max_reject_ratio: f64) -> Result<Report> {
        let mut outputs: Vec<OutputFile> = Vec::new();
        for sink in self.curated.drain(..).chain(self.dropped.drain(..)) {
            outputs.extend(sink.finish()?);
        }
        let rejects_path = self.rejects_path.clone();
        if let Some(r) = self.rejects.take() {
            r.commit()?;
        }
        for (i, input) in self.inputs.iter_mut().enumerate() {
            for f in &mut input.files {
                f.rejected = self
                    .file_rejects
                    .get(&(i, f.path.clone()))
                    .copied()
                    .unwrap_or(0);
            }
        }
        let _ = std::fs::remove_dir_all(self.run.path(".work"));
        let mut totals = Totals::default();
        for i in &self.inputs {
            totals.read += i.read;
            totals.kept += i.kept;
            totals.copies += i.copies;
            totals.dropped += i.dropped;
            totals.rejected += i.rejected;
        }
        outputs.push(OutputFile {
            path: "rejects.jsonl".into(),
            records: totals.rejected,
            bytes: std::fs::metadata(&rejects_path).map_or(0, |m| m.len()),
        });
        let files = if self.plan.formats.contains(&OutputFormat::Parquet) {
            "curated/*.parquet"
        } else {
            "curated/*.jsonl"
        };
        let catalog_path = self.run.path(crate::catalog::CATALOG_FILE);
        self.catalog.write(&catalog_path, &self.plan.name, files)?;
        outputs.push(OutputFile {
            path: crate::catalog::CATALOG_FILE.into(),
            records: self.catalog.rows() as u64,
            bytes: std::fs::metadata(&catalog_path).map_or(0, |m| m.len()),
        });
        outputs.sort_by(|a, b| a.path.cmp(&b.path));
        let elapsed = started.elapsed().as_secs_f64();
        let bytes = self.bytes_read.load(Ordering::Relaxed) as f64;
        let too_many =
            totals.read > 0 && totals.rejected as f64 > max_reject_ratio * totals.read as f64;
        let mut report = Report {
            sluice_version: env!("CARGO_PKG_VERSION").to_string(),
            run: self.plan.name.clone(),
            status: "succeeded".into(),
            seed: self.plan.seed,
            reconciled: self.inputs.iter().all(InputReport::reconciles),
            totals,
            inputs: std::mem::take(&mut self.inputs),
            stages: std::mem::take(&mut self.stage_reports),
            outputs,
            tags: self.catalog.distributions(),
            timings: Timings {
                total_seconds: elapsed,
                stage_cpu_seconds: self
                    .names
                    .iter()
                    .zip(&self.stage_cpu)
                    .map(|(n, d)| (n.clone(), d.as_secs_f64()))
                    .collect(),
                input_mb_per_second: bytes / 1e6 / elapsed.max(1e-9),
                records_per_second: 0.0,
                threads,
            },
        };
        report.timings.records_per_second = report.totals.read as f64 / elapsed.max(1e-9);
        if too_many {
            report.status = format!(
                "failed: {} of {} records rejected, over max_reject_ratio {}",
                report.totals.rejected, report.totals.read, max_reject_ratio
            );
        }
        let mut json = serde_json::to_vec_pretty(&report).unwrap_or_default();
        json.push(b'\n');
        crate::storage::write_atomic(&self.run.path("report.json"), &json)?;
        if too_many {
            let mut failed = self.run.final_dir().as_os_str().to_owned();
            failed.push(".failed");
            let dest = self.run.publish_to(PathBuf::from(failed))?;
            return Err(Error::TooManyRejects {
                rejected: report.totals.rejected,
                read: report.totals.read,
                max_ratio: max_reject_ratio,
                rejects: dest.join("rejects.jsonl"),
            });
        }
        self.run.publish()?;
        Ok(report)
    }
}

/// The map side of each global stage, by type.
enum Collector<'s> {
    ExactDedup(ExchangeWriter<'s, crate::stages::exact_dedup::ExactDedup>),
    Minhash(ExchangeWriter<'s, crate::stages::minhash::MinHash>),
    Split(ExchangeWriter<'s, crate::stages::split::Split>),
    Mix(ExchangeWriter<'s, crate::stages::mix::Mix>),
}

impl Collector<'_> {
    fn map(&mut self, kept: &[(usize, Sample)]) -> Result<()> {
        match self {
            Collector::ExactDedup(c) => c.map(kept),
            Collector::Minhash(c) => c.map(kept),
            Collector::Split(c) => c.map(kept),
            Collector::Mix(c) => c.map(kept),
        }
    }

    fn resolve(self) -> Result<Decisions> {
        match self {
            Collector::ExactDedup(c) => resolve_exchange(c),
            Collector::Minhash(c) => resolve_exchange(c),
            Collector::Split(c) => resolve_exchange(c),
            Collector::Mix(c) => resolve_exchange(c),
        }
    }
}

/// Close the map side, reduce and finish, then remove the exchange files.
fn resolve_exchange<G: GlobalStage>(writer: ExchangeWriter<'_, G>) -> Result<Decisions> {
    let stage = writer.stage();
    let exchange = writer.finish()?;
    let decisions = exchange.resolve(stage);
    exchange.remove();
    decisions
}
