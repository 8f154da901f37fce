//! report.json: counts per input and per stage that reconcile (`read = kept + dropped +
//! rejected`), the files written, and timings. Everything but `timings` is deterministic.

use crate::io::writers::OutputFile;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counts of one input file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileReport {
    /// Display path.
    pub path: String,
    /// Reader used (`jsonl`, `csv`, …).
    pub reader: String,
    /// Encoding found.
    pub encoding: String,
    /// Why that encoding (set in the config, a byte-order mark, what the head of the file showed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub encoding_why: String,
    /// Records found in it (including rejected ones).
    pub records: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// A problem that stopped reading the file early, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Counts of one input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InputReport {
    /// Input name.
    pub name: String,
    /// Records read (every record found, parseable or not).
    pub read: u64,
    /// Distinct samples in the curated output.
    pub kept: u64,
    /// Extra copies written by a mix's upsampling.
    #[serde(skip_serializing_if = "is_zero")]
    pub copies: u64,
    /// Samples dropped by stages, total.
    pub dropped: u64,
    /// Dropped by `stage/reason`.
    pub dropped_by: BTreeMap<String, u64>,
    /// Records that could not be parsed.
    pub rejected: u64,
    /// Record formats recognised, with counts.
    pub formats: BTreeMap<String, u64>,
    /// Per file.
    pub files: Vec<FileReport>,
}

impl InputReport {
    /// Whether `read = kept + dropped + rejected` holds.
    pub fn reconciles(&self) -> bool {
        self.read == self.kept + self.dropped + self.rejected
            && self.dropped == self.dropped_by.values().sum::<u64>()
    }
}

/// Counts of one stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StageReport {
    /// `stages[i]` index.
    pub index: usize,
    /// The stage's `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Samples that reached the stage.
    #[serde(rename = "in")]
    pub input: u64,
    /// Samples it passed on.
    pub kept: u64,
    /// Samples it dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Stage-specific counters.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
    /// Length distributions the stage measured, by name (`truncate`: source and response
    /// tokens before and after).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lengths: BTreeMap<String, Histogram>,
    /// Stage-specific structured details (a mix's plan and achieved shares).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Totals over all inputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    /// Records read.
    pub read: u64,
    /// Samples kept.
    pub kept: u64,
    /// Extra copies written by a mix's upsampling (not part of `read = kept + dropped +
    /// rejected`).
    #[serde(skip_serializing_if = "is_zero")]
    pub copies: u64,
    /// Samples dropped.
    pub dropped: u64,
    /// Records rejected.
    pub rejected: u64,
}

/// Counts of values in power-of-two buckets: bucket 0 holds 0, bucket k ≥ 1 holds
/// 2^(k−1) ..= 2^k − 1 (so 1, 2–3, 4–7, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Histogram(pub Vec<u64>);

impl Histogram {
    /// The bucket of `v`.
    pub fn bucket(v: u64) -> usize {
        (64 - v.leading_zeros()) as usize
    }

    /// The values bucket `b` holds, as (lowest, highest).
    pub fn range(b: usize) -> (u64, u64) {
        match b {
            0 => (0, 0),
            64.. => (1 << 63, u64::MAX),
            b => (1 << (b - 1), (1u64 << b) - 1),
        }
    }

    /// Count one value.
    pub fn add(&mut self, v: u64) {
        let b = Histogram::bucket(v);
        if self.0.len() <= b {
            self.0.resize(b + 1, 0);
        }
        self.0[b] = self.0[b].saturating_add(1);
    }

    /// Add another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&c| c == 0)
    }
}

/// Length distributions of a run's samples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Lengths {
    /// Characters of content (turns, or a document's text) per sample as read, before any
    /// stage.
    #[serde(default)]
    pub chars_read: Histogram,
    /// Characters of content per sample written to the curated output (copies included),
    /// after every stage (truncation among them).
    #[serde(default)]
    pub chars_written: Histogram,
    /// Content tokens per written sample, by the catalog's tokenizer (when it has one).
    #[serde(default)]
    pub tokens_written: Histogram,
}

impl Lengths {
    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.chars_read.is_empty()
            && self.chars_written.is_empty()
            && self.tokens_written.is_empty()
    }

    /// Add another run part's counts.
    pub fn merge(&mut self, other: &Lengths) {
        self.chars_read.merge(&other.chars_read);
        self.chars_written.merge(&other.chars_written);
        self.tokens_written.merge(&other.tokens_written);
    }
}

