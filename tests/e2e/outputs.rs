//! The quickstart runs from the repository alone, and its outputs are what they claim to be:
//! Parquet with the documented schema and the same rows as JSONL, a LLaMA-Factory dataset its
//! loader accepts, dropped samples with reasons, and Parquet that sluice reads back unchanged.

use crate::common::*;
use arrow_array::cast::AsArray;
use arrow_array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

fn parquet_ids(p: &Path) -> (Vec<String>, Vec<String>) {
    let file = std::fs::File::open(p).expect("open parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let mut ids = Vec::new();
    let mut fields = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        fields = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let col = batch.column_by_name("id").expect("id column");
        let col = col.as_string::<i32>();
        ids.extend((0..col.len()).map(|i| col.value(i).to_string()));
    }
    (ids, fields)
}

/// Regression: an Arrow map column made the Parquet unloadable by HF `datasets`.
#[test]
fn tags_are_a_list_of_key_value_structs_not_an_arrow_map() {
    let schema = sluice_pipeline::io::writers::sample_schema(false);
    let tags = schema.field_with_name("tags").expect("tags");
    let arrow_schema::DataType::List(item) = tags.data_type() else {
        panic!("tags is {:?}", tags.data_type())
    };
    let arrow_schema::DataType::Struct(fields) = item.data_type() else {
        panic!("tag items are {:?}", item.data_type())
    };
    let names: Vec<_> = fields.iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["key", "value"]);
}

#[test]
fn quickstart_writes_every_output_and_reconciles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("quickstart");
    let cfg = repo().join("examples/quickstart.toml");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    assert_eq!(report["status"], "succeeded");
    for f in [
        "curated/part-00000.parquet",
        "curated/part-00000.jsonl",
        "dropped/part-00000.parquet",
        "dropped/part-00000.jsonl",
        "rejects.jsonl",
        "export/llamafactory/dataset_info.json",
        "export/llamafactory/sluice_quickstart.json",
        "export/llamafactory/sluice_quickstart_pretrain.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let leftovers: Vec<_> = walk_names(dir.path())
        .into_iter()
        .filter(|n| n.ends_with(".tmp") || n.contains("staging"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Parquet and JSONL hold the same samples in the same order.
    let jsonl = curated_rows(&out);
    // Curated files per split: `part-*` holds samples without a split tag, LCCC's own
    // train/valid/test samples go to `train-*`, `valid-*`, `test-*`.
    let mut parquet: Vec<_> = std::fs::read_dir(out.join("curated"))
        .expect("curated")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    parquet.sort();
    let names: Vec<String> = parquet
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "part-00000.parquet",
            "test-00000.parquet",
            "train-00000.parquet",
            "valid-00000.parquet"
        ]
    );
    let (mut ids, mut fields) = (Vec::new(), Vec::new());
    for p in &parquet {
        let (i, f) = parquet_ids(p);
        ids.extend(i);
        fields = f;
    }
    for r in &jsonl {
        let split = r["tags"]["split"].as_str().unwrap_or("part");
        assert!(
            std::fs::read_to_string(out.join(format!("curated/{split}-00000.jsonl")))
                .expect("split file")
                .contains(&format!("\"id\":{}", r["id"])),
            "{} is not in its split's file",
            r["id"]
        );
    }
    let jsonl_ids: Vec<String> = jsonl
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, jsonl_ids);
    assert_eq!(
        ids.len() as u64,
        report["totals"]["kept"].as_u64().expect("kept")
    );
    assert_eq!(
        fields,
        [
            "id", "source", "domain", "task", "kind", "user_id", "system", "tools", "turns",
            "text", "tags"
        ]
    );
    let (dropped_ids, dropped_fields) = parquet_ids(&out.join("dropped/part-00000.parquet"));
    assert_eq!(
        dropped_ids.len() as u64,
        report["totals"]["dropped"].as_u64().expect("dropped")
    );
    assert!(dropped_fields.contains(&"drop_reason".to_string()));

    // LLaMA-Factory: sharegpt with human/observation at odd positions, gpt/function_call at even.
    let info = read_json(&out.join("export/llamafactory/dataset_info.json"));
    assert_eq!(info["sluice_quickstart"]["formatting"], "sharegpt");
    assert_eq!(
        info["sluice_quickstart"]["columns"]["messages"],
        "conversations"
    );
    // One dataset per split (LCCC's own train/valid/test): held-out samples are never in the
    // dataset one trains on; samples without a split stay in `sluice_quickstart`.
    let lf = out.join("export/llamafactory");
    let sft_kept = jsonl.iter().filter(|s| s["kind"] == "sft").count();
    let mut export = Vec::new();
    for (name, split) in [
        ("sluice_quickstart", None),
        ("sluice_quickstart_train", Some("train")),
        ("sluice_quickstart_valid", Some("valid")),
        ("sluice_quickstart_test", Some("test")),
    ] {
        assert_eq!(info[name]["file_name"], format!("{name}.json"), "{info}");
        let part = read_json(&lf.join(format!("{name}.json")));
        let part = part.as_array().expect("array").clone();
        let expected = jsonl
            .iter()
            .filter(|s| s["kind"] == "sft")
            .filter(|s| s["tags"]["split"].as_str() == split)
            .count();
        assert_eq!(part.len(), expected, "{name}");
        export.extend(part);
    }
    assert_eq!(export.len(), sft_kept);
    for rec in &export {
        let conv = rec["conversations"].as_array().expect("conversations");
        assert!(!conv.is_empty() && conv.len() % 2 == 0);
        for (i, t) in conv.iter().enumerate() {
            let from = t["from"].as_str().expect("from");
            let ok = if i % 2 == 0 {
                ["human", "observation"].contains(&from)
            } else {
                ["gpt", "function_call"].contains(&from)
            };
            assert!(ok, "position {i} has {from}");
        }
        assert!(rec["system"].is_string() && rec["tools"].is_string());
    }
    assert!(export
        .iter()
        .any(|r| r["tools"].as_str().is_some_and(|t| !t.is_empty())));
    let pretrain = read_json(&out.join("export/llamafactory/sluice_quickstart_pretrain.json"));
    assert_eq!(
        pretrain.as_array().map(Vec::len),
        Some(jsonl.len() - sft_kept)
    );
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        out.push(
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        if p.is_dir() {
            out.extend(walk_names(&p));
        }
    }
    out
}

