//! Fused CPU operations with hand-written backward passes, for the element-wise hot spots of a
//! training step: attention's masked softmax (the mask generated from each row's segment
//! start, never materialized or added), the masked cross-entropy over the vocabulary, RMSNorm,
//! RoPE, SwiGLU ([`SwiGlu`]) and AdamW's in-place update. Each replaces a chain of candle
//! operations that would read and write the whole tensor several times forward and again
//! backward.
//!
//! They run on CPU tensors of f32; elsewhere (CUDA, bf16) the model keeps its composed
//! operations, which these are tested against (values and gradients).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

mod dropout;
mod frozen;
mod swiglu;
pub use dropout::MaskMul;
pub use frozen::FrozenLinear;
pub use swiglu::SwiGlu;

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{what}: f32 expected");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what}: a contiguous tensor expected"),
    }
}

/// `softmax(scale · x)` over the last dimension of attention scores [B, H, T, T], where query
/// `i` of row `b` sees keys `starts[b·T + i] ..= i` only (its own packed sample, causally);
/// every other probability is 0.
#[derive(Clone)]
pub struct AttnSoftmax {
    /// Per (row, query): the first key it may see.
    pub starts: Arc<Vec<u32>>,
    /// Multiplies the scores first (1/√head_dim).
    pub scale: f32,
}

impl AttnSoftmax {
    /// The keys query row `r` (of B·H·T) sees: `from..=i`.
    fn visible(&self, r: usize, h: usize, t: usize) -> (usize, usize) {
        let (row, i) = (r / (h * t), r % t);
        ((self.starts[row * t + i] as usize).min(i), i)
    }

    fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
        let d = l.dims();
        if d.len() != 4 || d[2] != d[3] {
            candle_core::bail!("attention softmax: [B, H, T, T] expected, got {d:?}");
        }
        Ok((d[0], d[1], d[2]))
    }
}

impl CustomOp1 for AttnSoftmax {
    fn name(&self) -> &'static str {
        "attn-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, h, t) = Self::dims(l)?;
        let x = f32_slice(s, l, "attention softmax")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(t)
            .zip(x.par_chunks(t))
            .enumerate()
            .for_each(|(r, (y, x))| {
                let (from, i) = self.visible(r, h, t);
                let seen = &x[from..=i];
                let m = seen
                    .iter()
                    .fold(f32::NEG_INFINITY, |m, &v| m.max(v * self.scale));
                let mut sum = 0f32;
                for (o, &v) in y[from..=i].iter_mut().zip(seen) {
                    let e = (v * self.scale - m).exp();
                    *o = e;
                    sum += e;
                }
                let inv = 1.0 / sum;
                for o in &mut y[from..=i] {
                    *o *= inv;
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(
            res.apply_op2_no_bwd(&grad, &AttnSoftmaxBwd(self.clone()))?,
        ))
    }
}

/// The gradient of [`AttnSoftmax`]: `scale · y ⊙ (g − Σ g·y)` over each row's visible keys.
struct AttnSoftmaxBwd(AttnSoftmax);

impl CustomOp2 for AttnSoftmaxBwd {
    fn name(&self) -> &'static str {
        "attn-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, h, t) = AttnSoftmax::dims(yl)?;
        let y = f32_slice(ys, yl, "attention softmax gradient")?;
        let g = f32_slice(gs, gl, "attention softmax gradient")?;
        let mut out = vec![0f32; y.len()];
        let scale = self.0.scale;
        out.par_chunks_mut(t)
            .zip(y.par_chunks(t).zip(g.par_chunks(t)))
            .enumerate()
            .for_each(|(r, (dx, (y, g)))| {
                let (from, i) = self.0.visible(r, h, t);
                let dot: f32 = y[from..=i]
                    .iter()
                    .zip(&g[from..=i])
                    .map(|(a, b)| a * b)
                    .sum();
                for j in from..=i {
                    dx[j] = scale * y[j] * (g[j] - dot);
                }
            });
        Ok((CpuStorage::F32(out), yl.shape().clone()))
    }
}

