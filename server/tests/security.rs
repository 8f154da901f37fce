//! The service as an attacker meets it: every path a pipeline can name, every query a request
//! can carry, every read without a token. A secret is planted outside the data roots; no
//! response, job record, report or output may ever carry it, and nothing outside the roots
//! may be read, written, listed or fetched.

#![allow(clippy::disallowed_methods)] // tests write their fixtures directly

mod common;

use axum::http::StatusCode;
use common::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const SECRET: &str = "PLANTED-SECRET-7f3a9c";

/// Files outside the data root that every attack below aims at, each holding the secret.
fn plant(outside: &Path) {
    let w = |name: &str, text: String| {
        let p = outside.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    w("secret.csv", format!("{SECRET},x\n1,2\n"));
    w("secret.toml", format!("{SECRET} = 1\n"));
    w("secret.txt", format!("{SECRET}\n"));
    w("template.toml", format!("{SECRET}\nname = 1\n"));
    w("profiles.csv", format!("user_id,age\nu1,{SECRET}\n"));
    w("words/ads.txt", format!("{SECRET}\n"));
    w("tokenizer.json", format!("{{\"{SECRET}\": 1}}"));
    w("eval.jsonl", format!("{{\"text\": \"{SECRET}\"}}\n"));
    w("model.bin", SECRET.to_string());
}

/// Every file under `dir` (not following links), for scanning outputs and records.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

fn assert_no_secret_under(dir: &Path) {
    for f in files_under(dir) {
        let mut bytes = Vec::new();
        if let Ok(mut h) = std::fs::File::open(&f) {
            let _ = h.read_to_end(&mut bytes);
        }
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET),
            "the secret leaked into {}",
            f.display()
        );
    }
}

fn pipeline(inputs: &str, stages: &str, output: &str) -> String {
    let body = serde_json::json!({
        "pipeline": format!("[[inputs]]\npaths = [{inputs}]\ndomain = \"finance\"\n{stages}[output]\n{output}formats = [\"jsonl\"]\n")
    });
    body.to_string()
}

fn with_stage(stage: &str) -> String {
    pipeline(
        "\"logs.jsonl\"",
        &format!("[[stages]]\n{stage}\n"),
        "dir = \"x\"\n",
    )
}