/// The most examples the report keeps of each stage's drop reason.
pub const EXAMPLES_PER_REASON: usize = 3;

/// A dropped sample shown in the report: the first few of each stage's reason, in input order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DropExample {
    /// The stage (`stages[i]`).
    pub stage: usize,
    /// The reason's code.
    pub reason: String,
    /// The sample's id.
    pub id: String,
    /// The reason's detail, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The start of its content, with personal data masked.
    pub preview: String,
}

/// What a rewriting stage (filler, pii, truncate, rules, sensitive) changed in one sample: a
/// word diff (`[-removed-]`, `{+added+}`), personal data masked on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RewriteExample {
    /// The stage (`stages[i]`).
    pub stage: usize,
    /// The sample's id.
    pub id: String,
    /// The change, as a word diff.
    pub diff: String,
}

/// Whether `list` still takes an example of what `stage` rewrote.
pub fn wants_rewrite(list: &[RewriteExample], stage: usize) -> bool {
    list.iter().filter(|e| e.stage == stage).count() < EXAMPLES_PER_REASON
}

/// Whether `list` still takes an example of `stage`'s `reason`.
pub fn wants_example(list: &[DropExample], stage: usize, reason: &str) -> bool {
    list.iter()
        .filter(|e| e.stage == stage && e.reason == reason)
        .count()
        < EXAMPLES_PER_REASON
}

/// Characters of a sample's content: its turns', or its document text's.
pub fn content_chars(s: &crate::sample::Sample) -> u64 {
    match &s.text {
        Some(t) => t.chars().count() as u64,
        None => s
            .turns
            .iter()
            .map(|t| t.content.chars().count() as u64)
            .sum(),
    }
}

#[cfg(test)]
mod histogram_tests {
    use super::Histogram;

    #[test]
    fn values_go_to_power_of_two_buckets() {
        assert_eq!(Histogram::bucket(0), 0);
        assert_eq!(Histogram::bucket(1), 1);
        assert_eq!(Histogram::bucket(3), 2);
        assert_eq!(Histogram::bucket(4), 3);
        assert_eq!(Histogram::bucket(1023), 10);
        assert_eq!(Histogram::bucket(1024), 11);
        assert_eq!(Histogram::range(11), (1024, 2047));
        assert_eq!(Histogram::range(64), (1 << 63, u64::MAX));
        for v in [0u64, 1, 2, 3, 7, 8, 1000, u64::MAX] {
            let (lo, hi) = Histogram::range(Histogram::bucket(v));
            assert!(lo <= v && v <= hi, "{v}");
        }
        let mut a = Histogram::default();
        a.add(5);
        let mut b = Histogram::default();
        b.add(5);
        b.add(100);
        a.merge(&b);
        assert_eq!(a.0[3], 2);
        assert_eq!(a.0[7], 1);
    }
}

/// One record that could not be read, as the report quotes it (rejects.jsonl has them all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RejectExample {
    /// The input's name.
    pub input: String,
    /// The file, as the input names it.
    pub file: String,
    /// 1-based line (0 where the format has none, Parquet).
    #[serde(default)]
    pub line: u64,
    /// 1-based record number in the file.
    pub record: u64,
    /// What was wrong (personal data masked).
    pub error: String,
}

/// Whether `list` has room for another reject of `input`.
pub fn wants_reject(list: &[RejectExample], input: &str) -> bool {
    list.iter().filter(|r| r.input == input).count() < EXAMPLES_PER_REASON
}

/// Wall-clock figures; the only part of the report that differs between identical runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    /// Whole run, seconds.
    pub total_seconds: f64,
    /// Per stage index: CPU seconds summed over worker threads.
    pub stage_cpu_seconds: BTreeMap<String, f64>,
    /// Task-sharded runs, task 0: wall seconds of the phases it coordinates (waiting for the
    /// other tasks, merging and reducing each exchange, replaying outputs into the sinks).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_phase_seconds: BTreeMap<String, f64>,
    /// CPU seconds turning raw records into samples (parse, recognise, validate), summed over
    /// worker threads.
    pub convert_cpu_seconds: f64,
    /// Seconds in the output sinks (templating, tokenizing, encoding and writing), as seen by
    /// the thread feeding them; sinks use the worker threads inside.
    pub write_seconds: f64,
    /// Input bytes per wall second.
    pub input_mb_per_second: f64,
    /// Records read per wall second.
    pub records_per_second: f64,
    /// Worker threads.
    pub threads: usize,
}

