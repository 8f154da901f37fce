//! Training behaviour on tiny generated shards: gradients reach every parameter and ignore
//! masked targets, a tiny model overfits, resume is exact, a planted spike is rolled back, HF
//! checkpoints round-trip, LoRA trains adapters only.
#![allow(clippy::disallowed_methods)] // tests write their fixtures directly

use candle_core::{DType, Device, Tensor};
use sluice_shards::{native::write_shard, Manifest, ShardBuilder, ShardEntry, SplitInfo};
use sluice_shards::{TokenDtype, TokenizerInfo};
use sluice_trainer::data::{Batch, Cursor, Loader};
use sluice_trainer::model::{masked_nll_sum, Model};
use sluice_trainer::rng::Rng;
use sluice_trainer::{ModelConfig, TrainConfig, Trainer};
use std::collections::BTreeMap;
use std::path::Path;

const VOCAB: usize = 32;

/// One sample: tokens and mask.
type Sample = (Vec<u32>, Vec<u8>);

fn tiny_config(model_type: &str, tied: bool) -> String {
    serde_json::json!({
        "model_type": model_type,
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
    })
    .to_string()
}

/// An SFT-like sample: a masked prompt `1 a b c 2` and a trained answer `c b a 3`.
fn reversal(a: u32, b: u32, c: u32) -> Sample {
    (
        vec![1, a, b, c, 2, c, b, a, 3],
        vec![0, 0, 0, 0, 0, 1, 1, 1, 1],
    )
}

/// Write shards: `splits[name] = shards`, each shard a list of sequences, each sequence a list
/// of packed samples.
fn write_shards(dir: &Path, splits: &[(&str, Vec<Vec<Vec<Sample>>>)]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut infos = BTreeMap::new();
    for (split, shards) in splits {
        let mut info = SplitInfo::default();
        for (i, shard) in shards.iter().enumerate() {
            let mut b = ShardBuilder::new(TokenDtype::U16);
            for seq in shard {
                b.end_sequence();
                for (t, m) in seq {
                    b.push_sample(t, m).expect("push");
                }
                b.end_sequence();
            }
            let file = format!("{split}-{i:05}.bin");
            let stats = write_shard(&mut b, &dir.join(&file)).expect("write");
            info.samples += stats.samples;
            info.sequences += stats.sequences;
            info.tokens += stats.tokens;
            info.trained_tokens += stats.trained_tokens;
            info.shards.push(ShardEntry { file, stats });
        }
        infos.insert(split.to_string(), info);
    }
    Manifest {
        format: "sluice-shards".into(),
        version: 1,
        tokenizer: TokenizerInfo {
            sha256: "test".into(),
            vocab_size: VOCAB as u64,
            eos_id: Some(3),
            source: None,
        },
        template: "chatml".into(),
        dtype: TokenDtype::U16,
        seq_len: Some(32),
        seed: 11,
        splits: infos,
    }
    .save(dir)
    .expect("manifest");
}

/// Eight reversal tasks, one per sequence, spread over `shards` shards.
fn reversal_shards(shards: usize) -> Vec<Vec<Vec<Sample>>> {
    let tasks: Vec<Sample> = (0..8)
        .map(|k| reversal(4 + k, 12 + (k * 3) % 8, 20 + (k * 5) % 8))
        .collect();
    let mut out = vec![Vec::new(); shards];
    for (i, t) in tasks.into_iter().enumerate() {
        out[i % shards].push(vec![t]);
    }
    out
}

fn write_config(dir: &Path, body: &str) -> TrainConfig {
    let path = dir.join("train.toml");
    std::fs::write(&path, body).expect("write config");
    TrainConfig::load(&path).expect("config")
}

fn base_toml(steps: u64, extra_train: &str) -> String {
    format!(
        r#"
output = "out"
[model]
config = "config.json"
[data]
shards = "shards"
seq_len = 32
batch_size = 2
[optim]
lr = 0.01
warmup_steps = 2
weight_decay = 0.01
[train]
steps = {steps}
seed = 5
device = "cpu"
{extra_train}
"#
    )
}

fn setup(dir: &Path, shards: usize) {
    std::fs::write(dir.join("config.json"), tiny_config("llama", false)).expect("config");
    write_shards(
        &dir.join("shards"),
        &[
            ("train", reversal_shards(shards)),
            ("valid", vec![vec![vec![reversal(5, 13, 21)]]]),
        ],
    );
}

fn tiny_model(model_type: &str, tied: bool, seed: u64) -> Model {
    let cfg = ModelConfig::from_json(&tiny_config(model_type, tied), "test").expect("config");
    Model::from_scratch(cfg, 0.2, &mut Rng::new(seed), &Device::Cpu, DType::F32, 64).expect("model")
}