/// Submit and expect `status`, with `field` named and no secret in the answer.
async fn refused(f: &Fixture, body: String, status: StatusCode, field: &str) -> serde_json::Value {
    let (s, p) = call(
        &f.state,
        "POST",
        "/v1/jobs",
        Some(WRITE),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, status, "{body}\n→ {p}");
    assert_eq!(p["field"], field, "{body}\n→ {p}");
    assert!(!p.to_string().contains(SECRET), "{p}");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_a_pipeline_names_is_confined() {
    let f = fixture(100);
    plant(&f.outside);
    let out = f.outside.display().to_string();
    let forbidden = StatusCode::FORBIDDEN;
    // A link to a folder outside, then `..`: the kernel opens `outside/…` while a lexical fold
    // says `data/outside/…` (the attacker walk's way out).
    #[cfg(unix)]
    std::os::unix::fs::symlink(&f.outside, f.data.join("outlink")).expect("link");
    let up = "outlink/../outside";
    // Every stage's files and folders.
    for (stage, field) in [
        (
            format!("type = \"rules\"\nfiles = [\"{out}/secret.toml\"]"),
            "stages[0].files[0]",
        ),
        (
            format!("type = \"filler\"\nrules = \"{out}/secret.toml\""),
            "stages[0].rules",
        ),
        (
            format!("type = \"pii\"\nrules = \"{out}/secret.toml\""),
            "stages[0].rules",
        ),
        (
            format!("type = \"quality\"\nrules = \"{out}/secret.toml\""),
            "stages[0].rules",
        ),
        (
            format!("type = \"tags\"\nprofiles = \"{out}/profiles.csv\""),
            "stages[0].profiles",
        ),
        (
            "type = \"tags\"\nprofiles = \"../outside/profiles.csv\"".to_string(),
            "stages[0].profiles",
        ),
        (
            format!("type = \"sensitive\"\ndir = \"{out}/words\""),
            "stages[0].dir",
        ),
        (
            "type = \"sensitive\"\ndir = \"../outside/words\"".to_string(),
            "stages[0].dir",
        ),
        (
            format!("type = \"decontaminate\"\neval = [\"{out}/eval.jsonl\"]"),
            "stages[0].eval[0]",
        ),
        (
            format!("type = \"classify\"\nmodel = \"{out}/model.bin\""),
            "stages[0].model",
        ),
        (
            format!(
                "type = \"truncate\"\nmax_source_tokens = 8\ntokenizer = \"{out}/tokenizer.json\""
            ),
            "stages[0].tokenizer",
        ),
        (
            format!("type = \"minhash\"\nindex = \"{out}/index\""),
            "stages[0].index",
        ),
        (
            "type = \"minhash\"\nindex = \"idx\"".to_string(),
            "stages[0].index",
        ),
        (
            format!("type = \"rules\"\nfiles = [\"{up}/secret.toml\"]"),
            "stages[0].files[0]",
        ),
        (
            format!("type = \"tags\"\nprofiles = \"{up}/profiles.csv\""),
            "stages[0].profiles",
        ),
        (
            format!("type = \"tags\"\nprofiles = \"{up}/missing.csv\""),
            "stages[0].profiles",
        ),
        (
            format!("type = \"sensitive\"\ndir = \"{up}/words\""),
            "stages[0].dir",
        ),
        (
            format!("type = \"pii\"\nrules = \"{up}/secret.toml\""),
            "stages[0].rules",
        ),
        (
            "type = \"filler\"\nrules = \"sluice:..\"".to_string(),
            "stages[0].rules",
        ),
        (
            "type = \"filler\"\nrules = \"file:///etc/passwd\"".to_string(),
            "stages[0].rules",
        ),
    ] {
        refused(&f, with_stage(&stage), forbidden, field).await;
    }
    assert!(
        !f.outside.join("index").exists(),
        "no folder was created outside"
    );
    assert!(
        !f.data.join("idx").exists(),
        "nothing was written into a data root"
    );
    // The shards' tokenizer and template, the catalog's tokenizer.
    for (section, field) in [
        (
            format!("[output.shards]\ntokenizer = \"{out}/tokenizer.json\"\n"),
            "output.shards.tokenizer",
        ),
        (
            format!(
                "[output.shards]\ntokenizer = \"logs.jsonl\"\ntemplate = \"{out}/template.toml\"\n"
            ),
            "output.shards.template",
        ),
        (
            format!("[output.catalog]\ntokenizer = \"{out}/tokenizer.json\"\n"),
            "output.catalog.tokenizer",
        ),
        (
            format!(
                "[output.shards]\ntokenizer = \"logs.jsonl\"\ntemplate = \"{up}/template.toml\"\n"
            ),
            "output.shards.template",
        ),
    ] {
        let body = serde_json::json!({
            "pipeline": format!("[[inputs]]\npaths = [\"logs.jsonl\"]\n[output]\ndir = \"x\"\n{section}")
        })
        .to_string();
        refused(&f, body, forbidden, field).await;
    }
    // Outputs at URLs: none allowed by default (file:// elsewhere, another job's run, s3).
    let root = f.state.config.output_root.display().to_string();
    for dir in [
        format!("file://{out}/run"),
        format!("file://{root}/j-000001"),
        "s3://bucket/prefix".to_string(),
        "FILE:///tmp/x".to_string(),
    ] {
        let body = pipeline("\"logs.jsonl\"", "", &format!("dir = \"{dir}\"\n"));
        refused(&f, body, forbidden, "output.dir").await;
    }
    assert!(!f.outside.join("run").exists());
    // Inputs: `..`, absolute, symlinks, URLs, globs reaching out.
    for paths in [
        "\"../outside/secret.csv\"".to_string(),
        format!("\"{out}/secret.csv\""),
        "\"link.jsonl\"".to_string(),
        "\"*.jsonl\"".to_string(), // matches link.jsonl, which points out
        "\"../outside/*.csv\"".to_string(),
        "\"/usr/**/*\"".to_string(),
        "\"/**/secret.csv\"".to_string(),
        format!("\"file://{out}/secret.csv\""),
        "\"s3://bucket/logs/*.jsonl\"".to_string(),
        "\"http://127.0.0.1:9/x.jsonl\"".to_string(),
        format!("\"{up}/secret.csv\""),
        format!("\"{up}/*.csv\""),
    ] {
        let body = pipeline(&paths, "", "dir = \"x\"\n");
        refused(&f, body, forbidden, "inputs[0].paths").await;
    }
    // Encoded dots are names, not parents: nothing outside is reached.
    let body = pipeline("\"%2e%2e/outside/secret.csv\"", "", "dir = \"x\"\n");
    refused(
        &f,
        body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "inputs[0].paths",
    )
    .await;
    // Messages show what the pipeline wrote, never the server's folders.
    let stage = "type = \"filler\"\nrules = \"sluice:..\"";
    let p = refused(&f, with_stage(stage), forbidden, "stages[0].rules").await;
    let bundled = sluice_pipeline::confine::bundled_root().expect("bundled root");
    let parent = bundled.parent().expect("parent").display().to_string();
    assert!(!p.to_string().contains(&parent), "{p}");
    assert!(
        !p.to_string().contains(&f.data.display().to_string()),
        "{p}"
    );
    // Nothing was queued, and the planted secret is nowhere under the output root.
    let (_, list) = call(&f.state, "GET", "/v1/jobs", Some(READ), None).await;
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(0), "{list}");
    assert_no_secret_under(&f.state.config.output_root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_rules_are_allowed_by_name_and_jobs_write_only_their_folder() {
    let f = fixture(100);
    plant(&f.outside);
    let workers = sluice_server::worker::start(f.state.clone());
    let stages = "[[stages]]\ntype = \"sensitive\"\ndir = \"sluice:sensitive_words\"\n[[stages]]\ntype = \"rules\"\nfiles = [\"sluice:rules/business/ai_sales.toml\"]\n[[stages]]\ntype = \"filler\"\n";
    let body = pipeline("\"logs.jsonl\"", stages, "dir = \"/tmp/elsewhere\"\n");
    let (s, job) = call(&f.state, "POST", "/v1/jobs", Some(WRITE), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    let done = wait_done(&f.state, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    // The local output.dir is replaced by the job's own folder.
    let expected = f.state.config.output_root.join(&id);
    assert_eq!(
        done["output"],
        id.as_str(),
        "paths are shown relative to their root"
    );
    assert!(expected.join("curated/part-00000.jsonl").is_file());
    assert!(!Path::new("/tmp/elsewhere/curated").exists());
    // A bundled name cannot climb out of the bundled folders.
    let stage = "type = \"rules\"\nfiles = [\"sluice:rules/../../../../etc/passwd\"]";
    refused(
        &f,
        with_stage(stage),
        StatusCode::FORBIDDEN,
        "stages[0].files[0]",
    )
    .await;
    f.state.stopping.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.join();
    }
    assert_no_secret_under(&f.state.config.output_root);
}

/// A loopback listener that counts connections: nothing may ever reach it.
fn canary() -> (String, Arc<AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for _ in l.incoming() {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mix_where_accepts_conditions_only() {
    let f = fixture(100);
    plant(&f.outside);
    let (addr, hits) = canary();
    let secret = f.outside.join("secret.csv").display().to_string();
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    for w in [
        format!("domain IN (SELECT x FROM read_csv('{secret}'))"),
        format!("domain in (select * from READ_CSV('{secret}'))"),
        format!("domain IN (SeLeCt * FrOm Read_Csv('{secret}'))"),
        format!("domain IN (SELECT * FROM read_parquet('{secret}'))"),
        format!("domain IN (SELECT * FROM read_ndjson('{secret}'))"),
        format!("domain IN (SELECT * FROM read_json('{secret}'))"),
        format!("domain IN (SELECT * FROM read_ipc('{secret}'))"),
        format!("domain IN (SELECT * FROM read_csv('http://{addr}/x.csv'))"),
        format!("\"read_csv\"('{secret}') IS NULL"),
        "lower(domain) = 'finance'".to_string(),
        "domain = (SELECT 1)".to_string(),
        "domain = 'x'; SELECT 1".to_string(),
        "t.domain = 'x'".to_string(),
        format!("domain = 'x' OR 1 IN (SELECT 1 FROM read_csv('{secret}'))"),
    ] {
        let uri = format!("/mix?domain=finance&ratio=0.15&where={}", enc(&w));
        let (s, p) = call(&f.state, "GET", &uri, Some(READ), None).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{w}: {p}");
        assert!(!p.to_string().contains(SECRET), "{w}: {p}");
        assert!(!p.to_string().contains("panicked"), "{w}: {p}");
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the server fetched a URL");
    // The same rule in a submitted pipeline's mix stage.
    let stage = format!("type = \"mix\"\nratio = \"1:5\"\npools.domain = {{ domain = \"finance\" }}\nwhere = \"domain IN (SELECT x FROM read_csv('{secret}'))\"");
    let p = refused(
        &f,
        with_stage(&stage),
        StatusCode::UNPROCESSABLE_ENTITY,
        "stages[0]",
    )
    .await;
    assert!(p["detail"].to_string().contains("not allowed"), "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_a_token_unless_anonymous_reads_are_on() {
    let f = fixture_with(100, |c| {
        c.tokens.push(sluice_server::config::TokenSpec {
            name: "prom".into(),
            sha256: sluice_server::config::hash_token("metrics-token"),
            scope: sluice_server::config::Scope::Metrics,
        })
    });
    let guarded = [
        "/v1/jobs",
        "/v1/jobs/j-000001",
        "/v1/jobs/j-000001/report",
        "/v1/schedules",
        "/v1/datasets",
        "/metrics",
        "/mix?domain=finance&ratio=0.15",
    ];
    for uri in guarded {
        let (s, p) = call(&f.state, "GET", uri, None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}: {p}");
        assert_eq!(p["status"], 401, "{uri}: problem body {p}");
        let (s, _) = call(&f.state, "GET", uri, Some("wrong"), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
        let (s, _) = call(&f.state, "GET", uri, Some(READ), None).await;
        assert_ne!(s, StatusCode::UNAUTHORIZED, "{uri}");
        assert_ne!(s, StatusCode::FORBIDDEN, "{uri}");
    }
    let (s, _) = call(&f.state, "GET", "/metrics", Some("metrics-token"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&f.state, "GET", "/v1/jobs", Some("metrics-token"), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        let (s, _) = call(&f.state, "GET", open, None, None).await;
        assert_eq!(s, StatusCode::OK, "{open}");
    }
    let anon = fixture_with(100, |c| c.anonymous_read = true);
    let (s, _) = call(&anon.state, "GET", "/v1/jobs", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&anon.state, "POST", "/v1/jobs", None, Some("{}".into())).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "anonymous reads never open writes"
    );
}

#[tokio::test]
async fn every_error_is_a_problem_body() {
    let f = fixture(100);
    let huge = serde_json::json!({ "pipeline": "#".repeat(10_000) }).to_string();
    for (method, uri, body, status) in [
        ("POST", "/v1/jobs", Some(huge), 413),
        ("GET", "/nope", None, 404),
        ("DELETE", "/v1/jobs", None, 405),
        ("GET", "/v1/jobs?limit=abc", None, 400),
    ] {
        let (s, p) = call(&f.state, method, uri, Some(WRITE), body).await;
        assert_eq!(s.as_u16(), status, "{method} {uri}: {p}");
        assert_eq!(
            p["status"], status,
            "{method} {uri}: not a problem body: {p}"
        );
        assert!(p["detail"].is_string(), "{p}");
    }
}

#[test]
fn the_output_root_is_never_a_data_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (data, out) in [("d", "d"), ("d", "d/out"), ("d/in", "d")] {
        std::fs::create_dir_all(dir.path().join(data)).expect("mkdir");
        let mut c = fixture(1).state.config.clone();
        c.data_roots = vec![dir.path().join(data)];
        c.output_root = dir.path().join(out);
        assert!(c.check().is_err(), "{data} / {out} overlap");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_spaced_bounded_and_forgotten_when_deleted() {
    let f = fixture(1);
    std::fs::create_dir_all(f.data.join("incoming")).expect("mkdir");
    let sched = |cron: &str| {
        serde_json::json!({
            "cron": cron,
            "input_prefix": "incoming",
            "pipeline": "[[inputs]]\npaths = []\n[output]\ndir = \"x\"\n",
        })
        .to_string()
    };
    for cron in ["* * * * * *", "*/10 * * * * *", "0,30 * * * * *"] {
        let (s, p) = call(
            &f.state,
            "POST",
            "/v1/schedules",
            Some(WRITE),
            Some(sched(cron)),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{cron}: {p}");
        assert_eq!(p["field"], "cron");
    }
    let (s, p) = call(
        &f.state,
        "POST",
        "/v1/schedules",
        Some(WRITE),
        Some(serde_json::json!({"cron": "0 * * * *", "input_prefix": "../outside", "pipeline": "[[inputs]]\npaths = []\n[output]\ndir = \"x\"\n"}).to_string()),
    )
    .await;
    assert_eq!(
        (s, p["field"].clone()),
        (StatusCode::FORBIDDEN, serde_json::json!("input_prefix"))
    );
    #[cfg(unix)]
    std::os::unix::fs::symlink(&f.outside, f.data.join("outlink")).expect("link");
    for prefix in [
        "outlink/../outside",
        "outlink",
        "file:///etc",
        "s3://x/",
        "sluice:rules",
    ] {
        let body = serde_json::json!({"cron": "0 * * * *", "input_prefix": prefix, "pipeline": "[[inputs]]\npaths = []\n[output]\ndir = \"x\"\n"});
        let (s, p) = call(
            &f.state,
            "POST",
            "/v1/schedules",
            Some(WRITE),
            Some(body.to_string()),
        )
        .await;
        assert_eq!(
            (s, p["field"].clone()),
            (StatusCode::FORBIDDEN, serde_json::json!("input_prefix")),
            "{prefix}: {p}"
        );
    }
    // Ids are never reused, and a deleted schedule's state folder goes with it.
    let (s, a) = call(
        &f.state,
        "POST",
        "/v1/schedules",
        Some(WRITE),
        Some(sched("0 * * * *")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let a = a["id"].as_str().expect("id").to_string();
    let state_dir = f.state.config.output_root.join("schedules").join(&a);
    std::fs::create_dir_all(state_dir.join("minhash-index")).expect("mkdir");
    let (s, _) = call(
        &f.state,
        "DELETE",
        &format!("/v1/schedules/{a}"),
        Some(WRITE),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(!state_dir.exists(), "the schedule's index outlived it");
    let (_, b) = call(
        &f.state,
        "POST",
        "/v1/schedules",
        Some(WRITE),
        Some(sched("0 * * * *")),
    )
    .await;
    assert_ne!(b["id"].as_str(), Some(a.as_str()), "{b}");
    // A full queue takes no scheduled job: the tick is skipped.
    std::fs::write(
        f.data.join("incoming/a.jsonl"),
        "{\"text\": \"hello world\"}\n",
    )
    .expect("w");
    let (s, _) = call(
        &f.state,
        "POST",
        "/v1/jobs",
        Some(WRITE),
        Some(pipeline("\"logs.jsonl\"", "", "dir = \"x\"\n")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let schedules = f.state.store.schedules().expect("schedules");
    let s1 = schedules.last().expect("schedule").clone();
    let err = sluice_server::schedule::tick(&f.state, &s1).expect_err("queue full");
    assert!(err.contains("queue is full"), "{err}");
    assert_eq!(f.state.store.queued().expect("queued"), 1);
    // Failed runs back off: the schedule is not due again until its retry time.
    f.state
        .store
        .schedule_job_failed(&s1.id, 60)
        .expect("failed");
    let s1 = f
        .state
        .store
        .schedules()
        .expect("schedules")
        .pop()
        .expect("s");
    assert_eq!(s1.failures, 1);
    let far = chrono::Utc::now() + chrono::Duration::days(2);
    let soon = chrono::Utc::now() + chrono::Duration::seconds(30);
    let tz = sluice_server::schedule::offset(None).expect("tz");
    assert!(!sluice_server::schedule::due(&s1, tz, soon));
    assert!(sluice_server::schedule::due(&s1, tz, far));
    f.state
        .store
        .schedule_job_failed(&s1.id, 60)
        .expect("failed");
    let s2 = f
        .state
        .store
        .schedules()
        .expect("schedules")
        .pop()
        .expect("s");
    assert!(
        s2.retry_at.unwrap_or(0) - s1.retry_at.unwrap_or(0) >= 60,
        "the back-off grows: {:?} then {:?}",
        s1.retry_at,
        s2.retry_at
    );
    // A prefix that turns into a link out of the roots backs off instead of retrying at every
    // pass of the scheduler (it looped four times a second).
    let (_, c) = call(
        &f.state,
        "POST",
        "/v1/schedules",
        Some(WRITE),
        Some(sched("0 * * * *")),
    )
    .await;
    let cid = c["id"].as_str().expect("id").to_string();
    for j in f.state.store.list(Some("queued"), 10).expect("jobs") {
        f.state.store.cancel(&j.id).expect("cancel"); // the queue has room again
    }
    std::fs::remove_dir_all(f.data.join("incoming")).expect("rm");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&f.outside, f.data.join("incoming")).expect("link");
    let find = || {
        f.state
            .store
            .schedules()
            .expect("schedules")
            .into_iter()
            .find(|x| x.id == cid)
            .expect("schedule")
    };
    assert!(sluice_server::schedule::tick(&f.state, &find()).is_err());
    let sc = find();
    assert_eq!(sc.failures, 1);
    assert!(!sluice_server::schedule::due(&sc, tz, chrono::Utc::now()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_finished_job_says_so() {
    let f = fixture(100);
    let workers = sluice_server::worker::start(f.state.clone());
    let body = pipeline("\"logs.jsonl\"", "", "dir = \"x\"\n");
    let (_, job) = call(&f.state, "POST", "/v1/jobs", Some(WRITE), Some(body)).await;
    let id = job["id"].as_str().expect("id").to_string();
    let done = wait_done(&f.state, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(
        done["progress"]["bytes"].as_u64().is_some_and(|b| b > 0),
        "{done}"
    );
    let (s, p) = call(
        &f.state,
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        Some(WRITE),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{p}");
    assert!(p["detail"].to_string().contains("already succeeded"), "{p}");
    f.state.stopping.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.join();
    }
}

/// Regression (second attacker walk): a file that gives no record (blank lines) kept the worker
/// busy and ignored a cancel; the job even ended `succeeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_a_job_reading_a_file_without_records() {
    let f = fixture(100);
    std::fs::write(f.data.join("blank.txt"), vec![b'\n'; 96 << 20]).expect("w");
    let workers = sluice_server::worker::start(f.state.clone());
    let body = pipeline("\"blank.txt\"", "", "dir = \"x\"\n");
    let (s, job) = call(&f.state, "POST", "/v1/jobs", Some(WRITE), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let (s, _) = call(
        &f.state,
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        Some(WRITE),
        None,
    )
    .await;
    assert!(s == StatusCode::OK || s == StatusCode::CONFLICT);
    let done = wait_done(&f.state, &id).await;
    eprintln!("cancel answered {s}; the job ended {}", done["state"]);
    if s == StatusCode::OK {
        assert_eq!(done["state"], "cancelled", "{done}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
    f.state.stopping.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.join();
    }
}

/// Regression (third attacker walk): a path checked at compile time and swapped for a link out
/// before the engine opens it. The open file itself is checked, so the secret is not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_swapped_for_a_link_after_the_check_is_not_read() {
    let f = fixture(100);
    plant(&f.outside);
    let secret_rows = f.outside.join("secret_rows.jsonl");
    std::fs::write(
        &secret_rows,
        format!("{{\"conversations\": [{{\"from\": \"human\", \"value\": \"{SECRET}\"}}, {{\"from\": \"gpt\", \"value\": \"{SECRET}\"}}]}}\n"),
    )
    .expect("w");
    let text =
        "[[inputs]]\npaths = [\"race.jsonl\"]\n[output]\ndir = \"x\"\nformats = [\"jsonl\"]\n";
    std::fs::copy(f.data.join("logs.jsonl"), f.data.join("race.jsonl")).expect("copy");
    let out = f.state.config.output_root.join("race-run");
    let folders = sluice_server::worker::JobFolders {
        output: out.clone(),
        schedule: None,
    };
    let plan = sluice_server::worker::compile(&f.state, text, &folders).expect("compiles");
    // The swap, after the check.
    std::fs::remove_file(f.data.join("race.jsonl")).expect("rm");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&secret_rows, f.data.join("race.jsonl")).expect("link");
    let result = sluice_pipeline::engine::run(
        &plan,
        sluice_pipeline::engine::RunOptions {
            output_dir: Some(out.clone()),
            ..Default::default()
        },
    );
    let said = match &result {
        Ok(r) => serde_json::to_string(r).expect("json"),
        Err(e) => e.to_string(),
    };
    assert!(said.contains("outside the data roots"), "{said}");
    assert!(!said.contains(SECRET), "{said}");
    assert_no_secret_under(&f.state.config.output_root);
}

/// The same race on the shards' tokenizer: the opened file is checked, the one outside is not
/// read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokenizer_swapped_for_a_link_after_the_check_is_not_read() {
    let f = fixture(100);
    let tokenizer = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data/tokenizers/minimind/tokenizer.json");
    std::fs::copy(&tokenizer, f.data.join("tok.json")).expect("copy");
    std::fs::copy(&tokenizer, f.outside.join("tok.json")).expect("copy");
    let text = "[[inputs]]\npaths = [\"logs.jsonl\"]\n[output]\ndir = \"x\"\nformats = [\"jsonl\"]\n[output.shards]\ntokenizer = \"tok.json\"\ntemplate = \"chatml\"\n";
    let out = f.state.config.output_root.join("race-tok");
    let folders = sluice_server::worker::JobFolders {
        output: out.clone(),
        schedule: None,
    };
    let plan = sluice_server::worker::compile(&f.state, text, &folders).expect("compiles");
    std::fs::remove_file(f.data.join("tok.json")).expect("rm");
    #[cfg(unix)]
    std::os::unix::fs::symlink(f.outside.join("tok.json"), f.data.join("tok.json")).expect("link");
    let result = sluice_pipeline::engine::run(
        &plan,
        sluice_pipeline::engine::RunOptions {
            output_dir: Some(out.clone()),
            ..Default::default()
        },
    );
    let err = result
        .expect_err("the tokenizer outside is refused")
        .to_string();
    assert!(err.contains("outside the data roots"), "{err}");
    assert!(!out.join("shards/manifest.json").exists());
}

/// The same race on a stage's tokenizer (truncate, mix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_tokenizer_swapped_for_a_link_after_the_check_is_not_read() {
    let f = fixture(100);
    let tokenizer = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data/tokenizers/minimind/tokenizer.json");
    std::fs::copy(&tokenizer, f.outside.join("tok.json")).expect("copy");
    for (n, stage) in [
        "[[stages]]\ntype = \"truncate\"\nmax_source_tokens = 64\ntokenizer = \"tok.json\"\n",
        "[[stages]]\ntype = \"mix\"\nratio = \"1:1\"\nunit = \"tokens\"\ntokenizer = \"tok.json\"\npools.domain = { domain = \"finance\" }\n",
    ]
    .iter()
    .enumerate()
    {
        let _ = std::fs::remove_file(f.data.join("tok.json"));
        std::fs::copy(&tokenizer, f.data.join("tok.json")).expect("copy");
        let text = format!(
            "[[inputs]]\npaths = [\"logs.jsonl\"]\ndomain = \"finance\"\n{stage}[output]\ndir = \"x\"\nformats = [\"jsonl\"]\n"
        );
        let out = f.state.config.output_root.join(format!("race-stage-{n}"));
        let folders = sluice_server::worker::JobFolders {
            output: out.clone(),
            schedule: None,
        };
        let plan = sluice_server::worker::compile(&f.state, &text, &folders).expect("compiles");
        std::fs::remove_file(f.data.join("tok.json")).expect("rm");
        #[cfg(unix)]
        std::os::unix::fs::symlink(f.outside.join("tok.json"), f.data.join("tok.json"))
            .expect("link");
        let result = sluice_pipeline::engine::run(
            &plan,
            sluice_pipeline::engine::RunOptions {
                output_dir: Some(out.clone()),
                ..Default::default()
            },
        );
        let err = result.expect_err(stage).to_string();
        assert!(err.contains("outside the data roots"), "{stage}: {err}");
    }
}

/// The same race on the files stages load: profiles (whose values would become tags), rule
/// files, word lists, evaluation sets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_files_swapped_for_links_after_the_check_are_not_read() {
    let f = fixture(100);
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "profiles.csv",
            "user_id,age\nu1,30\n".to_string(),
            format!("user_id,age\nu1,{SECRET}\n"),
            "[[stages]]\ntype = \"tags\"\nprofiles = \"profiles.csv\"\n",
        ),
        (
            "business.toml",
            std::fs::read_to_string(repo.join("rules/business/ai_sales.toml")).expect("rules"),
            std::fs::read_to_string(repo.join("rules/business/ai_sales.toml")).expect("rules"),
            "[[stages]]\ntype = \"rules\"\nfiles = [\"business.toml\"]\n",
        ),
        (
            "filler.toml",
            std::fs::read_to_string(repo.join("rules/filler.toml")).expect("filler"),
            std::fs::read_to_string(repo.join("rules/filler.toml")).expect("filler"),
            "[[stages]]\ntype = \"filler\"\nrules = \"filler.toml\"\n",
        ),
        (
            "eval.jsonl",
            "{\"text\": \"一段用于评测的文本，足够长以构成若干个十三元组的测试内容。\"}\n"
                .to_string(),
            format!(
                "{{\"text\": \"{SECRET} 一段用于评测的文本，足够长以构成若干个十三元组。\"}}\n"
            ),
            "[[stages]]\ntype = \"decontaminate\"\neval = [\"eval.jsonl\"]\n",
        ),
    ];
    for (n, (name, inside, outside, stage)) in cases.iter().enumerate() {
        let _ = std::fs::remove_file(f.data.join(name));
        std::fs::write(f.data.join(name), inside).expect("inside");
        std::fs::write(f.outside.join(name), outside).expect("outside");
        let text = format!(
            "[[inputs]]\npaths = [\"logs.jsonl\"]\ndomain = \"finance\"\n{stage}[output]\ndir = \"x\"\nformats = [\"jsonl\"]\n"
        );
        let out = f.state.config.output_root.join(format!("race-file-{n}"));
        let folders = sluice_server::worker::JobFolders {
            output: out.clone(),
            schedule: None,
        };
        let plan = sluice_server::worker::compile(&f.state, &text, &folders).expect(name);
        std::fs::remove_file(f.data.join(name)).expect("rm");
        #[cfg(unix)]
        std::os::unix::fs::symlink(f.outside.join(name), f.data.join(name)).expect("link");
        let result = sluice_pipeline::engine::run(
            &plan,
            sluice_pipeline::engine::RunOptions {
                output_dir: Some(out.clone()),
                ..Default::default()
            },
        );
        let err = result.expect_err(name).to_string();
        assert!(err.contains("outside the data roots"), "{name}: {err}");
        assert!(!err.contains(SECRET), "{name}: {err}");
    }
    assert_no_secret_under(&f.state.config.output_root);
}
