//! Broken input never panics and never vanishes: each bad record lands in rejects.jsonl with its
//! file and line, the rest of the file is processed, and the reject ratio can fail a run.

use crate::common::*;
use std::io::Write;

fn rejects_of(out: &std::path::Path) -> Vec<serde_json::Value> {
    read_jsonl(&out.join("rejects.jsonl"))
}

#[test]
fn broken_jsonl_records_are_rejected_with_their_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = std::fs::File::create(dir.path().join("bad.jsonl")).expect("create");
    let good = r#"{"instruction":"你好","input":"","output":"您好，有什么可以帮您？"}"#;
    writeln!(f, "{good}").expect("w"); // line 1: fine
    writeln!(f, r#"{{"instruction":"截断的","output":"#).expect("w"); // 2: truncated
    writeln!(f, r#"{{"instruction":"类型错误","output":42}}"#).expect("w"); // 3: wrong type
    writeln!(
        f,
        r#"{{"conversations":[{{"from":"human","value":"在吗"}},{{"from":"gpt","value":""}}]}}"#
    )
    .expect("w"); // 4: empty turn
    f.write_all(b"{\"instruction\":\"\xff\xfe\",\"output\":\"x\"}\n")
        .expect("w"); // 5: invalid UTF-8
    writeln!(f).expect("w"); // 6: blank, not a record
    writeln!(
        f,
        "{{\"text\":\"{}\"}}",
        "长".repeat(10 * 1024 * 1024 / 3 + 1)
    )
    .expect("w"); // 7: over 10 MB
    writeln!(f, r#"{{"instruction":"最后","output":"一条正常记录"}}"#).expect("w"); // 8: fine
    drop(f);
    let cfg = pipeline(
        dir.path(),
        "[[inputs]]\nname = \"bad\"\npaths = [\"bad.jsonl\"]\n[output]\ndir = \"out\"\n",
    );
    let out = dir.path().join("out");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    let r = input(&report, "bad");
    assert_eq!(
        (
            r["read"].as_u64(),
            r["kept"].as_u64(),
            r["rejected"].as_u64()
        ),
        (Some(7), Some(2), Some(5))
    );
    let rejects = rejects_of(&out);
    let lines: Vec<u64> = rejects
        .iter()
        .map(|r| r["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, [2, 3, 4, 5, 7]);
    for r in &rejects {
        assert_eq!(r["file"], "bad.jsonl");
        assert_eq!(r["input"], "bad");
    }
    let err = |i: usize| rejects[i]["error"].as_str().expect("error").to_string();
    assert!(err(0).contains("EOF"), "{}", err(0));
    assert!(err(1).contains("invalid type: integer `42`"), "{}", err(1));
    assert!(err(2).contains("turn 2 (assistant) is empty"), "{}", err(2));
    assert!(err(3).contains("UTF-8"), "{}", err(3));
    assert!(err(4).contains("over max_record_bytes"), "{}", err(4));
    // The snippet of a 10 MB line is short.
    assert!(rejects[4]["snippet"].as_str().unwrap_or("").len() < 1000);
    // The report quotes the first three, as rejects.jsonl has them, and the page shows them.
    let quoted = report["rejects"]
        .as_array()
        .expect("rejects in report.json");
    assert_eq!(quoted.len(), 3, "{quoted:?}");
    for (q, r) in quoted.iter().zip(&rejects) {
        assert_eq!(
            (
                &q["input"],
                &q["file"],
                &q["line"],
                &q["record"],
                &q["error"]
            ),
            (
                &r["input"],
                &r["file"],
                &r["line"],
                &r["record"],
                &r["error"]
            )
        );
    }
    let page = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(page.contains("id=\"rejects\""));
    let row = format!(
        "<td>bad.jsonl</td><td>3</td><td>{}</td>",
        rejects[1]["record"]
    );
    assert!(page.contains(&row), "{row}");
}

#[test]
fn gb18030_is_decoded_when_detected_and_rejected_when_declared_utf8() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv =
        "ask,answer\n我最近总是头疼怎么办,建议先测量血压\n孩子发烧三十九度,及时就医并物理降温\n";
    let (bytes, _, _) = encoding_rs::GB18030.encode(csv);
    std::fs::write(dir.path().join("export.csv"), &bytes).expect("write");
    let body = |enc: &str| {
        format!("[[inputs]]\nname = \"gb\"\npaths = [\"export.csv\"]\n{enc}\ncolumns = {{ ask = \"user\", answer = \"assistant\" }}\n[output]\ndir = \"out\"\nformats = [\"jsonl\"]\n")
    };
    let out = dir.path().join("auto");
    let cfg = pipeline(dir.path(), &body(""));
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_eq!(input(&report, "gb")["files"][0]["encoding"], "gb18030");
    assert_eq!(
        input(&report, "gb")["files"][0]["encoding_why"],
        "2 of 2 non-ASCII lines in the file are not UTF-8; GB18030 decodes them all"
    );
    let samples = curated_rows(&out);
    assert_eq!(samples[0]["turns"][0]["content"], "我最近总是头疼怎么办");
    assert_eq!(samples[1]["turns"][1]["content"], "及时就医并物理降温");

    let out = dir.path().join("declared");
    let cfg = pipeline(dir.path(), &body("encoding = \"utf-8\""));
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    assert_eq!(
        input(&report, "gb")["files"][0]["encoding_why"],
        "set in the config"
    );
    let rejects = rejects_of(&out);
    assert_eq!(
        rejects.len(),
        2,
        "both rows are rejected, none is written as mojibake"
    );
    assert_eq!(rejects[0]["line"], 2);
    assert_eq!(rejects[1]["line"], 3);
    assert!(rejects[0]["error"]
        .as_str()
        .is_some_and(|e| e.contains("invalid UTF-8")));
}

#[test]
fn csv_rows_with_wrong_field_counts_and_broken_json_arrays_are_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("t.csv"),
        "prompt,response\n问,答\n只有一列\n再问,再答\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("a.json"),
        "[\n  {\"instruction\": \"好\", \"output\": \"的\"},\n  {\"instruction\": 1, \"output\": \"x\"},\n  {\"instruction\": \"又\", \"output\": \"好\"}\n  {\"instruction\": \"丢\", \"output\": \"失\"}\n]\n",
    )
    .expect("write");
    let cfg = pipeline(
        dir.path(),
        "[[inputs]]\nname = \"csv\"\npaths = [\"t.csv\"]\n[[inputs]]\nname = \"arr\"\npaths = [\"a.json\"]\n[output]\ndir = \"out\"\nformats = [\"jsonl\"]\n",
    );
    let out = dir.path().join("out");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    let rejects = rejects_of(&out);
    assert_eq!(rejects[0]["file"], "t.csv");
    assert_eq!(rejects[0]["line"], 3);
    assert!(rejects[0]["error"]
        .as_str()
        .is_some_and(|e| e.contains("1 fields, the header has 2")));
    assert_eq!(rejects[1]["file"], "a.json");
    assert_eq!(rejects[1]["line"], 3);
    // A missing comma stops the splitter: the rest of the file is one located reject.
    assert!(
        rejects[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("line 5")),
        "{}",
        rejects[2]
    );
    assert_eq!(input(&report, "csv")["kept"], 2);
    assert_eq!(input(&report, "arr")["kept"], 2);
}

#[test]
fn too_many_rejects_fail_the_run_and_keep_the_last_good_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("d.jsonl"),
        "{\"text\":\"一篇正常的文档\"}\n{\"text\":\n",
    )
    .expect("write");
    let cfg = pipeline(
        dir.path(),
        "[[inputs]]\npaths = [\"d.jsonl\"]\n[output]\ndir = \"out\"\n",
    );
    let out = dir.path().join("out");
    run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    let good = std::fs::read(out.join("report.json")).expect("report");
    let res = sluice(&[
        "run",
        cfg.to_str().expect("utf8"),
        "--quiet",
        "--out",
        out.to_str().expect("utf8"),
        "--max-reject-ratio",
        "0.2",
    ]);
    assert_eq!(
        res.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(String::from_utf8_lossy(&res.stderr).contains("1 of 2 records rejected"));
    assert_eq!(
        std::fs::read(out.join("report.json")).expect("report"),
        good,
        "the last good run is untouched"
    );
    let failed = dir.path().join("out.failed");
    assert_eq!(read_jsonl(&failed.join("rejects.jsonl")).len(), 1);
    assert!(read_json(&failed.join("report.json"))["status"]
        .as_str()
        .is_some_and(|s| s.starts_with("failed")));
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// Regression (#18): a corrupt gzip stream inside a `.json.gz` aborted the whole run, and a
/// truncated one under 256 KiB lost every record of its file. Now the records before the fault
/// are kept, the fault is one reject naming the file, and the run goes on to the next file.
#[test]
fn a_broken_compressed_stream_costs_only_what_it_spoils() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = |i: usize| {
        format!("{{\"instruction\": \"问题{i}：信用卡怎么还款？\", \"output\": \"回答{i}。\"}}")
    };
    // JSONL, truncated: the last 30 bytes of the gzip member are gone.
    let jsonl: String = (0..200).map(|i| rec(i) + "\n").collect();
    let gz = gzip(jsonl.as_bytes());
    std::fs::write(
        dir.path().join("a_truncated.jsonl.gz"),
        &gz[..gz.len() - 30],
    )
    .expect("w");
    // A JSON document whose gzip stream ends in garbage.
    let doc = format!("[{}]", (0..200).map(rec).collect::<Vec<_>>().join(","));
    let mut gz = gzip(doc.as_bytes());
    let cut = gz.len() - 40;
    gz.truncate(cut);
    gz.extend_from_slice(&[0xFF; 64]);
    std::fs::write(dir.path().join("b_corrupt.json.gz"), &gz).expect("w");
    // The same past the 256 KiB the reader sniffs first: the fault comes while splitting.
    let big = format!("[{}]", (0..6000).map(rec).collect::<Vec<_>>().join(","));
    let mut gz = gzip(big.as_bytes());
    let cut = gz.len() - 40;
    gz.truncate(cut);
    gz.extend_from_slice(&[0xFF; 64]);
    std::fs::write(dir.path().join("b_corrupt_big.json.gz"), &gz).expect("w");
    // A good file after them.
    std::fs::write(
        dir.path().join("c_good.jsonl"),
        (0..10).map(|i| rec(1000 + i) + "\n").collect::<String>(),
    )
    .expect("w");
    let cfg = pipeline(
        dir.path(),
        "[[inputs]]\npaths = [\"a_truncated.jsonl.gz\", \"b_corrupt.json.gz\", \"b_corrupt_big.json.gz\", \"c_good.jsonl\"]\n[output]\ndir = \"o\"\nformats = [\"jsonl\"]\n",
    );
    let out = dir.path().join("o");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    let files = report["inputs"][0]["files"]
        .as_array()
        .expect("files")
        .clone();
    let kept_of = |name: &str| {
        curated_rows(&out)
            .iter()
            .filter(|r| r["source"] == name)
            .count()
    };
    // Most of each broken file's records survive; each fault is one located error.
    assert!(kept_of("a_truncated.jsonl.gz") > 150, "{files:?}");
    assert!(kept_of("b_corrupt.json.gz") > 150, "{files:?}");
    assert!(kept_of("b_corrupt_big.json.gz") > 5000, "{files:?}");
    assert_eq!(kept_of("c_good.jsonl"), 10);
    for f in &files[..3] {
        assert!(f["error"].is_string(), "the fault is reported: {f}");
    }
    let rejects = rejects_of(&out);
    assert!(
        rejects
            .iter()
            .any(|r| r["file"] == "b_corrupt.json.gz" && r["error"].to_string().contains("Gzip")),
        "{rejects:?}"
    );
}

