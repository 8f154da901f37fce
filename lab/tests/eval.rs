//! Evaluation: multiple-choice and open items scored with a tiny model match a direct
//! computation through the training path; synthetic options come from other answers of the
//! same task; labelled files in their usual shapes are read, and bad records are named.

#![allow(clippy::disallowed_methods)] // tests write their fixtures directly

use candle_core::{DType, Device, Tensor};
use sluice_lab::eval::mc::{self, McSource};
use sluice_lab::eval::run::{run, RunOptions, Scorer};
use sluice_lab::eval::{McItem, OpenItem};
use sluice_pipeline::sample::{Kind, Role, Sample, Turn};
use sluice_pipeline::tokenize::{encode_sample, Budget, Template, TokenizerHandle, TrainOn};
use sluice_trainer::data::Batch;
use sluice_trainer::model::{masked_nll_sum, Model};
use sluice_trainer::rng::Rng;
use sluice_trainer::ModelConfig;
use std::path::{Path, PathBuf};

fn tokenizer_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data/tokenizers/minimind/tokenizer.json")
}

const VOCAB: usize = 6400;

fn config() -> ModelConfig {
    let json = serde_json::json!({
        "model_type": "llama", "vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "max_position_embeddings": 256,
    });
    ModelConfig::from_json(&json.to_string(), "eval test").expect("config")
}

fn model() -> Model {
    Model::from_scratch(
        config(),
        0.5,
        &mut Rng::new(11),
        &Device::Cpu,
        DType::F32,
        256,
    )
    .expect("model")
}

/// The sample an option makes: history, the question, the option as the answer.
fn dialogue(history: &[Turn], prompt: &str, answer: &str) -> Sample {
    let mut turns = history.to_vec();
    turns.push(Turn::new(Role::User, prompt.to_string()));
    turns.push(Turn::new(Role::Assistant, answer.to_string()));
    Sample {
        id: "x".into(),
        source: "t".into(),
        domain: "d".into(),
        task: "t".into(),
        kind: Kind::Sft,
        user_id: None,
        system: None,
        tools: None,
        turns,
        text: None,
        tags: Default::default(),
    }
}

/// The answer's log-likelihood through the training path: the sample tokenized as the shards
/// writer does, the loss mask on the answer's content tokens (found as the tokens of the answer
/// alone, at the end of the trained span), the fused masked NLL of one forward pass.
fn direct(m: &Model, tok: &TokenizerHandle, tpl: &Template, s: &Sample, answer: &str) -> f64 {
    let enc = encode_sample(tok, tpl, None, s, Budget::default(), TrainOn::LastAssistant)
        .expect("encode");
    let content = tok.encode(answer).expect("encode answer");
    let trained: Vec<usize> = (0..enc.ids.len()).filter(|&i| enc.mask[i] == 1).collect();
    let start = trained[0];
    assert_eq!(
        &enc.ids[start..start + content.len()],
        content.as_slice(),
        "the trained span opens with the answer's own tokens"
    );
    let mut mask = vec![0u8; enc.ids.len()];
    for m in mask.iter_mut().skip(start).take(content.len()) {
        *m = 1;
    }
    let seq = sluice_shards::Sequence {
        tokens: enc.ids[..start + content.len()].to_vec(),
        mask: mask[..start + content.len()].to_vec(),
        sample_starts: vec![0],
    };
    let n = seq.tokens.len();
    let b = Batch::new(&[seq], n, VOCAB).expect("batch");
    let logits = m.forward(&b, None).expect("forward");
    let len = b.rows * b.len;
    let t = Tensor::from_slice(&b.targets, len, &Device::Cpu).expect("t");
    let mk = Tensor::from_slice(&b.loss_mask, len, &Device::Cpu).expect("m");
    -(masked_nll_sum(&logits, &t, &mk)
        .expect("nll")
        .to_scalar::<f32>()
        .expect("scalar") as f64)
}

fn mc_item(id: &str, question: &str, choices: &[&str], gold: usize) -> McItem {
    let choices: Vec<String> = choices.iter().map(|c| c.to_string()).collect();
    McItem {
        id: id.into(),
        domain: "medical".into(),
        task: "qa".into(),
        history: vec![
            Turn::new(Role::User, "你好".to_string()),
            Turn::new(Role::Assistant, "您好，请问有什么可以帮您？".to_string()),
        ],
        question: question.into(),
        prompt: question.into(),
        answer: sluice_lab::eval::letter(gold),
        letters: Default::default(),
        choices,
        gold,
        synthetic: false,
        tags: Default::default(),
    }
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for i in 1..v.len() {
        if v[i] > v[best] {
            best = i;
        }
    }
    best
}

