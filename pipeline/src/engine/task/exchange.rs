//! A global stage across tasks: publish the map side, reduce (spread over the tasks on a shared
//! filesystem, at task 0 through object storage), and every task takes its share of the decisions.

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::exchange::GlobalOp;
use crate::stages::{Decisions, Stage};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The most extra copies of one sample a mix's decisions may ask for in a task-sharded run
/// (a mix's `max_repeats` is at most 10,000).
const MIX_REPEAT_CAP: u32 = 10_000;

/// What a reduce finished with, beside the decisions, for a run in phases: the stage's
/// summary (the report's details) and what its commit persists.
pub(in crate::engine) const SUMMARY_FILE: &str = "summary.json";
pub(in crate::engine) const PENDING_FILE: &str = "pending.bin";

/// The name of segment `seg`'s exchange folder in a task's folder.
pub(in crate::engine) fn exchange_name(seg: usize) -> String {
    format!("spill-{seg}.exchange")
}

/// The global stage `g` of `stages`, as the engine reduces it.
pub(in crate::engine) fn global_op<'s>(
    stages: &'s [Stage],
    g: usize,
    work: &std::path::Path,
) -> Result<&'s dyn GlobalOp> {
    match stages.get(g) {
        Some(Stage::Global(op)) => Ok(op.as_ref()),
        _ => Err(Error::Output {
            path: work.to_path_buf(),
            message: format!("stage {g} is not global"),
        }),
    }
}

impl Engine<'_> {
    /// A task's global stage, all tasks at once: publish its map output, reduce (spread, or
    /// at task 0), and take this task's share of the decisions (positions made local).
    pub(in crate::engine) fn task_exchange(
        &mut self,
        stages: &[Stage],
        g: usize,
        records: u64,
    ) -> Result<Decisions> {
        let t = self.task_ref()?;
        let (me, n) = (t.run.spec.index, t.run.spec.count);
        let seg = t.segment;
        let op = global_op(stages, g, &t.run.work)?;
        t.share(&exchange_name(seg), &crate::exchange::file_names())?;
        // On a shared filesystem every task reduces a share of the partitions in place; through
        // object storage (each task would have to fetch every map output) task 0 reduces all.
        let spread = t.reduce_spread();
        if spread && me == 0 {
            t.write_preload(op, seg)?;
        }
        t.mark_map(seg, records, &[])?;
        let mut times = Vec::new();
        let mut reduce_cpu = Duration::ZERO;
        if spread {
            let waited = Instant::now();
            // `reduce_share` marks a failure: task 0 then publishes it, the others' failure
            // reaches task 0 through their markers, and no task waits out the timeout.
            let reduced = t.reduce_share(op, seg);
            if me == 0 {
                let mut finishing = Instant::now();
                let decided = reduced.and_then(|(dirs, spent)| {
                    reduce_cpu = spent;
                    times.push((
                        format!("wait for map-{seg}"),
                        (waited.elapsed().saturating_sub(spent)).as_secs_f64(),
                    ));
                    let waited = Instant::now();
                    let all = t.wait_all(&format!("reduced-{seg}"), n)?;
                    times.push((
                        format!("wait for reduced-{seg}"),
                        waited.elapsed().as_secs_f64(),
                    ));
                    finishing = Instant::now();
                    t.finish_spread(op, seg, &dirs, &all)
                });
                t.publish_decisions(op, seg, decided)?;
                times.push((
                    format!("finish {}", self.names[g]),
                    finishing.elapsed().as_secs_f64(),
                ));
            } else {
                reduce_cpu = reduced?.1;
            }
        } else if me == 0 {
            let waited = Instant::now();
            let maps = t.wait_all(&format!("map-{seg}"), n)?;
            times.push((
                format!("wait for map-{seg}"),
                waited.elapsed().as_secs_f64(),
            ));
            let reducing = Instant::now();
            let decided = t.merge_reduce(op, seg, &maps);
            t.publish_decisions(op, seg, decided)?;
            reduce_cpu = reducing.elapsed();
            times.push((
                format!("merge and reduce {}", self.names[g]),
                reduce_cpu.as_secs_f64(),
            ));
        }
        let mine = t.take_decisions(self.plan.stages[g].makes_a_mix(), seg, records)?;
        self.phase_times.extend(times);
        self.tally.stage_cpu[g] += reduce_cpu;
        Ok(mine)
    }
}

impl super::TaskState {
    /// Whether the reduce is spread over the tasks (a shared filesystem, more than one task).
    pub(in crate::engine) fn reduce_spread(&self) -> bool {
        self.run.shared.is_none() && self.run.spec.count > 1
    }

    /// Say that this task's map output of segment `seg` (`records` positions) is shared, with
    /// the parts of dropped samples a phase run alone wrote (under its `phase-out/`).
    pub(in crate::engine) fn mark_map(
        &self,
        seg: usize,
        records: u64,
        dropped: &[crate::io::writers::OutputFile],
    ) -> Result<()> {
        self.markers.mark(
            &format!("map-{seg}"),
            self.run.spec.index,
            &serde_json::json!({ "records": records, "dir": self.shared_dir(), "outputs": dropped }),
        )
    }