fn packed_batch() -> Batch {
    let seqs = [
        sluice_shards::Sequence {
            tokens: vec![1, 4, 5, 2, 5, 4, 3, 1, 6, 7, 2, 7, 6, 3],
            mask: vec![0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1],
            sample_starts: vec![0, 7],
        },
        sluice_shards::Sequence {
            tokens: vec![1, 8, 9, 2, 9, 8, 3],
            mask: vec![0, 0, 0, 0, 1, 1, 1],
            sample_starts: vec![0],
        },
    ];
    Batch::new(&seqs, 32, VOCAB).expect("batch")
}

fn loss_and_grads(model: &Model, b: &Batch) -> (f32, BTreeMap<String, Vec<f32>>) {
    let logits = model.forward(b, None).expect("forward");
    let n = b.rows * b.len;
    let targets = Tensor::from_slice(&b.targets, n, &Device::Cpu).expect("t");
    let mask = Tensor::from_slice(&b.loss_mask, n, &Device::Cpu).expect("m");
    let loss = masked_nll_sum(&logits, &targets, &mask).expect("loss");
    let grads = loss.backward().expect("backward");
    let g = model
        .trainable()
        .iter()
        .map(|(k, v)| {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{k} got no gradient"));
            (
                k.clone(),
                g.flatten_all().expect("f").to_vec1::<f32>().expect("v"),
            )
        })
        .collect();
    (loss.to_scalar::<f32>().expect("scalar"), g)
}

#[test]
fn every_parameter_gets_a_nonzero_gradient() {
    for (kind, tied) in [("llama", false), ("qwen2", true)] {
        let model = tiny_model(kind, tied, 1);
        let (_, grads) = loss_and_grads(&model, &packed_batch());
        assert_eq!(grads.len(), model.trainable().len());
        if kind == "qwen2" {
            assert!(grads.contains_key("model.layers.0.self_attn.q_proj.bias"));
            assert!(!grads.contains_key("lm_head.weight"), "tied");
        } else {
            assert!(grads.contains_key("lm_head.weight"));
        }
        for (name, g) in grads {
            let norm: f32 = g.iter().map(|x| x * x).sum();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{kind}: {name} has gradient norm {norm}"
            );
        }
    }
}

#[test]
fn masked_targets_change_neither_loss_nor_gradients() {
    let model = tiny_model("llama", false, 2);
    let b = packed_batch();
    let (loss, grads) = loss_and_grads(&model, &b);
    let mut changed = b.clone();
    let mut n = 0;
    for i in 0..changed.targets.len() {
        if changed.loss_mask[i] == 0.0 {
            changed.targets[i] = (changed.targets[i] + 7) % VOCAB as u32;
            n += 1;
        }
    }
    assert!(n > 5, "the batch has masked positions, padding included");
    let (loss2, grads2) = loss_and_grads(&model, &changed);
    assert_eq!(loss, loss2);
    assert_eq!(grads, grads2);
    // And a trained target does change them: the test can fail.
    let mut trained = b.clone();
    let at = trained
        .loss_mask
        .iter()
        .position(|&m| m == 1.0)
        .expect("a trained position");
    trained.targets[at] = (trained.targets[at] + 7) % VOCAB as u32;
    assert_ne!(loss_and_grads(&model, &trained).0, loss);
}

#[test]
fn packed_samples_do_not_attend_across_their_boundary() {
    // The second sample of a packed sequence must give the same logits as when alone.
    let model = tiny_model("llama", false, 3);
    let packed = Batch::new(
        &[sluice_shards::Sequence {
            tokens: vec![1, 4, 5, 2, 5, 4, 3, 1, 6, 7, 2],
            mask: vec![1; 11],
            sample_starts: vec![0, 7],
        }],
        32,
        VOCAB,
    )
    .expect("batch");
    let alone = Batch::new(
        &[sluice_shards::Sequence {
            tokens: vec![1, 6, 7, 2],
            mask: vec![1; 4],
            sample_starts: vec![0],
        }],
        32,
        VOCAB,
    )
    .expect("batch");
    let a = model
        .forward(&packed, None)
        .expect("f")
        .narrow(0, 7, 3)
        .expect("n");
    let b = model.forward(&alone, None).expect("f");
    let diff = (a - b)
        .expect("sub")
        .abs()
        .expect("abs")
        .max_all()
        .expect("max")
        .to_scalar::<f32>()
        .expect("s");
    assert!(diff < 1e-5, "logits differ by {diff}");
}

#[test]
fn a_tiny_model_overfits_a_tiny_shard() {
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path(), 2);
    let cfg = write_config(dir.path(), &base_toml(60, "eval_every = 20"));
    let summary = Trainer::new(cfg, false)
        .expect("trainer")
        .run()
        .expect("run");
    let first = summary.losses[0];
    let last = summary.losses[summary.losses.len() - 1];
    assert_eq!(summary.losses.len(), 60);
    assert!(
        last < first / 2.0,
        "loss {first:.3} -> {last:.3} did not fall by more than half"
    );
    assert!(summary.valid_loss.is_some());
    let metrics = std::fs::read_to_string(dir.path().join("out/metrics.jsonl")).expect("metrics");
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let steps = lines.iter().filter(|l| l.get("loss").is_some()).count();
    assert_eq!(steps, 60);
    for key in ["step", "loss", "lr", "grad_norm", "tokens_per_s"] {
        assert!(lines[0].get(key).is_some(), "metrics lack {key}");
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.get("valid_loss").is_some())
            .count(),
        3
    );
    assert!(dir.path().join("out/final/model.safetensors").is_file());
}

