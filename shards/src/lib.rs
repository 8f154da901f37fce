//! Tokenized shards: sluice's native memory-mappable format (tokens, loss mask, sample offsets,
//! manifest) and Megatron-LM's `.bin/.idx`. Written by the pipeline's tokenize stage and read by
//! the trainer; deliberately free of polars and tokio so the trainer builds light.
//!
//! The formats arrive with the shards issue; the crate exists now so that the workspace has its
//! final shape and the dependency edge trainer → shards (never → pipeline) is fixed from the start.
