//! HTTP routes. Errors are JSON problem bodies (`{"status", "title", "detail", "field"}`),
//! every one of them (the framework's own 404, 405 and 413 are rewritten into that form):
//! 400 malformed body, 401 no token, 403 read-only token or a path outside the data roots,
//! 404 unknown job, 413 body too large, 422 invalid pipeline or parameters, 429 queue full.
//!
//! Auth: `/healthz`, `/readyz` and `/openapi.json` are open; every other GET needs a read or
//! write token (unless `anonymous_read`), `/metrics` also takes a metrics token, and every
//! POST and DELETE needs a write token.

use crate::config::Scope;
use crate::store::{Job, Schedule, Submitted};
use crate::State;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sluice_pipeline::catalog;
use sluice_pipeline::mix::{MixMode, MixSpec, MixUnit, Ratio};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The router over shared state.
pub fn app(state: Arc<State>) -> Router {
    let limit = state.config.body_limit;
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/openapi.json", get(openapi))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/mix", get(mix_preview))
        .route("/v1/datasets", get(datasets))
        .route("/v1/jobs", post(submit).get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/report", get(job_report))
        .route("/v1/schedules", post(add_schedule).get(list_schedules))
        .route("/v1/schedules/{id}", axum::routing::delete(delete_schedule))
        .merge(crate::ui::routes())
        .merge(crate::ablations::routes())
        .merge(crate::diversity::routes())
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

async fn count(
    AxState(state): AxState<Arc<State>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_client_error() {
        state.metrics.client_errors.fetch_add(1, Ordering::Relaxed);
    }
    let is_problem = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if (status.is_client_error() || status.is_server_error()) && !is_problem {
        // The framework's own answers (unknown route, wrong method, body over the limit,
        // malformed query) in the same problem form as ours.
        let body = axum::body::to_bytes(resp.into_body(), 4096)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).trim().to_string();
        let detail = match (status.as_u16(), text.is_empty()) {
            (413, _) => format!(
                "the request body is larger than body_limit ({} bytes)",
                state.config.body_limit
            ),
            (_, true) => status.canonical_reason().unwrap_or("error").to_string(),
            _ => text,
        };
        return with_safe_headers(Problem::new(status.as_u16(), detail).into_response());
    }
    with_safe_headers(resp)
}