/// Regression (#18): a UTF-8 byte order mark rejected a JSONL file's first record and renamed a
/// CSV file's first column (`\u{feff}q`).
#[test]
fn a_byte_order_mark_is_skipped_in_every_text_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bom = "\u{feff}";
    std::fs::write(
        dir.path().join("a.jsonl"),
        format!("{bom}{{\"text\":\"hello world\"}}\n{{\"text\":\"second one\"}}\n"),
    )
    .expect("w");
    std::fs::write(dir.path().join("b.csv"), format!("{bom}q,a\nq1,a1\n")).expect("w");
    std::fs::write(
        dir.path().join("c.json"),
        format!("{bom}[{{\"text\":\"third one\"}}]"),
    )
    .expect("w");
    std::fs::write(dir.path().join("d.txt"), format!("{bom}fourth one\n")).expect("w");
    let cfg = pipeline(
        dir.path(),
        "[[inputs]]\nname = \"j\"\npaths = [\"a.jsonl\", \"c.json\", \"d.txt\"]\n[[inputs]]\nname = \"c\"\npaths = [\"b.csv\"]\ncolumns = { q = \"user\", a = \"assistant\" }\n[output]\ndir = \"o\"\nformats = [\"jsonl\"]\n",
    );
    let out = dir.path().join("o");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_eq!(report["totals"]["rejected"], 0, "{:?}", rejects_of(&out));
    assert_eq!(report["totals"]["kept"], 5);
    let rows = curated_rows(&out);
    assert!(
        rows.iter().any(|r| r["text"] == "fourth one"),
        "no BOM left in text"
    );
}

