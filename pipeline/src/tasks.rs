//! Task-sharded runs (groundwork for Slurm job arrays and Kubernetes Indexed Jobs): which task
//! this process is, which input files it owns, and the completion markers that order phases
//! across tasks.
//!
//! The plan these pieces serve: task `i` of `N` reads a contiguous range of the input files (in
//! plan order, balanced by bytes), so concatenating the tasks' samples in task order gives
//! exactly the order of a single-process run, which is what makes outputs identical. Each phase
//! (record stages + a global stage's map; reduce of the partitions `p ≡ i (mod N)`; apply) ends
//! with a marker per task; a phase starts only when every marker of the previous one exists,
//! and a re-run task skips the phases whose own marker is present for the same run key.
//! `engine::TaskRun` runs a pipeline as one such task.

use crate::error::{Error, Result};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The environment variables schedulers set that [`TaskSpec::resolve`] reads.
pub const SCHEDULER_VARS: [&str; 5] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_COUNT",
    "JOB_COMPLETION_INDEX",
    "SLUICE_TASKS",
];

/// The most tasks a run may have.
pub const MAX_TASKS: usize = 65_536;

/// This process's place in a task-sharded run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSpec {
    /// 0-based index.
    pub index: usize,
    /// Number of tasks.
    pub count: usize,
}

impl TaskSpec {
    /// A run of one task.
    pub fn single() -> TaskSpec {
        TaskSpec { index: 0, count: 1 }
    }

    /// From the flags, else the scheduler's environment: Slurm job arrays
    /// (`SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN`, `SLURM_ARRAY_TASK_COUNT`), Kubernetes
    /// Indexed Jobs (`JOB_COMPLETION_INDEX` with the count in `SLUICE_TASKS`, since Kubernetes
    /// does not export the completions count), else a single task.
    pub fn resolve(
        index: Option<usize>,
        count: Option<usize>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> std::result::Result<TaskSpec, String> {
        let num = |k: &str| -> std::result::Result<Option<usize>, String> {
            match env(k) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{k}={v:?} is not a non-negative integer")),
            }
        };
        let (index, count, origin) = match (index, count) {
            (Some(i), Some(n)) => (i, n, "--task-index/--tasks"),
            (Some(_), None) | (None, Some(_)) => {
                return Err("--task-index and --tasks go together".into())
            }
            (None, None) => {
                if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
                    let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
                    let n = num("SLURM_ARRAY_TASK_COUNT")?
                        .ok_or("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")?;
                    let i = id.checked_sub(min).ok_or_else(|| {
                        format!("SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}")
                    })?;
                    (i, n, "Slurm")
                } else if let Some(i) = num("JOB_COMPLETION_INDEX")? {
                    let n = num("SLUICE_TASKS")?.ok_or(
                        "JOB_COMPLETION_INDEX is set: give the task count as SLUICE_TASKS or --tasks",
                    )?;
                    (i, n, "Kubernetes")
                } else {
                    return Ok(TaskSpec::single());
                }
            }
        };
        if count == 0 || index >= count {
            return Err(format!(
                "task {index} is not one of {count} tasks (from {origin})"
            ));
        }
        if count > MAX_TASKS {
            return Err(format!(
                "{count} tasks (from {origin}): at most {MAX_TASKS} (a global stage's 64 partitions are reduced by at most 64 of them)"
            ));
        }
        Ok(TaskSpec { index, count })
    }
}

/// One phase of a task-sharded run run as separate scheduler steps (`sluice run --phase`), for
/// a pipeline of dependent job arrays or a DAG: every task runs `map-K` and `reduce-K` for
/// each global stage K (0-based, in plan order), then `write` and, when tasks write the
/// shards, `shards`; one process then runs `publish`. A phase starts only from the markers its
/// predecessors left, and exits instead of waiting for other tasks, so an array with fewer
/// slots than tasks finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Read (K = 0) or apply the previous global stage's decisions, run the record-wise stages
    /// and write global stage K's map side.
    Map(usize),
    /// Reduce this task's partitions of global stage K; the last task to finish publishes the
    /// decisions.
    Reduce(usize),
    /// Apply the last decisions, run the rest and write this task's outputs and token spills.
    Write,
    /// Write this task's share of the shards (after every task's `write`).
    Shards,
    /// Move and merge every task's outputs into the run and publish it (one process).
    Publish,
}

