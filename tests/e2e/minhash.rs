//! MinHash LSH against a labelled near-duplicate benchmark built from real texts: copies with
//! substitutions, insertions, deletions and reordered sentences at graded edit rates, plus
//! unrelated pairs. Ground truth is the exact Jaccard of the shingle sets; a pair is predicted a
//! duplicate when it shares an LSH band and its estimated Jaccard reaches the threshold.

use crate::common::*;
use sluice_pipeline::stages::minhash::{estimate, MinHasher};
use std::collections::HashSet;

/// A tiny deterministic generator for the edits.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn edit(text: &str, kind: usize, rate: f64, rng: &mut Lcg) -> String {
    let chars: Vec<char> = text.chars().collect();
    let pool: Vec<char> = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理世车".chars().collect();
    let mut out: Vec<char> = Vec::with_capacity(chars.len());
    match kind {
        0 => {
            for &c in &chars {
                out.push(if (rng.next() % 10_000) as f64 / 10_000.0 < rate {
                    pool[rng.below(pool.len())]
                } else {
                    c
                });
            }
        }
        1 => {
            for &c in &chars {
                out.push(c);
                if (rng.next() % 10_000) as f64 / 10_000.0 < rate {
                    out.push(pool[rng.below(pool.len())]);
                }
            }
        }
        2 => {
            for &c in &chars {
                if (rng.next() % 10_000) as f64 / 10_000.0 >= rate {
                    out.push(c);
                }
            }
        }
        _ => {
            // Reorder sentences: rotate them by one.
            let mut sentences: Vec<String> = Vec::new();
            let mut cur = String::new();
            for c in chars {
                cur.push(c);
                if "。！？；.!?".contains(c) {
                    sentences.push(std::mem::take(&mut cur));
                }
            }
            if !cur.is_empty() {
                sentences.push(cur);
            }
            if sentences.len() > 1 {
                sentences.rotate_left(1);
            }
            return sentences.concat();
        }
    }
    out.into_iter().collect()
}

/// The first `n` doctor answers of MedicalGPT's medical SFT set with at least `min_chars`.
fn medical_answers(data: &std::path::Path, min_chars: usize, n: usize) -> Vec<String> {
    let medical = std::fs::read_to_string(data.join("sft/medicalgpt/medical_sft_1K_format.jsonl"))
        .expect("read");
    medical
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["conversations"][1]["value"].as_str().map(String::from))
        .filter(|t| t.chars().count() >= min_chars)
        .take(n)
        .collect()
}

fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let sa: HashSet<u64> = a.iter().copied().collect();
    let sb: HashSet<u64> = b.iter().copied().collect();
    let inter = sa.intersection(&sb).count();
    inter as f64 / (sa.len() + sb.len() - inter).max(1) as f64
}

#[test]
fn near_duplicate_benchmark_precision_and_recall() {
    let Some(data) = shared_data() else { return };
    let mut texts: Vec<String> = Vec::new();
    let medical = std::fs::read_to_string(data.join("sft/medicalgpt/medical_sft_1K_format.jsonl"))
        .expect("read");
    for line in medical.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        if let Some(a) = v["conversations"][1]["value"]
            .as_str()
            .filter(|a| a.chars().count() >= 150)
        {
            texts.push(a.to_string());
        }
        if texts.len() == 200 {
            break;
        }
    }
    let alpaca: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("sft/llama_factory/alpaca_en_demo.json")).expect("read"),
    )
    .expect("json");
    texts.extend(
        alpaca
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|r| r["output"].as_str())
            .filter(|o| o.len() >= 400)
            .take(100)
            .map(String::from),
    );
    assert!(texts.len() >= 250, "{} base texts", texts.len());

    let mut rng = Lcg(42);
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        for (k, rate) in [0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.25].iter().enumerate() {
            let kind = (i + k) % 4;
            pairs.push((t.clone(), edit(t, kind, *rate, &mut rng)));
        }
        pairs.push((t.clone(), texts[(i + 1) % texts.len()].clone()));
    }
    let truth_hasher = MinHasher::new(0.8, 128, 5, None, 1);
    let truth: Vec<f64> = pairs
        .iter()
        .map(|(a, b)| jaccard(&truth_hasher.shingles(a), &truth_hasher.shingles(b)))
        .collect();
    let mut report = Vec::new();
    for threshold in [0.7, 0.8, 0.9] {
        let h = MinHasher::new(threshold, 128, 5, None, 7);
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        for ((a, b), &j) in pairs.iter().zip(&truth) {
            let (sa, sb) = (h.signature(a).expect("sig"), h.signature(b).expect("sig"));
            let candidate = h
                .band_keys(&sa)
                .iter()
                .zip(h.band_keys(&sb))
                .any(|(x, y)| *x == y);
            let predicted = candidate && estimate(&sa, &sb) >= threshold;
            match (predicted, j >= threshold) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fn_ += 1,
                _ => {}
            }
        }
        let p = tp as f64 / (tp + fp).max(1) as f64;
        let r = tp as f64 / (tp + fn_).max(1) as f64;
        let positives = truth.iter().filter(|&&j| j >= threshold).count();
        eprintln!("minhash benchmark: threshold {threshold}: bands×rows {}×{}, {} pairs ({positives} true), precision {p:.4}, recall {r:.4}", h.bands, h.rows, pairs.len());
        report.push((threshold, p, r, positives));
    }
    let (_, p, r, positives) = report[1];
    assert!(
        positives > 300 && positives < pairs.len() - 500,
        "the benchmark has both classes: {positives}"
    );
    assert!(p >= 0.95, "precision {p} at 0.8");
    assert!(r >= 0.9, "recall {r} at 0.8");
}