#[test]
fn twenty_steps_equal_ten_then_resume_then_ten() {
    let straight = tempfile::tempdir().expect("tempdir");
    setup(straight.path(), 3);
    let body = base_toml(20, "checkpoint_every = 10\neval_every = 5");
    let a = Trainer::new(write_config(straight.path(), &body), false)
        .expect("trainer")
        .run()
        .expect("run");

    let resumed = tempfile::tempdir().expect("tempdir");
    setup(resumed.path(), 3);
    let cfg = write_config(resumed.path(), &body);
    // Interrupted after step 13: steps 11–13 are lost with the process. (`run_until` leaves a
    // checkpoint at its stop; a crash would not have written it.)
    let first = Trainer::new(cfg.clone(), false)
        .expect("trainer")
        .run_until(13)
        .expect("run");
    let checkpoints = resumed.path().join("out/checkpoints");
    std::fs::remove_dir_all(checkpoints.join(sluice_trainer::checkpoint::checkpoint_name(13)))
        .expect("the stop's checkpoint");
    std::fs::write(
        checkpoints.join("latest"),
        sluice_trainer::checkpoint::checkpoint_name(10),
    )
    .expect("latest");
    assert!(
        Trainer::new(cfg.clone(), false).is_err(),
        "a fresh run refuses an output with checkpoints"
    );
    let second = Trainer::new(cfg, true).expect("resume").run().expect("run");
    let mut b = first.losses[..10].to_vec();
    b.extend(&second.losses);
    assert_eq!(a.losses.len(), 20);
    assert_eq!(b.len(), 20);
    for (i, (x, y)) in a.losses.iter().zip(&b).enumerate() {
        assert!((x - y).abs() < 1e-6, "step {}: {x} vs {y}", i + 1);
    }
    assert_eq!(a.valid_loss, second.valid_loss);
    let wa = std::fs::read(straight.path().join("out/final/model.safetensors")).expect("a");
    let wb = std::fs::read(resumed.path().join("out/final/model.safetensors")).expect("b");
    assert!(wa == wb, "final weights are byte-identical");
    let metrics = std::fs::read_to_string(resumed.path().join("out/metrics.jsonl")).expect("m");
    let steps: Vec<u64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("loss").is_some())
        .filter_map(|v| v["step"].as_u64())
        .collect();
    assert_eq!(
        steps,
        (1..=20).collect::<Vec<_>>(),
        "the lost steps are not logged twice"
    );
}

/// Counting sequences (the next token is always the previous plus one, which the model learns
/// within a few steps) with, at sequence 37, noise whose every token is trained.
fn spike_fixture(dir: &Path, spike_factor: f64) -> TrainConfig {
    std::fs::write(dir.join("config.json"), tiny_config("llama", false)).expect("c");
    let mut seqs: Vec<Vec<Sample>> = (0..60u32)
        .map(|i| {
            vec![(
                (0..16).map(|k| (i * 5 + k) % VOCAB as u32).collect(),
                vec![1; 16],
            )]
        })
        .collect();
    let mut r = Rng::new(99);
    let noise: Vec<u32> = (0..24)
        .map(|_| (r.next_u64() % VOCAB as u64) as u32)
        .collect();
    seqs[37] = vec![(noise, vec![1; 24])];
    write_shards(&dir.join("shards"), &[("train", vec![seqs])]);
    let body = base_toml(
        45,
        &format!("checkpoint_every = 4\nspike_loss_factor = {spike_factor}\nspike_window = 5"),
    )
    .replace("batch_size = 2", "batch_size = 1");
    write_config(dir, &body)
}

