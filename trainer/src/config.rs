//! The model's HF `config.json` and the trainer's TOML configuration.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The parts of a Hugging Face `config.json` (Llama and Qwen2 families) the model needs. The raw
/// document is kept so that a saved model carries every key it was loaded with.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// `llama`, `qwen2`, … (informational except for Qwen2's default attention bias).
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU hidden layer.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than the query heads).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Llama 3 RoPE frequency scaling, when the checkpoint uses it.
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Whether the output projection shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Biases on the q, k and v projections (Qwen2).
    pub attention_bias: bool,
    /// The document as read, rewritten with the fields above on save.
    pub raw: serde_json::Map<String, serde_json::Value>,
}

/// `rope_scaling` with `rope_type = "llama3"`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Llama3RopeScaling {
    /// Scale factor for low frequencies.
    pub factor: f64,
    /// Lower wavelength bound factor.
    pub low_freq_factor: f64,
    /// Upper wavelength bound factor.
    pub high_freq_factor: f64,
    /// Context length of the original pre-training.
    pub original_max_position_embeddings: f64,
}

impl ModelConfig {
    /// Parse a `config.json` document; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<ModelConfig> {
        let bad = |why: String| Error::Config(format!("{origin}: {why}"));
        let raw: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let num = |key: &str| -> Result<Option<f64>> {
            match raw.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| bad(format!("{key} must be a number, found {v}"))),
            }
        };
        let need = |key: &str| -> Result<usize> {
            match num(key)? {
                Some(v) if v >= 1.0 && v.fract() == 0.0 => Ok(v as usize),
                Some(v) => Err(bad(format!("{key} must be a positive integer, found {v}"))),
                None => Err(bad(format!("{key} is missing"))),
            }
        };
        let model_type = raw
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("llama")
            .to_string();
        if !matches!(model_type.as_str(), "llama" | "qwen2" | "mistral") {
            return Err(bad(format!(
                "model_type {model_type:?} is not supported (llama, qwen2 and mistral are)"
            )));
        }
        if let Some(act) = raw.get("hidden_act").and_then(|v| v.as_str()) {
            if act != "silu" {
                return Err(bad(format!(
                    "hidden_act {act:?}: only silu (SwiGLU) is supported"
                )));
            }
        }
        let hidden_size = need("hidden_size")?;
        let num_attention_heads = need("num_attention_heads")?;
        let num_key_value_heads = match num("num_key_value_heads")? {
            Some(_) => need("num_key_value_heads")?,
            None => num_attention_heads,
        };
        let head_dim = match num("head_dim")? {
            Some(_) => need("head_dim")?,
            None => hidden_size / num_attention_heads,
        };
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(bad(format!(
                "num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads {num_key_value_heads}"
            )));
        }
        if head_dim % 2 != 0 || head_dim == 0 {
            return Err(bad(format!("head_dim {head_dim} must be even")));
        }
        let rope_scaling = match raw.get("rope_scaling") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let kind = v
                    .get("rope_type")
                    .or_else(|| v.get("type"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("");
                match kind {
                    "default" => None,
                    "llama3" => Some(
                        serde_json::from_value::<Llama3RopeScaling>(v.clone())
                            .map_err(|e| bad(format!("rope_scaling: {e}")))?,
                    ),
                    other => {
                        return Err(bad(format!(
                            "rope_scaling type {other:?} is not supported (llama3 is)"
                        )))
                    }
                }
            }
        };
        let flag = |key: &str| raw.get(key).and_then(|v| v.as_bool());
        Ok(ModelConfig {
            vocab_size: need("vocab_size")?,
            hidden_size,
            intermediate_size: need("intermediate_size")?,
            num_hidden_layers: need("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: num("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: num("rope_theta")?.unwrap_or(10_000.0),
            rope_scaling,
            tie_word_embeddings: flag("tie_word_embeddings").unwrap_or(false),
            attention_bias: flag("attention_bias").unwrap_or(model_type == "qwen2"),
            model_type,
            raw,
        })
    }

    /// Read `config.json` from a file or from the directory holding it.
    pub fn load(path: &Path) -> Result<ModelConfig> {
        let file = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|e| Error::Io(file.clone(), e))?;
        ModelConfig::from_json(&text, &file.display().to_string())
    }

    /// The document to save beside the weights.
    pub fn to_json(&self) -> String {
        let mut raw = self.raw.clone();
        let mut set = |k: &str, v: serde_json::Value| {
            raw.insert(k.to_string(), v);
        };
        set("model_type", self.model_type.clone().into());
        set("vocab_size", self.vocab_size.into());
        set("hidden_size", self.hidden_size.into());
        set("intermediate_size", self.intermediate_size.into());
        set("num_hidden_layers", self.num_hidden_layers.into());
        set("num_attention_heads", self.num_attention_heads.into());
        set("num_key_value_heads", self.num_key_value_heads.into());
        set("rms_norm_eps", self.rms_norm_eps.into());
        set("rope_theta", self.rope_theta.into());
        set("tie_word_embeddings", self.tie_word_embeddings.into());
        set("hidden_act", "silu".into());
        if self.model_type == "llama" {
            set("attention_bias", self.attention_bias.into());
        }
        if !raw.contains_key("architectures") {
            let arch = match self.model_type.as_str() {
                "qwen2" => "Qwen2ForCausalLM",
                "mistral" => "MistralForCausalLM",
                _ => "LlamaForCausalLM",
            };
            raw.insert("architectures".into(), serde_json::json!([arch]));
        }
        let mut s = serde_json::to_string_pretty(&raw).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Number of parameters (shared embeddings counted once).
    /// Saturates at `u64::MAX` for configurations no machine holds (a hostile config.json).
    pub fn parameters(&self) -> u64 {
        let f = |x: usize| x as f64;
        let (h, i, v) = (
            f(self.hidden_size),
            f(self.intermediate_size),
            f(self.vocab_size),
        );
        let (q, kv) = (
            f(self.num_attention_heads) * f(self.head_dim),
            f(self.num_key_value_heads) * f(self.head_dim),
        );
        let bias = if self.attention_bias {
            q + 2.0 * kv
        } else {
            0.0
        };
        let layer = h * q + 2.0 * h * kv + q * h + bias + 3.0 * h * i + 2.0 * h;
        let head = if self.tie_word_embeddings { 0.0 } else { v * h };
        let total = v * h + f(self.num_hidden_layers) * layer + h + head;
        // Exact below 2^53 (every real model); beyond, saturated.
        if total >= u64::MAX as f64 {
            u64::MAX
        } else {
            total as u64
        }
    }
}

