//! Ablations: from mix to outcome. For each point of a grid of mixes (ratios, optionally source
//! budgets and filler smoothing) the pipeline runs with that mix, the model of the train file
//! trains on its shards, and the base and the trained model are evaluated on held-out domain
//! and general sets; then a point is recommended ([`recommend`]).
//!
//! Held-out sets never enter a mix: the pipeline's `split` stage tags them (near-duplicate
//! clusters kept whole after `minhash`), its `mix` stage holds them out (`holdout`) and writes
//! them into one split per pool (`holdout_split_by_pool`: `test_domain`, `test_general`). Every
//! point runs the same inputs and stages before the mix, so every point is evaluated on the
//! same held-out samples.
//!
//! Each point lives in `<output>/points/<label>/` (`run/` the pipeline's output, `train/` the
//! trainer's, `result.json`); a point whose `result.json` matches the configuration is not run
//! again, and an interrupted training resumes from its checkpoint. Who runs an ablation (the
//! `sluice ablate` command, the service) says through a [`Host`] how a pipeline is compiled
//! (the service confines it), where the train file's paths lie, and when to stop.

mod recommend;
pub mod report;
mod run;

pub use recommend::{recommend, Recommendation};
pub use run::{Ablation, Host, Outcome, PointStatus, Stopped};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most grid points one ablation may ask for.
pub const MAX_POINTS: usize = 64;

/// What an ablation varies and how it judges: everything but where its files are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Name in reports.
    #[serde(default)]
    pub name: Option<String>,
    /// The held-out split the points are evaluated on (its `_domain` and `_general` parts).
    #[serde(default = "default_eval_split")]
    pub eval_split: String,
    /// Largest relative rise of the general loss over the base model's that a recommended point
    /// may have (0.05: 5%).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Held-out sequences evaluated per set (0: all).
    #[serde(default)]
    pub eval_sequences: usize,
    /// The grid: every combination of the values given.
    pub grid: Grid,
    /// An evaluation folder of `sluice eval build`: each trained point is also scored on it
    /// (likelihood, multiple-choice accuracy, BLEU-4, ROUGE-L, EM, F1).
    #[serde(default)]
    pub eval_set: Option<std::path::PathBuf>,
    /// Items per evaluation file scored (default 50; 0: all).
    #[serde(default = "default_eval_limit")]
    pub eval_limit: usize,
    /// Longest greedy generation per open item, in tokens (default 32; 0: none).
    #[serde(default = "default_eval_max_new_tokens")]
    pub eval_max_new_tokens: usize,
}

fn default_eval_limit() -> usize {
    50
}
fn default_eval_max_new_tokens() -> usize {
    32
}

fn default_eval_split() -> String {
    "test".into()
}
fn default_tolerance() -> f64 {
    0.05
}

/// Values to try.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// The mix stage's `ratio` ("1:3", or a share).
    pub ratio: Vec<String>,
    /// The `truncate` stage's `max_source_tokens`.
    #[serde(default)]
    pub max_source_tokens: Vec<usize>,
    /// With (`true`) or without (`false`) the `filler` stage.
    #[serde(default)]
    pub filler: Vec<bool>,
}

impl Settings {
    /// The defaults around a grid: split `test`, tolerance 5%, every held-out sequence.
    pub fn new(grid: Grid) -> Settings {
        Settings {
            name: None,
            eval_split: default_eval_split(),
            tolerance: default_tolerance(),
            eval_sequences: 0,
            grid,
            eval_set: None,
            eval_limit: default_eval_limit(),
            eval_max_new_tokens: default_eval_max_new_tokens(),
        }
    }