#[test]
fn pipeline_minhash_drops_near_duplicates_and_tags_clusters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = "信用卡逾期一天会影响征信吗？一般来说银行有三天左右的宽限期，在宽限期内还款不会上报征信，但每家银行规定不同，建议尽快联系发卡行确认并及时还款，避免产生罚息和违约金。";
    let near = base.replace("尽快", "尽早"); // one word changed
    let other = "请问如何开通手机银行？您可以下载本行官方应用，使用身份证和银行卡完成注册，再设置登录密码与交易密码即可开通，如遇问题可拨打客服热线咨询。";
    let rows = [
        ("a", base.to_string()),
        ("b", other.to_string()),
        ("c", near.clone()),
        ("d", near.clone()),
    ];
    let jsonl: Vec<String> = rows
        .iter()
        .map(|(id, t)| serde_json::json!({"id": id, "text": t}).to_string())
        .collect();
    std::fs::write(dir.path().join("d.jsonl"), jsonl.join("\n")).expect("write");
    let cfg = pipeline(dir.path(), "[[inputs]]\npaths = [\"d.jsonl\"]\n[[stages]]\ntype = \"minhash\"\nthreshold = 0.7\nngram = 3\nkeep = \"longest\"\n[output]\ndir = \"out\"\nformats = [\"jsonl\"]\n");
    let out = dir.path().join("out");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    let kept = curated_rows(&out);
    let ids: Vec<&str> = kept.iter().map(|s| s["id"].as_str().expect("id")).collect();
    // a, c, d are one cluster; all have the same length, so `longest` ties to the first: a.
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(kept[0]["tags"]["minhash_cluster"], "a");
    assert!(
        kept[1]["tags"].get("minhash_cluster").is_none(),
        "a sample without near duplicates is not tagged"
    );
    let dropped = read_jsonl(&out.join("dropped/part-00000.jsonl"));
    let pairs: Vec<(&str, &str)> = dropped
        .iter()
        .map(|d| {
            (
                d["sample"]["id"].as_str().expect("id"),
                d["drop"]["duplicate_of"].as_str().expect("dup"),
            )
        })
        .collect();
    assert_eq!(pairs, [("c", "a"), ("d", "a")]);
    assert_eq!(dropped[0]["drop"]["reason"], "near_duplicate");
    assert_eq!(dropped[0]["sample"]["tags"]["minhash_cluster"], "a");
    assert_eq!(report["stages"][0]["dropped"]["near_duplicate"], 2);
}