/// Where the initial weights come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `config.json` (file or directory). Defaults to `<weights>/config.json`.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// A local HF directory of `*.safetensors`; absent: random initialization (std `init_std`).
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// Standard deviation of the random initialization.
    #[serde(default = "default_init_std")]
    pub init_std: f64,
}

fn default_init_std() -> f64 {
    0.02
}

/// Which shards to read and how to batch them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Directory holding the shards' `manifest.json`.
    pub shards: PathBuf,
    /// Split trained on.
    #[serde(default = "default_train_split")]
    pub train_split: String,
    /// Split evaluated on; validation is skipped when the manifest lacks it.
    #[serde(default = "default_valid_split")]
    pub valid_split: String,
    /// Longest sequence fed to the model (longer ones are cut at the end).
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Sequences per micro-batch.
    #[serde(default = "default_one")]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[serde(default = "default_one")]
    pub grad_accum: usize,
}

fn default_train_split() -> String {
    "train".into()
}
fn default_valid_split() -> String {
    "valid".into()
}
fn default_seq_len() -> usize {
    1024
}
fn default_one() -> usize {
    1
}

/// AdamW and the learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Linear warm-up steps.
    #[serde(default)]
    pub warmup_steps: u64,
    /// The cosine decays to this fraction of the peak.
    #[serde(default = "default_min_lr_ratio")]
    pub min_lr_ratio: f64,
    /// Decoupled weight decay (not applied to norms and biases).
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Adam β1.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Adam β2.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Adam ε.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Global gradient-norm clip; 0 disables.
    #[serde(default = "default_clip")]
    pub clip: f64,
}

fn default_lr() -> f64 {
    3e-4
}
fn default_min_lr_ratio() -> f64 {
    0.1
}
fn default_weight_decay() -> f64 {
    0.1
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.95
}
fn default_eps() -> f64 {
    1e-8
}
fn default_clip() -> f64 {
    1.0
}

impl Default for OptimSection {
    fn default() -> Self {
        OptimSection {
            lr: default_lr(),
            warmup_steps: 0,
            min_lr_ratio: default_min_lr_ratio(),
            weight_decay: default_weight_decay(),
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            clip: default_clip(),
        }
    }
}

