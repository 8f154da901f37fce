//! `<output>/report.html` of an ablation: one self-contained page (no script, nothing fetched)
//! with the points' losses as a scatter (general loss across, domain loss up; the chosen point,
//! the Pareto front and the tolerance limit marked), the table and the reasoning. Drawn with the run report's chart builder; every label is escaped.

use super::{PointResult, Recommendation};
use sluice_pipeline::chart::{self, escape, Dot};
use std::fmt::Write;

/// The page.
pub fn html(name: &str, points: &[PointResult], rec: &Recommendation, tolerance: f64) -> String {
    let mut s = String::new();
    let title = format!("Ablation: {name}");
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}}\
         table{{border-collapse:collapse}}td,th{{padding:.2em .6em;border-bottom:1px solid #ddd;\
         text-align:right}}td:first-child,th:first-child{{text-align:left;white-space:nowrap}}\
         .chart{{width:100%;height:auto}}.label{{font-size:11px;fill:#444}}\
         .legend{{font-size:11px}}</style></head><body><h1>{}</h1>",
        escape(&title),
        escape(&title)
    );
    let chosen = rec.chosen.as_deref();
    let _ = write!(
        s,
        "<p><b>Recommended: {}</b> — the lowest held-out domain loss among the points whose \
         general loss stays within {:.1}% of the base model's.</p>",
        escape(chosen.unwrap_or("none")),
        tolerance * 100.0
    );
    let base = points.first().map(|p| p.base_general_loss);
    let dots: Vec<Dot> = points
        .iter()
        .map(|p| Dot {
            label: p.label.clone(),
            x: p.general_loss,
            y: p.domain_loss,
            color: if Some(p.label.as_str()) == chosen {
                0
            } else if rec.pareto.contains(&p.label) {
                4
            } else {
                7
            },
        })
        .collect();
    let guides: Vec<(f64, String)> = base
        .map(|b| {
            vec![(
                b * (1.0 + tolerance),
                format!("base + {:.1}%", tolerance * 100.0),
            )]
        })
        .unwrap_or_default();
    s.push_str("<h2>Held-out losses after training</h2>");
    s.push_str(&chart::scatter(
        "domain loss against general loss",
        &dots,
        ("general loss", "domain loss"),
        &guides,
        &[("recommended", 0), ("Pareto front", 4), ("other", 7)],
    ));
    s.push_str(
        "<p>Lower is better on both axes. Points left of the dashed line keep the general loss \
         within the tolerance of the base model's; the Pareto front holds the points no other \
         point beats on both losses.</p>",
    );
    s.push_str(
        "<h2>Points</h2><table><tr><th>point</th><th>domain loss</th><th>general loss</th>\
         <th>base domain</th><th>base general</th><th>forgetting</th><th>mix domain/general</th>\
         <th>tokens</th><th>seconds</th></tr>",
    );
    for p in points {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td>\
             <td>{:+.1}%</td><td>{}/{}</td><td>{}</td><td>{:.0}</td></tr>",
            escape(&p.label),
            p.domain_loss,
            p.general_loss,
            p.base_domain_loss,
            p.base_general_loss,
            p.forgetting_share * 100.0,
            p.mixed_samples.get("domain").copied().unwrap_or(0),
            p.mixed_samples.get("general").copied().unwrap_or(0),
            p.tokens_seen,
            p.pipeline_seconds + p.train_seconds
        );
    }
    s.push_str("</table>");
    if points.iter().any(|p| p.eval.is_some()) {
        s.push_str(
            "<h2>Evaluation set</h2><p>The trained model of each point on the ablation's \
             evaluation set (<code>sluice eval build</code>): perplexity of the references, \
             BLEU-4 and ROUGE-L of greedy answers, multiple-choice accuracy.</p><table><tr>\
             <th>point</th><th>open items</th><th>perplexity</th><th>BLEU-4</th>\
             <th>ROUGE-L</th><th>EM</th><th>F1</th><th>MC items</th><th>acc</th>\
             <th>acc_norm</th></tr>",
        );
        let f = |v: Option<f64>, scale: f64| {
            v.map_or("–".to_string(), |x| format!("{:.2}", x * scale))
        };
        for p in points {
            if let Some(e) = &p.eval {
                let _ = write!(
                    s,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&p.label),
                    e.open,
                    f(e.perplexity, 1.0),
                    f(e.bleu, 1.0),
                    f(e.rouge_l, 100.0),
                    f(e.exact_match, 100.0),
                    f(e.f1, 100.0),
                    e.mc,
                    f(e.acc, 100.0),
                    f(e.acc_norm, 100.0)
                );
            }
        }
        s.push_str("</table>");
    }
    s.push_str("<h2>Reasoning</h2><ul>");
    for line in &rec.reasoning {
        let _ = write!(s, "<li>{}</li>", escape(line));
    }
    s.push_str("</ul></body></html>\n");
    s
}
