//! A decoder-only transformer compatible with Llama and Qwen2 checkpoints (RMSNorm, SwiGLU,
//! RoPE, grouped-query attention, tied or untied embeddings, optional q/k/v biases), written
//! with candle operations that all carry gradients: softmax, RMSNorm and RoPE are composed of
//! elementary ops here because candle's fused versions silently cut the gradient.
//!
//! Parameters are f32 master copies under their HF names; the forward pass casts them to the
//! compute dtype (bf16 on CUDA), so the cast carries the gradient back to the f32 master.

use crate::config::{LoraSection, ModelConfig};
use crate::data::Batch;
use crate::rng::Rng;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Low-rank adapters attached to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Lora {
    /// Rank.
    pub rank: usize,
    /// alpha / rank.
    pub scale: f64,
    /// Dropout on the adapter input while training.
    pub dropout: f64,
    /// Projection names that carry adapters.
    pub targets: Vec<String>,
}

/// How attention is masked in one pass.
pub(crate) enum Mask {
    /// Each position's first visible key, for the fused softmax (CPU, f32).
    Starts(Arc<Vec<u32>>),
    /// The additive bias [B, 1, T, T].
    Bias(Tensor),
}

/// What the layers of one batch's pass share.
pub(crate) struct Pass {
    rows: usize,
    len: usize,
    cos: Tensor,
    sin: Tensor,
    mask: Mask,
    /// The fused RoPE (CPU, f32), else composed from `cos` and `sin`.
    rope: Option<crate::ops::Rope>,
    /// CPU f32: the fused ops (softmax, RMSNorm, RoPE, SwiGLU) with hand-written backward.
    fused: bool,
}

/// The model: configuration, parameters and RoPE tables.
pub struct Model {
    /// The HF configuration.
    pub config: ModelConfig,
    device: Device,
    dtype: DType,
    trainable: BTreeMap<String, Var>,
    frozen: BTreeMap<String, Tensor>,
    lora: Option<Lora>,
    cos: Tensor,
    sin: Tensor,
    /// Dtype of the weights the model was loaded from (f32 from scratch).
    pub loaded_dtype: DType,
}

/// HF names and shapes of every base parameter, in a fixed order.
pub fn parameter_shapes(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let (q, kv) = (
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
    );
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![c.vocab_size, h],
    )];
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        for (name, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            out.push((format!("{p}.self_attn.{name}.weight"), vec![rows, h]));
            if c.attention_bias {
                out.push((format!("{p}.self_attn.{name}.bias"), vec![rows]));
            }
        }
        out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        out.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
        out.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
        out.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![c.vocab_size, h]));
    }
    out
}

/// Whether decoupled weight decay applies: matrices yes; norms and biases (1-D) no.
pub fn decays(shape: &[usize]) -> bool {
    shape.len() >= 2
}

/// RoPE inverse frequencies, with Llama 3 scaling when configured.
fn inv_freqs(c: &ModelConfig) -> Vec<f64> {
    let hd = c.head_dim;
    (0..hd / 2)
        .map(|i| {
            let f = 1.0 / c.rope_theta.powf(2.0 * i as f64 / hd as f64);
            match c.rope_scaling {
                None => f,
                Some(s) => {
                    let low = s.original_max_position_embeddings / s.low_freq_factor;
                    let high = s.original_max_position_embeddings / s.high_freq_factor;
                    let wavelen = std::f64::consts::TAU / f;
                    if wavelen < high {
                        f
                    } else if wavelen > low {
                        f / s.factor
                    } else {
                        let smooth = (s.original_max_position_embeddings / wavelen
                            - s.low_freq_factor)
                            / (s.high_freq_factor - s.low_freq_factor);
                        (1.0 - smooth) * f / s.factor + smooth * f
                    }
                }
            }
        })
        .collect()
}

/// Sum over masked positions of the negative log-likelihood of the targets.
/// `logits` [N, V] (any float dtype; computed in f32), `targets` u32 [N], `mask` f32 [N].
/// On the CPU one fused pass per row forward and one backward ([`crate::ops::MaskedNll`]).
pub fn masked_nll_sum(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    if logits.device().is_cpu() {
        let op = crate::ops::MaskedNll {
            targets: Arc::new(targets.to_vec1::<u32>()?),
            mask: Arc::new(mask.to_dtype(DType::F32)?.to_vec1::<f32>()?),
        };
        return Ok(logits.contiguous()?.apply_op1(op)?.sum_all()?);
    }
    composed_nll_sum(&logits, targets, mask)
}