/// Per row of logits [N, V]: `mask · (logsumexp(x) − x[target])`, the masked negative
/// log-likelihood, as a vector [N].
#[derive(Clone)]
pub struct MaskedNll {
    /// The target of each row.
    pub targets: Arc<Vec<u32>>,
    /// 1 where the row is trained, 0 elsewhere (any weight works).
    pub mask: Arc<Vec<f32>>,
}

fn row_lse(x: &[f32]) -> (f32, f32) {
    let m = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f32 = x.iter().map(|&v| (v - m).exp()).sum();
    (m, sum)
}

impl CustomOp1 for MaskedNll {
    fn name(&self) -> &'static str {
        "masked-nll"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, v) = l.shape().dims2()?;
        if self.targets.len() != n || self.mask.len() != n {
            candle_core::bail!("masked nll: {n} rows, {} targets", self.targets.len());
        }
        let x = f32_slice(s, l, "masked nll")?;
        let mut out = vec![0f32; n];
        out.par_iter_mut()
            .zip(x.par_chunks(v))
            .enumerate()
            .for_each(|(r, (o, x))| {
                let w = self.mask[r];
                if w != 0.0 {
                    let (m, sum) = row_lse(x);
                    let target = (self.targets[r] as usize).min(v - 1);
                    *o = w * (m + sum.ln() - x[target]);
                }
            });
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        // Each trained row's log-sum-exp from the forward result, `w·(lse − x[target])`, so the
        // backward pass takes one exponential per logit instead of two.
        let res = res.to_vec1::<f32>()?;
        let last = arg.dim(1)?.saturating_sub(1) as u32;
        let index: Vec<u32> = self.targets.iter().map(|&t| t.min(last)).collect();
        let picked = arg
            .gather(&Tensor::from_vec(index, (res.len(), 1), arg.device())?, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let lse = res
            .iter()
            .zip(&picked)
            .zip(self.mask.iter())
            .map(|((&r, &p), &w)| if w != 0.0 { r / w + p } else { 0.0 })
            .collect();
        Ok(Some(arg.apply_op2_no_bwd(
            &grad,
            &MaskedNllBwd {
                nll: self.clone(),
                lse: Arc::new(lse),
            },
        )?))
    }
}

/// The gradient of [`MaskedNll`]: `g · mask · (softmax(x) − onehot(target))` per row.
struct MaskedNllBwd {
    nll: MaskedNll,
    /// Each row's log-sum-exp (trained rows).
    lse: Arc<Vec<f32>>,
}

impl CustomOp2 for MaskedNllBwd {
    fn name(&self) -> &'static str {
        "masked-nll-bwd"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, v) = xl.shape().dims2()?;
        let x = f32_slice(xs, xl, "masked nll gradient")?;
        let g = f32_slice(gs, gl, "masked nll gradient")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(v)
            .zip(x.par_chunks(v))
            .enumerate()
            .for_each(|(r, (dx, x))| {
                let w = self.nll.mask[r] * g[r];
                if w == 0.0 {
                    return;
                }
                let lse = self.lse[r];
                for (d, &xv) in dx.iter_mut().zip(x) {
                    *d = w * (xv - lse).exp();
                }
                dx[(self.nll.targets[r] as usize).min(v - 1)] -= w;
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{what}: f32 expected");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut v[a..b]),
        None => candle_core::bail!("{what}: a contiguous tensor expected"),
    }
}

/// An Adam moment updated in place from a gradient: `m ← β·m + (1−β)·g` (or `g²`).
pub struct Moment {
    /// β.
    pub beta: f64,
    /// Whether the moment follows the squared gradient.
    pub square: bool,
}

