//! Running an ablation: each point mixed, trained and evaluated in its own folder, finished
//! points kept, an interrupted training resumed; then `results.json` and `report.html`.

use super::{fingerprint, point_pipeline, recommend, PointResult, Recommendation, Settings};
use crate::ablate::Point;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sluice_pipeline::{config::Plan, engine};
use sluice_trainer::{TrainConfig, Trainer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the caller decides: how a pipeline is compiled (the service confines it), what the
/// train file says (its paths resolved and checked), where progress goes and when to stop.
pub trait Host: Sync {
    /// Compile a point's pipeline text; its run writes `output`.
    fn compile(&self, text: &str, output: &Path) -> Result<Plan>;
    /// The train configuration; its `output` and `data.shards` are set per point.
    fn train_config(&self) -> Result<TrainConfig>;
    /// One line of progress.
    fn say(&self, line: &str);
    /// Set when the ablation must stop: the pipeline stops at its next batch, the training at
    /// its next step (leaving a checkpoint), and [`Ablation::run`] fails with [`Stopped`].
    fn stop_flag(&self) -> Option<Arc<AtomicBool>> {
        None
    }
    /// Threads of each pipeline run (None: all cores).
    fn threads(&self) -> Option<usize> {
        None
    }
    /// The evaluation folder the settings name, resolved (and, for a service, confined).
    fn eval_set(&self, named: &Path) -> Result<PathBuf> {
        Ok(named.to_path_buf())
    }
}

/// The error of an ablation stopped through [`Host::stop_flag`].
#[derive(Debug)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the ablation was stopped")
    }
}

impl std::error::Error for Stopped {}

/// One ablation: its settings, where it writes, and the texts it varies.
#[derive(Debug, Clone)]
pub struct Ablation {
    /// Grid, evaluation split, tolerance.
    pub settings: Settings,
    /// Where points, results and the report go.
    pub output: PathBuf,
    /// The base pipeline (TOML).
    pub pipeline_text: String,
    /// The train file (TOML): part of every point's fingerprint.
    pub train_text: String,
}

/// The results of a whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Every point, in grid order.
    pub points: Vec<PointResult>,
    /// The recommendation.
    pub recommendation: Recommendation,
}

/// A point and whether it has run with exactly this configuration.
#[derive(Debug, Clone, Serialize)]
pub struct PointStatus {
    /// Folder name.
    pub label: String,
    /// The grid values.
    pub point: Point,
    /// Its result, when done.
    pub result: Option<PointResult>,
}

/// The base model's held-out losses (`base.json` beside a point's training).
#[derive(Debug, Serialize, Deserialize)]
struct BaseLosses {
    domain: f64,
    general: f64,
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

/// `p` made absolute and cleaned of `.` and `..` without touching the file system (the folder
/// need not exist yet).
fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    sluice_pipeline::confine::lexical_normalize(&joined)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    sluice_pipeline::storage::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Losses of the model as it is now on the two held-out sets.
fn evaluate(t: &mut Trainer, split: &str, cap: usize) -> Result<(f64, f64)> {
    Ok((
        t.evaluate(&format!("{split}_domain"), cap)?,
        t.evaluate(&format!("{split}_general"), cap)?,
    ))
}

impl Ablation {
    /// The folder of one point.
    pub fn point_dir(&self, point: &Point) -> PathBuf {
        self.output.join("points").join(point.label())
    }

    fn plan_point(&self, point: &Point) -> Result<PointPlan> {
        let text = point_pipeline(&self.pipeline_text, point)?;
        let eval = format!(
            "{}:{}:{:?}:{}:{}",
            self.settings.eval_split,
            self.settings.eval_sequences,
            self.settings.eval_set,
            self.settings.eval_limit,
            self.settings.eval_max_new_tokens
        );
        let pipeline_print = fingerprint(&[&text]);
        let print = fingerprint(&[&pipeline_print, &self.train_text, &eval]);
        Ok(PointPlan {
            text,
            pipeline_print,
            print,
        })
    }

