//! One phase of a task-sharded run, run alone (`sluice run --phase`, see
//! [`crate::tasks::Phase`]): it starts from what earlier phases left in the work folder and
//! stops where the all-at-once mode would wait for the other tasks.
//!
//! A map phase leaves, beside its shared map output, a `resume/` folder: the samples spilled
//! for the global stage, the rejects so far and a checkpoint of the counts. The next phase of
//! the same task (on any machine: through object storage it is fetched) starts from it, in a
//! fresh attempt folder of its own, so a phase that fails is simply run again. A phase whose
//! marker exists is not run again. The last task to reduce its partitions of a global stage
//! finishes the stage and publishes the decisions, with the stage's summary and what its commit
//! persists, for the process that publishes the run.

use super::exchange::{exchange_name, global_op, PENDING_FILE, SUMMARY_FILE};
use super::stream::Partial;
use crate::engine::{segments_of, Engine, Source};
use crate::error::{Error, Result};
use crate::report::Report;
use crate::stages::Stage;
use crate::tasks::Phase;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The folder a map phase leaves for the next phase of its task.
pub(in crate::engine) const RESUME: &str = "resume";
/// Where a map phase writes the samples it drops (parts its map marker lists).
pub(in crate::engine) const PHASE_OUT: &str = "phase-out";
const CHECKPOINT: &str = "checkpoint.json";
/// Counts and a stage summary: small; a larger file from the work folder is refused.
const SMALL_CAP: u64 = 1 << 30;