/// Every answer: never sniffed as another type, never cached (answers depend on the token and
/// change with every job), unless a route set its own.
fn with_safe_headers(mut resp: Response) -> Response {
    use axum::http::{header, HeaderValue};
    let h = resp.headers_mut();
    h.entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// A problem response.
pub struct Problem {
    status: StatusCode,
    detail: String,
    field: Option<String>,
}

impl Problem {
    pub(crate) fn new(status: u16, detail: impl Into<String>) -> Problem {
        Problem {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            detail: detail.into(),
            field: None,
        }
    }

    pub(crate) fn field(mut self, f: impl Into<String>) -> Problem {
        self.field = Some(f.into());
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "type": "about:blank",
            "status": self.status.as_u16(),
            "title": self.status.canonical_reason().unwrap_or("error"),
            "detail": self.detail,
        });
        if let Some(f) = self.field {
            body["field"] = serde_json::json!(f);
        }
        let mut resp = (self.status, Json(body)).into_response();
        if let Ok(v) = "application/problem+json".parse() {
            resp.headers_mut()
                .insert(axum::http::header::CONTENT_TYPE, v);
        }
        resp
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Problem {
    Problem::new(500, e.to_string())
}

/// A blocking task that died: logged here, never shown (its message may quote anything).
pub(crate) fn crashed(e: tokio::task::JoinError) -> Problem {
    eprintln!("sluice serve: a request's task failed: {e}");
    Problem::new(500, "internal error; the server log has the details")
}

/// The scope of the request's bearer token: Ok(None) when it has none.
fn token_scope(state: &State, headers: &HeaderMap) -> Result<Option<Scope>, Problem> {
    match bearer(headers).map(|t| state.config.scope_of(t)) {
        None => Ok(None),
        Some(None) => Err(Problem::new(401, "unknown token")),
        Some(Some(s)) => Ok(Some(s)),
    }
}

/// The request's bearer token, if it has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

pub(crate) fn token_required() -> Problem {
    Problem::new(401, "a bearer token is required (Authorization: Bearer …)")
}

/// A job as clients see it: paths relative to the root they belong to (`output` is the job's
/// folder under the output root), never the server's own folders.
fn present(state: &State, mut job: Job) -> Job {
    let shown = |t: &str| state.config.relative_paths(t);
    job.pipeline = shown(&job.pipeline);
    job.output = shown(&job.output);
    job.error = job.error.as_deref().map(shown);
    job
}

/// A schedule as clients see it (paths relative to their roots).
fn present_schedule(state: &State, mut s: Schedule) -> Schedule {
    s.pipeline = state.config.relative_paths(&s.pipeline);
    s
}

/// Mutating calls need a write token.
pub(crate) fn require_write(state: &State, headers: &HeaderMap) -> Result<(), Problem> {
    match token_scope(state, headers)? {
        None => Err(token_required()),
        Some(Scope::Write) => Ok(()),
        Some(Scope::Read) => Err(Problem::new(403, "this token is read-only")),
        Some(Scope::Metrics) => Err(Problem::new(403, "this token may only read /metrics")),
    }
}

/// Looking needs a read or write token, unless the service allows anonymous reads.
pub(crate) fn require_read(state: &State, headers: &HeaderMap) -> Result<(), Problem> {
    match token_scope(state, headers)? {
        None if state.config.anonymous_read => Ok(()),
        None => Err(token_required()),
        Some(Scope::Write | Scope::Read) => Ok(()),
        Some(Scope::Metrics) => Err(Problem::new(403, "this token may only read /metrics")),
    }
}

#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "Ready, with the queue length"), (status = 503, description = "The job store is unavailable", body = ProblemBody)))]
async fn readyz(AxState(state): AxState<Arc<State>>) -> Result<Json<serde_json::Value>, Problem> {
    let queued = state
        .store
        .queued()
        .map_err(|e| Problem::new(503, e.to_string()))?;
    let ablations = state
        .store
        .queued_ablations()
        .map_err(|e| Problem::new(503, e.to_string()))?;
    Ok(Json(serde_json::json!({
        "ready": !state.stopping.load(Ordering::SeqCst),
        "queued": queued,
        "queued_ablations": ablations,
    })))
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(AxState(state): AxState<Arc<State>>, headers: HeaderMap) -> Response {
    match token_scope(&state, &headers) {
        Err(p) => return p.into_response(),
        Ok(None) if !state.config.anonymous_read => return token_required().into_response(),
        Ok(_) => {}
    }
    let m = &state.metrics;
    let mut out = String::new();
    for (name, help, value) in [
        (
            "sluice_http_requests_total",
            "HTTP requests served.",
            &m.requests,
        ),
        (
            "sluice_http_client_errors_total",
            "Requests answered with a 4xx status.",
            &m.client_errors,
        ),
        (
            "sluice_mix_previews_total",
            "Mix previews served.",
            &m.previews,
        ),
        (
            "sluice_jobs_finished_total",
            "Jobs finished by this process.",
            &m.jobs_finished,
        ),
    ] {
        out += &format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            value.load(Ordering::Relaxed)
        );
    }
    out += "# HELP sluice_jobs Jobs in the store by state.\n# TYPE sluice_jobs gauge\n";
    for (s, n) in state.store.counts().unwrap_or_default() {
        out += &format!("sluice_jobs{{state=\"{s}\"}} {n}\n");
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}

/// `POST /v1/jobs` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct JobRequest {
    /// The pipeline: TOML text, or the same structure as a JSON object.
    #[schema(value_type = Object)]
    pipeline: serde_json::Value,
    /// Resubmitting with the same key returns the first job (also the `Idempotency-Key`
    /// header).
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[utoipa::path(post, path = "/v1/jobs", request_body = JobRequest, params(("Idempotency-Key" = Option<String>, Header, description = "Resubmitting with the same key returns the first job")), responses((status = 201, description = "Queued", body = Job), (status = 200, description = "A job with this idempotency key exists", body = Job), (status = 400, description = "Malformed body", body = ProblemBody), (status = 401, description = "No or unknown token", body = ProblemBody), (status = 403, description = "Read-only token, or a path outside the data roots", body = ProblemBody), (status = 413, description = "Body too large"), (status = 422, description = "Invalid pipeline", body = ProblemBody), (status = 429, description = "Queue full", body = ProblemBody)), security(("bearer" = [])))]
async fn submit(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    require_write(&state, &headers)?;
    let req: JobRequest = parse_body(&body)?;
    let text = pipeline_text(&req.pipeline)?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(req.idempotency_key);
    let st = state.clone();
    let check = tokio::task::spawn_blocking(move || {
        let folders = crate::worker::JobFolders::pending(&st);
        crate::worker::compile(&st, &text, &folders).map(|_| text)
    })
    .await
    .map_err(crashed)?;
    let text =
        check.map_err(|(status, field, message)| Problem::new(status, message).field(field))?;
    if state.store.queued().map_err(internal)? >= state.config.queue_limit {
        // A retry of an accepted submission still gets its job; anything new waits.
        if let Some(job) = match &key {
            Some(k) => state.store.by_key(k).map_err(internal)?,
            None => None,
        } {
            return Ok((StatusCode::OK, Json(present(&state, job))).into_response());
        }
        return Err(Problem::new(429, "the job queue is full; try again later"));
    }
    let out = state
        .store
        .submit(&text, &state.config.output_root, key.as_deref(), None)
        .map_err(internal)?;
    Ok(match out {
        Submitted::New(job) => {
            state.wake.notify_waiters();
            (StatusCode::CREATED, Json(present(&state, job))).into_response()
        }
        Submitted::Existing(job) => (StatusCode::OK, Json(present(&state, job))).into_response(),
    })
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/jobs", params(("state" = Option<String>, Query, description = "queued, running, succeeded, failed or cancelled"), ("limit" = Option<i64>, Query, description = "At most this many (default 100)")), responses((status = 200, description = "Jobs, newest first"), (status = 422, description = "Unknown state", body = ProblemBody)))]
async fn list_jobs(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, Problem> {
    require_read(&state, &headers)?;
    if let Some(s) = &q.state {
        if !crate::store::STATES.contains(&s.as_str()) {
            return Err(Problem::new(422, format!("unknown state {s:?}")).field("state"));
        }
    }
    let jobs = state
        .store
        .list(q.state.as_deref(), q.limit.unwrap_or(100).clamp(1, 1000))
        .map_err(internal)?;
    let jobs: Vec<Job> = jobs.into_iter().map(|j| present(&state, j)).collect();
    Ok(Json(serde_json::json!({ "jobs": jobs })).into_response())
}

#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = String, Path, description = "Job id")), responses((status = 200, description = "The job", body = Job), (status = 404, description = "No such job", body = ProblemBody)))]
async fn get_job(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    require_read(&state, &headers)?;
    match state.store.get(&id).map_err(internal)? {
        Some(job) => Ok(Json(present(&state, job)).into_response()),
        None => Err(Problem::new(404, format!("no job {id}"))),
    }
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", params(("id" = String, Path, description = "Job id")), responses((status = 200, description = "Cancelled (queued) or marked for cancelling (running)", body = Job), (status = 401, description = "No token", body = ProblemBody), (status = 403, description = "Read-only token", body = ProblemBody), (status = 404, description = "No such job", body = ProblemBody), (status = 409, description = "The job already ended", body = ProblemBody)), security(("bearer" = [])))]
async fn cancel_job(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    require_write(&state, &headers)?;
    match state.store.cancel(&id).map_err(internal)? {
        Some(job) if ["succeeded", "failed"].contains(&job.state.as_str()) => Err(Problem::new(
            409,
            format!(
                "job {id} has already {}: there is nothing to cancel",
                job.state
            ),
        )),
        Some(job) => Ok(Json(present(&state, job)).into_response()),
        None => Err(Problem::new(404, format!("no job {id}"))),
    }
}

#[utoipa::path(get, path = "/v1/jobs/{id}/report", params(("id" = String, Path, description = "Job id")), responses((status = 200, description = "report.json of the run"), (status = 404, description = "No such job, or no report yet", body = ProblemBody)))]
async fn job_report(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    require_read(&state, &headers)?;
    match state.store.report(&id).map_err(internal)? {
        None => Err(Problem::new(404, format!("no job {id}"))),
        Some(None) => Err(Problem::new(404, format!("job {id} has no report yet"))),
        Some(Some(r)) => {
            let r = state.config.relative_paths(&r);
            Ok(json_text(r))
        }
    }
}

#[utoipa::path(get, path = "/mix", params(("domain" = String, Query, description = "Domain of the domain pool"), ("ratio" = String, Query, description = "sft: \"1:5\" or a share; cpt: largest domain share of tokens"), ("mode" = Option<String>, Query, description = "sft (default) or cpt"), ("unit" = Option<String>, Query, description = "samples or tokens"), ("where" = Option<String>, Query, description = "polars SQL condition over tags"), ("target" = Option<u64>, Query, description = "Total size in the unit"), ("task_cap" = Option<u64>, Query, description = "Most samples per task"), ("temperature" = Option<f64>, Query, description = "Sampling temperature across tasks"), ("max_repeats" = Option<f64>, Query, description = "Most epochs of any task"), ("instruct_share" = Option<f64>, Query, description = "cpt: share of SFT samples")), responses((status = 200, description = "The mix plan: per pool available and selected samples and tokens, repeats, shares, warnings, example ids"), (status = 422, description = "Invalid parameter", body = ProblemBody)))]
async fn mix_preview(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    let json = mix_json(&state, &headers, &q).await?;
    Ok(json_text(json))
}

/// The preview `/mix` answers (also drawn by the console), as JSON text.
pub(crate) async fn mix_json(
    state: &Arc<State>,
    headers: &HeaderMap,
    q: &BTreeMap<String, String>,
) -> Result<String, Problem> {
    require_read(state, headers)?;
    let spec = spec_from_query(q)?;
    state.metrics.previews.fetch_add(1, Ordering::Relaxed);
    let _slot = state.preview_slots.acquire().await.map_err(internal)?;
    let root = state.config.output_root.clone();
    let query = format!("{q:?}");
    let st = state.clone();
    tokio::task::spawn_blocking(move || -> Result<String, String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| preview(&st, &root, query, &spec)))
            .unwrap_or_else(|_| Err("this preview could not be computed (an internal error; the server log has the details)".into()))
    })
    .await
    .map_err(crashed)?
    .map_err(|e| query_problem(state, &e, None))
}

/// One preview answer, from the cache when the catalog has not changed.
fn preview(
    st: &State,
    root: &std::path::Path,
    query: String,
    spec: &MixSpec,
) -> Result<String, String> {
    let loaded = catalog::load_versioned(root, None)?;
    let (version, frame) = (loaded.version, loaded.frame);
    let key = (version, query);
    if let Some(hit) = st
        .preview_cache
        .lock()
        .ok()
        .and_then(|c| c.get(&key).cloned())
    {
        return Ok(hit);
    }
    let mut plan = catalog::preview_frame(&frame, spec)?;
    plan.warnings.extend(loaded.warnings);
    let json = serde_json::to_string(&plan)
        .map(|j| st.config.relative_paths(&j))
        .map_err(|e| e.to_string())?;
    if let Ok(mut c) = st.preview_cache.lock() {
        c.retain(|(v, _), _| *v == version);
        if c.len() < 1024 {
            c.insert(key, json.clone());
        }
    }
    Ok(json)
}

/// `GET /mix?domain=finance&ratio=0.15[&mode=sft|cpt][&unit=tokens][&where=…][&target=N]…`
fn spec_from_query(q: &BTreeMap<String, String>) -> Result<MixSpec, Problem> {
    let known = [
        "domain",
        "ratio",
        "mode",
        "unit",
        "where",
        "target",
        "task_cap",
        "temperature",
        "max_repeats",
        "instruct_share",
    ];
    if let Some(k) = q.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(Problem::new(422, format!("unknown parameter {k:?}")).field(k.clone()));
    }
    let need = |k: &str| {
        q.get(k)
            .ok_or_else(|| Problem::new(422, format!("{k} is required")).field(k))
    };
    let num = |k: &str| -> Result<Option<f64>, Problem> {
        q.get(k)
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| Problem::new(422, format!("{k}={v:?} is not a number")).field(k))
            })
            .transpose()
    };
    let mode = match q.get("mode").map(String::as_str) {
        None | Some("sft") => MixMode::Sft,
        Some("cpt") => MixMode::Cpt,
        Some(m) => return Err(Problem::new(422, format!("mode={m:?}: sft or cpt")).field("mode")),
    };
    let ratio = Ratio::parse(need("ratio")?).map_err(|e| Problem::new(422, e).field("ratio"))?;
    let mut spec = MixSpec::for_domain(need("domain")?, ratio, mode);
    spec.unit = match q.get("unit").map(String::as_str) {
        None => None,
        Some("samples") => Some(MixUnit::Samples),
        Some("tokens") => Some(MixUnit::Tokens),
        Some(u) => {
            return Err(Problem::new(422, format!("unit={u:?}: samples or tokens")).field("unit"))
        }
    };
    if let Some(w) = q.get("where") {
        spec.add_filter(w);
    }
    spec.target = num("target")?.map(|t| t as u64);
    spec.task_cap = num("task_cap")?.map(|t| t as u64);
    spec.temperature = num("temperature")?.unwrap_or(spec.temperature);
    spec.max_repeats = num("max_repeats")?.unwrap_or(spec.max_repeats);
    spec.instruct_share = num("instruct_share")?.unwrap_or(0.0);
    let problems = spec.validate();
    if let Some(p) = problems.first() {
        let field = if p.starts_with("where") {
            "where"
        } else if p.contains("instruct_share") {
            "instruct_share"
        } else if p.contains("max_repeats") {
            "max_repeats"
        } else if p.contains("temperature") {
            "temperature"
        } else if p.contains("target") {
            "target"
        } else if p.contains("cap") {
            "task_cap"
        } else {
            "ratio"
        };
        return Err(Problem::new(422, p.clone()).field(field));
    }
    Ok(spec)
}