#[test]
fn a_planted_spike_is_rolled_back_and_its_data_skipped() {
    // Control: without detection, step 38 (which reads sequence 37) is a spike.
    let control = tempfile::tempdir().expect("tempdir");
    let plain = Trainer::new(spike_fixture(control.path(), 0.0), false)
        .expect("trainer")
        .run()
        .expect("run");
    assert!(plain.rollbacks.is_empty());
    let recent = plain.losses[32..37].iter().sum::<f64>() / 5.0;
    assert!(
        plain.losses[37] > 3.0 * recent,
        "the planted noise is a spike: {} against {recent}",
        plain.losses[37]
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let summary = Trainer::new(spike_fixture(dir.path(), 3.0), false)
        .expect("trainer")
        .run()
        .expect("run");
    assert_eq!(summary.rollbacks.len(), 1, "{:?}", summary.rollbacks);
    let rb = &summary.rollbacks[0];
    assert_eq!(rb.at_step, 38, "sequence 37 is read by step 38");
    assert_eq!(rb.to_step, 36, "the last checkpoint");
    assert_eq!(
        rb.skipped_from,
        Cursor {
            epoch: 0,
            shard: 0,
            sequence: 36
        }
    );
    assert_eq!(
        rb.skipped_to,
        Cursor {
            epoch: 0,
            shard: 0,
            sequence: 38
        }
    );
    assert_eq!(rb.skipped_sequences, 2);
    assert!(rb.reason.starts_with("loss"), "{}", rb.reason);
    assert_eq!(summary.steps, 45);
    // Steps 37 and 38 were run, rolled back past, and 37..45 run again on later data.
    assert_eq!(summary.losses.len(), 37 + 9);
    assert_eq!(
        summary.losses[..36],
        plain.losses[..36],
        "identical until the checkpoint"
    );
    assert!(summary.losses[36..].iter().all(|&l| l < 3.0 * recent));
    let metrics = std::fs::read_to_string(dir.path().join("out/metrics.jsonl")).expect("m");
    assert!(metrics.contains("\"event\":\"rollback\""));
    let state =
        std::fs::read_to_string(dir.path().join("out/checkpoints/step-00000044/state.json"))
            .expect("state");
    assert!(
        state.contains("\"skipped_sequences\": 2"),
        "the rollback is recorded in checkpoints"
    );
}

fn write_hf_checkpoint(dir: &Path, model_type: &str, tied: bool) -> Vec<(String, Vec<usize>)> {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("config.json"), tiny_config(model_type, tied)).expect("config");
    let cfg = ModelConfig::from_json(&tiny_config(model_type, tied), "t").expect("cfg");
    let mut r = Rng::new(4);
    let mut tensors = Vec::new();
    for (name, shape) in sluice_trainer::model::parameter_shapes(&cfg) {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (r.normal() * 0.1) as f32).collect();
        let t = Tensor::from_vec(v, shape.as_slice(), &Device::Cpu)
            .expect("t")
            .to_dtype(DType::BF16)
            .expect("bf16");
        tensors.push((name, t));
    }
    // A buffer some exports carry: ignored on load.
    tensors.push((
        "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        Tensor::zeros(4, DType::F32, &Device::Cpu).expect("z"),
    ));
    safetensors::serialize_to_file(
        tensors.iter().map(|(k, t)| (k.as_str(), t)),
        Some([("format".to_string(), "pt".to_string())].into()),
        &dir.join("model.safetensors"),
    )
    .expect("write");
    sluice_trainer::model::parameter_shapes(&cfg)
}

/// Name, shape and dtype of each tensor of a file.
type Listing = Vec<(String, Vec<usize>, String)>;

fn names_shapes_dtypes(path: &Path) -> (Listing, Option<String>) {
    let bytes = std::fs::read(path).expect("read");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("meta");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.shape().to_vec(), format!("{:?}", v.dtype())))
        .collect();
    out.sort();
    let format = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("format").cloned());
    (out, format)
}

#[test]
fn an_hf_checkpoint_loads_trains_and_saves_back_with_the_same_names_and_shapes() {
    for (kind, tied) in [("llama", false), ("qwen2", true)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let hf = dir.path().join("hf");
        let expected = write_hf_checkpoint(&hf, kind, tied);
        setup(dir.path(), 1);
        let body = base_toml(1, "").replace("config = \"config.json\"", "weights = \"hf\"");
        let summary = Trainer::new(write_config(dir.path(), &body), false)
            .expect("trainer")
            .run()
            .expect("run");
        assert_eq!(summary.steps, 1);
        let (saved, format) = names_shapes_dtypes(&summary.final_dir.join("model.safetensors"));
        let mut want: Vec<_> = expected
            .into_iter()
            .map(|(k, s)| (k, s, "BF16".to_string()))
            .collect();
        want.sort();
        assert_eq!(saved, want, "{kind}: same names, shapes and dtype");
        assert_eq!(format.as_deref(), Some("pt"));
        let back = ModelConfig::load(&summary.final_dir).expect("config");
        assert_eq!(back.tie_word_embeddings, tied);
        assert_eq!(back.attention_bias, kind == "qwen2");
        assert_eq!(
            back.raw.get("torch_dtype"),
            Some(&serde_json::json!("bfloat16"))
        );
        // The saved directory loads again and differs from the original: a step was taken.
        let reloaded =
            Model::from_pretrained(&summary.final_dir, None, &Device::Cpu, DType::F32, 32)
                .expect("reload");
        let orig = Model::from_pretrained(&hf, None, &Device::Cpu, DType::F32, 32).expect("orig");
        let w = |m: &Model| {
            m.trainable()["model.layers.0.mlp.up_proj.weight"]
                .as_tensor()
                .flatten_all()
                .expect("f")
                .to_vec1::<f32>()
                .expect("v")
        };
        assert_ne!(w(&reloaded), w(&orig));
    }
}