#[test]
fn no_near_duplicate_pair_crosses_splits() {
    let Some(data) = shared_data() else { return };
    let texts = medical_answers(&data, 120, 300);
    let mut rng = Lcg(9);
    let mut rows = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        rows.push(serde_json::json!({"id": format!("o{i}"), "text": t}).to_string());
        if i % 3 == 0 {
            rows.push(
                serde_json::json!({"id": format!("c{i}"), "text": edit(t, i % 4, 0.01, &mut rng)})
                    .to_string(),
            );
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("docs.jsonl"), rows.join("\n")).expect("write");
    let cfg = pipeline(
        dir.path(),
        "[[inputs]]\npaths = [\"docs.jsonl\"]\ndomain = \"medical\"\n[[stages]]\ntype = \"minhash\"\ndrop = false\n[[stages]]\ntype = \"split\"\nratios = { train = 0.8, valid = 0.1, test = 0.1 }\n[output]\ndir = \"out\"\nformats = [\"jsonl\"]\n",
    );
    let out = dir.path().join("out");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    let samples = curated_rows(&out);
    assert_eq!(
        samples.len(),
        rows.len(),
        "tag-only minhash and split drop nothing"
    );
    let h = MinHasher::new(0.8, 128, 5, None, 1);
    let shingles: Vec<Vec<u64>> = samples
        .iter()
        .map(|s| h.shingles(s["text"].as_str().expect("text")))
        .collect();
    let split = |i: usize| {
        samples[i]["tags"]["split"]
            .as_str()
            .expect("every sample has a split")
            .to_string()
    };
    let mut near_pairs = 0;
    for i in 0..samples.len() {
        for j in i + 1..samples.len() {
            if jaccard(&shingles[i], &shingles[j]) >= 0.9 {
                near_pairs += 1;
                assert_eq!(
                    split(i),
                    split(j),
                    "{} and {} are near duplicates in different splits",
                    samples[i]["id"],
                    samples[j]["id"]
                );
            }
        }
    }
    assert!(
        near_pairs >= 50,
        "the data has near duplicates to keep together: {near_pairs}"
    );
    let train =
        (0..samples.len()).filter(|&i| split(i) == "train").count() as f64 / samples.len() as f64;
    assert!((train - 0.8).abs() < 0.02, "train share {train}");
}

