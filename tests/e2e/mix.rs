//! User tags, the catalog and the mix end to end: the medical data of ../shared/data mixed with
//! the general alpaca and sharegpt data at 1:5 (SFT) and at 15% of tokens (CPT); exact ratios,
//! caps and repeats; identical output across thread counts; previews that agree with the mix.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Count curated rows per `mix_pool` tag, and copies.
fn pools(rows: &[serde_json::Value]) -> (BTreeMap<String, u64>, u64) {
    let mut by = BTreeMap::new();
    let mut copies = 0;
    for r in rows {
        let pool = r["tags"]["mix_pool"].as_str().unwrap_or("none").to_string();
        *by.entry(pool).or_default() += 1;
        if r["tags"]["mix_copy"].is_string() {
            copies += 1;
        }
    }
    (by, copies)
}

fn curated(out: &Path) -> Vec<serde_json::Value> {
    curated_rows(out)
}

fn sft_pipeline(dir: &Path, data: &Path, mix: &str) -> std::path::PathBuf {
    let d = data.display();
    pipeline(
        dir,
        &format!(
            r#"
seed = 7
[[inputs]]
name = "medical"
paths = ["{d}/sft/medicalgpt/medical_sft_1K_format.jsonl"]
domain = "medical"
task = "medical_qa"
[[inputs]]
name = "alpaca"
paths = ["{d}/sft/llama_factory/alpaca_zh_demo.json", "{d}/sft/llama_factory/alpaca_en_demo.json"]
domain = "general"
task = "alpaca"
[[inputs]]
name = "sharegpt"
paths = ["{d}/sft/medicalgpt/sharegpt_zh_1K_format.jsonl"]
domain = "general"
task = "sharegpt"
[[stages]]
type = "mix"
{mix}
[output]
dir = "out"
formats = ["jsonl"]
"#
        ),
    )
}

#[test]
fn sft_one_to_five_is_exact_and_upsamples_within_max_repeats() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    // 1,000 medical samples against 2,999 general ones: 1:5 with a target of 6,000 needs 5,000
    // general samples, so general data is repeated (5000 / 2999 ≈ 1.67 epochs).
    let cfg = sft_pipeline(
        tmp.path(),
        &data,
        "ratio = \"1:5\"\ntarget = 6000\npools.domain = { domain = \"medical\" }",
    );
    let out = tmp.path().join("run");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    let rows = curated(&out);
    let (by, copies) = pools(&rows);
    assert_eq!(by.get("domain"), Some(&1000), "{by:?}");
    assert_eq!(by.get("general"), Some(&5000), "{by:?}");
    // Two sharegpt records of the real file are unparseable (rejected, not lost).
    let general_kept = input(&report, "alpaca")["kept"].as_u64().expect("kept")
        + input(&report, "sharegpt")["kept"].as_u64().expect("kept");
    assert!(general_kept >= 2990, "{general_kept}");
    assert_eq!(
        copies,
        5000 - general_kept,
        "every general sample once, the rest as copies"
    );
    assert_eq!(report["totals"]["copies"], 5000 - general_kept);
    // Copies have their own ids and name their original.
    let ids: std::collections::BTreeSet<&str> =
        rows.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "ids are unique");
    let details = &report["stages"][0]["details"];
    let achieved = details["achieved"].as_array().expect("achieved");
    let share = achieved[0]["share"].as_f64().expect("share");
    assert!((share - 1.0 / 6.0).abs() < 1e-12, "{share}");
    let req = achieved[0]["requested_share"].as_f64().expect("requested");
    assert!((req - 1.0 / 6.0).abs() < 1e-12);
    // Tasks share the general quota in proportion to size (temperature 1), and no sample is
    // repeated more than ceil(1.67) times.
    assert!(achieved[1]["max_copies"].as_u64().expect("max") <= 2);
    assert_eq!(achieved[1]["distinct"], general_kept);
    // Repeats past max_repeats are refused: a target of 60,000 needs 50,000 general samples
    // (16.7 epochs); the mix shrinks to keep 1:5 and says so.
    let cfg = sft_pipeline(
        tmp.path(),
        &data,
        "ratio = \"1:5\"\ntarget = 60000\nmax_repeats = 4\npools.domain = { domain = \"medical\" }",
    );
    let out = tmp.path().join("run2");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    let (by, _) = pools(&curated(&out));
    let general = general_kept * 4;
    assert_eq!(by["general"], general, "{by:?}");
    let domain = by["domain"] as f64;
    assert!((domain - general as f64 / 5.0).abs() <= 1.0, "{by:?}");
    let warnings = report["stages"][0]["details"]["plan"]["warnings"].to_string();
    assert!(warnings.contains("not reachable"), "{warnings}");
}

