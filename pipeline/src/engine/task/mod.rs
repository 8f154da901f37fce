//! A task's side of a task-sharded run (see [`crate::engine::TaskRun`]).

pub(in crate::engine) mod exchange;
pub(in crate::engine) mod merge;
pub(in crate::engine) mod phase;
pub(in crate::engine) mod shards;
pub(in crate::engine) mod stream;

use crate::engine::{Engine, TaskRun};
use crate::error::{Error, Result};
use crate::report::{InputReport, Report, Timings};
use crate::storage::Place;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use stream::Partial;

/// A task's side of a task-sharded run.
pub(in crate::engine) struct TaskState {
    pub(in crate::engine) run: TaskRun,
    /// This task's own folder under the work directory.
    pub(in crate::engine) own: PathBuf,
    pub(in crate::engine) markers: crate::tasks::Markers,
    /// Indexes into the flattened (input, file) list that this task reads.
    pub(in crate::engine) files: std::ops::Range<usize>,
    /// Current segment.
    pub(in crate::engine) segment: usize,
    /// Units (records read, or spilled samples) each segment handled.
    pub(in crate::engine) units: Vec<u64>,
    /// Positions this task mapped in its last global stage (a phase run alone shares them
    /// after the segment).
    pub(in crate::engine) mapped: u64,
}

impl TaskState {
    /// Where the tasks meet: the shared work folder, or its object-storage prefix.
    pub(in crate::engine) fn shared_root(&self) -> Place {
        match &self.run.shared {
            Some(url) => Place::Remote(url.clone()),
            None => Place::Local(self.run.work.clone()),
        }
    }

    /// Where others find this attempt's shared files: its own folder (on a shared
    /// filesystem), or its prefix in object storage.
    pub(in crate::engine) fn shared_place(&self) -> Place {
        match &self.run.shared {
            Some(_) => self.shared_root().join(&format!(
                "task-{:05}/{}",
                self.run.spec.index,
                self.own
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            )),
            None => Place::Local(self.own.clone()),
        }
    }

    /// [`TaskState::shared_place`] as markers name it.
    pub(in crate::engine) fn shared_dir(&self) -> String {
        self.shared_place().display()
    }

    /// Publish files of this attempt for the other tasks (nothing to copy on a shared
    /// filesystem).
    pub(in crate::engine) fn share(&self, sub: &str, names: &[String]) -> Result<()> {
        self.shared_place()
            .join(sub)
            .put_files(&self.own.join(sub), names)
    }

    /// A local folder holding what task `task` shared under `dir` (+ `sub`). `dir` comes from
    /// a marker in the shared work folder: it must be one of that task's attempt folders there
    /// (`<work>/task-<task>/<attempt>`, with no link on the way), never another place.
    pub(in crate::engine) fn fetch(
        &self,
        dir: &str,
        task: usize,
        sub: &str,
        label: &str,
    ) -> Result<PathBuf> {
        let place = Place::parse(dir);
        let prefix = self.shared_root().join(&format!("task-{task:05}"));
        let attempt = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit() || c == '-');
        let ok = match (&place, &prefix) {
            (Place::Local(d), Place::Local(pre)) => {
                let name = d.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                d.parent() == Some(pre.as_path())
                    && attempt(name)
                    && match (
                        std::fs::canonicalize(d),
                        std::fs::canonicalize(&self.run.work),
                    ) {
                        (Ok(real), Ok(work)) => {
                            real == work.join(format!("task-{task:05}")).join(name)
                        }
                        _ => false,
                    }
            }
            (Place::Remote(u), Place::Remote(pre)) => u
                .strip_prefix(pre.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(attempt),
            _ => false,
        };
        if !ok {
            return Err(Error::Work {
                path: self.run.work.join("markers"),
                message: format!(
                    "a marker names {dir:?} as task {task}'s folder: not one of its attempt folders in the work folder, refused"
                ),
            });
        }
        let local = place
            .join(sub)
            .local_dir(&self.own.join("fetched").join(label).join(sub))?;
        // In place on a shared filesystem: the folder under the attempt folder must be that
        // folder itself, not a link to another place.
        if let (Place::Local(d), false) = (&place, sub.is_empty()) {
            let inside = match (std::fs::canonicalize(d), std::fs::canonicalize(&local)) {
                (Ok(attempt), Ok(real)) => real == attempt.join(sub),
                _ => false,
            };
            if !inside {
                return Err(Error::Work {
                    path: local,
                    message: format!("task {task}'s {sub:?} is not a folder of its attempt folder (a link?): refused"),
                });
            }
        }
        Ok(local)
    }
}

pub(in crate::engine) const POLL: Duration = Duration::from_millis(200);

/// How long a phase run on its own (`--phase`) waits for markers its predecessors left: they
/// exist already when the scheduler ran the phases in order; the wait only covers a shared
/// filesystem or object store that shows a new file late.
const PHASE_PATIENCE: Duration = Duration::from_secs(5);

/// The phase (as `sluice run --phases` names it) that leaves the marker `marker`.
fn phase_of_marker(marker: &str) -> String {
    match marker.split_once('-') {
        Some(("reduced", k)) => format!("reduce-{k}"),
        Some(("preload", k)) => format!("map-{k} of task 0"),
        _ => match marker {
            "done" => "write".into(),
            other => other.into(),
        },
    }
}

