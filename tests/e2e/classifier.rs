//! The fastText classifier: trained on COLD's train split, evaluated on its dev split with a floor
//! well above chance (the labels are balanced: chance F1 is about 0.5), and applied in a pipeline.

use crate::common::*;

#[test]
fn cold_classifier_beats_chance_by_far_and_filters_a_pipeline() {
    let Some(data) = shared_data() else { return };
    let cold = data.join("classifier/cold");
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("cold.bin");
    let train = cold.join("train.csv");
    let m = model.to_str().expect("utf8");
    let out = sluice(&[
        "classifier",
        "train",
        "--input",
        train.to_str().expect("utf8"),
        "--text-column",
        "TEXT",
        "--output",
        m,
        "--bucket",
        "50000",
        "--epochs",
        "8",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let card = read_json(&dir.path().join("cold.bin.sluice.json"));
    assert_eq!(card["examples"]["0"], 13003);
    assert_eq!(card["examples"]["1"], 12723);

    let eval_json = dir.path().join("eval.json");
    let dev = cold.join("dev.csv");
    let out = sluice(&[
        "classifier",
        "evaluate",
        "--input",
        dev.to_str().expect("utf8"),
        "--text-column",
        "TEXT",
        "--model",
        m,
        "--json",
        eval_json.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("threshold sweep for label \"1\""), "{table}");
    let eval = read_json(&eval_json);
    assert_eq!(eval["examples"], 6431);
    let offensive = eval["labels"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["label"] == "1"))
        .expect("label 1");
    let f1 = offensive["f1"].as_f64().expect("f1");
    assert!(f1 >= 0.80, "offensive F1 {f1} is below the 0.80 floor");
    assert_eq!(offensive["support"], 3211);
    assert_eq!(eval["sweep"].as_array().map(Vec::len), Some(19));

    // The stage: tags every kept sample, drops the offensive ones with a reason.
    let texts = [
        ("safe1", "今天天气很好，我们一起去公园散步吧"),
        ("safe2", "请问信用卡的年费怎么收取？"),
        ("bad1", "你们这些地域黑真是脑子有病，滚出去"),
    ];
    let jsonl: Vec<String> = texts
        .iter()
        .map(|(id, t)| {
            serde_json::json!({"id": id, "prompt": t, "response": "好的，我明白了。"}).to_string()
        })
        .collect();
    std::fs::write(dir.path().join("chat.jsonl"), jsonl.join("\n")).expect("write");
    let cfg = pipeline(
        dir.path(),
        "[[inputs]]\npaths = [\"chat.jsonl\"]\n[[stages]]\ntype = \"classify\"\nmodel = \"cold.bin\"\nfield = \"user\"\ntag = \"offensive\"\ndrop_labels = [\"1\"]\nthreshold = 0.5\n[output]\ndir = \"out\"\nformats = [\"jsonl\"]\n",
    );
    let run_dir = dir.path().join("out");
    let report = run_ok(&cfg, &["--out", run_dir.to_str().expect("utf8")]);
    assert_reconciles(&report);
    let kept = curated_rows(&run_dir);
    let dropped = read_jsonl(&run_dir.join("dropped/part-00000.jsonl"));
    assert_eq!(kept.len() + dropped.len(), 3);
    for s in &kept {
        assert_eq!(s["tags"]["offensive_label"], "0", "{s}");
        let p: f64 = s["tags"]["offensive_score"]
            .as_str()
            .and_then(|p| p.parse().ok())
            .expect("score");
        assert!((0.5..=1.0).contains(&p));
    }
    assert!(
        dropped.iter().any(|d| d["sample"]["id"] == "bad1"),
        "the insult is dropped: {dropped:?}"
    );
    assert!(dropped.iter().all(|d| d["drop"]["reason"] == "classified"));

    // A label the model does not know is a config error naming the stage and the known labels.
    let bad = pipeline(
        dir.path(),
        "[[inputs]]\npaths = [\"chat.jsonl\"]\n[[stages]]\ntype = \"classify\"\nmodel = \"cold.bin\"\ndrop_labels = [\"toxic\"]\n[output]\ndir = \"out\"\n",
    );
    let out = sluice(&[
        "run",
        bad.to_str().expect("utf8"),
        "--quiet",
        "--out",
        dir.path().join("o2").to_str().expect("utf8"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stages[0] (classify)")
            && err.contains("\"toxic\"")
            && err.contains("[\"0\", \"1\"]"),
        "{err}"
    );
}

#[test]
fn classifier_errors_are_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("empty.csv"), "text,label\n").expect("write");
    std::fs::write(dir.path().join("wrong.csv"), "content,label\n你好,0\n").expect("write");
    let model = dir.path().join("m.bin");
    let train = |file: &str| {
        sluice(&[
            "classifier",
            "train",
            "--input",
            dir.path().join(file).to_str().expect("utf8"),
            "--output",
            model.to_str().expect("utf8"),
        ])
    };
    let out = train("empty.csv");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no labelled examples"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = train("wrong.csv");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no column \"text\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sluice(&[
        "classifier",
        "evaluate",
        "--input",
        dir.path().join("wrong.csv").to_str().expect("utf8"),
        "--model",
        dir.path().join("missing.bin").to_str().expect("utf8"),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
}
