//! Ablations through the service: `POST /v1/ablations` queues one (settings, a pipeline and a
//! train file, as text), one worker thread runs them one at a time with [`sluice_lab::ablate`],
//! and `GET /v1/ablations/{id}` shows each point's status and results.
//!
//! Everything a submission names is confined as a job's pipeline is: every point's pipeline is
//! compiled against the data roots (reads) and the point's own folder
//! `<output_root>/ablations/<id>/points/<label>/run` (writes); the train file's model paths
//! (`model.config`, `model.weights`) must lie inside the data roots and are checked before
//! anything reads them; its `output` and `data.shards` are the service's to set (refused when
//! given), and distributed settings (`train.rank`, `world`, `master`) are refused. Its size is
//! bounded before it runs: `max_ablation_points`, `max_train_steps`, and the memory the model,
//! its optimizer state and one step need (`max_train_memory_mib`). Every check runs again when
//! the ablation starts, so files changed in between are caught.

use crate::routes::{crashed, internal, require_read, require_write, toml_text, Problem};
use crate::store::AblationRow;
use crate::worker::{compile, JobFolders};
use crate::State;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sluice_lab::ablate::{self, Ablation, Grid, Host, Settings, Stopped};
use sluice_pipeline::confine::{Access, Confinement};
use sluice_trainer::TrainConfig;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `POST /v1/ablations`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AblationRequest {
    /// Name in the report.
    #[serde(default)]
    pub name: Option<String>,
    /// The base pipeline, as TOML text or a JSON object: a `split` stage, a `mix` stage with
    /// `holdout` and `holdout_split_by_pool = true`, and `[output.shards]`.
    #[schema(value_type = Object)]
    pub pipeline: serde_json::Value,
    /// The train file, as TOML text or a JSON object, without `output` and `data.shards`
    /// (each point trains into its own folder on its own shards).
    #[schema(value_type = Object)]
    pub train: serde_json::Value,
    /// `{"ratio": ["1:1", "1:5"], "max_source_tokens": [512, 1024], "filler": [true, false]}`.
    #[schema(value_type = Object)]
    pub grid: serde_json::Value,
    /// The held-out split the points are evaluated on (default `test`).
    #[serde(default)]
    pub eval_split: Option<String>,
    /// Largest relative rise of the general loss a recommended point may have (default 0.05).
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// Held-out sequences evaluated per set (default 0: all).
    #[serde(default)]
    pub eval_sequences: Option<usize>,
    /// An evaluation folder of `sluice eval build` inside the data roots (relative to the
    /// first): each trained point is also scored on it.
    #[serde(default)]
    pub eval_set: Option<String>,
    /// Items per evaluation file scored (default 50, at most 10,000).
    #[serde(default)]
    pub eval_limit: Option<usize>,
    /// Longest greedy generation per open item (default 32, at most 4,096).
    #[serde(default)]
    pub eval_max_new_tokens: Option<usize>,
}

/// What the store keeps of an accepted request.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    settings: Settings,
    pipeline: String,
    train: String,
}

/// Longest name accepted.
const MAX_NAME: usize = 200;

/// A refusal: status, the request field at fault, and the message (paths relative to roots).
type Refusal = (u16, String, String);

fn refuse(status: u16, field: &str, message: impl Into<String>) -> Refusal {
    (status, field.to_string(), message.into())
}

/// The folder of an ablation that is not stored yet: no path a submission names can be it.
fn pending_folder(state: &State) -> PathBuf {
    state.config.output_root.join("ablations").join(".pending")
}

