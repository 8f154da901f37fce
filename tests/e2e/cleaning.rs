//! The cleaning stages end to end: the bundled example over real dialogue data, the truncate
//! stage with a real tokenizer, and filler smoothing over real chit-chat.

use crate::common::*;
use sluice_pipeline::tokenize::TokenizerHandle;

#[test]
fn clean_example_runs_every_stage_and_reports_reasons() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("clean");
    let cfg = repo().join("examples/clean.toml");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    let stages = report["stages"].as_array().expect("stages");
    let types: Vec<&str> = stages.iter().filter_map(|s| s["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "langid",
            "quality",
            "filler",
            "pii",
            "rules",
            "sensitive",
            "truncate",
            "exact_dedup"
        ]
    );
    let stage = |t: &str| stages.iter().find(|s| s["type"] == t).expect("stage");
    let counter = |t: &str, c: &str| stage(t)["counters"][c].as_u64().unwrap_or(0);
    assert!(counter("langid", "cmn") > 1000, "mostly Chinese");
    assert!(
        counter("filler", "fillers_removed") > 50,
        "LCCC chit-chat has fillers"
    );
    assert!(
        counter("pii", "phone_found") > 0,
        "travel dialogues give phone numbers"
    );
    assert!(counter("truncate", "truncated") > 0);
    assert!(stage("quality")["dropped"]
        .as_object()
        .is_some_and(|d| !d.is_empty()));
    // Changed samples say what changed; masked numbers are gone from the output.
    let rows = curated_rows(&out);
    assert!(rows.iter().any(|r| r["tags"]["pii_masked"].is_string()));
    assert!(rows.iter().any(|r| r["tags"]["filler_removed"].is_string()));
    let phone = regex::Regex::new(r"(?:^|[^0-9])1[3-9]\d{9}(?:[^0-9]|$)").expect("regex");
    for r in &rows {
        assert!(!phone.is_match(&r["turns"].to_string()), "{r}");
    }
}