impl Phase {
    /// Its name on the command line and in messages.
    pub fn name(&self) -> String {
        match self {
            Phase::Map(k) => format!("map-{k}"),
            Phase::Reduce(k) => format!("reduce-{k}"),
            Phase::Write => "write".into(),
            Phase::Shards => "shards".into(),
            Phase::Publish => "publish".into(),
        }
    }

    /// The phases of a run with `globals` global stages, in order; `shards`: whether the tasks
    /// write the shards (then a `shards` phase follows `write`).
    pub fn all(globals: usize, shards: bool) -> Vec<Phase> {
        let mut out = Vec::new();
        for k in 0..globals {
            out.push(Phase::Map(k));
            out.push(Phase::Reduce(k));
        }
        out.push(Phase::Write);
        if shards {
            out.push(Phase::Shards);
        }
        out.push(Phase::Publish);
        out
    }

    /// Parse a phase name (`map-0`, `reduce-1`, `write`, `shards`, `publish`; `map` and
    /// `reduce` alone when the pipeline has exactly one global stage), checked against the
    /// phases the run has.
    pub fn parse(s: &str, phases: &[Phase]) -> std::result::Result<Phase, String> {
        let globals = phases.iter().filter(|p| matches!(p, Phase::Map(_))).count();
        let found = match s {
            "map" | "reduce" if globals == 1 => phases
                .iter()
                .find(|p| p.name() == format!("{s}-0"))
                .copied(),
            _ => phases.iter().find(|p| p.name() == s).copied(),
        };
        found.ok_or_else(|| {
            let names: Vec<String> = phases.iter().map(Phase::name).collect();
            format!(
                "{s:?} is not a phase of this run; its phases, in order: {}",
                names.join(" ")
            )
        })
    }
}

/// Split files (their sizes, in plan order) into `tasks` contiguous ranges of about equal
/// bytes. Deterministic; a task may get no file when there are fewer files than tasks.
pub fn assign(sizes: &[u64], tasks: usize) -> Vec<Range<usize>> {
    let tasks = tasks.max(1);
    let total: u128 = sizes.iter().map(|&s| u128::from(s.max(1))).sum();
    let mut bounds = vec![0usize];
    let mut acc: u128 = 0;
    let mut next = 1usize;
    for (i, &s) in sizes.iter().enumerate() {
        // A file goes to the task whose share its midpoint falls in.
        let mid = acc * 2 + u128::from(s.max(1));
        while next < tasks && mid >= 2 * total * next as u128 / tasks as u128 {
            bounds.push(i);
            next += 1;
        }
        acc += u128::from(s.max(1));
    }
    while bounds.len() < tasks {
        bounds.push(sizes.len());
    }
    bounds.push(sizes.len());
    bounds.windows(2).map(|w| w[0]..w[1]).collect()
}

/// The key of a task-sharded run: the pipeline's text, its input files (path and size), the
/// content of the other files it reads (`read`: tokenizers, models, word lists…), the task
/// count and the output directory. Tasks of one run agree on it; markers and intermediate files
/// of any other run are ignored, so a tokenizer edited between two phases makes another run
/// rather than shards of two tokenizers.
pub fn run_key(
    pipeline: &[u8],
    files: &[(PathBuf, u64)],
    read: &[PathBuf],
    tasks: usize,
    out: &Path,
) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(pipeline);
    for (p, size) in files {
        h.update(p.to_string_lossy().as_bytes());
        h.update(&size.to_le_bytes());
    }
    for p in read {
        h.update(p.to_string_lossy().as_bytes());
        let content = crate::storage::hash_file(p).map_or_else(|_| "missing".into(), |(_, c)| c);
        h.update(content.as_bytes());
    }
    h.update(&(tasks as u64).to_le_bytes());
    h.update(out.to_string_lossy().as_bytes());
    format!("{:032x}", h.digest128())
}