#[test]
fn exact_dedup_keeps_the_first_and_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = [
        r#"{"id":"a","instruction":"请问 转账 限额是多少？","output":"单笔五万元。"}"#,
        r#"{"id":"b","instruction":"请问 转账 限额是多少?","output":"单笔五万元。"}"#, // half-width ？ (NFKC)
        r#"{"id":"c","instruction":"请问   转账 限额是多少？","output":"单笔五万元。"}"#, // extra spaces
        r#"{"id":"d","instruction":"请问转账限额是多少？","output":"单笔五万元。"}"#, // spaces removed: different
        r#"{"id":"e","instruction":"HELLO there","output":"Hi"}"#,
        r#"{"id":"f","instruction":"hello THERE","output":"ｈｉ"}"#, // case and full width
    ];
    std::fs::write(dir.path().join("d.jsonl"), lines.join("\n")).expect("write");
    let cfg = pipeline(dir.path(), "[[inputs]]\npaths = [\"d.jsonl\"]\n[[stages]]\ntype = \"exact_dedup\"\n[output]\ndir = \"out\"\nformats = [\"jsonl\"]\n");
    let out = dir.path().join("out");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    let kept: Vec<_> = curated_rows(&out)
        .iter()
        .map(|s| s["id"].as_str().map(String::from))
        .collect();
    assert_eq!(kept, [Some("a".into()), Some("d".into()), Some("e".into())]);
    let dropped = read_jsonl(&out.join("dropped/part-00000.jsonl"));
    let pairs: Vec<(String, String)> = dropped
        .iter()
        .map(|d| {
            (
                d["sample"]["id"].as_str().unwrap_or("").into(),
                d["drop"]["duplicate_of"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("b".into(), "a".into()),
            ("c".into(), "a".into()),
            ("f".into(), "e".into())
        ]
    );
    assert_eq!(dropped[0]["drop"]["stage"], "stages[0].exact_dedup");
    assert_eq!(report["stages"][0]["dropped"]["duplicate"], 3);
}

#[test]
fn curated_parquet_reads_back_as_the_same_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = repo().join("examples/data");
    let body = format!(
        "[[inputs]]\nname = \"mixed\"\npaths = [\"{d}/llama_factory/*.json\", \"{d}/lccc/toy_data.json\", \"{d}/c4/*.jsonl\"]\n[output]\ndir = \"out\"\n",
        d = data.to_string_lossy()
    );
    let cfg = pipeline(dir.path(), &body);
    let first = dir.path().join("first");
    run_ok(&cfg, &["--out", first.to_str().expect("utf8")]);
    let again = "[[inputs]]\nname = \"mixed\"\npaths = [\"first/curated/*.parquet\"]\n[output]\ndir = \"out\"\nformats = [\"jsonl\"]\n";
    let cfg2 = pipeline(dir.path(), again);
    let second = dir.path().join("second");
    let report = run_ok(&cfg2, &["--out", second.to_str().expect("utf8")]);
    assert_eq!(
        input(&report, "mixed")["formats"]["sluice"],
        input(&report, "mixed")["read"]
    );
    let a = std::fs::read(first.join("curated/part-00000.jsonl")).expect("first");
    let b = std::fs::read(second.join("curated/part-00000.jsonl")).expect("second");
    assert!(a == b, "Parquet → sluice → JSONL changed the samples");
}