#[test]
fn truncate_keeps_newest_rounds_within_a_real_token_budget() {
    let Some(data) = shared_data() else { return };
    let tok_path = data.join("tokenizers/qwen2/tokenizer.json");
    let tok = TokenizerHandle::from_file(&tok_path).expect("qwen2 tokenizer");
    let tmp = tempfile::tempdir().expect("tempdir");
    // A long dialogue (20 rounds), one whose last prompt alone exceeds the budget, and a
    // response longer than the target budget.
    let mut long = Vec::new();
    for i in 0..20 {
        long.push(serde_json::json!({"from": "human", "value": format!("第{i}轮：我想了解一下信用卡分期的手续费和利率怎么计算？")}));
        long.push(serde_json::json!({"from": "gpt", "value": format!("第{i}轮回答：分期手续费按期数收取，利率以账单为准。")}));
    }
    let huge_prompt = "请详细说明房贷提前还款的流程。".repeat(40) + "最后一句是最新的内容";
    let lines = [
        serde_json::json!({"id": "long", "conversations": long}),
        serde_json::json!({"id": "huge", "conversations": [
            {"from": "human", "value": "你好"}, {"from": "gpt", "value": "您好"},
            {"from": "human", "value": huge_prompt}, {"from": "gpt", "value": "好的"}]}),
        serde_json::json!({"id": "answer", "conversations": [
            {"from": "human", "value": "介绍一下"}, {"from": "gpt", "value": "这是一个很长的回答。".repeat(50)}]}),
    ];
    let input = tmp.path().join("in.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&input, text).expect("write");
    let cfg = pipeline(
        tmp.path(),
        &format!(
            "[[inputs]]\nname = \"d\"\npaths = [\"in.jsonl\"]\n\n[[stages]]\ntype = \"truncate\"\ntokenizer = {:?}\nmax_source_tokens = 64\nmax_target_tokens = 32\n\n[output]\ndir = \"out\"\nformats = [\"jsonl\"]\n",
            tok_path.to_str().expect("utf8")
        ),
    );
    let out = tmp.path().join("out");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    assert_reconciles(&report);
    let rows = curated_rows(&out);
    assert_eq!(rows.len(), 3);
    let count = |s: &serde_json::Value| tok.count(s.as_str().expect("text")).expect("count");
    for r in &rows {
        let turns = r["turns"].as_array().expect("turns");
        assert_eq!(turns[0]["role"], "user", "{r}");
        let (last, source) = turns.split_last().expect("turns");
        assert_eq!(last["role"], "assistant");
        assert!(count(&last["content"]) <= 32, "{r}");
        let src: usize = source.iter().map(|t| count(&t["content"])).sum();
        assert!(src <= 64, "{src} source tokens in {r}");
    }
    let by_id = |id: &str| rows.iter().find(|r| r["id"] == id).expect("row");
    let long_turns = by_id("long")["turns"].as_array().expect("turns").clone();
    assert!(long_turns.len() < 40 && long_turns.len() >= 2);
    assert!(
        long_turns[long_turns.len() - 1]["content"]
            .as_str()
            .is_some_and(|t| t.starts_with("第19轮回答")),
        "the newest round is kept"
    );
    let huge = by_id("huge")["turns"].as_array().expect("turns").clone();
    assert_eq!(huge.len(), 2, "older rounds go before the prompt is cut");
    assert!(huge[0]["content"]
        .as_str()
        .is_some_and(|t| t.ends_with("最后一句是最新的内容")));
    assert!(by_id("huge")["tags"]["truncated"]
        .as_str()
        .is_some_and(|t| t.contains("prompt")));
}

#[test]
fn filler_smoothing_on_real_chitchat_removes_only_filler() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = pipeline(
        tmp.path(),
        &format!(
            "[[inputs]]\nname = \"lccc\"\npaths = [{:?}]\ncjk_despace = true\n\n[[stages]]\ntype = \"filler\"\n\n[output]\ndir = \"out\"\nformats = [\"jsonl\"]\n",
            data.join("sft/lccc/toy_data.json").to_str().expect("utf8")
        ),
    );
    let plain = tmp.path().join("plain.toml");
    std::fs::write(
        &plain,
        std::fs::read_to_string(&cfg)
            .expect("read")
            .replace("[[stages]]\ntype = \"filler\"\n", "")
            .replace("dir = \"out\"", "dir = \"plain\""),
    )
    .expect("write");
    let out = tmp.path().join("out");
    run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    let base = tmp.path().join("plain");
    run_ok(&plain, &["--out", base.to_str().expect("utf8")]);
    let after = curated_rows(&out);
    let before = curated_rows(&base);
    assert_eq!(after.len(), before.len());
    // Whatever went is filler characters (the rules' lists, or interjections of jieba's
    // dictionary), punctuation or spaces: never part of another word.
    let mut filler_chars: std::collections::HashSet<char> =
        "嗯呃额唔呣哼那个这就是说然后呢啊哦噢喔哎诶欸呀嘛恩umhreo"
            .chars()
            .collect();
    let candidates = std::fs::read_to_string(data.join("wordlists/filler_candidates_zh.txt"))
        .expect("filler candidates");
    for line in candidates.lines().filter(|l| l.ends_with("\te")) {
        filler_chars.extend(line.split('\t').next().unwrap_or("").chars());
    }
    let mut changed = 0;
    for (a, b) in after.iter().zip(&before) {
        for (ta, tb) in a["turns"]
            .as_array()
            .expect("t")
            .iter()
            .zip(b["turns"].as_array().expect("t"))
        {
            let (sa, sb) = (
                ta["content"].as_str().expect("s"),
                tb["content"].as_str().expect("s"),
            );
            if sa == sb {
                continue;
            }
            changed += 1;
            assert!(!sa.trim().is_empty(), "a turn was emptied: {sb}");
            // `sa` is `sb` with characters removed (a subsequence).
            let mut it = sb.chars();
            let mut removed = String::new();
            for c in sa.chars() {
                loop {
                    match it.next() {
                        Some(x) if x == c => break,
                        Some(x) => removed.push(x),
                        None => panic!("{sa:?} is not {sb:?} minus characters"),
                    }
                }
            }
            removed.extend(it);
            for c in removed.chars() {
                assert!(
                    filler_chars.contains(&c.to_ascii_lowercase()) || !c.is_alphanumeric(),
                    "{c:?} removed from {sb:?} -> {sa:?}"
                );
            }
        }
    }
    assert!(changed > 20, "{changed} turns smoothed");
}