/// Completion markers of the phases of one run, under a shared place (a folder, or a prefix in
/// object storage for tasks on machines that share no filesystem).
pub struct Markers {
    root: crate::storage::Place,
    run_key: String,
}

impl Markers {
    /// Markers under `root` for the run identified by `run_key` (a hash of the plan and the
    /// task count): markers of another run are ignored, never trusted.
    pub fn at(root: crate::storage::Place, run_key: &str) -> Markers {
        Markers {
            root,
            run_key: run_key.to_string(),
        }
    }

    /// Markers under the folder `dir`.
    pub fn new(dir: &Path, run_key: &str) -> Markers {
        Markers::at(crate::storage::Place::Local(dir.to_path_buf()), run_key)
    }

    fn place(&self, phase: &str, task: usize) -> crate::storage::Place {
        self.root.join(&format!("{phase}/task-{task:05}.done"))
    }

    /// Record that `task` finished `phase`, with what later phases need to know (counts,
    /// file names).
    pub fn mark(&self, phase: &str, task: usize, payload: &serde_json::Value) -> Result<()> {
        let body = serde_json::json!({"run_key": self.run_key, "payload": payload});
        self.place(phase, task).put(body.to_string().as_bytes())
    }

    /// The payload of `task`'s marker for `phase`, when it exists for this run. On a shared
    /// filesystem a marker is a regular file of the run's folder of at most 1 MiB (a link, a
    /// pipe or a huge file planted there is no marker).
    pub fn done(&self, phase: &str, task: usize) -> Option<serde_json::Value> {
        let bytes = match &self.root {
            crate::storage::Place::Local(root) => {
                let run = root.parent()?;
                let rel = format!(
                    "{}/{phase}/task-{task:05}.done",
                    root.file_name()?.to_string_lossy()
                );
                crate::storage::read_within_if_any(run, &rel, 1 << 20).ok()??
            }
            crate::storage::Place::Remote(_) => self.place(phase, task).get().ok()??,
        };
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        if v.get("run_key").and_then(|k| k.as_str()) != Some(self.run_key.as_str()) {
            return None;
        }
        v.get("payload").cloned()
    }

    /// Every payload of `phase`, in task order, when all `tasks` tasks have marked it.
    pub fn all_done(&self, phase: &str, tasks: usize) -> Option<Vec<serde_json::Value>> {
        (0..tasks).map(|t| self.done(phase, t)).collect()
    }

    /// Wait until every task of `tasks` has marked `phase`; the payloads in task order. Fails
    /// after `timeout`, naming the tasks still missing.
    pub fn wait_all(
        &self,
        phase: &str,
        tasks: usize,
        timeout: Duration,
        poll: Duration,
    ) -> Result<Vec<serde_json::Value>> {
        let started = Instant::now();
        loop {
            let got: Vec<Option<serde_json::Value>> =
                (0..tasks).map(|t| self.done(phase, t)).collect();
            if got.iter().all(Option::is_some) {
                return Ok(got.into_iter().flatten().collect());
            }
            if started.elapsed() >= timeout {
                let missing: Vec<String> = got
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| g.is_none())
                    .map(|(t, _)| t.to_string())
                    .collect();
                return Err(Error::Work {
                    path: PathBuf::from(self.root.join(phase).display()),
                    message: format!(
                        "phase {phase}: tasks {} did not finish within {:?}",
                        missing.join(", "),
                        timeout
                    ),
                });
            }
            std::thread::sleep(poll);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn the_task_comes_from_flags_slurm_or_kubernetes() {
        let none = env(&[]);
        assert_eq!(TaskSpec::resolve(None, None, &none), Ok(TaskSpec::single()));
        assert_eq!(
            TaskSpec::resolve(Some(2), Some(4), &none),
            Ok(TaskSpec { index: 2, count: 4 })
        );
        assert!(TaskSpec::resolve(Some(4), Some(4), &none).is_err());
        assert!(TaskSpec::resolve(Some(1), None, &none).is_err());
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_MIN", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(
            TaskSpec::resolve(None, None, &slurm),
            Ok(TaskSpec { index: 2, count: 4 })
        );
        let k8s = env(&[("JOB_COMPLETION_INDEX", "3")]);
        let err = TaskSpec::resolve(None, None, &k8s).expect_err("needs a count");
        assert!(err.contains("SLUICE_TASKS"), "{err}");
        let k8s = env(&[("JOB_COMPLETION_INDEX", "3"), ("SLUICE_TASKS", "8")]);
        assert_eq!(
            TaskSpec::resolve(None, None, &k8s),
            Ok(TaskSpec { index: 3, count: 8 })
        );
        assert!(TaskSpec::resolve(Some(0), Some(MAX_TASKS + 1), &none)
            .expect_err("too many")
            .contains("at most"));
        let bad = env(&[("JOB_COMPLETION_INDEX", "x")]);
        assert!(TaskSpec::resolve(None, None, &bad).is_err());
    }