#[test]
fn check_lists_every_config_error_with_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = pipeline(
        dir.path(),
        "[[inputs]]\npaths = [\"nothing/*.jsonl\"]\ncolumns = { ask = \"questioner\" }\n[[stages]]\ntype = \"length_filter\"\nmin_chars = 9\nmax_chars = 2\n[output]\ndir = \"out\"\n",
    );
    let out = sluice(&["check", cfg.to_str().expect("utf8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pipeline.toml"), "{err}");
    assert!(
        err.contains("inputs[0].paths: no file matches \"nothing/*.jsonl\""),
        "{err}"
    );
    assert!(
        err.contains("inputs[0].columns.ask: unknown target \"questioner\""),
        "{err}"
    );
    assert!(
        err.contains("stages[0] (length_filter): min_chars 9 is above max_chars 2"),
        "{err}"
    );

    let cfg = pipeline(dir.path(), "[[inputs]]\npaths = [\"x\"]\n[[stages]]\ntype = \"exact_dedup\"\nscop = \"all\"\n[output]\ndir = \"out\"\n");
    let out = sluice(&["check", cfg.to_str().expect("utf8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field `scop`") && err.contains("line"),
        "{err}"
    );

    // Every example pipeline shipped in the repository is valid.
    let mut examples = 0;
    for e in std::fs::read_dir(repo().join("examples"))
        .expect("examples")
        .flatten()
    {
        let p = e.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let train_file = name.starts_with("train_") || name.ends_with("_train.toml");
        if name == "ablate.toml" {
            // An ablation file: every point's pipeline and the train file check out.
            let plan = sluice(&["ablate", "plan", p.to_str().expect("utf8")]);
            let stdout = String::from_utf8_lossy(&plan.stdout);
            assert!(
                plan.status.success() && stdout.starts_with("3 points"),
                "{stdout}{}",
                String::from_utf8_lossy(&plan.stderr)
            );
            continue;
        }
        if train_file {
            // Train files are the trainer's, not pipelines: they must parse and validate.
            sluice_trainer::TrainConfig::load(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            continue;
        }
        if p.extension().is_some_and(|x| x == "toml") {
            examples += 1;
            let ok = sluice(&["check", p.to_str().expect("utf8")]);
            assert!(
                ok.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&ok.stderr)
            );
        }
    }
    assert!(examples >= 1);
}

/// Regression: five typos took five runs of `sluice check`, and a stage's typo was reported at
/// the line of the first `[[stages]]`. Every problem is listed at once, each at its own line.
#[test]
fn check_lists_every_typo_at_its_own_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.jsonl"), "{\"text\": \"hello world\"}\n").expect("w");
    let cfg = pipeline(
        dir.path(),
        "name = \"x\"\nsed = 3\n\n[[inputs]]\npaths = [\"a.jsonl\"]\nformatt = \"alpaca\"\ndomian = \"finance\"\n\n[[stages]]\ntype = \"length_filter\"\nmin_chars = 3\n\n[[stages]]\ntype = \"exact_dedup\"\nscoope = \"prompt\"\n\n[[stages]]\ntype = \"length_filter\"\nmin_chars = \"x\"\n\n[output]\ndirr = \"o\"\n",
    );
    let out = sluice(&["check", cfg.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for (key, line) in [
        ("sed", 2),
        ("inputs[0].formatt", 6),
        ("inputs[0].domian", 7),
        ("stages[1].scoope", 15),
        ("stages[2].min_chars", 19),
        ("output.dirr", 22),
    ] {
        assert!(
            err.contains(&format!("{key} (line {line}, column 1)")),
            "{key} at line {line}:\n{err}"
        );
    }
    assert!(err.contains("output.dir: missing field `dir`"), "{err}");
}

/// `sluice run --limit N`: a trial over the first N records of each input, published beside
/// the real run (`<dir>.trial`), outside the catalog, with counts that reconcile.
#[test]
fn a_trial_reads_the_first_records_of_each_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let line = |i: usize| {
        format!("{{\"instruction\": \"问题{i}：怎么还款？\", \"output\": \"回答{i}。\"}}\n")
    };
    std::fs::write(
        dir.path().join("a.jsonl"),
        (0..30).map(line).collect::<String>(),
    )
    .expect("w");
    std::fs::write(
        dir.path().join("b1.jsonl"),
        (30..33).map(line).collect::<String>(),
    )
    .expect("w");
    std::fs::write(
        dir.path().join("b2.jsonl"),
        (33..60).map(line).collect::<String>(),
    )
    .expect("w");
    let cfg = pipeline(
        dir.path(),
        "[[inputs]]\nname = \"a\"\npaths = [\"a.jsonl\"]\n[[inputs]]\nname = \"b\"\npaths = [\"b*.jsonl\"]\n[output]\ndir = \"o\"\nformats = [\"jsonl\"]\n",
    );
    let out = sluice(&[
        "run",
        cfg.to_str().expect("utf8"),
        "--limit",
        "5",
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join("o").exists(),
        "a trial never replaces the run"
    );
    let report = read_json(&dir.path().join("o.trial/report.json"));
    assert_eq!(report["inputs"][0]["read"], 5);
    // Input b's first 5 records span its two files: 3 from b1, 2 from b2.
    assert_eq!(report["inputs"][1]["read"], 5);
    assert_eq!(
        report["inputs"][1]["files"][1]["records"], 2,
        "{}",
        report["inputs"][1]
    );
    assert_eq!(report["totals"]["kept"], 10);
    let rows = read_jsonl(&dir.path().join("o.trial/curated/part-00000.jsonl"));
    assert_eq!(rows.len(), 10);
    let cat = sluice(&["catalog", dir.path().to_str().expect("utf8"), "--json"]);
    assert!(!cat.status.success(), "a trial is not in the catalog");
}

/// `sluice inspect run`: dropped samples with their reason and detail, and what a rewriting
/// stage changed as a word diff.
#[test]
fn inspect_run_shows_drops_and_rewrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = [
        r#"{"id":"a","instruction":"嗯嗯，我想问一下信用卡怎么还款？","output":"您可以通过手机银行还款。"}"#,
        r#"{"id":"b","instruction":"我想问一下信用卡怎么还款？","output":"您可以通过手机银行还款。"}"#,
        r#"{"id":"c","instruction":"我想问一下信用卡怎么还款？","output":"您可以通过手机银行还款。"}"#,
        r#"{"id":"d","instruction":"短","output":"好"}"#,
    ];
    std::fs::write(dir.path().join("in.jsonl"), rows.join("\n") + "\n").expect("w");
    let cfg = pipeline(
        dir.path(),
        "[[inputs]]\npaths = [\"in.jsonl\"]\n[[stages]]\ntype = \"filler\"\n[[stages]]\ntype = \"length_filter\"\nmin_chars = 5\n[[stages]]\ntype = \"exact_dedup\"\n[output]\ndir = \"o\"\nformats = [\"jsonl\"]\n",
    );
    run_ok(
        &cfg,
        &["--out", dir.path().join("o").to_str().expect("utf8")],
    );
    let run = dir.path().join("o");
    let run = run.to_str().expect("utf8");
    let show = |args: &[&str]| {
        let out = sluice(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dups = show(&["inspect", "run", run, "--reason", "duplicate"]);
    assert!(dups.contains("dropped: 2 sample(s) match"), "{dups}");
    assert!(dups.contains("duplicate of: a"), "{dups}");
    let short = show(&["inspect", "run", run, "--stage", "length_filter"]);
    assert!(
        short.contains("too_short") && short.contains("\nd "),
        "{short}"
    );
    let cfg_s = cfg.to_str().expect("utf8");
    let filler = show(&[
        "inspect",
        "run",
        run,
        "--stage",
        "filler",
        "--pipeline",
        cfg_s,
    ]);
    assert!(filler.contains("[-嗯嗯，-]我想问一下"), "{filler}");
    let one = show(&["inspect", "run", run, "--id", "d", "--pipeline", cfg_s]);
    assert!(one.contains("dropped here: too_short"), "{one}");
}

/// Every run writes report.html beside report.json: one page that fetches nothing when viewed,
/// with the report's counts (totals, inputs, drop reasons, the mix, tag distributions) drawn as
/// inline SVG, and the same bytes on any thread count.
#[test]
fn a_run_writes_an_html_report_of_its_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = repo().join("examples/mix_sft.toml");
    let out = dir.path().join("mix");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(html.starts_with("<!doctype html>"));
    let t = &report["totals"];
    assert!(
        html.contains(&format!(
            "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            t["read"], t["kept"], t["copies"], t["dropped"], t["rejected"]
        )),
        "the totals"
    );
    for input in report["inputs"].as_array().expect("inputs") {
        let name = input["name"].as_str().expect("name");
        assert!(
            html.contains(&format!("<td>{name}</td><td>{}</td>", input["read"])),
            "{name}"
        );
    }
    for s in report["stages"].as_array().expect("stages") {
        for reason in s["dropped"].as_object().into_iter().flat_map(|d| d.keys()) {
            let row = format!(
                "<td>stages[{}] {}</td><td>{reason}</td><td>{}</td>",
                s["index"],
                s["type"].as_str().expect("type"),
                s["dropped"][reason]
            );
            assert!(html.contains(&row), "{row}");
        }
    }
    assert!(
        html.contains("id=\"mix-3\""),
        "the mix's plan against what it achieved"
    );
    // Lengths: every converted record as read, every written sample (copies too) as written.
    let sum = |k: &str| -> u64 {
        report["lengths"][k]
            .as_array()
            .unwrap_or_else(|| panic!("lengths.{k}"))
            .iter()
            .map(|v| v.as_u64().expect("count"))
            .sum()
    };
    let n = |k: &str| t[k].as_u64().expect("count");
    assert_eq!(sum("chars_read"), n("read") - n("rejected"));
    assert_eq!(sum("chars_written"), n("kept") + n("copies"));
    assert!(html.contains("id=\"chars-read\"") && html.contains("id=\"chars-written\""));
    assert!(html.contains("<h3>age_group</h3>"), "tag distributions");
    // The first dropped samples of each reason, as in report.json.
    let examples = report["examples"].as_array().expect("examples");
    assert!(examples.len() >= 3, "{examples:?}");
    for e in examples {
        let id = e["id"].as_str().expect("id");
        assert!(html.contains(&format!("<code>{id}</code>")), "{id}");
    }
    assert!(html.contains("<h3>stages[3] mix · not_selected</h3>"));
    assert!(html.matches("<svg").count() >= 5);
    assert!(!html.contains("<script"));
    for fetch in ["src=\"", "href=\"", "@import", "url("] {
        assert!(
            !html.contains(fetch),
            "{fetch}: the page must open without a network"
        );
    }
    let again = dir.path().join("again");
    run_ok(
        &cfg,
        &["--out", again.to_str().expect("utf8"), "--threads", "1"],
    );
    // The cleaning example's rewriting stages: their first changes, as word diffs, with
    // personal data masked on both sides.
    let clean = dir.path().join("clean");
    let cleaned = run_ok(
        &repo().join("examples/clean.toml"),
        &["--out", clean.to_str().expect("utf8")],
    );
    let page = std::fs::read_to_string(clean.join("report.html")).expect("page");
    let rewrites = cleaned["rewrites"].as_array().expect("rewrites");
    let kinds: std::collections::BTreeSet<&str> = rewrites
        .iter()
        .map(|r| {
            cleaned["stages"][r["stage"].as_u64().expect("stage") as usize]["type"]
                .as_str()
                .expect("type")
        })
        .collect();
    assert!(kinds.contains("filler"), "{kinds:?}");
    for r in rewrites {
        let diff = r["diff"].as_str().expect("diff");
        assert!(diff.contains("[-") || diff.contains("{+"), "{diff}");
        assert!(
            !like_a_phone(diff),
            "a phone number in a rewrite example: {diff}"
        );
    }
    assert!(page.contains("id=\"rewrites\""));
    assert_eq!(
        std::fs::read(again.join("report.html")).expect("again"),
        html.as_bytes(),
        "the same page on one thread"
    );
}

/// Whether `s` holds 11 digits in a row starting with 1 (a mainland mobile number).
fn like_a_phone(s: &str) -> bool {
    let d: Vec<char> = s.chars().collect();
    d.windows(11)
        .any(|w| w[0] == '1' && w.iter().all(|c| c.is_ascii_digit()))
}
