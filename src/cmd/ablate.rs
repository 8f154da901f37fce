//! `sluice ablate run ABLATE.toml`: from mix to outcome. For each point of a grid of mixes
//! (ratios, optionally source budgets and filler smoothing) it runs the pipeline with that mix,
//! trains the model the train file describes on the shards, and evaluates the base and the
//! trained model on held-out domain and general sets; then it recommends a point.
//!
//! Held-out sets never enter a mix: the pipeline's `split` stage tags them (near-duplicate
//! clusters kept whole after `minhash`), its `mix` stage holds them out (`holdout`) and writes
//! them into one split per pool (`holdout_split_by_pool`: `test_domain`, `test_general`). Every
//! point runs the same inputs and stages before the mix, so every point is evaluated on the
//! same held-out samples.
//!
//! Each point lives in `<output>/points/<label>/` (`run/` the pipeline's output, `train/` the
//! trainer's, `base.json`, `result.json`); a point whose `result.json` matches the configuration
//! is not run again, and an interrupted training resumes from its checkpoint.

mod report;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sluice_pipeline::engine;
use sluice_trainer::{TrainConfig, Trainer};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `sluice ablate` subcommands.
#[derive(clap::Subcommand)]
pub enum AblateCommand {
    /// Run every grid point (mix, train, evaluate; finished points are kept) and recommend one.
    Run {
        /// The ablation file.
        config: PathBuf,
    },
    /// Check an ablation file and list its points and what each has done, running nothing.
    Plan {
        /// The ablation file.
        config: PathBuf,
    },
}

/// Most grid points one file may ask for.
const MAX_POINTS: usize = 64;

/// A domain-loss margin below this share of the loss is called noise in the reasoning.
const NOISE: f64 = 0.005;

/// The ablation file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AblateFile {
    /// Name in reports (default: the file's stem).
    #[serde(default)]
    pub name: Option<String>,
    /// Where the points and results go.
    pub output: PathBuf,
    /// The pipeline file: a `split` stage, a `mix` stage with `holdout` and
    /// `holdout_split_by_pool = true`, and `[output.shards]`.
    pub pipeline: PathBuf,
    /// The train file (model, optimizer, steps, seed); its output and shards are set per point.
    pub train: PathBuf,
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
}

fn default_eval_split() -> String {
    "test".into()
}
fn default_tolerance() -> f64 {
    0.05
}

/// Values to try.
#[derive(Debug, Clone, Deserialize)]
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
}

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

impl AblateFile {
    /// Load and check an ablation file; paths become relative to its folder.
    pub fn load(path: &Path) -> Result<AblateFile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut f: AblateFile =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut f.output, &mut f.pipeline, &mut f.train] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if f.name.is_none() {
            f.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        let mut problems = Vec::new();
        if f.grid.ratio.is_empty() {
            problems.push("grid.ratio: give at least one ratio".to_string());
        }
        for r in &f.grid.ratio {
            if let Err(e) = sluice_pipeline::mix::Ratio::parse(r) {
                problems.push(format!("grid.ratio {r:?}: {e}"));
            }
        }
        if f.grid.max_source_tokens.contains(&0) {
            problems.push("grid.max_source_tokens: budgets must be positive".into());
        }
        if !(f.tolerance.is_finite() && f.tolerance >= 0.0) {
            problems.push(format!(
                "tolerance {} must be a share of at least 0",
                f.tolerance
            ));
        }
        if f.eval_split.is_empty() || f.eval_split.contains(['/', '\\']) {
            problems.push(format!("eval_split {:?} is not a split name", f.eval_split));
        }
        let n = f.points().len();
        if n > MAX_POINTS {
            problems.push(format!("the grid has {n} points; at most {MAX_POINTS}"));
        }
        if !problems.is_empty() {
            bail!("{}: {}", path.display(), problems.join("; "));
        }
        Ok(f)
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

/// `p` made absolute and cleaned of `.` and `..` without touching the file system (the folder
/// need not exist yet).
fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    out
}

/// The pipeline makes the evaluation split: a `split` stage whose ratios name it. Without
/// `minhash` (`drop = false`) before it, near duplicates may straddle train and held-out sets:
/// said, not refused.
fn check_split(text: &str, eval_split: &str) -> Result<()> {
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
             (eval_split in the ablation file)"
        );
    }
    let clustered = stages[..split_at]
        .iter()
        .any(|s| kind(s) == "minhash" && s.get("drop").and_then(|d| d.as_bool()) == Some(false));
    if !clustered {
        eprintln!(
            "warning: no minhash stage with drop = false before the split: near duplicates may \
             land in both the training and the held-out split"
        );
    }
    Ok(())
}