#[test]
fn cpt_domain_share_is_at_most_p_within_one_document() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = data.display();
    let tok = format!("{d}/tokenizers/qwen2/tokenizer.json");
    let cfg = pipeline(
        tmp.path(),
        &format!(
            r#"
[[inputs]]
name = "medical_text"
paths = ["{d}/pretrain/medicalgpt/medical_corpus.txt"]   # JSON lines {{问, 答}}: answers as documents
columns = {{ "答" = "text", "问" = "ignore" }}
domain = "medical"
task = "medical_text"
[[inputs]]
name = "medical_qa"
paths = ["{d}/sft/medicalgpt/medical_sft_1K_format.jsonl"]
domain = "medical"
task = "medical_qa"
[[inputs]]
name = "web"
paths = ["{d}/pretrain/llama_factory/c4_demo.jsonl", "{d}/pretrain/llama_factory/wiki_demo.txt"]
domain = "general"
task = "web"
kind = "pretrain"
[[inputs]]
name = "novel"
paths = ["{d}/pretrain/medicalgpt/tianlongbabu.txt"]
domain = "general"
task = "novel"
[[stages]]
type = "mix"
mode = "cpt"
ratio = 0.15
instruct_share = 0.05
pools.domain = {{ domain = "medical", kind = "pretrain" }}
pools.instruct = {{ kind = "sft" }}
[output]
dir = "out"
formats = ["jsonl"]
[output.catalog]
tokenizer = "{tok}"
"#
        ),
    );
    let out = tmp.path().join("run");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    let details = &report["stages"][0]["details"];
    assert_eq!(details["plan"]["unit"], "tokens");
    let achieved = details["achieved"].as_array().expect("achieved");
    let tokens: Vec<f64> = achieved
        .iter()
        .map(|a| a["tokens"].as_f64().expect("tokens"))
        .collect();
    let total: f64 = tokens.iter().sum();
    // Recount from the output with the same tokenizer: the report is honest.
    let tk = sluice_pipeline::tokenize::TokenizerHandle::from_file(Path::new(&tok)).expect("tok");
    let rows = curated(&out);
    let mut by_pool: BTreeMap<String, f64> = BTreeMap::new();
    let mut largest_domain_doc: f64 = 0.0;
    for r in &rows {
        let s: sluice_pipeline::Sample = serde_json::from_value(r.clone()).expect("sample");
        let n: usize = s
            .content_parts()
            .map(|(_, t)| tk.count(t).expect("count"))
            .sum();
        let pool = r["tags"]["mix_pool"].as_str().expect("pool").to_string();
        if pool == "domain" {
            largest_domain_doc = largest_domain_doc.max(n as f64);
        }
        *by_pool.entry(pool).or_default() += n as f64;
    }
    assert_eq!(by_pool["domain"], tokens[0]);
    assert_eq!(by_pool["general"], tokens[2]);
    let domain_share = tokens[0] / total;
    assert!(domain_share <= 0.15 + 1e-12, "at most p: {domain_share}");
    assert!(
        tokens[0] >= 0.15 * total - largest_domain_doc - 1.0,
        "within one document of p: {} of {total}",
        tokens[0]
    );
    let instruct = tokens[1] / total;
    assert!((instruct - 0.05).abs() < 0.01, "{instruct}");
    // Every SFT sample of the instruct pool is a dialogue; every other pool's a document.
    for r in &rows {
        let pool = r["tags"]["mix_pool"].as_str().expect("pool");
        assert_eq!(
            r["kind"] == "sft",
            pool == "instruct",
            "{pool}: {}",
            r["kind"]
        );
    }
}