#[test]
fn multiple_choice_picks_the_highest_normalized_likelihood_of_a_direct_computation() {
    let m = model();
    let tok = TokenizerHandle::from_file(&tokenizer_path()).expect("tokenizer");
    let tpl = Template::load("chatml").expect("template");
    let scorer = Scorer::new(&m, &tok, &tpl, 256).expect("scorer");
    let items = [
        mc_item(
            "q1",
            "感冒发烧应该怎么办？",
            &[
                "多喝水，注意休息",
                "立刻做手术",
                "不用管它，过几天自己就好了，完全不需要注意",
                "吃冰淇淋",
            ],
            0,
        ),
        mc_item(
            "q2",
            "What lowers blood pressure?",
            &[
                "exercise",
                "salt",
                "a very long answer about sleeping less and worrying more",
                "stress",
            ],
            0,
        ),
        mc_item(
            "q3",
            "高血压患者饮食要注意什么？",
            &["少盐", "多糖多油的食物随便吃", "喝酒"],
            2,
        ),
    ];
    let mut differ = false;
    for it in &items {
        let got = scorer.mc(it).expect("score");
        let lls: Vec<f64> = it
            .choices
            .iter()
            .map(|c| direct(&m, &tok, &tpl, &dialogue(&it.history, &it.prompt, c), c))
            .collect();
        for (a, b) in got.log_likelihoods.iter().zip(&lls) {
            assert!(
                (a - b).abs() <= 1e-3 * b.abs().max(1.0),
                "{a} vs direct {b}"
            );
        }
        let per_char: Vec<f64> = lls
            .iter()
            .zip(&it.choices)
            .map(|(l, c)| l / c.chars().count() as f64)
            .collect();
        assert_eq!(got.pred, argmax(&lls), "{lls:?}");
        assert_eq!(got.pred_norm, argmax(&per_char), "{per_char:?}");
        assert_eq!(got.acc, f64::from(u8::from(got.pred == it.gold)));
        assert_eq!(got.acc_norm, f64::from(u8::from(got.pred_norm == it.gold)));
        differ |= got.pred != got.pred_norm;
    }
    assert!(
        differ,
        "some item where normalization changes the pick, so both are tested"
    );
}