/// The train file as the service runs it: checked, confined, bounded. `output` stands for the
/// point's training folder (the lab sets the real one per point). Returns it with the text of
/// the model's config.json as read.
fn service_train(
    state: &State,
    text: &str,
    output: &std::path::Path,
) -> Result<(TrainConfig, String), Refusal> {
    let shown = |m: &str| state.config.relative_paths(m);
    let mut doc: toml::Table =
        toml::from_str(text).map_err(|e| refuse(422, "train", shown(&format!("train: {e}"))))?;
    let set_by_service = [
        ("output", doc.contains_key("output")),
        (
            "data.shards",
            doc.get("data").and_then(|d| d.get("shards")).is_some(),
        ),
    ];
    for (key, given) in set_by_service {
        if given {
            return Err(refuse(
                422,
                &format!("train.{key}"),
                format!(
                    "train: {key} is set by the service (each point trains into its own folder \
                     on its own shards); remove it"
                ),
            ));
        }
    }
    for key in ["rank", "world", "master"] {
        if doc.get("train").and_then(|t| t.get(key)).is_some() {
            return Err(refuse(
                422,
                &format!("train.train.{key}"),
                format!("train: train.{key}: distributed training is not run through the service"),
            ));
        }
    }
    let placeholder = toml::Value::String(output.to_string_lossy().into_owned());
    doc.insert("output".into(), placeholder.clone());
    if let Some(d) = doc.get_mut("data").and_then(|d| d.as_table_mut()) {
        d.insert("shards".into(), placeholder);
    }
    let text = toml::to_string(&doc).map_err(|e| refuse(422, "train", format!("train: {e}")))?;
    let origin = state.config.data_roots[0].join("submitted-train.toml");
    let mut cfg = TrainConfig::parse(&text, &origin)
        .map_err(|e| refuse(422, "train", shown(&format!("train: {e}"))))?;
    // Where the model comes from, before anything looks at those files.
    let confine = Confinement::new(&state.config.data_roots, &[], &[]);
    for (key, path, access) in [
        ("model.config", cfg.model.config.clone(), Access::Read),
        ("model.weights", cfg.model.weights.clone(), Access::ReadDir),
    ] {
        if let Some(p) = path {
            let spelled = shown(&p.display().to_string());
            confine
                .check(&format!("train.{key}"), &p, &spelled, access)
                .map_err(|f| refuse(403, &f.key, shown(&format!("train: {key}: {}", f.message))))?;
        }
    }
    cfg.validate()
        .map_err(|e| refuse(422, "train", shown(&format!("train: {e}"))))?;
    let limits = &state.config;
    if cfg.train.steps > limits.max_train_steps {
        return Err(refuse(
            422,
            "train.train.steps",
            format!(
                "train: train.steps {} is more than this service allows ({}, \
                 max_train_steps in server.toml)",
                cfg.train.steps, limits.max_train_steps
            ),
        ));
    }
    let config_path = match (&cfg.model.config, &cfg.model.weights) {
        (Some(c), _) => c.clone(),
        (None, Some(w)) => w.join("config.json"),
        (None, None) => return Err(refuse(422, "train.model", "train: model has no config")),
    };
    // Read through the open file (checked against the roots: a path swapped for a link
    // after the check above is not read), and kept: the training uses this very text.
    let config_file = if config_path.is_dir() {
        config_path.join("config.json")
    } else {
        config_path.clone()
    };
    let config_text =
        sluice_pipeline::confine::read_to_string_within(&config_file, Some(&confine.read_roots()))
            .map_err(|e| {
                refuse(
                    422,
                    "train.model",
                    shown(&format!("train: {}: {e}", config_file.display())),
                )
            })?;
    let model = sluice_trainer::config::ModelConfig::from_json(
        &config_text,
        &shown(&config_file.display().to_string()),
    )
    .map_err(|e| refuse(422, "train.model", shown(&format!("train: {e}"))))?;
    let params = model.parameters();
    let step = sluice_trainer::estimate::step_memory(
        &model,
        &sluice_trainer::estimate::StepShape {
            rows: cfg.data.batch_size,
            seq_len: cfg.data.seq_len,
            precision_bytes: 4,
            fused: true,
            checkpointing: cfg.train.activation_checkpointing,
            trainable_params: usize::try_from(params).unwrap_or(usize::MAX),
            lora: None,
        },
    );
    // f32 weights, gradients and AdamW's two moments, plus the micro-batches computed at once,
    // plus every micro-batch of a step as loaded (ids, targets, mask, positions: 16 bytes a
    // token, and the sequences read: 8 more).
    let step_tokens_loaded =
        cfg.data.batch_size as f64 * cfg.data.seq_len as f64 * cfg.data.grad_accum as f64;
    let need = params as f64 * 16.0
        + step.total * cfg.train.accum_threads as f64
        + step_tokens_loaded * 24.0;
    let need_mib = need / (1024.0 * 1024.0);
    if need_mib > limits.max_train_memory_mib as f64 {
        return Err(refuse(
            422,
            "train",
            format!(
                "train: the model ({params} parameters) with batches of {} × {} tokens needs \
                 about {need_mib:.0} MiB; this service allows {} (max_train_memory_mib in \
                 server.toml)",
                cfg.data.batch_size, cfg.data.seq_len, limits.max_train_memory_mib
            ),
        ));
    }
    // The work of a point: every token of every step, and how the steps are checkpointed.
    let step_tokens =
        cfg.data.batch_size as f64 * cfg.data.seq_len as f64 * cfg.data.grad_accum as f64;
    let total = step_tokens * cfg.train.steps as f64;
    if total > limits.max_train_tokens as f64 {
        return Err(refuse(
            422,
            "train.data",
            format!(
                "train: {} steps of {} × {} × {} tokens (batch_size × seq_len × grad_accum) \
                 are {total:.0} tokens; this service allows {} a point (max_train_tokens in \
                 server.toml)",
                cfg.train.steps,
                cfg.data.batch_size,
                cfg.data.seq_len,
                cfg.data.grad_accum,
                limits.max_train_tokens
            ),
        ));
    }
    if let Some(l) = &cfg.lora {
        if l.rank > model.hidden_size {
            return Err(refuse(
                422,
                "train.lora.rank",
                format!(
                    "train: lora.rank {} is more than the model's hidden size {}",
                    l.rank, model.hidden_size
                ),
            ));
        }
    }
    if cfg.train.keep_checkpoints > 3 {
        return Err(refuse(
            422,
            "train.train.keep_checkpoints",
            "train: keep_checkpoints: at most 3 through the service (each holds the weights and \
             the optimizer state)",
        ));
    }
    let min_every = (cfg.train.steps / 100).max(1);
    if cfg.train.checkpoint_every > 0 && cfg.train.checkpoint_every < min_every {
        return Err(refuse(
            422,
            "train.train.checkpoint_every",
            format!(
                "train: checkpoint_every {}: at least {min_every} (a hundredth of the steps) \
                 through the service",
                cfg.train.checkpoint_every
            ),
        ));
    }
    cfg.train.rank = Some(0);
    cfg.train.world = Some(1);
    cfg.train.master = None;
    Ok((cfg, config_text))
}