    #[test]
    fn phases_are_listed_in_order_and_parsed_against_the_run() {
        let two = Phase::all(2, true);
        let names: Vec<String> = two.iter().map(Phase::name).collect();
        assert_eq!(
            names,
            ["map-0", "reduce-0", "map-1", "reduce-1", "write", "shards", "publish"]
        );
        assert_eq!(Phase::all(0, false), [Phase::Write, Phase::Publish]);
        assert_eq!(Phase::parse("reduce-1", &two), Ok(Phase::Reduce(1)));
        assert!(
            Phase::parse("map", &two).is_err(),
            "ambiguous with two global stages"
        );
        assert!(Phase::parse("map-2", &two).is_err());
        let one = Phase::all(1, false);
        assert_eq!(Phase::parse("map", &one), Ok(Phase::Map(0)));
        assert_eq!(Phase::parse("reduce", &one), Ok(Phase::Reduce(0)));
        let err = Phase::parse("shards", &one).expect_err("no shards phase");
        assert!(err.contains("map-0 reduce-0 write publish"), "{err}");
    }

    #[test]
    fn files_are_dealt_in_contiguous_ranges_balanced_by_bytes() {
        let sizes = [100, 100, 100, 100, 400, 100, 100, 100];
        let r = assign(&sizes, 4);
        assert_eq!(r.len(), 4);
        assert_eq!(r.first().map(|x| x.start), Some(0));
        assert_eq!(r.last().map(|x| x.end), Some(8));
        for w in r.windows(2) {
            assert_eq!(w[0].end, w[1].start, "contiguous: {r:?}");
        }
        let bytes: Vec<u64> = r.iter().map(|x| sizes[x.clone()].iter().sum()).collect();
        // No task exceeds its share by more than one file.
        assert!(bytes.iter().all(|&b| b <= 1100 / 4 + 400), "{bytes:?}");
        let even = assign(&[10; 12], 4);
        assert!(even.iter().all(|x| x.len() == 3), "{even:?}");
        assert_eq!(assign(&sizes, 1), vec![0..8]);
        // Fewer files than tasks: the extra tasks get empty ranges, every file exactly once.
        let r = assign(&[5, 5], 4);
        assert_eq!(r.iter().map(|x| x.len()).sum::<usize>(), 2);
        assert_eq!(r.len(), 4);
        assert_eq!(assign(&sizes, 3), assign(&sizes, 3), "deterministic");
    }

    #[test]
    fn markers_order_phases_and_ignore_other_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Markers::new(dir.path(), "run-a");
        m.mark("map-0", 0, &serde_json::json!({"records": 5}))
            .expect("mark");
        let err = m
            .wait_all(
                "map-0",
                2,
                Duration::from_millis(30),
                Duration::from_millis(5),
            )
            .expect_err("task 1 missing");
        assert!(err.to_string().contains("tasks 1 did not finish"), "{err}");
        Markers::new(dir.path(), "run-b")
            .mark("map-0", 1, &serde_json::json!({}))
            .expect("mark");
        assert!(
            m.done("map-0", 1).is_none(),
            "another run's marker is not trusted"
        );
        m.mark("map-0", 1, &serde_json::json!({"records": 7}))
            .expect("mark");
        let all = m
            .wait_all("map-0", 2, Duration::from_secs(1), Duration::from_millis(5))
            .expect("all");
        assert_eq!(all[0]["records"], 5);
        assert_eq!(all[1]["records"], 7);
    }
}
