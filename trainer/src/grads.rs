//! One micro-batch's loss and gradients, with or without activation checkpointing.
//!
//! Without checkpointing the whole forward graph (every layer's activations) stays alive until
//! the backward pass has run. With it, the forward pass keeps only each layer's input; the
//! backward pass then walks the layers from the top, recomputes one layer from its saved input
//! and back-propagates the gradient arriving at its output through it
//! (`∂/∂θ Σ out ⊙ g` = the layer's vector-Jacobian product), so at most one layer's activations
//! are alive at a time. LoRA dropout draws the same masks in the recomputation (each layer
//! replays the generator's state from the first pass), so both paths compute the same
//! gradients up to the order of floating-point sums.

use crate::data::Batch;
use crate::model::{masked_nll_sum, Model};
use crate::rng::Rng;
use crate::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use std::collections::BTreeMap;

/// Gradients by parameter name, f32.
pub type Grads = BTreeMap<String, Tensor>;

impl Model {
    /// The loss `Σ masked NLL / denom` of `batch` and its gradients with respect to every
    /// trainable parameter. `rng` is the training generator (LoRA dropout); `recompute` turns
    /// activation checkpointing on.
    pub fn loss_and_grads(
        &self,
        batch: &Batch,
        targets: &Tensor,
        mask: &Tensor,
        denom: f64,
        rng: Option<&mut Rng>,
        recompute: bool,
    ) -> Result<(f64, Grads)> {
        let mut grads = Grads::new();
        if !recompute {
            let logits = self.forward(batch, rng)?;
            let l = (masked_nll_sum(&logits, targets, mask)? / denom)?;
            let loss = l.to_scalar::<f32>()? as f64;
            self.accumulate(&l.backward()?, &mut grads)?;
            return Ok((loss, grads));
        }
        let mut rng = rng;
        let pass = self.pass(batch)?;
        let embedded = self.embed(batch)?;
        let layers = self.config.num_hidden_layers;
        // Each layer's input, detached, and the generator's state as the layer began.
        let mut saved: Vec<(Tensor, Option<Rng>)> = Vec::with_capacity(layers);
        let mut x = embedded.detach();
        for l in 0..layers {
            let state = rng.as_deref().cloned();
            let out = self.layer(l, &x, &pass, rng.as_deref_mut())?.detach();
            saved.push((std::mem::replace(&mut x, out), state));
        }
        let top = Var::from_tensor(&x)?;
        drop(x);
        let (loss, mut upstream) = {
            let logits = self.head(top.as_tensor())?;
            let l = (masked_nll_sum(&logits, targets, mask)? / denom)?;
            let loss = l.to_scalar::<f32>()? as f64;
            let store = l.backward()?;
            self.accumulate(&store, &mut grads)?;
            (loss, input_grad(&store, &top)?)
        };
        while let Some((input, state)) = saved.pop() {
            let l = saved.len();
            let x = Var::from_tensor(&input)?;
            drop(input);
            let mut replay = state;
            let out = self.layer(l, x.as_tensor(), &pass, replay.as_mut())?;
            let store = (out * &upstream)?.sum_all()?.backward()?;
            self.accumulate(&store, &mut grads)?;
            upstream = input_grad(&store, &x)?;
        }
        let store = (embedded * &upstream)?.sum_all()?.backward()?;
        self.accumulate(&store, &mut grads)?;
        Ok((loss, grads))
    }

    /// Add the trainable parameters' gradients in `store` to `grads` (as f32).
    fn accumulate(&self, store: &GradStore, grads: &mut Grads) -> Result<()> {
        for (name, var) in self.trainable() {
            if let Some(g) = store.get(var.as_tensor()) {
                add(grads, name.clone(), g.to_dtype(DType::F32)?)?;
            }
        }
        Ok(())
    }
}

/// Add `g` to the gradient of `name` in `grads` (or start it).
pub fn add(grads: &mut Grads, name: String, g: Tensor) -> Result<()> {
    let sum = match grads.remove(&name) {
        Some(prev) => (prev + g)?,
        None => g,
    };
    grads.insert(name, sum);
    Ok(())
}

/// The gradient that reached a layer's input, detached for the next layer down.
fn input_grad(store: &GradStore, input: &Var) -> Result<Tensor> {
    store
        .get(input.as_tensor())
        .map(Tensor::detach)
        .ok_or_else(|| Error::Data("no gradient reached a layer's input".into()))
}
