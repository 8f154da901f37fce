//! `report.html`: a run's report as one page that opens with no network (inline CSS, charts as
//! inline SVG from [`crate::chart`], no script). It holds what report.json holds but timings,
//! so the same input, pipeline and seed give the same bytes, whatever the thread or task count.

use crate::chart::{bars, escape, paired, Row};
use crate::report::Report;
use std::fmt::Write;

/// Values of a distribution drawn one by one; the rest are summed as one row.
const TOP: usize = 25;

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:980px;color:#222;padding:0 1em}\
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 10px;border-bottom:1px solid #eee;text-align:right}\
td:first-child,th:first-child,td.left{text-align:left}.bad{color:#c0392b}.ok{color:#2f7d4f}\
svg.chart{width:100%;height:auto;margin:.4em 0}svg .label,svg .value,svg .legend{font:12px system-ui,sans-serif;fill:#333}\
.muted{color:#777}code{background:#f4f4f4;padding:0 3px}blockquote{margin:.2em 0 .6em 1em;color:#444;white-space:pre-wrap;word-break:break-word}";

/// The page for `report`.
pub fn render(report: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>sluice run {}</title><style>{STYLE}</style></head><body>",
        escape(&report.run)
    );
    let t = &report.totals;
    let status_class = if report.status == "succeeded" {
        "ok"
    } else {
        "bad"
    };
    let _ = write!(
        h,
        "<h1>sluice run {}</h1><p><span class=\"{status_class}\" id=\"status\">{}</span> · seed {} · sluice {}</p>",
        escape(&report.run),
        escape(&report.status),
        report.seed,
        escape(&report.sluice_version)
    );
    let _ = write!(
        h,
        "<table id=\"totals\"><tr><th>read</th><th>kept</th><th>upsampled copies</th><th>dropped</th><th>rejected</th><th>reconciled</th></tr>\
         <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr></table>",
        t.read,
        t.kept,
        t.copies,
        t.dropped,
        t.rejected,
        if report.reconciled { "ok" } else { "bad" },
        if report.reconciled {
            "read = kept + dropped + rejected"
        } else {
            "NO"
        }
    );
    funnel(&mut h, report);
    inputs(&mut h, report);
    drops(&mut h, report);
    examples(&mut h, report);
    rewrites(&mut h, report);
    mixes(&mut h, report);
    lengths(&mut h, report);
    tags(&mut h, report);
    counters(&mut h, report);
    h.push_str("<p class=\"muted\">Timings and the list of output files are in report.json.</p></body></html>\n");
    h
}

/// Read → parsed → each stage's kept, with what each stage dropped, on one scale.
fn funnel(h: &mut String, r: &Report) {
    let t = &r.totals;
    let mut rows = vec![
        Row::single("read", t.read as f64, t.read.to_string()),
        Row {
            label: "parsed".into(),
            segments: vec![
                (t.read.saturating_sub(t.rejected) as f64, 0),
                (t.rejected as f64, 1),
            ],
            note: if t.rejected > 0 {
                format!(
                    "{} (−{} rejected)",
                    t.read.saturating_sub(t.rejected),
                    t.rejected
                )
            } else {
                t.read.to_string()
            },
        },
    ];
    for s in &r.stages {
        let dropped: u64 = s.dropped.values().sum();
        let mut segments = vec![(s.kept as f64, 0)];
        segments.push((dropped as f64, 1));
        rows.push(Row {
            label: format!("stages[{}] {}", s.index, s.kind),
            segments,
            note: if dropped > 0 {
                format!("{} (−{dropped})", s.kept)
            } else {
                s.kept.to_string()
            },
        });
    }
    let scale = rows
        .iter()
        .map(|r| r.segments.iter().map(|s| s.0).sum::<f64>());
    let max = scale.fold(0.0, f64::max);
    let _ = write!(
        h,
        "<h2 id=\"funnel\">Funnel</h2><p class=\"muted\">What reached each stage and what it passed on (green) or dropped (red), in distinct samples: a mix's upsampled copies are in the mix's section.</p>{}",
        bars("funnel", &rows, &["kept", "dropped or rejected"], Some(max))
    );
}

/// Per input: counts, formats and files.
fn inputs(h: &mut String, r: &Report) {
    h.push_str("<h2 id=\"inputs\">Inputs</h2>");
    let rows: Vec<Row> = r
        .inputs
        .iter()
        .map(|i| Row {
            label: i.name.clone(),
            segments: vec![
                (i.kept as f64, 0),
                (i.dropped as f64, 1),
                (i.rejected as f64, 2),
            ],
            note: i.read.to_string(),
        })
        .collect();
    h.push_str(&bars(
        "inputs",
        &rows,
        &["kept", "dropped", "rejected"],
        None,
    ));
    h.push_str("<table><tr><th>input</th><th>read</th><th>kept</th><th>copies</th><th>dropped</th><th>rejected</th><th>formats</th></tr>");
    for i in &r.inputs {
        let formats: Vec<String> = i.formats.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&i.name),
            i.read,
            i.kept,
            i.copies,
            i.dropped,
            i.rejected,
            escape(&formats.join(", "))
        );
    }
    h.push_str("</table><table><tr><th>file</th><th>reader</th><th>encoding</th><th>records</th><th>rejected</th><th>bytes</th><th>problem</th></tr>");
    for f in r.inputs.iter().flat_map(|i| &i.files) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td title=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"bad\">{}</td></tr>",
            escape(&f.path),
            escape(&f.reader),
            escape(&f.encoding_why),
            escape(&f.encoding),
            f.records,
            f.rejected,
            f.bytes,
            escape(f.error.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>");
    if !r.rejects.is_empty() {
        let _ = write!(
            h,
            "<h3 id=\"rejects\">Rejected records</h3><p class=\"muted\">The first {} of each input (personal data masked); rejects.jsonl lists every one with the start of the record.</p>\
             <table><tr><th>input</th><th>file</th><th>line</th><th>record</th><th>error</th></tr>",
            crate::report::EXAMPLES_PER_REASON
        );
        for e in &r.rejects {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"left bad\">{}</td></tr>",
                escape(&e.input),
                escape(&e.file),
                if e.line > 0 { e.line.to_string() } else { String::new() },
                e.record,
                escape(&e.error)
            );
        }
        h.push_str("</table>");
    }
}