/// A point's pipeline text and what it depends on.
struct PointPlan {
    /// The pipeline with the point's values.
    text: String,
    /// Of the mix: the pipeline text alone.
    pipeline_print: String,
    /// Of the whole point: the mix, the train file and the evaluation settings.
    print: String,
}

fn plan_point(
    f: &AblateFile,
    point: &Point,
    pipeline_text: &str,
    train_text: &str,
) -> Result<PointPlan> {
    let text = point_pipeline(pipeline_text, point)?;
    let eval = format!("{}:{}", f.eval_split, f.eval_sequences);
    let pipeline_print = fingerprint(&[&text]);
    let print = fingerprint(&[&pipeline_print, train_text, &eval]);
    Ok(PointPlan {
        text,
        pipeline_print,
        print,
    })
}

/// The point's result, when it ran with exactly this configuration.
fn finished(f: &AblateFile, point: &Point, print: &str) -> Option<PointResult> {
    let path = f
        .output
        .join("points")
        .join(point.label())
        .join("result.json");
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<PointResult>(&b).ok())
        .filter(|r| r.fingerprint == print)
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

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    sluice_pipeline::storage::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// The base model's held-out losses (`base.json` of a point's training).
#[derive(Debug, Serialize, Deserialize)]
struct BaseLosses {
    domain: f64,
    general: f64,
}

/// The train file, its errors named as the ablation's `train`.
fn load_train(path: &Path) -> Result<TrainConfig> {
    TrainConfig::load(path).with_context(|| format!("train = {}", path.display()))
}

/// Losses of the model as it is now on the two held-out sets.
fn evaluate(t: &mut Trainer, split: &str, cap: usize) -> Result<(f64, f64)> {
    Ok((
        t.evaluate(&format!("{split}_domain"), cap)?,
        t.evaluate(&format!("{split}_general"), cap)?,
    ))
}