impl candle_core::InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adam-moment"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> Result<()> {
        let m = f32_slice_mut(dst, dst_l, "adam moment")?;
        let g = f32_slice(g, gl, "adam gradient")?;
        if m.len() != g.len() {
            candle_core::bail!("adam moment: {} values, {} gradients", m.len(), g.len());
        }
        let (b, a) = (self.beta as f32, (1.0 - self.beta) as f32);
        let square = self.square;
        m.par_chunks_mut(1 << 16)
            .zip(g.par_chunks(1 << 16))
            .for_each(|(m, g)| {
                for (m, &g) in m.iter_mut().zip(g) {
                    let x = if square { g * g } else { g };
                    *m = *m * b + x * a;
                }
            });
        Ok(())
    }
}

/// The AdamW step applied to a parameter in place from its moments:
/// `w ← w·(1 − lr·decay) − lr · (m/c1) / (√(v/c2) + ε)`.
pub struct AdamApply {
    /// Learning rate.
    pub lr: f64,
    /// Decoupled weight decay (0 for norms and biases).
    pub decay: f64,
    /// Bias corrections 1 − β1^t and 1 − β2^t.
    pub c1: f64,
    /// See `c1`.
    pub c2: f64,
    /// ε.
    pub eps: f64,
}

impl candle_core::InplaceOp3 for AdamApply {
    fn name(&self) -> &'static str {
        "adam-apply"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> Result<()> {
        let w = f32_slice_mut(dst, dst_l, "adam parameter")?;
        let m = f32_slice(m, ml, "adam moment")?;
        let v = f32_slice(v, vl, "adam moment")?;
        if w.len() != m.len() || w.len() != v.len() {
            candle_core::bail!("adam: parameter and moments differ in size");
        }
        let keep = (1.0 - self.lr * self.decay) as f32;
        let (lr, c1, c2, eps) = (
            self.lr as f32,
            self.c1 as f32,
            self.c2 as f32,
            self.eps as f32,
        );
        w.par_chunks_mut(1 << 16)
            .zip(m.par_chunks(1 << 16).zip(v.par_chunks(1 << 16)))
            .for_each(|(w, (m, v))| {
                for ((w, &m), &v) in w.iter_mut().zip(m).zip(v) {
                    let update = (m / c1) / ((v / c2).sqrt() + eps);
                    *w = *w * keep - update * lr;
                }
            });
        Ok(())
    }
}

/// RMSNorm over the last dimension of `x` [N, H] with weight `w` [H]:
/// `y = x / √(mean(x²) + ε) · w`.
#[derive(Clone)]
pub struct RmsNorm {
    /// ε.
    pub eps: f32,
}