/// Why samples were dropped, per stage and reason.
fn drops(h: &mut String, r: &Report) {
    let rows: Vec<Row> = r
        .stages
        .iter()
        .flat_map(|s| {
            s.dropped.iter().map(move |(reason, n)| Row {
                label: format!("stages[{}] {} · {reason}", s.index, s.kind),
                // The funnel's color for dropped samples.
                segments: vec![(*n as f64, 1)],
                note: n.to_string(),
            })
        })
        .collect();
    h.push_str("<h2 id=\"drops\">Drop reasons</h2>");
    if rows.is_empty() {
        h.push_str("<p>No stage dropped anything.</p>");
        return;
    }
    h.push_str(&bars("drop reasons", &rows, &[], None));
    stage_table(h, r, "reason", "dropped", |s| &s.dropped);
}

/// A table of one count map of every stage (drop reasons, counters): stage, key, count.
fn stage_table(
    h: &mut String,
    r: &Report,
    key: &str,
    count: &str,
    of: impl Fn(&crate::report::StageReport) -> &std::collections::BTreeMap<String, u64>,
) {
    let _ = write!(
        h,
        "<table><tr><th>stage</th><th>{key}</th><th>{count}</th></tr>"
    );
    for s in &r.stages {
        for (k, n) in of(s) {
            let _ = write!(
                h,
                "<tr><td>stages[{}] {}</td><td>{}</td><td>{n}</td></tr>",
                s.index,
                escape(&s.kind),
                escape(k)
            );
        }
    }
    h.push_str("</table>");
}