/// Run one point (or read its result when it is done).
fn run_point(
    f: &AblateFile,
    point: &Point,
    pipeline_text: &str,
    train_text: &str,
) -> Result<PointResult> {
    let label = point.label();
    let dir = f.output.join("points").join(&label);
    let PointPlan {
        text,
        pipeline_print,
        print,
    } = plan_point(f, point, pipeline_text, train_text)?;
    let result_path = dir.join("result.json");
    let base_path = dir.join("base.json");
    if let Some(done) = finished(f, point, &print) {
        eprintln!("{label}: done earlier, kept ({})", result_path.display());
        return Ok(done);
    }
    if result_path.exists() {
        eprintln!("{label}: its files changed since it ran; running it again");
    }
    // Whatever runs now, an older result must not outlive it.
    #[allow(clippy::disallowed_methods)] // the point's own folder
    for stale in [&result_path, &base_path] {
        if stale.exists() {
            std::fs::remove_file(stale)?;
        }
    }
    #[allow(clippy::disallowed_methods)]
    std::fs::create_dir_all(&dir)?;
    // The pipeline: skipped when its shards are there for this very text.
    let run_dir = dir.join("run");
    let train_dir = dir.join("train");
    let print_path = dir.join("pipeline.fingerprint");
    let train_print_path = dir.join("train.fingerprint");
    let started = std::time::Instant::now();
    let built = std::fs::read_to_string(&print_path).is_ok_and(|p| p.trim() == pipeline_print)
        && run_dir.join("shards/manifest.json").is_file();
    // A training for other shards or another train file is not resumed.
    let trained_for_this =
        built && std::fs::read_to_string(&train_print_path).is_ok_and(|p| p.trim() == print);
    if !trained_for_this && train_dir.exists() {
        #[allow(clippy::disallowed_methods)]
        std::fs::remove_dir_all(&train_dir)?;
    }
    let mut mixed_samples = BTreeMap::new();
    if !built {
        eprintln!("{label}: building the mix");
        let plan = sluice_pipeline::config::parse(&text, &f.pipeline)
            .with_context(|| format!("{label}: the pipeline"))?;
        let report = engine::run(
            &plan,
            engine::RunOptions {
                output_dir: Some(run_dir.clone()),
                ..Default::default()
            },
        )
        .with_context(|| format!("{label}: running the pipeline"))?;
        sluice_pipeline::storage::write_atomic(&print_path, pipeline_print.as_bytes())?;
        eprint!("{}", report.summary());
    }
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run_dir.join("report.json")).context("the point's report.json")?,
    )?;
    if let Some(rows) = report["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["type"] == "mix"))
        .and_then(|m| m["details"]["achieved"].as_array())
    {
        for r in rows {
            if let (Some(p), Some(n)) = (r["pool"].as_str(), r["samples"].as_u64()) {
                mixed_samples.insert(p.to_string(), n);
            }
        }
    }
    let pipeline_seconds = started.elapsed().as_secs_f64();
    let shards = run_dir.join("shards");
    let manifest = sluice_shards::Manifest::load(&shards)?;
    for part in ["domain", "general"] {
        let split = format!("{}_{part}", f.eval_split);
        if !manifest.splits.contains_key(&split) {
            bail!(
                "{label}: the shards have no split {split:?} (they have {:?}): the held-out \
                 samples of that pool are missing — does the split stage make a {:?} split, and \
                 does the pool have data?",
                manifest.splits.keys().collect::<Vec<_>>(),
                f.eval_split
            );
        }
    }
    // Training: resumed when an earlier attempt at this very training left a checkpoint.
    let started = std::time::Instant::now();
    let mut cfg = load_train(&f.train)?;
    cfg.output = train_dir.clone();
    cfg.data.shards = shards;
    cfg.data.train_split = "train".into();
    if cfg.train.checkpoint_every == 0 {
        // So an interrupted point resumes: a checkpoint every fifth of the run, the last kept.
        cfg.train.checkpoint_every = (cfg.train.steps / 5).max(1);
        cfg.train.keep_checkpoints = 1;
    }
    let resume = sluice_trainer::checkpoint::latest(&cfg.output)?.is_some();
    sluice_pipeline::storage::write_atomic(&train_print_path, print.as_bytes())?;
    let mut t = Trainer::new(cfg, resume).with_context(|| format!("{label}: the train file"))?;
    // The base model's losses, before any step (kept beside a resumable training).
    let base_path = train_dir.join("base.json");
    let (base_domain_loss, base_general_loss) = match (resume, std::fs::read(&base_path)) {
        (true, Ok(bytes)) => {
            let b: BaseLosses = serde_json::from_slice(&bytes)?;
            (b.domain, b.general)
        }
        _ => {
            let (domain, general) = evaluate(&mut t, &f.eval_split, f.eval_sequences)?;
            write_json(&base_path, &BaseLosses { domain, general })?;
            (domain, general)
        }
    };
    let steps = t.config().train.steps;
    let from = t.state().step;
    eprintln!(
        "{label}: training {steps} steps{} (base model: domain loss {base_domain_loss:.4}, \
         general {base_general_loss:.4})",
        if from > 0 {
            format!(", resuming from step {from}")
        } else {
            String::new()
        }
    );
    let every = (steps / 10).max(1);
    let tag = label.clone();
    t.on_step(Box::new(move |p: &sluice_trainer::StepProgress| {
        if p.step.is_multiple_of(every) || p.step == p.stop {
            eprintln!(
                "{tag}: step {}/{}  loss {:.4}  {:.0} tokens/s  eta {:.0}s",
                p.step, p.stop, p.loss, p.tokens_per_s, p.eta_s
            );
        }
    }));
    let summary = t.run()?;
    let (domain_loss, general_loss) = evaluate(&mut t, &f.eval_split, f.eval_sequences)?;
    let forgetting = general_loss - base_general_loss;
    let result = PointResult {
        label: label.clone(),
        point: point.clone(),
        fingerprint: print,
        domain_loss,
        general_loss,
        base_domain_loss,
        base_general_loss,
        forgetting,
        forgetting_share: forgetting / base_general_loss.max(1e-12),
        mixed_samples,
        tokens_seen: t.state().tokens_seen,
        steps: summary.steps,
        pipeline_seconds,
        train_seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&result_path, &result)?;
    Ok(result)
}

