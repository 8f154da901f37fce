//! In-process HTTP tests: every endpoint through the router, without a socket.

#![allow(clippy::disallowed_methods)] // tests write their fixtures directly

mod common;

use axum::http::StatusCode;
use common::*;
use sluice_server::State;
use std::sync::Arc;

fn job_body(paths: &str, key: Option<&str>) -> String {
    let pipeline = format!(
        "[[inputs]]\npaths = [{paths}]\ndomain = \"finance\"\n[[stages]]\ntype = \"exact_dedup\"\n[output]\ndir = \"ignored\"\nformats = [\"jsonl\"]\n"
    );
    let mut v = serde_json::json!({ "pipeline": pipeline });
    if let Some(k) = key {
        v["idempotency_key"] = serde_json::json!(k);
    }
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_once_with_auth_idempotency_and_reports() {
    let f = fixture(100);
    let workers = sluice_server::worker::start(f.state.clone());
    let body = job_body("\"logs.jsonl\"", Some("nightly-1"));
    let (s, p) = call(&f.state, "POST", "/v1/jobs", None, Some(body.clone())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{p}");
    let (s, _) = call(
        &f.state,
        "POST",
        "/v1/jobs",
        Some("nope"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(&f.state, "POST", "/v1/jobs", Some(READ), Some(body.clone())).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, job) = call(
        &f.state,
        "POST",
        "/v1/jobs",
        Some(WRITE),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    let (s, again) = call(&f.state, "POST", "/v1/jobs", Some(WRITE), Some(body)).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a duplicate key answers with the first job"
    );
    assert_eq!(again["id"], job["id"]);
    let done = wait_done(&f.state, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1);
    // Regression: progress was stale after success; it ends with the run's own totals.
    assert_eq!(done["progress"]["phase"], "done", "{done}");
    assert_eq!(done["progress"]["records"], 50, "{done}");
    assert_eq!(done["progress"]["percent"], 100.0, "{done}");
    assert!(
        done["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{done}"
    );
    let (s, report) = call(
        &f.state,
        "GET",
        &format!("/v1/jobs/{id}/report"),
        Some(READ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(report["totals"]["read"], 50);
    assert_eq!(report["totals"]["kept"], 50);
    // Paths are shown relative to their root: the job's folder under the output root.
    assert_eq!(done["output"], id.as_str());
    let out = f
        .state
        .config
        .output_root
        .join(done["output"].as_str().expect("output"));
    assert!(out.join("curated/part-00000.jsonl").is_file());
    let (s, list) = call(
        &f.state,
        "GET",
        "/v1/jobs?state=succeeded",
        Some(READ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(1));
    let (s, _) = call(&f.state, "GET", "/v1/jobs?state=weird", Some(READ), None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = call(&f.state, "GET", "/v1/jobs/j-999999", Some(READ), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The job's run registered itself in the catalog; datasets and previews see it.
    let (s, ds) = call(&f.state, "GET", "/v1/datasets", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK, "{ds}");
    assert_eq!(ds["runs"].as_array().map(Vec::len), Some(1), "{ds}");
    // Regression: strings came back Debug-quoted ("\"finance\"").
    assert_eq!(ds["groups"][0]["domain"], "finance", "{ds}");
    let (s, plan) = call(
        &f.state,
        "GET",
        "/mix?domain=finance&ratio=0.15",
        Some(READ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{plan}");
    assert_eq!(plan["pools"][0]["available_samples"], 50);
    assert!(
        plan["warnings"]
            .to_string()
            .contains("general pool (domain general, kind sft) is empty"),
        "{plan}"
    );
    let (s, p) = call(
        &f.state,
        "GET",
        "/mix?domain=finance&ratio=2",
        Some(READ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["field"], "ratio");
    let (s, p) = call(
        &f.state,
        "GET",
        "/mix?domain=finance&ratio=0.1&where=nope%20%3E%201",
        Some(READ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    // Regression: a column no run has was a raw polars plan dump; it names the columns.
    let detail = p["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("no column \"nope\"") && detail.contains("domain, task"),
        "{p}"
    );
    // The OpenAPI document, generated from the handlers.
    let (s, doc) = call(&f.state, "GET", "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    for p in [
        "/v1/jobs",
        "/v1/jobs/{id}/cancel",
        "/mix",
        "/v1/schedules/{id}",
        "/v1/datasets",
    ] {
        assert!(
            doc["paths"][p].is_object(),
            "{p} missing from /openapi.json"
        );
    }
    assert!(doc["components"]["schemas"]["Job"].is_object());
    // Health, readiness and metrics.
    let (s, _) = call(&f.state, "GET", "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, r) = call(&f.state, "GET", "/readyz", None, None).await;
    assert_eq!(
        (s, r["ready"].clone()),
        (StatusCode::OK, serde_json::json!(true))
    );
    let (s, m) = call(&f.state, "GET", "/metrics", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        m.as_str()
            .is_some_and(|m| m.contains("sluice_jobs{state=\"succeeded\"} 1")),
        "{m}"
    );
    f.state
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        w.join().expect("worker");
    }
}

#[tokio::test]
async fn bad_requests_get_problem_bodies() {
    let f = fixture(1);
    // Malformed JSON, a wrong field, oversize bodies.
    let (s, p) = call(
        &f.state,
        "POST",
        "/v1/jobs",
        Some(WRITE),
        Some("{not json".into()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{p}");
    assert_eq!(p["status"], 400);
    let (s, p) = call(
        &f.state,
        "POST",
        "/v1/jobs",
        Some(WRITE),
        Some("{\"pipelin\": 1}".into()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{p}");
    assert!(p["detail"].to_string().contains("pipelin"), "{p}");
    let huge = serde_json::json!({ "pipeline": "#".repeat(10_000) }).to_string();
    let (s, _) = call(&f.state, "POST", "/v1/jobs", Some(WRITE), Some(huge)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // An invalid pipeline names its field.
    let bad = serde_json::json!({ "pipeline": "[[inputs]]\npaths = [\"logs.jsonl\"]\n[[stages]]\ntype = \"length_filter\"\nmin_chars = \"x\"\n[output]\ndir = \"o\"\n" }).to_string();
    let (s, p) = call(&f.state, "POST", "/v1/jobs", Some(WRITE), Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert!(
        p["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("stages[0]"))
            && p["detail"].to_string().contains("expected usize"),
        "{p}"
    );
    // Paths outside the data roots: `..`, absolute elsewhere, a symlink pointing out.
    let outside = f.outside.join("secret.jsonl");
    for paths in [
        "\"../outside/secret.jsonl\"".to_string(),
        format!("{:?}", outside.display().to_string()),
        "\"link.jsonl\"".to_string(),
    ] {
        let (s, p) = call(
            &f.state,
            "POST",
            "/v1/jobs",
            Some(WRITE),
            Some(job_body(&paths, None)),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{paths}: {p}");
        assert!(
            p["field"]
                .as_str()
                .is_some_and(|f| f.starts_with("inputs[0]")),
            "{p}"
        );
    }
    assert!(f.data.join("logs.jsonl").is_file());
    // A full queue (limit 1, no worker running) answers 429.
    let (s, _) = call(
        &f.state,
        "POST",
        "/v1/jobs",
        Some(WRITE),
        Some(job_body("\"logs.jsonl\"", None)),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, p) = call(
        &f.state,
        "POST",
        "/v1/jobs",
        Some(WRITE),
        Some(job_body("\"logs.jsonl\"", None)),
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{p}");
    let (s, p) = call(
        &f.state,
        "POST",
        "/v1/jobs",
        Some(WRITE),
        Some(job_body("\"logs.jsonl\"", Some("new-key"))),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "a new key does not bypass the limit: {p}"
    );
    // Cancel needs a write token; a queued job is cancelled at once.
    let (_, list) = call(&f.state, "GET", "/v1/jobs", Some(READ), None).await;
    let id = list["jobs"][0]["id"].as_str().expect("id").to_string();
    let (s, _) = call(
        &f.state,
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        Some(READ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, job) = call(
        &f.state,
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        Some(WRITE),
        None,
    )
    .await;
    assert_eq!(
        (s, job["state"].clone()),
        (StatusCode::OK, serde_json::json!("cancelled"))
    );
    let (s, _) = call(
        &f.state,
        "GET",
        &format!("/v1/jobs/{id}/report"),
        Some(READ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A pseudo-random Chinese sentence per seed: distinct records are far from near-duplicates.
fn sentence(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..40)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_u32(0x4E00 + (x % 3000) as u32).unwrap_or('中')
        })
        .collect()
}

fn dialogues(seeds: impl Iterator<Item = u64>) -> String {
    seeds
        .map(|i| {
            serde_json::json!({"conversations": [
                {"from": "human", "value": sentence(i)},
                {"from": "gpt", "value": sentence(i + 1_000_000)}
            ]})
            .to_string()
                + "\n"
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_take_only_new_files_and_drop_what_earlier_runs_kept() {
    // Ticks every second: the test waits for two of them.
    let f = fixture_with(100, |c| c.min_schedule_interval = 1);
    let incoming = f.data.join("incoming");
    std::fs::create_dir_all(&incoming).expect("incoming");
    std::fs::write(incoming.join("day1.jsonl"), dialogues(0..50)).expect("day1");
    let mut threads = sluice_server::worker::start(f.state.clone());
    threads.push(sluice_server::schedule::start(f.state.clone()));
    let pipeline = "[[inputs]]\npaths = []\ndomain = \"finance\"\n[output]\ndir = \"x\"\nformats = [\"jsonl\"]\n";
    let body = serde_json::json!({ "cron": "* * * * * *", "pipeline": pipeline, "input_prefix": "incoming" });
    let (s, _) = call(
        &f.state,
        "POST",
        "/v1/schedules",
        Some(READ),
        Some(body.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let bad = serde_json::json!({ "cron": "every day", "pipeline": pipeline, "input_prefix": "incoming" });
    let (s, p) = call(
        &f.state,
        "POST",
        "/v1/schedules",
        Some(WRITE),
        Some(bad.to_string()),
    )
    .await;
    assert_eq!(
        (s, p["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, serde_json::json!("cron"))
    );
    let out = serde_json::json!({ "cron": "* * * * * *", "pipeline": pipeline, "input_prefix": "../outside" });
    let (s, _) = call(
        &f.state,
        "POST",
        "/v1/schedules",
        Some(WRITE),
        Some(out.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, sched) = call(
        &f.state,
        "POST",
        "/v1/schedules",
        Some(WRITE),
        Some(body.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{sched}");
    let sid = sched["id"].as_str().expect("id").to_string();
    // First tick: day1's 50 dialogues.
    let first = wait_scheduled(&f.state, &sid, 1).await;
    let report = |job: &serde_json::Value| {
        let id = job["id"].as_str().expect("id").to_string();
        let state = f.state.clone();
        async move {
            call(
                &state,
                "GET",
                &format!("/v1/jobs/{id}/report"),
                Some(READ),
                None,
            )
            .await
            .1
        }
    };
    let r1 = report(&first).await;
    assert_eq!(r1["totals"]["read"], 50, "{r1}");
    assert_eq!(r1["totals"]["kept"], 50);
    // Day 2 brings 20 new dialogues and 10 repeats of day 1: only day2 is read, the repeats
    // are dropped against what the first run kept.
    std::fs::write(
        incoming.join("day2.jsonl"),
        dialogues((100..120).chain(0..10)),
    )
    .expect("day2");
    let second = wait_scheduled(&f.state, &sid, 2).await;
    let r2 = report(&second).await;
    assert_eq!(r2["totals"]["read"], 30, "{r2}");
    assert_eq!(r2["totals"]["kept"], 20, "{r2}");
    assert_eq!(
        r2["inputs"][0]["files"].as_array().map(Vec::len),
        Some(1),
        "only day2: {r2}"
    );
    let (s, list) = call(&f.state, "GET", "/v1/schedules", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK);
    // Times are RFC 3339 (UTC), not bare epoch seconds.
    assert!(
        list["schedules"][0]["last_success"]
            .as_str()
            .is_some_and(|t| t.contains('T') && t.ends_with('Z')),
        "{list}"
    );
    let (s, _) = call(
        &f.state,
        "DELETE",
        &format!("/v1/schedules/{sid}"),
        Some(WRITE),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(
        &f.state,
        "DELETE",
        &format!("/v1/schedules/{sid}"),
        Some(WRITE),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    f.state
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for t in threads {
        t.join().expect("thread");
    }
}

/// Wait until schedule `sid` has `n` succeeded jobs; returns the newest.
async fn wait_scheduled(state: &Arc<State>, sid: &str, n: usize) -> serde_json::Value {
    for _ in 0..600 {
        let (_, list) = call(state, "GET", "/v1/jobs", Some(READ), None).await;
        let jobs: Vec<serde_json::Value> = list["jobs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|j| j["schedule"] == sid)
            .collect();
        assert!(jobs.iter().all(|j| j["state"] != "failed"), "{jobs:?}");
        let done: Vec<&serde_json::Value> =
            jobs.iter().filter(|j| j["state"] == "succeeded").collect();
        if done.len() >= n {
            assert_eq!(done.len(), n, "one job per tick with new files: {jobs:?}");
            return done[0].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("schedule {sid} did not produce {n} jobs");
}

/// Regression: a schedule's pipeline is checked whole even while its folder has no file yet
/// (the "no file matches" of its first input hid every other mistake), and a folder that does
/// not exist yet is waited for, not counted as a failure.
#[tokio::test]
async fn a_schedule_is_checked_whole_before_files_arrive_and_waits_for_its_folder() {
    let f = fixture(100);
    std::fs::create_dir_all(f.data.join("incoming")).expect("incoming");
    let bad = "[[inputs]]\npaths = []\ndomain = \"finance\"\n[[stages]]\ntype = \"minhash_dedup\"\n[output]\ndir = \"x\"\n";
    for prefix in ["incoming", "not_yet"] {
        let body =
            serde_json::json!({ "cron": "0 2 * * *", "pipeline": bad, "input_prefix": prefix });
        let (s, p) = call(
            &f.state,
            "POST",
            "/v1/schedules",
            Some(WRITE),
            Some(body.to_string()),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{prefix}: {p}");
        assert_eq!(p["field"], "stages[0].type", "{p}");
        assert!(
            !p["detail"]
                .as_str()
                .unwrap_or("")
                .contains("no file matches"),
            "{p}"
        );
    }
    let good = "[[inputs]]\npaths = []\ndomain = \"finance\"\n[output]\ndir = \"x\"\n";
    let body =
        serde_json::json!({ "cron": "0 2 * * *", "pipeline": good, "input_prefix": "not_yet" });
    let (s, created) = call(
        &f.state,
        "POST",
        "/v1/schedules",
        Some(WRITE),
        Some(body.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let schedule = f.state.store.schedules().expect("schedules").remove(0);
    assert_eq!(
        sluice_server::schedule::tick(&f.state, &schedule),
        Ok(None),
        "nothing new yet"
    );
    let after = f.state.store.schedules().expect("schedules").remove(0);
    assert_eq!(after.failures, 0, "a folder not there yet is no failure");
    assert!(after.retry_at.is_none());
    assert!(after.last_tick.is_some());
}