/// [`masked_nll_sum`] composed of candle operations (every device; the fused op's reference).
pub fn composed_nll_sum(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    // Softmax is invariant to the per-row shift, so the shift needs no gradient.
    let m = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&m)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = shifted.gather(&targets.unsqueeze(1)?, D::Minus1)?;
    let nll = (lse - picked)?.squeeze(1)?;
    Ok((nll * mask)?.sum_all()?)
}

fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let dt = x.dtype();
    if x.device().is_cpu() && dt == DType::F32 && w.dtype() == DType::F32 && x.rank() == 2 {
        return Ok(x
            .contiguous()?
            .apply_op2(&w.contiguous()?, crate::ops::RmsNorm { eps: eps as f32 })?);
    }
    let xf = x.to_dtype(DType::F32)?;
    let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xf.broadcast_div(&(ms + eps)?.sqrt()?)?;
    Ok(y.to_dtype(dt)?.broadcast_mul(w)?)
}

fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    Ok(Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?)
}

impl Model {
    /// A model with random weights (normal with std `init_std`, norms at one, biases at zero).
    pub fn from_scratch(
        config: ModelConfig,
        init_std: f64,
        rng: &mut Rng,
        device: &Device,
        dtype: DType,
        max_positions: usize,
    ) -> Result<Model> {
        let mut params = BTreeMap::new();
        for (name, shape) in parameter_shapes(&config) {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name.ends_with("norm.weight") {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                (0..n).map(|_| (rng.normal() * init_std) as f32).collect()
            };
            params.insert(name, Tensor::from_vec(values, shape, device)?);
        }
        Model::assemble(config, params, device, dtype, max_positions, DType::F32)
    }