    /// Task 0, spread reduce: write the stage's preloaded records once, as an exchange every
    /// reducer reads first, and mark how many there are. All at once, a failure is marked too
    /// (the other tasks wait for this marker).
    pub(in crate::engine) fn write_preload(&self, op: &dyn GlobalOp, seg: usize) -> Result<()> {
        // In this attempt's folder: another attempt never writes over it, and the marker names
        // the folder once it is complete.
        let preload_dir = self.own.join(format!("preload-{seg}"));
        let written = (|| -> Result<u64> {
            if preload_dir.exists() {
                #[allow(clippy::disallowed_methods)] // a scratch folder of this attempt
                std::fs::remove_dir_all(&preload_dir).map_err(|e| Error::io(&preload_dir, e))?;
            }
            op.preload_into(&preload_dir)
        })();
        let phase = format!("preload-{seg}");
        match &written {
            Ok(count) => self.markers.mark(
                &phase,
                0,
                &serde_json::json!({ "records": count, "dir": self.shared_dir() }),
            )?,
            Err(e) if self.phase().is_none() => self.markers.mark(&phase, 0, &failed(e))?,
            Err(_) => {}
        }
        written.map(drop)
    }

    /// Spread reduce: partitions p ≡ this task's index (mod N) over the preloaded records and
    /// every task's map output, read in place; each partition's result goes to this task's
    /// folder, and the `reduced-<seg>` marker says where (with the CPU it took). Returns the
    /// exchange folders (preloaded first) and the reduce time.
    pub(in crate::engine) fn reduce_share(
        &self,
        op: &dyn GlobalOp,
        seg: usize,
    ) -> Result<(Vec<PathBuf>, Duration)> {
        let (me, n) = (self.run.spec.index, self.run.spec.count);
        let reduced_phase = format!("reduced-{seg}");
        let result = (|| -> Result<(Vec<PathBuf>, Duration)> {
            let maps = self.wait_all(&format!("map-{seg}"), n)?;
            let dirs = self.exchange_dirs(seg, &maps)?;
            let reducing = Instant::now();
            let mine: Vec<usize> = (0..crate::exchange::PARTITIONS)
                .filter(|p| p % n == me)
                .collect();
            op.reduce_some(&dirs, &mine, &self.own.join(&reduced_phase))?;
            Ok((dirs, reducing.elapsed()))
        })();
        match &result {
            Ok((_, spent)) => self.markers.mark(
                &reduced_phase,
                me,
                &serde_json::json!({ "dir": self.shared_dir(), "cpu_seconds": spent.as_secs_f64() }),
            )?,
            // In phases nobody waits for this marker, and it must not stop a re-run.
            Err(e) if self.phase().is_none() => self.markers.mark(&reduced_phase, me, &failed(e))?,
            Err(_) => {}
        }
        result
    }

    /// The exchange folders of segment `seg`, checked: the preloaded records (task 0 wrote
    /// them), then every task's map output.
    pub(in crate::engine) fn exchange_dirs(
        &self,
        seg: usize,
        maps: &[serde_json::Value],
    ) -> Result<Vec<PathBuf>> {
        let preload = self.wait_all(&format!("preload-{seg}"), 1)?;
        if let Some(e) = preload[0]["error"].as_str() {
            return Err(Error::Output {
                path: self.run.work.join("markers"),
                message: format!("task 0 could not write the preloaded records: {e}"),
            });
        }
        // One of task 0's attempt folders, checked as every map output is.
        let preload_dir = self.fetch(
            preload[0]["dir"].as_str().unwrap_or_default(),
            0,
            &format!("preload-{seg}"),
            &format!("preload-{seg}"),
        )?;
        for name in crate::exchange::file_names() {
            crate::storage::file_within(&preload_dir, &name)?;
        }
        let parts = self.map_outputs(maps, seg)?;
        Ok(std::iter::once(preload_dir).chain(parts).collect())
    }

    /// Spread reduce, once every task marked `reduced-<seg>` (`all`, in task order): finish
    /// from every partition's result over the exchange folders `dirs`.
    pub(in crate::engine) fn finish_spread(
        &self,
        op: &dyn GlobalOp,
        seg: usize,
        dirs: &[PathBuf],
        all: &[serde_json::Value],
    ) -> Result<Decisions> {
        let n = self.run.spec.count;
        let out_name = format!("reduced-{seg}");
        let preload = self.wait_all(&format!("preload-{seg}"), 1)?;
        let offset = preload[0]["records"].as_u64().unwrap_or(0);
        let mut files = Vec::with_capacity(crate::exchange::PARTITIONS);
        for p in 0..crate::exchange::PARTITIONS {
            let owner = p % n;
            if let Some(e) = all[owner]["error"].as_str() {
                return Err(Error::Output {
                    path: self.run.work.clone(),
                    message: format!("task {owner} could not reduce: {e}"),
                });
            }
            let dir = self.fetch(
                all[owner]["dir"].as_str().unwrap_or_default(),
                owner,
                &out_name,
                &format!("reduced-{seg}-{owner}"),
            )?;
            files.push(crate::storage::file_within(
                &dir,
                &crate::exchange::reduced_file(p),
            )?);
        }
        op.finish_from(dirs, offset, &files)
    }