fn rms_dims(xl: &Layout, wl: &Layout) -> Result<(usize, usize)> {
    let (n, h) = xl.shape().dims2()?;
    if wl.shape().dims1()? != h {
        candle_core::bail!("rms norm: weight of {:?} for rows of {h}", wl.dims());
    }
    Ok((n, h))
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, h) = rms_dims(xl, wl)?;
        let x = f32_slice(xs, xl, "rms norm")?;
        let w = f32_slice(ws, wl, "rms norm weight")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h)
            .zip(x.par_chunks(h))
            .for_each(|(y, x)| {
                let r = inv_rms(x, self.eps);
                for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                    *y = x * r * w;
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &grad, &RmsNormBwdX(self.clone()))?;
        let dw = x.apply_op2_no_bwd(&grad, &RmsNormBwdW(self.clone()))?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `dx = r · (g⊙w − x̂ · mean(g⊙w⊙x̂))` with `x̂ = x·r`.
struct RmsNormBwdX(RmsNorm);

impl candle_core::CustomOp3 for RmsNormBwdX {
    fn name(&self) -> &'static str {
        "rms-norm-bwd-x"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, h) = rms_dims(xl, wl)?;
        let x = f32_slice(xs, xl, "rms norm gradient")?;
        let w = f32_slice(ws, wl, "rms norm gradient")?;
        let g = f32_slice(gs, gl, "rms norm gradient")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h)
            .zip(x.par_chunks(h).zip(g.par_chunks(h)))
            .for_each(|(dx, (x, g))| {
                let r = inv_rms(x, self.0.eps);
                let dot: f32 = x
                    .iter()
                    .zip(g)
                    .zip(w)
                    .map(|((x, g), w)| g * w * x * r)
                    .sum::<f32>()
                    / h as f32;
                for (((d, &x), &g), &w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                    *d = r * (g * w - x * r * dot);
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// `dw = Σ_rows g ⊙ x̂`.
struct RmsNormBwdW(RmsNorm);

impl CustomOp2 for RmsNormBwdW {
    fn name(&self) -> &'static str {
        "rms-norm-bwd-w"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, h) = xl.shape().dims2()?;
        let x = f32_slice(xs, xl, "rms norm gradient")?;
        let g = f32_slice(gs, gl, "rms norm gradient")?;
        // Rows in blocks summed in parallel, the blocks' sums added in order (the same bytes on
        // any thread count).
        const BLOCK: usize = 64;
        let partial: Vec<Vec<f32>> = x
            .par_chunks(h * BLOCK)
            .zip(g.par_chunks(h * BLOCK))
            .map(|(x, g)| {
                let mut acc = vec![0f32; h];
                for (x, g) in x.chunks(h).zip(g.chunks(h)) {
                    let r = inv_rms(x, self.0.eps);
                    for ((a, &x), &g) in acc.iter_mut().zip(x).zip(g) {
                        *a += g * x * r;
                    }
                }
                acc
            })
            .collect();
        let mut out = vec![0f32; h];
        for p in partial {
            for (o, v) in out.iter_mut().zip(p) {
                *o += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(h)))
    }
}

/// Rotary position embedding of queries or keys [B, H, T, D] (the "rotate half" form of Llama
/// and Qwen2): `y = x·cos + rotate_half(x)·sin`, with cos and sin per (row, position) [B·T, D].
#[derive(Clone)]
pub struct Rope {
    /// cos of each (row, position)'s angles.
    pub cos: Arc<Vec<f32>>,
    /// sin of the same.
    pub sin: Arc<Vec<f32>>,
}

impl Rope {
    fn dims(&self, l: &Layout) -> Result<(usize, usize, usize)> {
        let d = l.dims();
        if d.len() != 4 || !d[3].is_multiple_of(2) || self.cos.len() != d[0] * d[2] * d[3] {
            candle_core::bail!("rope: [B, H, T, even D] with tables of B·T·D expected, got {d:?}");
        }
        Ok((d[1], d[2], d[3]))
    }

    /// Apply to `x` rows; `sign` −1 gives the transpose (the backward pass).
    fn apply(&self, x: &[f32], (h, t, d): (usize, usize, usize), sign: f32) -> Vec<f32> {
        let half = d / 2;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .enumerate()
            .for_each(|(r, (y, x))| {
                let at = ((r / (h * t)) * t + r % t) * d;
                let (c, s) = (&self.cos[at..at + d], &self.sin[at..at + d]);
                for i in 0..half {
                    // Forward: y_i = x_i c_i − x_{i+½} s_i, y_{i+½} = x_{i+½} c_{i+½} + x_i s_{i+½}.
                    // Backward: g_i c_i + g_{i+½} s_{i+½}, g_{i+½} c_{i+½} − g_i s_i.
                    let j = i + half;
                    if sign > 0.0 {
                        y[i] = x[i] * c[i] - x[j] * s[i];
                        y[j] = x[j] * c[j] + x[i] * s[j];
                    } else {
                        y[i] = x[i] * c[i] + x[j] * s[j];
                        y[j] = x[j] * c[j] - x[i] * s[i];
                    }
                }
            });
        out
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = self.dims(l)?;
        let x = f32_slice(s, l, "rope")?;
        Ok((CpuStorage::F32(self.apply(x, dims, 1.0)), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            grad.contiguous()?
                .apply_op1_no_bwd(&RopeBwd(self.clone()))?,
        ))
    }
}

struct RopeBwd(Rope);

impl CustomOp1 for RopeBwd {
    fn name(&self) -> &'static str {
        "rope-bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = self.0.dims(l)?;
        let g = f32_slice(s, l, "rope gradient")?;
        Ok((
            CpuStorage::F32(self.0.apply(g, dims, -1.0)),
            l.shape().clone(),
        ))
    }
}