/// The first dropped samples of each stage's reason.
fn examples(h: &mut String, r: &Report) {
    if r.examples.is_empty() {
        return;
    }
    h.push_str("<h2 id=\"examples\">Dropped examples</h2><p class=\"muted\">The first of each reason, in input order; personal data the bundled PII rules find is masked.</p>");
    let mut last: Option<(usize, &str)> = None;
    for e in &r.examples {
        if last != Some((e.stage, e.reason.as_str())) {
            if last.is_some() {
                h.push_str("</ul>");
            }
            let kind = stage_kind(r, e.stage);
            let _ = write!(
                h,
                "<h3>stages[{}] {} · {}</h3><ul class=\"examples\">",
                e.stage,
                escape(kind),
                escape(&e.reason)
            );
            last = Some((e.stage, e.reason.as_str()));
        }
        let _ = write!(
            h,
            "<li><code>{}</code>{}<blockquote>{}</blockquote></li>",
            escape(&e.id),
            e.detail
                .as_ref()
                .map(|d| format!(" — {}", escape(d)))
                .unwrap_or_default(),
            escape(&e.preview)
        );
    }
    h.push_str("</ul>");
}

/// The `type` of `stages[index]` ("" if the report has no such stage).
fn stage_kind(r: &Report, index: usize) -> &str {
    r.stages
        .iter()
        .find(|s| s.index == index)
        .map_or("", |s| s.kind.as_str())
}

/// What rewriting stages changed: the first few changes of each, as word diffs.
fn rewrites(h: &mut String, r: &Report) {
    if r.rewrites.is_empty() {
        return;
    }
    h.push_str("<h2 id=\"rewrites\">What rewriting stages changed</h2><p class=\"muted\">The first changes of each stage, in input order: <code>[-removed-]</code> and <code>{+added+}</code> in the text around them; personal data is masked on both sides, so a change of personal data alone (the pii stage's) is not shown.</p>");
    let mut last = None;
    for e in &r.rewrites {
        if last != Some(e.stage) {
            if last.is_some() {
                h.push_str("</ul>");
            }
            let kind = stage_kind(r, e.stage);
            let _ = write!(
                h,
                "<h3>stages[{}] {}</h3><ul class=\"examples\">",
                e.stage,
                escape(kind)
            );
            last = Some(e.stage);
        }
        let _ = write!(
            h,
            "<li><code>{}</code><blockquote>{}</blockquote></li>",
            escape(&e.id),
            escape(&e.diff)
        );
    }
    h.push_str("</ul>");
}

/// A mix's plan against what it achieved, per pool.
fn mixes(h: &mut String, r: &Report) {
    for s in r.stages.iter().filter(|s| s.kind == "mix") {
        let Some(d) = &s.details else { continue };
        let achieved = d["achieved"].as_array().cloned().unwrap_or_default();
        let rows: Vec<(String, f64, f64)> = achieved
            .iter()
            .map(|p| {
                (
                    p["pool"].as_str().unwrap_or("?").to_string(),
                    p["requested_share"].as_f64().unwrap_or(0.0),
                    p["share"].as_f64().unwrap_or(0.0),
                )
            })
            .collect();
        let plan = &d["plan"];
        let _ = write!(
            h,
            "<h2 id=\"mix-{}\">Mix (stages[{}]): {} {} by {}</h2>{}",
            s.index,
            s.index,
            escape(plan["mode"].as_str().unwrap_or("")),
            escape(plan["ratio"].as_str().unwrap_or("")),
            escape(plan["unit"].as_str().unwrap_or("")),
            paired("mix shares", &rows, ["requested", "achieved"], "")
        );
        h.push_str("<table><tr><th>pool</th><th>samples</th><th>distinct</th><th>most copies</th><th>tokens</th><th>share</th></tr>");
        for p in &achieved {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td></tr>",
                escape(p["pool"].as_str().unwrap_or("?")),
                p["samples"].as_u64().unwrap_or(0),
                p["distinct"].as_u64().unwrap_or(0),
                p["max_copies"].as_u64().unwrap_or(0),
                p["tokens"].as_u64().unwrap_or(0),
                p["share"].as_f64().unwrap_or(0.0)
            );
        }
        h.push_str("</table><table><tr><th>pool · task</th><th>available</th><th>cap</th><th>quota</th><th>repeat</th></tr>");
        for pool in plan["pools"].as_array().into_iter().flatten() {
            for task in pool["tasks"].as_array().into_iter().flatten() {
                let _ = write!(
                    h,
                    "<tr><td>{} · {}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.2}</td></tr>",
                    escape(pool["pool"].as_str().unwrap_or("?")),
                    escape(task["task"].as_str().unwrap_or("?")),
                    task["available_samples"].as_u64().unwrap_or(0),
                    task["cap"].as_u64().map_or("-".into(), |c| c.to_string()),
                    task["quota"].as_f64().unwrap_or(0.0),
                    task["repeat"].as_f64().unwrap_or(0.0)
                );
            }
        }
        h.push_str("</table>");
    }
}