    /// Reduce at task 0 (object storage): every task's map output fetched, merged after the
    /// stage's preloaded records, reduced and finished.
    pub(in crate::engine) fn merge_reduce(
        &self,
        op: &dyn GlobalOp,
        seg: usize,
        maps: &[serde_json::Value],
    ) -> Result<Decisions> {
        let merged = self.run.work.join(format!("reduce-{seg}/exchange"));
        let parts = self.map_outputs(maps, seg)?;
        if merged.exists() {
            #[allow(clippy::disallowed_methods)] // a scratch folder of the run
            std::fs::remove_dir_all(&merged).map_err(|e| Error::io(&merged, e))?;
        }
        op.merge_resolve(&merged, &parts)
    }

    /// This task's share of segment `seg`'s decisions (it mapped `records` positions), read
    /// from the work folder once the reduce is marked; `mix`: the stage may repeat samples.
    pub(in crate::engine) fn take_decisions(
        &self,
        mix: bool,
        seg: usize,
        records: u64,
    ) -> Result<Decisions> {
        let (me, n) = (self.run.spec.index, self.run.spec.count);
        let counts = self.wait_all(&format!("map-{seg}"), n)?;
        self.wait_all(&format!("reduce-{seg}"), 1)?;
        let offset: u64 = counts[..me]
            .iter()
            .map(|c| c["records"].as_u64().unwrap_or(0))
            .sum();
        let at = format!("reduce-{seg}/decisions.json");
        let decisions_path = self.run.work.join(&at);
        if self.run.shared.is_none() {
            // A regular file of the work folder (not a link or a pipe planted there).
            crate::storage::file_within(&self.run.work, &at)?;
        }
        let bytes = self
            .shared_root()
            .join(&at)
            .get()?
            .ok_or_else(|| Error::Output {
                path: decisions_path.clone(),
                message: "the decisions are missing".into(),
            })?;
        let all = Decisions::from_json(&bytes).map_err(|message| Error::Output {
            path: decisions_path.clone(),
            message: message.to_string(),
        })?;
        // Decisions come from the work folder: only a mix repeats samples, and a bounded
        // number of times (a crafted count would copy a sample millions of times).
        let cap = if mix { MIX_REPEAT_CAP } else { 0 };
        if all.max_repeat() > cap {
            return Err(Error::Work {
                path: decisions_path,
                message: format!(
                    "a decision repeats a sample {} times, over {cap}: refused",
                    all.max_repeat()
                ),
            });
        }
        Ok(all.within(offset..offset + records))
    }

    /// Every task's map output of segment `seg`, named by the map markers: each must be one of
    /// that task's attempt folders, holding only regular files (the work folder is shared).
    fn map_outputs(&self, maps: &[serde_json::Value], seg: usize) -> Result<Vec<PathBuf>> {
        maps.iter()
            .enumerate()
            .map(|(i, m)| {
                let dir = self.fetch(
                    m["dir"].as_str().unwrap_or_default(),
                    i,
                    &exchange_name(seg),
                    &format!("map-{seg}-{i}"),
                )?;
                for name in crate::exchange::file_names() {
                    crate::storage::file_within(&dir, &name)?;
                }
                Ok(dir)
            })
            .collect()
    }

    /// Publish segment `seg`'s decisions and mark the reduce done. In phases, the stage's
    /// summary and what its commit persists go beside them (the publishing process is another).
    /// All at once, a reduce that failed publishes no decisions, which still releases the
    /// other tasks (nothing of the run is published), and then fails this one; the others
    /// would otherwise wait out the timeout. In phases a failure marks nothing: the phase is
    /// run again.
    pub(in crate::engine) fn publish_decisions(
        &self,
        op: &dyn GlobalOp,
        seg: usize,
        decided: Result<Decisions>,
    ) -> Result<()> {
        let (decisions, failure) = match decided {
            Ok(d) => (d, None),
            Err(e) if self.phase().is_some() => return Err(e),
            Err(e) => (Decisions::new(), Some(e)),
        };
        let at = format!("reduce-{seg}/decisions.json");
        let json = decisions.to_json().map_err(|message| Error::Output {
            path: self.run.work.join(&at),
            message: format!("cannot encode decisions: {message}"),
        })?;
        let dir = self.shared_root().join(&format!("reduce-{seg}"));
        if self.phase().is_some() {
            if let Some(summary) = op.summary() {
                dir.join(SUMMARY_FILE).put(summary.to_string().as_bytes())?;
            }
            if let Some(pending) = op.pending() {
                dir.join(PENDING_FILE).put(&pending)?;
            }
        }
        dir.join("decisions.json").put(&json)?;
        self.markers
            .mark(&format!("reduce-{seg}"), 0, &serde_json::json!({}))?;
        failure.map_or(Ok(()), Err)
    }
}

/// A marker payload saying that a step failed, and why.
fn failed(e: &Error) -> serde_json::Value {
    serde_json::json!({ "error": e.to_string() })
}
