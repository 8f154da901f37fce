//! The recommendation: the point on the Pareto front of (domain loss, general loss) that keeps
//! the general loss within a tolerance of the base model's while minimizing the domain loss,
//! with its reasoning in sentences.

use super::PointResult;
use serde::Serialize;

/// A domain-loss margin below this share of the loss is called noise in the reasoning.
const NOISE: f64 = 0.005;

/// The recommendation and how it was reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// The point chosen, if any kept the general loss within tolerance.
    pub chosen: Option<String>,
    /// Points no other point beats on both losses.
    pub pareto: Vec<String>,
    /// Points whose general loss is within tolerance of the base model's.
    pub within_tolerance: Vec<String>,
    /// The reasoning, one sentence per line.
    pub reasoning: Vec<String>,
}

/// The rule: among the points whose general loss is at most `(1 + tolerance)` times the base
/// model's, the one with the lowest domain loss (ties: lower general loss, then label). That
/// point is on the Pareto front of (domain loss, general loss). When none qualifies, nothing is
/// chosen and the point that forgot least is named.
pub fn recommend(points: &[PointResult], tolerance: f64) -> Recommendation {
    let dominated = |p: &PointResult| {
        points.iter().any(|q| {
            q.domain_loss <= p.domain_loss
                && q.general_loss <= p.general_loss
                && (q.domain_loss < p.domain_loss || q.general_loss < p.general_loss)
        })
    };
    let pareto: Vec<String> = points
        .iter()
        .filter(|p| !dominated(p))
        .map(|p| p.label.clone())
        .collect();
    let within: Vec<&PointResult> = points
        .iter()
        .filter(|p| p.general_loss <= p.base_general_loss * (1.0 + tolerance))
        .collect();
    let mut reasoning = vec![format!(
        "{} of {} points keep the general loss within {:.1}% of the base model's",
        within.len(),
        points.len(),
        tolerance * 100.0
    )];
    let best = within.iter().min_by(|a, b| {
        a.domain_loss
            .total_cmp(&b.domain_loss)
            .then(a.general_loss.total_cmp(&b.general_loss))
            .then(a.label.cmp(&b.label))
    });
    let chosen = match best {
        Some(b) => {
            reasoning.push(format!(
                "of those, {} has the lowest domain loss ({:.4}; base {:.4}) with general loss \
                 {:.4} ({:+.1}% against the base {:.4})",
                b.label,
                b.domain_loss,
                b.base_domain_loss,
                b.general_loss,
                b.forgetting_share * 100.0,
                b.base_general_loss
            ));
            // The runner-up within tolerance: a margin this small is one seed's noise.
            if let Some(next) = within
                .iter()
                .filter(|p| p.label != b.label)
                .min_by(|x, y| x.domain_loss.total_cmp(&y.domain_loss))
            {
                let margin = next.domain_loss - b.domain_loss;
                if margin < NOISE * b.domain_loss {
                    reasoning.push(format!(
                        "the margin over {} is only {margin:.4} ({:.2}%): within what another \
                         seed could change; repeat with other seeds before relying on it",
                        next.label,
                        100.0 * margin / b.domain_loss
                    ));
                }
            }
            for p in &within {
                if p.label != b.label {
                    reasoning.push(format!(
                        "{}: domain loss {:.4} (+{:.4} over {}), general {:.4}",
                        p.label,
                        p.domain_loss,
                        p.domain_loss - b.domain_loss,
                        b.label,
                        p.general_loss
                    ));
                }
            }
            Some(b.label.clone())
        }
        None => {
            if let Some(least) = points
                .iter()
                .min_by(|a, b| a.forgetting_share.total_cmp(&b.forgetting_share))
            {
                reasoning.push(format!(
                    "none is recommended: the least forgetting is {} (general loss {:+.1}%); \
                     raise the tolerance, add general data or lower the domain share",
                    least.label,
                    least.forgetting_share * 100.0
                ));
            }
            None
        }
    };
    for p in points {
        if !within.iter().any(|w| w.label == p.label) {
            reasoning.push(format!(
                "{} is out: general loss {:.4} is {:+.1}% against the base {:.4}",
                p.label,
                p.general_loss,
                p.forgetting_share * 100.0,
                p.base_general_loss
            ));
        }
    }
    Recommendation {
        chosen,
        pareto,
        within_tolerance: within.iter().map(|p| p.label.clone()).collect(),
        reasoning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ablate::Point;
    use std::collections::BTreeMap;

    fn result(label: &str, domain: f64, general: f64, base_general: f64) -> PointResult {
        PointResult {
            label: label.into(),
            point: Point {
                ratio: "1:1".into(),
                max_source_tokens: None,
                filler: None,
            },
            fingerprint: String::new(),
            domain_loss: domain,
            general_loss: general,
            base_domain_loss: 9.0,
            base_general_loss: base_general,
            forgetting: general - base_general,
            forgetting_share: (general - base_general) / base_general,
            mixed_samples: BTreeMap::new(),
            tokens_seen: 0,
            steps: 0,
            pipeline_seconds: 0.0,
            train_seconds: 0.0,
            eval: None,
        }
    }

    #[test]
    fn the_lowest_domain_loss_within_tolerance_is_recommended() {
        // 1:1 learns the domain best but forgets 10%; 1:3 forgets 4%; 1:10 forgets nothing.
        let points = [
            result("ratio-1_1", 2.0, 3.3, 3.0),
            result("ratio-1_3", 2.2, 3.12, 3.0),
            result("ratio-1_10", 2.6, 3.0, 3.0),
            result("ratio-1_20", 2.7, 3.05, 3.0), // dominated by 1:10
        ];
        let r = recommend(&points, 0.05);
        assert_eq!(r.chosen.as_deref(), Some("ratio-1_3"));
        assert_eq!(
            r.within_tolerance,
            ["ratio-1_3", "ratio-1_10", "ratio-1_20"]
        );
        assert_eq!(r.pareto, ["ratio-1_1", "ratio-1_3", "ratio-1_10"]);
        assert!(r.reasoning.iter().any(|l| l.contains("ratio-1_1 is out")));
        assert!(
            !r.reasoning.iter().any(|l| l.contains("margin")),
            "0.4 apart: no noise"
        );
        let close = [
            result("ratio-1_1", 2.2, 3.1, 3.0),
            result("ratio-1_3", 2.2005, 3.05, 3.0),
        ];
        let r = recommend(&close, 0.05);
        assert_eq!(r.chosen.as_deref(), Some("ratio-1_1"));
        assert!(r
            .reasoning
            .iter()
            .any(|l| l.contains("margin over ratio-1_3")));
        // A wider tolerance admits 1:1.
        assert_eq!(
            recommend(&points, 0.10).chosen.as_deref(),
            Some("ratio-1_1")
        );
        // None within: nothing chosen, the least forgetting named.
        let r = recommend(&points[..2], 0.01);
        assert_eq!(r.chosen, None);
        assert!(r
            .reasoning
            .iter()
            .any(|l| l.contains("least forgetting is ratio-1_3")));
    }
}