/// Regression (#18): a GB18030 JSON document was decoded whole before splitting (2 GiB of
/// spaces between two records peaked at 8.1 GiB). It streams now, and decodes the same.
#[test]
fn a_gb18030_json_document_streams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = format!(
        "[{{\"instruction\": \"信用卡怎么还款？\", \"output\": \"可以通过手机银行还款。\"}},{}{{\"instruction\": \"转账限额是多少？\", \"output\": \"单笔五万元。\"}}]",
        " ".repeat(3 << 20)
    );
    let (bytes, _, bad) = encoding_rs::GB18030.encode(&doc);
    assert!(!bad);
    std::fs::write(dir.path().join("gbk.json.gz"), gzip(&bytes)).expect("w");
    let cfg = pipeline(
        dir.path(),
        "[[inputs]]\npaths = [\"gbk.json.gz\"]\n[output]\ndir = \"o\"\nformats = [\"jsonl\"]\n",
    );
    let out = dir.path().join("o");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_eq!(report["inputs"][0]["files"][0]["encoding"], "gb18030");
    assert_eq!(report["totals"]["kept"], 2, "{:?}", rejects_of(&out));
    let rows = curated_rows(&out);
    assert_eq!(rows[1]["turns"][1]["content"], "单笔五万元。");
}

