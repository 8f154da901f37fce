//! A global stage across tasks: publish the map side, reduce (spread over the tasks on a shared
//! filesystem, at task 0 through object storage), and every task takes its share of the decisions.

use super::POLL;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::stages::{Decisions, Stage};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The most extra copies of one sample a mix's decisions may ask for in a task-sharded run
/// (a mix's `max_repeats` is at most 10,000).
const MIX_REPEAT_CAP: u32 = 10_000;

impl Engine<'_> {
    /// A task's global stage: publish its map output, let task 0 merge and reduce every
    /// task's, and take this task's share of the decisions (positions made local).
    pub(in crate::engine) fn task_exchange(
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
        let decisions_at = t
            .shared_root()
            .join(&format!("reduce-{seg}/decisions.json"));
        let mut times = Vec::new();
        let mut reduce_cpu = Duration::ZERO;
        // Task 0 has every task's map marker once it has merged; the others wait for them.
        let mut counts = None;
        // On a shared filesystem every task reduces a share of the partitions in place; through
        // object storage (each task would have to fetch every map output) task 0 reduces all.
        let spread = t.run.shared.is_none() && n > 1;
        if spread {
            let (maps, spent, cpu) = self.spread_reduce(stages, g, &exchange_name)?;
            times.extend(spent);
            reduce_cpu = cpu;
            counts = Some(maps);
        } else if me == 0 {
            let waited = Instant::now();
            let maps = t.markers.wait_all(&map_phase, n, timeout, POLL)?;
            times.push((
                format!("wait for map-{seg}"),
                waited.elapsed().as_secs_f64(),
            ));
            let reducing = Instant::now();
            // A failure here still releases the others (see `publish_decisions`).
            let merged = reduce_dir.join("exchange");
            let resolved = (|| -> Result<Decisions> {
                let parts = t.map_outputs(&maps, &exchange_name, seg)?;
                if merged.exists() {
                    std::fs::remove_dir_all(&merged).map_err(|e| Error::io(&merged, e))?;
                }
                match &stages[g] {
                    Stage::Global(op) => op.merge_resolve(&merged, &parts),
                    Stage::Record(_) => Ok(Decisions::new()),
                }
            })();
            t.publish_decisions(seg, resolved)?;
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
        if t.run.shared.is_none() {
            // A regular file of the work folder (not a link or a pipe planted there).
            crate::storage::file_within(&work, &format!("reduce-{seg}/decisions.json"))?;
        }
        let bytes = decisions_at.get()?.ok_or_else(|| Error::Output {
            path: decisions_path.clone(),
            message: "the decisions are missing".into(),
        })?;
        let all = Decisions::from_json(&bytes).map_err(|message| Error::Output {
            path: decisions_path.clone(),
            message: message.to_string(),
        })?;
        // Decisions come from the work folder: only a mix repeats samples, and a bounded
        // number of times (a crafted count would copy a sample millions of times).
        let cap = if self.plan.stages[g].type_name() == "mix" {
            MIX_REPEAT_CAP
        } else {
            0
        };
        if all.max_repeat() > cap {
            return Err(Error::Work {
                path: decisions_path.clone(),
                message: format!(
                    "a decision repeats a sample {} times, over {cap}: refused",
                    all.max_repeat()
                ),
            });
        }
        self.phase_times.extend(times);
        self.tally.stage_cpu[g] += reduce_cpu;
        Ok(all.within(offset..offset + records))
    }

    /// The reduce of a global stage spread over the tasks (shared filesystem): task 0 writes
    /// the stage's preloaded records once; every task reduces partitions p ≡ its index (mod N)
    /// over every task's map output, read in place, and writes each partition's result to its
    /// folder; task 0 finishes from all of them and writes the decisions. Every failure is
    /// marked, so no task waits out the timeout for one that failed. Returns the map markers,
    /// task 0's phase times and this task's reduce time.
    #[allow(clippy::type_complexity)]
    fn spread_reduce(
        &self,
        stages: &[Stage],
        g: usize,
        exchange_name: &str,
    ) -> Result<(Vec<serde_json::Value>, Vec<(String, f64)>, Duration)> {
        let t = self.task_ref()?;
        let (me, n) = (t.run.spec.index, t.run.spec.count);
        let seg = t.segment;
        let timeout = t.run.timeout;
        let Stage::Global(op) = &stages[g] else {
            return Err(Error::Output {
                path: t.run.work.clone(),
                message: format!("stage {g} is not global"),
            });
        };
        let reduce_dir = t.run.work.join(format!("reduce-{seg}"));
        let preload_dir = reduce_dir.join("preload");
        let (preload_phase, reduced_phase) = (format!("preload-{seg}"), format!("reduced-{seg}"));
        let mut times = Vec::new();
        let failed = |e: &Error| serde_json::json!({ "error": e.to_string() });
        if me == 0 {
            let written = (|| -> Result<u64> {
                if preload_dir.exists() {
                    #[allow(clippy::disallowed_methods)] // a scratch folder of the run
                    std::fs::remove_dir_all(&preload_dir)
                        .map_err(|e| Error::io(&preload_dir, e))?;
                }
                op.preload_into(&preload_dir)
            })();
            match &written {
                Ok(count) => {
                    t.markers
                        .mark(&preload_phase, 0, &serde_json::json!({ "records": count }))?
                }
                Err(e) => t.markers.mark(&preload_phase, 0, &failed(e))?,
            }
            written?;
        }
        let waited = Instant::now();
        let maps = t
            .markers
            .wait_all(&format!("map-{seg}"), n, timeout, POLL)?;
        let preload = t.markers.wait_all(&preload_phase, 1, timeout, POLL)?;
        times.push((
            format!("wait for map-{seg}"),
            waited.elapsed().as_secs_f64(),
        ));
        if let Some(e) = preload[0]["error"].as_str() {
            return Err(Error::Output {
                path: preload_dir,
                message: format!("task 0 could not write the preloaded records: {e}"),
            });
        }
        let offset = preload[0]["records"].as_u64().unwrap_or(0);
        for name in crate::exchange::file_names() {
            crate::storage::file_within(&t.run.work, &format!("reduce-{seg}/preload/{name}"))?;
        }
        let reducing = Instant::now();
        let out_name = format!("reduced-{seg}");
        let mine: Vec<usize> = (0..crate::exchange::PARTITIONS)
            .filter(|p| p % n == me)
            .collect();
        // The preloaded records, then every task's map output, checked and read in place.
        let reduced = t.map_outputs(&maps, exchange_name, seg).and_then(|parts| {
            let dirs: Vec<PathBuf> = std::iter::once(preload_dir.clone()).chain(parts).collect();
            op.reduce_some(&dirs, &mine, &t.own.join(&out_name))?;
            Ok(dirs)
        });
        let spent = reducing.elapsed();
        let payload = match &reduced {
            Ok(_) => serde_json::json!({ "dir": t.shared_dir() }),
            Err(e) => failed(e),
        };
        t.markers.mark(&reduced_phase, me, &payload)?;
        let dirs = reduced?;
        if me == 0 {
            let waited = Instant::now();
            let all = t.markers.wait_all(&reduced_phase, n, timeout, POLL)?;
            times.push((
                format!("wait for reduced-{seg}"),
                waited.elapsed().as_secs_f64(),
            ));
            let finishing = Instant::now();
            let decided = (|| -> Result<Decisions> {
                let mut files = Vec::with_capacity(crate::exchange::PARTITIONS);
                for p in 0..crate::exchange::PARTITIONS {
                    let owner = p % n;
                    if let Some(e) = all[owner]["error"].as_str() {
                        return Err(Error::Output {
                            path: t.run.work.clone(),
                            message: format!("task {owner} could not reduce: {e}"),
                        });
                    }
                    let dir = t.fetch(
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
                op.finish_from(&dirs, offset, &files)
            })();
            t.publish_decisions(seg, decided)?;
            times.push((
                format!("finish {}", self.names[g]),
                finishing.elapsed().as_secs_f64(),
            ));
        }
        Ok((maps, times, spent))
    }
}

impl super::TaskState {
    /// Every task's map output of segment `seg`, named by the map markers: each must be one of
    /// that task's attempt folders, holding only regular files (the work folder is shared).
    fn map_outputs(
        &self,
        maps: &[serde_json::Value],
        exchange_name: &str,
        seg: usize,
    ) -> Result<Vec<PathBuf>> {
        maps.iter()
            .enumerate()
            .map(|(i, m)| {
                let dir = self.fetch(
                    m["dir"].as_str().unwrap_or_default(),
                    i,
                    exchange_name,
                    &format!("map-{seg}-{i}"),
                )?;
                for name in crate::exchange::file_names() {
                    crate::storage::file_within(&dir, &name)?;
                }
                Ok(dir)
            })
            .collect()
    }

    /// Task 0: publish segment `seg`'s decisions and mark the reduce done. A reduce that failed
    /// publishes no decisions, which still releases the other tasks (nothing of the run is
    /// published), and then fails this one; the others would otherwise wait out the timeout.
    fn publish_decisions(&self, seg: usize, decided: Result<Decisions>) -> Result<()> {
        let (decisions, failure) = match decided {
            Ok(d) => (d, None),
            Err(e) => (Decisions::new(), Some(e)),
        };
        let at = format!("reduce-{seg}/decisions.json");
        let json = decisions.to_json().map_err(|message| Error::Output {
            path: self.run.work.join(&at),
            message: format!("cannot encode decisions: {message}"),
        })?;
        self.shared_root().join(&at).put(&json)?;
        self.markers
            .mark(&format!("reduce-{seg}"), 0, &serde_json::json!({}))?;
        failure.map_or(Ok(()), Err)
    }
}