    /// Every problem with the values, at once (empty: fine). `max_points` bounds the grid.
    pub fn problems(&self, max_points: usize) -> Vec<String> {
        let mut problems = Vec::new();
        if self.grid.ratio.is_empty() {
            problems.push("grid.ratio: give at least one ratio".to_string());
        }
        for r in &self.grid.ratio {
            if let Err(e) = sluice_pipeline::mix::Ratio::parse(r) {
                problems.push(format!("grid.ratio {r:?}: {e}"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for r in &self.grid.ratio {
            // `1:1` and `1 : 1` are one point (one folder): asked twice, it would run once.
            let key: String = r.chars().filter(|c| !c.is_whitespace()).collect();
            if !seen.insert(key) {
                problems.push(format!("grid.ratio {r:?} is given twice"));
            }
        }
        for (name, dup) in [
            (
                "max_source_tokens",
                (1..self.grid.max_source_tokens.len()).any(|i| {
                    self.grid.max_source_tokens[..i].contains(&self.grid.max_source_tokens[i])
                }),
            ),
            (
                "filler",
                (1..self.grid.filler.len())
                    .any(|i| self.grid.filler[..i].contains(&self.grid.filler[i])),
            ),
        ] {
            if dup {
                problems.push(format!("grid.{name}: a value is given twice"));
            }
        }
        if self.grid.max_source_tokens.contains(&0) {
            problems.push("grid.max_source_tokens: budgets must be positive".into());
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            problems.push(format!(
                "tolerance {} must be a share of at least 0",
                self.tolerance
            ));
        }
        if self.eval_split.is_empty()
            || self.eval_split.len() > 64
            || !self
                .eval_split
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            problems.push(format!(
                "eval_split {:?} is not a split name (letters, digits, _ and -)",
                self.eval_split
            ));
        }
        if self.eval_max_new_tokens > 4096 {
            problems.push(format!(
                "eval_max_new_tokens {} is more than 4096",
                self.eval_max_new_tokens
            ));
        }
        // Counted without building the grid: a hostile grid may multiply to anything.
        let n = self
            .grid
            .ratio
            .len()
            .saturating_mul(self.grid.max_source_tokens.len().max(1))
            .saturating_mul(self.grid.filler.len().max(1));
        if n > max_points {
            problems.push(format!("the grid has {n} points; at most {max_points}"));
        }
        problems
    }

    /// Every combination, ratios outermost.
    pub fn points(&self) -> Vec<Point> {
        let sources: Vec<Option<usize>> = if self.grid.max_source_tokens.is_empty() {
            vec![None]
        } else {
            self.grid
                .max_source_tokens
                .iter()
                .copied()
                .map(Some)
                .collect()
        };
        let fillers: Vec<Option<bool>> = if self.grid.filler.is_empty() {
            vec![None]
        } else {
            self.grid.filler.iter().copied().map(Some).collect()
        };
        let mut out = Vec::new();
        for r in &self.grid.ratio {
            for &m in &sources {
                for &f in &fillers {
                    out.push(Point {
                        ratio: r.clone(),
                        max_source_tokens: m,
                        filler: f,
                    });
                }
            }
        }
        out
    }
}

/// One combination of grid values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The mix ratio.
    pub ratio: String,
    /// The source budget, when the grid varies it.
    pub max_source_tokens: Option<usize>,
    /// Filler smoothing on or off, when the grid varies it.
    pub filler: Option<bool>,
}

impl Point {
    /// A folder-safe label: `ratio-1_3`, `ratio-1_3_src-512_filler-off`.
    pub fn label(&self) -> String {
        let mut s = format!("ratio-{}", self.ratio);
        if let Some(m) = self.max_source_tokens {
            s.push_str(&format!("_src-{m}"));
        }
        if let Some(f) = self.filler {
            s.push_str(if f { "_filler-on" } else { "_filler-off" });
        }
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

/// What a point measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointResult {
    /// Folder name.
    pub label: String,
    /// The grid values.
    pub point: Point,
    /// Of the pipeline text, train file and evaluation settings: a changed file reruns the point.
    pub fingerprint: String,
    /// Mean loss per trained token on the held-out domain set, after training.
    pub domain_loss: f64,
    /// The same on the held-out general set.
    pub general_loss: f64,
    /// Before training.
    pub base_domain_loss: f64,
    /// Before training.
    pub base_general_loss: f64,
    /// `general_loss − base_general_loss`: positive when general ability was lost.
    pub forgetting: f64,
    /// `forgetting / base_general_loss`.
    pub forgetting_share: f64,
    /// Samples the mix selected per pool (copies included).
    pub mixed_samples: BTreeMap<String, u64>,
    /// Tokens trained on.
    pub tokens_seen: u64,
    /// Optimizer steps.
    pub steps: u64,
    /// Seconds in the pipeline.
    pub pipeline_seconds: f64,
    /// Seconds training and evaluating.
    pub train_seconds: f64,
    /// Scores of the trained model on the ablation's evaluation set, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<crate::eval::run::Group>,
}

/// The pipeline text of one point: the mix's ratio set, the truncate budget set, the filler
/// stage removed when off. Checks that the pipeline holds its evaluation sets out.
pub fn point_pipeline(text: &str, point: &Point) -> Result<String> {
    let mut doc: toml::Table = toml::from_str(text).context("parsing the pipeline")?;
    let has_shards = doc
        .get("output")
        .and_then(|o| o.get("shards"))
        .is_some_and(|s| s.is_table());
    if !has_shards {
        bail!("the pipeline has no [output.shards]: the points train on its shards");
    }
    // The shards writer truncates too: with the budget varied, it follows the grid's value
    // (else a 1,024-token point would be cut again to the writer's budget).
    if let (Some(budget), Some(shards)) = (
        point.max_source_tokens,
        doc.get_mut("output")
            .and_then(|o| o.get_mut("shards"))
            .and_then(|s| s.as_table_mut()),
    ) {
        shards.insert(
            "max_source_tokens".into(),
            toml::Value::Integer(i64::try_from(budget).context("max_source_tokens")?),
        );
    }
    let Some(stages) = doc.get_mut("stages").and_then(|s| s.as_array_mut()) else {
        bail!("the pipeline has no [[stages]]");
    };
    let kind = |s: &toml::Value| s.get("type").and_then(|t| t.as_str()).map(str::to_string);
    let find = |stages: &[toml::Value], name: &str| -> Result<usize> {
        let hits: Vec<usize> = stages
            .iter()
            .enumerate()
            .filter(|(_, s)| kind(s).as_deref() == Some(name))
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [i] => Ok(*i),
            [] => bail!("the pipeline has no {name} stage, which the grid varies"),
            _ => bail!(
                "the pipeline has {} {name} stages; the grid needs one",
                hits.len()
            ),
        }
    };
    let mix = find(stages, "mix")?;
    {
        let m = stages[mix]
            .as_table_mut()
            .context("the mix stage is not a table")?;
        if !m.get("holdout").is_some_and(|h| h.is_str()) {
            bail!(
                "the mix stage needs `holdout` (e.g. \"split <> 'train'\", after a split stage) \
                 so the evaluation sets stay out of every mix"
            );
        }
        if m.get("holdout_split_by_pool").and_then(|v| v.as_bool()) != Some(true) {
            bail!(
                "the mix stage needs `holdout_split_by_pool = true`: the points are evaluated on \
                 the held-out domain and general sets apart"
            );
        }
        m.insert("ratio".into(), toml::Value::String(point.ratio.clone()));
    }
    if let Some(budget) = point.max_source_tokens {
        let t = find(stages, "truncate")?;
        if let Some(t) = stages[t].as_table_mut() {
            t.insert(
                "max_source_tokens".into(),
                toml::Value::Integer(i64::try_from(budget).context("max_source_tokens")?),
            );
        }
    }
    if point.filler == Some(false) {
        let f = find(stages, "filler")?;
        stages.remove(f);
    } else if point.filler == Some(true) {
        find(stages, "filler")?;
    }
    Ok(toml::to_string(&doc)?)
}

/// The pipeline makes the evaluation split: a `split` stage whose ratios name it. Returns a
/// warning when no `minhash` (`drop = false`) runs before it: near duplicates may then straddle
/// the training and held-out sets (said, not refused).
pub fn check_split(text: &str, eval_split: &str) -> Result<Option<String>> {
    let doc: toml::Table = toml::from_str(text).context("parsing the pipeline")?;
    let stages: Vec<&toml::Value> = doc
        .get("stages")
        .and_then(|s| s.as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    fn kind(s: &toml::Value) -> &str {
        s.get("type").and_then(|t| t.as_str()).unwrap_or("")
    }
    let Some(split_at) = stages.iter().position(|s| kind(s) == "split") else {
        bail!(
            "no split stage: the held-out {eval_split:?} split comes from a split stage \
             (ratios = {{ train = 0.8, {eval_split} = 0.2 }})"
        );
    };
    let names: Vec<String> = stages[split_at]
        .get("ratios")
        .and_then(|r| r.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    if !names.iter().any(|n| n == eval_split) {
        bail!(
            "the split stage makes {names:?}, not the evaluation split {eval_split:?} \
             (eval_split of the ablation)"
        );
    }
    let clustered = stages[..split_at]
        .iter()
        .any(|s| kind(s) == "minhash" && s.get("drop").and_then(|d| d.as_bool()) == Some(false));
    Ok((!clustered).then(|| {
        "no minhash stage with drop = false before the split: near duplicates may land in both \
         the training and the held-out split"
            .to_string()
    }))
}

/// FNV-1a over the parts, as 16 hex digits (stable across builds and platforms).
fn fingerprint(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_cover_the_grid_and_labels_are_folder_safe() {
        let f: Settings = toml::from_str(
            "[grid]\nratio = [\"1:1\", \"0.2\"]\n\
             max_source_tokens = [512, 1024]\nfiller = [true, false]\n",
        )
        .expect("parses");
        let points = f.points();
        assert_eq!(points.len(), 8);
        assert_eq!(points[0].label(), "ratio-1_1_src-512_filler-on");
        assert_eq!(points[7].label(), "ratio-0.2_src-1024_filler-off");
        assert!(points.iter().all(|p| !p.label().contains(['/', ':', ' '])));
    }

    #[test]
    fn a_point_sets_the_mix_and_refuses_a_pipeline_without_held_out_sets() {
        let pipeline = r#"
[[inputs]]
name = "a"
paths = ["a.jsonl"]
[[stages]]
type = "filler"
[[stages]]
type = "truncate"
max_source_tokens = 2048
[[stages]]
type = "mix"
ratio = "1:5"
holdout = "split <> 'train'"
holdout_split_by_pool = true
[output]
dir = "out"
[output.shards]
tokenizer = "t.json"
"#;
        let p = Point {
            ratio: "1:3".into(),
            max_source_tokens: Some(512),
            filler: Some(false),
        };
        let text = point_pipeline(pipeline, &p).expect("point");
        let doc: toml::Table = toml::from_str(&text).expect("toml");
        let stages = doc["stages"].as_array().expect("stages");
        assert_eq!(stages.len(), 2, "filler removed");
        assert_eq!(stages[0]["max_source_tokens"].as_integer(), Some(512));
        assert_eq!(
            doc["output"]["shards"]["max_source_tokens"].as_integer(),
            Some(512),
            "the shards writer follows the grid's budget"
        );
        assert_eq!(stages[1]["ratio"].as_str(), Some("1:3"));
        let no_holdout = pipeline.replace("holdout = \"split <> 'train'\"\n", "");
        let err = point_pipeline(&no_holdout, &p)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("holdout"), "{err}");
        let no_shards = pipeline.replace("[output.shards]\ntokenizer = \"t.json\"\n", "");
        let err = point_pipeline(&no_shards, &p)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("[output.shards]"), "{err}");
    }
}