/// Regression (#18): two invalid bytes in a GB18030 export made the whole file fall back to
/// UTF-8 (300 rows rejected). A few malformed sequences are tolerated: they decode as U+FFFD
/// and their records carry the tag `encoding_errors`.
#[test]
fn a_few_broken_bytes_do_not_change_a_files_encoding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = encoding_rs::GB18030.encode("q,a\n").0.into_owned();
    for i in 0..300 {
        let row = format!("问题{i}：信用卡怎么还款？,回答{i}：可以通过手机银行还款。\n");
        bytes.extend_from_slice(&encoding_rs::GB18030.encode(&row).0);
        if i == 7 || i == 200 {
            // A lead byte followed by a byte that cannot follow it.
            let at = bytes.len() - 6;
            bytes[at] = 0x81;
            bytes[at + 1] = 0x7F;
        }
    }
    std::fs::write(dir.path().join("gbk.csv"), &bytes).expect("w");
    let cfg = pipeline(
        dir.path(),
        "[[inputs]]\npaths = [\"gbk.csv\"]\ncolumns = { q = \"user\", a = \"assistant\" }\n[output]\ndir = \"o\"\nformats = [\"jsonl\"]\n",
    );
    let out = dir.path().join("o");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_eq!(
        report["inputs"][0]["files"][0]["encoding"], "gb18030",
        "{report}"
    );
    // The report says why, per file.
    let why = report["inputs"][0]["files"][0]["encoding_why"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("non-ASCII lines in the file") && why.contains("GB18030 decodes them but 2"),
        "{why}"
    );
    assert_eq!(report["totals"]["kept"], 300, "{:?}", rejects_of(&out));
    let rows = curated_rows(&out);
    let tagged: Vec<_> = rows
        .iter()
        .filter(|r| !r["tags"]["encoding_errors"].is_null())
        .collect();
    assert_eq!(tagged.len(), 2, "{tagged:?}");
    assert_eq!(rows[0]["turns"][0]["content"], "问题0：信用卡怎么还款？");
}

/// Regression (#18): 2 GB of zeros gzipped to 2 MB was read whole (10 GiB peak as CSV, 1.7 GB
/// spilled as JSON). A stream that expands past the input's `max_expansion` (default 200×,
/// checked once it has given 64 MiB) ends its file with one reject; the records before it are
/// kept, and the next file is read. `max_expansion = 0` reads it all.
#[test]
fn a_decompression_bomb_ends_its_file_not_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = |i: usize| format!("{{\"instruction\": \"问题{i}\", \"output\": \"回答{i}\"}}\n");
    let mut body: Vec<u8> = (0..3).flat_map(|i| rec(i).into_bytes()).collect();
    body.extend(std::iter::repeat_n(b'\n', 72 << 20));
    body.extend(rec(3).into_bytes());
    let gz = gzip(&body);
    assert!(gz.len() < (72 << 20) / 500, "{} bytes", gz.len());
    std::fs::write(dir.path().join("bomb.jsonl.gz"), &gz).expect("w");
    std::fs::write(dir.path().join("next.jsonl"), rec(9)).expect("w");
    let body = |limit: &str| {
        format!("[[inputs]]\npaths = [\"bomb.jsonl.gz\", \"next.jsonl\"]\n{limit}\n[output]\ndir = \"o\"\nformats = [\"jsonl\"]\n")
    };
    let out = dir.path().join("o");
    let report = run_ok(
        &pipeline(dir.path(), &body("")),
        &["--out", out.to_str().expect("utf8")],
    );
    assert_reconciles(&report);
    assert_eq!(
        report["totals"]["kept"], 4,
        "3 before the bomb, 1 after: {report}"
    );
    let rejects = rejects_of(&out);
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0]["file"], "bomb.jsonl.gz");
    assert!(
        rejects[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("max_expansion (200x)")),
        "{rejects:?}"
    );
    assert!(report["inputs"][0]["files"][0]["error"].is_string());

    let out = dir.path().join("all");
    let report = run_ok(
        &pipeline(dir.path(), &body("max_expansion = 0")),
        &["--out", out.to_str().expect("utf8")],
    );
    assert_eq!(report["totals"]["kept"], 5, "{report}");
    assert_eq!(report["totals"]["rejected"], 0, "{report}");
}

