//! Task 0: merge the tasks' counts, parts, catalog parts and token spills, and replay kept
//! samples into the sinks that need every one (LLaMA-Factory files).

use super::stream::{Partial, StreamLine};
use crate::engine::batch::BatchCut;
use crate::engine::sinks::{make_sinks, shard_sink, SinkSet};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::sample::Sample;
use crate::storage::{AtomicFile, RunDir};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Engine<'_> {
    /// Task 0 (all at once), or the process that publishes a run in phases: merge every task's
    /// outputs into the run, publish it and remove the work folder. `reduce_cpu`: the reduce
    /// time of global stages spent in other processes (stage index, time).
    pub(in crate::engine) fn publish_tasks(
        mut self,
        out_dir: &std::path::Path,
        started: Instant,
        threads: usize,
        max_reject_ratio: f64,
        reduce_cpu: Vec<(usize, std::time::Duration)>,
    ) -> Result<crate::report::Report> {
        let local_work = self.task.as_ref().map(|t| t.run.work.clone());
        let work = self.task.as_ref().map(|t| {
            (
                crate::storage::Place::Local(t.run.work.clone()),
                t.shared_root(),
            )
        });
        self.merge_tasks(out_dir)?;
        for (g, spent) in reduce_cpu {
            if let Some(cpu) = self.tally.stage_cpu.get_mut(g) {
                *cpu += spent;
            }
        }
        let report = self.finish(started, threads, max_reject_ratio)?;
        // The local work folder, and the shared one when it is elsewhere.
        for place in work.into_iter().flat_map(|(local, shared)| [local, shared]) {
            place.remove_all();
        }
        // The folder it sat in (`--work`, or `<out>.tasks`), if that is now empty.
        if let Some(parent) = local_work.as_deref().and_then(std::path::Path::parent) {
            #[allow(clippy::disallowed_methods)] // an empty scratch folder; never a non-empty one
            let _ = std::fs::remove_dir(parent);
        }
        Ok(report)
    }

    /// Task 0, once every task is done: merge the counts and catalog parts, move the tasks'
    /// parts into the run, replay kept samples into LLaMA-Factory files and adopt the token
    /// spills for the shards, all in task order (input order).
    pub(in crate::engine) fn merge_tasks(&mut self, out_dir: &std::path::Path) -> Result<()> {
        let shared_shards = self.shards_shared();
        let t = self.task.take().ok_or_else(|| Error::Output {
            path: out_dir.to_path_buf(),
            message: "not a task".into(),
        })?;
        let n = t.run.spec.count;
        let waited = Instant::now();
        let done = t.wait_all("done", n)?;
        self.phase_times
            .insert("wait for done".into(), waited.elapsed().as_secs_f64());
        let replaying = Instant::now();
        let dirs: Vec<PathBuf> = done
            .iter()
            .enumerate()
            .map(|(i, d)| {
                t.fetch(
                    d["dir"].as_str().unwrap_or_default(),
                    i,
                    "",
                    &format!("done-{i}"),
                )
            })
            .collect::<Result<_>>()?;
        let mut partials: Vec<Partial> = Vec::with_capacity(n);
        for d in &dirs {
            // Counts, part names and a catalog part: small; a larger file is refused.
            let bytes = crate::storage::read_within(d, "partial.json", 1 << 30)?;
            let p = d.join("partial.json");
            let partial: Partial = serde_json::from_slice(&bytes).map_err(|e| Error::Output {
                path: p.clone(),
                message: format!("unreadable task counts: {e}"),
            })?;
            partials.push(partial);
        }
        // Counts: task 0's own stage details (a mix's summary) stay; every count is the tasks'.
        let mut tally = self.tally.zeroed();
        let mut bytes_read = 0;
        for p in &partials {
            tally.merge(&p.tally);
            bytes_read += p.bytes_read;
        }
        self.tally = tally;
        self.bytes_read.store(bytes_read, Ordering::Relaxed);
        // The catalog: every task's part, in task order.
        self.catalog.clear_counts();
        let mut outputs = Vec::new();
        for (i, p) in partials.iter_mut().enumerate() {
            let part = std::mem::take(&mut p.catalog);
            self.catalog.merge(part).map_err(|message| Error::Output {
                path: dirs[i].join("partial.json"),
                message,
            })?;
            outputs.push(std::mem::take(&mut p.outputs));
        }
        // Outputs: the files every task wrote itself move into the run; task 0 writes only the
        // sinks that need every sample, from the tasks' kept streams.
        let run = RunDir::begin(out_dir)?;
        let moving = Instant::now();
        let mut seen = std::collections::BTreeSet::new();
        for (i, (d, files)) in dirs.iter().zip(outputs).enumerate() {
            for f in files {
                self.move_part(&run, d, "out/", i, f, &mut seen)?;
            }
        }
        // A run in phases: the samples each map phase dropped, in the folder its marker names.
        let globals = self.plan.stages.iter().filter(|s| s.is_global()).count();
        for i in 0..n {
            for seg in 0..globals {
                let Some(mark) = t.markers.done(&format!("map-{seg}"), i) else {
                    continue;
                };
                let files: Vec<crate::io::writers::OutputFile> = match mark.get("outputs") {
                    None => Vec::new(),
                    Some(v) => serde_json::from_value(v.clone()).map_err(|e| Error::Work {
                        path: t.run.work.join("markers"),
                        message: format!("task {i}'s map-{seg} marker lists no parts: {e}"),
                    })?,
                };
                if files.is_empty() {
                    continue;
                }
                // In place on a shared filesystem (the attempt folder is what `fetch` checks);
                // through object storage only its `phase-out/` is fetched.
                let (sub, within) = match t.run.shared {
                    Some(_) => (super::phase::PHASE_OUT, String::new()),
                    None => ("", format!("{}/", super::phase::PHASE_OUT)),
                };
                let d = t.fetch(
                    mark["dir"].as_str().unwrap_or_default(),
                    i,
                    sub,
                    &format!("phase-out-{seg}-{i}"),
                )?;
                for f in files {
                    self.move_part(&run, &d, &within, i, f, &mut seen)?;
                }
            }
        }
        self.phase_times.insert(
            "move the tasks' parts".into(),
            moving.elapsed().as_secs_f64(),
        );
        // LLaMA-Factory files, from every task's kept samples.
        let (curated, _) = make_sinks(self.plan, &run.path(""), SinkSet::Replayed)?;
        self.curated = curated;
        self.dropped = Vec::new();
        if SinkSet::replays(self.plan) {
            let mut files = Vec::new();
            for d in &dirs {
                files.extend(crate::storage::file_within_if_any(d, "kept.jsonl")?);
            }
            self.replay(&files)?;
        }
        // Shards: the tasks' token spills, in task order, make the spill of one process (they
        // join the sinks after the replay, which must not write them again).
        let adopting = Instant::now();
        if let Some(mut shards) = shard_sink(self.plan, &run.path(""), run.path(".work"))? {
            for d in &dirs {
                shards.adopt(d, "shards")?;
            }
            if shared_shards {
                // Every task wrote its share; task 0 writes its own and moves the others'.
                shards.share(0, t.run.spec.count, super::shards::others_shards(&t)?);
            }
            self.curated.push(Box::new(shards));
        }
        self.phase_times.insert(
            "adopt the tasks' token spills".into(),
            adopting.elapsed().as_secs_f64(),
        );
        let rejects_path = run.path("rejects.jsonl");
        let mut rejects = AtomicFile::create(rejects_path.clone())?;
        for d in &dirs {
            let p = crate::storage::file_within(d, "rejects.jsonl")?;
            let mut from = std::fs::File::open(&p).map_err(|e| Error::io(&p, e))?;
            std::io::copy(&mut from, &mut rejects).map_err(|e| Error::io(&rejects_path, e))?;
        }
        self.rejects = Some(rejects);
        self.rejects_path = rejects_path;
        self.run = Some(run);
        self.phase_times.insert(
            "merge the tasks' outputs".into(),
            replaying.elapsed().as_secs_f64(),
        );
        Ok(())
    }

    /// Move part `f` that task `i` wrote in its folder `d` (under `within`) into the run: only
    /// a part under `curated/` or `dropped/` with the task's number in its name, each once
    /// (`seen`).
    fn move_part(
        &mut self,
        run: &RunDir,
        d: &std::path::Path,
        within: &str,
        i: usize,
        f: crate::io::writers::OutputFile,
        seen: &mut std::collections::BTreeSet<String>,
    ) -> Result<()> {
        let own = f
            .path
            .split_once('/')
            .is_some_and(|(_, name)| name.contains(&format!("-{i:05}-")));
        if !is_part_path(&f.path) || !own || !seen.insert(f.path.clone()) {
            return Err(Error::Output {
                path: d.join("partial.json"),
                message: format!(
                    "a task names {:?} as its output: not a part under curated/ or dropped/",
                    f.path
                ),
            });
        }
        let from = crate::storage::file_within(d, &format!("{within}{}", f.path))?;
        crate::storage::move_file(&from, &run.path(&f.path))?;
        self.moved.push(f);
        Ok(())
    }

    /// Write the tasks' kept streams through the sinks, in order, a batch at a time (the sinks
    /// cut their files the same whatever the batches, so the bytes equal a one-process run's).
    pub(in crate::engine) fn replay(&mut self, files: &[PathBuf]) -> Result<()> {
        let mut samples: Vec<Sample> = Vec::new();
        let mut cut = BatchCut::new(self.plan);
        for path in files {
            let file = match std::fs::File::open(path) {
                Ok(f) => f,
                // A task whose files held nothing wrote no stream.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(path, e)),
            };
            // A line is one sample, bounded by the pipeline's record limit (with room for JSON
            // escapes): a stream from the shared work folder cannot make task 0 hold more.
            let cap = (self.plan.max_record_bytes as u64)
                .saturating_mul(2)
                .saturating_add(1 << 20);
            let mut reader = BufReader::with_capacity(1 << 20, file);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = (&mut reader)
                    .take(cap + 1)
                    .read_until(b'\n', &mut line)
                    .map_err(|e| Error::io(path, e))?;
                if n == 0 {
                    break;
                }
                if n as u64 > cap {
                    return Err(Error::Work {
                        path: path.clone(),
                        message: format!("a task stream line over {cap} bytes: refused"),
                    });
                }
                let l: StreamLine = serde_json::from_slice(&line).map_err(|e| Error::Work {
                    path: path.clone(),
                    message: format!("unreadable task stream: {e}"),
                })?;
                samples.push(l.sample);
                if cut.add(line.len()) {
                    self.write_replayed(&mut samples)?;
                }
            }
        }
        if !samples.is_empty() {
            self.write_replayed(&mut samples)?;
        }
        Ok(())
    }

    /// One batch of replayed samples into the sinks (the catalog is the tasks' parts, merged
    /// already).
    pub(in crate::engine) fn write_replayed(&mut self, samples: &mut Vec<Sample>) -> Result<()> {
        let t = std::time::Instant::now();
        for sink in &mut self.curated {
            sink.write(samples, None)?;
        }
        self.tally.write_time += t.elapsed();
        samples.clear();
        Ok(())
    }
}

/// Whether a task's output path is one of its parts: `curated/` or `dropped/`, then one plain
/// file name (the work folder is shared: what a task wrote there must not name other places).
fn is_part_path(path: &str) -> bool {
    let Some((dir, name)) = path.split_once('/') else {
        return false;
    };
    (dir == "curated" || dir == "dropped")
        && !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::is_part_path;

    #[test]
    fn only_parts_under_curated_or_dropped_are_moved() {
        for ok in [
            "curated/train-00001-00000.parquet",
            "curated/part-00000-00003.jsonl",
            "dropped/part-00002-00000.parquet",
        ] {
            assert!(is_part_path(ok), "{ok}");
        }
        for bad in [
            "../secret",
            "curated/../../etc/passwd",
            "curated/..",
            "curated/",
            "/etc/passwd",
            "shards/train-00000.bin",
            "curated/sub/x.parquet",
            "report.json",
            "curated/.hidden",
            "dropped\\..\\x",
        ] {
            assert!(!is_part_path(bad), "{bad}");
        }
    }
}