#[test]
fn a_checkpoint_with_a_missing_tensor_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_hf_checkpoint(dir.path(), "llama", true);
    // Claim untied embeddings: lm_head.weight is then missing.
    std::fs::write(dir.path().join("config.json"), tiny_config("llama", false)).expect("c");
    let err = Model::from_pretrained(dir.path(), None, &Device::Cpu, DType::F32, 32)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("lm_head.weight"), "{err}");
}

#[test]
fn lora_trains_adapters_only_and_merges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hf = dir.path().join("hf");
    write_hf_checkpoint(&hf, "llama", false);
    setup(dir.path(), 1);
    let body = base_toml(30, "save_dtype = \"f32\"")
        .replace("config = \"config.json\"", "weights = \"hf\"")
        + "[lora]\nrank = 4\nalpha = 8.0\ndropout = 0.1\ntargets = [\"q_proj\", \"v_proj\", \"down_proj\"]\n";
    let mut t = Trainer::new(write_config(dir.path(), &body), false).expect("trainer");
    let names: Vec<&String> = t.model().trainable().keys().collect();
    assert_eq!(
        names.len(),
        2 * 3 * 2,
        "A and B on 3 projections of 2 layers"
    );
    assert!(names.iter().all(|n| n.contains(".lora_")));
    let summary = t.run().expect("run");
    assert!(summary.losses[29] < summary.losses[0]);
    let orig = Model::from_pretrained(&hf, None, &Device::Cpu, DType::F32, 32).expect("orig");
    let merged = Model::from_pretrained(&summary.final_dir, None, &Device::Cpu, DType::F32, 32)
        .expect("merged");
    let get = |m: &Model, n: &str| {
        m.trainable()[n]
            .as_tensor()
            .flatten_all()
            .expect("f")
            .to_vec1::<f32>()
            .expect("v")
    };
    let bf = |v: Vec<f32>| -> Vec<f32> {
        // The original was stored in bf16; compare at that precision.
        Tensor::new(v.as_slice(), &Device::Cpu)
            .expect("t")
            .to_dtype(DType::BF16)
            .expect("bf")
            .to_dtype(DType::F32)
            .expect("f")
            .to_vec1()
            .expect("v")
    };
    for untouched in [
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
        "model.embed_tokens.weight",
    ] {
        assert_eq!(
            bf(get(&merged, untouched)),
            get(&orig, untouched),
            "{untouched}"
        );
    }
    assert_ne!(
        get(&merged, "model.layers.0.self_attn.q_proj.weight"),
        get(&orig, "model.layers.0.self_attn.q_proj.weight"),
        "adapters merged into q_proj"
    );
    let adapter = summary.final_dir.join("adapter/adapter_model.safetensors");
    let (tensors, _) = names_shapes_dtypes(&adapter);
    assert!(tensors.iter().any(|(n, s, _)| n
        == "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"
        && s == &vec![4, 64]));
    assert!(summary
        .final_dir
        .join("adapter/adapter_config.json")
        .is_file());
}

#[test]
fn ranks_read_disjoint_shards_and_epochs_reshuffle() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_shards(&dir.path().join("s"), &[("train", reversal_shards(4))]);
    let first_tokens = |rank: usize, world: usize, epoch: u64| -> Vec<Vec<u32>> {
        let mut l = Loader::new(
            &dir.path().join("s"),
            "train",
            rank,
            world,
            Cursor {
                epoch,
                shard: 0,
                sequence: 0,
            },
        )
        .expect("loader");
        let mut out = Vec::new();
        while l.cursor().epoch == epoch {
            out.push(l.next_sequence().expect("seq").tokens);
        }
        out.pop();
        out
    };
    let r0 = first_tokens(0, 2, 0);
    let r1 = first_tokens(1, 2, 0);
    assert_eq!(r0.len() + r1.len(), 8);
    assert!(r0.iter().all(|s| !r1.contains(s)));
    let all0 = first_tokens(0, 1, 0);
    let all1 = first_tokens(0, 1, 1);
    assert_ne!(all0, all1, "shard order differs between epochs");
    let mut a = all0.clone();
    let mut b = all1.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "same data every epoch");
    assert!(Loader::new(&dir.path().join("s"), "train", 4, 5, Cursor::default()).is_err());
}