/// Regressions from the attacker walk of #18: a CSV with lone-CR line ends (old Mac exports)
/// lost every row without a reject; a quoted field longer than 1,000 lines could not be read
/// whatever the config; a zstd stream that opens with a skippable frame was read as text.
#[test]
fn cr_line_ends_long_quoted_fields_and_skippable_zstd_frames_are_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("mac.csv"),
        "q,a\r信用卡怎么还款？,手机银行。\r转账限额？,五万。\r",
    )
    .expect("w");
    let long: String = (0..1500).map(|i| format!("line {i}\n")).collect();
    std::fs::write(
        dir.path().join("long.csv"),
        format!("q,a\nq1,\"{long}\"\nq2,a2\n"),
    )
    .expect("w");
    let record = b"{\"instruction\": \"q\", \"output\": \"a\"}\n";
    let mut zst = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
    zst.extend(zstd::encode_all(&record[..], 3).expect("zstd"));
    std::fs::write(dir.path().join("skip.jsonl.zst"), &zst).expect("w");
    let cfg = pipeline(
        dir.path(),
        "[[inputs]]\nname = \"mac\"\npaths = [\"mac.csv\"]\ncolumns = { q = \"user\", a = \"assistant\" }\n\
         [[inputs]]\nname = \"long\"\npaths = [\"long.csv\"]\nmax_quoted_lines = 2000\ncolumns = { q = \"user\", a = \"assistant\" }\n\
         [[inputs]]\nname = \"skip\"\npaths = [\"skip.jsonl.zst\"]\n\
         [output]\ndir = \"o\"\nformats = [\"jsonl\"]\n",
    );
    let out = dir.path().join("o");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    assert_eq!(report["totals"]["rejected"], 0, "{:?}", rejects_of(&out));
    assert_eq!(input(&report, "mac")["kept"], 2, "{report}");
    assert_eq!(input(&report, "long")["kept"], 2, "{report}");
    assert_eq!(input(&report, "skip")["kept"], 1, "{report}");
    let rows = curated_rows(&out);
    assert!(rows.iter().any(|r| r["turns"][1]["content"]
        .as_str()
        .is_some_and(|c| c.starts_with("line 0\n") && c.trim_end().ends_with("line 1499"))));
}

/// Regression (attacker walk of #18): a GB18030 byte-order mark was kept, so the first record
/// was rejected. It is skipped, and it says the file is GB18030.
#[test]
fn a_gb18030_byte_order_mark_is_skipped_and_names_the_encoding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = vec![0x84, 0x31, 0x95, 0x33];
    bytes.extend_from_slice(
        &encoding_rs::GB18030
            .encode("{\"instruction\": \"信用卡怎么还款？\", \"output\": \"手机银行。\"}\n")
            .0,
    );
    std::fs::write(dir.path().join("gb.jsonl"), &bytes).expect("w");
    let cfg = pipeline(
        dir.path(),
        "[[inputs]]\npaths = [\"gb.jsonl\"]\n[output]\ndir = \"o\"\nformats = [\"jsonl\"]\n",
    );
    let out = dir.path().join("o");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_eq!(report["totals"]["kept"], 1, "{:?}", rejects_of(&out));
    let file = &report["inputs"][0]["files"][0];
    assert_eq!(file["encoding"], "gb18030");
    assert_eq!(file["encoding_why"], "a GB18030 byte-order mark");
    assert_eq!(
        curated_rows(&out)[0]["turns"][0]["content"],
        "信用卡怎么还款？"
    );
}
