//! Scoring text with a model, as lm-evaluation-harness does: the log-likelihood of a
//! continuation after a context (and whether greedy decoding would produce it), and the choice
//! among multiple-choice options by log-likelihood (`acc`) and by log-likelihood per byte of the
//! option's text (`acc_norm`).

use crate::data::Batch;
use crate::model::Model;
use crate::{Error, Result};
use candle_core::DType;

/// The log-likelihood of one continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Continuation {
    /// Sum over the continuation's tokens of log p(token | everything before it).
    pub log_likelihood: f64,
    /// Each token is the most likely one at its position (greedy decoding would write it).
    pub greedy: bool,
    /// Per-token log-probabilities.
    pub token_log_probs: Vec<f64>,
}

impl Model {
    /// Score `continuation` after `context` (token ids; the context must hold at least one
    /// token, e.g. BOS, for the first continuation token to be predicted). No gradients.
    pub fn score_continuation(
        &self,
        context: &[u32],
        continuation: &[u32],
    ) -> Result<Continuation> {
        if context.is_empty() || continuation.is_empty() {
            return Err(Error::Data(
                "scoring needs a context of at least one token and a continuation".into(),
            ));
        }
        let tokens: Vec<u32> = context.iter().chain(continuation).copied().collect();
        let seq = sluice_shards::Sequence {
            mask: vec![1; tokens.len()],
            sample_starts: vec![0],
            tokens,
        };
        let n = seq.tokens.len();
        let batch = Batch::new(&[seq], n, self.config.vocab_size)?;
        let logits = self.forward(&batch, None)?.detach().to_dtype(DType::F32)?;
        let vocab = self.config.vocab_size;
        let mut out = Continuation {
            log_likelihood: 0.0,
            greedy: true,
            token_log_probs: Vec::with_capacity(continuation.len()),
        };
        // Row i predicts token i + 1: the continuation's tokens are predicted from the last
        // context position on.
        for (j, &target) in continuation.iter().enumerate() {
            let row = context.len() - 1 + j;
            let values = logits.narrow(0, row, 1)?.flatten_all()?.to_vec1::<f32>()?;
            if values.len() != vocab {
                return Err(Error::Data(format!(
                    "logits of width {} for a vocabulary of {vocab}",
                    values.len()
                )));
            }
            let max = values.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let lse = max
                + values
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            let lp = values[target as usize] as f64 - lse;
            // Ties go to the lower id, as an argmax does.
            let best = values
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |b, (i, &v)| {
                    if v > b.1 {
                        (i, v)
                    } else {
                        b
                    }
                })
                .0;
            out.greedy &= best == target as usize;
            out.log_likelihood += lp;
            out.token_log_probs.push(lp);
        }
        Ok(out)
    }
}

impl Model {
    /// Greedy decoding: up to `max_new` tokens after `context`, stopping after `stop` (e.g. the
    /// end-of-turn id). Each step reruns the whole sequence (no key/value cache): meant for
    /// evaluating small models on short answers. The context plus the answer must fit the RoPE
    /// positions the model was built with.
    pub fn generate_greedy(
        &self,
        context: &[u32],
        max_new: usize,
        stop: Option<u32>,
    ) -> Result<Vec<u32>> {
        if context.is_empty() {
            return Err(Error::Data(
                "generation needs a context of at least one token".into(),
            ));
        }
        let mut tokens = context.to_vec();
        let mut out = Vec::new();
        for _ in 0..max_new {
            // A sequence of n tokens makes n − 1 input positions: one more token to predict the
            // next one from the last.
            let mut seq_tokens = tokens.clone();
            seq_tokens.push(0);
            let seq = sluice_shards::Sequence {
                mask: vec![0; seq_tokens.len()],
                sample_starts: vec![0],
                tokens: seq_tokens,
            };
            let n = seq.tokens.len();
            let batch = Batch::new(&[seq], n, self.config.vocab_size)?;
            let logits = self.forward(&batch, None)?.detach().to_dtype(DType::F32)?;
            let last = logits
                .narrow(0, tokens.len() - 1, 1)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let next = last
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |b, (i, &v)| {
                    if v > b.1 {
                        (i, v)
                    } else {
                        b
                    }
                })
                .0 as u32;
            out.push(next);
            tokens.push(next);
            if Some(next) == stop {
                break;
            }
        }
        Ok(out)
    }
}

/// Which option a multiple-choice question picks, given each option's log-likelihood and the
/// length in bytes of its text: (`acc`: the highest log-likelihood, `acc_norm`: the highest
/// log-likelihood per byte, as lm-evaluation-harness normalizes). Ties go to the first option.
pub fn choose(options: &[(f64, usize)]) -> Option<(usize, usize)> {
    let argmax = |key: &dyn Fn(&(f64, usize)) -> f64| {
        options
            .iter()
            .enumerate()
            .fold(None::<(usize, f64)>, |best, (i, o)| {
                let k = key(o);
                match best {
                    Some((_, b)) if b >= k => best,
                    _ => Some((i, k)),
                }
            })
            .map(|(i, _)| i)
    };
    let acc = argmax(&|o| o.0)?;
    let norm = argmax(&|o| o.0 / o.1.max(1) as f64)?;
    Some((acc, norm))
}