#[test]
fn task_caps_and_temperature_bound_each_task() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = sft_pipeline(
        tmp.path(),
        &data,
        "ratio = \"1:1\"\ntask_cap = 300\ntemperature = 1000\npools.domain = { domain = \"medical\" }",
    );
    let out = tmp.path().join("run");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    let mut per_task: BTreeMap<String, u64> = BTreeMap::new();
    for r in curated(&out) {
        *per_task
            .entry(r["task"].as_str().expect("task").to_string())
            .or_default() += 1;
    }
    // Domain: one task capped at 300. General: two tasks, uniform temperature, 150 each.
    assert_eq!(per_task["medical_qa"], 300, "{per_task:?}");
    assert_eq!(per_task["alpaca"], 150, "{per_task:?}");
    assert_eq!(per_task["sharegpt"], 150, "{per_task:?}");
}

#[test]
fn the_mix_is_identical_across_thread_counts() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = sft_pipeline(
        tmp.path(),
        &data,
        "ratio = \"1:3\"\ntarget = 5000\ntask_cap = 2500\npools.domain = { domain = \"medical\" }",
    );
    let mut outputs = Vec::new();
    for threads in ["1", "4"] {
        let out = tmp.path().join(format!("t{threads}"));
        run_ok(
            &cfg,
            &["--out", out.to_str().expect("utf8"), "--threads", threads],
        );
        outputs.push(std::fs::read(out.join("curated/part-00000.jsonl")).expect("curated output"));
    }
    assert!(!outputs[0].is_empty());
    assert!(outputs[0] == outputs[1], "1 and 4 threads differ");
}