#[utoipa::path(get, path = "/v1/datasets", params(("by" = Option<String>, Query, description = "Catalog columns to group by, comma separated (default domain,task)"), ("where" = Option<String>, Query, description = "A condition over catalog columns")), responses((status = 200, description = "Catalog runs and totals per group"), (status = 422, description = "Unknown column or invalid condition", body = ProblemBody)))]
async fn datasets(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Query(q): Query<crate::ui::GroupQuery>,
) -> Result<Response, Problem> {
    require_read(&state, &headers)?;
    let by = q.columns()?;
    let root = state.config.output_root.clone();
    let (groups, warnings) = catalog_groups(&state, by, q.filter).await?;
    let out = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, String> {
        if catalog::catalog_files(&root).is_empty() {
            return Ok(serde_json::json!({ "runs": [], "groups": [] }));
        }
        let runs = catalog::runs(&root, None)?;
        Ok(serde_json::json!({
            "runs": runs,
            "groups": groups,
            "warnings": warnings,
        }))
    })
    .await
    .map_err(crashed)?
    .map_err(|e| Problem::new(500, state.config.relative_paths(&e)))?;
    // Sources of files in other data roots are absolute: shown relative to their root.
    let text = state.config.relative_paths(&out.to_string());
    Ok(json_text(text))
}

