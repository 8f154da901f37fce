//! Shards written by every task: after all tasks handed over their token spills, task k mod N
//! writes shard k of each split (the shuffle and the cuts are computed over every task's
//! spill, so the shards are the bytes one process writes); task 0 moves them into the run and
//! writes the manifest (see [`crate::io::shard_sink::ShardSink::share`]).

use crate::engine::sinks::shard_sink;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::io::shard_sink::{WrittenShard, SHARDS_WRITTEN};
use std::path::PathBuf;

/// Where a task writes its shards, in its folder.
const SHARDS_OUT: &str = "shards-out";

impl Engine<'_> {
    /// Whether this task-sharded run's shards are written by every task: on a shared
    /// filesystem (through object storage every task would download every spill), and
    /// without Megatron output (one file per split, written in order).
    pub(in crate::engine) fn shards_shared(&self) -> bool {
        self.task.as_ref().is_some_and(|t| {
            tasks_write_shards(self.plan, t.run.spec.count, t.run.shared.is_none())
        })
    }

    /// A task other than 0: once every task is done, write this task's share of the shards
    /// and list them for task 0. Task 0 only marks its (empty) share: it writes its own
    /// shards with the manifest.
    pub(in crate::engine) fn task_write_shards(&mut self) -> Result<()> {
        if !self.shards_shared() {
            return Ok(());
        }
        let t = self.task_ref()?;
        let (me, n) = (t.run.spec.index, t.run.spec.count);
        if me == 0 {
            // In phases, only once every task has written (task 0's share is written later,
            // with the manifest, by the publish).
            if t.phase().is_some() {
                t.wait_all("done", n)?;
            }
            return t.markers.mark("shards", 0, &serde_json::json!({}));
        }
        let done = t.wait_all("done", n)?;
        let written = (|| -> Result<()> {
            let mut dirs = Vec::with_capacity(n);
            for (i, d) in done.iter().enumerate() {
                dirs.push(t.fetch(
                    d["dir"].as_str().unwrap_or_default(),
                    i,
                    "",
                    &format!("shards-done-{i}"),
                )?);
            }
            let out = t.own.join(SHARDS_OUT);
            let Some(mut sink) = shard_sink(self.plan, &out, out.join(".work"))? else {
                return Ok(());
            };
            for d in &dirs {
                sink.adopt(d, "shards")?;
            }
            sink.share(me, n, Vec::new());
            crate::io::writers::SampleSink::finish(Box::new(sink))?;
            Ok(())
        })();
        match &written {
            Ok(()) => {
                t.markers
                    .mark("shards", me, &serde_json::json!({ "dir": t.shared_dir() }))?
            }
            // All at once, task 0 waits for this marker; in phases a failure marks nothing
            // (the phase is run again).
            Err(e) if t.phase().is_none() => {
                t.markers
                    .mark("shards", me, &serde_json::json!({ "error": e.to_string() }))?
            }
            Err(_) => {}
        }
        written
    }
}

/// Whether the tasks of a run of `tasks` tasks write the shards (see
/// [`Engine::shards_shared`]); `shared_fs`: the work folder is a shared filesystem.
pub(in crate::engine) fn tasks_write_shards(
    plan: &crate::config::Plan,
    tasks: usize,
    shared_fs: bool,
) -> bool {
    plan.shards.as_ref().is_some_and(|sp| !sp.megatron) && tasks > 1 && shared_fs
}

/// Task 0: the shards the other tasks wrote (from their `shards` markers), each checked to be
/// a regular file in the task's folder with the name its split and index give.
pub(in crate::engine) fn others_shards(
    t: &super::TaskState,
) -> Result<Vec<(PathBuf, WrittenShard)>> {
    let n = t.run.spec.count;
    let marks = t.wait_all("shards", n)?;
    let mut out = Vec::new();
    for (i, m) in marks.iter().enumerate().skip(1) {
        if let Some(e) = m["error"].as_str() {
            return Err(Error::Work {
                path: t.run.work.join("markers"),
                message: format!("task {i} could not write its shards: {e}"),
            });
        }
        let dir = t.fetch(
            m["dir"].as_str().unwrap_or_default(),
            i,
            "",
            &format!("shards-{i}"),
        )?;
        let rel = format!("{SHARDS_OUT}/shards/{SHARDS_WRITTEN}");
        let bytes = crate::storage::read_within(&dir, &rel, 1 << 30)?;
        let list = dir.join(&rel);
        let written: Vec<WrittenShard> =
            serde_json::from_slice(&bytes).map_err(|e| Error::Work {
                path: list.clone(),
                message: format!("unreadable list of shards: {e}"),
            })?;
        for w in written {
            let split_ok = !w.split.is_empty()
                && w.split
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !split_ok || w.index % n != i || w.file != format!("{}-{:05}.bin", w.split, w.index)
            {
                return Err(Error::Work {
                    path: list.clone(),
                    message: format!("task {i} lists {:?}: not one of its shards", w.file),
                });
            }
            let path =
                crate::storage::file_within(&dir, &format!("{SHARDS_OUT}/shards/{}", w.file))?;
            out.push((path, w));
        }
    }
    Ok(out)
}
