//! The engine: reads inputs in a fixed order, runs record-wise stages in parallel over batches,
//! runs global stages as map → exchange → reduce → finish → apply, and writes outputs.
//!
//! Determinism: records have a position given by input order alone; rayon's ordered collects
//! keep batch order; global stages sort by (key, position); no hash map's iteration order ever
//! reaches an output. So output bytes do not depend on the thread count.
//!
//! Memory: streaming stages hold one batch (cut by `batch_size` records or `batch_bytes`). A
//! global stage holds one exchange partition while reducing and its decisions (16 bytes per
//! decided position plus each distinct decision once, see [`crate::decisions`]); the samples
//! themselves wait in a spill file in the staging directory, not in memory.
//!
//! The engine names no stage: record-wise stages are [`crate::stages::RecordStage`]s, global
//! ones [`crate::exchange::GlobalOp`]s. Its parts: `segment` (a source through the record-wise
//! stages to the next global stage or the sinks), `batch` (one batch in parallel, then in-order
//! accounting), `sinks`, `publish`, and `task/` (the protocol of task-sharded runs).

mod batch;
mod publish;
mod segment;
mod sinks;
mod tally;
mod task;

use crate::config::Plan;
use crate::error::{Error, Result};
use crate::io::writers::SampleSink;
use crate::report::{Report, Totals};
use crate::stages::{Decisions, Stage};
use crate::storage::{AtomicFile, RunDir};
use sinks::{make_sinks, SinkSet};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally::Tally;
use task::TaskState;

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
/// Every task writes its own Parquet/JSONL parts, LLaMA-Factory arrays and catalog part and
/// tokenizes its samples into token spills; task 0 finally moves the parts into the run,
/// merges the catalog parts, writes the LLaMA-Factory registry over the arrays and adopts the
/// spills in task order (the shards are then the bytes of one process). See the README for
/// what equals a one-process run.
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
    /// Run only this phase (a step of a scheduler's pipeline of job arrays or DAG), then
    /// exit; `None`: every phase in one go, waiting for the other tasks between them.
    pub phase: Option<crate::tasks::Phase>,
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

/// A run in progress.
struct Engine<'p> {
    pub(in crate::engine) plan: &'p Plan,
    pub(in crate::engine) names: Vec<String>,
    pub(in crate::engine) run: Option<RunDir>,
    /// What the run counted.
    pub(in crate::engine) tally: Tally,
    pub(in crate::engine) rejects: Option<AtomicFile>,
    pub(in crate::engine) rejects_path: PathBuf,
    pub(in crate::engine) curated: Vec<Box<dyn SampleSink>>,
    pub(in crate::engine) dropped: Vec<Box<dyn SampleSink>>,
    pub(in crate::engine) bytes_read: Arc<AtomicU64>,
    pub(in crate::engine) total_bytes: u64,
    pub(in crate::engine) progress: Option<ProgressFn>,
    /// Records to read per input at most (a trial).
    pub(in crate::engine) limit: Option<u64>,
    pub(in crate::engine) cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    pub(in crate::engine) catalog: crate::catalog::CatalogBuilder,
    pub(in crate::engine) task: Option<TaskState>,
    /// Task 0's coordinated phases and their wall seconds.
    pub(in crate::engine) phase_times: BTreeMap<String, f64>,
    /// Files the tasks wrote themselves, moved into the run by task 0.
    pub(in crate::engine) moved: Vec<crate::io::writers::OutputFile>,
    /// A task's shard sink: it tokenizes the task's samples into spills it hands over.
    pub(in crate::engine) task_shards: Option<crate::io::shard_sink::ShardSink>,
    /// The lock a phase run alone holds, until its process ends (for a publish, until the work
    /// folder is removed).
    pub(in crate::engine) lock: Option<std::fs::File>,
}

