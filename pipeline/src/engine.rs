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
use crate::io::convert::convert;
use crate::io::writers::{
    DropInfo, JsonlSink, LlamaFactorySink, OutputFile, ParquetSink, SampleSink, SplitSink,
};
use crate::io::{read_file, FileSource, Payload, RawRecord, TextEncoding};
use crate::report::{FileReport, InputReport, Report, StageReport, Timings, Totals};
use crate::sample::Sample;
use crate::stages::{Decisions, DropReason, Stage, StageCx, Verdict};
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
    /// Run as one task of several (see [`TaskRun`]); `None`: the whole run in this process.
    pub task: Option<TaskRun>,
    /// A trial: read only the first this many records of each input (`sluice run --limit`).
    pub limit: Option<u64>,
}

/// One task of a task-sharded run. Task `i` of `N` reads a contiguous, byte-balanced range of
/// the input files and runs the record-wise stages on it; each global stage's map output goes
/// to the shared work directory, task 0 merges the exchanges (the stage's preloaded index
/// first) and reduces them once, and every task applies the decisions to its own records.
/// Task 0 finally replays every task's outputs in input order, in the batches a
/// single-process run would have formed, so the published run is byte-identical to it.
#[derive(Debug, Clone)]
pub struct TaskRun {
    /// Which task.
    pub spec: crate::tasks::TaskSpec,
    /// The work directory every task shares (intermediate files and completion markers).
    pub work: PathBuf,
    /// Identifies the run (pipeline and task count): markers of other runs are ignored.
    pub run_key: String,
    /// How long a task waits for the others at a phase boundary.
    pub timeout: Duration,
    /// The shared work folder as an object-storage URL, for tasks that share no filesystem:
    /// markers, map outputs, decisions and streams go there; `work` is then this machine's
    /// local scratch.
    pub shared: Option<String>,
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
    run: Option<RunDir>,
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
    /// Records to read per input at most (a trial).
    limit: Option<u64>,
    cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    catalog: crate::catalog::CatalogBuilder,
    task: Option<TaskState>,
    /// Task 0's coordinated phases and their wall seconds.
    phase_times: BTreeMap<String, f64>,
}

/// A task's side of a task-sharded run.
struct TaskState {
    run: TaskRun,
    /// This task's own folder under the work directory.
    own: PathBuf,
    markers: crate::tasks::Markers,
    /// Indexes into the flattened (input, file) list that this task reads.
    files: std::ops::Range<usize>,
    /// Current segment.
    segment: usize,
    /// Units (records read, or spilled samples) each segment handled.
    units: Vec<u64>,
    dropped: Option<std::io::BufWriter<std::fs::File>>,
    kept: Option<std::io::BufWriter<std::fs::File>>,
}

