//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/data`, or `None` outside the team's checkout (a user's clone has no shared/).
/// Under CI the data must be there.
pub fn shared_data() -> Option<PathBuf> {
    let p = repo().join("../shared/data");
    if p.is_dir() {
        return Some(p.canonicalize().unwrap_or(p));
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "../shared/data is missing under CI"
    );
    eprintln!("skipped: ../shared/data not found");
    None
}

/// Run the binary with arguments.
pub fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice")
}

/// Run a pipeline; panics with stderr unless it succeeds.
pub fn run_ok(config: &Path, extra: &[&str]) -> serde_json::Value {
    let cfg = config.to_string_lossy().into_owned();
    let mut args = vec!["run", cfg.as_str(), "--quiet"];
    args.extend_from_slice(extra);
    let out = sluice(&args);
    assert!(
        out.status.success(),
        "sluice run failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = extra
        .iter()
        .position(|a| *a == "--out")
        .map(|i| PathBuf::from(extra[i + 1]))
        .expect("tests always pass --out");
    read_json(&dir.join("report.json"))
}

/// Parse a JSON file.
pub fn read_json(p: &Path) -> serde_json::Value {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every line of a JSONL file, parsed.
pub fn read_jsonl(p: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", p.display())))
        .collect()
}

/// Write a pipeline file into `dir` and return its path.
pub fn pipeline(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, body).expect("write pipeline");
    p
}

/// Counts of one input in a report.
pub fn input<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["inputs"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no input {name} in report"))
}

/// Assert that `read = kept + dropped + rejected` for every input, from the raw numbers.
pub fn assert_reconciles(report: &serde_json::Value) {
    assert_eq!(report["reconciled"], true);
    let n = |v: &serde_json::Value| v.as_u64().expect("count");
    for i in report["inputs"].as_array().expect("inputs") {
        assert_eq!(
            n(&i["read"]),
            n(&i["kept"]) + n(&i["dropped"]) + n(&i["rejected"]),
            "{}",
            i["name"]
        );
        let files: u64 = i["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| n(&f["records"]))
            .sum();
        assert_eq!(
            files,
            n(&i["read"]),
            "file records add up for {}",
            i["name"]
        );
    }
    let t = &report["totals"];
    assert_eq!(
        n(&t["read"]),
        n(&t["kept"]) + n(&t["dropped"]) + n(&t["rejected"])
    );
}

/// Every file under `dir`, by relative path, with its bytes; report.json without its timings
/// (wall-clock figures differ by design).
pub fn output_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
                    .expect("prefix")
                    .to_string_lossy()
                    .into_owned();
                let mut bytes = std::fs::read(&p).expect("read");
                if rel == "report.json" {
                    let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
                    v["timings"] = serde_json::Value::Null; // wall-clock figures differ by design
                    bytes = serde_json::to_vec_pretty(&v).expect("json");
                }
                out.insert(rel, bytes);
            }
        }
    }
    out
}

/// Every curated JSONL record of a run: `part-*` (no split) first, then each split's files
/// (`test-*`, `train-*`, `valid-*`), in file-name order.
pub fn curated_rows(run: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(run.join("curated"))
        .unwrap_or_else(|e| panic!("{}: {e}", run.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| read_jsonl(f)).collect()
}
