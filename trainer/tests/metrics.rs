//! BLEU and ROUGE-L against the numbers sacrebleu and rouge-score give on the same Chinese and
//! English pairs (`tests/data/metrics_reference.json`, made by `bench/metrics_reference.py`).

use sluice_trainer::metrics::{corpus_bleu, rouge_l, sentence_bleu, BleuTokenizer};

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
}