/// Run length, devices, evaluation, checkpoints and spike handling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Optimizer steps.
    pub steps: u64,
    /// Seed of initialization, dropout and data order.
    #[serde(default)]
    pub seed: u64,
    /// `cpu`, `cuda` / `cuda:N`, or `auto` (CUDA when built with it and present).
    #[serde(default = "default_auto")]
    pub device: String,
    /// Compute precision: `f32`, `bf16`, or `auto` (bf16 on CUDA, f32 on CPU). Master weights
    /// and optimizer moments are always f32.
    #[serde(default = "default_auto")]
    pub precision: String,
    /// This process's rank and the world size (default: `RANK` / `WORLD_SIZE`, else 0 of 1).
    #[serde(default)]
    pub rank: Option<usize>,
    /// See `rank`.
    #[serde(default)]
    pub world: Option<usize>,
    /// Where rank 0 listens for the other ranks, `host:port` (default: `MASTER_ADDR` and
    /// `MASTER_PORT` as torchrun sets them, else 127.0.0.1:29500).
    #[serde(default)]
    pub master: Option<String>,
    /// Validation every this many steps; 0 disables.
    #[serde(default)]
    pub eval_every: u64,
    /// Cap on validation sequences per evaluation; 0 means the whole split.
    #[serde(default)]
    pub eval_sequences: usize,
    /// Stop after this many evaluations without improvement; 0 disables.
    #[serde(default)]
    pub early_stop_patience: u64,
    /// Smallest decrease of the validation loss that counts as an improvement.
    #[serde(default)]
    pub early_stop_min_delta: f64,
    /// A checkpoint every this many steps; 0: only at the end.
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Checkpoints kept on disk (oldest removed first).
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// A step whose loss exceeds this multiple of the recent mean is a spike; 0 disables.
    #[serde(default)]
    pub spike_loss_factor: f64,
    /// Same for the gradient norm; 0 disables.
    #[serde(default)]
    pub spike_grad_factor: f64,
    /// Steps in the recent mean; detection starts once it is full.
    #[serde(default = "default_spike_window")]
    pub spike_window: usize,
    /// Rollbacks allowed before the run fails.
    #[serde(default = "default_max_rollbacks")]
    pub max_rollbacks: usize,
    /// Dtype of the final weights: `auto` (as loaded; f32 from scratch), `f32`, `bf16`, `f16`.
    #[serde(default = "default_auto")]
    pub save_dtype: String,
    /// Activation checkpointing: keep only each layer's input through the forward pass and
    /// recompute the layer during the backward pass (about one more forward pass of compute
    /// for activations about `layers` times smaller).
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// Micro-batches (`data.grad_accum`) computed at once, each on one thread of its own; 1:
    /// one after another, each op using every thread. The gradients are summed in micro-batch
    /// order, so the result is the sequential one's (with LoRA dropout each micro-batch draws
    /// from its own generator, seeded from the run's). The process's other threads stay idle
    /// meanwhile: set RAYON_NUM_THREADS / CANDLE_NUM_THREADS to 1 (`sluice train run` does).
    #[serde(default = "default_accum_threads")]
    pub accum_threads: usize,
}

fn default_accum_threads() -> usize {
    1
}

fn default_auto() -> String {
    "auto".into()
}
fn default_keep() -> usize {
    3
}
fn default_spike_window() -> usize {
    20
}
fn default_max_rollbacks() -> usize {
    5
}

/// Low-rank adapters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    /// Rank r.
    #[serde(default = "default_lora_rank")]
    pub rank: usize,
    /// Scale numerator: adapters are scaled by alpha / r.
    #[serde(default = "default_lora_alpha")]
    pub alpha: f64,
    /// Dropout on the adapter input.
    #[serde(default)]
    pub dropout: f64,
    /// Projections that get adapters (`q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`,
    /// `up_proj`, `down_proj`).
    #[serde(default = "default_lora_targets")]
    pub targets: Vec<String>,
}

fn default_lora_rank() -> usize {
    8
}
fn default_lora_alpha() -> f64 {
    16.0
}
fn default_lora_targets() -> Vec<String> {
    ["q_proj", "k_proj", "v_proj", "o_proj"]
        .map(String::from)
        .to_vec()
}

/// Projections LoRA may target.
pub const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// A training run (`sluice train run train.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Output directory: metrics, checkpoints, final weights.
    pub output: PathBuf,
    /// Model.
    pub model: ModelSection,
    /// Data.
    pub data: DataSection,
    /// Optimizer.
    #[serde(default)]
    pub optim: OptimSection,
    /// Run.
    pub train: TrainSection,
    /// LoRA; absent: full fine-tuning.
    #[serde(default)]
    pub lora: Option<LoraSection>,
}