/// Each (row, position)'s first visible key: the start of its packed sample (a padding
/// position sees only itself).
pub fn segment_starts(segments: &[u32], rows: usize, len: usize, pad: u32) -> Vec<u32> {
    let mut out = vec![0u32; rows * len];
    for r in 0..rows {
        let mut start = 0usize;
        for i in 0..len {
            let s = segments[r * len + i];
            if i > 0 && s != segments[r * len + i - 1] {
                start = i;
            }
            out[r * len + i] = if s == pad { i as u32 } else { start as u32 };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n).map(|_| (rng.normal() * 2.0) as f32).collect()
    }

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let a: Vec<f32> = a.flatten_all().and_then(|t| t.to_vec1()).expect("a");
        let b: Vec<f32> = b.flatten_all().and_then(|t| t.to_vec1()).expect("b");
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs())),
                "element {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn attention_softmax_matches_the_composed_ops_forward_and_backward() {
        let (b, h, t) = (2, 3, 7);
        // Row 0: two packed samples (0..3, 3..6) and a padding position; row 1: one sample.
        let segments = vec![0, 0, 0, 1, 1, 1, 9, 0, 0, 0, 0, 0, 0, 0];
        let starts = Arc::new(segment_starts(&segments, b, t, 9));
        assert_eq!(&starts[..7], &[0, 0, 0, 3, 3, 3, 6]);
        let dev = Device::Cpu;
        let x = Var::from_vec(random(b * h * t * t, 1), (b, h, t, t), &dev).expect("x");
        let g = Tensor::from_vec(random(b * h * t * t, 2), (b, h, t, t), &dev).expect("g");
        let scale = 0.35f32;
        let fused = x
            .as_tensor()
            .apply_op1(AttnSoftmax {
                starts: starts.clone(),
                scale,
            })
            .expect("fused");
        // The composed form: scale, add the materialized mask, softmax.
        let mut bias = vec![-1e9f32; b * t * t];
        for r in 0..b {
            for i in 0..t {
                for j in starts[r * t + i] as usize..=i {
                    bias[(r * t + i) * t + j] = 0.0;
                }
            }
        }
        let bias = Tensor::from_vec(bias, (b, 1, t, t), &dev).expect("bias");
        let s = (x.as_tensor() * scale as f64)
            .and_then(|s| s.broadcast_add(&bias))
            .expect("s");
        let m = s.max_keepdim(D::Minus1).expect("m").detach();
        let e = s.broadcast_sub(&m).and_then(|e| e.exp()).expect("e");
        let composed = e
            .broadcast_div(&e.sum_keepdim(D::Minus1).expect("sum"))
            .expect("softmax");
        close(&fused, &composed, 1e-6);
        let gf = (&fused * &g)
            .and_then(|l| l.sum_all())
            .and_then(|l| l.backward())
            .expect("backward");
        let gc = (&composed * &g)
            .and_then(|l| l.sum_all())
            .and_then(|l| l.backward())
            .expect("backward");
        close(
            gf.get(x.as_tensor()).expect("fused grad"),
            gc.get(x.as_tensor()).expect("composed grad"),
            1e-5,
        );
    }

    #[test]
    fn rms_norm_matches_the_composed_ops_forward_and_backward() {
        let (n, h) = (70, 24);
        let dev = Device::Cpu;
        let x = Var::from_vec(random(n * h, 5), (n, h), &dev).expect("x");
        let w = Var::from_vec(random(h, 6), h, &dev).expect("w");
        let g = Tensor::from_vec(random(n * h, 7), (n, h), &dev).expect("g");
        let eps = 1e-5;
        let fused = x
            .as_tensor()
            .apply_op2(w.as_tensor(), RmsNorm { eps: eps as f32 })
            .expect("fused");
        let ms = x
            .as_tensor()
            .sqr()
            .and_then(|s| s.mean_keepdim(D::Minus1))
            .expect("ms");
        let composed = x
            .as_tensor()
            .broadcast_div(&(ms + eps).and_then(|m| m.sqrt()).expect("rms"))
            .and_then(|y| y.broadcast_mul(w.as_tensor()))
            .expect("composed");
        close(&fused, &composed, 1e-5);
        let gf = (&fused * &g)
            .and_then(|l| l.sum_all())
            .and_then(|l| l.backward())
            .expect("backward");
        let gc = (&composed * &g)
            .and_then(|l| l.sum_all())
            .and_then(|l| l.backward())
            .expect("backward");
        for v in [&x, &w] {
            close(
                gf.get(v.as_tensor()).expect("fused grad"),
                gc.get(v.as_tensor()).expect("composed grad"),
                1e-4,
            );
        }
    }

    #[test]
    fn rope_matches_the_composed_ops_forward_and_backward() {
        let (b, h, t, d) = (2, 3, 5, 8);
        let dev = Device::Cpu;
        let x = Var::from_vec(random(b * h * t * d, 8), (b, h, t, d), &dev).expect("x");
        let g = Tensor::from_vec(random(b * h * t * d, 9), (b, h, t, d), &dev).expect("g");
        let angles = random(b * t * d, 10);
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        let fused = x
            .as_tensor()
            .apply_op1(Rope {
                cos: Arc::new(cos.clone()),
                sin: Arc::new(sin.clone()),
            })
            .expect("fused");
        let c = Tensor::from_vec(cos, (b, 1, t, d), &dev).expect("cos");
        let s = Tensor::from_vec(sin, (b, 1, t, d), &dev).expect("sin");
        let xt = x.as_tensor();
        let rotated = Tensor::cat(
            &[
                &xt.narrow(3, d / 2, d / 2)
                    .and_then(|v| v.neg())
                    .expect("x2"),
                &xt.narrow(3, 0, d / 2).expect("x1"),
            ],
            3,
        )
        .expect("rotate");
        let composed = (xt.broadcast_mul(&c).expect("xc") + rotated.broadcast_mul(&s).expect("rs"))
            .expect("rope");
        close(&fused, &composed, 1e-6);
        let gf = (&fused * &g)
            .and_then(|l| l.sum_all())
            .and_then(|l| l.backward())
            .expect("backward");
        let gc = (&composed * &g)
            .and_then(|l| l.sum_all())
            .and_then(|l| l.backward())
            .expect("backward");
        close(
            gf.get(xt).expect("fused grad"),
            gc.get(xt).expect("composed grad"),
            1e-5,
        );
    }

    #[test]
    fn masked_nll_matches_the_composed_ops_forward_and_backward() {
        let (n, v) = (9, 37);
        let dev = Device::Cpu;
        let x = Var::from_vec(random(n * v, 3), (n, v), &dev).expect("x");
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 7) % v as u32).collect();
        let mask: Vec<f32> = (0..n).map(|i| if i % 3 == 1 { 0.0 } else { 1.0 }).collect();
        let op = MaskedNll {
            targets: Arc::new(targets.clone()),
            mask: Arc::new(mask.clone()),
        };
        let fused = x
            .as_tensor()
            .apply_op1(op)
            .and_then(|t| t.sum_all())
            .expect("fused");
        let tt = Tensor::from_vec(targets, n, &dev).expect("targets");
        let mt = Tensor::from_vec(mask, n, &dev).expect("mask");
        let composed = crate::model::composed_nll_sum(x.as_tensor(), &tt, &mt).expect("composed");
        close(&fused, &composed, 1e-6);
        let gf = (&fused * 1.7).and_then(|l| l.backward()).expect("backward");
        let gc = (&composed * 1.7)
            .and_then(|l| l.backward())
            .expect("backward");
        close(
            gf.get(x.as_tensor()).expect("fused grad"),
            gc.get(x.as_tensor()).expect("composed grad"),
            1e-5,
        );
    }
}