/// The catalog's totals per group of `by` (rows of samples, turns, tokens, chars, copies),
/// largest first, and the catalog's warnings (overlapping runs); no rows when no job has
/// curated anything. `by` may name the sample's fields, the run and the tags (not the
/// catalog's bookkeeping columns); another column, or a bad condition, is a 422.
pub(crate) async fn catalog_groups(
    state: &Arc<State>,
    by: Vec<String>,
    filter: Option<String>,
) -> Result<(serde_json::Value, Vec<String>), Problem> {
    let root = state.config.output_root.clone();
    tokio::task::spawn_blocking(
        move || -> Result<(serde_json::Value, Vec<String>), String> {
            if catalog::catalog_files(&root).is_empty() {
                return Ok((serde_json::json!([]), Vec::new()));
            }
            let loaded = catalog::load_versioned(&root, None)?;
            let mut allowed: Vec<String> = ["domain", "task", "source", "kind", "run"]
                .iter()
                .map(|c| c.to_string())
                .collect();
            allowed.extend(sluice_pipeline::mix::frame::tag_columns(
                loaded.frame.schema(),
            ));
            if let Some(b) = by.iter().find(|b| !allowed.contains(b)) {
                return Err(format!(
                    "by: the catalog has no column {b:?} to group by (columns: {})",
                    allowed.join(", ")
                ));
            }
            let groups = catalog::summary(&root, None, &by, filter.as_deref())?;
            Ok((catalog::frame_json(&groups), loaded.warnings))
        },
    )
    .await
    .map_err(crashed)?
    .map_err(|e| query_problem(state, &e, Some("by")))
}