    /// A model from a local HF directory (`config.json` + `*.safetensors`, HF tensor names).
    pub fn from_pretrained(
        dir: &Path,
        config: Option<ModelConfig>,
        device: &Device,
        dtype: DType,
        max_positions: usize,
    ) -> Result<Model> {
        let config = match config {
            Some(c) => c,
            None => ModelConfig::load(dir)?,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::Io(dir.to_path_buf(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::Weights(format!(
                "{}: no *.safetensors files",
                dir.display()
            )));
        }
        let mut found: BTreeMap<String, Tensor> = BTreeMap::new();
        for f in &files {
            let tensors = candle_core::safetensors::load(f, &Device::Cpu)
                .map_err(|e| Error::Weights(format!("{}: {e}", f.display())))?;
            found.extend(tensors);
        }
        let loaded_dtype = found
            .get("model.embed_tokens.weight")
            .map(|t| t.dtype())
            .unwrap_or(DType::F32);
        let mut params = BTreeMap::new();
        let mut missing = Vec::new();
        for (name, shape) in parameter_shapes(&config) {
            match found.remove(&name) {
                Some(t) if t.dims() == shape.as_slice() => {
                    params.insert(name, t.to_dtype(DType::F32)?.to_device(device)?);
                }
                Some(t) => {
                    return Err(Error::Weights(format!(
                        "{}: {name} has shape {:?}, the config implies {shape:?}",
                        dir.display(),
                        t.dims()
                    )))
                }
                None => missing.push(name),
            }
        }
        found.retain(|k, _| {
            let buffer = k.ends_with("rotary_emb.inv_freq");
            let tied_head = config.tie_word_embeddings && k == "lm_head.weight";
            !(buffer || tied_head)
        });
        if !missing.is_empty() || !found.is_empty() {
            let few = |v: Vec<String>| {
                let n = v.len();
                let mut s = v.into_iter().take(5).collect::<Vec<_>>().join(", ");
                if n > 5 {
                    s.push_str(&format!(" and {} more", n - 5));
                }
                s
            };
            return Err(Error::Weights(format!(
                "{}: tensors missing: [{}]; unexpected: [{}]",
                dir.display(),
                few(missing),
                few(found.into_keys().collect())
            )));
        }
        Model::assemble(config, params, device, dtype, max_positions, loaded_dtype)
    }

    fn assemble(
        config: ModelConfig,
        params: BTreeMap<String, Tensor>,
        device: &Device,
        dtype: DType,
        max_positions: usize,
        loaded_dtype: DType,
    ) -> Result<Model> {
        let freqs = inv_freqs(&config);
        let half = freqs.len();
        let mut angles = Vec::with_capacity(max_positions * half * 2);
        for p in 0..max_positions {
            for _ in 0..2 {
                angles.extend(freqs.iter().map(|f| (p as f64 * f) as f32));
            }
        }
        let angles = Tensor::from_vec(angles, (max_positions, 2 * half), device)?;
        let trainable = params
            .into_iter()
            .map(|(k, t)| Ok((k, Var::from_tensor(&t)?)))
            .collect::<Result<_>>()?;
        Ok(Model {
            config,
            device: device.clone(),
            dtype,
            trainable,
            frozen: BTreeMap::new(),
            lora: None,
            cos: angles.cos()?.to_dtype(dtype)?,
            sin: angles.sin()?.to_dtype(dtype)?,
            loaded_dtype,
        })
    }

    /// Freeze the base weights and attach zero-initialized adapters (A Kaiming-uniform, B zero),
    /// so the adapted model starts equal to the base.
    pub fn attach_lora(&mut self, spec: &LoraSection, rng: &mut Rng) -> Result<()> {
        let base = std::mem::take(&mut self.trainable);
        for (name, var) in base {
            self.frozen.insert(name, var.as_detached_tensor());
        }
        let lora = Lora {
            rank: spec.rank,
            scale: spec.alpha / spec.rank as f64,
            dropout: spec.dropout,
            targets: spec.targets.clone(),
        };
        for (name, shape) in parameter_shapes(&self.config) {
            let Some(module) = name.strip_suffix(".weight") else {
                continue;
            };
            if !lora.targets.iter().any(|t| module.ends_with(t.as_str())) || shape.len() != 2 {
                continue;
            }
            let (out, inp) = (shape[0], shape[1]);
            let bound = 1.0 / (inp as f64).sqrt();
            let a: Vec<f32> = (0..lora.rank * inp)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                .collect();
            let a = Tensor::from_vec(a, (lora.rank, inp), &self.device)?;
            let b = Tensor::zeros((out, lora.rank), DType::F32, &self.device)?;
            self.trainable
                .insert(format!("{module}.lora_A.weight"), Var::from_tensor(&a)?);
            self.trainable
                .insert(format!("{module}.lora_B.weight"), Var::from_tensor(&b)?);
        }
        self.lora = Some(lora);
        Ok(())
    }

    /// The adapters, when attached.
    pub fn lora(&self) -> Option<&Lora> {
        self.lora.as_ref()
    }

    /// Trainable parameters by name.
    pub fn trainable(&self) -> &BTreeMap<String, Var> {
        &self.trainable
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    fn weight(&self, name: &str) -> Result<Option<Tensor>> {
        let t = match (self.trainable.get(name), self.frozen.get(name)) {
            (Some(v), _) => v.as_tensor().clone(),
            (None, Some(t)) => t.clone(),
            (None, None) => return Ok(None),
        };
        Ok(Some(if t.dtype() == self.dtype {
            t
        } else {
            t.to_dtype(self.dtype)?
        }))
    }

    fn need(&self, name: &str) -> Result<Tensor> {
        self.weight(name)?
            .ok_or_else(|| Error::Weights(format!("parameter {name} is missing")))
    }

    /// `x · Wᵀ`; for a frozen weight on the CPU in f32 without the weight's gradient, which
    /// candle's matmul would compute and keep ([`crate::ops::FrozenLinear`]).
    fn product(&self, x: &Tensor, name: &str, w: &Tensor) -> Result<Tensor> {
        let frozen = !self.trainable.contains_key(name);
        if frozen && x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 2 {
            return Ok(crate::ops::FrozenLinear::apply(&x.contiguous()?, w)?);
        }
        Ok(x.matmul(&w.t()?)?)
    }

    fn linear(&self, x: &Tensor, module: &str, dropout: Option<&mut Rng>) -> Result<Tensor> {
        let name = format!("{module}.weight");
        let w = self.need(&name)?;
        let mut y = self.product(x, &name, &w)?;
        if let Some(b) = self.weight(&format!("{module}.bias"))? {
            y = y.broadcast_add(&b)?;
        }
        if let (Some(lora), Some(a)) =
            (&self.lora, self.weight(&format!("{module}.lora_A.weight"))?)
        {
            let b = self.need(&format!("{module}.lora_B.weight"))?;
            let x_in = match dropout {
                Some(rng) if lora.dropout > 0.0 => {
                    let keep = 1.0 - lora.dropout;
                    let n = x.elem_count();
                    let m: Vec<f32> = (0..n)
                        .map(|_| {
                            if rng.uniform() < keep {
                                (1.0 / keep) as f32
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    if x.device().is_cpu() && x.dtype() == DType::F32 {
                        x.contiguous()?
                            .apply_op1(crate::ops::MaskMul { mask: Arc::new(m) })?
                    } else {
                        let m =
                            Tensor::from_vec(m, x.shape(), &self.device)?.to_dtype(x.dtype())?;
                        (x * m)?
                    }
                }
                _ => x.clone(),
            };
            let delta = x_in.matmul(&a.t()?)?.matmul(&b.t()?)?;
            y = (y + (delta * lora.scale)?)?;
        }
        Ok(y)
    }

    /// What every layer of one batch's pass shares: RoPE tables gathered at the batch's
    /// positions and the attention mask.
    pub(crate) fn pass(&self, batch: &Batch) -> Result<Pass> {
        let hd = self.config.head_dim;
        let (b, t) = (batch.rows, batch.len);
        let n = b * t;
        let dev = &self.device;
        let pos = Tensor::from_slice(&batch.positions, n, dev)?;
        if batch
            .positions
            .iter()
            .any(|&p| p as usize >= self.cos.dim(0).unwrap_or(0))
        {
            return Err(Error::Data(format!(
                "a position exceeds the {} RoPE positions prepared",
                self.cos.dim(0)?
            )));
        }
        let cos = self.cos.index_select(&pos, 0)?.reshape((b, 1, t, hd))?;
        let sin = self.sin.index_select(&pos, 0)?.reshape((b, 1, t, hd))?;
        // On the CPU in f32 the mask is generated inside a fused softmax from where each
        // position's packed sample starts, and RoPE is one fused pass (and one backward) per
        // tensor; elsewhere the mask is an added bias and RoPE is composed.
        let fused = dev.is_cpu() && self.dtype == DType::F32;
        let (mask, rope) = if fused {
            let starts =
                crate::ops::segment_starts(&batch.segments, b, t, crate::data::PAD_SEGMENT);
            let rope = crate::ops::Rope {
                cos: Arc::new(cos.flatten_all()?.to_vec1::<f32>()?),
                sin: Arc::new(sin.flatten_all()?.to_vec1::<f32>()?),
            };
            (Mask::Starts(Arc::new(starts)), Some(rope))
        } else {
            let bias = Tensor::from_vec(batch.attention_bias(), (b, 1, t, t), dev)?;
            (Mask::Bias(bias), None)
        };
        Ok(Pass {
            rows: b,
            len: t,
            cos,
            sin,
            mask,
            rope,
            fused,
        })
    }

    /// The token embeddings of a batch, [B·T, H].
    pub(crate) fn embed(&self, batch: &Batch) -> Result<Tensor> {
        let ids = Tensor::from_slice(&batch.inputs, batch.rows * batch.len, &self.device)?;
        Ok(self
            .need("model.embed_tokens.weight")?
            .index_select(&ids, 0)?)
    }

    /// Decoder layer `l` on the residual stream `x` [B·T, H].
    pub(crate) fn layer(
        &self,
        l: usize,
        x: &Tensor,
        pass: &Pass,
        mut dropout: Option<&mut Rng>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, t) = (pass.rows, pass.len);
        let n = b * t;
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let rope = |x: &Tensor| -> Result<Tensor> {
            if let Some(op) = &pass.rope {
                return Ok(x.contiguous()?.apply_op1(op.clone())?);
            }
            Ok((x.broadcast_mul(&pass.cos)? + rotate_half(x)?.broadcast_mul(&pass.sin)?)?)
        };
        let scale = 1.0 / (hd as f64).sqrt();
        let p = format!("model.layers.{l}");
        let xn = rms_norm(
            x,
            &self.need(&format!("{p}.input_layernorm.weight"))?,
            c.rms_norm_eps,
        )?;
        let heads = |y: Tensor, h: usize| -> Result<Tensor> {
            Ok(y.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let mut project = |name: &str, h: usize| -> Result<Tensor> {
            let y = self.linear(
                &xn,
                &format!("{p}.self_attn.{name}"),
                dropout.as_deref_mut(),
            )?;
            heads(y, h)
        };
        let q = project("q_proj", nh)?;
        let k = project("k_proj", nkv)?;
        let v = project("v_proj", nkv)?;
        let (q, k) = (rope(&q)?, rope(&k)?);
        let (k, v) = if nkv == nh {
            (k, v)
        } else {
            let rep = nh / nkv;
            let expand = |x: Tensor| -> Result<Tensor> {
                Ok(x.unsqueeze(2)?
                    .broadcast_as((b, nkv, rep, t, hd))?
                    .contiguous()?
                    .reshape((b, nh, t, hd))?)
            };
            (expand(k)?, expand(v)?)
        };
        let probs = match &pass.mask {
            Mask::Starts(starts) => q.matmul(&k.t()?)?.apply_op1(crate::ops::AttnSoftmax {
                starts: starts.clone(),
                scale: scale as f32,
            })?,
            Mask::Bias(mask) => {
                let scores = (q.matmul(&k.t()?)? * scale)?
                    .to_dtype(DType::F32)?
                    .broadcast_add(mask)?;
                softmax_last(&scores)?.to_dtype(self.dtype)?
            }
        };
        let att = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, nh * hd))?;
        let o = self.linear(
            &att,
            &format!("{p}.self_attn.o_proj"),
            dropout.as_deref_mut(),
        )?;
        let x = (x + o)?;
        let xn = rms_norm(
            &x,
            &self.need(&format!("{p}.post_attention_layernorm.weight"))?,
            c.rms_norm_eps,
        )?;
        let gate = self.linear(&xn, &format!("{p}.mlp.gate_proj"), dropout.as_deref_mut())?;
        let up = self.linear(&xn, &format!("{p}.mlp.up_proj"), dropout.as_deref_mut())?;
        let act = if pass.fused {
            gate.contiguous()?
                .apply_op2(&up.contiguous()?, crate::ops::SwiGlu)?
        } else {
            (gate.silu()? * up)?
        };
        let down = self.linear(&act, &format!("{p}.mlp.down_proj"), dropout)?;
        Ok((x + down)?)
    }

    /// Logits [B·T, V] from the last layer's output: the final norm and the LM head.
    pub(crate) fn head(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let xn = rms_norm(x, &self.need("model.norm.weight")?, c.rms_norm_eps)?;
        let name = if self.weight("lm_head.weight")?.is_some() {
            "lm_head.weight"
        } else {
            "model.embed_tokens.weight"
        };
        self.product(&xn, name, &self.need(name)?)
    }

    /// Logits [B·T, V] for a batch. `dropout` is the training generator (LoRA dropout); `None`
    /// evaluates.
    pub fn forward(&self, batch: &Batch, mut dropout: Option<&mut Rng>) -> Result<Tensor> {
        let pass = self.pass(batch)?;
        let mut x = self.embed(batch)?;
        for l in 0..self.config.num_hidden_layers {
            x = self.layer(l, &x, &pass, dropout.as_deref_mut())?;
        }
        self.head(&x)
    }

    /// The base weights under HF names, adapters merged in (W + scale·B·A), as f32 tensors.
    pub fn merged_weights(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (name, _) in parameter_shapes(&self.config) {
            let base = match (self.trainable.get(&name), self.frozen.get(&name)) {
                (Some(v), _) => v.as_detached_tensor(),
                (None, Some(t)) => t.clone(),
                (None, None) => return Err(Error::Weights(format!("{name} is missing"))),
            };
            let merged = match (&self.lora, name.strip_suffix(".weight")) {
                (Some(lora), Some(module))
                    if self
                        .trainable
                        .contains_key(&format!("{module}.lora_A.weight")) =>
                {
                    let a = self.trainable[&format!("{module}.lora_A.weight")].as_detached_tensor();
                    let b = self.trainable[&format!("{module}.lora_B.weight")].as_detached_tensor();
                    (base + (b.matmul(&a)? * lora.scale)?)?
                }
                _ => base,
            };
            out.insert(name, merged);
        }
        Ok(out)
    }

    /// Trainable tensors (detached, f32) by name: the checkpoint's weights.
    pub fn trainable_tensors(&self) -> BTreeMap<String, Tensor> {
        self.trainable
            .iter()
            .map(|(k, v)| (k.clone(), v.as_detached_tensor()))
            .collect()
    }

    /// Overwrite trainable parameters from a checkpoint; every one must be present with its shape.
    pub fn set_trainable(&self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        for (name, var) in &self.trainable {
            let t = tensors
                .get(name)
                .ok_or_else(|| Error::Weights(format!("checkpoint lacks {name}")))?;
            if t.dims() != var.dims() {
                return Err(Error::Weights(format!(
                    "checkpoint {name} has shape {:?}, the model {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_dtype(DType::F32)?.to_device(&self.device)?)?;
        }
        Ok(())
    }
}
