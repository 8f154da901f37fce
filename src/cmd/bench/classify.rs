//! `sluice bench classify`: classifier prediction throughput.

use crate::cmd::classifier::{load_labelled, LabelledData};
use anyhow::{bail, Result};
use sluice_pipeline::classifier;
use std::io::Write;

pub fn bench_classify(data: &LabelledData, model: &std::path::Path, repeat: usize) -> Result<()> {
    let model = classifier::Model::load(model)?;
    let (examples, _) = load_labelled(data)?;
    if examples.is_empty() {
        bail!("{}: no examples", data.input.display());
    }
    let mut scratch = String::new();
    let (mut best_feat, mut best_pred) = (f64::MAX, f64::MAX);
    let mut sink = 0usize;
    for _ in 0..repeat {
        let t = std::time::Instant::now();
        for (text, _) in &examples {
            classifier::featurize(text, classifier::Features::Chars, &mut scratch);
            sink += scratch.len();
        }
        best_feat = best_feat.min(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        for (text, _) in &examples {
            sink += model.predict_all(text, &mut scratch).len();
        }
        best_pred = best_pred.min(t.elapsed().as_secs_f64());
    }
    let n = examples.len() as f64;
    let chars: usize = examples.iter().map(|(t, _)| t.chars().count()).sum();
    writeln!(
        std::io::stdout(),
        "{} texts (avg {:.0} chars), one core, best of {repeat}:\n  featurize only:       {:>10.0} texts/s\n  featurize + predict:  {:>10.0} texts/s  ({:.1}% of the time is featurization)\n  (checksum {sink})",
        examples.len(),
        chars as f64 / n,
        n / best_feat,
        n / best_pred,
        100.0 * best_feat / best_pred
    )?;
    Ok(())
}
