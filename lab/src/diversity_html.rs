//! `diversity.html`: the statistics of `diversity.json` as one self-contained page (no script,
//! nothing fetched): groups by share with difficulty stacked, the table, instruction types,
//! near-duplicate cluster sizes, topics and warnings. Every label is escaped.

use crate::diversity::Diversity;
use sluice_pipeline::chart::{self, escape, Row};
use std::fmt::Write;

/// The page.
pub fn html(d: &Diversity) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Diversity: {}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2em auto;max-width:64em;color:#222}}\
         table{{border-collapse:collapse}}td,th{{padding:.2em .6em;border-bottom:1px solid #ddd;\
         text-align:right}}td:first-child,th:first-child{{text-align:left}}\
         .chart{{width:100%;height:auto}}.label{{font-size:11px;fill:#444}}.legend{{font-size:11px}}\
         .warn{{color:#a40}}</style></head><body><h1>Diversity: {}</h1>",
        escape(&d.run),
        escape(&d.run)
    );
    for w in &d.warnings {
        let _ = write!(s, "<p class=\"warn\">warning: {}</p>", escape(w));
    }
    let rows: Vec<Row> = d
        .groups
        .iter()
        .map(|g| {
            let n = |k: &str| g.difficulty.get(k).copied().unwrap_or(0) as f64;
            Row {
                label: format!("{} / {}", g.domain, g.task),
                segments: vec![(n("easy"), 2), (n("medium"), 4), (n("hard"), 1)],
                note: format!("{} ({:.0}%)", g.count, g.share * 100.0),
            }
        })
        .collect();
    s.push_str(&chart::bars_keyed(
        "samples per domain and task, by difficulty",
        &rows,
        &[("easy", 2), ("medium", 4), ("hard", 1)],
        None,
    ));
    s.push_str(
        "<h2>Groups</h2><table><tr><th>domain / task</th><th>samples</th><th>share</th>\
         <th>chars p10</th><th>p50</th><th>p90</th><th>max</th><th>user turns</th>\
         <th>rare tokens</th><th>instruction types</th><th>top types</th></tr>",
    );
    for g in d.groups.iter().chain(std::iter::once(&d.overall)) {
        let turns: Vec<String> = g.turns.iter().map(|(t, c)| format!("{t}: {c}")).collect();
        let types: Vec<String> = g
            .instruction_types
            .iter()
            .take(6)
            .map(|(t, c)| format!("{} {c}", escape(t)))
            .collect();
        let _ = write!(
            s,
            "<tr><td>{} / {}</td><td>{}</td><td>{:.1}%</td><td>{:.0}</td><td>{:.0}</td>\
             <td>{:.0}</td><td>{:.0}</td><td>{}</td><td>{:.1}%</td><td>{}</td><td>{}</td></tr>",
            escape(&g.domain),
            escape(&g.task),
            g.count,
            g.share * 100.0,
            g.chars.p10,
            g.chars.p50,
            g.chars.p90,
            g.chars.max,
            escape(&turns.join(", ")),
            g.rare_share.mean * 100.0,
            g.distinct_instruction_types,
            types.join(", ")
        );
    }
    s.push_str("</table>");
    let c = &d.duplicate_clusters;
    let _ = write!(
        s,
        "<h2>Near-duplicate clusters</h2><p>{} ({} samples): {}</p>",
        escape(&c.from),
        c.samples,
        escape(
            &c.sizes
                .iter()
                .map(|(k, v)| format!("size {k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    );
    if !c.largest.is_empty() {
        s.push_str("<table><tr><th>size</th><th>ids</th></tr>");
        for (size, ids) in &c.largest {
            let _ = write!(
                s,
                "<tr><td>{size}</td><td>{}</td></tr>",
                escape(&ids.join(", "))
            );
        }
        s.push_str("</table>");
    }
    let rows: Vec<Row> = d
        .topics
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Row::single(
                format!(
                    "{}. {}",
                    i + 1,
                    t.terms
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                t.size as f64,
                format!("{} ({:.0}%)", t.size, t.share * 100.0),
            )
        })
        .collect();
    let _ = write!(s, "<h2>Topics ({} samples)</h2>", d.topic_sample);
    s.push_str(&chart::bars(
        "topic clusters by size",
        &rows,
        &["samples"],
        None,
    ));
    s.push_str("<table><tr><th>topic</th><th>terms</th><th>examples</th></tr>");
    for (i, t) in d.topics.iter().enumerate() {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            i + 1,
            escape(&t.terms.join(" ")),
            escape(&t.examples.join(", "))
        );
    }
    s.push_str("</table></body></html>\n");
    s
}