#[test]
fn decontaminate_drops_exactly_the_samples_that_quote_an_eval_set() {
    let Some(data) = shared_data() else { return };
    let alpaca: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("sft/llama_factory/alpaca_zh_demo.json")).expect("read"),
    )
    .expect("json");
    let records: Vec<&serde_json::Value> = alpaca
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| {
            // Chinese prose in the quoted span: 40 characters are then well over 13 tokens
            // (code or English would be a few word tokens, too short to count as a 13-gram).
            r["output"].as_str().is_some_and(|o| {
                o.chars().count() >= 80
                    && !o
                        .chars()
                        .skip(10)
                        .take(40)
                        .any(|c| c.is_ascii_alphanumeric())
            })
        })
        .collect();
    let (eval, rest) = records.split_at(20);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("eval.json"),
        serde_json::to_vec(&eval).expect("json"),
    )
    .expect("write");
    let mut train: Vec<serde_json::Value> = rest[..150].iter().map(|r| (*r).clone()).collect();
    let mut planted = Vec::new();
    for (i, e) in eval.iter().enumerate() {
        let quote: String = e["output"]
            .as_str()
            .unwrap_or("")
            .chars()
            .skip(10)
            .take(40)
            .collect();
        let id = format!("planted{i}");
        train.push(serde_json::json!({"id": id, "instruction": "请总结下面的内容。", "input": format!("以下是一段材料：{quote}……"), "output": "好的，这段材料主要讲了一个观点。"}));
        planted.push(id);
    }
    std::fs::write(
        dir.path().join("train.json"),
        serde_json::to_vec(&train).expect("json"),
    )
    .expect("write");
    let cfg = pipeline(dir.path(), "[[inputs]]\npaths = [\"train.json\"]\n[[stages]]\ntype = \"decontaminate\"\neval = [\"eval.json\"]\nngram = 13\n[output]\ndir = \"out\"\nformats = [\"jsonl\"]\n");
    let out = dir.path().join("out");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    let dropped = read_jsonl(&out.join("dropped/part-00000.jsonl"));
    let ids: Vec<&str> = dropped
        .iter()
        .map(|d| d["sample"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, planted.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(dropped.iter().all(|d| d["drop"]["reason"] == "contaminated"
        && d["drop"]["detail"]
            .as_str()
            .is_some_and(|t| t.contains("eval.json"))));
    assert_eq!(report["stages"][0]["counters"]["samples_contaminated"], 20);

    // A missing evaluation file is a config error, found by `check`.
    let bad = pipeline(dir.path(), "[[inputs]]\npaths = [\"train.json\"]\n[[stages]]\ntype = \"decontaminate\"\neval = [\"nope.json\"]\n[output]\ndir = \"out\"\n");
    let res = sluice(&["check", bad.to_str().expect("utf8")]);
    assert!(String::from_utf8_lossy(&res.stderr).contains("nope.json: no such file"));
}

#[test]
fn incremental_run_against_the_index_equals_one_run_over_everything() {
    let Some(data) = shared_data() else { return };
    let texts = medical_answers(&data, 150, 120);
    let mut rng = Lcg(5);
    let row = |id: String, text: &str| serde_json::json!({"id": id, "text": text}).to_string();
    // Old batch: texts 0..80, with near copies of 0..10 inside it.
    let mut old: Vec<String> = texts[..80]
        .iter()
        .enumerate()
        .map(|(i, t)| row(format!("old{i}"), t))
        .collect();
    old.extend((0..10).map(|i| row(format!("oldcopy{i}"), &edit(&texts[i], 0, 0.01, &mut rng))));
    // New batch: texts 80..120, near copies of old texts 20..35, and of new texts 80..85.
    let mut new: Vec<String> = texts[80..]
        .iter()
        .enumerate()
        .map(|(i, t)| row(format!("new{i}"), t))
        .collect();
    new.extend((20..35).map(|i| {
        row(
            format!("newcopy_of_old{i}"),
            &edit(&texts[i], 2, 0.01, &mut rng),
        )
    }));
    new.extend((80..85).map(|i| {
        row(
            format!("newcopy_of_new{i}"),
            &edit(&texts[i], 1, 0.01, &mut rng),
        )
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("old.jsonl"), old.join("\n")).expect("write");
    std::fs::write(dir.path().join("new.jsonl"), new.join("\n")).expect("write");
    let run = |name: &str, files: &str, index: bool| {
        let idx = if index { "index = \"state\"\n" } else { "" };
        let cfg = dir.path().join(format!("{name}.toml"));
        std::fs::write(&cfg, format!("[[inputs]]\npaths = [{files}]\n[[stages]]\ntype = \"minhash\"\n{idx}[output]\ndir = \"{name}\"\nformats = [\"jsonl\"]\n")).expect("write");
        let out = dir.path().join(name);
        run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
        let ids = |f: &str| -> Vec<(String, String)> {
            let p = out.join(f);
            if !p.exists() {
                return Vec::new();
            }
            read_jsonl(&p)
                .iter()
                .map(|v| {
                    let s = if v.get("sample").is_some() {
                        &v["sample"]
                    } else {
                        v
                    };
                    (
                        s["id"].as_str().unwrap_or("").to_string(),
                        v["drop"]["duplicate_of"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        };
        (
            ids("curated/part-00000.jsonl"), // these inputs have no split
            ids("dropped/part-00000.jsonl"),
        )
    };
    let (kept_all, dropped_all) = run("together", "\"old.jsonl\", \"new.jsonl\"", false);
    let (kept_1, dropped_1) = run("first", "\"old.jsonl\"", true);
    assert!(dir.path().join("state/minhash.index").exists());
    let (kept_2, dropped_2) = run("second", "\"new.jsonl\"", true);
    let kept_inc: Vec<_> = kept_1.into_iter().chain(kept_2).collect();
    let dropped_inc: Vec<_> = dropped_1.into_iter().chain(dropped_2).collect();
    assert_eq!(kept_inc, kept_all, "kept samples");
    assert_eq!(
        dropped_inc, dropped_all,
        "dropped samples and whom they duplicate"
    );
    assert!(
        dropped_all
            .iter()
            .filter(|(id, _)| id.starts_with("newcopy_of_old"))
            .count()
            >= 12,
        "new copies of old data are caught: {dropped_all:?}"
    );
    // A changed setting cannot silently reuse the index.
    let cfg = dir.path().join("changed.toml");
    std::fs::write(&cfg, "[[inputs]]\npaths = [\"new.jsonl\"]\n[[stages]]\ntype = \"minhash\"\nnum_perm = 64\nindex = \"state\"\n[output]\ndir = \"changed\"\n").expect("write");
    let res = sluice(&["run", cfg.to_str().expect("utf8"), "--quiet"]);
    assert!(!res.status.success());
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("different minhash settings"),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
}