/// An evaluation folder named by a request: resolved against the first data root, and the
/// folder, its `open/` and `mc/` (and every file in them) inside the data roots.
fn service_eval_set(state: &State, named: &std::path::Path) -> Result<PathBuf, Refusal> {
    let shown = |m: &str| state.config.relative_paths(m);
    // `sluice:` names the bundled folders, which hold no evaluation sets.
    let path = sluice_pipeline::confine::resolve(&state.config.data_roots[0], named);
    let confine = Confinement::new(&state.config.data_roots, &[], &[]);
    let spelled = named.display().to_string();
    for (dir, label) in [
        (path.clone(), spelled.clone()),
        (path.join("open"), format!("{spelled}/open")),
        (path.join("mc"), format!("{spelled}/mc")),
    ] {
        if dir == path || dir.exists() || dir.is_symlink() {
            confine
                .check("eval_set", &dir, &label, Access::ReadDir)
                .map_err(|f| refuse(403, "eval_set", shown(&format!("eval_set: {}", f.message))))?;
        }
    }
    Ok(path)
}

/// How the service runs an ablation's parts: pipelines confined to the data roots and the
/// point's folder, the train file confined and bounded, progress into the store.
struct ServiceHost<'a> {
    state: &'a State,
    id: String,
    /// The ablation's folder.
    folder: PathBuf,
    train: String,
    stop: Arc<AtomicBool>,
    progress: Mutex<serde_json::Value>,
}

