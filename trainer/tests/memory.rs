//! The step-memory estimate against a measurement: a counting global allocator records the
//! peak of live heap bytes while one micro-batch's loss and gradients are computed, with and
//! without activation checkpointing (full fine-tuning). The binary holds this one test
//! so that nothing else allocates while it measures.
#![allow(unsafe_code)] // the counting allocator forwards to the system allocator

use candle_core::{DType, Device, Tensor};
use sluice_trainer::data::Batch;
use sluice_trainer::estimate::{step_memory, StepShape};
use sluice_trainer::model::Model;
use sluice_trainer::rng::Rng;
use sluice_trainer::ModelConfig;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call forwards to `System` with the caller's arguments; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn config(layers: usize, hidden: usize, heads: usize, kv: usize, vocab: usize) -> ModelConfig {
    let json = serde_json::json!({
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": hidden * 3,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
    });
    ModelConfig::from_json(&json.to_string(), "memory test").expect("config")
}

fn batch(rows: usize, len: usize, vocab: usize) -> Batch {
    let mut state = 7u64;
    let seqs: Vec<_> = (0..rows)
        .map(|_| {
            let tokens: Vec<u32> = (0..len + 1)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((state >> 33) % vocab as u64) as u32
                })
                .collect();
            // Two packed samples per row, the answers trained.
            let mask = (0..len + 1).map(|i| u8::from(i % 3 != 0)).collect();
            sluice_shards::Sequence {
                tokens,
                mask,
                sample_starts: vec![0, len.div_ceil(2)],
            }
        })
        .collect();
    Batch::new(&seqs, len, vocab).expect("batch")
}

/// Peak live bytes above what was live before, while `f` runs.
fn measure(f: impl FnOnce()) -> f64 {
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    f();
    (PEAK.load(Ordering::SeqCst) - before) as f64
}

#[test]
fn the_step_memory_estimate_agrees_with_the_measured_peak_within_20_percent() {
    let mut report = Vec::new();
    // Grouped-query attention with a vocabulary-heavy head; full multi-head attention with
    // long sequences; a deep narrow model with a short sequence.
    for (layers, hidden, heads, kv, vocab, rows, len) in [
        (4, 64, 4, 2, 1024, 4, 128),
        (6, 96, 6, 6, 512, 2, 192),
        (8, 128, 4, 1, 2048, 8, 32),
    ] {
        let c = config(layers, hidden, heads, kv, vocab);
        let model = Model::from_scratch(
            c.clone(),
            0.02,
            &mut Rng::new(1),
            &Device::Cpu,
            DType::F32,
            len,
        )
        .expect("model");
        let trainable: usize = model.trainable().values().map(|v| v.elem_count()).sum();
        let b = batch(rows, len, vocab);
        let n = b.rows * b.len;
        let targets = Tensor::from_slice(&b.targets, n, &Device::Cpu).expect("t");
        let mask = Tensor::from_slice(&b.loss_mask, n, &Device::Cpu).expect("m");
        let mut saved = Vec::new();
        for recompute in [false, true] {
            let mut rng = Rng::new(3);
            // A warm-up step: gemm keeps a packing buffer per thread and size after first use,
            // held for the process's life, not per step.
            model
                .loss_and_grads(&b, &targets, &mask, 1.0, Some(&mut rng), recompute)
                .expect("warm-up");
            let measured = measure(|| {
                let (_, grads) = model
                    .loss_and_grads(&b, &targets, &mask, 1.0, Some(&mut rng), recompute)
                    .expect("step");
                assert_eq!(grads.len(), model.trainable().len());
            });
            let shape = StepShape {
                rows: b.rows,
                seq_len: b.len,
                precision_bytes: 4,
                fused: true,
                checkpointing: recompute,
                trainable_params: trainable,
                lora: None,
            };
            let e = step_memory(&c, &shape);
            let ratio = e.total / measured;
            report.push(format!(
                "{layers}x{hidden} heads {heads}/{kv} vocab {vocab} batch {rows}x{len} \
                 checkpointing {recompute}: measured {:.2} MiB, \
                 estimated {:.2} MiB ({e:?}), ratio {ratio:.3}",
                measured / 1048576.0,
                e.total / 1048576.0
            ));
            saved.push(measured);
            assert!(
                (0.8..=1.2).contains(&ratio),
                "estimate off by more than 20%:\n{}",
                report.join("\n")
            );
        }
        assert!(
            saved[1] < 0.6 * saved[0],
            "checkpointing saves memory: {}",
            report.join("\n")
        );
    }
    eprintln!("{}", report.join("\n"));
}
