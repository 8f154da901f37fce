//! The bundled candle trainer: consumes tokenized shards (through `sluice-shards`, never the
//! pipeline crate) and trains SFT and continued-pretraining runs on CPU or CUDA.
//!
//! - [`model`]: a Llama/Qwen2-compatible decoder whose every op carries gradients;
//! - [`data`]: each rank's shards, reshuffled per epoch, one memory-mapped at a time, packed
//!   samples with positions and attention reset per sample;
//! - [`optim`]: AdamW with decoupled decay, warm-up + cosine schedule, clipping;
//! - [`train`]: the loop, validation, early stopping, checkpoints, exact resume, spike rollback;
//! - [`grads`]: one micro-batch's loss and gradients, with or without activation checkpointing;
//! - [`ops`]: fused CPU f32 ops with hand-written backward (attention softmax with the mask
//!   generated, masked cross-entropy, RMSNorm, RoPE, in-place AdamW);
//! - [`dist`]: data parallel across processes (gradients summed over TCP);
//! - [`metrics`]: BLEU and ROUGE-L as sacrebleu and rouge-score compute them;
//! - [`score`]: log-likelihood of continuations and multiple-choice picks, as lm-eval scores;
//! - [`estimate`]: memory for full fine-tuning, LoRA and QLoRA, and this trainer's step memory.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dist;
pub mod estimate;
pub mod grads;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod optim;
pub mod rng;
pub mod score;
pub mod train;

pub use candle_core::{DType, Device};
pub use config::{ModelConfig, TrainConfig};
pub use model::Model;
pub use train::{StepProgress, Summary, Trainer};

use std::path::PathBuf;

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad configuration.
    #[error("config: {0}")]
    Config(String),
    /// An I/O failure on a file.
    #[error("{path}: {err}", path = .0.display(), err = .1)]
    Io(PathBuf, #[source] std::io::Error),
    /// Weights that do not fit the model or cannot be read.
    #[error("weights: {0}")]
    Weights(String),
    /// Data that cannot be trained on.
    #[error("data: {0}")]
    Data(String),
    /// A shard error.
    #[error(transparent)]
    Shards(#[from] sluice_shards::Error),
    /// A tensor error.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// Data parallel: a link between ranks failed.
    #[error("data parallel: {0}")]
    Parallel(String),
    /// The run kept spiking past its rollback budget.
    #[error("diverged: {0}")]
    Diverged(String),
    /// [`Trainer::stop_when`]'s flag was set in the middle of a step: the step is dropped
    /// (the last checkpoint stands).
    #[error("stopped in the middle of a step")]
    Interrupted,
}

/// The trainer's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