/// Length distributions: content characters as read and as written, and tokens as written.
fn lengths(h: &mut String, r: &Report) {
    let l = &r.lengths;
    let measured = r.stages.iter().any(|s| !s.lengths.is_empty());
    if l.is_empty() && !measured {
        return;
    }
    h.push_str("<h2 id=\"lengths\">Lengths</h2><p class=\"muted\">Samples per length, in power-of-two ranges: content (turns, or a document's text) as read before any stage, and as written after every stage (truncation among them, upsampled copies included).</p>");
    for (id, title, hist) in [
        (
            "chars-read",
            "characters per sample, as read",
            &l.chars_read,
        ),
        (
            "chars-written",
            "characters per sample, as written",
            &l.chars_written,
        ),
        (
            "tokens-written",
            "tokens per sample, as written",
            &l.tokens_written,
        ),
    ] {
        if hist.is_empty() {
            continue;
        }
        let _ = write!(
            h,
            "<h3 id=\"{id}\">{}</h3>{}",
            escape(title),
            bars(title, &histogram_rows(&[("", hist, 0)]), &[], None)
        );
    }
    // What a stage measured itself (truncate: the source and the response in its tokenizer's
    // tokens, before and after), each `x_before` drawn against its `x_after`.
    for s in r.stages.iter().filter(|s| !s.lengths.is_empty()) {
        for (name, before) in &s.lengths {
            let Some(what) = name.strip_suffix("_before") else {
                if !name.ends_with("_after") {
                    let title =
                        format!("stages[{}] {}: {}", s.index, s.kind, name.replace('_', " "));
                    let _ = write!(
                        h,
                        "<h3 id=\"stage-{}-{}\">{}</h3>{}",
                        s.index,
                        escape(name),
                        escape(&title),
                        bars(&title, &histogram_rows(&[("", before, 0)]), &[], None)
                    );
                }
                continue;
            };
            let after = s.lengths.get(&format!("{what}_after"));
            let title = format!(
                "stages[{}] {}: {} per sample, before and after",
                s.index,
                s.kind,
                what.replace('_', " ")
            );
            let mut series = vec![("before", before, 4)];
            series.extend(after.map(|a| ("after", a, 0)));
            let _ = write!(
                h,
                "<h3 id=\"stage-{}-{}\">{}</h3>{}",
                s.index,
                escape(what),
                escape(&title),
                bars(&title, &histogram_rows(&series), &[], None)
            );
        }
    }
}

/// Rows of one or more histograms on shared buckets (the span where any has counts): per
/// bucket one row per histogram, labelled with its name when there are several, its share of
/// that histogram's total at the right.
fn histogram_rows(series: &[(&str, &crate::report::Histogram, usize)]) -> Vec<Row> {
    let first = series
        .iter()
        .filter_map(|(_, h, _)| h.0.iter().position(|&c| c > 0))
        .min()
        .unwrap_or(0);
    let last = series
        .iter()
        .filter_map(|(_, h, _)| h.0.iter().rposition(|&c| c > 0))
        .max()
        .unwrap_or(0);
    let mut rows = Vec::new();
    for b in first..=last {
        let (lo, hi) = crate::report::Histogram::range(b);
        let range = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}–{hi}")
        };
        for (name, hist, color) in series {
            let total: u64 = hist.0.iter().sum();
            let n = hist.0.get(b).copied().unwrap_or(0);
            let label = if name.is_empty() {
                range.clone()
            } else {
                format!("{range} · {name}")
            };
            rows.push(Row {
                label,
                segments: vec![(n as f64, *color)],
                note: share(n, total),
            });
        }
    }
    rows
}

