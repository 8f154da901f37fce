//! One batch: record-wise stages in parallel over chunks, then in-order accounting.

use crate::config::Plan;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::io::convert::convert;
use crate::io::writers::DropInfo;
use crate::io::{Payload, RawRecord, TextEncoding};
use crate::sample::Sample;
use crate::stages::{Decisions, DropReason, Stage, StageCx, Verdict};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

/// Records per parallel work item: large enough to amortize scheduling, small enough to balance.
pub(in crate::engine) const CHUNK: usize = 64;

/// One unit of work for the parallel part.
pub(in crate::engine) enum Unit {
    Raw(RawRecord),
    Spilled {
        pos: u64,
        input: usize,
        line: Vec<u8>,
    },
}

/// What happened to one unit.
pub(in crate::engine) enum Outcome {
    Rejected {
        input: usize,
        reject: Reject,
    },
    Dropped {
        input: usize,
        stage: usize,
        sample: Sample,
        reason: DropReason,
        format: Option<&'static str>,
    },
    Kept {
        input: usize,
        sample: Sample,
        format: Option<&'static str>,
        /// Extra copies to write (a mix's upsampling).
        copies: u32,
    },
}

/// One line of rejects.jsonl.
#[derive(Serialize)]
pub(in crate::engine) struct Reject {
    pub(in crate::engine) input: String,
    pub(in crate::engine) file: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(in crate::engine) line: u64,
    pub(in crate::engine) record: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(in crate::engine) split: Option<String>,
    pub(in crate::engine) error: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(in crate::engine) snippet: String,
}

pub(in crate::engine) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The start of a rejected record, decoded with the file's encoding (never mojibake).
pub(in crate::engine) fn snippet(p: &Payload, enc: TextEncoding) -> String {
    const MAX: usize = 200;
    let lossy = |b: &[u8]| -> String {
        match enc {
            TextEncoding::Utf8 => String::from_utf8_lossy(b).into_owned(),
            TextEncoding::Gb18030 => encoding_rs::GB18030
                .decode_without_bom_handling(b)
                .0
                .into_owned(),
        }
    };
    let s = match p {
        Payload::Json(b) | Payload::Text(b) => lossy(&b[..b.len().min(MAX * 4)]),
        Payload::Csv(r) => r.iter().map(lossy).collect::<Vec<_>>().join(","),
        Payload::Value(v) => v.to_string(),
        Payload::Error(_) => String::new(),
    };
    s.chars().take(MAX).collect()
}

/// Per-chunk stage statistics, summed in order after each batch.
#[derive(Default, Clone)]
pub(in crate::engine) struct StageStats {
    pub(in crate::engine) input: u64,
    pub(in crate::engine) kept: u64,
    pub(in crate::engine) cpu: Duration,
}

/// Run `f`, adding its time to `total`.
fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    *total += t.elapsed();
    out
}

pub(in crate::engine) struct ChunkResult {
    pub(in crate::engine) convert_cpu: Duration,
    pub(in crate::engine) outcomes: Vec<Outcome>,
    pub(in crate::engine) stats: Vec<StageStats>,
    pub(in crate::engine) counters: Vec<BTreeMap<String, u64>>,
    /// Per stage: its length histograms.
    pub(in crate::engine) observed: Vec<BTreeMap<&'static str, crate::report::Histogram>>,
    /// Content characters of the samples converted from raw records.
    pub(in crate::engine) chars_read: crate::report::Histogram,
    /// Changes rewriting stages made: (stage, id, content before, content after), the first
    /// few of each stage in this chunk.
    pub(in crate::engine) rewrites: Vec<(usize, String, String, String)>,
}

/// Stages that rewrite content (their first changes are shown in the report).
const REWRITING: [&str; 5] = ["filler", "pii", "truncate", "rules", "sensitive"];

/// Where a batch ends: at `batch_size` records or once its records hold `batch_bytes`.
pub(in crate::engine) struct BatchCut {
    pub(in crate::engine) records: usize,
    pub(in crate::engine) bytes: usize,
    pub(in crate::engine) held: (usize, usize),
}

impl BatchCut {
    pub(in crate::engine) fn new(plan: &Plan) -> BatchCut {
        BatchCut {
            records: plan.batch_size.max(1),
            bytes: plan.batch_bytes.max(1),
            held: (0, 0),
        }
    }