/// The phases of a task-sharded run of `plan` over `tasks` tasks, in the order a scheduler
/// runs them (see [`crate::tasks::Phase`]); `shared_fs`: the work folder is a shared
/// filesystem (not object storage).
pub fn phases(plan: &Plan, tasks: usize, shared_fs: bool) -> Vec<crate::tasks::Phase> {
    let globals = plan.stages.iter().filter(|s| s.is_global()).count();
    crate::tasks::Phase::all(
        globals,
        task::shards::tasks_write_shards(plan, tasks, shared_fs),
    )
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
        crate::remote::upload(&staged, url).map_err(|e| Error::Output {
            path: staged.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(report)
}

fn run_in_pool(plan: &Plan, opts: RunOptions, threads: usize) -> Result<Report> {
    let started = Instant::now();
    let out_dir = opts
        .output_dir
        .clone()
        .unwrap_or_else(|| plan.output_dir.clone());
    let mut stages: Vec<Stage> = Vec::with_capacity(plan.stages.len());
    for (i, s) in plan.stages.iter().enumerate() {
        stages.push(s.build(plan.seed).map_err(|e| Error::Config {
            file: plan.config_path.clone(),
            issues: vec![crate::error::ConfigIssue {
                key: format!("stages[{i}] ({})", s.type_name()),
                message: e.to_string(),
            }],
        })?);
    }
    for (i, (built, config)) in stages.iter().zip(&plan.stages).enumerate() {
        if matches!(built, Stage::Global(_)) != config.is_global() {
            return Err(Error::Output {
                path: plan.config_path.clone(),
                message: format!(
                    "stages[{i}] ({}): built and configured globality differ",
                    config.type_name()
                ),
            });
        }
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
    let counter = crate::catalog::TokenCounter::new_within(
        plan.catalog.tokenizer.as_deref(),
        plan.catalog.confined_to.as_deref(),
    )
    .map_err(|message| Error::Config {
        file: plan.config_path.clone(),
        issues: vec![crate::error::ConfigIssue {
            key: if from_shards {
                "output.shards.tokenizer"
            } else {
                "output.catalog.tokenizer"
            }
            .into(),
            message: message.to_string(),
        }],
    })?;
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
    let (run, curated, dropped, task_and_shards, rejects_path) = match opts.task.clone() {
        None => {
            let run = RunDir::begin(&out_dir)?;
            let (curated, dropped) = make_sinks(plan, &run.path(""), SinkSet::All)?;
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
            // The run's folder in the work folder is a folder, not a link to somewhere else
            // (cleanup removes what is in it).
            if std::fs::symlink_metadata(&t.work).is_ok_and(|m| !m.is_dir()) {
                return Err(Error::Work {
                    path: t.work.clone(),
                    message: "the run's work folder is not a folder (a link?): refused".into(),
                });
            }
            // A phase run alone holds a lock: its task's (two processes never run phases of
            // one task at once), or the run's for the publish. The system drops it when the
            // process ends, however it ends.
            let lock = match t.phase {
                None => None,
                Some(phase) => {
                    let (path, who) = match phase {
                        crate::tasks::Phase::Publish => (
                            t.work.join("publish.lock"),
                            "publishing this run".to_string(),
                        ),
                        _ => (
                            t.work.join(format!("task-{:05}.lock", t.spec.index)),
                            format!("running a phase of task {}", t.spec.index),
                        ),
                    };
                    let held = crate::storage::try_lock(&path)?.ok_or_else(|| Error::Work {
                        path: path.clone(),
                        message: format!(
                            "another process is {who} (a duplicate job?): run it again once that one has ended"
                        ),
                    })?;
                    Some(held)
                }
            };
            let own = t
                .work
                .join(format!("task-{:05}", t.spec.index))
                .join(attempt);
            #[allow(clippy::disallowed_methods)] // a scratch directory
            std::fs::create_dir_all(&own).map_err(|e| Error::io(&own, e))?;
            // The work folder is shared: a link planted at `task-<i>` must not send this
            // task's files elsewhere.
            let real = std::fs::canonicalize(&own).map_err(|e| Error::io(&own, e))?;
            let work = std::fs::canonicalize(&t.work).map_err(|e| Error::io(&t.work, e))?;
            if own.strip_prefix(&t.work).map(|rel| work.join(rel)).ok() != Some(real) {
                return Err(Error::Output {
                    path: own.clone(),
                    message:
                        "the task's folder resolves outside the work folder (a link?): refused"
                            .into(),
                });
            }
            let files = crate::tasks::assign(&sizes, t.spec.count)
                .get(t.spec.index)
                .cloned()
                .unwrap_or(0..0);
            let markers = match &t.shared {
                Some(url) => crate::tasks::Markers::at(
                    crate::storage::Place::Remote(url.clone()).join("markers"),
                    &t.run_key,
                ),
                None => crate::tasks::Markers::new(&t.work.join("markers"), &t.run_key),
            };
            // A map phase run alone keeps its rejects so far for the next phase.
            let rejects = match t.phase {
                Some(crate::tasks::Phase::Map(_)) => own.join(task::phase::RESUME),
                _ => own.clone(),
            }
            .join("rejects.jsonl");
            // Every task writes its own Parquet/JSONL parts; task 0 moves them into the run.
            // A phase run alone opens only what it writes: a map phase its dropped samples.
            let (curated, dropped, shards) = match t.phase {
                None | Some(crate::tasks::Phase::Write) => {
                    let (curated, dropped) =
                        make_sinks(plan, &own.join("out"), SinkSet::TaskParts(t.spec.index))?;
                    let shards = sinks::shard_sink(plan, &own.join("out"), own.join("shards"))?;
                    (curated, dropped, shards)
                }
                Some(crate::tasks::Phase::Map(k)) => {
                    let (_, dropped) = make_sinks(
                        plan,
                        &own.join(task::phase::PHASE_OUT),
                        SinkSet::TaskDropped(t.spec.index, k),
                    )?;
                    (Vec::new(), dropped, None)
                }
                Some(_) => (Vec::new(), Vec::new(), None),
            };
            let state = TaskState {
                run: t,
                own,
                markers,
                files,
                segment: 0,
                units: Vec::new(),
                mapped: 0,
            };
            (None, curated, dropped, Some((state, shards, lock)), rejects)
        }
    };
    let (task, task_shards, lock) = match task_and_shards {
        Some((t, s, l)) => (Some(t), s, l),
        None => (None, None, None),
    };
    let mut engine = Engine {
        plan,
        names,
        tally: Tally::new(plan),
        rejects: Some(AtomicFile::create(rejects_path.clone())?),
        rejects_path,
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
        moved: Vec::new(),
        task_shards,
        lock,
    };
    let max_ratio = opts.max_reject_ratio.unwrap_or(plan.max_reject_ratio);
    let phase = engine.task.as_ref().and_then(|t| t.phase());
    let report = match (phase, engine.task.as_ref().map(|t| t.run.spec)) {
        (Some(crate::tasks::Phase::Publish), Some(spec)) if spec.index != 0 => {
            let mut report = engine.task_report(started, threads);
            report.status = format!(
                "task {} of {}: nothing to do in phase publish (task 0 publishes)",
                spec.index, spec.count
            );
            return Ok(report);
        }
        (Some(crate::tasks::Phase::Publish), Some(spec)) if engine.published_already(&out_dir) => {
            // A publish run again after it succeeded: finish its cleanup, nothing more.
            engine.remove_work();
            let mut report = engine.task_report(started, threads);
            report.status = format!(
                "task 0 of {}: phase publish: {} holds this run already, nothing to do",
                spec.count,
                out_dir.display()
            );
            return Ok(report);
        }
        (Some(crate::tasks::Phase::Publish), _) => {
            let cpu = engine.restore_finished(&stages)?;
            engine.publish_tasks(&out_dir, started, threads, max_ratio, cpu)?
        }
        (Some(p), _) => return engine.run_phase(&stages, p, started, threads),
        (None, None) => {
            engine.execute(&stages)?;
            engine.finish(started, threads, max_ratio)?
        }
        (None, Some(spec)) => {
            engine.execute(&stages)?;
            engine.task_done()?;
            engine.task_write_shards()?;
            if spec.index != 0 {
                return Ok(engine.task_report(started, threads));
            }
            engine.publish_tasks(&out_dir, started, threads, max_ratio, Vec::new())?
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

/// One segment of a run: record-wise stages, then the global stage that ends it (none for the
/// last, which ends at the sinks).
#[derive(Debug, PartialEq)]
pub(in crate::engine) struct Segment {
    records: std::ops::Range<usize>,
    global: Option<usize>,
}

/// The segments of a stage list (`global[i]`: whether stage i is global): each global stage
/// ends one, and a last segment always follows to the sinks.
pub(in crate::engine) fn segments(global: &[bool]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in global.iter().enumerate().filter(|(_, g)| **g) {
        out.push(Segment {
            records: start..i,
            global: Some(i),
        });
        start = i + 1;
    }
    out.push(Segment {
        records: start..global.len(),
        global: None,
    });
    out
}

/// The segments of a built stage list (see [`segments`]).
pub(in crate::engine) fn segments_of(stages: &[Stage]) -> Vec<Segment> {
    let global: Vec<bool> = stages
        .iter()
        .map(|s| matches!(s, Stage::Global(_)))
        .collect();
    segments(&global)
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
    pub(in crate::engine) fn execute(&mut self, stages: &[Stage]) -> Result<()> {
        let plan = segments_of(stages);
        let mut source = Source::Inputs;
        for (no, seg) in plan.iter().enumerate() {
            let records: Vec<usize> = seg.records.clone().collect();
            self.begin_segment(no);
            let Some(g) = seg.global else {
                return self.segment(stages, source, &records, None).map(drop);
            };
            let spill = self.scratch(&format!("spill-{no}.jsonl"));
            let decisions = self.segment(stages, source, &records, Some((g, spill.clone())))?;
            source = Source::Spill {
                path: spill,
                decisions,
                stage: g,
            };
        }
        Ok(())
    }

    /// Where intermediate files go: the run's `.work`, or this task's folder.
    pub(in crate::engine) fn scratch(&self, name: &str) -> PathBuf {
        match (&self.task, &self.run) {
            (Some(t), _) => t.own.join(name),
            (None, Some(run)) => run.path(&format!(".work/{name}")),
            (None, None) => self.plan.output_dir.join(".work").join(name),
        }
    }

    /// Sums over the inputs.
    pub(in crate::engine) fn totals(&self) -> Totals {
        self.tally.totals()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // fixtures
    use super::*;

    fn seg(records: std::ops::Range<usize>, global: Option<usize>) -> Segment {
        Segment { records, global }
    }

    #[test]
    fn global_stages_end_segments_and_the_last_goes_to_the_sinks() {
        assert_eq!(segments(&[]), vec![seg(0..0, None)]);
        assert_eq!(segments(&[false, false]), vec![seg(0..2, None)]);
        assert_eq!(
            segments(&[false, true, false, false, true]),
            vec![seg(0..1, Some(1)), seg(2..4, Some(4)), seg(5..5, None)]
        );
        assert_eq!(
            segments(&[true, true]),
            vec![seg(0..0, Some(0)), seg(1..1, Some(1)), seg(2..2, None)]
        );
    }

    fn plan(dir: &std::path::Path, body: &str) -> Plan {
        let path = dir.join("p.toml");
        std::fs::write(&path, body).expect("write");
        crate::config::parse(body, &path).expect("plan")
    }

    fn rows(n: usize, bad: usize) -> String {
        let mut s: String = (0..n)
            .map(|i| format!("{{\"instruction\": \"q{i}\", \"output\": \"a{i}\"}}\n"))
            .collect();
        s += &"{broken\n".repeat(bad);
        s
    }

    #[test]
    fn a_failed_run_publishes_nothing_under_the_final_name_and_leaves_no_staging() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("in.jsonl"), rows(20, 10)).expect("w");
        let body = "max_reject_ratio = 0.1\n[[inputs]]\npaths = [\"in.jsonl\"]\n\
                    [[stages]]\ntype = \"exact_dedup\"\n[output]\ndir = \"out\"\n\
                    formats = [\"jsonl\"]\n";
        let p = plan(dir.path(), body);
        let err = run(&p, RunOptions::default()).expect_err("too many rejects");
        assert!(
            matches!(err, Error::TooManyRejects { rejected: 10, .. }),
            "{err}"
        );
        let out = dir.path().join("out");
        assert!(!out.exists(), "nothing under the final name");
        assert!(dir.path().join("out.failed/rejects.jsonl").is_file());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.contains("staging")),
            "no staging left: {names:?}"
        );

        // A cancelled run: nothing published, no staging either.
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let err = run(
            &p,
            RunOptions {
                cancel: Some(cancel),
                output_dir: Some(dir.path().join("cancelled")),
                ..Default::default()
            },
        )
        .expect_err("cancelled");
        assert!(matches!(err, Error::Cancelled), "{err}");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.starts_with("cancelled") && !n.contains("staging")),
            "{names:?}"
        );
    }
}
