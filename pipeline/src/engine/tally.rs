//! The counts of a run (per input, per stage, stage CPU, rejects per file), and how the counts
//! of several tasks add up to those of one run.

use crate::config::Plan;
use crate::report::{InputReport, StageReport, Totals};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a run (or one task of it) counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(in crate::engine) struct Tally {
    /// Per input, in plan order.
    pub(in crate::engine) inputs: Vec<InputReport>,
    /// Per stage, in plan order.
    pub(in crate::engine) stages: Vec<StageReport>,
    /// CPU time per stage.
    pub(in crate::engine) stage_cpu: Vec<Duration>,
    /// CPU time turning raw records into samples (parse, recognise the format, validate).
    #[serde(default)]
    pub(in crate::engine) convert_cpu: Duration,
    /// Time in the output sinks (templating, tokenizing, encoding, writing), as seen by the
    /// thread that feeds them (sinks may use the pool inside).
    #[serde(default)]
    pub(in crate::engine) write_time: Duration,
    /// Rejected records per input and file.
    pub(in crate::engine) file_rejects: BTreeMap<usize, BTreeMap<String, u64>>,
    /// Length distributions.
    #[serde(default)]
    pub(in crate::engine) lengths: crate::report::Lengths,
    /// The first dropped samples of each stage's reason.
    #[serde(default)]
    pub(in crate::engine) examples: Vec<crate::report::DropExample>,
    /// The first rejected records of each input.
    #[serde(default)]
    pub(in crate::engine) rejects: Vec<crate::report::RejectExample>,
    /// The first changes of each rewriting stage.
    #[serde(default)]
    pub(in crate::engine) rewrites: Vec<crate::report::RewriteExample>,
}

impl Tally {
    /// Zero counts for the plan's inputs and stages.
    pub(in crate::engine) fn new(plan: &Plan) -> Tally {
        Tally {
            inputs: plan
                .inputs
                .iter()
                .map(|i| InputReport {
                    name: i.name.clone(),
                    ..Default::default()
                })
                .collect(),
            stages: plan
                .stages
                .iter()
                .enumerate()
                .map(|(i, s)| StageReport {
                    index: i,
                    kind: s.type_name().to_string(),
                    ..Default::default()
                })
                .collect(),
            stage_cpu: vec![Duration::ZERO; plan.stages.len()],
            convert_cpu: Duration::ZERO,
            write_time: Duration::ZERO,
            file_rejects: BTreeMap::new(),
            lengths: Default::default(),
            examples: Vec::new(),
            rejects: Vec::new(),
            rewrites: Vec::new(),
        }
    }

    /// The same inputs and stages with every count zero (names, kinds and stage details kept).
    pub(in crate::engine) fn zeroed(&self) -> Tally {
        Tally {
            inputs: self
                .inputs
                .iter()
                .map(|r| InputReport {
                    name: r.name.clone(),
                    ..Default::default()
                })
                .collect(),
            stages: self
                .stages
                .iter()
                .map(|r| StageReport {
                    index: r.index,
                    kind: r.kind.clone(),
                    details: r.details.clone(),
                    ..Default::default()
                })
                .collect(),
            stage_cpu: vec![Duration::ZERO; self.stage_cpu.len()],
            convert_cpu: Duration::ZERO,
            write_time: Duration::ZERO,
            file_rejects: BTreeMap::new(),
            lengths: Default::default(),
            examples: Vec::new(),
            rejects: Vec::new(),
            rewrites: Vec::new(),
        }
    }

    /// Count one rejected record of input `input` (by its file), and keep it as an example if
    /// the input has few.
    pub(in crate::engine) fn reject(&mut self, input: usize, reject: &super::batch::Reject) {
        if let Some(r) = self.inputs.get_mut(input) {
            r.rejected += 1;
        }
        *self
            .file_rejects
            .entry(input)
            .or_default()
            .entry(reject.file.clone())
            .or_default() += 1;
        if crate::report::wants_reject(&self.rejects, &reject.input) {
            let mut error = masked(&reject.error);
            if error.chars().count() > 300 {
                error = error.chars().take(300).collect::<String>() + "…";
            }
            self.rejects.push(crate::report::RejectExample {
                input: reject.input.clone(),
                file: reject.file.clone(),
                line: reject.line,
                record: reject.record,
                error,
            });
        }
    }