/// A 422 for a query the catalog refused: the `where` field when the condition is at fault,
/// else `field` (paths in the message relative to their roots).
fn query_problem(state: &State, e: &str, field: Option<&str>) -> Problem {
    let p = Problem::new(422, state.config.relative_paths(e));
    match (e.starts_with("where"), field) {
        (true, _) => p.field("where"),
        (false, Some(f)) => p.field(f),
        (false, None) => p,
    }
}

/// A JSON body already encoded.
fn json_text(body: String) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Most schedules the service keeps (each tick lists and hashes its folder).
pub const MAX_SCHEDULES: usize = 1000;

/// `POST /v1/schedules` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ScheduleRequest {
    /// Cron expression, in the configured time zone (5 fields, or 6 with seconds).
    cron: String,
    /// Pipeline (TOML text or JSON object); its first input's paths are set to each tick's new
    /// files.
    #[schema(value_type = Object)]
    pipeline: serde_json::Value,
    /// Folder inside a data root whose new files each tick takes.
    input_prefix: String,
}

#[utoipa::path(post, path = "/v1/schedules", request_body = ScheduleRequest, responses((status = 201, description = "Created", body = Schedule), (status = 400, description = "Malformed body", body = ProblemBody), (status = 401, description = "No token", body = ProblemBody), (status = 403, description = "Read-only token, or a prefix outside the data roots", body = ProblemBody), (status = 422, description = "Invalid cron or pipeline", body = ProblemBody)), security(("bearer" = [])))]
async fn add_schedule(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    require_write(&state, &headers)?;
    let req: ScheduleRequest = parse_body(&body)?;
    if state.store.schedules().map_err(internal)?.len() >= MAX_SCHEDULES {
        return Err(Problem::new(
            429,
            format!("at most {MAX_SCHEDULES} schedules: delete one first"),
        ));
    }
    crate::schedule::parse_cron_spaced(&req.cron, state.config.min_schedule_interval)
        .map_err(|e| Problem::new(422, e).field("cron"))?;
    let text = pipeline_text(&req.pipeline)?;
    crate::schedule::prefix_dir(&state, &req.input_prefix)
        .map_err(|e| Problem::new(403, e).field("input_prefix"))?;
    // The pipeline must compile once its input reads the prefix's files.
    let st = state.clone();
    let probe = text.clone();
    let prefix = req.input_prefix.clone();
    tokio::task::spawn_blocking(move || {
        let dir = crate::schedule::prefix_dir(&st, &prefix)
            .map_err(|e| (403, "input_prefix".to_string(), e))?;
        let pattern = dir.join("**").join("*").to_string_lossy().into_owned();
        let text = crate::schedule::pipeline_for(&st, "probe", &probe, &[pattern])
            .map_err(|e| (422, "pipeline".to_string(), e))?;
        let folders = crate::worker::JobFolders {
            schedule: Some(crate::schedule::state_dir(&st, "probe")),
            ..crate::worker::JobFolders::pending(&st)
        };
        // No file yet is fine (the first tick will find some); every other problem is not.
        crate::worker::check_scheduled(&st, &text, &folders)
    })
    .await
    .map_err(crashed)?
    .map_err(|(status, field, message)| Problem::new(status, message).field(field))?;
    let s = state
        .store
        .add_schedule(&req.cron, &text, &req.input_prefix)
        .map_err(internal)?;
    Ok((StatusCode::CREATED, Json(present_schedule(&state, s))).into_response())
}

