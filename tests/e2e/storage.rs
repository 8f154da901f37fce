//! Object storage: inputs listed and fetched from an S3-compatible server on loopback (moto,
//! when installed: `SLUICE_TEST_MOTO` or `moto_server` on the PATH) and outputs uploaded
//! there with `_SUCCESS` last; without a server, the same code path over `file://` URLs
//! (object_store's local backend).

use crate::common::{read_json, repo};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLUICE_TEST_MOTO") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    })
}

fn http(port: u16, request: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Some(out)
}

fn start_moto() -> Option<Moto> {
    let bin = moto_binary()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new(bin)
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let moto = Moto { child, port };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            for bucket in ["logs", "curated"] {
                let r = http(
                    port,
                    &format!("PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                )?;
                assert!(r.starts_with("HTTP/1.1 200"), "bucket {bucket}: {r}");
            }
            return Some(moto);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn sluice_env(args: &[&str], env: &[(String, String)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run sluice")
}

/// An object store for a test: moto's S3 on loopback when installed, else a folder behind
/// file:// URLs. Returns the URL base, the environment for `sluice`, and the server guard.
fn store(dir: &Path) -> (String, Vec<(String, String)>, Option<Moto>) {
    let moto = start_moto();
    // The in-process calls below read AWS_* from this process's environment.
    for k in [
        "AWS_ENDPOINT",
        "AWS_ALLOW_HTTP",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    ] {
        std::env::remove_var(k);
    }
    let (base, env): (String, Vec<(String, String)>) = match &moto {
        Some(m) => {
            eprintln!("S3: moto on 127.0.0.1:{}", m.port);
            (
                "s3:/".to_string(),
                vec![
                    (
                        "AWS_ENDPOINT".into(),
                        format!("http://127.0.0.1:{}", m.port),
                    ),
                    ("AWS_ALLOW_HTTP".into(), "true".into()),
                    ("AWS_ACCESS_KEY_ID".into(), "test".into()),
                    ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
                    ("AWS_REGION".into(), "us-east-1".into()),
                ],
            )
        }
        None => {
            eprintln!("no S3-compatible server here: file:// URLs through the same code path");
            let root = dir.join("store");
            for b in ["logs", "curated"] {
                std::fs::create_dir_all(root.join(b)).expect("mkdir");
            }
            (format!("file://{}", root.to_string_lossy()), Vec::new())
        }
    };
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    (base, env, moto)
}

/// The tests here share the process environment (AWS_*): one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn inputs_and_outputs_go_through_object_storage() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, env, moto) = store(dir.path());
    let mut env = env;
    env.push((
        "SLUICE_CACHE".into(),
        dir.path().join("cache").to_string_lossy().into_owned(),
    ));
    for (k, v) in &env {
        // The upload helper below runs in this process.
        std::env::set_var(k, v);
    }
    // Put the inputs in the store.
    let staging = dir.path().join("inputs");
    std::fs::create_dir_all(staging.join("2026/12")).expect("mkdir");
    for f in ["c4/c4_demo_40.jsonl", "medicalgpt/medical_sft_200.jsonl.gz"] {
        let src = repo().join("examples/data").join(f);
        let name = src.file_name().expect("name").to_owned();
        std::fs::copy(&src, staging.join("2026/12").join(name)).expect("copy");
    }
    sluice_pipeline::remote::upload(&staging, &format!("{base}/logs/in")).expect("upload inputs");

    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        format!(
            r#"
name = "remote"
[[inputs]]
name = "docs"
paths = ["{base}/logs/in/2026/12/*.jsonl"]
kind = "pretrain"
[[inputs]]
name = "medical"
paths = ["{base}/logs/in/2026/12/medical_*.jsonl.gz"]
[[stages]]
type = "exact_dedup"
[output]
dir = "{base}/curated/runs/one"
formats = ["jsonl"]
"#
        ),
    )
    .expect("write");
    let out = sluice_env(&["run", p.to_str().expect("utf8"), "--quiet"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Read the published run back from the store.
    let got = sluice_pipeline::remote::fetch(&format!("{base}/curated/runs/one/*"))
        .expect("fetch outputs");
    let names: Vec<&str> = got
        .iter()
        .map(|(_, u)| u.rsplit('/').next().unwrap_or(""))
        .collect();
    assert!(
        names.contains(&"_SUCCESS") && names.contains(&"report.json"),
        "{names:?}"
    );
    let report_path = got
        .iter()
        .find(|(_, u)| u.ends_with("report.json"))
        .map(|(p, _)| p.clone())
        .expect("report");
    let report = read_json(&report_path);
    assert_eq!(report["totals"]["read"], 240, "{report}");
    let shown = report["inputs"][1]["files"][0]["path"]
        .as_str()
        .unwrap_or("");
    assert!(
        shown.ends_with("/logs/in/2026/12/medical_sft_200.jsonl.gz"),
        "{shown}"
    );
    let curated =
        sluice_pipeline::remote::fetch(&format!("{base}/curated/runs/one/curated/*.jsonl"))
            .expect("curated");
    let lines: usize = curated
        .iter()
        .map(|(p, _)| std::fs::read_to_string(p).expect("read").lines().count())
        .sum();
    assert_eq!(
        lines as u64,
        report["totals"]["kept"].as_u64().expect("kept")
    );

    // A second run fetches nothing new: the cache is keyed by URL, size and ETag.
    let cached = crate::common::output_files(&dir.path().join("cache/objects")).len();
    let out = sluice_env(
        &[
            "run",
            p.to_str().expect("utf8"),
            "--quiet",
            "--out",
            &format!("{base}/curated/runs/two"),
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The outputs fetched above were cached too; the inputs added nothing.
    assert_eq!(
        crate::common::output_files(&dir.path().join("cache/objects")).len(),
        cached
    );
    let bad = sluice_env(
        &[
            "run",
            p.to_str().expect("utf8"),
            "--quiet",
            "--out",
            "ftp://x/y",
        ],
        &env,
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not supported"));
    drop(moto);
}

#[test]
fn tasks_without_a_shared_filesystem_meet_in_object_storage() {
    let Some(data) = crate::common::shared_data() else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, env, moto) = store(dir.path());
    let p = crate::tasks::pipeline(dir.path(), &data);
    let one = dir.path().join("one");
    let o = sluice_env(
        &[
            "run",
            p.to_str().expect("utf8"),
            "--quiet",
            "--out",
            one.to_str().expect("utf8"),
        ],
        &env,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Four "machines": each task its own cache (local scratch); the work folder is a URL.
    let out = dir.path().join("four");
    let work = format!("{base}/curated/work");
    let children: Vec<_> = (0..4)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args([
                    "run",
                    p.to_str().expect("utf8"),
                    "--quiet",
                    "--task-timeout",
                    "300",
                ])
                .args(["--out", out.to_str().expect("utf8"), "--work", &work])
                .args(["--task-index", &i.to_string(), "--tasks", "4"])
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("SLUICE_CACHE", dir.path().join(format!("machine-{i}")))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().expect("wait");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    crate::tasks::assert_equivalent(
        &crate::common::output_files(&one),
        &crate::common::output_files(&out),
    );
    let left = sluice_pipeline::remote::fetch(&format!("{work}/*")).expect("list");
    assert!(
        left.is_empty(),
        "task 0 removes the shared work files: {left:?}"
    );

    // In phases, each phase of a task on another "machine": what a map phase leaves for the
    // next phase of its task, and the parts of samples it dropped, go through the store.
    let listed = sluice_env(
        &[
            "run",
            p.to_str().expect("utf8"),
            "--phases",
            "--work",
            &work,
        ],
        &env,
    );
    let phases: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        !phases.iter().any(|p| p == "shards"),
        "through object storage task 0 writes the shards: {phases:?}"
    );
    let phased = dir.path().join("phased");
    for (k, phase) in phases.iter().enumerate() {
        for i in (0..4).rev() {
            let o = Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["run", p.to_str().expect("utf8"), "--quiet"])
                .args(["--out", phased.to_str().expect("utf8"), "--work", &work])
                .args(["--task-index", &i.to_string(), "--tasks", "4"])
                .args(["--phase", phase])
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env(
                    "SLUICE_CACHE",
                    dir.path().join(format!("machine-{}", 10 + (i + k) % 4)),
                )
                .output()
                .expect("run");
            assert!(
                o.status.success(),
                "task {i} phase {phase}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    crate::tasks::assert_equivalent(
        &crate::common::output_files(&one),
        &crate::common::output_files(&phased),
    );
    let left = sluice_pipeline::remote::fetch(&format!("{work}/*")).expect("list");
    assert!(
        left.is_empty(),
        "the publish removes the work files: {left:?}"
    );
    drop(moto);
}
