//! The README's mixing sequence as a data engineer types it (quickstart, the cleaning and mix
//! examples, the catalog, previews with `where`, `mix run`), with counts checked against what
//! the runs' own curated files hold.

use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};

fn ok(args: &[&str]) -> String {
    let out = sluice(args);
    assert!(
        out.status.success(),
        "sluice {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_readme_mixing_sequence_counts_each_sample_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let o = |name: &str| out.join(name).to_string_lossy().into_owned();
    for name in ["quickstart", "clean", "mix_sft", "mix_cpt"] {
        let cfg = repo().join(format!("examples/{name}.toml"));
        run_ok(&cfg, &["--out", &o(name)]);
    }
    let cat = out.to_string_lossy().into_owned();
    // The catalog counts each source file once: the toyhom consultations that quickstart and
    // clean both read are counted from clean (curated, newest or first by name), exactly as
    // many as clean's curated file holds.
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "catalog",
        &cat,
        "--by",
        "domain,task,source",
        "--json",
    ]))
    .expect("json");
    let groups = v["groups"].as_array().expect("groups");
    let csv = "data/toyhom_medical/sample_IM_300.csv";
    let counted: u64 = groups
        .iter()
        .filter(|g| g["source"] == csv)
        .map(|g| g["samples"].as_u64().unwrap_or(0))
        .sum();
    let in_clean = curated_rows(&out.join("clean"))
        .iter()
        .filter(|r| r["source"] == csv)
        .count() as u64;
    assert_eq!(counted, in_clean, "{}", v["warnings"]);
    assert!(in_clean > 0 && in_clean <= 300);
    // A mix's selection never stands in for curated data: LCCC chit-chat is counted from clean
    // (all of it), not from mix_sft's selection; the medical dialogues mix_sft tagged with user
    // profiles are counted from mix_sft (the same dialogues as the quickstart's file).
    let lccc: u64 = groups
        .iter()
        .filter(|g| g["source"] == "data/lccc/toy_data.json")
        .map(|g| g["samples"].as_u64().unwrap_or(0))
        .sum();
    let lccc_in_clean = curated_rows(&out.join("clean"))
        .iter()
        .filter(|r| r["source"] == "data/lccc/toy_data.json")
        .count() as u64;
    assert_eq!(lccc, lccc_in_clean);
    let tagged = ok(&["catalog", &cat, "--by", "age_group", "--json"]);
    let tagged: serde_json::Value = serde_json::from_str(&tagged).expect("json");
    assert!(
        tagged["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|r| r["age_group"].is_string())),
        "{tagged}"
    );
    assert!(
        v["warnings"].to_string().contains("quickstart"),
        "the overlap is said: {}",
        v["warnings"]
    );
    // No sample is counted twice: the total is at most the distinct ids of all runs.
    let mut ids = BTreeSet::new();
    for name in ["quickstart", "clean", "mix_sft", "mix_cpt"] {
        for r in curated_rows(&out.join(name)) {
            if r["tags"]["mix_copy"].is_null() {
                ids.insert(r["id"].as_str().unwrap_or("").to_string());
            }
        }
    }
    let total = v["total"][0]["samples"].as_u64().expect("total");
    assert!(
        total <= ids.len() as u64,
        "{total} > {} distinct",
        ids.len()
    );
    // The README's catalog and preview lines, `where` included.
    ok(&["catalog", &cat, "--by", "domain,age_group"]);
    let by_region = ok(&["catalog", &cat, "--by", "region", "--where", "age >= 18"]);
    assert!(
        !by_region.contains('…'),
        "tables show whole values:\n{by_region}"
    );
    ok(&[
        "mix",
        "preview",
        "--catalog",
        &cat,
        "--domain",
        "finance",
        "--ratio",
        "0.15",
        "--mode",
        "cpt",
    ]);
    let preview: serde_json::Value = serde_json::from_str(&ok(&[
        "mix",
        "preview",
        "--catalog",
        &cat,
        "--domain",
        "medical",
        "--ratio",
        "1:5",
        "--json",
    ]))
    .expect("json");
    let domain_quota = preview["pools"][0]["quota"].as_f64().expect("quota") as usize;
    let total_quota = preview["total"].as_f64().expect("total") as usize;
    // `mix run` selects what the preview planned, reads back every record, and writes each
    // sample once.
    let mixed = out.join("mixed");
    ok(&[
        "mix",
        "run",
        "--catalog",
        &cat,
        "--domain",
        "medical",
        "--ratio",
        "1:5",
        "--out",
        mixed.to_str().expect("utf8"),
    ]);
    let report = read_json(&mixed.join("report.json"));
    assert_eq!(report["totals"]["rejected"], 0);
    let rows = curated_rows(&mixed);
    assert_eq!(rows.len(), total_quota);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *seen
            .entry(r["id"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "written twice: {twice:?}");
    // Nor the same dialogue under two ids: mix_sft reads medical_sft_200_users.jsonl.gz, the
    // same 200 dialogues as the quickstart's medical_sft_200.jsonl.gz.
    let mut contents: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        let c = if r["turns"].is_null() {
            &r["text"]
        } else {
            &r["turns"]
        };
        *contents.entry(c.to_string()).or_default() += 1;
    }
    let same: Vec<_> = contents.iter().filter(|(_, n)| **n > 1).collect();
    assert!(same.is_empty(), "{} dialogues written twice", same.len());
    let in_domain = rows
        .iter()
        .filter(|r| r["tags"]["mix_pool"] == "domain")
        .count();
    assert_eq!(in_domain, domain_quota);
}