#[utoipa::path(get, path = "/v1/schedules", responses((status = 200, description = "Every schedule")))]
async fn list_schedules(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require_read(&state, &headers)?;
    let s = state.store.schedules().map_err(internal)?;
    let s: Vec<Schedule> = s.into_iter().map(|s| present_schedule(&state, s)).collect();
    Ok(Json(serde_json::json!({ "schedules": s })).into_response())
}

#[utoipa::path(delete, path = "/v1/schedules/{id}", params(("id" = String, Path, description = "Schedule id")), responses((status = 204, description = "Deleted"), (status = 404, description = "No such schedule", body = ProblemBody)), security(("bearer" = [])))]
async fn delete_schedule(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    require_write(&state, &headers)?;
    if state.store.delete_schedule(&id).map_err(internal)? {
        // Its state (the persistent minhash index) goes with it: a schedule is never
        // revived under its id, and nothing of it outlives it.
        let dir = crate::schedule::state_dir(&state, &id);
        if id.starts_with("s-") && !id.contains(['/', '\\', '.']) && dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(internal)?;
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Problem::new(404, format!("no schedule {id}")))
    }
}

/// A JSON request body; a malformed one is a 400 naming the field at fault.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        Problem::new(400, format!("malformed request body: {}", e.inner())).field(field)
    })
}