impl TaskState {
    /// When the work folder holds markers of other runs: what changed is likely why this run
    /// finds none of its own.
    pub(in crate::engine) fn other_runs_hint(&self) -> String {
        let Some(parent) = self.run.work.parent() else {
            return String::new();
        };
        let mine = self.run.work.file_name();
        let others = std::fs::read_dir(parent)
            .map(|d| {
                d.flatten()
                    .filter(|e| Some(e.file_name().as_os_str()) != mine)
                    .filter(|e| e.path().join("markers").is_dir())
                    .count()
            })
            .unwrap_or(0);
        if others == 0 {
            return String::new();
        }
        format!(
            " (the work folder holds markers of {others} other run(s): the pipeline file, its input files, a file it reads (tokenizer, model, word list…) or the task count changed since those phases ran, so this is another run)"
        )
    }

    /// The phase this process runs alone, if it runs one (`--phase`).
    pub(in crate::engine) fn phase(&self) -> Option<crate::tasks::Phase> {
        self.run.phase
    }

    /// Wait until `tasks` tasks have marked `phase`; the payloads in task order. All at once,
    /// the others are still running: wait up to the run's timeout. In phases, a missing marker
    /// is a phase not run yet: fail soon, saying so.
    pub(in crate::engine) fn wait_all(
        &self,
        phase: &str,
        tasks: usize,
    ) -> Result<Vec<serde_json::Value>> {
        let Some(running) = self.run.phase else {
            return self.markers.wait_all(phase, tasks, self.run.timeout, POLL);
        };
        self.markers
            .wait_all(phase, tasks, PHASE_PATIENCE.min(self.run.timeout), POLL)
            .map_err(|e| match e {
                Error::Work { path, .. } => {
                    let missing: Vec<usize> = (0..tasks)
                        .filter(|&i| self.markers.done(phase, i).is_none())
                        .collect();
                    let mut listed: Vec<String> =
                        missing.iter().take(20).map(|i| i.to_string()).collect();
                    if missing.len() > 20 {
                        listed.push(format!("and {} more", missing.len() - 20));
                    }
                    Error::Work {
                        path,
                        message: format!(
                            "phase {} needs phase {} of tasks {}, which has not run{}: run the phases in order (`sluice run --phases`)",
                            running.name(),
                            phase_of_marker(phase),
                            listed.join(", "),
                            self.other_runs_hint()
                        ),
                    }
                }
                other => other,
            })
    }
}

impl Engine<'_> {
    pub(in crate::engine) fn task_ref(&self) -> Result<&TaskState> {
        self.task.as_ref().ok_or_else(|| Error::Output {
            path: self.plan.output_dir.clone(),
            message: "not a task of a task-sharded run".into(),
        })
    }

    /// A task's part is complete: close its parts and stream, write its counts, mark it done.
    pub(in crate::engine) fn task_done(&mut self) -> Result<()> {
        if let Some(r) = self.rejects.take() {
            r.commit()?;
        }
        if self.task.is_none() {
            return Ok(());
        }
        let finishing = Instant::now();
        let mut outputs = Vec::new();
        for sink in self.curated.drain(..).chain(self.dropped.drain(..)) {
            outputs.extend(sink.finish()?);
        }
        self.tally.write_time += finishing.elapsed();
        let catalog = self.catalog.part();
        let shards = self.task_shards.take();
        let Some(t) = self.task.as_mut() else {
            return Ok(());
        };
        if let Some(sink) = shards {
            let handing = Instant::now();
            let names = sink.hand_over()?;
            t.share("shards", &names)?;
            self.tally.write_time += handing.elapsed();
        }
        let partial = Partial {
            tally: self.tally.clone(),
            units: t.units.clone(),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            outputs,
            catalog,
        };
        let bytes = serde_json::to_vec(&partial).map_err(|e| Error::Output {
            path: t.own.join("partial.json"),
            message: format!("cannot encode the task's counts: {e}"),
        })?;
        crate::storage::write_atomic(&t.own.join("partial.json"), &bytes)?;
        let mut names = vec!["partial.json".to_string(), "rejects.jsonl".to_string()];
        names.extend(partial.outputs.iter().map(|o| format!("out/{}", o.path)));
        t.share("", &names)?;
        t.markers.mark(
            "done",
            t.run.spec.index,
            &serde_json::json!({ "dir": t.shared_dir() }),
        )
    }

    /// What a task other than 0 reports: its own counts; task 0 publishes the run.
    pub(in crate::engine) fn task_report(&self, started: Instant, threads: usize) -> Report {
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
            reconciled: self.tally.inputs.iter().all(InputReport::reconciles),
            totals,
            inputs: self.tally.inputs.clone(),
            stages: self.tally.stages.clone(),
            outputs: Vec::new(),
            tags: BTreeMap::new(),
            lengths: self.tally.lengths.clone(),
            examples: self.tally.examples.clone(),
            rewrites: self.tally.rewrites.clone(),
            rejects: self.tally.rejects.clone(),
            timings: Timings {
                total_seconds: started.elapsed().as_secs_f64(),
                stage_cpu_seconds: BTreeMap::new(),
                task_phase_seconds: BTreeMap::new(),
                convert_cpu_seconds: self.tally.convert_cpu.as_secs_f64(),
                write_seconds: self.tally.write_time.as_secs_f64(),
                input_mb_per_second: 0.0,
                records_per_second: 0.0,
                threads,
            },
        }
    }
}
