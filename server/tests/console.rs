//! The console's routes through the router: the page is open and holds no data, everything it
//! shows needs the API's tokens, what it draws is escaped, and a job's report page carries no
//! server path.

#![allow(clippy::disallowed_methods)] // tests write their fixtures directly

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use sluice_server::{app, State};
use std::sync::Arc;
use tower::ServiceExt;

/// A GET with its headers and body as text.
async fn get(
    state: &Arc<State>,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = Request::builder().method("GET").uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app(state.clone())
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn the_page_and_script_are_open_hold_no_data_and_allow_only_their_own_script() {
    let f = fixture(100);
    let (s, h, page) = get(&f.state, "/ui", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("script-src 'self' 'unsafe"), "{csp}");
    assert!(page.contains("<script src=\"/ui/console.js\""));
    assert!(!page.contains("<script>"), "no inline script");
    let (s, h, js) = get(&f.state, "/ui/console.js", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/javascript"));
    assert!(js.contains("sessionStorage") && js.contains("Authorization"));
    // API answers, errors included, are never sniffed or cached either.
    for (uri, token) in [
        ("/v1/jobs", Some(READ)),
        ("/v1/jobs", None),
        ("/healthz", None),
    ] {
        let (_, h, _) = get(&f.state, uri, token).await;
        assert_eq!(h["x-content-type-options"], "nosniff", "{uri}");
        assert_eq!(h["cache-control"], "no-store", "{uri}");
    }
    // Who the token is, for the console's header.
    let (s, me) = call(&f.state, "GET", "/v1/whoami", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me, serde_json::json!({"name": "r", "scope": "read"}));
    let (s, _) = call(&f.state, "GET", "/v1/whoami", Some("wrong"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Nothing the console shows comes without a token.
    for uri in [
        "/ui/mix?domain=finance&ratio=1:5",
        "/ui/catalog",
        "/v1/jobs/j-000001/report.html",
        "/v1/datasets?by=task",
        "/v1/whoami",
    ] {
        let (s, _, body) = get(&f.state, uri, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}: {body}");
        let (s, _, body) = get(&f.state, uri, Some("wrong")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_report_page_catalog_and_preview_are_drawn_escaped() {
    let f = fixture(100);
    // A sample that is markup, long enough to be dropped (so the report quotes it).
    std::fs::write(
        f.data.join("xss.jsonl"),
        "{\"conversations\": [{\"from\": \"human\", \"value\": \"<script>alert(1)</script>\"}, {\"from\": \"gpt\", \"value\": \"<img src=x onerror=alert(2)>\"}]}\n",
    )
    .expect("write");
    let workers = sluice_server::worker::start(f.state.clone());
    let pipeline = "[[inputs]]\npaths = [\"logs.jsonl\", \"xss.jsonl\"]\ndomain = \"finance\"\ntask = \"<b>qa</b>\"\n[[stages]]\ntype = \"length_filter\"\nmax_chars = 40\n[output]\ndir = \"x\"\nformats = [\"jsonl\"]\n";
    let body = serde_json::json!({ "pipeline": pipeline }).to_string();
    let (s, job) = call(&f.state, "POST", "/v1/jobs", Some(WRITE), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    let done = wait_done(&f.state, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    f.state
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    f.state.wake.notify_waiters();
    for w in workers {
        let _ = w.join();
    }

    let (_, report) = call(
        &f.state,
        "GET",
        &format!("/v1/jobs/{id}/report"),
        Some(READ),
        None,
    )
    .await;
    let (s, h, page) = get(&f.state, &format!("/v1/jobs/{id}/report.html"), Some(READ)).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(h["content-security-policy"]
        .to_str()
        .expect("csp")
        .contains("sandbox"));
    let t = &report["totals"];
    assert_eq!(t["read"], 51, "{report}");
    assert_eq!(t["dropped"], 1, "{report}");
    assert!(page.contains(&format!("<td>{}</td><td>{}</td>", t["read"], t["kept"])));
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the dropped sample is quoted as text"
    );
    assert!(
        !page.contains("<script") && !page.contains("<img"),
        "no markup from the data"
    );
    let root = f
        .data
        .parent()
        .expect("root")
        .to_string_lossy()
        .into_owned();
    assert!(!page.contains(&root), "no server path in the page");
    assert!(page.contains("logs.jsonl"));
    let (s, _, _) = get(&f.state, "/v1/jobs/j-999999/report.html", Some(READ)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The catalog by task: the task name is data, drawn as text.
    let (s, _, html) = get(&f.state, "/ui/catalog?by=domain,task", Some(READ)).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(
        html.contains("<td>finance</td><td>&lt;b&gt;qa&lt;/b&gt;</td><td>50</td>"),
        "{html}"
    );
    assert!(html.contains("<svg") && !html.contains("<b>"));
    let (s, api) = call(&f.state, "GET", "/v1/datasets?by=task", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(api["groups"][0]["task"], "<b>qa</b>", "{api}");
    assert_eq!(api["groups"][0]["samples"], 50);
    for (uri, field) in [
        ("/ui/catalog?by=nope", "by"),
        ("/ui/catalog?by=a;b", "by"),
        ("/ui/catalog?by=samples", "by"),
        ("/v1/datasets?by=examples", "by"),
        ("/v1/datasets?by=domain&where=read_csv('x')", "where"),
        (
            "/ui/catalog?by=domain&where=lower(domain)%20%3D%20'x'",
            "where",
        ),
    ] {
        let (s, p) = call(&f.state, "GET", uri, Some(READ), None).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {p}");
        assert_eq!(p["field"], field, "{uri}: {p}");
    }

    // Conditions shaped against the SQL parser: a long chain answers, deep nesting is refused
    // at once (they overflowed the stack of a request's thread, or took exponential time).
    let chain = vec!["samples > 0"; 250].join(" AND ");
    let (s, p) = call(
        &f.state,
        "GET",
        &format!("/v1/datasets?by=domain&where={}", urlencode(&chain)),
        Some(READ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["groups"][0]["samples"], 50, "{p}");
    let started = std::time::Instant::now();
    let nots = format!("{}samples > 0", "NOT ".repeat(60));
    let (s, p) = call(
        &f.state,
        "GET",
        &format!("/ui/catalog?by=domain&where={}", urlencode(&nots)),
        Some(READ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert!(
        p["detail"].as_str().unwrap_or("").len() < 600,
        "the condition is not echoed whole"
    );

    // The preview drawn matches the preview's JSON.
    let (s, plan) = call(
        &f.state,
        "GET",
        "/mix?domain=finance&ratio=1:1",
        Some(READ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{plan}");
    let (s, _, html) = get(&f.state, "/ui/mix?domain=finance&ratio=1:1", Some(READ)).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains(&format!(
        "<b id=\"mix-total\">{}</b>",
        plan["total"].as_f64().expect("total").round() as u64
    )));
    assert!(html.contains("<svg") && html.contains("id=\"mix-pools\""));
    for w in plan["warnings"].as_array().expect("warnings") {
        let w = w.as_str().expect("text");
        assert!(
            html.contains(
                &w.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&quot;")
                    .replace('\'', "&#39;")
            ),
            "{w}"
        );
    }
    let (s, p) = call(
        &f.state,
        "GET",
        "/ui/mix?domain=finance&ratio=x",
        Some(READ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["field"], "ratio");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}
