//! Templates, masks, budgets and shards against independently computed references: the ids of
//! a templated sample must equal the tokenizer's ids for the whole rendered string (a different
//! code path), and the trained tokens must decode to exactly the assistant turns.

use crate::common::*;
use sluice_pipeline::sample::{Kind, Role, Sample, Turn};
use sluice_pipeline::tokenize::{encode_sample, Budget, Template, TokenizerHandle, TrainOn};

fn qwen(data: &std::path::Path) -> TokenizerHandle {
    TokenizerHandle::from_file(&data.join("tokenizers/qwen2/tokenizer.json"))
        .expect("qwen2 tokenizer")
}

fn dialogue(system: Option<&str>, turns: &[(Role, &str)]) -> Sample {
    Sample {
        id: "t".into(),
        source: "t".into(),
        domain: "general".into(),
        task: "t".into(),
        kind: Kind::Sft,
        user_id: None,
        system: system.map(String::from),
        tools: None,
        turns: turns.iter().map(|(r, c)| Turn::new(*r, *c)).collect(),
        text: None,
        tags: Default::default(),
    }
}

/// The spans of consecutive trained tokens, decoded.
fn trained_spans(tok: &TokenizerHandle, ids: &[u32], mask: &[u8]) -> Vec<String> {
    let mut spans = Vec::new();
    let mut cur = Vec::new();
    for (id, m) in ids.iter().zip(mask) {
        if *m == 1 {
            cur.push(*id);
        } else if !cur.is_empty() {
            spans.push(tok.decode(&cur).expect("decode"));
            cur.clear();
        }
    }
    if !cur.is_empty() {
        spans.push(tok.decode(&cur).expect("decode"));
    }
    spans
}