impl Engine<'_> {
    /// Run phase `phase` of this task and end; what it counted so far is the report.
    pub(in crate::engine) fn run_phase(
        mut self,
        stages: &[Stage],
        phase: Phase,
        started: Instant,
        threads: usize,
    ) -> Result<Report> {
        let plan = segments_of(stages);
        let t = self.task_ref()?;
        let me = t.run.spec.index;
        let done = match phase {
            Phase::Map(k) => Some(format!("map-{k}")),
            Phase::Write => Some("done".to_string()),
            Phase::Shards => Some("shards".to_string()),
            Phase::Reduce(_) | Phase::Publish => None,
        };
        // Run already (a second submission, or a re-run after a later phase failed).
        if done.is_some_and(|d| t.markers.done(&d, me).is_some()) {
            return Ok(self.phase_report(started, threads, phase, "done already"));
        }
        let last = plan.len() - 1;
        let seg = match phase {
            Phase::Map(k) | Phase::Reduce(k) if k < last => k,
            Phase::Write => last,
            Phase::Shards => return self.phase_shards(started, threads),
            _ => {
                return Err(Error::Work {
                    path: t.run.work.clone(),
                    message: format!(
                        "phase {} is not one of this pipeline's (`sluice run --phases`)",
                        phase.name()
                    ),
                })
            }
        };
        if let Phase::Reduce(_) = phase {
            let g = plan[seg].global.unwrap_or_default();
            let what = self.phase_reduce(stages, seg, g)?;
            return Ok(self.phase_report(started, threads, phase, what));
        }
        let source = match seg.checked_sub(1) {
            None => Source::Inputs,
            Some(prev) => self.resume(prev, plan[prev].global.unwrap_or_default())?,
        };
        let source_spill = match &source {
            Source::Spill { path, .. } => Some(path.clone()),
            Source::Inputs => None,
        };
        let records: Vec<usize> = plan[seg].records.clone().collect();
        self.begin_segment(seg);
        match plan[seg].global {
            Some(g) => {
                let spill = self.scratch(&format!("spill-{seg}.jsonl"));
                self.segment(stages, source, &records, Some((g, spill)))?;
                self.pause_after_map(stages, g, seg)?;
            }
            None => {
                self.segment(stages, source, &records, None)?;
                self.task_done()?;
            }
        }
        // Marked: no re-run of this phase reads its source again.
        if let Some(p) = source_spill {
            #[allow(clippy::disallowed_methods)] // a spill in the work folder, consumed
            let _ = std::fs::remove_file(p);
        }
        Ok(self.phase_report(started, threads, phase, "done"))
    }

    /// Start from where this task's map phase of segment `seg` stopped: its counts and
    /// rejects so far, and its spilled samples with this task's share of global stage `g`'s
    /// decisions.
    fn resume(&mut self, seg: usize, g: usize) -> Result<Source> {
        let t = self.task_ref()?;
        let me = t.run.spec.index;
        let phase = format!("map-{seg}");
        let mark = t.markers.done(&phase, me).ok_or_else(|| Error::Work {
            path: t.run.work.join("markers"),
            message: format!(
                "task {me} has not run phase {phase}{}: run it first",
                t.other_runs_hint()
            ),
        })?;
        let records = mark["records"].as_u64().ok_or_else(|| Error::Work {
            path: t.run.work.join("markers"),
            message: format!("task {me}'s {phase} marker has no record count"),
        })?;
        let dir = t.fetch(
            mark["dir"].as_str().unwrap_or_default(),
            me,
            RESUME,
            "resume",
        )?;
        let bytes = crate::storage::read_within(&dir, CHECKPOINT, SMALL_CAP)?;
        let counts: Partial = serde_json::from_slice(&bytes).map_err(|e| Error::Work {
            path: dir.join(CHECKPOINT),
            message: format!("unreadable checkpoint: {e}"),
        })?;
        let fresh = &self.tally;
        if counts.tally.inputs.len() != fresh.inputs.len()
            || counts.tally.stages.len() != fresh.stages.len()
            || counts.tally.stage_cpu.len() != fresh.stage_cpu.len()
            || counts.units.len() != seg + 1
        {
            return Err(Error::Work {
                path: dir.join(CHECKPOINT),
                message: "the checkpoint does not fit this pipeline: refused".into(),
            });
        }
        let spill = crate::storage::file_within(&dir, &format!("spill-{seg}.jsonl"))?;
        let rejects = crate::storage::file_within(&dir, "rejects.jsonl")?;
        let decisions = t.take_decisions(self.plan.stages[g].makes_a_mix(), seg, records)?;
        if let Some(out) = self.rejects.as_mut() {
            let mut from = std::fs::File::open(&rejects).map_err(|e| Error::io(&rejects, e))?;
            std::io::copy(&mut from, out).map_err(|e| Error::io(&rejects, e))?;
        }
        self.tally = counts.tally;
        self.bytes_read.store(counts.bytes_read, Ordering::Relaxed);
        if let Some(t) = self.task.as_mut() {
            t.units = counts.units;
        }
        self.settle_global(g, records, &decisions);
        Ok(Source::Spill {
            path: spill,
            decisions,
            stage: g,
        })
    }

    /// The end of a map phase: leave what the next phase of this task starts from, share the
    /// map output (task 0 adds the stage's preloaded records) and mark the phase.
    fn pause_after_map(&mut self, stages: &[Stage], g: usize, seg: usize) -> Result<()> {
        let rejects = self.rejects.take();
        let finishing = Instant::now();
        let mut dropped = Vec::new();
        for sink in self.dropped.drain(..) {
            dropped.extend(sink.finish()?);
        }
        self.tally.write_time += finishing.elapsed();
        let t = self.task_ref()?;
        let resume = t.own.join(RESUME);
        let spill = format!("spill-{seg}.jsonl");
        crate::storage::rename(&t.own.join(&spill), &resume.join(&spill))?;
        if let Some(r) = rejects {
            // Created in `resume/` for a map phase.
            r.commit()?;
        }
        let counts = Partial {
            tally: self.tally.clone(),
            units: t.units.clone(),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            outputs: Vec::new(),
            catalog: Default::default(),
        };
        let bytes = serde_json::to_vec(&counts).map_err(|e| Error::Output {
            path: resume.join(CHECKPOINT),
            message: format!("cannot encode the task's counts: {e}"),
        })?;
        crate::storage::write_atomic(&resume.join(CHECKPOINT), &bytes)?;
        t.share(
            RESUME,
            &[spill, CHECKPOINT.to_string(), "rejects.jsonl".to_string()],
        )?;
        let names: Vec<String> = dropped.iter().map(|o| o.path.clone()).collect();
        t.share(PHASE_OUT, &names)?;
        t.share(&exchange_name(seg), &crate::exchange::file_names())?;
        if t.reduce_spread() && t.run.spec.index == 0 {
            t.write_preload(global_op(stages, g, &t.run.work)?, seg)?;
        }
        t.mark_map(seg, t.mapped, &dropped)
    }

    /// A reduce phase: this task's partitions of global stage `g` (segment `seg`); the last
    /// task to finish its share finishes the stage. Through object storage task 0 reduces it
    /// all. Returns what it did.
    fn phase_reduce(&self, stages: &[Stage], seg: usize, g: usize) -> Result<&'static str> {
        let t = self.task_ref()?;
        let (me, n) = (t.run.spec.index, t.run.spec.count);
        let op = global_op(stages, g, &t.run.work)?;
        if t.markers.done(&format!("reduce-{seg}"), 0).is_some() {
            return Ok("done already");
        }
        let publish = |decided| {
            t.publish_decisions(op, seg, decided)
                .map_err(|e| self.stage_error(g, e))
        };
        if !t.reduce_spread() {
            if me != 0 {
                return Ok("nothing to do: task 0 reduces through object storage");
            }
            let maps = t.wait_all(&format!("map-{seg}"), n)?;
            publish(t.merge_reduce(op, seg, &maps))?;
            return Ok("reduced and published the decisions");
        }
        let reduced_phase = format!("reduced-{seg}");
        let dirs = match t.markers.done(&reduced_phase, me) {
            None => Some(t.reduce_share(op, seg)?.0),
            Some(_) => None,
        };
        // The last task to finish its share finishes the stage (two that finish together
        // both do, and publish the same bytes).
        let Some(all) = t.markers.all_done(&reduced_phase, n) else {
            return Ok("reduced its share");
        };
        let dirs = match dirs {
            Some(d) => d,
            None => t.exchange_dirs(seg, &t.wait_all(&format!("map-{seg}"), n)?)?,
        };
        publish(t.finish_spread(op, seg, &dirs, &all))?;
        Ok("reduced its share and published the decisions")
    }

    /// The shards phase: this task's share of the shards.
    fn phase_shards(mut self, started: Instant, threads: usize) -> Result<Report> {
        self.task_write_shards()?;
        Ok(self.phase_report(started, threads, Phase::Shards, "done"))
    }

    /// The publishing process of a run in phases, before the merge: each global stage's
    /// summary and pending commit, as the process that finished it left them. Returns the
    /// reduce CPU each stage took, to add once the counts are merged.
    pub(in crate::engine) fn restore_finished(
        &mut self,
        stages: &[Stage],
    ) -> Result<Vec<(usize, Duration)>> {
        let t = self.task_ref()?;
        let n = t.run.spec.count;
        let mut cpu = Vec::new();
        let mut details = Vec::new();
        for (seg, s) in segments_of(stages).iter().enumerate() {
            let Some(g) = s.global else { continue };
            let op = global_op(stages, g, &t.run.work)?;
            let dir = format!("reduce-{seg}");
            if let Some(bytes) = t.get_shared(&format!("{dir}/{SUMMARY_FILE}"), SMALL_CAP)? {
                let summary: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| Error::Work {
                        path: t.run.work.join(&dir).join(SUMMARY_FILE),
                        message: format!("unreadable stage summary: {e}"),
                    })?;
                details.push((g, summary));
            }
            if let Some(bytes) = t.get_shared(&format!("{dir}/{PENDING_FILE}"), u64::MAX)? {
                op.restore_pending(bytes);
            }
            if t.reduce_spread() {
                let spent: f64 = t
                    .wait_all(&format!("reduced-{seg}"), n)?
                    .iter()
                    .filter_map(|m| m["cpu_seconds"].as_f64())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .sum();
                cpu.push((g, Duration::from_secs_f64(spent.min(1e12))));
            }
        }
        for (g, summary) in details {
            self.tally.stages[g].details = Some(summary);
        }
        Ok(cpu)
    }

    /// What a phase reports: this task's counts so far.
    fn phase_report(&self, started: Instant, threads: usize, phase: Phase, what: &str) -> Report {
        let mut report = self.task_report(started, threads);
        if let Some(s) = self.task.as_ref().map(|t| t.run.spec) {
            report.status = format!(
                "task {} of {}: phase {} {what}",
                s.index,
                s.count,
                phase.name()
            );
        }
        report
    }
}

impl super::TaskState {
    /// A file of the shared work folder (`rel` under its root), if it exists: checked to be a
    /// regular file of the folder and at most `cap` bytes.
    pub(in crate::engine) fn get_shared(&self, rel: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        match &self.run.shared {
            Some(_) => self.shared_root().join(rel).get(),
            None => crate::storage::read_within_if_any(&self.run.work, rel, cap),
        }
    }
}