/// The largest relative error between each named parameter's analytic gradient (at its
/// largest entry) and a central finite difference of the loss; fails above 5%.
fn assert_gradients_match_finite_differences(model: &Model, names: &[&str]) -> f64 {
    let b = packed_batch();
    let (_, grads) = loss_and_grads(model, &b);
    let loss_now = |m: &Model| -> f64 {
        let logits = m.forward(&b, None).expect("forward");
        let n = b.rows * b.len;
        let t = Tensor::from_slice(&b.targets, n, &Device::Cpu).expect("t");
        let k = Tensor::from_slice(&b.loss_mask, n, &Device::Cpu).expect("m");
        masked_nll_sum(&logits, &t, &k)
            .expect("loss")
            .to_scalar::<f32>()
            .expect("s") as f64
    };
    let mut worst = 0f64;
    for &name in names {
        let var = &model.trainable()[name];
        let orig = var
            .as_tensor()
            .flatten_all()
            .expect("f")
            .to_vec1::<f32>()
            .expect("v");
        // The largest-gradient entry of the tensor: a meaningful finite difference.
        let g = &grads[name];
        let i = (0..g.len())
            .max_by(|&x, &y| g[x].abs().total_cmp(&g[y].abs()))
            .expect("entries");
        let h = 1e-2f32;
        let at = |delta: f32| {
            let mut v = orig.clone();
            v[i] += delta;
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).expect("t"))
                .expect("set");
            loss_now(model)
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h as f64);
        at(0.0);
        let rel = (numeric - g[i] as f64).abs() / (g[i].abs() as f64).max(1e-3);
        worst = worst.max(rel);
        assert!(
            rel < 0.05,
            "{name}[{i}]: analytic {} numeric {numeric}",
            g[i]
        );
    }
    worst
}

#[test]
fn gradients_match_finite_differences() {
    let model = tiny_model("qwen2", false, 7);
    let worst = assert_gradients_match_finite_differences(
        &model,
        &[
            "model.embed_tokens.weight",
            "model.layers.0.input_layernorm.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.self_attn.k_proj.bias",
            "model.layers.1.self_attn.v_proj.weight",
            "model.layers.1.self_attn.o_proj.weight",
            "model.layers.0.mlp.gate_proj.weight",
            "model.layers.1.mlp.down_proj.weight",
            "model.norm.weight",
            "lm_head.weight",
        ],
    );
    eprintln!("worst relative gradient error {worst:.2e}");
}

/// LoRA's gradients (through frozen base weights, whose products skip the weight gradient on
/// the CPU) match finite differences, in the first layer's adapters too, whose gradient crosses
/// every frozen layer above and the frozen LM head.
#[test]
fn lora_gradients_match_finite_differences() {
    let mut model = tiny_model("llama", false, 3);
    let lora = sluice_trainer::config::LoraSection {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
    };
    model
        .attach_lora(&lora, &mut Rng::new(4))
        .expect("adapters");
    for (name, var) in model.trainable() {
        if name.contains("lora_B") {
            let v: Vec<f32> = (0..var.elem_count())
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.05)
                .collect();
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).expect("t"))
                .expect("set");
        }
    }
    assert_gradients_match_finite_differences(
        &model,
        &[
            "model.layers.0.self_attn.q_proj.lora_A.weight",
            "model.layers.0.self_attn.v_proj.lora_B.weight",
            "model.layers.0.mlp.down_proj.lora_B.weight",
            "model.layers.1.mlp.down_proj.lora_A.weight",
        ],
    );
}