#[test]
fn qwen2_reference_ids_from_tokenizer_json_and_from_vocab_merges() {
    let Some(data) = shared_data() else { return };
    let tok = qwen(&data);
    assert_eq!(
        tok.encode("<|im_start|>user\n你好<|im_end|>").expect("ids"),
        [151644, 872, 198, 108386, 151645]
    );
    assert_eq!(tok.encode("Hello!").expect("ids"), [9707, 0]);
    let q = data.join("tokenizers/qwen2");
    let bpe = TokenizerHandle::from_vocab_merges(
        &q.join("vocab.json"),
        &q.join("merges.txt"),
        &["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    )
    .expect("bpe");
    assert_eq!(
        bpe.encode("<|im_start|>user\n你好<|im_end|>").expect("ids"),
        [151644, 872, 198, 108386, 151645]
    );
    assert_eq!(bpe.encode("Hello!").expect("ids"), [9707, 0]);
}

#[test]
fn chatml_sample_equals_whole_string_encoding_and_masks_the_answer_only() {
    let Some(data) = shared_data() else { return };
    let tok = qwen(&data);
    let tpl = Template::load("qwen2").expect("template");
    let s = dialogue(
        None,
        &[
            (Role::User, "你好"),
            (Role::Assistant, "您好！有什么可以帮您？"),
        ],
    );
    let e = encode_sample(
        &tok,
        &tpl,
        None,
        &s,
        Budget::default(),
        TrainOn::AllAssistant,
    )
    .expect("encode");
    let rendered = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n您好！有什么可以帮您？<|im_end|>\n";
    assert_eq!(e.ids, tok.encode(rendered).expect("ids"));
    assert_eq!(&e.ids[..3], [151644, 8948, 198], "<|im_start|>system\\n");
    assert_eq!(
        trained_spans(&tok, &e.ids, &e.mask),
        ["您好！有什么可以帮您？<|im_end|>"]
    );
    assert_eq!(
        *e.ids.last().expect("last"),
        198,
        "the newline after <|im_end|> is not trained"
    );
    assert_eq!(*e.mask.last().expect("last"), 0);
}

#[test]
fn masks_are_exactly_the_assistant_turns_on_real_multi_turn_data() {
    let Some(data) = shared_data() else { return };
    let tok = qwen(&data);
    let tpl = Template::load("chatml").expect("template");
    let text = std::fs::read_to_string(data.join("sft/medicalgpt/sharegpt_zh_1K_format.jsonl"))
        .expect("read");
    let mut checked = 0;
    for line in text.lines().take(250) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let conv = v["conversations"].as_array().expect("conversations");
        let turns: Vec<(Role, &str)> = conv
            .iter()
            .map(|t| {
                (
                    if t["from"] == "human" {
                        Role::User
                    } else {
                        Role::Assistant
                    },
                    t["value"].as_str().unwrap_or(""),
                )
            })
            .collect();
        if turns.len() < 4 || turns.len() % 2 == 1 || turns.iter().any(|(_, c)| c.trim().is_empty())
        {
            continue;
        }
        let s = dialogue(None, &turns);
        let e = encode_sample(
            &tok,
            &tpl,
            None,
            &s,
            Budget::default(),
            TrainOn::AllAssistant,
        )
        .expect("encode");
        let mut rendered =
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n".to_string();
        for (r, c) in &turns {
            let role = if *r == Role::User {
                "user"
            } else {
                "assistant"
            };
            rendered += &format!("<|im_start|>{role}\n{c}<|im_end|>\n");
        }
        assert_eq!(
            e.ids,
            tok.encode(&rendered).expect("ids"),
            "ids differ on {line:.80}"
        );
        let want: Vec<String> = turns
            .iter()
            .filter(|(r, _)| *r == Role::Assistant)
            .map(|(_, c)| format!("{c}<|im_end|>"))
            .collect();
        assert_eq!(trained_spans(&tok, &e.ids, &e.mask), want);
        // Last-turn-only training keeps just the final answer.
        let last = encode_sample(
            &tok,
            &tpl,
            None,
            &s,
            Budget::default(),
            TrainOn::LastAssistant,
        )
        .expect("encode");
        assert_eq!(last.ids, e.ids);
        assert_eq!(
            trained_spans(&tok, &last.ids, &last.mask),
            [want.last().expect("answer").clone()]
        );
        checked += 1;
    }
    assert!(checked >= 100, "only {checked} multi-turn samples checked");
}

#[test]
fn budgets_drop_old_turns_first_and_cut_only_content() {
    let Some(data) = shared_data() else { return };
    let tok = qwen(&data);
    let tpl = Template::load("chatml").expect("template");
    let long = "很长的问题".repeat(200);
    let s = dialogue(
        Some("S"),
        &[
            (Role::User, "第一问"),
            (Role::Assistant, "第一答"),
            (Role::User, "第二问"),
            (Role::Assistant, "第二答"),
            (Role::User, "第三问"),
            (Role::Assistant, "第三答"),
        ],
    );
    let full = encode_sample(
        &tok,
        &tpl,
        None,
        &s,
        Budget::default(),
        TrainOn::AllAssistant,
    )
    .expect("encode");
    let budget = |src: usize| Budget {
        max_source_tokens: Some(src),
        max_target_tokens: None,
    };
    // Room for the system prompt and the last two exchanges' source side, not the first one.
    let newest = dialogue(
        Some("S"),
        &[
            (Role::User, "第二问"),
            (Role::Assistant, "第二答"),
            (Role::User, "第三问"),
            (Role::Assistant, "第三答"),
        ],
    );
    let want = encode_sample(
        &tok,
        &tpl,
        None,
        &newest,
        Budget::default(),
        TrainOn::AllAssistant,
    )
    .expect("encode");
    let answer_len = tok
        .encode("<|im_start|>assistant\n第三答<|im_end|>\n")
        .expect("ids")
        .len();
    let e = encode_sample(
        &tok,
        &tpl,
        None,
        &s,
        budget(want.ids.len() - answer_len),
        TrainOn::AllAssistant,
    )
    .expect("encode");
    assert_eq!(e.ids, want.ids, "the oldest exchange goes first, whole");
    assert_eq!(e.turns_dropped, 2);
    assert!(!e.cut);
    assert!(full.ids.len() > e.ids.len());

    // A single question over budget: its oldest content is cut, template tokens stay whole.
    let s = dialogue(None, &[(Role::User, &long), (Role::Assistant, "好")]);
    let e = encode_sample(&tok, &tpl, None, &s, budget(64), TrainOn::AllAssistant).expect("encode");
    assert!(e.cut);
    let answer = tok
        .encode("<|im_start|>assistant\n好<|im_end|>\n")
        .expect("ids");
    assert_eq!(
        e.ids.len() - answer.len(),
        64,
        "source is exactly the budget"
    );
    let text = tok.decode(&e.ids).expect("decode");
    assert!(
        text.starts_with(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with("很长的问题<|im_end|>\n<|im_start|>assistant\n好<|im_end|>\n"),
        "newest text kept: {text}"
    );

    // The answer budget cuts the answer's content, keeping its end-of-turn token.
    let s = dialogue(None, &[(Role::User, "问"), (Role::Assistant, &long)]);
    let e = encode_sample(
        &tok,
        &tpl,
        None,
        &s,
        Budget {
            max_source_tokens: None,
            max_target_tokens: Some(20),
        },
        TrainOn::AllAssistant,
    )
    .expect("encode");
    let trained: usize = e.mask.iter().map(|&m| m as usize).sum();
    let prefix = tok.encode("<|im_start|>assistant\n").expect("ids").len();
    assert_eq!(trained + prefix, 20);
    assert!(trained_spans(&tok, &e.ids, &e.mask)[0].ends_with("<|im_end|>"));
}

#[test]
fn pipeline_writes_shards_manifest_and_megatron_that_read_back() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = repo().join("examples/data");
    let body = format!(
        r#"
        [[inputs]]
        name = "chat"
        paths = ["{ex}/lccc/toy_data.json"]
        cjk_despace = true
        [[inputs]]
        name = "docs"
        paths = ["{ex}/c4/*.jsonl"]
        [output]
        dir = "out"
        formats = ["jsonl"]
        [output.shards]
        tokenizer = "{tok}"
        template = "chatml"
        shard_size = "64KiB"
        megatron = true
        "#,
        ex = ex.to_string_lossy(),
        tok = data
            .join("tokenizers/minimind/tokenizer.json")
            .to_string_lossy()
    );
    let cfg = pipeline(dir.path(), &body);
    let out = dir.path().join("out");
    let report = run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    let manifest = sluice_shards::Manifest::load(&out.join("shards")).expect("manifest");
    assert_eq!(
        manifest.dtype,
        sluice_shards::TokenDtype::U16,
        "minimind's 6400 ids fit u16"
    );
    assert_eq!(manifest.template, "chatml");
    assert_eq!(manifest.tokenizer.eos_id, Some(0));
    // LCCC's splits are kept (train/valid/test); the documents have no split tag: train.
    let splits: Vec<&String> = manifest.splits.keys().collect();
    assert_eq!(splits, ["test", "train", "valid"]);
    let total: u64 = manifest.splits.values().map(|s| s.samples).sum();
    assert_eq!(total, report["totals"]["kept"].as_u64().expect("kept"));
    assert!(
        manifest.splits["train"].shards.len() > 1,
        "64 KiB shards rotate"
    );
    // Every shard reads back and its counts match the manifest.
    let tok =
        TokenizerHandle::from_file(&data.join("tokenizers/minimind/tokenizer.json")).expect("tok");
    let mut docs = 0;
    for (split, info) in &manifest.splits {
        let mut n = 0;
        for entry in &info.shards {
            let shard =
                sluice_shards::Shard::open(&out.join("shards").join(&entry.file)).expect("shard");
            assert_eq!(shard.samples() as u64, entry.stats.samples);
            for i in 0..shard.samples() {
                let (ids, mask) = shard.sample(i).expect("sample");
                let text = tok.decode(&ids).expect("decode");
                if mask.iter().all(|&m| m == 1) {
                    docs += 1;
                    assert!(text.ends_with("<|endoftext|>"), "documents end with EOS");
                } else {
                    assert!(text.starts_with("<|im_start|>system\n"), "{split}: {text}");
                }
            }
            n += shard.samples();
        }
        assert_eq!(n as u64, info.samples);
    }
    assert_eq!(docs, 40);
    let idx =
        sluice_shards::megatron::read_index(&out.join("shards/megatron/train_text_document.idx"))
            .expect("idx");
    assert_eq!(idx.sizes.len(), 40);
    assert_eq!(idx.dtype_code, 8);
    let bin = std::fs::metadata(out.join("shards/megatron/train_text_document.bin"))
        .expect("bin")
        .len();
    assert_eq!(bin, idx.sizes.iter().map(|&s| s as u64 * 2).sum::<u64>());
}

#[test]
fn packing_fills_sequences_up_to_seq_len_and_records_sample_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = repo().join("examples/data");
    let body = format!(
        "[[inputs]]\npaths = [\"{ex}/lccc/toy_data.json\"]\ncjk_despace = true\n[output]\ndir = \"out\"\nformats = [\"jsonl\"]\n[output.shards]\ntokenizer = \"{ex}/tokenizers/minimind/tokenizer.json\"\nseq_len = 256\n",
        ex = ex.to_string_lossy()
    );
    let cfg = pipeline(dir.path(), &body);
    let out = dir.path().join("out");
    run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    let m = sluice_shards::Manifest::load(&out.join("shards")).expect("manifest");
    assert_eq!(m.seq_len, Some(256));
    let info = &m.splits["train"];
    assert!(
        info.sequences * 2 < info.samples,
        "several samples per sequence: {info:?}"
    );
    let shard =
        sluice_shards::Shard::open(&out.join("shards").join(&info.shards[0].file)).expect("shard");
    let mut samples_seen = 0;
    for i in 0..shard.sequences() {
        let seq = shard.sequence(i).expect("sequence");
        assert!(
            seq.tokens.len() <= 256 || seq.sample_starts.len() == 1,
            "sequence {i} overflows"
        );
        assert_eq!(seq.sample_starts[0], 0);
        for (k, &start) in seq.sample_starts.iter().enumerate() {
            let (ids, mask) = shard.sample(samples_seen + k).expect("sample");
            let end = seq
                .sample_starts
                .get(k + 1)
                .copied()
                .unwrap_or(seq.tokens.len());
            assert_eq!(
                &seq.tokens[start..end],
                &ids[..],
                "sample boundaries line up"
            );
            assert_eq!(&seq.mask[start..end], mask);
        }
        samples_seen += seq.sample_starts.len();
    }
    assert_eq!(samples_seen, shard.samples());
    // Greedy packing recomputed from the sample lengths alone gives the same sequence count.
    let (mut expected, mut fill) = (0, 0);
    for i in 0..shard.samples() {
        let len = shard.sample(i).expect("sample").0.len();
        if fill == 0 || fill + len > 256 {
            expected += 1;
            fill = 0;
        }
        fill += len;
    }
    assert_eq!(shard.sequences(), expected);
}