impl TaskState {
    /// Where others find this attempt's shared files: its folder, or its URL.
    fn shared_dir(&self) -> String {
        match &self.run.shared {
            Some(url) => format!(
                "{url}/task-{:05}/{}",
                self.run.spec.index,
                self.own
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            None => self.own.to_string_lossy().into_owned(),
        }
    }

    /// Publish files of this attempt for the other tasks (a no-op on a shared filesystem).
    fn share(&self, sub: &str, names: &[String]) -> Result<()> {
        let Some(_) = &self.run.shared else {
            return Ok(());
        };
        let local = if sub.is_empty() {
            self.own.clone()
        } else {
            self.own.join(sub)
        };
        let url = if sub.is_empty() {
            self.shared_dir()
        } else {
            format!("{}/{sub}", self.shared_dir())
        };
        crate::remote::put_files(&local, names, &url).map_err(|message| Error::Output {
            path: local.clone(),
            message,
        })
    }

    /// A local folder holding what another task shared under `dir` (+ `sub`).
    fn fetch(&self, dir: &str, sub: &str, label: &str) -> Result<PathBuf> {
        if !crate::remote::is_url(dir) {
            return Ok(PathBuf::from(dir).join(sub));
        }
        let local = self.own.join("fetched").join(label).join(sub);
        if local.exists() {
            std::fs::remove_dir_all(&local).map_err(|e| Error::io(&local, e))?;
        }
        let url = if sub.is_empty() {
            dir.to_string()
        } else {
            format!("{dir}/{sub}")
        };
        crate::remote::get_dir(&url, &local).map_err(|message| Error::Output {
            path: local.clone(),
            message,
        })?;
        Ok(local)
    }
}

/// One line of a task's dropped or kept stream.
#[derive(Serialize, serde::Deserialize)]
struct StreamLine {
    /// Unit index within the segment, in this task.
    u: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duplicate_of: Option<String>,
    sample: Sample,
}

impl StreamLine {
    /// Append as one JSON line.
    fn write(&self, out: &mut impl Write, path: &std::path::Path) -> Result<()> {
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        out.write_all(&bytes).map_err(|e| Error::io(path, e))
    }
}

/// A task's counts, for task 0's merge.
#[derive(Serialize, serde::Deserialize)]
struct Partial {
    inputs: Vec<InputReport>,
    stages: Vec<StageReport>,
    stage_cpu: Vec<f64>,
    file_rejects: Vec<(usize, String, u64)>,
    units: Vec<u64>,
    bytes_read: u64,
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
    let publishes = opts.task.as_ref().is_none_or(|t| t.spec.index == 0);
    let staged = opts
        .output_dir
        .clone()
        .unwrap_or_else(|| plan.output_dir.clone());
    let report = pool.install(|| run_in_pool(plan, opts, threads))?;
    if let (Some(url), true) = (&plan.output_url, publishes) {
        crate::remote::upload(&staged, url).map_err(|message| Error::Output {
            path: staged.clone(),
            message,
        })?;
    }
    Ok(report)
}

/// Output sinks.
type Sinks = Vec<Box<dyn SampleSink>>;
/// Unit index of each kept sample within its segment.
type Units = Vec<u64>;

fn make_sinks(plan: &Plan, run: &RunDir) -> Result<(Sinks, Sinks)> {
    let root = run.path("");
    let mut curated: Vec<Box<dyn SampleSink>> = Vec::new();
    let mut dropped: Vec<Box<dyn SampleSink>> = Vec::new();
    for f in &plan.formats {
        match f {
            OutputFormat::Parquet => {
                // Curated files per split (`train-00000.parquet`, …; `part-…` without one).
                let (r, dir, rows) = (root.clone(), run.path("curated"), plan.rows_per_file);
                curated.push(Box::new(SplitSink::new(Box::new(move |prefix: &str| {
                    Box::new(ParquetSink::new(&r, dir.clone(), rows, false).with_prefix(prefix))
                        as Box<dyn SampleSink>
                }))));
                dropped.push(Box::new(ParquetSink::new(
                    &root,
                    run.path("dropped"),
                    plan.rows_per_file,
                    true,
                )));
            }
            OutputFormat::Jsonl => {
                let (r, dir, rows) = (root.clone(), run.path("curated"), plan.rows_per_file);
                curated.push(Box::new(SplitSink::new(Box::new(move |prefix: &str| {
                    Box::new(JsonlSink::new(&r, dir.clone(), rows).with_prefix(prefix))
                        as Box<dyn SampleSink>
                }))));
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
    Ok((curated, dropped))
}

fn run_in_pool(plan: &Plan, opts: RunOptions, threads: usize) -> Result<Report> {
    let started = Instant::now();
    let out_dir = opts
        .output_dir
        .clone()
        .unwrap_or_else(|| plan.output_dir.clone());
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
    // The catalog counts with the shards' tokenizer unless it names its own: say which key.
    let from_shards = plan.catalog.tokenizer.is_some()
        && plan.shards.as_ref().and_then(|s| s.tokenizer.as_ref())
            == plan.catalog.tokenizer.as_ref();
    let counter = crate::catalog::TokenCounter::new(plan.catalog.tokenizer.as_deref()).map_err(
        |message| Error::Config {
            file: plan.config_path.clone(),
            issues: vec![crate::error::ConfigIssue {
                key: if from_shards {
                    "output.shards.tokenizer"
                } else {
                    "output.catalog.tokenizer"
                }
                .into(),
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
    let sizes: Vec<u64> = plan
        .inputs
        .iter()
        .flat_map(|i| i.files.iter())
        .map(|(p, _)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .collect();
    let total_bytes = sizes.iter().sum();
    let (run, curated, dropped, task, rejects_path) = match opts.task.clone() {
        None => {
            let run = RunDir::begin(&out_dir)?;
            let (curated, dropped) = make_sinks(plan, &run)?;
            let rejects = run.path("rejects.jsonl");
            (Some(run), curated, dropped, None, rejects)
        }
        Some(t) => {
            // Every attempt of a task writes a folder of its own and names it in its markers:
            // a re-run after a failure redoes the task's part from the start without touching
            // files another task may be reading (those of an attempt whose marker it saw).
            let attempt = format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            );
            let own = t
                .work
                .join(format!("task-{:05}", t.spec.index))
                .join(attempt);
            #[allow(clippy::disallowed_methods)] // a scratch directory
            std::fs::create_dir_all(&own).map_err(|e| Error::io(&own, e))?;
            let files = crate::tasks::assign(&sizes, t.spec.count)
                .get(t.spec.index)
                .cloned()
                .unwrap_or(0..0);
            let markers = match &t.shared {
                Some(url) => crate::tasks::Markers::remote(&format!("{url}/markers"), &t.run_key),
                None => crate::tasks::Markers::new(&t.work.join("markers"), &t.run_key),
            };
            let rejects = own.join("rejects.jsonl");
            let state = TaskState {
                run: t,
                own,
                markers,
                files,
                segment: 0,
                units: Vec::new(),
                dropped: None,
                kept: None,
            };
            (None, Vec::new(), Vec::new(), Some(state), rejects)
        }
    };
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
        rejects: Some(AtomicFile::create(rejects_path.clone())?),
        rejects_path,
        file_rejects: BTreeMap::new(),
        run,
        curated,
        dropped,
        bytes_read: Arc::new(AtomicU64::new(0)),
        total_bytes,
        progress: opts.progress,
        limit: opts.limit,
        cancel: opts.cancel,
        catalog: crate::catalog::CatalogBuilder::new(dims, counter),
        task,
        phase_times: BTreeMap::new(),
    };
    engine.execute(&stages)?;
    let max_ratio = opts.max_reject_ratio.unwrap_or(plan.max_reject_ratio);
    let report = match engine.task.as_ref().map(|t| t.run.spec) {
        None => engine.finish(started, threads, max_ratio)?,
        Some(spec) => {
            engine.task_done()?;
            if spec.index != 0 {
                return Ok(engine.task_report(started, threads));
            }
            let work = engine
                .task
                .as_ref()
                .map(|t| (t.run.work.clone(), t.run.shared.clone()));
            engine.merge_tasks(&out_dir)?;
            let report = engine.finish(started, threads, max_ratio)?;
            if let Some((local, shared)) = work {
                let _ = std::fs::remove_dir_all(local);
                if let Some(url) = shared {
                    let _ = crate::remote::delete_prefix(&url);
                }
            }
            report
        }
    };
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
            self.begin_segment(spill_no, global.is_none())?;
            match global {
                None => {
                    self.segment(stages, source, &record_stages, None)?;
                    return Ok(());
                }
                Some(g) => {
                    let spill = self.scratch(&format!("spill-{spill_no}.jsonl"));
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

    /// Where intermediate files go: the run's `.work`, or this task's folder.
    fn scratch(&self, name: &str) -> PathBuf {
        match (&self.task, &self.run) {
            (Some(t), _) => t.own.join(name),
            (None, Some(run)) => run.path(&format!(".work/{name}")),
            (None, None) => self.plan.output_dir.join(".work").join(name),
        }
    }

    /// In a task: start segment `seg`'s dropped stream (and the kept stream for the last).
    fn begin_segment(&mut self, seg: usize, last: bool) -> Result<()> {
        let Some(t) = self.task.as_mut() else {
            return Ok(());
        };
        if let Some(mut d) = t.dropped.take() {
            d.flush().map_err(|e| Error::io(&t.own, e))?;
        }
        t.segment = seg;
        t.units.push(0);
        t.dropped = Some(crate::storage::scratch(
            &t.own.join(format!("dropped-{seg}.jsonl")),
            1 << 20,
        )?);
        if last {
            t.kept = Some(crate::storage::scratch(&t.own.join("kept.jsonl"), 1 << 20)?);
        }
        Ok(())
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
            // A task maps only its own records; task 0 adds the preloaded ones at the merge.
            Some((g, spill)) => match &stages[*g] {
                Stage::Global(op) => {
                    Some(op.open(&spill.with_extension("exchange"), self.task.is_some())?)
                }
                Stage::Record(_) => None, // segments end at global stages only
            },
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
            let base = records;
            records += batch.len() as u64;
            let (kept, units) = eng.process_batch(stages, batch, record_stages, decisions, base)?;
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
                _ => eng.emit_kept(kept, &units)?,
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
                let mut cut = BatchCut::new(self.plan);
                let mut flat = 0usize;
                let limit = self.limit;
                let cancel_flag = self.cancel.clone();
                for (i, input) in self.plan.inputs.iter().enumerate() {
                    let iplan = Arc::new(input.clone());
                    let mut taken = 0u64;
                    for (path, display) in &input.files {
                        flat += 1;
                        if limit.is_some_and(|l| taken >= l) {
                            break; // a trial: this input has given its records
                        }
                        if let Some(t) = &self.task {
                            if !t.files.contains(&(flat - 1)) {
                                continue;
                            }
                        }
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
                            cancel: cancel_flag.as_deref(),
                        };
                        let status = read_file(&src, &mut |rec| {
                            if limit.is_some_and(|l| taken >= l) {
                                return Err(Error::LimitReached);
                            }
                            taken += 1;
                            records_in_file += 1;
                            if meta.is_none() {
                                meta = Some((
                                    format!("{:?}", rec.cx.reader).to_lowercase(),
                                    rec.cx.encoding.as_str().to_string(),
                                    rec.cx.encoding_why.to_string(),
                                ));
                            }
                            let full = cut.add(rec.size());
                            batch.push(Unit::Raw(rec));
                            if full {
                                let full =
                                    std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                                on_batch(self, full, None)?;
                            }
                            Ok(())
                        });
                        let status = match status {
                            Err(Error::LimitReached) => Ok(Ok(())),
                            other => other,
                        }?;
                        let (reader, encoding, encoding_why) = meta.unwrap_or_default();
                        let mut fr = FileReport {
                            path: display.clone(),
                            reader,
                            encoding,
                            encoding_why,
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
                // A cancel that came while files gave no record (their reads stopped with an
                // error) still cancels: nothing is published.
                if self
                    .cancel
                    .as_ref()
                    .is_some_and(|c| c.load(Ordering::Relaxed))
                {
                    return Err(Error::Cancelled);
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
                let mut cut = BatchCut::new(self.plan);
                for (n, line) in reader.split(b'\n').enumerate() {
                    let mut line = line.map_err(|e| Error::io(&path, e))?;
                    let tab = line.iter().position(|&b| b == b'\t').unwrap_or(0);
                    let input = std::str::from_utf8(&line[..tab])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    line.drain(..=tab);
                    let full = cut.add(line.len());
                    batch.push(Unit::Spilled {
                        pos: n as u64,
                        input,
                        line,
                    });
                    if full {
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
        if let Some(t) = self.task.as_mut() {
            if let Some(u) = t.units.last_mut() {
                *u = records;
            }
        }
        let Some((g, spill)) = global else {
            return Ok(Decisions::new());
        };
        let started = Instant::now();
        let resolved = match (collector, self.task.is_some()) {
            (Some(c), false) => c.resolve(),
            (Some(c), true) => {
                c.flush()?;
                // Waiting for other tasks is not this stage's work: only the map flush (here)
                // and, in task 0, the merge and reduce (added in task_exchange) count.
                self.stage_cpu[g] += started.elapsed();
                self.task_exchange(stages, g, pos, &spill.with_extension("exchange"))
            }
            (None, _) => Ok(Decisions::new()),
        };
        // A stage that cannot decide fails the run under its name.
        let decisions = resolved.map_err(|e| match e {
            Error::Stage { message } => Error::Config {
                file: self.plan.config_path.clone(),
                issues: vec![crate::error::ConfigIssue {
                    key: self.names[g].clone(),
                    message,
                }],
            },
            other => other,
        })?;
        if self.task.is_none() {
            self.stage_cpu[g] += started.elapsed();
        }
        let reduced_here = self.task.as_ref().is_none_or(|t| t.run.spec.index == 0);
        if let (Stage::Global(op), true) = (&stages[g], reduced_here) {
            self.stage_reports[g].details = op.summary();
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
        base: u64,
    ) -> Result<(Vec<(usize, Sample)>, Units)> {
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
        let mut kept_units: Vec<u64> = Vec::new();
        let mut dropped: Vec<Sample> = Vec::new();
        let mut drop_infos: Vec<DropInfo> = Vec::new();
        let mut drop_units: Vec<u64> = Vec::new();
        let mut unit = base;
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
                let this = unit;
                unit += 1;
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
                        drop_units.push(this);
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
                            copy.tags
                                .insert(crate::sample::tag::COPY.to_string(), n.to_string());
                            kept.push((input, copy));
                            kept_units.push(this);
                        }
                        kept.push((input, sample));
                        kept_units.push(this);
                    }
                }
            }
        }
        if !dropped.is_empty() {
            for sink in &mut self.dropped {
                sink.write(&dropped, Some(&drop_infos))?;
            }
            if let Some(t) = self.task.as_mut() {
                let path = t.own.join(format!("dropped-{}.jsonl", t.segment));
                if let Some(out) = t.dropped.as_mut() {
                    for ((s, info), u) in dropped.into_iter().zip(drop_infos).zip(drop_units) {
                        let line = StreamLine {
                            u,
                            stage: Some(info.stage),
                            reason: Some(info.reason.to_string()),
                            detail: info.detail,
                            duplicate_of: info.duplicate_of,
                            sample: s,
                        };
                        line.write(out, &path)?;
                    }
                }
            }
        }
        Ok((kept, kept_units))
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

    fn emit_kept(&mut self, kept: Vec<(usize, Sample)>, units: &[u64]) -> Result<()> {
        if kept.is_empty() {
            return Ok(());
        }
        let mut samples = Vec::with_capacity(kept.len());
        for (input, s) in kept {
            if s.tags.contains_key(crate::sample::tag::COPY) {
                self.inputs[input].copies += 1;
            } else {
                self.inputs[input].kept += 1;
            }
            samples.push(s);
        }
        if let Some(t) = self.task.as_mut() {
            // A task streams its kept samples; task 0 replays them into the sinks.
            let path = t.own.join("kept.jsonl");
            if let Some(out) = t.kept.as_mut() {
                for (s, &u) in samples.into_iter().zip(units) {
                    let line = StreamLine {
                        u,
                        stage: None,
                        reason: None,
                        detail: None,
                        duplicate_of: None,
                        sample: s,
                    };
                    line.write(out, &path)?;
                }
            }
            return Ok(());
        }
        for sink in &mut self.curated {
            sink.write(&samples, None)?;
        }
        self.catalog.add(&samples);
        Ok(())
    }

    /// Sums over the inputs.
    fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for i in &self.inputs {
            totals.read += i.read;
            totals.kept += i.kept;
            totals.copies += i.copies;
            totals.dropped += i.dropped;
            totals.rejected += i.rejected;
        }
        totals
    }

    fn finish(mut self, started: Instant, threads: usize, max_reject_ratio: f64) -> Result<Report> {
        let run = self.run.take().ok_or_else(|| Error::Output {
            path: self.plan.output_dir.clone(),
            message: "no run directory to publish".into(),
        })?;
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
        let _ = std::fs::remove_dir_all(run.path(".work"));
        let totals = self.totals();
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
        let catalog_path = run.path(crate::catalog::CATALOG_FILE);
        // Lineage: what the run read (by content), and whether it is a mix, so that a catalog
        // over several runs counts each source's samples once.
        let inputs: Vec<&(std::path::PathBuf, String)> =
            self.plan.inputs.iter().flat_map(|i| &i.files).collect();
        let hashed = inputs
            .par_iter()
            .map(|(p, shown)| crate::storage::hash_file(p).map(|(_, h)| (shown.clone(), h)))
            .collect::<Result<BTreeMap<String, String>>>()?;
        let mixed = self
            .plan
            .stages
            .iter()
            .any(|s| matches!(s, crate::stages::StageConfig::Mix(_)));
        self.catalog.set_lineage(hashed, mixed);
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
                task_phase_seconds: std::mem::take(&mut self.phase_times),
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
        crate::storage::write_atomic(&run.path("report.json"), &json)?;
        if too_many {
            let mut failed = run.final_dir().as_os_str().to_owned();
            failed.push(".failed");
            let dest = run.publish_to(PathBuf::from(failed))?;
            return Err(Error::TooManyRejects {
                rejected: report.totals.rejected,
                read: report.totals.read,
                max_ratio: max_reject_ratio,
                rejects: dest.join("rejects.jsonl"),
            });
        }
        run.publish()?;
        Ok(report)
    }
}

/// Where a batch ends: at `batch_size` records or once its records hold `batch_bytes`.
struct BatchCut {
    records: usize,
    bytes: usize,
    held: (usize, usize),
}

impl BatchCut {
    fn new(plan: &Plan) -> BatchCut {
        BatchCut {
            records: plan.batch_size.max(1),
            bytes: plan.batch_bytes.max(1),
            held: (0, 0),
        }
    }

    /// Count one more record of `size` bytes; true when the batch is full with it (the count
    /// starts again).
    fn add(&mut self, size: usize) -> bool {
        self.held = (self.held.0 + 1, self.held.1.saturating_add(size));
        let full = self.held.0 >= self.records || self.held.1 >= self.bytes;
        if full {
            self.held = (0, 0);
        }
        full
    }
}

const POLL: Duration = Duration::from_millis(200);

impl Engine<'_> {
    fn task_ref(&self) -> Result<&TaskState> {
        self.task.as_ref().ok_or_else(|| Error::Output {
            path: self.plan.output_dir.clone(),
            message: "not a task of a task-sharded run".into(),
        })
    }

    /// A task's global stage: publish its map output, let task 0 merge and reduce every
    /// task's, and take this task's share of the decisions (positions made local).
    fn task_exchange(
        &mut self,
        stages: &[Stage],
        g: usize,
        records: u64,
        own_exchange: &std::path::Path,
    ) -> Result<Decisions> {
        let t = self.task_ref()?;
        let (me, n) = (t.run.spec.index, t.run.spec.count);
        let seg = t.segment;
        let work = t.run.work.clone();
        let timeout = t.run.timeout;
        let map_phase = format!("map-{seg}");
        let reduce_phase = format!("reduce-{seg}");
        let exchange_name = own_exchange
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        t.share(&exchange_name, &crate::exchange::file_names())?;
        let own_dir = t.shared_dir();
        t.markers.mark(
            &map_phase,
            me,
            &serde_json::json!({ "records": records, "dir": own_dir }),
        )?;
        let reduce_dir = work.join(format!("reduce-{seg}"));
        let decisions_path = reduce_dir.join("decisions.json");
        let mut times = Vec::new();
        let mut reduce_cpu = Duration::ZERO;
        // Task 0 has every task's map marker once it has merged; the others wait for them.
        let mut counts = None;
        if me == 0 {
            let waited = Instant::now();
            let maps = t.markers.wait_all(&map_phase, n, timeout, POLL)?;
            times.push((
                format!("wait for map-{seg}"),
                waited.elapsed().as_secs_f64(),
            ));
            let reducing = Instant::now();
            let parts: Vec<PathBuf> = maps
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    t.fetch(
                        m["dir"].as_str().unwrap_or_default(),
                        &exchange_name,
                        &format!("map-{seg}-{i}"),
                    )
                })
                .collect::<Result<_>>()?;
            let merged = reduce_dir.join("exchange");
            if merged.exists() {
                std::fs::remove_dir_all(&merged).map_err(|e| Error::io(&merged, e))?;
            }
            // A stage that cannot decide still releases the other tasks (with no decisions:
            // nothing of this run is published), then fails the run.
            let (all, failed) = match &stages[g] {
                Stage::Global(op) => match op.merge_resolve(&merged, &parts) {
                    Ok(d) => (d, None),
                    Err(e @ Error::Stage { .. }) => (Decisions::new(), Some(e)),
                    Err(e) => return Err(e),
                },
                Stage::Record(_) => (Decisions::new(), None),
            };
            match &t.run.shared {
                Some(url) => crate::remote::put_bytes(
                    &format!("{url}/reduce-{seg}/decisions.json"),
                    all.to_json(),
                )
                .map_err(|message| Error::Output {
                    path: decisions_path.clone(),
                    message,
                })?,
                None => crate::storage::write_atomic(&decisions_path, &all.to_json())?,
            }
            t.markers.mark(&reduce_phase, 0, &serde_json::json!({}))?;
            if let Some(e) = failed {
                return Err(e);
            }
            times.push((
                format!("merge and reduce {}", self.names[g]),
                reducing.elapsed().as_secs_f64(),
            ));
            reduce_cpu = reducing.elapsed();
            counts = Some(maps);
        }
        let counts = match counts {
            Some(c) => c,
            None => t.markers.wait_all(&map_phase, n, timeout, POLL)?,
        };
        t.markers.wait_all(&reduce_phase, 1, timeout, POLL)?;
        let offset: u64 = counts[..me]
            .iter()
            .map(|c| c["records"].as_u64().unwrap_or(0))
            .sum();
        let bytes = match &t.run.shared {
            Some(url) => crate::remote::get_bytes(&format!("{url}/reduce-{seg}/decisions.json"))
                .map_err(|message| Error::Output {
                    path: decisions_path.clone(),
                    message,
                })?
                .ok_or_else(|| Error::Output {
                    path: decisions_path.clone(),
                    message: "the decisions are missing".into(),
                })?,
            None => std::fs::read(&decisions_path).map_err(|e| Error::io(&decisions_path, e))?,
        };
        let all = Decisions::from_json(&bytes).map_err(|message| Error::Output {
            path: decisions_path.clone(),
            message,
        })?;
        self.phase_times.extend(times);
        self.stage_cpu[g] += reduce_cpu;
        Ok(all.within(offset..offset + records))
    }

    /// A task's part is complete: close its streams, write its counts, mark it done.
    fn task_done(&mut self) -> Result<()> {
        if let Some(r) = self.rejects.take() {
            r.commit()?;
        }
        let Some(t) = self.task.as_mut() else {
            return Ok(());
        };
        for w in [t.dropped.take(), t.kept.take()].into_iter().flatten() {
            let mut w = w;
            w.flush().map_err(|e| Error::io(&t.own, e))?;
        }
        let partial = Partial {
            inputs: self.inputs.clone(),
            stages: self.stage_reports.clone(),
            stage_cpu: self.stage_cpu.iter().map(Duration::as_secs_f64).collect(),
            file_rejects: self
                .file_rejects
                .iter()
                .map(|((i, f), n)| (*i, f.clone(), *n))
                .collect(),
            units: t.units.clone(),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
        };
        let bytes = serde_json::to_vec(&partial).unwrap_or_default();
        crate::storage::write_atomic(&t.own.join("partial.json"), &bytes)?;
        let mut names = vec!["partial.json".to_string(), "rejects.jsonl".to_string()];
        for seg in 0..t.units.len() {
            names.push(format!("dropped-{seg}.jsonl"));
        }
        if t.own.join("kept.jsonl").is_file() {
            names.push("kept.jsonl".into());
        }
        t.share("", &names)?;
        t.markers.mark(
            "done",
            t.run.spec.index,
            &serde_json::json!({ "dir": t.shared_dir() }),
        )
    }

    /// What a task other than 0 reports: its own counts; task 0 publishes the run.
    fn task_report(&self, started: Instant, threads: usize) -> Report {
        let spec = self.task.as_ref().map(|t| t.run.spec);
        let totals = self.totals();
        Report {
            sluice_version: env!("CARGO_PKG_VERSION").to_string(),
            run: self.plan.name.clone(),
            status: match spec {
                Some(s) => format!("task {} of {}: part done", s.index, s.count),
                None => "part done".into(),
            },
            seed: self.plan.seed,
            reconciled: self.inputs.iter().all(InputReport::reconciles),
            totals,
            inputs: self.inputs.clone(),
            stages: self.stage_reports.clone(),
            outputs: Vec::new(),
            tags: BTreeMap::new(),
            timings: Timings {
                total_seconds: started.elapsed().as_secs_f64(),
                stage_cpu_seconds: BTreeMap::new(),
                task_phase_seconds: BTreeMap::new(),
                input_mb_per_second: 0.0,
                records_per_second: 0.0,
                threads,
            },
        }
    }

    /// Task 0, once every task is done: merge the counts and replay every task's dropped and
    /// kept samples into the run's sinks, in input order and in the batches a single process
    /// would have written, so the outputs are byte-identical to a single-process run.
    fn merge_tasks(&mut self, out_dir: &std::path::Path) -> Result<()> {
        let t = self.task.take().ok_or_else(|| Error::Output {
            path: out_dir.to_path_buf(),
            message: "not a task".into(),
        })?;
        let n = t.run.spec.count;
        let waited = Instant::now();
        let done = t.markers.wait_all("done", n, t.run.timeout, POLL)?;
        self.phase_times
            .insert("wait for done".into(), waited.elapsed().as_secs_f64());
        let replaying = Instant::now();
        let dirs: Vec<PathBuf> = done
            .iter()
            .enumerate()
            .map(|(i, d)| {
                t.fetch(
                    d["dir"].as_str().unwrap_or_default(),
                    "",
                    &format!("done-{i}"),
                )
            })
            .collect::<Result<_>>()?;
        let mut partials = Vec::with_capacity(n);
        for d in &dirs {
            let p = d.join("partial.json");
            let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            let partial: Partial = serde_json::from_slice(&bytes).map_err(|e| Error::Output {
                path: p.clone(),
                message: format!("unreadable task counts: {e}"),
            })?;
            partials.push(partial);
        }
        // Counts.
        let own_details: Vec<Option<serde_json::Value>> = self
            .stage_reports
            .iter()
            .map(|r| r.details.clone())
            .collect();
        for r in &mut self.inputs {
            let name = std::mem::take(&mut r.name);
            *r = InputReport {
                name,
                ..Default::default()
            };
        }
        for (i, r) in self.stage_reports.iter_mut().enumerate() {
            *r = StageReport {
                index: r.index,
                kind: std::mem::take(&mut r.kind),
                details: own_details[i].clone(),
                ..Default::default()
            };
        }
        self.stage_cpu = vec![Duration::ZERO; self.stage_reports.len()];
        self.file_rejects.clear();
        let mut bytes_read = 0;
        for p in &partials {
            for (mine, theirs) in self.inputs.iter_mut().zip(&p.inputs) {
                mine.read += theirs.read;
                mine.kept += theirs.kept;
                mine.copies += theirs.copies;
                mine.dropped += theirs.dropped;
                mine.rejected += theirs.rejected;
                for (k, v) in &theirs.dropped_by {
                    *mine.dropped_by.entry(k.clone()).or_default() += v;
                }
                for (k, v) in &theirs.formats {
                    *mine.formats.entry(k.clone()).or_default() += v;
                }
                mine.files.extend(theirs.files.iter().cloned());
            }
            for (mine, theirs) in self.stage_reports.iter_mut().zip(&p.stages) {
                mine.input += theirs.input;
                mine.kept += theirs.kept;
                for (k, v) in &theirs.dropped {
                    *mine.dropped.entry(k.clone()).or_default() += v;
                }
                for (k, v) in &theirs.counters {
                    *mine.counters.entry(k.clone()).or_default() += v;
                }
            }
            for (mine, theirs) in self.stage_cpu.iter_mut().zip(&p.stage_cpu) {
                *mine += Duration::from_secs_f64(*theirs);
            }
            for (i, f, c) in &p.file_rejects {
                *self.file_rejects.entry((*i, f.clone())).or_default() += c;
            }
            bytes_read += p.bytes_read;
        }
        self.bytes_read.store(bytes_read, Ordering::Relaxed);
        // Outputs.
        let run = RunDir::begin(out_dir)?;
        let (curated, dropped) = make_sinks(self.plan, &run)?;
        self.curated = curated;
        self.dropped = dropped;
        let segments = partials.iter().map(|p| p.units.len()).max().unwrap_or(0);
        for seg in 0..segments {
            let files: Vec<(PathBuf, u64)> =
                self.stream_files(&dirs, &partials, seg, |s| format!("dropped-{s}.jsonl"));
            self.replay(&files, true)?;
        }
        if segments > 0 {
            let files = self.stream_files(&dirs, &partials, segments - 1, |_| "kept.jsonl".into());
            self.replay(&files, false)?;
        }
        let rejects_path = run.path("rejects.jsonl");
        let mut rejects = AtomicFile::create(rejects_path.clone())?;
        for d in &dirs {
            let p = d.join("rejects.jsonl");
            let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            rejects
                .write_all(&bytes)
                .map_err(|e| Error::io(&rejects_path, e))?;
        }
        self.rejects = Some(rejects);
        self.rejects_path = rejects_path;
        self.run = Some(run);
        self.phase_times.insert(
            "replay into sinks".into(),
            replaying.elapsed().as_secs_f64(),
        );
        Ok(())
    }

    /// Each task's stream file of a segment with the number of units before it.
    fn stream_files(
        &self,
        dirs: &[PathBuf],
        partials: &[Partial],
        seg: usize,
        name: impl Fn(usize) -> String,
    ) -> Vec<(PathBuf, u64)> {
        let mut offset = 0;
        let mut out = Vec::with_capacity(dirs.len());
        for (d, p) in dirs.iter().zip(partials) {
            out.push((d.join(name(seg)), offset));
            offset += p.units.get(seg).copied().unwrap_or(0);
        }
        out
    }

    /// Feed stream files, in order, to the dropped or the curated sinks, one write per batch
    /// of the single-process run (the unit index divided by the batch size).
    /// Write the tasks' streams through the sinks, in order, a batch at a time (the sinks cut
    /// their files the same whatever the batches, so the bytes equal a one-process run's).
    fn replay(&mut self, files: &[(PathBuf, u64)], dropped: bool) -> Result<()> {
        let mut samples: Vec<Sample> = Vec::new();
        let mut infos: Vec<DropInfo> = Vec::new();
        let mut cut = BatchCut::new(self.plan);
        for (path, _offset) in files {
            let file = match std::fs::File::open(path) {
                Ok(f) => f,
                // A task whose files held nothing for this segment wrote no stream.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(path, e)),
            };
            for line in BufReader::with_capacity(1 << 20, file).lines() {
                let line = line.map_err(|e| Error::io(path, e))?;
                let l: StreamLine = serde_json::from_str(&line).map_err(|e| Error::Output {
                    path: path.clone(),
                    message: format!("unreadable task stream: {e}"),
                })?;
                if dropped {
                    infos.push(DropInfo {
                        stage: l.stage.unwrap_or_default(),
                        reason: crate::stages::intern_code(l.reason.as_deref().unwrap_or("")),
                        detail: l.detail,
                        duplicate_of: l.duplicate_of,
                    });
                }
                samples.push(l.sample);
                if cut.add(line.len()) {
                    self.write_replayed(&mut samples, &mut infos, dropped)?;
                }
            }
        }
        if !samples.is_empty() {
            self.write_replayed(&mut samples, &mut infos, dropped)?;
        }
        Ok(())
    }

    fn write_replayed(
        &mut self,
        samples: &mut Vec<Sample>,
        infos: &mut Vec<DropInfo>,
        dropped: bool,
    ) -> Result<()> {
        if dropped {
            for sink in &mut self.dropped {
                sink.write(samples, Some(infos))?;
            }
        } else {
            for sink in &mut self.curated {
                sink.write(samples, None)?;
            }
            self.catalog.add(samples);
        }
        samples.clear();
        infos.clear();
        Ok(())
    }
}
