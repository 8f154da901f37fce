//! BLEU, ROUGE-L, exact match and token F1 against the numbers sacrebleu, rouge-score and the
//! SQuAD script give on the same Chinese and
//! English pairs (`tests/data/metrics_reference.json`, made by `bench/metrics_reference.py`).

use sluice_trainer::metrics::{
    corpus_bleu, exact_match, rouge_l, sentence_bleu, token_f1, BleuTokenizer,
};

#[test]
fn bleu_and_rouge_match_sacrebleu_and_rouge_score() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/metrics_reference.json"),
    )
    .expect("reference values");
    let refs: serde_json::Value = serde_json::from_str(&text).expect("json");
    let close = |ours: f64, theirs: f64, what: &str| {
        assert!(
            (ours - theirs).abs() <= 1e-9 * theirs.abs().max(1.0),
            "{what}: ours {ours}, reference {theirs}"
        );
    };
    for (lang, tok) in [("en", BleuTokenizer::Intl13a), ("zh", BleuTokenizer::Zh)] {
        let block = &refs[lang];
        let pairs: Vec<(String, String)> = block["pairs"]
            .as_array()
            .expect("pairs")
            .iter()
            .map(|p| {
                (
                    p["hypothesis"].as_str().expect("h").to_string(),
                    p["reference"].as_str().expect("r").to_string(),
                )
            })
            .collect();
        for (p, (h, r)) in block["pairs"].as_array().expect("pairs").iter().zip(&pairs) {
            close(
                sentence_bleu(h, r, tok),
                p["sentence_bleu"].as_f64().expect("bleu"),
                &format!("{lang} sentence BLEU of {h:?}"),
            );
            close(
                rouge_l(h, r),
                p["rouge_l"].as_f64().expect("rouge"),
                &format!("{lang} ROUGE-L of {h:?}"),
            );
            assert_eq!(BleuTokenizer::for_text(r), tok, "{r}");
        }
        let borrowed: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(h, r)| (h.as_str(), r.as_str()))
            .collect();
        close(
            corpus_bleu(&borrowed, tok),
            block["corpus_bleu"].as_f64().expect("corpus"),
            &format!("{lang} corpus BLEU"),
        );
    }
    // Exact match and token F1 as the SQuAD v1.1 script computes them.
    for p in refs["squad"].as_array().expect("squad") {
        let (pred, gold) = (
            p["prediction"].as_str().expect("p"),
            p["reference"].as_str().expect("r"),
        );
        close(
            exact_match(pred, gold),
            p["exact_match"].as_f64().expect("em"),
            &format!("EM of {pred:?}"),
        );
        close(
            token_f1(pred, gold),
            p["f1"].as_f64().expect("f1"),
            &format!("F1 of {pred:?}"),
        );
    }
    // Chinese answers compare by character: 3 of 4 characters shared.
    let f1 = token_f1("头疼发热", "头疼发烧");
    assert!((f1 - 0.75).abs() < 1e-12, "{f1}");
    assert_eq!(exact_match("头疼。", "头疼"), 1.0);
}