#[test]
fn a_model_folder_is_scored_end_to_end_as_the_scorer_scores_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let model_dir = dir.path().join("model");
    std::fs::create_dir_all(&model_dir).expect("dir");
    let m = model();
    sluice_trainer::checkpoint::save_tensors(
        &model_dir.join("model.safetensors"),
        &m.merged_weights().expect("weights"),
        DType::F32,
    )
    .expect("save");
    std::fs::write(model_dir.join("config.json"), m.config.to_json()).expect("config");
    std::fs::copy(tokenizer_path(), model_dir.join("tokenizer.json")).expect("tok");
    let eval = dir.path().join("eval");
    std::fs::create_dir_all(eval.join("mc")).expect("mc");
    std::fs::create_dir_all(eval.join("open")).expect("open");
    let items = [
        mc_item(
            "q1",
            "感冒发烧应该怎么办？",
            &["多喝水，注意休息", "立刻做手术", "吃冰淇淋"],
            0,
        ),
        mc_item(
            "q2",
            "What lowers blood pressure?",
            &["exercise", "salt", "stress"],
            1,
        ),
    ];
    let lines: String = items
        .iter()
        .map(|i| serde_json::to_string(i).expect("json") + "\n")
        .collect();
    std::fs::write(eval.join("mc/medical.jsonl"), lines).expect("w");
    let open = OpenItem {
        id: "o1".into(),
        domain: "medical".into(),
        task: "qa".into(),
        system: Some("你是医生。".into()),
        history: Vec::new(),
        prompt: "头痛怎么办？".into(),
        reference: "注意休息，必要时就医。".into(),
        tags: [("region".to_string(), "east".to_string())].into(),
        question: "头痛怎么办？".into(),
        answer: "注意休息，必要时就医。".into(),
    };
    std::fs::write(
        eval.join("open/medical.jsonl"),
        serde_json::to_string(&open).expect("json") + "\n",
    )
    .expect("w");
    let out = dir.path().join("out");
    let summary = run(
        &RunOptions {
            model: model_dir,
            eval: eval.clone(),
            out: out.clone(),
            template: "chatml".into(),
            tokenizer: None,
            max_new_tokens: 8,
            limit: 0,
            device: "cpu".into(),
            max_source_tokens: None,
        },
        &mut |_| {},
    )
    .expect("run");
    let tok = TokenizerHandle::from_file(&tokenizer_path()).expect("tokenizer");
    let tpl = Template::load("chatml").expect("template");
    let scorer = Scorer::new(&m, &tok, &tpl, 256).expect("scorer");
    let accs: Vec<f64> = items
        .iter()
        .map(|i| scorer.mc(i).expect("mc").acc)
        .collect();
    assert_eq!(summary.overall.mc, 2);
    assert_eq!(summary.overall.acc, Some(accs.iter().sum::<f64>() / 2.0));
    let o = scorer.open(&open, 8).expect("open");
    let ll = direct(
        &m,
        &tok,
        &tpl,
        &{
            let mut s = dialogue(&[], &open.prompt, &open.reference);
            s.system = open.system.clone();
            s
        },
        &open.reference,
    );
    assert!(
        (o.log_likelihood - ll).abs() <= 1e-3 * ll.abs(),
        "{} vs {ll}",
        o.log_likelihood
    );
    let ppl = summary.overall.perplexity.expect("ppl");
    assert!((ppl - (-ll / o.tokens as f64).exp()).abs() <= 1e-3 * ppl);
    assert!(summary.by_tag.contains_key("region=east"));
    let samples = std::fs::read_to_string(out.join("samples.jsonl")).expect("samples");
    assert_eq!(samples.lines().count(), 3);
    assert!(out.join("summary.json").is_file());
}

fn open_item(id: &str, task: &str, reference: &str) -> OpenItem {
    OpenItem {
        id: id.into(),
        domain: "d".into(),
        task: task.into(),
        system: None,
        history: Vec::new(),
        prompt: format!("问题{id}"),
        reference: reference.into(),
        tags: Default::default(),
        question: format!("问题{id}"),
        answer: reference.into(),
    }
}

#[test]
fn synthetic_options_are_other_answers_of_the_same_task() {
    let mut items: Vec<OpenItem> = (0..6)
        .map(|i| open_item(&format!("a{i}"), "qa", &format!("答案{i}")))
        .collect();
    // A repeated answer is one distinct answer, never a distractor of itself.
    items.push(open_item("a6", "qa", "答案0"));
    items.push(open_item("b0", "chitchat", "好的"));
    items.push(open_item("b1", "chitchat", "好的"));
    let (made, short) = mc::synthetic(&items, 4, 7);
    assert_eq!(
        short,
        ["chitchat"],
        "two equal answers cannot make four options"
    );
    assert_eq!(made.len(), 7);
    for m in &made {
        let source = items
            .iter()
            .find(|i| format!("{}#mc", i.id) == m.id)
            .expect("source");
        assert!(m.synthetic);
        assert_eq!(m.choices.len(), 4);
        assert_eq!(m.choices[m.gold], source.reference);
        assert_eq!(m.answer, sluice_lab::eval::letter(m.gold));
        let distinct: std::collections::HashSet<&String> = m.choices.iter().collect();
        assert_eq!(distinct.len(), 4, "{:?}", m.choices);
        for c in &m.choices {
            assert!(
                items.iter().any(|i| i.task == "qa" && &i.reference == c),
                "{c}"
            );
        }
        assert_eq!(m.letters.get("A"), Some(&m.choices[0]));
    }
    let golds: std::collections::HashSet<usize> = made.iter().map(|m| m.gold).collect();
    assert!(
        golds.len() > 1,
        "the right option is not always in one place"
    );
    assert_eq!(mc::synthetic(&items, 4, 7).0, made, "deterministic");
}