/// The file, its pipeline and train texts, and its points, every point's pipeline checked.
fn prepare(config: &Path) -> Result<(AblateFile, String, String, Vec<Point>)> {
    let f = AblateFile::load(config)?;
    let pipeline_text = std::fs::read_to_string(&f.pipeline)
        .with_context(|| format!("pipeline = {}", f.pipeline.display()))?;
    let train_text = std::fs::read_to_string(&f.train)
        .with_context(|| format!("train = {}", f.train.display()))?;
    let points = f.points();
    for p in &points {
        let text = point_pipeline(&pipeline_text, p)
            .with_context(|| format!("pipeline = {}", f.pipeline.display()))?;
        sluice_pipeline::config::parse(&text, &f.pipeline)
            .with_context(|| format!("pipeline = {} with {}", f.pipeline.display(), p.label()))?;
    }
    check_split(&pipeline_text, &f.eval_split)
        .with_context(|| format!("pipeline = {}", f.pipeline.display()))?;
    let train = load_train(&f.train)?;
    // A point that runs again clears its training folder: the model must not live there.
    let points_dir = absolute(&f.output.join("points"));
    for (key, path) in [
        ("model.weights", train.model.weights.as_ref()),
        ("model.config", train.model.config.as_ref()),
    ] {
        if let Some(path) = path {
            if absolute(path).starts_with(&points_dir) {
                bail!(
                    "train = {}: {key} {} lies inside this ablation's points ({}), which a rerun \
                     clears; copy the model elsewhere or give the ablation another output",
                    f.train.display(),
                    path.display(),
                    points_dir.display()
                );
            }
        }
    }
    Ok((f, pipeline_text, train_text, points))
}

/// Run a `sluice ablate` subcommand.
pub fn run(cmd: AblateCommand) -> Result<ExitCode> {
    let config = match cmd {
        AblateCommand::Run { config } => config,
        AblateCommand::Plan { config } => {
            let (f, pipeline_text, train_text, points) = prepare(&config)?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{} points; each: {}, then {}; evaluated on {}_domain and {}_general",
                points.len(),
                f.pipeline.display(),
                f.train.display(),
                f.eval_split,
                f.eval_split
            )?;
            for p in &points {
                let print = plan_point(&f, p, &pipeline_text, &train_text)?.print;
                let done = finished(&f, p, &print).is_some();
                writeln!(
                    out,
                    "  {:<32} {}",
                    p.label(),
                    if done { "done" } else { "to run" }
                )?;
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let (f, pipeline_text, train_text, points) = prepare(&config)?;
    let mut results = Vec::new();
    for (i, p) in points.iter().enumerate() {
        eprintln!("point {} of {}: {}", i + 1, points.len(), p.label());
        results.push(run_point(&f, p, &pipeline_text, &train_text)?);
    }
    let rec = recommend(&results, f.tolerance);
    write_json(
        &f.output.join("results.json"),
        &serde_json::json!({
            "name": f.name,
            "eval_split": f.eval_split,
            "tolerance": f.tolerance,
            "points": results,
            "recommendation": rec,
        }),
    )?;
    let name = f.name.clone().unwrap_or_default();
    sluice_pipeline::storage::write_atomic(
        &f.output.join("report.html"),
        report::html(&name, &results, &rec, f.tolerance).as_bytes(),
    )?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<28} {:>11} {:>12} {:>11} {:>12} {:>9} {:>8}",
        "point", "domain loss", "general loss", "forgetting", "mix d/g", "tokens", "time s"
    )?;
    for r in &results {
        writeln!(
            out,
            "{:<28} {:>11.4} {:>12.4} {:>+10.1}% {:>12} {:>9} {:>8.0}",
            r.label,
            r.domain_loss,
            r.general_loss,
            r.forgetting_share * 100.0,
            format!(
                "{}/{}",
                r.mixed_samples.get("domain").copied().unwrap_or(0),
                r.mixed_samples.get("general").copied().unwrap_or(0)
            ),
            r.tokens_seen,
            r.pipeline_seconds + r.train_seconds
        )?;
    }
    if let Some(first) = results.first() {
        writeln!(
            out,
            "base model: domain loss {:.4}, general loss {:.4}",
            first.base_domain_loss, first.base_general_loss
        )?;
    }
    match &rec.chosen {
        Some(c) => writeln!(out, "recommended: {c}")?,
        None => writeln!(out, "recommended: none")?,
    }
    for line in &rec.reasoning {
        writeln!(out, "  {line}")?;
    }
    writeln!(
        out,
        "results in {} and {}",
        f.output.join("results.json").display(),
        f.output.join("report.html").display()
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn points_cover_the_grid_and_labels_are_folder_safe() {
        let f: AblateFile = toml::from_str(
            "output = \"o\"\npipeline = \"p\"\ntrain = \"t\"\n[grid]\nratio = [\"1:1\", \"0.2\"]\n\
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