/// The README's service session as written: the token and server.toml steps (with the test's
/// own address and output folder), then its curl session run by bash and curl, each answer
/// checked. Skipped, saying so, where there is no curl.
#[test]
fn the_readme_service_session_runs_as_written() {
    use std::process::Command;
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("README service session skipped: no curl installed");
        return;
    }
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let section = readme
        .split("## The REST service")
        .nth(1)
        .expect("the REST section");
    // The set-up block: the token, its hash, server.toml.
    let setup = section
        .split("```bash\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("set-up block");
    assert!(
        setup.contains("T=$(head -c 24 /dev/urandom | base64)"),
        "{setup}"
    );
    assert!(setup.contains("serve --hash-token \"$T\""), "{setup}");
    let toml = setup
        .split("cat > server.toml <<TOML\n")
        .nth(1)
        .and_then(|t| t.split("\nTOML\n").next())
        .expect("server.toml heredoc");
    let tmp = tempfile::tempdir().expect("tempdir");
    let token = "readme-session-token";
    let hash = sluice_server::config::hash_token(token);
    let out_root = tmp.path().join("service");
    let config = toml
        .replace("$H", &hash)
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace(
            "\"examples/data\"",
            &format!("{:?}", repo().join("examples/data").to_string_lossy()),
        )
        .replace(
            "\"examples/models\"",
            &format!("{:?}", repo().join("examples/models").to_string_lossy()),
        )
        .replace(
            "\"out/service\"",
            &format!("{:?}", out_root.to_string_lossy()),
        );
    assert!(config.contains(&hash), "the hash goes into server.toml");
    let config_path = tmp.path().join("server.toml");
    std::fs::write(&config_path, config).expect("config");
    let (child, addr) = crate::serve::start(&config_path);
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _service = Kill(child);

    // The curl session: the submission, then (once the job has run) the rest, every answer
    // followed by its status.
    let session = section
        .split("The curl session of a data engineer")
        .nth(1)
        .and_then(|s| s.split("```bash\n").nth(1))
        .and_then(|b| b.split("```").next())
        .expect("curl session");
    let (submit, rest) = session
        .split_once("A=\"Authorization")
        .expect("the submission, then the rest");
    let rest = format!("A=\"Authorization{rest}");
    let bash = |script: &str| -> Vec<(u16, String)> {
        let script = script
            .replace("localhost:8080", &addr)
            .replace("curl -s ", "curl -s -w '\\n@@%{http_code}@@\\n' ");
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("T={token}\n{script}"))
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut answers = Vec::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("@@") {
            let body = rest[..i].trim().to_string();
            let after = &rest[i + 2..];
            let j = after.find("@@").expect("status end");
            answers.push((after[..j].parse().unwrap_or(0), body));
            rest = &after[j + 2..];
        }
        answers
    };
    let answers = bash(submit);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].0, 201, "{answers:?}");
    let job: serde_json::Value = serde_json::from_str(&answers[0].1).expect("job json");
    assert_eq!(
        job["id"], "j-000001",
        "the README names the first job j-000001"
    );
    let started = std::time::Instant::now();
    loop {
        let body = bash("curl -s -H \"Authorization: Bearer $T\" localhost:8080/v1/jobs/j-000001")
            .remove(0)
            .1;
        if body.contains("\"succeeded\"") {
            break;
        }
        assert!(!body.contains("\"failed\""), "{body}");
        assert!(started.elapsed().as_secs() < 120, "{body}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let answers = bash(&rest);
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    // job, report, diversity, running jobs, cancel of a finished job, schedule add, list, delete, two mix
    // previews, cpt (no documents) and a `where` on a tag no run has, the catalog, healthz,
    // readyz, metrics, an ablation and its state.
    assert_eq!(
        statuses,
        [
            200, 200, 200, 200, 409, 201, 200, 204, 200, 200, 200, 422, 200, 200, 200, 200, 201,
            200
        ],
        "{answers:#?}"
    );
    // The ablation runs to the end: both points trained and evaluated, a recommendation made.
    let started = std::time::Instant::now();
    let ablation = loop {
        let body =
            bash("curl -s -H \"Authorization: Bearer $T\" localhost:8080/v1/ablations/a-000001")
                .remove(0)
                .1;
        let a: serde_json::Value = serde_json::from_str(&body).expect("ablation json");
        if !["queued", "running"].contains(&a["state"].as_str().unwrap_or("")) {
            break a;
        }
        assert!(started.elapsed().as_secs() < 600, "{body}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(ablation["state"], "succeeded", "{ablation}");
    assert_eq!(ablation["points"].as_array().map(Vec::len), Some(2));
    assert!(ablation["results"]["recommendation"]["reasoning"]
        .as_array()
        .is_some_and(|r| !r.is_empty()));
    let json = |i: usize| -> serde_json::Value {
        serde_json::from_str(&answers[i].1).unwrap_or_else(|e| panic!("{e}: {}", answers[i].1))
    };
    assert_eq!(json(0)["state"], "succeeded");
    assert_eq!(json(1)["totals"]["read"], 1600, "{}", answers[1].1);
    assert_eq!(json(2)["overall"]["count"], json(1)["totals"]["kept"]);
    // The README's 1:5 preview mixes real data: 200 medical, 1,000 general.
    let plan = json(8);
    assert_eq!(plan["total"], 1200.0, "{plan}");
    assert!(
        plan["warnings"].as_array().is_some_and(|w| w.is_empty()),
        "{plan}"
    );
    let plan = json(9);
    assert!(
        plan["pools"][0]["repeat"].as_f64().unwrap_or(0.0) > 1.0,
        "{plan}"
    );
    assert!(
        json(10)["warnings"].to_string().contains("kind pretrain"),
        "{}",
        answers[10].1
    );
    assert!(
        json(11)["detail"].to_string().contains("region"),
        "{}",
        answers[11].1
    );
    let groups = json(12)["groups"].clone();
    assert!(groups.to_string().contains("chitchat"), "{groups}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// The README's evaluation sequence, typed into bash as written (after the quickstart and a
/// shortened training run that make the model it scores), in a copy of `examples/`.
#[test]
fn the_readme_evaluation_sequence_runs_as_written() {
    use std::process::Command;
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(&repo().join("examples"), &tmp.path().join("examples"));
    let bin = env!("CARGO_BIN_EXE_sluice");
    let in_tmp = |args: &[&str]| {
        let out = Command::new(bin)
            .args(args)
            .current_dir(tmp.path())
            .output()
            .expect("sluice");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    in_tmp(&["run", "-q", "examples/quickstart.toml"]);
    let train = std::fs::read_to_string(tmp.path().join("examples/train_sft.toml"))
        .expect("train file")
        .replace("steps = 60", "steps = 2");
    std::fs::write(tmp.path().join("examples/train_short.toml"), train).expect("write");
    in_tmp(&["train", "run", "examples/train_short.toml"]);
    assert!(tmp.path().join("out/train_sft/final/config.json").is_file());
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let block = readme
        .split("## Evaluation sets, model scores and diversity")
        .nth(1)
        .and_then(|s| s.split("```bash\n").nth(1))
        .and_then(|b| b.split("```").next())
        .expect("the evaluation block");
    let script = block.replace("cargo run --release -- ", &format!("{bin} "));
    let out = Command::new("bash")
        .arg("-ec")
        .arg(&script)
        .current_dir(tmp.path())
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for f in [
        "out/evalset/manifest.json",
        "out/evalset/open/medical.jsonl",
        "out/evalset/mc/general.jsonl",
        "out/evalset/lm_eval/sluice_mc_medical.yaml",
        "out/eval_train_sft/summary.json",
        "out/eval_train_sft/samples.jsonl",
        "out/ablate_pipeline/diversity.json",
        "out/ablate_pipeline/diversity.html",
    ] {
        assert!(tmp.path().join(f).is_file(), "{f}\n{stdout}");
    }
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("out/eval_train_sft/summary.json")).expect("summary"),
    )
    .expect("json");
    // 20 items of each of the four files (two domains, two forms).
    assert_eq!(summary["overall"]["open"], 40, "{summary}");
    assert_eq!(summary["overall"]["mc"], 40, "{summary}");
    assert!(summary["overall"]["bleu"].as_f64().is_some());
    assert!(stdout.contains("warning: task \"chitchat\""), "{stdout}");
}
