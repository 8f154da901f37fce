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

/// Kill the service when the test ends, however it ends.
struct Service(std::process::Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A script that sets a form field the way typing does (the value, then an `input` event).
fn type_into(selector: &str, value: &str) -> String {
    format!(
        "(() => {{ const e = document.querySelector({sel}); e.value = {val}; e.dispatchEvent(new Event('input', {{ bubbles: true }})); return true; }})()",
        sel = serde_json::json!(selector),
        val = serde_json::json!(value)
    )
}

fn click(selector: &str) -> String {
    format!(
        "(() => {{ document.querySelector({}).click(); return true; }})()",
        serde_json::json!(selector)
    )
}

#[test]
fn the_console_signs_in_submits_a_job_opens_its_report_and_previews_a_mix() {
    use crate::serve::{http, start, TOKEN};
    let Some(chrome) = chromium() else {
        eprintln!("browser test skipped: no chromium installed (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_roots = [{:?}]\noutput_root = \"out\"\nthreads_per_job = 1\n[[tokens]]\nname = \"t\"\nsha256 = \"{}\"\nscope = \"write\"\n",
            repo().join("examples/data").to_string_lossy(),
            sluice_server::config::hash_token(TOKEN)
        ),
    )
    .expect("config");
    let (child, addr) = start(&config);
    let _service = Service(child);
    let shots = repo().join("target/screenshots");
    let mut b = crate::cdp::Browser::launch(&chrome, &dir.path().join("profile"), (1200, 1500));
    let ui = format!("http://{addr}/ui");
    b.navigate(&ui);
    b.wait_for("document.querySelector('#token')", "the sign-in form", 30);
    // A wrong token is refused, and not kept.
    b.eval(&type_into("#token", "not-a-token"));
    b.eval(&click("#signin"));
    let refused = b.wait_for(
        "document.querySelector('#login-error').textContent",
        "the refusal",
        30,
    );
    assert!(
        refused.as_str().unwrap_or("").contains("not accepted"),
        "{refused}"
    );
    assert_eq!(
        b.eval("sessionStorage.getItem('sluice-token')"),
        serde_json::Value::Null
    );
    b.eval(&type_into("#token", TOKEN));
    b.eval(&click("#signin"));
    b.wait_for("document.querySelector('#jobs-table')", "the jobs view", 30);
    b.wait_for(
        "document.querySelector('#who').textContent === 'signed in as t (write)'",
        "who is signed in",
        30,
    );
    // The token lasts for the tab: loading the page again goes straight to the jobs.
    b.navigate(&format!("{ui}#jobs"));
    b.wait_for(
        "document.querySelector('#jobs-table') && !document.querySelector('#token')",
        "the jobs view without signing in again",
        30,
    );

    // Submit a job from the form.
    let pipeline = "[[inputs]]\nname = \"medical\"\npaths = [\"medicalgpt/medical_sft_200.jsonl.gz\"]\ndomain = \"medical\"\ntask = \"qa\"\n\n[[inputs]]\nname = \"finance\"\npaths = [\"cornucopia_fin/fin_data.jsonl\"]\ndomain = \"finance\"\ntask = \"qa\"\n\n[[inputs]]\nname = \"chitchat\"\npaths = [\"lccc/toy_data.json\"]\ntask = \"chitchat\"\ncjk_despace = true\n\n[[stages]]\ntype = \"length_filter\"\nmin_chars = 6\n\n[[stages]]\ntype = \"exact_dedup\"\n\n[output]\ndir = \"x\"\nformats = [\"jsonl\"]\n";
    b.eval("location.hash = '#submit'; true");
    b.wait_for("document.querySelector('#pipeline')", "the submit form", 30);
    b.eval(&type_into("#pipeline", pipeline));
    b.eval(&click("#submit"));
    let id = b.wait_for(
        "location.hash.startsWith('#job/') && location.hash.slice(5)",
        "the job's page",
        30,
    );
    let id = id.as_str().expect("id").to_string();
    let state = b.wait_for(
        "(() => { const s = document.querySelector('#job-state'); return s && ['succeeded', 'failed', 'cancelled'].includes(s.textContent) && s.textContent; })()",
        "the job to end",
        180,
    );
    assert_eq!(state, "succeeded", "{}", b.eval("document.body.innerText"));
    // Its report, in a sandboxed frame, with the run's numbers.
    let page = b.wait_for(
        "document.querySelector('#report') && document.querySelector('#report').srcdoc",
        "the report frame",
        30,
    );
    let page = page.as_str().expect("html");
    let (status, report) = http(&addr, "GET", &format!("/v1/jobs/{id}/report"), None);
    assert_eq!(status, 200, "{report}");
    let report: serde_json::Value = serde_json::from_str(&report).expect("json");
    let t = &report["totals"];
    assert!(t["read"].as_u64().unwrap_or(0) > 300, "{t}");
    assert!(page.contains(&format!("<td>{}</td><td>{}</td>", t["read"], t["kept"])));
    assert!(page.contains("id=\"funnel\""));
    assert_eq!(
        b.eval("document.querySelector('#report').getAttribute('sandbox')"),
        ""
    );
    // Give the frame a moment to paint before the picture.
    std::thread::sleep(std::time::Duration::from_millis(500));
    b.screenshot(&shots.join("console-job.png"));

    // The jobs list shows it as succeeded.
    b.eval("location.hash = '#jobs'; true");
    b.wait_for(
        &format!("document.querySelector('tr[data-job=\"{id}\"] .state-succeeded')"),
        "the job succeeded in the list",
        30,
    );
    b.screenshot(&shots.join("console-jobs.png"));

    // A mix preview follows the form: its total is the API's for each ratio typed.
    let total = |ratio: &str| -> String {
        let (s, plan) = http(
            &addr,
            "GET",
            &format!("/mix?domain=medical&ratio={ratio}"),
            None,
        );
        assert_eq!(s, 200, "{plan}");
        let plan: serde_json::Value = serde_json::from_str(&plan).expect("json");
        let n = plan["total"].as_f64().expect("total").round() as u64;
        // Drawn with commas between thousands.
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    b.eval("location.hash = '#mix'; true");
    b.wait_for("document.querySelector('#mix-domain')", "the mix form", 30);
    for ratio in ["1:5", "1:1"] {
        b.eval(&type_into("#mix-domain", "medical"));
        b.eval(&type_into("#mix-ratio", ratio));
        let want = total(ratio);
        b.wait_for(
            &format!(
                "(() => {{ const t = document.querySelector('#mix-total'); return t && t.textContent === {}; }})()",
                serde_json::json!(want)
            ),
            &format!("the preview's total {want} at {ratio}"),
            30,
        );
        assert!(
            b.eval("document.querySelectorAll('#mix-result svg').length")
                .as_u64()
                .unwrap_or(0)
                >= 2,
            "the shares and quotas are drawn"
        );
    }
    b.screenshot(&shots.join("console-mix.png"));
    // A bad value names its field.
    b.eval(&type_into("#mix-ratio", "five"));
    b.wait_for(
        "document.querySelector('#mix-ratio').classList.contains('field-bad') && document.querySelector('#mix-error').textContent.startsWith('ratio')",
        "the ratio marked as wrong",
        30,
    );

    // The catalog grouped by domain.
    b.eval("location.hash = '#catalog'; true");
    b.wait_for(
        "document.querySelector('#catalog-by')",
        "the catalog form",
        30,
    );
    b.eval(&type_into("#catalog-by", "domain"));
    b.eval(&click("#catalog-form button"));
    let cells = b.wait_for(
        "document.querySelector('#catalog-groups') && [...document.querySelectorAll('#catalog-groups td')].map(td => td.textContent).join('|')",
        "the catalog's groups",
        30,
    );
    assert!(cells.as_str().unwrap_or("").contains("medical|"), "{cells}");
    b.wait_for(
        "document.querySelector('#catalog-runs table')",
        "the catalog's runs",
        30,
    );
    b.screenshot(&shots.join("console-catalog.png"));

    // Schedules, then signing out forgets the token.
    b.eval("location.hash = '#schedules'; true");
    b.wait_for(
        "document.querySelector('#schedules-table th')",
        "the schedules",
        30,
    );
    b.eval(&click("#signout"));
    b.wait_for(
        "document.querySelector('#token')",
        "the sign-in form again",
        30,
    );
    assert_eq!(
        b.eval("sessionStorage.getItem('sluice-token')"),
        serde_json::Value::Null
    );
}
