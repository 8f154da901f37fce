//! Task 0 (or the process that publishes a run in phases): merge the tasks' counts, parts,
//! catalog parts and token spills into the run, and write the LLaMA-Factory dataset registry
//! over the tasks' arrays.

use super::stream::Partial;
use crate::config::OutputFormat;
use crate::engine::sinks::shard_sink;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::storage::{AtomicFile, RunDir};
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
        let cleanup = self.work_places();
        self.merge_tasks(out_dir)?;
        for (g, spent) in reduce_cpu {
            if let Some(cpu) = self.tally.stage_cpu.get_mut(g) {
                *cpu += spent;
            }
        }
        // The publish lock outlives the engine: held until the work folder is gone.
        let lock = self.lock.take();
        let report = self.finish(started, threads, max_reject_ratio)?;
        remove_work(cleanup);
        drop(lock);
        Ok(report)
    }

    /// Whether `out_dir` holds this task-sharded run, published (its marker names the run key).
    pub(in crate::engine) fn published_already(&self, out_dir: &std::path::Path) -> bool {
        self.task.as_ref().is_some_and(|t| {
            crate::storage::published_key(out_dir).as_deref() == Some(t.run.run_key.as_str())
        })
    }

    /// Remove the run's work folder (local, and shared when elsewhere).
    pub(in crate::engine) fn remove_work(&self) {
        remove_work(self.work_places());
    }

    /// The run's local work folder and where it is shared.
    fn work_places(&self) -> Option<(std::path::PathBuf, crate::storage::Place)> {
        self.task
            .as_ref()
            .map(|t| (t.run.work.clone(), t.shared_root()))
    }

    /// Task 0, once every task is done: merge the counts and catalog parts, move the tasks'
    /// parts into the run, write the LLaMA-Factory registry over their arrays and adopt the token
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
        let merging = Instant::now();
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
            // Each task's counts reconcile (read = kept + dropped + rejected per input), or the
            // run is not published.
            if let Some(bad) = partial.tally.inputs.iter().find(|r| !r.reconciles()) {
                return Err(Error::Work {
                    path: p.clone(),
                    message: format!(
                        "input {:?}: {} read ≠ {} kept + {} dropped + {} rejected: refused",
                        bad.name, bad.read, bad.kept, bad.dropped, bad.rejected
                    ),
                });
            }
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
        // Outputs: the files every task wrote itself move into the run.
        let run = RunDir::begin(out_dir)?;
        run.set_key(&t.run.run_key)?;
        let moving = Instant::now();
        let mut seen = std::collections::BTreeSet::new();
        for (i, (d, files)) in dirs.iter().zip(outputs).enumerate() {
            for f in files {
                let from = Listed {
                    task: i,
                    dir: d,
                    within: "out/",
                    list: &d.join("partial.json"),
                };
                self.move_part(&run, &from, f, &mut seen)?;
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
                let listed = t
                    .run
                    .work
                    .join(format!("markers/map-{seg}/task-{i:05}.done"));
                for f in files {
                    let from = Listed {
                        task: i,
                        dir: &d,
                        within: &within,
                        list: &listed,
                    };
                    self.move_part(&run, &from, f, &mut seen)?;
                }
            }
        }
        self.phase_times.insert(
            "move the tasks' parts".into(),
            moving.elapsed().as_secs_f64(),
        );
        // LLaMA-Factory: every task's arrays are in; one `dataset_info.json` over them.
        self.curated = Vec::new();
        self.dropped = Vec::new();
        if self.plan.formats.contains(&OutputFormat::Llamafactory) {
            self.write_dataset_info(&run)?;
        }
        // Shards: the tasks' token spills, in task order, make the spill of one process.
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
            merging.elapsed().as_secs_f64(),
        );
        Ok(())
    }

    /// Move part `f` that a task listed (`from`) into the run: only a part under `curated/`,
    /// `dropped/` or `export/llamafactory/` with the task's number in its name, each once
    /// (`seen`).
    fn move_part(
        &mut self,
        run: &RunDir,
        from: &Listed<'_>,
        f: crate::io::writers::OutputFile,
        seen: &mut std::collections::BTreeSet<String>,
    ) -> Result<()> {
        let Listed {
            task: i,
            dir: d,
            within,
            list: listed,
        } = *from;
        let own = f
            .path
            .split_once('/')
            .is_some_and(|(_, name)| name.contains(&format!("-{i:05}-")));
        let part = (is_part_path(&f.path) && own)
            || lf_part(&f.path).is_some_and(|(_, _, task)| task == i);
        if !part || !seen.insert(f.path.clone()) {
            return Err(Error::Work {
                path: listed.to_path_buf(),
                message: format!(
                    "a task names {:?} as its output: not one of its parts (curated/, dropped/, export/llamafactory/)",
                    f.path
                ),
            });
        }
        let from = crate::storage::file_within(d, &format!("{within}{}", f.path))?;
        crate::storage::link_or_copy(&from, &run.path(&f.path))?;
        self.moved.push(f);
        Ok(())
    }
}