    /// Count one more record of `size` bytes; true when the batch is full with it (the count
    /// starts again).
    pub(in crate::engine) fn add(&mut self, size: usize) -> bool {
        self.held = (self.held.0 + 1, self.held.1.saturating_add(size));
        let full = self.held.0 >= self.records || self.held.1 >= self.bytes;
        if full {
            self.held = (0, 0);
        }
        full
    }
}

impl Engine<'_> {
    /// Parallel part of a batch, then in-order accounting. Returns kept samples with their input.
    pub(in crate::engine) fn process_batch(
        &mut self,
        stages: &[Stage],
        batch: Vec<Unit>,
        record_stages: &[usize],
        decisions: Option<(&Decisions, usize)>,
    ) -> Result<Vec<(usize, Sample)>> {
        let seed = self.plan.seed;
        let inputs = &self.plan.inputs;
        let n_stages = stages.len();
        let rewriting: Vec<bool> = self
            .plan
            .stages
            .iter()
            .map(|s| REWRITING.contains(&s.type_name()))
            .collect();
        let chunks: Vec<ChunkResult> = batch
            .par_chunks(CHUNK)
            .map(|chunk| {
                let mut cx = StageCx::new(seed);
                let mut stats = vec![StageStats::default(); n_stages];
                let mut counters = vec![BTreeMap::new(); n_stages];
                let mut observed: Vec<BTreeMap<&'static str, crate::report::Histogram>> =
                    vec![BTreeMap::new(); n_stages];
                let mut convert_cpu = Duration::ZERO;
                let mut chars_read = crate::report::Histogram::default();
                let mut rewrites = Vec::new();
                let mut found = vec![0usize; n_stages];
                let outcomes = chunk
                    .iter()
                    .map(|unit| {
                        let mut copies = 0;
                        let (input, sample, format) = match unit {
                            Unit::Raw(rec) => match timed(&mut convert_cpu, || convert(rec)) {
                                Ok((s, f)) => {
                                    chars_read.add(crate::report::content_chars(&s));
                                    (rec.cx.input, s, Some(f.as_str()))
                                }
                                Err(error) => {
                                    return Outcome::Rejected {
                                        input: rec.cx.input,
                                        reject: Reject {
                                            input: inputs[rec.cx.input].name.clone(),
                                            file: rec.cx.file.to_string(),
                                            line: rec.line,
                                            record: rec.number,
                                            split: rec.split.as_ref().map(|s| s.to_string()),
                                            error,
                                            snippet: snippet(&rec.payload, rec.cx.encoding),
                                        },
                                    }
                                }
                            },
                            Unit::Spilled { pos, input, line } => {
                                let sample: Sample = match serde_json::from_slice(line) {
                                    Ok(s) => s,
                                    Err(e) => {
                                        return Outcome::Rejected {
                                            input: *input,
                                            reject: Reject {
                                                input: inputs[*input].name.clone(),
                                                file: "<spill>".into(),
                                                line: *pos + 1,
                                                record: *pos + 1,
                                                split: None,
                                                error: format!(
                                                    "internal spill record unreadable: {e}"
                                                ),
                                                snippet: String::new(),
                                            },
                                        }
                                    }
                                };
                                let mut sample = sample;
                                if let Some((d, g)) = decisions {
                                    if let Some(decision) = d.get(pos) {
                                        copies = decision.repeat;
                                        for (k, v) in &decision.tags {
                                            sample.tags.insert(k.clone(), v.clone());
                                        }
                                        if let Some(reason) = &decision.drop {
                                            return Outcome::Dropped {
                                                input: *input,
                                                stage: g,
                                                sample,
                                                reason: reason.clone(),
                                                format: None,
                                            };
                                        }
                                    }
                                }
                                (*input, sample, None)
                            }
                        };
                        let mut sample = sample;
                        for &si in record_stages {
                            let Stage::Record(stage) = &stages[si] else {
                                continue;
                            };
                            cx.counters.clear();
                            // The first few changes of a rewriting stage, for the report.
                            let before = (rewriting[si]
                                && found[si] < crate::report::EXAMPLES_PER_REASON)
                                .then(|| super::tally::content(&sample));
                            let t = Instant::now();
                            let verdict = stage.process(sample, &mut cx);
                            stats[si].cpu += t.elapsed();
                            stats[si].input += 1;
                            for (k, v) in std::mem::take(&mut cx.counters) {
                                *counters[si].entry(k).or_default() += v;
                            }
                            for (k, v) in cx.observed.drain(..) {
                                observed[si].entry(k).or_default().add(v);
                            }
                            match verdict {
                                Verdict::Keep(s) => {
                                    stats[si].kept += 1;
                                    if let Some(before) = before {
                                        let after = super::tally::content(&s);
                                        if after != before {
                                            found[si] += 1;
                                            rewrites.push((si, s.id.clone(), before, after));
                                        }
                                    }
                                    sample = s;
                                }
                                Verdict::Drop(s, reason) => {
                                    return Outcome::Dropped {
                                        input,
                                        stage: si,
                                        sample: s,
                                        reason,
                                        format,
                                    }
                                }
                            }
                        }
                        Outcome::Kept {
                            input,
                            sample,
                            format,
                            copies,
                        }
                    })
                    .collect();
                ChunkResult {
                    convert_cpu,
                    outcomes,
                    stats,
                    counters,
                    observed,
                    chars_read,
                    rewrites,
                }
            })
            .collect();

        let mut kept = Vec::new();
        let mut dropped: Vec<Sample> = Vec::new();
        let mut drop_infos: Vec<DropInfo> = Vec::new();
        for chunk in chunks {
            self.tally.convert_cpu += chunk.convert_cpu;
            self.tally.lengths.chars_read.merge(&chunk.chars_read);
            for (si, id, before, after) in &chunk.rewrites {
                self.tally.rewrite(*si, id, before, after);
            }
            for (si, st) in chunk.stats.iter().enumerate() {
                self.tally.stages[si].input += st.input;
                self.tally.stages[si].kept += st.kept;
                self.tally.stage_cpu[si] += st.cpu;
            }
            for (si, c) in chunk.counters.into_iter().enumerate() {
                for (k, v) in c {
                    *self.tally.stages[si].counters.entry(k).or_default() += v;
                }
            }
            for (si, o) in chunk.observed.into_iter().enumerate() {
                for (k, h) in o {
                    self.tally.stages[si]
                        .lengths
                        .entry(k.to_string())
                        .or_default()
                        .merge(&h);
                }
            }
            for o in chunk.outcomes {
                match o {
                    Outcome::Rejected { input, reject } => self.reject(input, reject)?,
                    Outcome::Dropped {
                        input,
                        stage,
                        sample,
                        reason,
                        format,
                    } => {
                        let rep = &mut self.tally.inputs[input];
                        if let Some(f) = format {
                            *rep.formats.entry(f.to_string()).or_default() += 1;
                        }
                        rep.dropped += 1;
                        *rep.dropped_by
                            .entry(format!("{}/{}", self.names[stage], reason.code))
                            .or_default() += 1;
                        *self.tally.stages[stage]
                            .dropped
                            .entry(reason.code.to_string())
                            .or_default() += 1;
                        drop_infos.push(DropInfo::new(&self.names[stage], &reason));
                        self.tally.example(stage, &sample, &reason);
                        dropped.push(sample);
                    }
                    Outcome::Kept {
                        input,
                        sample,
                        format,
                        copies,
                    } => {
                        if let Some(f) = format {
                            *self.tally.inputs[input]
                                .formats
                                .entry(f.to_string())
                                .or_default() += 1;
                        }
                        for n in 1..=copies {
                            let mut copy = sample.clone();
                            copy.id = format!("{}#r{n}", sample.id);
                            copy.tags
                                .insert(crate::sample::tag::COPY.to_string(), n.to_string());
                            kept.push((input, copy));
                        }
                        kept.push((input, sample));
                    }
                }
            }
        }
        if !dropped.is_empty() {
            for sink in &mut self.dropped {
                let t = Instant::now();
                sink.write(&dropped, Some(&drop_infos))?;
                self.tally.write_time += t.elapsed();
            }
        }
        Ok(kept)
    }

    pub(in crate::engine) fn reject(&mut self, input: usize, reject: Reject) -> Result<()> {
        self.tally.reject(input, &reject);
        let mut line = serde_json::to_vec(&reject).map_err(|e| Error::Output {
            path: self.rejects_path.clone(),
            message: format!("cannot encode a reject: {e}"),
        })?;
        line.push(b'\n');
        match self.rejects.as_mut() {
            Some(f) => f
                .write_all(&line)
                .map_err(|e| Error::io(&self.rejects_path, e)),
            None => Ok(()),
        }
    }
}