impl Host for ServiceHost<'_> {
    fn compile(
        &self,
        text: &str,
        output: &std::path::Path,
    ) -> anyhow::Result<sluice_pipeline::config::Plan> {
        let folders = JobFolders {
            output: output.to_path_buf(),
            schedule: None,
        };
        compile(self.state, text, &folders).map_err(|(_, _, m)| anyhow::anyhow!(m))
    }

    fn train_config(&self) -> anyhow::Result<TrainConfig> {
        let (mut cfg, config_text) =
            service_train(self.state, &self.train, &pending_folder(self.state))
                .map_err(|(_, _, m)| anyhow::anyhow!(m))?;
        // A model from scratch trains on the config text checked above, kept in the
        // ablation's folder (the path it came from may change after the check).
        if cfg.model.weights.is_none() {
            let kept = self.folder.join("model-config.json");
            sluice_pipeline::storage::write_atomic(&kept, config_text.as_bytes())?;
            cfg.model.config = Some(kept);
        }
        Ok(cfg)
    }

    fn say(&self, line: &str) {
        let line = self.state.config.relative_paths(line);
        let mut p = self
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // "point 2 of 3: ratio-1_3" starts a point.
        if let Some((n, rest)) = line
            .strip_prefix("point ")
            .and_then(|r| r.split_once(" of "))
        {
            if let (Ok(n), Some((of, label))) = (n.parse::<u64>(), rest.split_once(": ")) {
                p["point"] = n.into();
                p["of"] = of.parse::<u64>().unwrap_or(0).into();
                p["label"] = label.into();
            }
        }
        p["line"] = line.into();
        let _ = self.state.store.ablation_progress(&self.id, &p);
    }

    fn stop_flag(&self) -> Option<Arc<AtomicBool>> {
        Some(self.stop.clone())
    }

    fn threads(&self) -> Option<usize> {
        self.state.config.threads_per_job
    }

    fn eval_set(&self, named: &std::path::Path) -> anyhow::Result<PathBuf> {
        service_eval_set(self.state, named).map_err(|(_, _, m)| anyhow::anyhow!(m))
    }
}

/// Check a request completely, as it would run: the stored form, and warnings.
fn accept(state: &State, req: AblationRequest) -> Result<(Stored, Vec<String>), Refusal> {
    let grid: Grid =
        serde_json::from_value(req.grid).map_err(|e| refuse(422, "grid", format!("grid: {e}")))?;
    let mut settings = Settings::new(grid);
    if let Some(name) = req.name {
        if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(refuse(
                422,
                "name",
                format!("name: at most {MAX_NAME} characters, no control characters"),
            ));
        }
        settings.name = Some(name);
    }
    if let Some(s) = req.eval_split {
        settings.eval_split = s;
    }
    if let Some(t) = req.tolerance {
        settings.tolerance = t;
    }
    if let Some(n) = req.eval_sequences {
        settings.eval_sequences = n;
    }
    if let Some(n) = req.eval_limit {
        if n == 0 || n > 10_000 {
            return Err(refuse(
                422,
                "eval_limit",
                "eval_limit: from 1 to 10,000 items per file",
            ));
        }
        settings.eval_limit = n;
    }
    if let Some(n) = req.eval_max_new_tokens {
        settings.eval_max_new_tokens = n;
    }
    if let Some(set) = req.eval_set {
        let set = PathBuf::from(set);
        let resolved = service_eval_set(state, &set)?;
        if !resolved.join("open").is_dir() && !resolved.join("mc").is_dir() {
            return Err(refuse(
                422,
                "eval_set",
                "eval_set: no open/ or mc/ folder there (make it with `sluice eval build`)",
            ));
        }
        settings.eval_set = Some(set);
    }
    let problems = settings.problems(state.config.max_ablation_points);
    if !problems.is_empty() {
        return Err(refuse(422, "grid", problems.join("; ")));
    }
    let pipeline = toml_text(&req.pipeline, "pipeline")?;
    let train = toml_text(&req.train, "train")?;
    let pending = pending_folder(state);
    for p in settings.points() {
        let text = ablate::point_pipeline(&pipeline, &p)
            .map_err(|e| refuse(422, "pipeline", format!("pipeline: {e:#}")))?;
        let folders = JobFolders {
            output: pending.join(p.label()),
            schedule: None,
        };
        compile(state, &text, &folders)
            .map_err(|(s, f, m)| (s, f, format!("pipeline with {}: {m}", p.label())))?;
    }
    let warnings: Vec<String> = ablate::check_split(&pipeline, &settings.eval_split)
        .map_err(|e| refuse(422, "pipeline", format!("pipeline: {e:#}")))?
        .into_iter()
        .collect();
    service_train(state, &train, &pending)?;
    Ok((
        Stored {
            settings,
            pipeline,
            train,
        },
        warnings,
    ))
}

