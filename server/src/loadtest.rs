//! A bounded load test on loopback: the service on an ephemeral port, N mix previews at C
//! concurrent connections, then M job submissions; latency percentiles and errors. Behind
//! `sluice bench serve`. Workers are not started, so submissions measure the API (compile the
//! pipeline, check paths, write the job store), not the jobs.

use crate::State;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Latencies of one phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Phase {
    /// What was sent.
    pub name: String,
    /// Requests.
    pub requests: usize,
    /// Answers other than the expected status.
    pub errors: usize,
    /// Wall seconds.
    pub seconds: f64,
    /// Milliseconds.
    pub p50_ms: f64,
    /// Milliseconds.
    pub p99_ms: f64,
    /// Milliseconds.
    pub max_ms: f64,
}

async fn request(addr: &str, raw: &str) -> Result<u16, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(raw.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(16)]).into_owned();
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(head)
}

async fn phase(
    name: &str,
    addr: &str,
    reqs: Vec<String>,
    expect: &'static [u16],
    concurrency: usize,
) -> Phase {
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(reqs.len());
    for raw in reqs {
        let sem = sem.clone();
        let addr = addr.to_string();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let t = Instant::now();
            let ok = matches!(request(&addr, &raw).await, Ok(code) if expect.contains(&code));
            (t.elapsed(), ok)
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok((d, ok)) => {
                lat.push(d.as_secs_f64() * 1e3);
                errors += usize::from(!ok);
            }
            Err(_) => errors += 1,
        }
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Phase {
        name: name.to_string(),
        requests: lat.len(),
        errors,
        seconds: started.elapsed().as_secs_f64(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
    }
}

/// Run the load test against a service over `state` (its output root holds the catalog).
/// `token` must be a write token of the state's config; `input` a file inside a data root.
pub async fn run(
    state: Arc<State>,
    token: &str,
    input: &str,
    previews: usize,
    jobs: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Phase>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let server = tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener,
        crate::app(state),
    )));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
    };
    let mut out = Vec::new();
    out.push(
        phase(
            "GET /healthz",
            &addr,
            (0..previews).map(|_| get("/healthz")).collect(),
            &[200],
            concurrency,
        )
        .await,
    );
    let paths = [
        "/mix?domain=finance&ratio=0.15&mode=cpt",
        "/mix?domain=medical&ratio=1:5",
        "/mix?domain=finance&ratio=0.2&where=region%20%3D%20%27east%27",
    ];
    out.push(
        phase(
            "GET /mix (3 previews, repeated)",
            &addr,
            (0..previews).map(|i| get(paths[i % paths.len()])).collect(),
            &[200],
            concurrency,
        )
        .await,
    );
    // Distinct previews (a different ratio each): every one is computed, none cached.
    out.push(
        phase(
            "GET /mix (all distinct, uncached)",
            &addr,
            (0..previews)
                .map(|i| {
                    get(&format!(
                        "/mix?domain=finance&ratio={}",
                        0.01 + (i as f64) * 0.9 / previews.max(1) as f64
                    ))
                })
                .collect(),
            &[200],
            concurrency,
        )
        .await,
    );
    let submit = |i: usize| {
        let pipeline = format!(
            "[[inputs]]\npaths = [{input:?}]\ndomain = \"finance\"\n[[stages]]\ntype = \"exact_dedup\"\n[output]\ndir = \"x{i}\"\n"
        );
        let body =
            serde_json::json!({ "pipeline": pipeline, "idempotency_key": format!("load-{i}") })
                .to_string();
        format!(
            "POST /v1/jobs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    out.push(
        phase(
            "POST /v1/jobs",
            &addr,
            (0..jobs).map(submit).collect(),
            &[200, 201],
            concurrency,
        )
        .await,
    );
    server.abort();
    Ok(out)
}
