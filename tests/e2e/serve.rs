//! The service as a process: submit a job, kill -9 the service mid-run, start it again: the job
//! completes exactly once and its outputs are whole.

use crate::common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const TOKEN: &str = "restart-test-token";

/// Start `sluice serve`; returns the child and its address (read from its first stderr line).
pub(crate) fn start(config: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config", config.to_str().expect("utf8")])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start sluice serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("sluice serve exited before listening")
            .expect("stderr line");
        if let Some(a) = line.split("listening on http://").nth(1) {
            break a.trim().to_string();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// A minimal HTTP/1.1 exchange; returns (status, the whole body).
pub(crate) fn http_raw(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// A minimal HTTP/1.1 exchange of JSON; returns (status, body).
pub(crate) fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let (status, body) = http_raw(addr, method, path, body);
    // Chunked bodies: keep the JSON part.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if b >= a => body[a..=b].to_string(),
        _ => body,
    };
    (status, body)
}

fn job(addr: &str, id: &str) -> serde_json::Value {
    let (_, body) = http(addr, "GET", &format!("/v1/jobs/{id}"), None);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn a_killed_service_reruns_its_job_exactly_once_with_whole_outputs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("data");
    // Enough work to be killed in the middle: 200k dialogues through exact dedup.
    let mut text = String::with_capacity(60 << 20);
    for i in 0..200_000u64 {
        text += &format!(
            "{{\"conversations\": [{{\"from\": \"human\", \"value\": \"第{i}个问题：信用卡分期的手续费怎么算，提前还款有没有违约金？\"}}, {{\"from\": \"gpt\", \"value\": \"第{}条回答：分期手续费按期收取，提前还款是否收取违约金以合同为准。\"}}]}}\n",
            i % 1000
        );
    }
    std::fs::write(data.join("logs.jsonl"), text).expect("write");
    let config = tmp.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_roots = [\"data\"]\noutput_root = \"out\"\nthreads_per_job = 1\n[[tokens]]\nname = \"t\"\nsha256 = \"{}\"\nscope = \"write\"\n",
            sluice_server::config::hash_token(TOKEN)
        ),
    )
    .expect("config");
    let (mut child, addr) = start(&config);
    let pipeline = "batch_size = 256\n[[inputs]]\npaths = [\"logs.jsonl\"]\ndomain = \"finance\"\n[[stages]]\ntype = \"exact_dedup\"\n[output]\ndir = \"x\"\nformats = [\"jsonl\"]\n";
    let body = serde_json::json!({ "pipeline": pipeline, "idempotency_key": "once" }).to_string();
    let (status, resp) = http(&addr, "POST", "/v1/jobs", Some(&body));
    assert_eq!(status, 201, "{resp}");
    let id = serde_json::from_str::<serde_json::Value>(&resp).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    // Wait until it is running and has made progress, then kill -9.
    let started = Instant::now();
    loop {
        let j = job(&addr, &id);
        if j["state"] == "running" && j["progress"]["records"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            j["state"] != "succeeded",
            "the job finished before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never started: {j}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    child.wait().ok();
    let out = tmp.path().join("out").join(&id);
    assert!(
        !out.join("report.json").exists(),
        "nothing published by the killed run"
    );
    // Start again: the job runs once more from a clean state and succeeds.
    let (mut child, addr) = start(&config);
    let (status, again) = http(&addr, "POST", "/v1/jobs", Some(&body));
    assert_eq!(
        status, 200,
        "the idempotency key still names the job: {again}"
    );
    let started = Instant::now();
    let done = loop {
        let j = job(&addr, &id);
        if j["state"] == "succeeded" || j["state"] == "failed" {
            break j;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no finish: {j}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().ok();
    child.wait().ok();
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "run once before the kill, once after");
    let report = read_json(&out.join("report.json"));
    assert_reconciles(&report);
    assert_eq!(report["totals"]["read"], 200_000);
    let kept = report["totals"]["kept"].as_u64().expect("kept");
    let lines: usize = std::fs::read_dir(out.join("curated"))
        .expect("curated")
        .flatten()
        .map(|e| {
            std::fs::read_to_string(e.path())
                .expect("read")
                .lines()
                .count()
        })
        .sum();
    assert_eq!(lines as u64, kept, "the curated output is whole");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("out"))
        .expect("out")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("staging"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