/// Start the thread that runs queued ablations, one at a time (each trains on every core).
pub fn start(state: Arc<State>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("sluice-ablations".into())
        .spawn(move || {
            while !state.stopping.load(Ordering::SeqCst) {
                match state.store.claim_ablation() {
                    Ok(Some(row)) => run(&state, row),
                    Ok(None) => std::thread::sleep(Duration::from_millis(200)),
                    Err(e) => {
                        eprintln!("sluice serve: job store: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })
        .unwrap_or_else(|e| panic!("cannot start the ablation thread: {e}"))
}

/// Run one claimed ablation to its end (or until cancelled or stopped).
fn run(state: &State, row: AblationRow) {
    let id = row.id.clone();
    let stored: Stored = match serde_json::from_value(row.request) {
        Ok(s) => s,
        Err(e) => {
            let _ = state.store.finish_ablation(
                &id,
                "failed",
                Some(&format!("the stored request could not be read: {e}")),
                None,
            );
            return;
        }
    };
    let ablation = Ablation {
        settings: stored.settings,
        output: PathBuf::from(&row.output),
        pipeline_text: stored.pipeline,
        train_text: stored.train.clone(),
    };
    let host = ServiceHost {
        state,
        id: id.clone(),
        folder: PathBuf::from(&row.output),
        train: stored.train,
        stop: Arc::new(AtomicBool::new(false)),
        progress: Mutex::new(serde_json::json!({ "phase": "starting" })),
    };
    let done = AtomicBool::new(false);
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                if state.store.ablation_cancel_requested(&id)
                    || state.stopping.load(Ordering::SeqCst)
                {
                    host.stop.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let r = ablation.check(&host).and_then(|_| ablation.run(&host));
        done.store(true, Ordering::SeqCst);
        r
    });
    let recorded = match outcome {
        Ok(outcome) => {
            let results = serde_json::to_string(&outcome)
                .map(|t| state.config.relative_paths(&t))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
            state
                .store
                .finish_ablation(&id, "succeeded", None, results.as_ref())
        }
        Err(e) if e.downcast_ref::<Stopped>().is_some() => {
            if state.stopping.load(Ordering::SeqCst) {
                state.store.requeue_ablation(&id)
            } else {
                state.store.finish_ablation(&id, "cancelled", None, None)
            }
        }
        Err(e) => state.store.finish_ablation(
            &id,
            "failed",
            Some(&state.config.relative_paths(&format!("{e:#}"))),
            None,
        ),
    };
    if let Err(e) = recorded {
        eprintln!("sluice serve: ablation {id}: cannot record the outcome: {e}");
    }
}

/// An ablation as clients see it: paths relative to their roots.
fn present(state: &State, mut row: AblationRow) -> AblationRow {
    let shown = |t: &str| state.config.relative_paths(t);
    row.output = shown(&row.output);
    row.error = row.error.as_deref().map(shown);
    if let Ok(t) = serde_json::to_string(&row.request) {
        row.request = serde_json::from_str(&shown(&t)).unwrap_or_default();
    }
    row
}

/// An ablation by id, or a 404.
fn stored_row(state: &State, id: &str) -> Result<AblationRow, Problem> {
    state
        .store
        .ablation(id)
        .map_err(internal)?
        .ok_or_else(|| Problem::new(404, format!("no ablation {id}")))
}

/// The routes.
pub fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/v1/ablations", post(submit).get(list))
        .route("/v1/ablations/{id}", get(one))
        .route("/v1/ablations/{id}/cancel", post(cancel))
        .route("/v1/ablations/{id}/report.html", get(report))
}

/// `POST /v1/ablations`: check everything the ablation names and queue it.
#[utoipa::path(post, path = "/v1/ablations", request_body = AblationRequest, responses((status = 201, description = "Queued, with warnings", body = AblationRow), (status = 400, description = "Malformed body", body = crate::routes::ProblemBody), (status = 401, description = "No token", body = crate::routes::ProblemBody), (status = 403, description = "Read-only token, or a path outside the data roots", body = crate::routes::ProblemBody), (status = 422, description = "Invalid pipeline, train file or grid, or over the service's limits", body = crate::routes::ProblemBody), (status = 429, description = "Queue full", body = crate::routes::ProblemBody)), security(("bearer" = [])))]
pub(crate) async fn submit(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    require_write(&state, &headers)?;
    let req: AblationRequest = crate::routes::parse_body(&body)?;
    let st = state.clone();
    let checked = tokio::task::spawn_blocking(move || accept(&st, req))
        .await
        .map_err(crashed)?;
    let (stored, warnings) =
        checked.map_err(|(status, field, message)| Problem::new(status, message).field(field))?;
    if state.store.queued_ablations().map_err(internal)? >= state.config.queue_limit {
        return Err(Problem::new(
            429,
            "the ablation queue is full; try again later",
        ));
    }
    let request = serde_json::to_value(&stored).map_err(internal)?;
    let row = state
        .store
        .submit_ablation(&request, &state.config.output_root.join("ablations"))
        .map_err(internal)?;
    let mut body = serde_json::to_value(present(&state, row)).map_err(internal)?;
    body["warnings"] = serde_json::json!(warnings);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<i64>,
}

/// `GET /v1/ablations`: newest first.
#[utoipa::path(get, path = "/v1/ablations", params(("limit" = Option<i64>, Query, description = "At most this many (default 100)")), responses((status = 200, description = "Ablations, newest first")))]
pub(crate) async fn list(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, Problem> {
    require_read(&state, &headers)?;
    let rows = state
        .store
        .ablations(q.limit.unwrap_or(100).clamp(1, 1000))
        .map_err(internal)?;
    let rows: Vec<AblationRow> = rows.into_iter().map(|r| present(&state, r)).collect();
    Ok(Json(serde_json::json!({ "ablations": rows })).into_response())
}

/// `GET /v1/ablations/{id}`: the ablation and each point's status, with the results of those
/// done.
#[utoipa::path(get, path = "/v1/ablations/{id}", params(("id" = String, Path, description = "Ablation id")), responses((status = 200, description = "The ablation, its points and results", body = AblationRow), (status = 404, description = "No such ablation", body = crate::routes::ProblemBody)))]
pub(crate) async fn one(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    require_read(&state, &headers)?;
    let row = stored_row(&state, &id)?;
    let stored: Option<Stored> = serde_json::from_value(row.request.clone()).ok();
    let output = PathBuf::from(&row.output);
    let points = tokio::task::spawn_blocking(move || {
        stored.and_then(|s| {
            Ablation {
                settings: s.settings,
                output,
                pipeline_text: s.pipeline,
                train_text: s.train,
            }
            .status()
            .ok()
        })
    })
    .await
    .map_err(crashed)?;
    let mut body = serde_json::to_value(present(&state, row)).map_err(internal)?;
    body["points"] = serde_json::to_value(points.unwrap_or_default()).map_err(internal)?;
    Ok(Json(body).into_response())
}

/// `POST /v1/ablations/{id}/cancel`.
#[utoipa::path(post, path = "/v1/ablations/{id}/cancel", params(("id" = String, Path, description = "Ablation id")), responses((status = 200, description = "Cancelled (queued) or marked for cancelling (running)", body = AblationRow), (status = 404, description = "No such ablation", body = crate::routes::ProblemBody), (status = 409, description = "It already ended", body = crate::routes::ProblemBody)), security(("bearer" = [])))]
pub(crate) async fn cancel(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    require_write(&state, &headers)?;
    match state.store.cancel_ablation(&id).map_err(internal)? {
        Some(row) if ["succeeded", "failed"].contains(&row.state.as_str()) => Err(Problem::new(
            409,
            format!(
                "ablation {id} has already {}: there is nothing to cancel",
                row.state
            ),
        )),
        Some(row) => Ok(Json(present(&state, row)).into_response()),
        None => Err(Problem::new(404, format!("no ablation {id}"))),
    }
}

/// `GET /v1/ablations/{id}/report.html`: the chart, the table and the reasoning.
#[utoipa::path(get, path = "/v1/ablations/{id}/report.html", params(("id" = String, Path, description = "Ablation id")), responses((status = 200, description = "report.html of the ablation", content_type = "text/html"), (status = 404, description = "No such ablation, or not finished", body = crate::routes::ProblemBody)))]
pub(crate) async fn report(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    require_read(&state, &headers)?;
    let row = stored_row(&state, &id)?;
    if row.state != "succeeded" {
        return Err(Problem::new(
            404,
            format!(
                "ablation {id} is {}: the report comes when it succeeds",
                row.state
            ),
        ));
    }
    let path = PathBuf::from(&row.output).join("report.html");
    let html = tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
        .await
        .map_err(crashed)?
        .map_err(|_| Problem::new(404, format!("ablation {id} has no report")))?;
    Ok(crate::ui::html_fragment(state.config.relative_paths(&html)))
}