    /// Add another part's counts (a task's): sums, and its files after ours.
    /// Add another task's counts (saturating: they come from the shared work folder and must
    /// not overflow the run's).
    pub(in crate::engine) fn merge(&mut self, other: &Tally) {
        for (mine, theirs) in self.inputs.iter_mut().zip(&other.inputs) {
            mine.read = mine.read.saturating_add(theirs.read);
            mine.kept = mine.kept.saturating_add(theirs.kept);
            mine.copies = mine.copies.saturating_add(theirs.copies);
            mine.dropped = mine.dropped.saturating_add(theirs.dropped);
            mine.rejected = mine.rejected.saturating_add(theirs.rejected);
            add_counts(&mut mine.dropped_by, &theirs.dropped_by);
            add_counts(&mut mine.formats, &theirs.formats);
            mine.files.extend(theirs.files.iter().cloned());
        }
        for (mine, theirs) in self.stages.iter_mut().zip(&other.stages) {
            mine.input = mine.input.saturating_add(theirs.input);
            mine.kept = mine.kept.saturating_add(theirs.kept);
            add_counts(&mut mine.dropped, &theirs.dropped);
            add_counts(&mut mine.counters, &theirs.counters);
            for (k, h) in &theirs.lengths {
                mine.lengths.entry(k.clone()).or_default().merge(h);
            }
        }
        for (mine, theirs) in self.stage_cpu.iter_mut().zip(&other.stage_cpu) {
            *mine = mine.saturating_add(*theirs);
        }
        self.convert_cpu = self.convert_cpu.saturating_add(other.convert_cpu);
        self.write_time = self.write_time.saturating_add(other.write_time);
        for (input, files) in &other.file_rejects {
            add_counts(self.file_rejects.entry(*input).or_default(), files);
        }
        self.lengths.merge(&other.lengths);
        // In task order, the first of each reason: those one process keeps.
        for e in &other.examples {
            if crate::report::wants_example(&self.examples, e.stage, &e.reason) {
                self.examples.push(e.clone());
            }
        }
        for e in &other.rewrites {
            if crate::report::wants_rewrite(&self.rewrites, e.stage) {
                self.rewrites.push(e.clone());
            }
        }
        for r in &other.rejects {
            if crate::report::wants_reject(&self.rejects, &r.input) {
                self.rejects.push(r.clone());
            }
        }
    }

    /// Keep what `stage` changed in sample `id` (its content `before` and `after`) as an
    /// example if the stage has few.
    pub(in crate::engine) fn rewrite(&mut self, stage: usize, id: &str, before: &str, after: &str) {
        if crate::report::wants_rewrite(&self.rewrites, stage) {
            let (before, after) = (masked(before), masked(after));
            // A change of personal data alone (the pii stage's) is not shown.
            if before == after {
                return;
            }
            let diff = crate::inspect::diff(&before, &after);
            let mut shown: String = diff.chars().take(600).collect();
            if diff.chars().count() > 600 {
                shown.push('…');
            }
            self.rewrites.push(crate::report::RewriteExample {
                stage,
                id: id.to_string(),
                diff: shown,
            });
        }
    }

    /// Keep `sample`, dropped by `stage` for `reason`, as an example if its reason has few.
    pub(in crate::engine) fn example(
        &mut self,
        stage: usize,
        sample: &crate::sample::Sample,
        reason: &crate::sample::DropReason,
    ) {
        if crate::report::wants_example(&self.examples, stage, reason.code) {
            self.examples.push(crate::report::DropExample {
                stage,
                reason: reason.code.to_string(),
                id: sample.id.clone(),
                detail: reason.detail.as_ref().map(|d| masked(d)),
                preview: masked(&preview(sample)),
            });
        }
    }

    /// Each file's rejects, set on its report.
    pub(in crate::engine) fn settle_files(&mut self) {
        for (i, input) in self.inputs.iter_mut().enumerate() {
            for f in &mut input.files {
                f.rejected = self
                    .file_rejects
                    .get(&i)
                    .and_then(|m| m.get(&f.path))
                    .copied()
                    .unwrap_or(0);
            }
        }
    }

    /// Sums over the inputs.
    pub(in crate::engine) fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for i in &self.inputs {
            totals.read += i.read;
            totals.kept += i.kept;
            totals.copies += i.copies;
            totals.dropped += i.dropped;
            totals.rejected += i.rejected;
        }
        totals
    }
}

fn add_counts(mine: &mut BTreeMap<String, u64>, theirs: &BTreeMap<String, u64>) {
    for (k, v) in theirs {
        let c = mine.entry(k.clone()).or_default();
        *c = c.saturating_add(*v);
    }
}

/// A sample's content as one line: `user: … / assistant: …`, or the text.
pub(in crate::engine) fn content(s: &crate::sample::Sample) -> String {
    match &s.text {
        Some(t) => t.clone(),
        None => s
            .turns
            .iter()
            .map(|t| format!("{}: {}", t.role.as_str(), t.content))
            .collect::<Vec<_>>()
            .join(" / "),
    }
}

/// The start of a sample's content, as one line.
fn preview(s: &crate::sample::Sample) -> String {
    const CHARS: usize = 300;
    let full = content(s);
    let mut out: String = full.chars().take(CHARS).collect();
    if full.chars().count() > CHARS {
        out.push('…');
    }
    out
}

