//! The run's output sinks and what is written to them.

use crate::config::{OutputFormat, Plan};
use crate::engine::task::stream::StreamLine;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::io::writers::{JsonlSink, LlamaFactorySink, ParquetSink, SampleSink, SplitSink};
use crate::sample::Sample;
use crate::storage::RunDir;

/// Output sinks.
pub(in crate::engine) type Sinks = Vec<Box<dyn SampleSink>>;

/// Unit index of each kept sample within its segment.
pub(in crate::engine) type Units = Vec<u64>;

pub(in crate::engine) fn make_sinks(plan: &Plan, run: &RunDir) -> Result<(Sinks, Sinks)> {
    let root = run.path("");
    let mut curated: Vec<Box<dyn SampleSink>> = Vec::new();
    let mut dropped: Vec<Box<dyn SampleSink>> = Vec::new();
    for f in &plan.formats {
        match f {
            OutputFormat::Parquet => {
                // Curated files per split (`train-00000.parquet`, …; `part-…` without one).
                let (r, dir, rows) = (root.clone(), run.path("curated"), plan.rows_per_file);
                curated.push(Box::new(SplitSink::new(Box::new(move |prefix: &str| {
                    Box::new(ParquetSink::new(&r, dir.clone(), rows, false).with_prefix(prefix))
                        as Box<dyn SampleSink>
                }))));
                dropped.push(Box::new(ParquetSink::new(
                    &root,
                    run.path("dropped"),
                    plan.rows_per_file,
                    true,
                )));
            }
            OutputFormat::Jsonl => {
                let (r, dir, rows) = (root.clone(), run.path("curated"), plan.rows_per_file);
                curated.push(Box::new(SplitSink::new(Box::new(move |prefix: &str| {
                    Box::new(JsonlSink::new(&r, dir.clone(), rows).with_prefix(prefix))
                        as Box<dyn SampleSink>
                }))));
                dropped.push(Box::new(JsonlSink::new(
                    &root,
                    run.path("dropped"),
                    plan.rows_per_file,
                )));
            }
            OutputFormat::Llamafactory => curated.push(Box::new(LlamaFactorySink::new(
                &root,
                run.path("export/llamafactory"),
                &plan.llamafactory_name,
                plan.llamafactory_style,
            ))),
        }
    }
    if let Some(sp) = &plan.shards {
        let sink = crate::io::shard_sink::ShardSink::new(
            &root,
            run.path("shards"),
            run.path(".work"),
            sp,
            plan.seed,
        )
        .map_err(|e| Error::Config {
            file: plan.config_path.clone(),
            issues: vec![crate::error::ConfigIssue {
                key: "output.shards".into(),
                message: e.to_string(),
            }],
        })?;
        curated.push(Box::new(sink));
    }
    if dropped.is_empty() {
        // Dropped samples are always written somewhere, whatever the curated formats are.
        dropped.push(Box::new(JsonlSink::new(
            &root,
            run.path("dropped"),
            plan.rows_per_file,
        )));
    }
    Ok((curated, dropped))
}

/// Content token counts the curated sinks made with the catalog's tokenizer in their last
/// write, if any did.
pub(in crate::engine) fn known_tokens(
    curated: &Sinks,
    catalog: &crate::catalog::CatalogBuilder,
) -> Option<Vec<Option<u64>>> {
    curated
        .iter()
        .filter_map(|s| s.content_tokens())
        .find(|(tok, _)| catalog.counts_with(tok))
        .map(|(_, counts)| counts.to_vec())
}

impl Engine<'_> {
    pub(in crate::engine) fn emit_kept(
        &mut self,
        kept: Vec<(usize, Sample)>,
        units: &[u64],
    ) -> Result<()> {
        if kept.is_empty() {
            return Ok(());
        }
        let mut samples = Vec::with_capacity(kept.len());
        for (input, s) in kept {
            if s.tags.contains_key(crate::sample::tag::COPY) {
                self.tally.inputs[input].copies += 1;
            } else {
                self.tally.inputs[input].kept += 1;
            }
            samples.push(s);
        }
        if let Some(t) = self.task.as_mut() {
            // A task streams its kept samples; task 0 replays them into the sinks.
            let path = t.own.join("kept.jsonl");
            if let Some(out) = t.kept.as_mut() {
                for (s, &u) in samples.into_iter().zip(units) {
                    let line = StreamLine {
                        u,
                        stage: None,
                        reason: None,
                        detail: None,
                        duplicate_of: None,
                        sample: s,
                    };
                    line.write(out, &path)?;
                }
            }
            return Ok(());
        }
        let t = std::time::Instant::now();
        for sink in &mut self.curated {
            sink.write(&samples, None)?;
        }
        self.tally.write_time += t.elapsed();
        let known = known_tokens(&self.curated, &self.catalog);
        self.catalog.add(&samples, known.as_deref());
        Ok(())
    }
}
