//! The end of a run: close the sinks, write the catalog and the report, publish.

use crate::config::OutputFormat;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::io::writers::OutputFile;
use crate::report::{InputReport, Report, Timings};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Engine<'_> {
    pub(in crate::engine) fn finish(
        mut self,
        started: Instant,
        threads: usize,
        max_reject_ratio: f64,
    ) -> Result<Report> {
        let run = self.run.take().ok_or_else(|| Error::Output {
            path: self.plan.output_dir.clone(),
            message: "no run directory to publish".into(),
        })?;
        let mut outputs: Vec<OutputFile> = Vec::new();
        let finishing = Instant::now();
        for sink in self.curated.drain(..).chain(self.dropped.drain(..)) {
            outputs.extend(sink.finish()?);
        }
        // The parts a task-sharded run's tasks wrote themselves.
        outputs.append(&mut self.moved);
        self.tally.write_time += finishing.elapsed();
        let rejects_path = self.rejects_path.clone();
        if let Some(r) = self.rejects.take() {
            r.commit()?;
        }
        self.tally.settle_files();
        let _ = std::fs::remove_dir_all(run.path(".work"));
        let totals = self.totals();
        outputs.push(OutputFile {
            path: "rejects.jsonl".into(),
            records: totals.rejected,
            bytes: std::fs::metadata(&rejects_path).map_or(0, |m| m.len()),
        });
        let files = if self.plan.formats.contains(&OutputFormat::Parquet) {
            "curated/*.parquet"
        } else {
            "curated/*.jsonl"
        };
        let catalog_path = run.path(crate::catalog::CATALOG_FILE);
        // Lineage: what the run read (by content), and whether it is a mix, so that a catalog
        // over several runs counts each source's samples once.
        let inputs: Vec<&(std::path::PathBuf, String)> =
            self.plan.inputs.iter().flat_map(|i| &i.files).collect();
        let hashed = inputs
            .par_iter()
            .map(|(p, shown)| crate::storage::hash_file(p).map(|(_, h)| (shown.clone(), h)))
            .collect::<Result<BTreeMap<String, String>>>()?;
        let mixed = self
            .plan
            .stages
            .iter()
            .any(crate::stages::StageConfig::makes_a_mix);
        self.catalog.set_lineage(hashed, mixed);
        self.catalog.write(&catalog_path, &self.plan.name, files)?;
        outputs.push(OutputFile {
            path: crate::catalog::CATALOG_FILE.into(),
            records: self.catalog.rows() as u64,
            bytes: std::fs::metadata(&catalog_path).map_or(0, |m| m.len()),
        });
        outputs.sort_by(|a, b| a.path.cmp(&b.path));
        let elapsed = started.elapsed().as_secs_f64();
        let bytes = self.bytes_read.load(Ordering::Relaxed) as f64;
        let too_many =
            totals.read > 0 && totals.rejected as f64 > max_reject_ratio * totals.read as f64;
        let mut report = Report {
            sluice_version: env!("CARGO_PKG_VERSION").to_string(),
            run: self.plan.name.clone(),
            status: "succeeded".into(),
            seed: self.plan.seed,
            reconciled: self.tally.inputs.iter().all(InputReport::reconciles),
            totals,
            inputs: std::mem::take(&mut self.tally.inputs),
            stages: std::mem::take(&mut self.tally.stages),
            outputs,
            tags: self.catalog.distributions(),
            lengths: std::mem::take(&mut self.tally.lengths),
            examples: {
                // By stage and reason, each in input order (a stable sort): one process meets
                // them segment by segment, tasks merge them task by task.
                let mut e = std::mem::take(&mut self.tally.examples);
                e.sort_by(|a, b| (a.stage, &a.reason).cmp(&(b.stage, &b.reason)));
                e
            },
            rewrites: {
                let mut r = std::mem::take(&mut self.tally.rewrites);
                r.sort_by_key(|e| e.stage);
                r
            },
            rejects: {
                // By input in plan order, each in the order it was met.
                let mut r = std::mem::take(&mut self.tally.rejects);
                let order = |name: &str| self.plan.inputs.iter().position(|i| i.name == name);
                r.sort_by_key(|e| order(&e.input));
                r
            },
            timings: Timings {
                total_seconds: elapsed,
                stage_cpu_seconds: self
                    .names
                    .iter()
                    .zip(&self.tally.stage_cpu)
                    .map(|(n, d)| (n.clone(), d.as_secs_f64()))
                    .collect(),
                task_phase_seconds: std::mem::take(&mut self.phase_times),
                convert_cpu_seconds: self.tally.convert_cpu.as_secs_f64(),
                write_seconds: self.tally.write_time.as_secs_f64(),
                input_mb_per_second: bytes / 1e6 / elapsed.max(1e-9),
                records_per_second: 0.0,
                threads,
            },
        };
        report.timings.records_per_second = report.totals.read as f64 / elapsed.max(1e-9);
        if too_many {
            report.status = format!(
                "failed: {} of {} records rejected, over max_reject_ratio {}",
                report.totals.rejected, report.totals.read, max_reject_ratio
            );
        }
        let mut json = serde_json::to_vec_pretty(&report).map_err(|e| Error::Output {
            path: run.path("report.json"),
            message: format!("cannot encode the report: {e}"),
        })?;
        json.push(b'\n');
        crate::storage::write_atomic(&run.path("report.json"), &json)?;
        // The same as a page to look at (no timings: the same bytes for the same run).
        crate::storage::write_atomic(
            &run.path("report.html"),
            crate::report_html::render(&report).as_bytes(),
        )?;
        if too_many {
            let mut failed = run.final_dir().as_os_str().to_owned();
            failed.push(".failed");
            let dest = run.publish_to(PathBuf::from(failed))?;
            return Err(Error::TooManyRejects {
                rejected: report.totals.rejected,
                read: report.totals.read,
                max_ratio: max_reject_ratio,
                rejects: dest.join("rejects.jsonl"),
            });
        }
        run.publish()?;
        Ok(report)
    }
}