/// `text` with the personal data the bundled PII rules find masked (an example may have been
/// dropped before the pipeline's own `pii` stage ran).
fn masked(text: &str) -> String {
    use crate::stages::RecordStage;
    static PII: std::sync::OnceLock<Option<crate::stages::pii::Pii>> = std::sync::OnceLock::new();
    let pii = PII.get_or_init(|| {
        crate::stages::pii::Pii::new(&crate::stages::pii::Config {
            confined_to: None,
            rules: None,
            actions: BTreeMap::new(),
        })
        .ok()
    });
    let Some(pii) = pii else {
        return "(personal data could not be masked: not shown)".into();
    };
    let sample = crate::sample::Sample::document("preview", text);
    match pii.process(sample, &mut crate::stages::StageCx::new(0)) {
        crate::stages::Verdict::Keep(s) | crate::stages::Verdict::Drop(s, _) => {
            s.text.unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::FileReport;

    fn part(read: u64, kept: u64, dropped: u64, file: &str) -> Tally {
        let mut t = Tally {
            inputs: vec![InputReport {
                name: "logs".into(),
                read,
                kept,
                dropped,
                dropped_by: BTreeMap::from([("duplicate".to_string(), dropped)]),
                files: vec![FileReport {
                    path: file.into(),
                    records: read,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            stages: vec![StageReport {
                index: 0,
                kind: "exact_dedup".into(),
                input: read,
                kept,
                dropped: BTreeMap::from([("duplicate".to_string(), dropped)]),
                details: Some(serde_json::json!({"owned": "by the stage"})),
                ..Default::default()
            }],
            stage_cpu: vec![Duration::from_millis(read)],
            convert_cpu: Duration::from_millis(read),
            write_time: Duration::ZERO,
            file_rejects: BTreeMap::new(),
            lengths: Default::default(),
            examples: Vec::new(),
            rejects: Vec::new(),
            rewrites: Vec::new(),
        };
        t.lengths.chars_read.add(read);
        for record in 0..(read - kept - dropped) {
            t.reject(
                0,
                &super::super::batch::Reject {
                    input: "in".into(),
                    file: file.into(),
                    line: record + 1,
                    record: record + 1,
                    split: None,
                    error: "broken".into(),
                    snippet: String::new(),
                },
            );
        }
        t
    }

    #[test]
    fn examples_show_the_start_of_a_sample_with_personal_data_masked() {
        let mut t = part(10, 6, 3, "a.jsonl");
        let mut s =
            crate::sample::Sample::document("d1", "请联系 13812345678 或 a.b@example.com，谢谢");
        let reason = crate::sample::DropReason::new("too_short", "call 13912345678");
        for _ in 0..5 {
            t.example(0, &s, &reason);
        }
        assert_eq!(t.examples.len(), crate::report::EXAMPLES_PER_REASON);
        let e = &t.examples[0];
        assert!(!e.preview.contains("13812345678") && !e.preview.contains("a.b@example.com"));
        assert!(e.preview.starts_with("请联系 "), "{}", e.preview);
        assert!(!e.detail.as_deref().unwrap_or("").contains("13912345678"));
        s.text = Some("x".repeat(1000));
        t.example(1, &s, &reason);
        assert_eq!(
            t.examples[3].preview.chars().count(),
            301,
            "300 characters and an ellipsis"
        );
    }

    #[test]
    fn tasks_add_up_to_one_run() {
        let (a, b) = (part(10, 6, 3, "a.jsonl"), part(5, 5, 0, "b.jsonl"));
        let mut all = a.zeroed();
        assert_eq!(all.totals(), Totals::default());
        assert_eq!(all.inputs[0].name, "logs");
        assert_eq!(all.stages[0].details, a.stages[0].details, "details kept");
        all.merge(&a);
        all.merge(&b);
        let t = all.totals();
        assert_eq!((t.read, t.kept, t.dropped, t.rejected), (15, 11, 3, 1));
        assert!(all.inputs[0].reconciles());
        assert_eq!(all.inputs[0].dropped_by["duplicate"], 3);
        assert_eq!(all.stages[0].input, 15);
        assert_eq!(all.stage_cpu[0], Duration::from_millis(15));
        assert_eq!(
            all.lengths.chars_read.0.iter().sum::<u64>(),
            2,
            "lengths add up"
        );
        let files: Vec<&str> = all.inputs[0]
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(files, ["a.jsonl", "b.jsonl"], "in task order");
        all.settle_files();
        assert_eq!(all.inputs[0].files[0].rejected, 1);
        assert_eq!(all.inputs[0].files[1].rejected, 0);
    }

    #[test]
    fn a_tally_travels_between_tasks_intact() {
        let a = part(10, 6, 3, "a.jsonl");
        let back: Tally =
            serde_json::from_slice(&serde_json::to_vec(&a).expect("json")).expect("back");
        assert_eq!(back, a);
    }
}