#[test]
fn labelled_files_in_their_usual_shapes_are_read_and_bad_records_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let csv = dir.path().join("q.csv");
    std::fs::write(
        &csv,
        "question,A,B,C,D,answer,domain\n1+1=?,1,2,3,4,B,math\n\"首都是？\",北京,上海,广州,深圳,A,geo\n",
    )
    .expect("w");
    let items = mc::read_labelled(&csv, &McSource::default()).expect("csv");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].choices, ["1", "2", "3", "4"]);
    assert_eq!(items[0].gold, 1);
    assert_eq!(items[1].domain, "geo");
    assert_eq!(items[1].id, "q.csv#3");
    let jsonl = dir.path().join("q.jsonl");
    std::fs::write(
        &jsonl,
        "{\"id\": \"x1\", \"question\": \"q\", \"options\": [\"a\", \"b\"], \"gold\": 1}\n\
         {\"问题\": \"q2\", \"选项\": \"A. 甲\\nB、乙\\nC：丙\", \"答案\": \"丙\"}\n\
         {\"question\": \"q3\", \"options\": {\"A\": \"x\", \"B\": \"y\"}, \"answer\": \"b.\"}\n",
    )
    .expect("w");
    let src = McSource {
        domain: Some("medical".into()),
        task: None,
    };
    let items = mc::read_labelled(&jsonl, &src).expect("jsonl");
    assert_eq!(items[0].gold, 1);
    assert_eq!(items[1].choices, ["甲", "乙", "丙"]);
    assert_eq!(items[1].gold, 2);
    assert_eq!(items[2].gold, 1);
    assert!(items
        .iter()
        .all(|i| i.domain == "medical" && i.task == "mc"));
    for (body, want) in [
        (
            "{\"question\": \"q\", \"options\": [\"a\", \"b\"], \"answer\": \"C\"}",
            "neither",
        ),
        (
            "{\"question\": \"q\", \"options\": [\"a\", \"a\"], \"answer\": \"A\"}",
            "same",
        ),
        (
            "{\"question\": \"q\", \"options\": [\"a\"], \"answer\": \"A\"}",
            "fewer than two",
        ),
        (
            "{\"options\": [\"a\", \"b\"], \"answer\": \"A\"}",
            "no question",
        ),
        (
            "{\"question\": \"q\", \"options\": [\"a\", \"b\"], \"answer\": \"1\"}",
            "ambiguous",
        ),
        (
            "{\"question\": \"q\", \"options\": [\"a\", \"b\"], \"gold\": 5}",
            "option 5",
        ),
    ] {
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, format!("{{\"question\": \"ok\", \"options\": [\"a\", \"b\"], \"answer\": \"A\"}}\n{body}\n"))
            .expect("w");
        let err = mc::read_labelled(&bad, &src).expect_err(body).to_string();
        assert!(
            err.contains("record 2") && err.contains(want),
            "{body}: {err}"
        );
    }
    let no_domain = mc::read_labelled(&jsonl, &McSource::default())
        .expect_err("no domain")
        .to_string();
    assert!(no_domain.contains("--mc-domain"), "{no_domain}");
}

#[test]
fn a_context_budget_drops_the_oldest_turns_as_the_shards_writer_does() {
    let m = model();
    let tok = TokenizerHandle::from_file(&tokenizer_path()).expect("tokenizer");
    let tpl = Template::load("chatml").expect("template");
    let mut history = Vec::new();
    for i in 0..20 {
        history.push(Turn::new(
            Role::User,
            format!("第{i}轮：我的信用卡账单有问题，请帮我看看这个月为什么多扣了钱。"),
        ));
        history.push(Turn::new(
            Role::Assistant,
            format!("第{i}轮回答：请提供账单日期和交易明细，我们来核对。"),
        ));
    }
    let item = OpenItem {
        id: "long".into(),
        domain: "finance".into(),
        task: "qa".into(),
        system: None,
        history,
        prompt: "那现在怎么办？".into(),
        reference: "我们会为您提交退款申请。".into(),
        tags: Default::default(),
        question: String::new(),
        answer: String::new(),
    };
    let mut scorer = Scorer::new(&m, &tok, &tpl, 256).expect("scorer");
    let err = scorer
        .open(&item, 0)
        .expect_err("too long for the model")
        .to_string();
    assert!(err.contains("the model takes 256"), "{err}");
    scorer.max_source_tokens = Some(120);
    let s = scorer.open(&item, 0).expect("fits with the budget");
    assert!(s.log_likelihood.is_finite() && s.tokens > 0);
}
