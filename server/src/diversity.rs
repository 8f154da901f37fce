//! `GET /v1/jobs/{id}/diversity` and `…/diversity.html`: the diversity and balance of a
//! succeeded job's curated samples ([`sluice_lab::diversity`]), computed once per job and split
//! (at most one per core at a time, like previews) and kept in memory (the last 64).

use crate::routes::{crashed, internal, require_read, Problem};
use crate::State;
use axum::extract::{Path, Query, State as AxState};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The routes.
pub fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/v1/jobs/{id}/diversity", get(json))
        .route("/v1/jobs/{id}/diversity.html", get(page))
}

/// Compute (or recall) a job's statistics, paths shown relative to their roots.
async fn compute(
    state: &Arc<State>,
    headers: &HeaderMap,
    id: &str,
    q: &BTreeMap<String, String>,
) -> Result<sluice_lab::diversity::Diversity, Problem> {
    require_read(state, headers)?;
    if let Some(k) = q.keys().find(|k| k.as_str() != "split") {
        return Err(Problem::new(422, format!("unknown parameter {k:?} (split)")).field(k.clone()));
    }
    let split = q.get("split").cloned();
    if let Some(s) = &split {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(
                Problem::new(422, format!("split {s:?} is not a split name")).field("split"),
            );
        }
    }
    let Some(job) = state.store.get(id).map_err(internal)? else {
        return Err(Problem::new(404, format!("no job {id}")));
    };
    if job.state != "succeeded" {
        return Err(Problem::new(
            404,
            format!(
                "job {id} is {}: its samples are there once it succeeds",
                job.state
            ),
        ));
    }
    let key = (id.to_string(), split.clone().unwrap_or_default());
    if let Some(hit) = state
        .diversity_cache
        .lock()
        .ok()
        .and_then(|c| c.get(&key).cloned())
    {
        return Ok(hit);
    }
    let _slot = state.preview_slots.acquire().await.map_err(internal)?;
    let st = state.clone();
    let run = PathBuf::from(&job.output);
    let d = tokio::task::spawn_blocking(move || {
        sluice_lab::diversity::compute(&sluice_lab::diversity::Options {
            run,
            split,
            sample: 5000,
            k: 8,
            max_share: 0.5,
            seed: 42,
        })
        .map_err(|e| st.config.relative_paths(&format!("{e:#}")))
    })
    .await
    .map_err(crashed)?
    .map_err(|e| Problem::new(422, e))?;
    let mut d = d;
    d.run = state.config.relative_paths(&d.run);
    for f in &mut d.files {
        *f = state.config.relative_paths(f);
    }
    if let Ok(mut c) = state.diversity_cache.lock() {
        if c.len() >= 64 {
            c.clear();
        }
        c.insert(key, d.clone());
    }
    Ok(d)
}

#[utoipa::path(get, path = "/v1/jobs/{id}/diversity", params(("id" = String, Path, description = "Job id"), ("split" = Option<String>, Query, description = "Only this split (and its <split>_* parts)")), responses((status = 200, description = "Counts, lengths, turns, difficulty, instruction types, near-duplicate clusters, topics and warnings per domain and task"), (status = 404, description = "No such job, or it has not succeeded", body = crate::routes::ProblemBody), (status = 422, description = "Bad parameter", body = crate::routes::ProblemBody)))]
pub(crate) async fn json(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    let d = compute(&state, &headers, &id, &q).await?;
    Ok(axum::Json(d).into_response())
}

#[utoipa::path(get, path = "/v1/jobs/{id}/diversity.html", params(("id" = String, Path, description = "Job id"), ("split" = Option<String>, Query, description = "Only this split")), responses((status = 200, description = "The statistics as a page", content_type = "text/html"), (status = 404, description = "No such job, or it has not succeeded", body = crate::routes::ProblemBody)))]
pub(crate) async fn page(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    let d = compute(&state, &headers, &id, &q).await?;
    Ok(crate::ui::html_fragment(sluice_lab::diversity_html::html(
        &d,
    )))
}