    /// The point's result, when it ran with exactly this configuration.
    fn finished(&self, point: &Point, print: &str) -> Option<PointResult> {
        std::fs::read(self.point_dir(point).join("result.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<PointResult>(&b).ok())
            .filter(|r| r.fingerprint == print)
    }

    /// Check everything before anything runs: every point's pipeline compiles (through the
    /// host), the pipeline makes the evaluation split, the train file loads and its model does
    /// not lie where a rerun clears. Returns warnings.
    pub fn check(&self, host: &dyn Host) -> Result<Vec<String>> {
        let problems = self.settings.problems(usize::MAX);
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        for p in self.settings.points() {
            let text = point_pipeline(&self.pipeline_text, &p).context("the pipeline")?;
            host.compile(&text, &self.point_dir(&p).join("run"))
                .with_context(|| format!("the pipeline with {}", p.label()))?;
        }
        let warnings: Vec<String> =
            super::check_split(&self.pipeline_text, &self.settings.eval_split)
                .context("the pipeline")?
                .into_iter()
                .collect();
        if let Some(set) = &self.settings.eval_set {
            let set = host.eval_set(set)?;
            if !set.join("open").is_dir() && !set.join("mc").is_dir() {
                bail!(
                    "eval_set {}: no open/ or mc/ folder (make it with `sluice eval build`)",
                    set.display()
                );
            }
        }
        let train = host.train_config()?;
        let points_dir = absolute(&self.output.join("points"));
        for (key, path) in [
            ("model.weights", train.model.weights.as_ref()),
            ("model.config", train.model.config.as_ref()),
        ] {
            if let Some(path) = path {
                if absolute(path).starts_with(&points_dir) {
                    bail!(
                        "the train file's {key} {} lies inside this ablation's points ({}), \
                         which a rerun clears; copy the model elsewhere or give the ablation \
                         another output",
                        path.display(),
                        points_dir.display()
                    );
                }
            }
        }
        Ok(warnings)
    }

    /// Every point and its result when it is done.
    pub fn status(&self) -> Result<Vec<PointStatus>> {
        self.settings
            .points()
            .into_iter()
            .map(|p| {
                let print = self.plan_point(&p)?.print;
                Ok(PointStatus {
                    label: p.label(),
                    result: self.finished(&p, &print),
                    point: p,
                })
            })
            .collect()
    }

    /// Run every point not done yet, recommend one, write `results.json` and `report.html`.
    pub fn run(&self, host: &dyn Host) -> Result<Outcome> {
        let points = self.settings.points();
        let mut results = Vec::new();
        for (i, p) in points.iter().enumerate() {
            host.say(&format!(
                "point {} of {}: {}",
                i + 1,
                points.len(),
                p.label()
            ));
            results.push(self.run_point(host, p)?);
        }
        let rec = recommend(&results, self.settings.tolerance);
        let name = self.settings.name.clone().unwrap_or_default();
        write_json(
            &self.output.join("results.json"),
            &serde_json::json!({
                "name": name,
                "eval_split": self.settings.eval_split,
                "tolerance": self.settings.tolerance,
                "points": results,
                "recommendation": rec,
            }),
        )?;
        sluice_pipeline::storage::write_atomic(
            &self.output.join("report.html"),
            super::report::html(&name, &results, &rec, self.settings.tolerance).as_bytes(),
        )?;
        Ok(Outcome {
            points: results,
            recommendation: rec,
        })
    }

    /// Run one point (or read its result when it is done).
    fn run_point(&self, host: &dyn Host, point: &Point) -> Result<PointResult> {
        let stopped = || host.stop_flag().is_some_and(|f| f.load(Ordering::SeqCst));
        let label = point.label();
        let dir = self.point_dir(point);
        let PointPlan {
            text,
            pipeline_print,
            print,
        } = self.plan_point(point)?;
        let result_path = dir.join("result.json");
        if let Some(done) = self.finished(point, &print) {
            host.say(&format!("{label}: done earlier, kept"));
            return Ok(done);
        }
        if result_path.exists() {
            host.say(&format!(
                "{label}: its files changed since it ran; running it again"
            ));
        }
        // Whatever runs now, an older result must not outlive it.
        #[allow(clippy::disallowed_methods)] // the point's own folder
        if result_path.exists() {
            std::fs::remove_file(&result_path)?;
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
        if !built {
            host.say(&format!("{label}: building the mix"));
            let plan = host
                .compile(&text, &run_dir)
                .with_context(|| format!("{label}: the pipeline"))?;
            let report = engine::run(
                &plan,
                engine::RunOptions {
                    output_dir: Some(run_dir.clone()),
                    threads: host.threads(),
                    cancel: host.stop_flag(),
                    ..Default::default()
                },
            );
            let report = match report {
                Err(sluice_pipeline::Error::Cancelled) if stopped() => return Err(Stopped.into()),
                r => r.with_context(|| format!("{label}: running the pipeline"))?,
            };
            sluice_pipeline::storage::write_atomic(&print_path, pipeline_print.as_bytes())?;
            for line in report.summary().lines() {
                host.say(line);
            }
        }
        let report: serde_json::Value = serde_json::from_slice(
            &std::fs::read(run_dir.join("report.json")).context("the point's report.json")?,
        )?;
        let mut mixed_samples = BTreeMap::new();
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
        let shards_dir = shards.clone();
        let manifest = sluice_shards::Manifest::load(&shards)?;
        let eval_split = &self.settings.eval_split;
        for part in ["domain", "general"] {
            let split = format!("{eval_split}_{part}");
            if !manifest.splits.contains_key(&split) {
                bail!(
                    "{label}: the shards have no split {split:?} (they have {:?}): the held-out \
                     samples of that pool are missing — does the split stage make a \
                     {eval_split:?} split, and does the pool have data?",
                    manifest.splits.keys().collect::<Vec<_>>(),
                );
            }
        }
        // Training: resumed when an earlier attempt at this very training left a checkpoint.
        let started = std::time::Instant::now();
        let mut cfg = host.train_config()?;
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
        let mut t =
            Trainer::new(cfg, resume).with_context(|| format!("{label}: the train file"))?;
        if let Some(flag) = host.stop_flag() {
            t.stop_when(flag);
        }
        // The base model's losses, before any step (kept beside a resumable training).
        let base_path = train_dir.join("base.json");
        let cap = self.settings.eval_sequences;
        let (base_domain_loss, base_general_loss) = match (resume, std::fs::read(&base_path)) {
            (true, Ok(bytes)) => {
                let b: BaseLosses = serde_json::from_slice(&bytes)?;
                (b.domain, b.general)
            }
            _ => {
                let (domain, general) = evaluate(&mut t, eval_split, cap)?;
                write_json(&base_path, &BaseLosses { domain, general })?;
                (domain, general)
            }
        };
        let steps = t.config().train.steps;
        let from = t.state().step;
        host.say(&format!(
            "{label}: training {steps} steps{} (base model: domain loss {base_domain_loss:.4}, \
             general {base_general_loss:.4})",
            if from > 0 {
                format!(", resuming from step {from}")
            } else {
                String::new()
            }
        ));
        let every = (steps / 10).max(1);
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let tag = label.clone();
        t.on_step(Box::new(move |p: &sluice_trainer::StepProgress| {
            if p.step.is_multiple_of(every) || p.step == p.stop {
                let _ = tx.send(format!(
                    "{tag}: step {}/{}  loss {:.4}  {:.0} tokens/s  eta {:.0}s",
                    p.step, p.stop, p.loss, p.tokens_per_s, p.eta_s
                ));
            }
        }));
        // The trainer's callback must be 'static and Send; the host is neither: its lines are
        // passed on from this thread while the training runs on another.
        let summary = std::thread::scope(|s| {
            let trained = s.spawn(|| t.run());
            let pass = |line: String| host.say(&line);
            loop {
                match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                    Ok(line) => pass(line),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !trained.is_finished() => {}
                    Err(_) => break,
                }
            }
            while let Ok(line) = rx.try_recv() {
                pass(line);
            }
            trained.join()
        });
        let summary = match summary {
            Ok(s) => s?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        if summary.steps < steps && !summary.stopped_early {
            if stopped() {
                return Err(Stopped.into());
            }
            bail!(
                "{label}: the training ended at step {} of {steps}",
                summary.steps
            );
        }
        let (domain_loss, general_loss) = evaluate(&mut t, eval_split, cap)?;
        if !(domain_loss.is_finite() && general_loss.is_finite()) {
            bail!(
                "{label}: the trained model's held-out losses are not numbers (domain \
                 {domain_loss}, general {general_loss}): the training diverged; lower optim.lr \
                 or check the model config"
            );
        }
        let eval = match &self.settings.eval_set {
            None => None,
            Some(set) => {
                let set = host.eval_set(set)?;
                host.say(&format!("{label}: scoring the evaluation set"));
                let opts = crate::eval::run::RunOptions {
                    model: summary.final_dir.clone(),
                    eval: set,
                    out: dir.join("eval"),
                    template: manifest.template.clone(),
                    tokenizer: Some(shards_dir.join("tokenizer.json")).filter(|p| p.is_file()),
                    max_new_tokens: self.settings.eval_max_new_tokens,
                    limit: self.settings.eval_limit,
                    device: t.config().train.device.clone(),
                    // A point with a history budget is scored with the same budget.
                    max_source_tokens: point.max_source_tokens,
                };
                let s = crate::eval::run::run(&opts, &mut |_| {})
                    .with_context(|| format!("{label}: the evaluation set"))?;
                Some(s.overall)
            }
        };
        let forgetting = general_loss - base_general_loss;
        let result = PointResult {
            label,
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
            eval,
        };
        write_json(&result_path, &result)?;
        Ok(result)
    }
}