impl TrainConfig {
    /// Read a TOML file; relative paths are resolved against its directory.
    pub fn load(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io(path.to_path_buf(), e))?;
        let cfg = TrainConfig::parse(&text, path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parse the text of the train file at `path` (which need not exist: relative paths are
    /// resolved against its directory), without [`TrainConfig::validate`], which looks at the
    /// files it names: a service checks where those lie first.
    pub fn parse(text: &str, path: &Path) -> Result<TrainConfig> {
        let mut cfg: TrainConfig =
            toml::from_str(text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut cfg.output);
        fix(&mut cfg.data.shards);
        if let Some(p) = cfg.model.config.as_mut() {
            fix(p);
        }
        if let Some(p) = cfg.model.weights.as_mut() {
            fix(p);
        }
        Ok(cfg)
    }

    /// Check values serde cannot; every problem at once.
    pub fn validate(&self) -> Result<()> {
        let mut errs = Vec::new();
        if self.model.config.is_none() && self.model.weights.is_none() {
            errs.push("model: give `config` (from scratch) or `weights` (a HF directory)".into());
        }
        if let Some(w) = &self.model.weights {
            if !w.is_dir() {
                errs.push(format!(
                    "model.weights: {} is not a directory (a HF model: config.json and *.safetensors)",
                    w.display()
                ));
            }
        }
        if self.data.seq_len < 2 {
            errs.push("data.seq_len must be at least 2".to_string());
        }
        if self.data.batch_size == 0 || self.data.grad_accum == 0 {
            errs.push("data.batch_size and data.grad_accum must be at least 1".to_string());
        }
        if self.train.accum_threads == 0 || self.train.accum_threads > 256 {
            errs.push(format!(
                "train.accum_threads must be between 1 and 256, found {}",
                self.train.accum_threads
            ));
        } else if self.train.accum_threads > self.data.grad_accum {
            errs.push(format!(
                "train.accum_threads {} exceeds data.grad_accum {}: it is how many of the \
                 grad_accum micro-batches are computed at once",
                self.train.accum_threads, self.data.grad_accum
            ));
        }
        if self.train.steps == 0 {
            errs.push("train.steps must be at least 1".to_string());
        }
        if self.optim.lr.is_nan() || self.optim.lr <= 0.0 {
            errs.push(format!(
                "optim.lr must be positive, found {}",
                self.optim.lr
            ));
        }
        if !(0.0..=1.0).contains(&self.optim.min_lr_ratio) {
            errs.push("optim.min_lr_ratio must be within [0, 1]".to_string());
        }
        if !(0.0..1.0).contains(&self.optim.beta1) || !(0.0..1.0).contains(&self.optim.beta2) {
            errs.push("optim.beta1 and optim.beta2 must be within [0, 1)".to_string());
        }
        if !matches!(self.train.precision.as_str(), "auto" | "f32" | "bf16") {
            errs.push(format!(
                "train.precision {:?}: auto, f32 or bf16",
                self.train.precision
            ));
        }
        if !matches!(
            self.train.save_dtype.as_str(),
            "auto" | "f32" | "bf16" | "f16"
        ) {
            errs.push(format!(
                "train.save_dtype {:?}: auto, f32, bf16 or f16",
                self.train.save_dtype
            ));
        }
        if (self.train.spike_loss_factor > 0.0 || self.train.spike_grad_factor > 0.0)
            && self.train.spike_window < 2
        {
            errs.push("train.spike_window must be at least 2".to_string());
        }
        if let Some(l) = &self.lora {
            if l.rank == 0 {
                errs.push("lora.rank must be at least 1".to_string());
            }
            if !(0.0..1.0).contains(&l.dropout) {
                errs.push("lora.dropout must be within [0, 1)".to_string());
            }
            for t in &l.targets {
                if !LORA_TARGETS.contains(&t.as_str()) {
                    errs.push(format!(
                        "lora.targets: {t:?} is not one of {}",
                        LORA_TARGETS.join(", ")
                    ));
                }
            }
            if l.targets.is_empty() {
                errs.push("lora.targets is empty".to_string());
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(errs.join("; ")))
        }
    }

    /// Rank and world size, from the config or `RANK` / `WORLD_SIZE`.
    pub fn rank_world(&self) -> Result<(usize, usize)> {
        let env = |k: &str| -> Result<Option<usize>> {
            match std::env::var(k) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| Error::Config(format!("{k}={v:?} is not a number"))),
                Err(_) => Ok(None),
            }
        };
        let rank = match self.train.rank {
            Some(r) => r,
            None => env("RANK")?.unwrap_or(0),
        };
        let world = match self.train.world {
            Some(w) => w,
            None => env("WORLD_SIZE")?.unwrap_or(1),
        };
        if world == 0 || rank >= world {
            return Err(Error::Config(format!(
                "rank {rank} is not in a world of {world}"
            )));
        }
        Ok((rank, world))
    }

    /// Where rank 0 listens (see `train.master`).
    pub fn master(&self) -> String {
        if let Some(m) = &self.train.master {
            return m.clone();
        }
        let addr = std::env::var("MASTER_ADDR").unwrap_or_else(|_| "127.0.0.1".into());
        let port = std::env::var("MASTER_PORT").unwrap_or_else(|_| "29500".into());
        format!("{addr}:{port}")
    }
}