/// Micro-batches computed at once on threads of their own sum to the same gradients, in the
/// same order, as one after another: the same losses to the bit.
#[test]
fn micro_batches_on_their_own_threads_train_the_same_run() {
    let losses = |threads: usize| {
        let dir = tempfile::tempdir().expect("tempdir");
        setup(dir.path(), 1);
        let body = base_toml(6, &format!("accum_threads = {threads}"))
            .replace("batch_size = 2", "batch_size = 1\ngrad_accum = 3");
        let mut t = Trainer::new(write_config(dir.path(), &body), false).expect("trainer");
        t.run().expect("run").losses
    };
    let (one, three) = (losses(1), losses(3));
    assert_eq!(one.len(), 6);
    assert_eq!(one, three);
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path(), 1);
    let path = dir.path().join("train.toml");
    std::fs::write(&path, base_toml(6, "accum_threads = 0")).expect("write");
    let err = match TrainConfig::load(&path) {
        Ok(_) => panic!("accum_threads = 0 was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("train.accum_threads"), "{err}");
    // More threads than micro-batches is a mistake, not something to clamp silently.
    std::fs::write(
        &path,
        base_toml(6, "accum_threads = 3")
            .replace("batch_size = 2", "batch_size = 2\ngrad_accum = 2"),
    )
    .expect("write");
    let err = match TrainConfig::load(&path).and_then(|c| Trainer::new(c, false)) {
        Ok(_) => panic!("accum_threads above grad_accum was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("train.accum_threads 3 exceeds data.grad_accum 2"),
        "{err}"
    );
    // A weights folder that is not there is named by its key.
    let body = base_toml(6, "").replace("config = \"config.json\"", "weights = \"nope\"");
    std::fs::write(&path, body).expect("write");
    let err = match TrainConfig::load(&path).and_then(|c| Trainer::new(c, false)) {
        Ok(_) => panic!("a missing weights folder was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("model.weights") && err.contains("nope"),
        "{err}"
    );
}

/// Stopping early (`--until`) leaves a checkpoint at the stop, so resuming recomputes nothing.
#[test]
fn a_run_stopped_early_resumes_from_where_it_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path(), 1);
    let cfg = write_config(dir.path(), &base_toml(12, "checkpoint_every = 10"));
    let mut t = Trainer::new(cfg.clone(), false).expect("trainer");
    t.run_until(5).expect("five steps");
    drop(t);
    let t = Trainer::new(cfg, true).expect("resume");
    assert_eq!(
        t.state().step,
        5,
        "resumed from the stop, not from an earlier checkpoint"
    );
}

/// Activation checkpointing recomputes each layer in the backward pass: the same loss and the
/// same gradients (to float rounding) for full training, tied embeddings, grouped-query
/// attention and LoRA with dropout (the recomputation must draw the same dropout masks).
#[test]
fn activation_checkpointing_gives_the_same_loss_and_gradients() {
    let b = packed_batch();
    let n = b.rows * b.len;
    let targets = Tensor::from_slice(&b.targets, n, &Device::Cpu).expect("t");
    let mask = Tensor::from_slice(&b.loss_mask, n, &Device::Cpu).expect("m");
    let lora = sluice_trainer::config::LoraSection {
        rank: 4,
        alpha: 8.0,
        dropout: 0.3,
        targets: vec!["q_proj".into(), "o_proj".into(), "up_proj".into()],
    };
    for (kind, tied, adapters) in [
        ("llama", false, false),
        ("qwen2", true, false),
        ("llama", false, true),
    ] {
        let mut model = tiny_model(kind, tied, 11);
        if adapters {
            model
                .attach_lora(&lora, &mut Rng::new(5))
                .expect("adapters");
            // B starts at zero; give it values so the adapters' paths carry gradient.
            for (name, var) in model.trainable() {
                if name.contains("lora_B") {
                    let v: Vec<f32> = (0..var.elem_count())
                        .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01)
                        .collect();
                    var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).expect("t"))
                        .expect("set");
                }
            }
        }
        let run = |recompute: bool| {
            let mut rng = Rng::new(99);
            let (loss, grads) = model
                .loss_and_grads(&b, &targets, &mask, 3.0, Some(&mut rng), recompute)
                .expect("loss and grads");
            (loss, grads, rng)
        };
        let (loss, grads, rng) = run(false);
        let (loss_r, grads_r, rng_r) = run(true);
        assert_eq!(loss, loss_r, "{kind}: the forward pass is the same");
        assert_eq!(rng, rng_r, "{kind}: the generator ends where it would");
        assert_eq!(grads.len(), model.trainable().len(), "{kind}");
        assert_eq!(
            grads.keys().collect::<Vec<_>>(),
            grads_r.keys().collect::<Vec<_>>()
        );
        for (name, g) in &grads {
            let a = g.flatten_all().expect("f").to_vec1::<f32>().expect("v");
            let r = grads_r[name]
                .flatten_all()
                .expect("f")
                .to_vec1::<f32>()
                .expect("v");
            let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(scale > 0.0, "{kind}: {name} has no gradient");
            let worst = a
                .iter()
                .zip(&r)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                worst <= 1e-5 * scale,
                "{kind}: {name} differs by {worst} (scale {scale})"
            );
        }
    }
}

/// The option end to end: ten steps with checkpointing follow ten steps without.
#[test]
fn a_run_with_activation_checkpointing_follows_one_without() {
    let losses = |checkpointing: bool| {
        let dir = tempfile::tempdir().expect("tempdir");
        setup(dir.path(), 1);
        let extra = format!("activation_checkpointing = {checkpointing}");
        let mut t =
            Trainer::new(write_config(dir.path(), &base_toml(10, &extra)), false).expect("trainer");
        t.run().expect("run").losses
    };
    let (plain, recomputed) = (losses(false), losses(true));
    assert_eq!(plain.len(), 10);
    for (a, b) in plain.iter().zip(&recomputed) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "{plain:?} vs {recomputed:?}"
        );
    }
}