/// Curated samples per value of each catalog dimension (language, split, user tags).
fn tags(h: &mut String, r: &Report) {
    if r.tags.is_empty() {
        return;
    }
    h.push_str("<h2 id=\"tags\">Distributions of the curated samples</h2><p class=\"muted\">Distinct samples: a mix's upsampled copies are not counted here.</p>");
    for (dim, values) in &r.tags {
        let total: u64 = values.values().sum();
        let mut sorted: Vec<(&String, &u64)> = values.iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut rows: Vec<Row> = sorted
            .iter()
            .take(TOP)
            .map(|(v, n)| Row::single(v.as_str(), **n as f64, share(**n, total)))
            .collect();
        if sorted.len() > TOP {
            let rest: u64 = sorted[TOP..].iter().map(|(_, n)| **n).sum();
            rows.push(Row::single(
                format!("{} other values", sorted.len() - TOP),
                rest as f64,
                share(rest, total),
            ));
        }
        let _ = write!(h, "<h3>{}</h3>{}", escape(dim), bars(dim, &rows, &[], None));
    }
}

/// Stage-specific counters (PII masked by kind, fillers removed, …).
fn counters(h: &mut String, r: &Report) {
    let any = r.stages.iter().any(|s| !s.counters.is_empty());
    if !any {
        return;
    }
    h.push_str("<h2 id=\"counters\">Stage counters</h2>");
    stage_table(h, r, "counter", "count", |s| &s.counters);
}

