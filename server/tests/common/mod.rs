//! Shared fixture of the in-process HTTP tests: a service over a data root with a planted
//! file outside it, and one request through the router.

#![allow(dead_code)] // each test file uses its part
#![allow(clippy::disallowed_methods)] // tests write their fixtures directly

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use sluice_server::config::{hash_token, Scope, ServerConfig, TokenSpec};
use sluice_server::{app, State};
use std::sync::Arc;
use tower::ServiceExt;

pub const WRITE: &str = "write-token-123";
pub const READ: &str = "read-token-456";

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub data: std::path::PathBuf,
    pub outside: std::path::PathBuf,
    pub state: Arc<State>,
}

pub fn fixture(queue_limit: i64) -> Fixture {
    fixture_with(queue_limit, |_| {})
}

/// A fixture whose config `tweak` adjusts before the service opens.
pub fn fixture_with(queue_limit: i64, tweak: impl FnOnce(&mut ServerConfig)) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&data).expect("data");
    std::fs::create_dir_all(&outside).expect("outside");
    let line = |i: usize| {
        format!("{{\"conversations\": [{{\"from\": \"human\", \"value\": \"问题{i}：信用卡怎么还款？\"}}, {{\"from\": \"gpt\", \"value\": \"回答{i}：可以通过手机银行还款。\"}}]}}\n")
    };
    std::fs::write(
        data.join("logs.jsonl"),
        (0..50).map(line).collect::<String>(),
    )
    .expect("w");
    std::fs::write(outside.join("secret.jsonl"), line(0)).expect("w");
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.join("secret.jsonl"), data.join("link.jsonl"))
        .expect("symlink");
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".into(),
        data_roots: vec![data.clone()],
        output_root: dir.path().join("out"),
        concurrency: 1,
        threads_per_job: Some(1),
        queue_limit,
        body_limit: 4096,
        timezone: Some("+08:00".into()),
        allowed_urls: Vec::new(),
        max_glob_files: 100_000,
        min_schedule_interval: 60,
        anonymous_read: false,
        max_ablation_points: 8,
        max_train_steps: 5000,
        max_train_memory_mib: 8192,
        max_train_tokens: 1_000_000_000,
        tokens: vec![
            TokenSpec {
                name: "w".into(),
                sha256: hash_token(WRITE),
                scope: Scope::Write,
            },
            TokenSpec {
                name: "r".into(),
                sha256: hash_token(READ),
                scope: Scope::Read,
            },
        ],
    };
    tweak(&mut config);
    config.check().expect("config");
    let state = State::open(config).expect("state");
    Fixture {
        _dir: dir,
        data,
        outside,
        state,
    }
}

pub async fn call(
    state: &Arc<State>,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, Body::from))
        .expect("request");
    let resp = app(state.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::json!(String::from_utf8_lossy(&bytes)));
    (status, json)
}

/// Poll a job until it ends.
pub async fn wait_done(state: &Arc<State>, id: &str) -> serde_json::Value {
    for _ in 0..300 {
        let (_, job) = call(state, "GET", &format!("/v1/jobs/{id}"), Some(READ), None).await;
        if ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or("")) {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("job {id} did not finish");
}