/// Data parallel: two ranks (threads here, processes in use: they only share a TCP port), each
/// reading its shard, sum their gradients every step and end with the weights of one rank that
/// read both shards as one batch.
#[test]
fn two_ranks_train_the_same_weights_as_one_rank_with_the_combined_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.json"), tiny_config("llama", false)).expect("config");
    write_shards(
        &dir.path().join("shards"),
        &[
            ("train", reversal_shards(2)),
            (
                "valid",
                vec![
                    vec![vec![reversal(5, 13, 21)]],
                    vec![vec![reversal(6, 14, 22)]],
                ],
            ),
        ],
    );
    let weights = |t: &Trainer| -> BTreeMap<String, Vec<f32>> {
        t.model()
            .trainable_tensors()
            .into_iter()
            .map(|(k, v)| (k, v.flatten_all().and_then(|v| v.to_vec1()).expect("w")))
            .collect()
    };
    let toml = |batch: usize, output: &str, extra: &str| {
        base_toml(3, &format!("eval_every = 2\n{extra}"))
            .replace("batch_size = 2", &format!("batch_size = {batch}"))
            .replace("output = \"out\"", &format!("output = \"{output}\""))
    };
    // One rank, both shards (8 sequences) per step.
    let path = dir.path().join("one.toml");
    std::fs::write(&path, toml(8, "out-one", "")).expect("write");
    let mut one = Trainer::new(TrainConfig::load(&path).expect("config"), false).expect("trainer");
    let summary = one.run().expect("run");
    let single = weights(&one);
    // Two ranks of 4 sequences each.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            let path = dir.path().join(format!("rank{rank}.toml"));
            let extra = format!("rank = {rank}\nworld = 2\nmaster = \"127.0.0.1:{port}\"");
            std::fs::write(&path, toml(4, "out-dp", &extra)).expect("write");
            std::thread::spawn(move || {
                let cfg = TrainConfig::load(&path).expect("config");
                let mut t = Trainer::new(cfg, false).expect("trainer");
                let s = t.run().expect("run");
                (weights(&t), s)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("rank"))
        .collect::<Vec<_>>();
    // Both ranks hold the same bytes.
    assert_eq!(ranks[0].0, ranks[1].0, "the ranks' weights differ");
    for (name, w) in &single {
        let d = &ranks[0].0[name];
        for (a, b) in w.iter().zip(d) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                "{name}: one rank {a}, two ranks {b}"
            );
        }
    }
    // The same losses (the mean over both ranks' tokens) and validation loss.
    for (a, b) in summary.losses.iter().zip(&ranks[0].1.losses) {
        assert!(
            (a - b).abs() < 1e-5,
            "{:?} vs {:?}",
            summary.losses,
            ranks[0].1.losses
        );
    }
    // Rank 1 keeps its own metrics and checkpoints beside rank 0's.
    assert!(dir.path().join("out-dp/metrics.jsonl").exists());
    assert!(dir.path().join("out-dp/rank-1/metrics.jsonl").exists());
}

/// The CUDA path, where a GPU is present (a `--features cuda` build on a GPU machine): the first
/// losses of a tiny run in f32 on cuda:0 follow the CPU run's. Skipped, saying so, elsewhere.
#[test]
fn the_cuda_path_follows_the_cpu_where_a_gpu_is_present() {
    if candle_core::Device::new_cuda(0).is_err() {
        eprintln!(
            "CUDA test skipped: {} (build with --features cuda on a GPU machine; scripts/build-cuda.sh builds it anywhere)",
            if cfg!(feature = "cuda") {
                "no GPU found"
            } else {
                "this build has no CUDA support"
            }
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path(), 1);
    let losses = |device: &str, output: &str| -> Vec<f64> {
        let toml = base_toml(4, "eval_every = 0\nprecision = \"f32\"")
            .replace("device = \"cpu\"", &format!("device = \"{device}\""))
            .replace("output = \"out\"", &format!("output = \"{output}\""));
        let path = dir.path().join(format!("{output}.toml"));
        std::fs::write(&path, toml).expect("write");
        let mut t =
            Trainer::new(TrainConfig::load(&path).expect("config"), false).expect("trainer");
        t.run().expect("run").losses
    };
    let cpu = losses("cpu", "out-cpu");
    let gpu = losses("cuda:0", "out-gpu");
    for (a, b) in cpu.iter().zip(&gpu) {
        assert!(
            (a - b).abs() < 1e-3 * (1.0 + a.abs()),
            "cpu {cpu:?}, cuda {gpu:?}"
        );
    }
}

/// A stop flag set while a long step runs (a service cancelling it) ends the run within that
/// step, not after it: the step is dropped and the last checkpoint stands.
#[test]
fn a_stop_flag_ends_a_long_step_in_the_middle() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path(), 3);
    let body = base_toml(5, "checkpoint_every = 1")
        .replace("batch_size = 2", "batch_size = 2\ngrad_accum = 100000");
    let mut t = Trainer::new(write_config(dir.path(), &body), false).expect("trainer");
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    t.stop_when(flag.clone());
    let setter = {
        let flag = flag.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            flag.store(true, Ordering::SeqCst);
        })
    };
    let started = std::time::Instant::now();
    let summary = t.run().expect("a stop is not an error");
    setter.join().expect("setter");
    assert_eq!(summary.steps, 0, "the long first step was dropped");
    assert!(
        started.elapsed().as_secs() < 60,
        "stopped within the step ({:?})",
        started.elapsed()
    );
    assert!(
        !dir.path().join("out/final").exists(),
        "an interrupted run saves no final model"
    );
}
