//! The run's output sinks and what is written to them.

use crate::config::{OutputFormat, Plan};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::io::writers::{JsonlSink, LlamaFactorySink, ParquetSink, SampleSink, SplitSink};
use crate::sample::Sample;
use std::path::Path;

/// Output sinks.
pub(in crate::engine) type Sinks = Vec<Box<dyn SampleSink>>;

/// Which of the plan's sinks to open.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(in crate::engine) enum SinkSet {
    /// Every sink: a run in one process.
    All,
    /// One task's own parts: Parquet and JSONL, curated and dropped, named
    /// `<split>-<task>-<n>` (`part-<task>-<n>` for dropped samples), and LLaMA-Factory
    /// datasets as folders of per-task arrays (`<dataset>/part-<task>-00000.json`).
    TaskParts(usize),
    /// What a map phase run alone writes (task, segment): only its dropped samples, named
    /// `part-<task>-m<segment>-<n>`; the process that publishes moves them into the run.
    TaskDropped(usize, usize),
}

/// The plan's shard sink: shards under `root/shards`, token spills in `work`.
pub(in crate::engine) fn shard_sink(
    plan: &Plan,
    root: &Path,
    work: std::path::PathBuf,
) -> Result<Option<crate::io::shard_sink::ShardSink>> {
    let Some(sp) = &plan.shards else {
        return Ok(None);
    };
    crate::io::shard_sink::ShardSink::new(root, root.join("shards"), work, sp, plan.seed)
        .map(Some)
        .map_err(|e| Error::Config {
            file: plan.config_path.clone(),
            issues: vec![crate::error::ConfigIssue {
                key: "output.shards".into(),
                message: e.to_string(),
            }],
        })
}

/// Open the sinks of `set` under `root` (the run's staging folder, or a task's own parts).
pub(in crate::engine) fn make_sinks(
    plan: &Plan,
    root: &Path,
    set: SinkSet,
) -> Result<(Sinks, Sinks)> {
    let root = root.to_path_buf();
    let mut curated: Vec<Box<dyn SampleSink>> = Vec::new();
    let mut dropped: Vec<Box<dyn SampleSink>> = Vec::new();
    let tag = match set {
        SinkSet::TaskParts(i) => format!("-{i:05}"),
        SinkSet::TaskDropped(i, seg) => format!("-{i:05}-m{seg}"),
        _ => String::new(),
    };
    let dropped_prefix = format!("part{tag}");
    for f in &plan.formats {
        match f {
            OutputFormat::Parquet => {
                // Curated files per split (`train-00000.parquet`, …; `part-…` without one).
                let (r, dir, rows) = (root.clone(), root.join("curated"), plan.rows_per_file);
                let tag = tag.clone();
                curated.push(Box::new(SplitSink::new(Box::new(move |prefix: &str| {
                    Box::new(
                        ParquetSink::new(&r, dir.clone(), rows, false)
                            .with_prefix(&format!("{prefix}{tag}")),
                    ) as Box<dyn SampleSink>
                }))));
                dropped.push(Box::new(
                    ParquetSink::new(&root, root.join("dropped"), plan.rows_per_file, true)
                        .with_prefix(&dropped_prefix),
                ));
            }
            OutputFormat::Jsonl => {
                let (r, dir, rows) = (root.clone(), root.join("curated"), plan.rows_per_file);
                let tag = tag.clone();
                curated.push(Box::new(SplitSink::new(Box::new(move |prefix: &str| {
                    Box::new(
                        JsonlSink::new(&r, dir.clone(), rows)
                            .with_prefix(&format!("{prefix}{tag}")),
                    ) as Box<dyn SampleSink>
                }))));
                dropped.push(Box::new(
                    JsonlSink::new(&root, root.join("dropped"), plan.rows_per_file)
                        .with_prefix(&dropped_prefix),
                ));
            }
            OutputFormat::Llamafactory => {
                let sink = LlamaFactorySink::new(
                    &root,
                    root.join("export/llamafactory"),
                    &plan.llamafactory_name,
                    plan.llamafactory_style,
                );
                match set {
                    SinkSet::All => curated.push(Box::new(sink)),
                    SinkSet::TaskParts(i) => curated.push(Box::new(sink.parts(i))),
                    SinkSet::TaskDropped(..) => {}
                }
            }
        }
    }
    if set == SinkSet::All {
        if let Some(sink) = shard_sink(plan, &root, root.join(".work"))? {
            curated.push(Box::new(sink));
        }
    }
    if dropped.is_empty() {
        // Dropped samples are always written somewhere, whatever the curated formats are.
        dropped.push(Box::new(
            JsonlSink::new(&root, root.join("dropped"), plan.rows_per_file)
                .with_prefix(&dropped_prefix),
        ));
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
    pub(in crate::engine) fn emit_kept(&mut self, kept: Vec<(usize, Sample)>) -> Result<()> {
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
        let t = std::time::Instant::now();
        for sink in &mut self.curated {
            sink.write(&samples, None)?;
        }
        self.tally.write_time += t.elapsed();
        let mut known = known_tokens(&self.curated, &self.catalog);
        if let Some(sink) = self.task_shards.as_mut() {
            // A task tokenizes its own samples into token spills for task 0's shards.
            let t = std::time::Instant::now();
            sink.write(&samples, None)?;
            self.tally.write_time += t.elapsed();
            if let Some((tok, counts)) = sink.content_tokens() {
                if self.catalog.counts_with(tok) {
                    known = Some(counts.to_vec());
                }
            }
        }
        let lengths = &mut self.tally.lengths;
        for (i, s) in samples.iter().enumerate() {
            lengths.chars_written.add(crate::report::content_chars(s));
            if let Some(t) = known.as_ref().and_then(|k| k.get(i).copied().flatten()) {
                lengths.tokens_written.add(t);
            }
        }
        self.catalog.add(&samples, known.as_deref());
        Ok(())
    }
}
