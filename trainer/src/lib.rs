//! The bundled candle trainer: consumes tokenized shards (through `sluice-shards`, never the
//! pipeline crate) and trains SFT and continued-pretraining runs on CPU or CUDA.
//!
//! The trainer arrives with the trainer issue.
