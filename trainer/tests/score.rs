//! Scoring continuations and multiple-choice options with a tiny model trained a few steps:
//! the log-likelihood equals the loss computed the training way (the fused masked NLL over the
//! continuation's positions), greedy is what the argmax writes, and the choice follows the
//! highest (per-byte) log-likelihood.

use candle_core::{DType, Device, Tensor};
use sluice_trainer::data::Batch;
use sluice_trainer::model::{masked_nll_sum, Model};
use sluice_trainer::rng::Rng;
use sluice_trainer::score::choose;
use sluice_trainer::ModelConfig;

fn model() -> Model {
    let json = serde_json::json!({
        "model_type": "llama", "vocab_size": 48, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": false,
    });
    let cfg = ModelConfig::from_json(&json.to_string(), "score test").expect("config");
    Model::from_scratch(cfg, 0.3, &mut Rng::new(9), &Device::Cpu, DType::F32, 64).expect("model")
}

/// −(masked NLL) over the continuation, through the training path.
fn direct(model: &Model, context: &[u32], continuation: &[u32]) -> f64 {
    let tokens: Vec<u32> = context.iter().chain(continuation).copied().collect();
    let mut mask = vec![0u8; context.len()];
    mask.extend(std::iter::repeat_n(1u8, continuation.len()));
    let seq = sluice_shards::Sequence {
        tokens,
        mask,
        sample_starts: vec![0],
    };
    let n = seq.tokens.len();
    let b = Batch::new(&[seq], n, 48).expect("batch");
    let logits = model.forward(&b, None).expect("forward");
    let len = b.rows * b.len;
    let t = Tensor::from_slice(&b.targets, len, &Device::Cpu).expect("t");
    let m = Tensor::from_slice(&b.loss_mask, len, &Device::Cpu).expect("m");
    -(masked_nll_sum(&logits, &t, &m)
        .expect("nll")
        .to_scalar::<f32>()
        .expect("scalar") as f64)
}

#[test]
fn continuation_scores_match_the_training_loss_and_choices_follow_them() {
    let model = model();
    let context = [1u32, 7, 9, 3];
    let options: [&[u32]; 4] = [&[5, 6], &[11], &[20, 21, 22, 23], &[5, 30, 31]];
    let mut scored = Vec::new();
    for o in options {
        let s = model.score_continuation(&context, o).expect("score");
        let d = direct(&model, &context, o);
        assert!(
            (s.log_likelihood - d).abs() < 1e-4 * d.abs().max(1.0),
            "{o:?}: {} vs {d}",
            s.log_likelihood
        );
        assert_eq!(s.token_log_probs.len(), o.len());
        assert!(s.token_log_probs.iter().all(|&p| p < 0.0));
        scored.push(s);
    }
    // Greedy: exactly the most likely next token (the lowest id on a tie) continues greedily.
    let singles: Vec<f64> = (0..48u32)
        .map(|t| {
            model
                .score_continuation(&context, &[t])
                .expect("score")
                .log_likelihood
        })
        .collect();
    let top = (0..48).fold(0usize, |b, t| if singles[t] > singles[b] { t } else { b });
    for t in 0..48u32 {
        let s = model.score_continuation(&context, &[t]).expect("score");
        assert_eq!(s.greedy, t as usize == top, "token {t}");
    }
    // The probabilities of all next tokens sum to one.
    let total: f64 = singles.iter().map(|l| l.exp()).sum();
    assert!((total - 1.0).abs() < 1e-6, "{total}");
    // The choice: by log-likelihood, and per byte of each option's text.
    let bytes = [2usize, 9, 4, 3];
    let with_len: Vec<(f64, usize)> = scored
        .iter()
        .zip(bytes)
        .map(|(s, b)| (s.log_likelihood, b))
        .collect();
    let (acc, norm) = choose(&with_len).expect("options");
    let argmax = |f: &dyn Fn(&(f64, usize)) -> f64| {
        (0..with_len.len())
            .max_by(|&a, &b| f(&with_len[a]).total_cmp(&f(&with_len[b])))
            .expect("some")
    };
    assert_eq!(acc, argmax(&|o| o.0));
    assert_eq!(norm, argmax(&|o| o.0 / o.1 as f64));
    assert!(model.score_continuation(&[], &[1]).is_err());
}

/// Greedy generation writes, token by token, what greedy scoring calls greedy, and stops at
/// the stop token.
#[test]
fn greedy_generation_follows_the_argmax_and_stops() {
    let model = model();
    let context = [1u32, 7, 9, 3];
    let answer = model.generate_greedy(&context, 6, None).expect("generate");
    assert_eq!(answer.len(), 6);
    let s = model.score_continuation(&context, &answer).expect("score");
    assert!(s.greedy, "{answer:?}");
    // Stopping at the second generated token's id ends the answer there.
    let stop = answer[1];
    let cut = model
        .generate_greedy(&context, 6, Some(stop))
        .expect("generate");
    let at = answer.iter().position(|&t| t == stop).expect("present");
    assert_eq!(cut, answer[..=at].to_vec());
}
