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