#[test]
fn tags_join_profiles_and_pools_filter_on_them_and_previews_match_the_mix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("catalog");
    // The bundled example: medical dialogues with user ids, joined with the profile table.
    let report = run_ok(
        &repo().join("examples/mix_sft.toml"),
        &["--out", root.join("mix_sft").to_str().expect("utf8")],
    );
    assert_reconciles(&report);
    let tags_stage = report["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["type"] == "tags"))
        .expect("tags stage");
    let c = &tags_stage["counters"];
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    assert!(n("matched") > 100, "{c}");
    assert!(n("unmatched") > 0 && n("no_user_id") > 0, "{c}");
    // Distributions in the report: the general data has no user ids, so mostly unknown.
    let ages = &report["tags"]["age_group"];
    assert!(ages["unknown"].as_u64().unwrap_or(0) > 0, "{ages}");
    assert!(ages["18-34"].as_u64().unwrap_or(0) > 0, "{ages}");
    let achieved = &report["stages"][3]["details"]["achieved"];
    let dom = achieved[0]["samples"].as_u64().expect("domain");
    let gen = achieved[1]["samples"].as_u64().expect("general");
    assert!((gen as f64 - 5.0 * dom as f64).abs() <= 5.0, "{dom}:{gen}");

    // A catalog run over the curated medical data only (no mix): tags become dimensions.
    let cfg = pipeline(
        tmp.path(),
        &format!(
            r#"
[[inputs]]
paths = ["{}"]
domain = "medical"
task = "medical_qa"
[[inputs]]
paths = ["{}"]
domain = "general"
task = "chitchat"
cjk_despace = true
[[stages]]
type = "tags"
profiles = "{}"
buckets = [{{ column = "age", tag = "age_group", edges = [18, 35, 60] }}]
[output]
dir = "out"
"#,
            repo()
                .join("examples/data/medicalgpt/medical_sft_200_users.jsonl.gz")
                .display(),
            repo().join("examples/data/lccc/toy_data.json").display(),
            repo().join("examples/data/profiles/users.csv").display(),
        ),
    );
    let catalog_root = tmp.path().join("cat2");
    run_ok(
        &cfg,
        &["--out", catalog_root.join("tagged").to_str().expect("utf8")],
    );
    assert!(catalog_root.join("tagged/catalog.parquet").is_file());
    // Preview a mix whose domain pool is adult eastern users, from the catalog alone …
    let cat = catalog_root.to_str().expect("utf8");
    let preview = sluice(&[
        "mix",
        "preview",
        "--catalog",
        cat,
        "--domain",
        "medical",
        "--ratio",
        "1:2",
        "--where",
        "domain = 'general' OR (region = 'east' AND age >= 18)",
        "--json",
    ]);
    assert!(
        preview.status.success(),
        "{}",
        String::from_utf8_lossy(&preview.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&preview.stdout).expect("json");
    let quota = plan["pools"][0]["quota"].as_f64().expect("quota");
    let available = plan["pools"][0]["available_samples"]
        .as_u64()
        .expect("avail");
    assert!(
        available > 0 && available < 180,
        "a subset of the tagged users: {available}"
    );
    assert_eq!(
        quota, available as f64,
        "the scarce domain pool is used whole"
    );
    assert!(plan["pools"][0]["examples"]
        .as_array()
        .is_some_and(|e| !e.is_empty()));
    // … then run it: the mix selects exactly what the preview said, and only adults in the east.
    let mixed = tmp.path().join("mixed");
    let run = sluice(&[
        "mix",
        "run",
        "--catalog",
        cat,
        "--domain",
        "medical",
        "--ratio",
        "1:2",
        "--where",
        "domain = 'general' OR (region = 'east' AND age >= 18)",
        "--out",
        mixed.to_str().expect("utf8"),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rows = curated(&mixed);
    let (by, _) = pools(&rows);
    assert_eq!(by["domain"] as f64, quota);
    assert_eq!(
        by["general"] as f64,
        plan["pools"][1]["quota"].as_f64().expect("q")
    );
    for r in rows.iter().filter(|r| r["tags"]["mix_pool"] == "domain") {
        assert_eq!(r["tags"]["region"], "east");
        let age: f64 = r["tags"]["age"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("age");
        assert!(age >= 18.0);
    }
    // `sluice catalog` summarizes by tag.
    let out = sluice(&["catalog", cat, "--by", "domain,age_group", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let total = v["total"][0]["samples"].as_u64().expect("total");
    let groups: u64 = v["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["samples"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, groups);
}

/// Regression: `sluice mix run` must read back every record sluice wrote, documents (kind
/// pretrain, `text` and no `turns`) included, and a reject share over the limit exits 2 without
/// naming a flag the command does not have.
#[test]
fn mix_run_reads_back_curated_documents() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cat = tmp.path().join("cat");
    let cpt = cat.join("mix_cpt");
    run_ok(
        &repo().join("examples/mix_cpt.toml"),
        &["--out", cpt.to_str().expect("utf8")],
    );
    let docs = curated(&cpt)
        .into_iter()
        .filter(|r| r["kind"] == "pretrain")
        .count();
    assert!(docs > 0, "the cpt run curated documents");
    let mix_into = |out: &Path| {
        sluice(&[
            "mix",
            "run",
            "--catalog",
            cat.to_str().expect("utf8"),
            "--domain",
            "medical",
            "--ratio",
            "0.5",
            "--mode",
            "cpt",
            "--out",
            out.to_str().expect("utf8"),
        ])
    };
    let mixed = tmp.path().join("mixed");
    let run = mix_into(&mixed);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let report = read_json(&mixed.join("report.json"));
    assert_eq!(report["totals"]["rejected"], 0, "{}", report["totals"]);
    let mixed_docs = curated(&mixed)
        .into_iter()
        .filter(|r| r["kind"] == "pretrain")
        .count();
    assert!(mixed_docs > 0, "documents reach the mix");
    // A catalog file that cannot be read back: exit 2, no mention of a flag.
    let broken = cat.join("mix_cpt/curated/part-00000.jsonl");
    let mut text = std::fs::read_to_string(&broken).expect("read");
    text.push_str("{not json\n");
    std::fs::write(&broken, text).expect("write");
    let run = mix_into(&tmp.path().join("mixed2"));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("--max-reject-ratio"), "{stderr}");
}

/// A mix that cannot decide (its `where` names a tag no sample has) fails the run under the
/// stage's name, in one process and as tasks, and publishes nothing.
#[test]
fn a_mix_that_cannot_decide_fails_the_run_under_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: String = (0..20)
        .map(|i| format!("{{\"instruction\": \"问题{i}\", \"output\": \"回答{i}\"}}\n"))
        .collect();
    #[allow(clippy::disallowed_methods)] // fixture
    std::fs::write(dir.path().join("a.jsonl"), &rows).expect("w");
    let cfg = pipeline(
        dir.path(),
        "[[inputs]]\npaths = [\"a.jsonl\"]\ndomain = \"finance\"\n[[stages]]\ntype = \"mix\"\nratio = \"1:1\"\npools.domain = { domain = \"finance\", where = \"age >= 18\" }\npools.general = { domain = \"general\" }\n[output]\ndir = \"o\"\nformats = [\"jsonl\"]\n",
    );
    let cfg = cfg.to_str().expect("utf8");
    let work = dir.path().join("work");
    let work = work.to_str().expect("utf8");
    let tasks = [
        "--work",
        work,
        "--task-timeout",
        "120",
        "--tasks",
        "2",
        "--task-index",
        "0",
    ];
    for extra in [&[][..], &tasks[..]] {
        let out = dir.path().join(format!("o{}", extra.len()));
        let mut args = vec!["run", cfg, "--out", out.to_str().expect("utf8")];
        args.extend_from_slice(extra);
        if !extra.is_empty() {
            // Task 1 runs alongside task 0; it must be released, not left waiting.
            let mut t1 = args.clone();
            t1.truncate(t1.len() - 1);
            t1.push("1");
            let t1: Vec<String> = t1.iter().map(|s| s.to_string()).collect();
            let other = std::thread::spawn(move || {
                let refs: Vec<&str> = t1.iter().map(String::as_str).collect();
                sluice(&refs)
            });
            let o = sluice(&args);
            let other = other.join().expect("task 1");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{err}");
            assert!(
                err.contains("stages[0].mix") && err.contains("age"),
                "{err}"
            );
            assert!(!other.status.success() || !out.exists());
        } else {
            let o = sluice(&args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{err}");
            assert!(
                err.contains("stages[0].mix") && err.contains("age"),
                "{err}"
            );
        }
        assert!(!out.exists(), "nothing published at {}", out.display());
    }
}

/// Regression: of two runs that read the same file (and carry the same tags), the catalog
/// counts the newer one, whatever the folders' names (the publication times were read as
/// zeros, so the first folder by name always won).
#[test]
fn overlapping_runs_count_the_newer_run_even_when_its_folder_sorts_last() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = repo().join("examples/data/cornucopia_fin/fin_data.jsonl");
    let root = tmp.path().join("catalog");
    let pipeline = tmp.path().join("p.toml");
    for (folder, task) in [("a-old", "old_task"), ("z-new", "new_task")] {
        std::fs::write(
            &pipeline,
            format!(
                "[[inputs]]\npaths = [{:?}]\ndomain = \"finance\"\ntask = \"{task}\"\n[output]\ndir = \"x\"\nformats = [\"jsonl\"]\n",
                data.to_string_lossy()
            ),
        )
        .expect("write");
        run_ok(
            &pipeline,
            &["--out", root.join(folder).to_str().expect("utf8")],
        );
        // Publication times have whole seconds.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let out = sluice(&[
        "catalog",
        root.to_str().expect("utf8"),
        "--by",
        "task",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let tasks: Vec<&str> = v["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["task"].as_str())
        .collect();
    assert_eq!(tasks, ["new_task"], "{v}");
}

/// `holdout`: the valid and test splits (near-duplicate clusters kept whole by minhash + split)
/// stay out of the mix — every held-out sample written once, tagged with its would-be pool and,
/// with `holdout_split_by_pool`, in a split per pool — while the train split is mixed 1:3. No
/// held-out id or content appears in the training split.
#[test]
fn held_out_splits_stay_out_of_the_mix_and_keep_every_domain() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = data.display();
    let cfg = pipeline(
        tmp.path(),
        &format!(
            r#"
seed = 7
[[inputs]]
name = "medical"
paths = ["{d}/sft/medicalgpt/medical_sft_1K_format.jsonl"]
domain = "medical"
task = "medical_qa"
[[inputs]]
name = "alpaca"
paths = ["{d}/sft/llama_factory/alpaca_zh_demo.json", "{d}/sft/llama_factory/alpaca_en_demo.json"]
domain = "general"
task = "alpaca"
[[stages]]
type = "minhash"
drop = false
[[stages]]
type = "split"
ratios = {{ train = 0.8, valid = 0.1, test = 0.1 }}
[[stages]]
type = "mix"
ratio = "1:3"
holdout = "split <> 'train'"
holdout_split_by_pool = true
pools.domain = {{ domain = "medical" }}
[output]
dir = "out"
formats = ["jsonl"]
"#
        ),
    );
    let out = tmp.path().join("run");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    let rows = curated_rows(&out);
    let split = |r: &serde_json::Value| r["tags"]["split"].as_str().unwrap_or("").to_string();
    let mut by_split: BTreeMap<String, u64> = BTreeMap::new();
    for r in &rows {
        *by_split.entry(split(r)).or_default() += 1;
    }
    for s in [
        "test_domain",
        "test_general",
        "valid_domain",
        "valid_general",
    ] {
        assert!(
            by_split.get(s).copied().unwrap_or(0) > 10,
            "{s}: {by_split:?}"
        );
    }
    // Held-out samples carry their pool and are never copies.
    for r in rows.iter().filter(|r| split(r) != "train") {
        let (s, pool) = (split(r), r["tags"]["mix_pool"].as_str().unwrap_or(""));
        assert!(s.ends_with(&format!("_{pool}")), "{s} vs {pool}");
        let medical = r["domain"] == "medical";
        assert_eq!(pool == "domain", medical, "{r}");
        assert!(r["tags"]["mix_copy"].is_null(), "a held-out copy: {r}");
    }
    // The training split is the mix: 1:3 to within a sample.
    let train: Vec<&serde_json::Value> = rows.iter().filter(|r| split(r) == "train").collect();
    let dom = train.iter().filter(|r| r["domain"] == "medical").count() as f64;
    let gen = train.len() as f64 - dom;
    assert!(
        (gen - 3.0 * dom).abs() <= 3.0,
        "{dom} domain, {gen} general"
    );
    // Disjoint by id and by content.
    let base = |id: &str| id.split("#r").next().unwrap_or(id).to_string();
    let train_ids: std::collections::BTreeSet<String> = train
        .iter()
        .map(|r| base(r["id"].as_str().unwrap_or("")))
        .collect();
    let text = |r: &serde_json::Value| r["turns"].to_string();
    let train_texts: std::collections::BTreeSet<String> = train.iter().map(|r| text(r)).collect();
    for r in rows.iter().filter(|r| split(r) != "train") {
        assert!(!train_ids.contains(r["id"].as_str().unwrap_or("")), "{r}");
        assert!(
            !train_texts.contains(&text(r)),
            "held-out content in train: {r}"
        );
    }
    let mix = report["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["type"] == "mix"))
        .expect("mix stage");
    let held = rows.iter().filter(|r| split(r) != "train").count() as u64;
    assert_eq!(mix["details"]["held_out"].as_u64(), Some(held), "{mix}");
}
