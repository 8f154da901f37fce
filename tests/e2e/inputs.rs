//! Every real file in ../shared/data/sft and ../shared/data/pretrain loads, with record counts
//! taken from the data's own README and an independent count (python / line count).

use crate::common::*;

/// (path under shared/data, extra input options, records read, records rejected)
const FILES: &[(&str, &str, u64, u64)] = &[
    ("sft/llama_factory/alpaca_zh_demo.json", "", 1000, 0),
    ("sft/llama_factory/alpaca_en_demo.json", "", 999, 0),
    ("sft/llama_factory/glaive_toolcall_zh_demo.json", "", 300, 0),
    ("sft/llama_factory/identity.json", "", 91, 0),
    // One record has empty user turns, one is a lone question: rejected, with reasons.
    ("sft/medicalgpt/sharegpt_zh_1K_format.jsonl", "", 1000, 2),
    ("sft/medicalgpt/medical_sft_1K_format.jsonl", "", 1000, 0),
    ("sft/crosswoz/crosswoz_val_sharegpt.jsonl", "", 500, 0),
    // The file ends with two lines of dots: not JSON.
    ("sft/cornucopia_fin/fin_data.jsonl", "", 12, 2),
    ("sft/lccc/toy_data.json", "cjk_despace = true", 1400, 0),
    (
        "sft/toyhom_medical/sample_IM_5000-6000.csv",
        r#"columns = { ask = "user", answer = "assistant", department = "tag:department", title = "tag:title" }"#,
        7644,
        0,
    ),
    ("pretrain/llama_factory/c4_demo.jsonl", "", 300, 0),
    ("pretrain/llama_factory/wiki_demo.txt", "", 30, 0),
    ("pretrain/medicalgpt/tianlongbabu.txt", "", 2366, 0),
    // JSON lines in a .txt file, with Chinese keys: mapped to a dialogue.
    (
        "pretrain/medicalgpt/medical_corpus.txt",
        r#"columns = { "问" = "user", "答" = "assistant" }"#,
        87,
        0,
    ),
];

