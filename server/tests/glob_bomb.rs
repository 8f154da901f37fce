//! The glob bomb, alone in its process so that its peak memory is its own: a link loop under a
//! data root and a tree of more files than the limit.

#![allow(clippy::disallowed_methods)] // tests write their fixtures directly

mod common;

use axum::http::StatusCode;
use common::*;

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glob_over_a_link_loop_stays_small_and_a_broad_one_is_refused() {
    let f = fixture_with(100, |c| c.max_glob_files = 200);
    // A link loop under the root, and a tree of more files than the limit.
    let tree = f.data.join("tree");
    for i in 0..40 {
        let d = tree.join(format!("d{i}"));
        std::fs::create_dir_all(&d).expect("mkdir");
        for j in 0..10 {
            std::fs::write(d.join(format!("{j}.jsonl")), "{}\n").expect("w");
        }
    }
    std::os::unix::fs::symlink(&f.data, f.data.join("loop")).expect("link");
    std::os::unix::fs::symlink(&tree, tree.join("d0/back")).expect("link");
    let before = peak_rss_kib();
    let started = std::time::Instant::now();
    let body = serde_json::json!({
        "pipeline": "[[inputs]]\npaths = [\"**/*\"]\n[output]\ndir = \"x\"\n"
    })
    .to_string();
    let (s, p) = call(&f.state, "POST", "/v1/jobs", Some(WRITE), Some(body)).await;
    assert_eq!(
        (s, p["field"].clone()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!("inputs[0].paths")
        ),
        "{p}"
    );
    assert!(p["detail"].to_string().contains("more than 200"), "{p}");
    // Under the limit, the loop adds nothing: each real file is matched once.
    let f2 = fixture_with(100, |c| c.max_glob_files = 1000);
    std::fs::create_dir_all(f2.data.join("a/b")).expect("mkdir");
    std::fs::write(f2.data.join("a/b/x.jsonl"), "{}\n").expect("w");
    std::os::unix::fs::symlink(f2.data.join("a"), f2.data.join("a/b/up")).expect("link");
    let st = f2.state.clone();
    let plan = tokio::task::spawn_blocking(move || {
        let text = "[[inputs]]\npaths = [\"a/**/*.jsonl\"]\n[output]\ndir = \"x\"\n";
        sluice_server::worker::compile(&st, text, &sluice_server::worker::JobFolders::pending(&st))
    })
    .await
    .expect("join")
    .expect("compiles");
    assert_eq!(plan.inputs[0].files.len(), 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 256 * 1024, "peak memory grew by {grown} KiB");
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}