/// A training run's page, from its `metrics.jsonl` lines: loss and validation loss, learning
/// rate and gradient norm by step, with rollbacks and early stopping marked and listed.
pub fn training(name: &str, metrics: &[serde_json::Value]) -> String {
    use crate::chart::{lines, Series};
    let series = |key: &str, color: usize, label: &str| Series {
        name: label.into(),
        points: metrics
            .iter()
            .filter_map(|m| Some((m["step"].as_f64()?, m[key].as_f64()?)))
            .collect(),
        color,
    };
    let events: Vec<(f64, String)> = metrics
        .iter()
        .filter_map(|m| {
            let step = m["step"].as_f64()?;
            let event = m["event"].as_str()?;
            Some((step, format!("{event} at step {step}")))
        })
        .collect();
    let train = series("loss", 0, "training loss");
    let valid = series("valid_loss", 4, "validation loss");
    let steps = train.points.last().map_or(0.0, |p| p.0);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>sluice train {n}</title><style>{STYLE}</style></head><body><h1>sluice train {n}</h1>",
        n = escape(name)
    );
    let best = valid
        .points
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let _ = write!(
        h,
        "<table id=\"summary\"><tr><th>steps</th><th>last training loss</th><th>best validation loss</th><th>rollbacks</th></tr><tr><td>{steps:.0}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        train
            .points
            .last()
            .map_or("-".into(), |p| format!("{:.4}", p.1)),
        best.map_or("-".into(), |(s, v)| format!("{v:.4} (step {s:.0})")),
        metrics
            .iter()
            .filter(|m| m["event"] == "rollback")
            .count()
    );
    let _ = write!(
        h,
        "<h2 id=\"loss\">Loss</h2>{}<h2 id=\"lr\">Learning rate</h2>{}<h2 id=\"grad-norm\">Gradient norm (before clipping)</h2>{}",
        lines("loss", &[train, valid], &events),
        lines("learning rate", &[series("lr", 2, "learning rate")], &events),
        lines("gradient norm", &[series("grad_norm", 3, "gradient norm")], &events)
    );
    let listed: Vec<&serde_json::Value> =
        metrics.iter().filter(|m| m["event"].is_string()).collect();
    if !listed.is_empty() {
        h.push_str(
            "<h2 id=\"events\">Events</h2><table><tr><th>step</th><th>event</th><th>what</th></tr>",
        );
        for m in listed {
            let what = match m["event"].as_str() {
                Some("rollback") => {
                    let r = &m["rollback"];
                    format!(
                        "back to step {} ({}; loss {}, gradient norm {}), {} sequences skipped",
                        r["to_step"],
                        r["reason"].as_str().unwrap_or(""),
                        r["loss"],
                        r["grad_norm"],
                        r["skipped_sequences"]
                    )
                }
                Some("early_stop") => format!(
                    "best validation loss {} at step {}",
                    m["best_valid_loss"], m["best_step"]
                ),
                _ => String::new(),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                m["step"],
                escape(m["event"].as_str().unwrap_or("")),
                escape(&what)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<p class=\"muted\">Every step's figures, tokens per second among them, are in metrics.jsonl.</p></body></html>\n");
    h
}

fn share(n: u64, total: u64) -> String {
    if total == 0 {
        return n.to_string();
    }
    let pct = n as f64 * 100.0 / total as f64;
    if n > 0 && pct < 0.05 {
        return format!("{n} (<0.1%)");
    }
    format!("{n} ({pct:.1}%)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{InputReport, StageReport, Totals};

    #[test]
    fn a_training_page_draws_the_curves_and_lists_the_events() {
        let lines: Vec<serde_json::Value> = [
            r#"{"step":1,"loss":3.0,"lr":0.001,"grad_norm":2.0}"#,
            r#"{"step":2,"loss":2.5,"lr":0.001,"grad_norm":1.5}"#,
            r#"{"step":2,"valid_loss":2.7}"#,
            r#"{"step":3,"event":"rollback","rollback":{"to_step":2,"reason":"loss <spike>","loss":9.0,"grad_norm":50.0,"skipped_sequences":4}}"#,
            r#"{"step":3,"loss":2.0,"lr":0.0005,"grad_norm":1.0}"#,
            r#"{"step":4,"valid_loss":2.2}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
        let page = training("demo", &lines);
        assert!(
            page.contains("<td>3</td><td>2.0000</td><td>2.2000 (step 4)</td><td>1</td>"),
            "{page}"
        );
        assert_eq!(page.matches("<svg").count(), 3);
        assert!(page.contains("training loss") && page.contains("validation loss"));
        assert!(page.contains("loss &lt;spike&gt;"), "event text escaped");
        assert!(!page.contains("<spike>"));
        assert!(page.contains("4 sequences skipped"));
    }

    #[test]
    fn a_truncate_stage_draws_its_sizes_before_against_after() {
        use crate::report::Histogram;
        let hist = |values: &[u64]| {
            let mut h = Histogram::default();
            for &v in values {
                h.add(v);
            }
            h
        };
        let report = Report {
            run: "t".into(),
            status: "succeeded".into(),
            stages: vec![StageReport {
                index: 2,
                kind: "truncate".into(),
                input: 3,
                kept: 3,
                lengths: [
                    ("source_tokens_before".to_string(), hist(&[100, 900, 3000])),
                    ("source_tokens_after".to_string(), hist(&[100, 900, 1024])),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let page = render(&report);
        assert!(
            page.contains("stages[2] truncate: source tokens per sample, before and after"),
            "{page}"
        );
        // Buckets 64–127 … 2048–4095, each with a before and an after row.
        assert!(page.contains(">2048–4095 · before<") && page.contains(">2048–4095 · after<"));
        assert!(page.contains(">1024–2047 · after<"));
        // 1024–2047 holds one sample after (1024) and none before.
        let after_row = page.split(">1024–2047 · after<").nth(1).expect("row");
        assert!(after_row.contains("1 (33.3%)"), "{after_row}");
        let before_row = page.split(">1024–2047 · before<").nth(1).expect("row");
        assert!(before_row.contains(">0 (0.0%)<"), "{before_row}");
    }

    #[test]
    fn the_page_shows_the_counts_and_escapes_what_came_from_data() {
        let mut tags = std::collections::BTreeMap::new();
        tags.insert(
            "region".to_string(),
            [
                ("<script>alert(1)</script>".to_string(), 3u64),
                ("east".into(), 7),
            ]
            .into_iter()
            .collect(),
        );
        let report = Report {
            sluice_version: "0".into(),
            run: "demo <b>".into(),
            status: "succeeded".into(),
            seed: 7,
            totals: Totals {
                read: 12,
                kept: 9,
                copies: 0,
                dropped: 2,
                rejected: 1,
            },
            reconciled: true,
            inputs: vec![InputReport {
                name: "logs".into(),
                read: 12,
                kept: 9,
                dropped: 2,
                rejected: 1,
                ..Default::default()
            }],
            stages: vec![StageReport {
                index: 0,
                kind: "quality".into(),
                input: 11,
                kept: 9,
                dropped: [("repetition".to_string(), 2u64)].into_iter().collect(),
                ..Default::default()
            }],
            outputs: Vec::new(),
            tags,
            examples: vec![crate::report::DropExample {
                stage: 0,
                reason: "repetition".into(),
                id: "a<1>".into(),
                detail: Some("ratio 0.5".into()),
                preview: "user: <img src=x onerror=alert(1)>".into(),
            }],
            rewrites: vec![crate::report::RewriteExample {
                stage: 0,
                id: "r1".into(),
                diff: "你好[-嗯嗯，-]请问 <b>".into(),
            }],
            lengths: {
                let mut l = crate::report::Lengths::default();
                for v in [0, 1, 5, 700, 900] {
                    l.chars_read.add(v);
                }
                l
            },
            rejects: vec![crate::report::RejectExample {
                input: "logs".into(),
                file: "a<b>.jsonl".into(),
                line: 4,
                record: 4,
                error: "EOF while parsing <x>".into(),
            }],
            timings: Default::default(),
        };
        let page = render(&report);
        assert!(page.starts_with("<!doctype html>"));
        assert!(
            !page.contains("<script"),
            "no script at all, and data is text"
        );
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("demo &lt;b&gt;"));
        assert!(page.contains("<td>12</td><td>9</td>"), "{page}");
        assert!(page.contains("stages[0] quality · repetition"));
        assert!(page.contains("<td>stages[0] quality</td><td>repetition</td><td>2</td>"));
        assert!(page.contains("7 (70.0%)"));
        assert!(page.contains("<code>a&lt;1&gt;</code> — ratio 0.5"));
        assert!(page.contains("id=\"rewrites\""));
        assert!(page.contains(
            "<td>logs</td><td>a&lt;b&gt;.jsonl</td><td>4</td><td>4</td><td class=\"left bad\">EOF while parsing &lt;x&gt;</td>"
        ));
        assert!(page.contains("<blockquote>你好[-嗯嗯，-]请问 &lt;b&gt;</blockquote>"));
        assert!(page.contains("user: &lt;img src=x onerror=alert(1)&gt;"));
        // Lengths: 0, 1, 4–7 and two in 512–1023, every range between drawn.
        assert!(page.contains("id=\"chars-read\""));
        assert!(page.contains(">512–1023</text>"), "{page}");
        assert!(page.contains("2 (40.0%)"));
        assert!(
            page.contains(">256–511</text>"),
            "empty ranges between are drawn"
        );
        assert!(
            !page.contains("id=\"tokens-written\""),
            "nothing counted, no chart"
        );
        // No resource is fetched when the page is viewed.
        // Nothing is fetched when the page is viewed: no attribute names a resource (data
        // that says `src=` is text, its quotes escaped), and the style loads nothing.
        for fetch in ["src=\"", "href=\"", "src='", "href='"] {
            assert!(!page.contains(fetch), "{fetch} in {page}");
        }
        assert!(!STYLE.contains("url(") && !STYLE.contains("@import"));
    }
}
