//! The HTML report in a real browser: headless Chromium (CI installs Debian's `chromium`)
//! loads the quickstart's report.html from disk, with no network, and the DOM it built holds
//! the report's numbers; a screenshot is kept for people to look at. Skipped, saying so, where
//! no Chromium is installed.

use crate::common::{repo, run_ok};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A headless Chromium, if one is installed (`SLUICE_CHROMIUM`, else `chromium` or
/// `chromium-browser` on the PATH).
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLUICE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(PathBuf::from)
}

fn headless(chrome: &Path, profile: &Path) -> Command {
    let mut c = Command::new(chrome);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        // The page must not need the network: give it none.
        "--proxy-server=http://127.0.0.1:9",
        "--window-size=1100,2400",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Run `c` for at most 90 seconds (a browser that hangs must not hang the test suite).
fn bounded(mut c: Command) -> std::process::Output {
    use std::io::Read;
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start chromium");
    // Both pipes drained meanwhile: a full pipe would stall the browser.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let reader = drain(Box::new(child.stdout.take().expect("stdout")));
    let errors = drain(Box::new(child.stderr.take().expect("stderr")));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > std::time::Duration::from_secs(90) {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    std::process::Output {
        status,
        stdout: reader.join().unwrap_or_default(),
        stderr: errors.join().unwrap_or_default(),
    }
}

#[test]
fn the_quickstart_report_renders_in_headless_chromium() {
    let Some(chrome) = chromium() else {
        eprintln!("browser test skipped: no chromium installed (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("quickstart");
    let report = run_ok(
        &repo().join("examples/quickstart.toml"),
        &["--out", out.to_str().expect("utf8")],
    );
    let page = out.join("report.html");
    let url = format!("file://{}", page.display());
    let profile = dir.path().join("profile");
    let mut c = headless(&chrome, &profile);
    c.arg("--dump-dom").arg(&url);
    let dom = bounded(c);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    let t = &report["totals"];
    for want in [
        "<h1>sluice run".to_string(),
        format!("<td>{}</td><td>{}</td>", t["read"], t["kept"]),
        "id=\"funnel\"".into(),
        "id=\"chars-read\"".into(),
    ] {
        assert!(dom.contains(&want), "{want} not in the rendered DOM");
    }
    assert!(
        dom.matches("<svg").count() >= 4,
        "the charts are in the DOM"
    );
    // A screenshot to look at (kept under target/ when the test runs from the repository).
    let shots = repo().join("target/screenshots");
    let _ = std::fs::create_dir_all(&shots);
    let shot = shots.join("quickstart-report.png");
    let mut c = headless(&chrome, &profile);
    c.arg(format!("--screenshot={}", shot.display())).arg(&url);
    let o = bounded(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a picture of the page"
    );
}