#[test]
fn every_shared_sft_and_pretrain_file_loads() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut body = String::new();
    for (i, (path, extra, _, _)) in FILES.iter().enumerate() {
        body += &format!(
            "[[inputs]]\nname = \"f{i}\"\npaths = [{:?}]\n{extra}\n",
            data.join(path).to_string_lossy()
        );
    }
    body += "[output]\ndir = \"out\"\nformats = [\"jsonl\"]\n";
    let cfg = pipeline(dir.path(), &body);
    let out = dir.path().join("out");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    for (i, (path, _, read, rejected)) in FILES.iter().enumerate() {
        let r = input(&report, &format!("f{i}"));
        assert_eq!(r["read"], *read, "{path}: {r}");
        assert_eq!(r["rejected"], *rejected, "{path}: {r}");
    }
    // Every file of those folders is covered (LICENSE and LLaMA-Factory's registry aside).
    for sub in ["sft", "pretrain"] {
        for entry in walk(&data.join(sub)) {
            let rel = entry
                .strip_prefix(&data)
                .expect("under data")
                .to_string_lossy()
                .replace('\\', "/");
            let name = entry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name == "LICENSE" || name == "dataset_info.json" {
                continue;
            }
            assert!(
                FILES.iter().any(|f| f.0 == rel),
                "{rel} is not covered by this test"
            );
        }
    }
    // The GB18030 export is decoded, never mojibake; the split of LCCC is kept as a tag.
    let samples = curated_rows(&out);
    let gb = samples
        .iter()
        .find(|s| {
            s["source"]
                .as_str()
                .is_some_and(|p| p.ends_with("sample_IM_5000-6000.csv"))
        })
        .expect("a CSV sample");
    assert_eq!(gb["tags"]["department"], "心血管科");
    assert_eq!(
        gb["turns"][0]["content"],
        "我有高血压这两天女婿来的时候给我拿了些党参泡水喝，您好高血压可以吃党参吗？"
    );
    let lccc = samples
        .iter()
        .find(|s| {
            s["source"]
                .as_str()
                .is_some_and(|p| p.ends_with("toy_data.json"))
                && s["turns"][0]["content"] == "遭淋安逸了？"
        })
        .expect("lccc's first valid dialogue");
    assert_eq!(lccc["tags"]["split"], "valid");
    let doc = samples
        .iter()
        .find(|s| {
            s["source"]
                .as_str()
                .is_some_and(|p| p.ends_with("wiki_demo.txt"))
        })
        .expect("wiki");
    assert_eq!(doc["kind"], "pretrain");
    assert!(doc["text"]
        .as_str()
        .is_some_and(|t| t.starts_with("Anarchism is a political philosophy")));
    // The tool-calling dialogue keeps its roles and tools.
    let tool = samples
        .iter()
        .find(|s| {
            s["source"]
                .as_str()
                .is_some_and(|p| p.ends_with("glaive_toolcall_zh_demo.json"))
        })
        .expect("tools");
    assert_eq!(tool["turns"][1]["role"], "function_call");
    assert!(tool["tools"]
        .as_str()
        .is_some_and(|t| t.contains("generate_invoice")));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn parquet_from_other_tools_loads_with_nested_columns() {
    use arrow_array::builder::{Int64Builder, ListBuilder, StringBuilder, StructBuilder};
    use arrow_array::{ArrayRef, RecordBatch};
    use arrow_schema::{DataType, Field, Fields};
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tempdir");
    let fields = Fields::from(vec![
        Field::new("from", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
    ]);
    let mut conv = ListBuilder::new(StructBuilder::from_fields(fields, 4));
    let mut ids = Int64Builder::new();
    let mut system = StringBuilder::new();
    type Row<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
    let rows: [Row; 3] = [
        (
            &[
                ("human", "信用卡逾期一天有影响吗？"),
                ("gpt", "一般有宽限期，请尽快还款。"),
            ],
            Some("你是银行客服"),
        ),
        (
            &[
                ("human", "怎么开通网银"),
                ("gpt", "携带身份证到柜台办理。"),
                ("human", "要多久"),
                ("gpt", "当场开通。"),
            ],
            None,
        ),
        (&[("gpt", "顺序错了")], None),
    ];
    for (i, (turns, sys)) in rows.iter().enumerate() {
        for (from, value) in turns.iter() {
            let s = conv.values();
            s.field_builder::<StringBuilder>(0)
                .expect("from")
                .append_value(from);
            s.field_builder::<StringBuilder>(1)
                .expect("value")
                .append_value(value);
            s.append(true);
        }
        conv.append(true);
        ids.append_value(100 + i as i64);
        system.append_option(*sys);
    }
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(ids.finish()) as ArrayRef),
        ("conversations", Arc::new(conv.finish()) as ArrayRef),
        ("system", Arc::new(system.finish()) as ArrayRef),
    ])
    .expect("batch");
    let file = std::fs::File::create(dir.path().join("hf.parquet")).expect("create");
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");

    let cfg = pipeline(dir.path(), "[[inputs]]\nname = \"pq\"\npaths = [\"*.parquet\"]\ndomain = \"finance\"\n[output]\ndir = \"out\"\nformats = [\"jsonl\"]\n");
    let out = dir.path().join("out");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    let r = input(&report, "pq");
    assert_eq!(
        (
            r["read"].as_u64(),
            r["kept"].as_u64(),
            r["rejected"].as_u64()
        ),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(r["files"][0]["reader"], "parquet");
    let samples = curated_rows(&out);
    assert_eq!(samples[0]["id"], "100");
    assert_eq!(samples[0]["system"], "你是银行客服");
    assert_eq!(samples[0]["domain"], "finance");
    assert_eq!(samples[1]["turns"].as_array().map(Vec::len), Some(4));
    let rejects = read_jsonl(&out.join("rejects.jsonl"));
    assert_eq!(
        rejects[0]["record"], 3,
        "Parquet rejects are located by row"
    );
    assert!(rejects[0]["error"]
        .as_str()
        .is_some_and(|e| e.contains("alternate")));
}
