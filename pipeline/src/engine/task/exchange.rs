//! A global stage across tasks: publish the map side, task 0 merges and reduces, every task takes its share.

use super::POLL;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::stages::{Decisions, Stage};
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
        if me == 0 {
            let waited = Instant::now();
            let maps = t.markers.wait_all(&map_phase, n, timeout, POLL)?;
            times.push((
                format!("wait for map-{seg}"),
                waited.elapsed().as_secs_f64(),
            ));
            let reducing = Instant::now();
            // A stage that cannot decide, or map outputs that cannot be read, still release the
            // other tasks (with no decisions: nothing of this run is published), then fail the
            // run; the others would otherwise wait out the timeout.
            let merged = reduce_dir.join("exchange");
            let resolved = (|| -> Result<Decisions> {
                let parts: Vec<PathBuf> = maps
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        let dir = t.fetch(
                            m["dir"].as_str().unwrap_or_default(),
                            i,
                            &exchange_name,
                            &format!("map-{seg}-{i}"),
                        )?;
                        // Only regular files inside the task's folder are read.
                        for name in crate::exchange::file_names() {
                            crate::storage::file_within(&dir, &name)?;
                        }
                        Ok(dir)
                    })
                    .collect::<Result<_>>()?;
                if merged.exists() {
                    std::fs::remove_dir_all(&merged).map_err(|e| Error::io(&merged, e))?;
                }
                match &stages[g] {
                    Stage::Global(op) => op.merge_resolve(&merged, &parts),
                    Stage::Record(_) => Ok(Decisions::new()),
                }
            })();
            let (all, failed) = match resolved {
                Ok(d) => (d, None),
                Err(e) => (Decisions::new(), Some(e)),
            };
            let json = all.to_json().map_err(|message| Error::Output {
                path: decisions_path.clone(),
                message: format!("cannot encode decisions: {message}"),
            })?;
            decisions_at.put(&json)?;
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
        let bytes = decisions_at.get()?.ok_or_else(|| Error::Output {
            path: decisions_path.clone(),
            message: "the decisions are missing".into(),
        })?;
        let all = Decisions::from_json(&bytes).map_err(|message| Error::Output {
            path: decisions_path.clone(),
            message: message.to_string(),
        })?;
        self.phase_times.extend(times);
        self.tally.stage_cpu[g] += reduce_cpu;
        Ok(all.within(offset..offset + records))
    }
}