/// The whole report (read back by the service to draw a job's report page).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// sluice version.
    pub sluice_version: String,
    /// Run name.
    pub run: String,
    /// `succeeded` or `failed: …`.
    pub status: String,
    /// Seed.
    pub seed: u64,
    /// Totals.
    pub totals: Totals,
    /// True when every input reconciles.
    pub reconciled: bool,
    /// Per input.
    pub inputs: Vec<InputReport>,
    /// Per stage, in order.
    pub stages: Vec<StageReport>,
    /// Files written, relative to the run directory.
    pub outputs: Vec<OutputFile>,
    /// Curated samples per value of domain, task, kind and each catalog dimension tag (user
    /// tags, language, split).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, BTreeMap<String, u64>>,
    /// Length distributions: as read, and as written.
    #[serde(skip_serializing_if = "Lengths::is_empty")]
    pub lengths: Lengths,
    /// The first few dropped samples of each stage's reason (personal data masked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<DropExample>,
    /// The first few changes of each rewriting stage (personal data masked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rewrites: Vec<RewriteExample>,
    /// The first few rejected records of each input (personal data masked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejects: Vec<RejectExample>,
    /// Timings.
    pub timings: Timings,
}

impl Report {
    /// A short human summary for stderr.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        let mut s = format!(
            "sluice run {:?}: {}\n  read {}  kept {}  dropped {}  rejected {}  ({:.2}s, {:.1} MB/s, {:.0} records/s, {} threads)\n",
            self.run,
            self.status,
            t.read,
            t.kept,
            t.dropped,
            t.rejected,
            self.timings.total_seconds,
            self.timings.input_mb_per_second,
            self.timings.records_per_second,
            self.timings.threads
        );
        for i in &self.inputs {
            s += &format!(
                "  input {:<24} read {:>7}  kept {:>7}  dropped {:>6}  rejected {:>6}\n",
                i.name, i.read, i.kept, i.dropped, i.rejected
            );
        }
        // Files not read as plain UTF-8, or whose head held lines that are not: which encoding
        // and why (every file's choice is in report.json).
        for f in self.inputs.iter().flat_map(|i| &i.files) {
            if f.encoding == "gb18030" || f.encoding_why.contains("not UTF-8") {
                s += &format!("  file {}: {} ({})\n", f.path, f.encoding, f.encoding_why);
            }
        }
        for st in &self.stages {
            let words = |k: &str| k.replace('_', " ");
            // Drop reasons by their codes (what `sluice inspect run --reason` takes).
            let reasons: Vec<String> = st.dropped.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let mut line = format!(
                "  stage [{}] {:<20} in {:>7}  kept {:>7}",
                st.index, st.kind, st.input, st.kept
            );
            if !reasons.is_empty() {
                line += &format!("  dropped: {}", reasons.join(", "));
            }
            // What the stage changed or found (fillers removed, phones found, history
            // dropped…), in words.
            let counters: Vec<String> = st
                .counters
                .iter()
                .map(|(k, n)| format!("{} {n}", words(k)))
                .collect();
            if !counters.is_empty() {
                line += &format!("  ({})", counters.join(", "));
            }
            s += &line;
            s += "\n";
        }
        for st in &self.stages {
            let warnings = st
                .details
                .as_ref()
                .and_then(|d| d["plan"]["warnings"].as_array().cloned())
                .unwrap_or_default();
            for w in warnings.iter().filter_map(|w| w.as_str()) {
                s += &format!("  warning: stage [{}] {}: {w}\n", st.index, st.kind);
            }
        }
        if t.copies > 0 {
            s += &format!("  copies written by upsampling: {}\n", t.copies);
        }
        if t.read == 0 {
            s += "  warning: no records were read: check the input paths and formats\n";
        }
        if t.rejected > 0 {
            s += &format!(
                "  note: {} record(s) could not be read; rejects.jsonl lists each with its file, line and error\n",
                t.rejected
            );
        }
        if !self.reconciled {
            s += "  WARNING: counts do not reconcile; this is a bug, please report it\n";
        }
        s
    }
}