impl Engine<'_> {
    /// The run's LLaMA-Factory `dataset_info.json`, over the datasets the tasks' moved parts
    /// make (a folder of per-task arrays each).
    fn write_dataset_info(&mut self, run: &RunDir) -> Result<()> {
        let path = run.path("export/llamafactory/dataset_info.json");
        let mut sft = std::collections::BTreeSet::new();
        let mut pretrain = std::collections::BTreeSet::new();
        for f in &self.moved {
            if let Some((dataset, docs, _)) = lf_part(&f.path) {
                if docs { &mut pretrain } else { &mut sft }.insert(dataset.to_string());
            }
        }
        if let Some(both) = sft.intersection(&pretrain).next() {
            return Err(Error::Work {
                path,
                message: format!("the tasks wrote {both:?} as dialogues and as documents"),
            });
        }
        let (sft, pretrain): (Vec<String>, Vec<String>) =
            (sft.into_iter().collect(), pretrain.into_iter().collect());
        let bytes =
            crate::io::writers::dataset_info(self.plan.llamafactory_style, &sft, &pretrain, true)
                .map_err(|message| Error::Output {
                path: path.clone(),
                message,
            })?;
        crate::storage::write_atomic(&path, &bytes)?;
        self.moved.push(crate::io::writers::OutputFile {
            path: "export/llamafactory/dataset_info.json".into(),
            records: (sft.len() + pretrain.len()) as u64,
            bytes: bytes.len() as u64,
        });
        Ok(())
    }
}

/// Where a task's listed parts are: its folder `dir`, under `within`, as listed in `list`.
#[derive(Clone, Copy)]
struct Listed<'a> {
    task: usize,
    dir: &'a std::path::Path,
    within: &'a str,
    list: &'a std::path::Path,
}

/// Remove a run's work folder: the local one, and the shared one when it is elsewhere, then the
/// folder it sat in (`--work`, or `<out>.tasks`) if that is now empty.
fn remove_work(places: Option<(std::path::PathBuf, crate::storage::Place)>) {
    let Some((local, shared)) = places else {
        return;
    };
    crate::storage::Place::Local(local.clone()).remove_all();
    shared.remove_all();
    if let Some(parent) = local.parent() {
        #[allow(clippy::disallowed_methods)] // an empty scratch folder; never a non-empty one
        let _ = std::fs::remove_dir(parent);
    }
}

/// A task's LLaMA-Factory part: `export/llamafactory/<dataset>/part-<task>-00000.json`
/// (documents: `pretrain-…`), as (dataset, documents, task). The dataset is one plain folder
/// name (the work folder is shared: what a task wrote there must not name other places).
fn lf_part(path: &str) -> Option<(&str, bool, usize)> {
    let (dataset, file) = path.strip_prefix("export/llamafactory/")?.split_once('/')?;
    let plain = !dataset.is_empty()
        && !dataset.starts_with('.')
        && !dataset.contains(['\\', '\0', '/', ':']);
    let (docs, rest) = match file.split_once('-')? {
        ("part", rest) => (false, rest),
        ("pretrain", rest) => (true, rest),
        _ => return None,
    };
    let task = rest.strip_suffix("-00000.json")?;
    let ok = plain && task.len() == 5 && task.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| task.parse().ok().map(|t| (dataset, docs, t)))?
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
    use super::{is_part_path, lf_part};

    #[test]
    fn llamafactory_parts_are_one_plain_folder_and_a_task_file() {
        assert_eq!(
            lf_part("export/llamafactory/support_train/part-00003-00000.json"),
            Some(("support_train", false, 3))
        );
        assert_eq!(
            lf_part("export/llamafactory/客服_pretrain/pretrain-00000-00000.json"),
            Some(("客服_pretrain", true, 0))
        );
        for bad in [
            "export/llamafactory/../part-00001-00000.json",
            "export/llamafactory/a/../../x/part-00001-00000.json",
            "export/llamafactory/.hidden/part-00001-00000.json",
            "export/llamafactory/a/part-1-00000.json",
            "export/llamafactory/a/part-00001-00001.json",
            "export/llamafactory/a/other-00001-00000.json",
            "export/llamafactory/dataset_info.json",
            "export/llamafactory/a\\..\\b/part-00001-00000.json",
            "curated/part-00001-00000.json",
        ] {
            assert_eq!(lf_part(bad), None, "{bad}");
        }
    }

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
