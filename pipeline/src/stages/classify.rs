//! `classify`: run a fastText model (trained by `sluice classifier train`, or an official `.bin`)
//! over each sample, write the top label and its probability as tags, and drop samples whose
//! probability for a listed label reaches a threshold.

use super::{DropReason, RecordStage, StageCx, Verdict};
use crate::classifier::Model;
use crate::sample::{Role, Sample};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Config of `type = "classify"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The model file, relative to the pipeline file.
    pub model: PathBuf,
    /// What is classified: `all` content (default), `user` turns, `assistant` turns, or `text`.
    #[serde(default)]
    pub field: Field,
    /// Tag prefix (default `classifier`): tags `<tag>_label` and `<tag>_score`.
    #[serde(default = "default_tag")]
    pub tag: String,
    /// Drop a sample when the probability of one of these labels is at least `threshold`.
    #[serde(default)]
    pub drop_labels: Vec<String>,
    /// Probability at which a listed label drops a sample (default 0.5).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
}

fn default_tag() -> String {
    "classifier".into()
}
fn default_threshold() -> f64 {
    0.5
}

/// Which content the model sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// System, every turn and text, joined by newlines.
    #[default]
    All,
    /// User-side turns (user, observation).
    User,
    /// Model-side turns (assistant, function_call).
    Assistant,
    /// Document text only.
    Text,
}

impl Config {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(0.0..=1.0).contains(&self.threshold) {
            out.push(format!(
                "threshold {} is not a probability between 0 and 1",
                self.threshold
            ));
        }
        if self.tag.trim().is_empty() {
            out.push("tag must not be empty".into());
        }
        if !self.model.is_file() {
            out.push(format!("model {}: no such file", self.model.display()));
        }
        out
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if self.model.is_relative() {
            self.model = crate::confine::resolve(base, &self.model);
        }
    }
}

/// The built stage: the model is loaded once and shared by every worker.
#[derive(Debug)]
pub struct Classify {
    cfg: Config,
    model: Model,
    label_tag: String,
    score_tag: String,
}

impl Classify {
    /// Load the model and check the configured labels against it.
    pub fn new(cfg: &Config) -> Result<Classify, crate::error::StageError> {
        let model = Model::load(&cfg.model).map_err(|e| e.to_string())?;
        let unknown: Vec<&String> = cfg
            .drop_labels
            .iter()
            .filter(|l| !model.labels().contains(l))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "drop_labels {unknown:?} are not labels of the model, which knows {:?}",
                model.labels()
            )
            .into());
        }
        Ok(Classify {
            label_tag: format!("{}_label", cfg.tag),
            score_tag: format!("{}_score", cfg.tag),
            cfg: cfg.clone(),
            model,
        })
    }

    fn text_of(&self, s: &Sample) -> String {
        let turns = |pick: fn(Role) -> bool| {
            s.turns
                .iter()
                .filter(|t| pick(t.role))
                .map(|t| t.content.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        };
        match self.cfg.field {
            Field::All => s
                .content_parts()
                .map(|(_, c)| c)
                .collect::<Vec<_>>()
                .join("\n"),
            Field::User => turns(|r| !r.is_model()),
            Field::Assistant => turns(Role::is_model),
            Field::Text => s.text.clone().unwrap_or_default(),
        }
    }
}

impl RecordStage for Classify {
    fn process(&self, mut sample: Sample, cx: &mut StageCx) -> Verdict {
        let text = self.text_of(&sample);
        let mut scratch = String::new();
        let preds = self.model.predict_all(&text, &mut scratch);
        let Some((best, p)) = preds.first() else {
            cx.count("no_prediction", 1);
            return Verdict::Drop(
                sample,
                DropReason::new(
                    "no_prediction",
                    "nothing to classify (empty text after featurization)",
                ),
            );
        };
        sample.tags.insert(self.label_tag.clone(), best.clone());
        sample
            .tags
            .insert(self.score_tag.clone(), format!("{p:.4}"));
        for (label, prob) in &preds {
            if f64::from(*prob) >= self.cfg.threshold && self.cfg.drop_labels.contains(label) {
                let detail = format!(
                    "label {label} p={prob:.4} >= threshold {}",
                    self.cfg.threshold
                );
                return Verdict::Drop(sample, DropReason::new("classified", detail));
            }
        }
        Verdict::Keep(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_typos_and_bad_thresholds() {
        assert!(toml::from_str::<Config>("model = \"m.bin\"\nthreshhold = 0.5").is_err());
        let c: Config =
            toml::from_str("model = \"/nonexistent/m.bin\"\nthreshold = 1.5").expect("parses");
        let problems = c.validate();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[1].contains("no such file"));
    }
}
