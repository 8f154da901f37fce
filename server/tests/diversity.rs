//! `GET /v1/jobs/{id}/diversity[.html]`: the statistics of a succeeded job's samples, counted
//! as its report counts them; a read token is needed, parameters are allow-listed, and no
//! server path comes back.

#![allow(clippy::disallowed_methods)] // tests write their fixtures directly

mod common;

use axum::http::StatusCode;
use common::*;
use std::sync::atomic::Ordering;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_diversity_counts_what_it_kept() {
    let f = fixture(100);
    let workers = sluice_server::worker::start(f.state.clone());
    let body = serde_json::json!({
        "pipeline": "[[inputs]]\npaths = [\"logs.jsonl\"]\ndomain = \"finance\"\ntask = \"repay\"\n[output]\ndir = \"x\"\nformats = [\"jsonl\"]\n"
    })
    .to_string();
    let (s, job) = call(&f.state, "POST", "/v1/jobs", Some(WRITE), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    let done = wait_done(&f.state, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, report) = call(
        &f.state,
        "GET",
        &format!("/v1/jobs/{id}/report"),
        Some(READ),
        None,
    )
    .await;
    let kept = report["totals"]["kept"].as_u64().expect("kept");
    let uri = format!("/v1/jobs/{id}/diversity");
    let (s, d) = call(&f.state, "GET", &uri, Some(READ), None).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["overall"]["count"], kept);
    assert_eq!(d["groups"][0]["domain"], "finance");
    assert_eq!(d["groups"][0]["task"], "repay");
    assert_eq!(d["groups"][0]["turns"]["1"], kept, "one user turn each");
    let root = f.data.parent().expect("tmp").to_string_lossy().to_string();
    assert!(!d.to_string().contains(&root), "{d}");
    let (s, page) = call(&f.state, "GET", &format!("{uri}.html"), Some(READ), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.as_str().is_some_and(|p| p.contains("finance / repay")));
    // Auth, parameters, unknown and unfinished jobs.
    assert_eq!(
        call(&f.state, "GET", &uri, None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    for q in ["?split=../x", "?split=", "?where=1", "?split=a%2Fb"] {
        let (s, _) = call(&f.state, "GET", &format!("{uri}{q}"), Some(READ), None).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{q}");
    }
    let (s, _) = call(
        &f.state,
        "GET",
        &format!("{uri}?split=train"),
        Some(READ),
        None,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a run without that split says so"
    );
    assert_eq!(
        call(
            &f.state,
            "GET",
            "/v1/jobs/j-999999/diversity",
            Some(READ),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    f.state.stopping.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.join();
    }
}