/// A pipeline given as TOML text or as a JSON object, as TOML text.
fn pipeline_text(v: &serde_json::Value) -> Result<String, Problem> {
    toml_text(v, "pipeline")
        .map_err(|(status, field, message)| Problem::new(status, message).field(field))
}

/// The text of a request field given as TOML text or as a JSON object: `Err((status, field,
/// message))`.
pub(crate) fn toml_text(
    v: &serde_json::Value,
    field: &str,
) -> Result<String, (u16, String, String)> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Object(_) => {
            toml::to_string(v).map_err(|e| (422, field.to_string(), format!("{field}: {e}")))
        }
        _ => Err((
            422,
            field.to_string(),
            format!("{field} must be TOML text or a JSON object"),
        )),
    }
}

/// The shape of every error body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documentation of the wire format only
pub struct ProblemBody {
    /// Always `about:blank`.
    r#type: String,
    /// HTTP status.
    status: u16,
    /// The status's reason phrase.
    title: String,
    /// What went wrong.
    detail: String,
    /// The request field at fault, when one is.
    field: Option<String>,
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "sluice", description = "Jobs, schedules, mix previews and the catalog of curated training data"),
    paths(readyz, metrics, submit, list_jobs, get_job, cancel_job, job_report, crate::ui::report_page, crate::ui::whoami, mix_preview, datasets, add_schedule, list_schedules, delete_schedule, crate::ablations::submit, crate::ablations::list, crate::ablations::one, crate::ablations::cancel, crate::ablations::report, crate::diversity::json, crate::diversity::page),
    components(schemas(Job, Schedule, JobRequest, ScheduleRequest, ProblemBody, crate::store::AblationRow, crate::ablations::AblationRequest)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

async fn openapi() -> Response {
    use utoipa::OpenApi;
    match ApiDoc::openapi().to_json() {
        Ok(json) => json_text(json),
        Err(e) => internal(e).into_response(),
    }
}
