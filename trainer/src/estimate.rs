//! Memory estimates for full fine-tuning, LoRA and QLoRA, per GPU without offload.
//!
//! Terms, in bytes:
//! - weights: parameters × bytes of the precision (QLoRA: 4-bit NF4 plus one fp16 scale per
//!   64 weights ≈ 0.53 bytes);
//! - trainable state: for each trained parameter its gradient (precision bytes) plus, with mixed
//!   precision, an f32 master copy (4) plus the optimizer's moments (AdamW 8, 8-bit AdamW 2,
//!   SGD 0);
//! - activations: per layer s·b·h·(34 + 5·a·s/h) bytes at 16 bits (Korthikanti et al. 2022),
//!   doubled at 32 bits; with activation checkpointing only each layer's input (2·s·b·h) plus
//!   one layer's full activations; plus the logits and their gradient (s·b·V in f32, twice);
//! - framework overhead: CUDA context and allocator fragmentation, 10% of the rest plus 1 GiB.
//!
//! With activation checkpointing (the usual setting) full fine-tuning comes to 16–20 bytes per
//! parameter for 7B–70B models: the practitioners' rule of 16–20 n GB for n billion parameters.
//! Without checkpointing, activations at 2,048 tokens add several GB per billion on top.

use serde::Serialize;

/// Fine-tuning method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Every parameter trained.
    Full,
    /// Adapters on a 16-bit frozen base.
    Lora,
    /// Adapters on a 4-bit frozen base.
    Qlora,
}

/// Optimizer family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// Two f32 moments.
    Adamw,
    /// Two 8-bit moments.
    Adamw8bit,
    /// No state.
    Sgd,
}

/// What is estimated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shape {
    /// Parameters.
    pub params: f64,
    /// Residual width.
    pub hidden: f64,
    /// Layers.
    pub layers: f64,
    /// Attention heads.
    pub heads: f64,
    /// Vocabulary.
    pub vocab: f64,
}

impl Shape {
    /// A Llama-like shape for a parameter count: 12·L·h² ≈ n with L ≈ h/128, 128-wide heads.
    pub fn from_params(params: f64) -> Shape {
        let hidden = (params * 128.0 / 12.0).cbrt();
        Shape {
            params,
            hidden,
            layers: (hidden / 128.0).round().max(1.0),
            heads: (hidden / 128.0).round().max(1.0),
            vocab: 32_000.0,
        }
    }
}

/// Settings of the estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Method.
    pub method: Method,
    /// Optimizer.
    pub optimizer: Optimizer,
    /// Bytes per value of the compute precision (2 for bf16/fp16, 4 for f32).
    pub precision_bytes: f64,
    /// Sequence length.
    pub seq_len: f64,
    /// Micro-batch size.
    pub batch: f64,
    /// Activation checkpointing.
    pub checkpointing: bool,
    /// LoRA rank.
    pub lora_rank: f64,
    /// Fraction of projections with adapters (all seven: 1.0; q and v only: about 0.14).
    pub lora_coverage: f64,
}

/// The estimate, in bytes per term.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// Frozen or trained weights in the compute precision (f32 master copies separate).
    pub weights: f64,
    /// Trainable parameters.
    pub trainable_params: f64,
    /// Gradients.
    pub gradients: f64,
    /// f32 master weights of trained parameters (mixed precision only).
    pub master_weights: f64,
    /// Optimizer moments.
    pub optimizer: f64,
    /// Activations kept for the backward pass.
    pub activations: f64,
    /// Context and fragmentation.
    pub overhead: f64,
    /// Sum.
    pub total: f64,
}

/// Estimate memory for `shape` under `s`.
pub fn estimate(shape: &Shape, s: &Settings) -> Estimate {
    let p = s.precision_bytes;
    let n = shape.params;
    let weight_bytes = match s.method {
        Method::Qlora => 0.5 + 2.0 / 64.0,
        _ => p,
    };
    let trainable = match s.method {
        Method::Full => n,
        // Adapters A (r×in) and B (out×r) on each covered projection: about 2·r·h per h×h
        // matrix; the 7 projections of a layer hold about 12·h² weights over ~18 h columns.
        Method::Lora | Method::Qlora => {
            shape.layers * s.lora_coverage * s.lora_rank * 18.0 * shape.hidden
        }
    };
    let adapters = if s.method == Method::Full {
        0.0
    } else {
        trainable * p
    };
    let master = if p < 4.0 { 4.0 * trainable } else { 0.0 };
    let moments = match s.optimizer {
        Optimizer::Adamw => 8.0,
        Optimizer::Adamw8bit => 2.0,
        Optimizer::Sgd => 0.0,
    } * trainable;
    let (sq, b, h) = (s.seq_len, s.batch, shape.hidden);
    let width = p / 2.0;
    let layer_full = sq * b * h * (34.0 + 5.0 * shape.heads * sq / h) * width;
    let layers = if s.checkpointing {
        2.0 * sq * b * h * width * shape.layers + layer_full
    } else {
        layer_full * shape.layers
    };
    let logits = 2.0 * sq * b * shape.vocab * 4.0;
    let activations = layers + logits;
    let weights = n * weight_bytes + adapters;
    let gradients = trainable * p;
    let subtotal = weights + gradients + master + moments + activations;
    let overhead = 0.1 * subtotal + (1u64 << 30) as f64;
    Estimate {
        weights,
        trainable_params: trainable,
        gradients,
        master_weights: master,
        optimizer: moments,
        activations,
        overhead,
        total: subtotal + overhead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(method: Method, checkpointing: bool) -> Settings {
        Settings {
            method,
            optimizer: Optimizer::Adamw,
            precision_bytes: 2.0,
            seq_len: 2048.0,
            batch: 1.0,
            checkpointing,
            lora_rank: 8.0,
            lora_coverage: 4.0 / 7.0,
        }
    }

    #[test]
    fn full_fine_tuning_follows_the_16_to_20_n_gb_rule() {
        // The rule is quoted for the usual setting: bf16, AdamW, activation checkpointing.
        for billions in [7.0f64, 13.0, 34.0, 70.0] {
            let shape = Shape::from_params(billions * 1e9);
            let e = estimate(&shape, &settings(Method::Full, true));
            let per_b = e.total / 1e9 / billions;
            assert!(
                (16.0..=20.0).contains(&per_b),
                "{billions}B: {per_b:.1} GB per billion parameters"
            );
            let without = estimate(&shape, &settings(Method::Full, false));
            assert!(without.activations > 10.0 * e.activations && without.total > e.total);
        }
    }

    #[test]
    fn lora_and_qlora_shrink_the_footprint_in_order() {
        let shape = Shape::from_params(7e9);
        let full = estimate(&shape, &settings(Method::Full, true)).total;
        let lora = estimate(&shape, &settings(Method::Lora, true)).total;
        let qlora = estimate(&shape, &settings(Method::Qlora, true)).total;
        assert!(
            full > 3.0 * lora && lora > 2.0 * qlora,
            "{full} {lora} {qlora}"
        );
        // 7B LoRA fits a 24 GB card, QLoRA roughly 6 GB: what practitioners report.
        assert!(lora / 1e9 < 24.0 && qlora / 1e9 < 8.0, "{lora} {qlora}");
    }
}
