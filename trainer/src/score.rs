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

/// The index of the largest value; ties go to the lower index, as an argmax does.
fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |b, (i, &v)| {
            if v > b.1 {
                (i, v)
            } else {
                b
            }
        })
        .0
}

impl Model {
    /// Logits [n, V] in f32 where row i predicts the token after `tokens[i]`, no gradients (a
    /// placeholder after the last token makes its row: a sequence of n + 1 tokens has n input
    /// positions).
    fn next_token_logits(&self, tokens: &[u32]) -> Result<candle_core::Tensor> {
        let mut with_next = tokens.to_vec();
        with_next.push(0);
        let seq = sluice_shards::Sequence {
            mask: vec![0; with_next.len()],
            sample_starts: vec![0],
            tokens: with_next,
        };
        let n = seq.tokens.len();
        let batch = Batch::new(&[seq], n, self.config.vocab_size)?;
        Ok(self.forward(&batch, None)?.detach().to_dtype(DType::F32)?)
    }

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
        // Every token but the last continuation token is a position that predicts one.
        let positions: Vec<u32> = context
            .iter()
            .chain(&continuation[..continuation.len() - 1])
            .copied()
            .collect();
        let logits = self.next_token_logits(&positions)?;
        let vocab = self.config.vocab_size;
        let mut out = Continuation {
            log_likelihood: 0.0,
            greedy: true,
            token_log_probs: Vec::with_capacity(continuation.len()),
        };
        // The continuation's tokens are predicted from the last context position on.
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
            out.greedy &= argmax(&values) == target as usize;
            out.log_likelihood += lp;
            out.token_log_probs.push(lp);
        }
        Ok(out)
    }

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
            let last = self
                .next_token_logits(&tokens)?
                .narrow(0, tokens.len() - 1, 1)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let next = argmax(&last) as u32;
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
