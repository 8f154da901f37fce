//! AdamW with decoupled weight decay, the warm-up + cosine schedule, and global-norm clipping.
//! Written here rather than taken from candle-nn so that the moments can be checkpointed and
//! restored exactly (candle's `AdamW` keeps them private).

use crate::config::OptimSection;
use crate::Result;
use candle_core::{DType, Tensor, Var};
use std::collections::{BTreeMap, BTreeSet};

/// Learning rate for step `step` (0-based): linear warm-up to the peak over `warmup` steps, then
/// cosine decay to `min_ratio` × peak at `total`.
pub fn learning_rate(peak: f64, min_ratio: f64, warmup: u64, total: u64, step: u64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    let min = peak * min_ratio;
    min + (peak - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Global L2 norm of all gradients.
pub fn grad_norm(grads: &BTreeMap<String, Tensor>) -> Result<f64> {
    let mut sum = 0f64;
    for g in grads.values() {
        sum += g
            .to_dtype(DType::F32)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f32>()? as f64;
    }
    Ok(sum.sqrt())
}

/// Scale every gradient so the global norm is at most `max` (0 disables); returns the norm
/// before clipping.
pub fn clip(grads: &mut BTreeMap<String, Tensor>, max: f64) -> Result<f64> {
    let norm = grad_norm(grads)?;
    clip_to(grads, norm, max)?;
    Ok(norm)
}

/// `clip` when the global norm is already known.
pub fn clip_to(grads: &mut BTreeMap<String, Tensor>, norm: f64, max: f64) -> Result<()> {
    if max > 0.0 && norm > max {
        let s = max / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = (&*g * s)?;
        }
    }
    Ok(())
}

/// AdamW state: step count and first and second moments (f32) per parameter.
pub struct AdamW {
    /// Hyper-parameters.
    pub cfg: OptimSection,
    /// Updates applied.
    pub t: u64,
    /// First moments.
    pub m: BTreeMap<String, Tensor>,
    /// Second moments.
    pub v: BTreeMap<String, Tensor>,
    no_decay: BTreeSet<String>,
}

impl AdamW {
    /// Fresh state for these parameters; `decay(name, shape)` says which get weight decay.
    pub fn new(
        cfg: OptimSection,
        params: &BTreeMap<String, Var>,
        decay: impl Fn(&str, &[usize]) -> bool,
    ) -> Result<AdamW> {
        let mut m = BTreeMap::new();
        let mut v = BTreeMap::new();
        let mut no_decay = BTreeSet::new();
        for (name, p) in params {
            m.insert(name.clone(), p.zeros_like()?);
            v.insert(name.clone(), p.zeros_like()?);
            if !decay(name, p.dims()) {
                no_decay.insert(name.clone());
            }
        }
        Ok(AdamW {
            cfg,
            t: 0,
            m,
            v,
            no_decay,
        })
    }

    /// Whether a parameter is excluded from weight decay.
    pub fn excluded_from_decay(&self, name: &str) -> bool {
        self.no_decay.contains(name)
    }

    /// One update with learning rate `lr`.
    pub fn step(
        &mut self,
        params: &BTreeMap<String, Var>,
        grads: &BTreeMap<String, Tensor>,
        lr: f64,
    ) -> Result<()> {
        self.t += 1;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        for (name, p) in params {
            let Some(g) = grads.get(name) else { continue };
            let g = g.to_dtype(DType::F32)?;
            let (Some(m), Some(v)) = (self.m.get_mut(name), self.v.get_mut(name)) else {
                continue;
            };
            let wd = if self.no_decay.contains(name) {
                0.0
            } else {
                self.cfg.weight_decay
            };
            let w = p.as_tensor();
            if w.device().is_cpu()
                && [w, &*m, &*v, &g]
                    .iter()
                    .all(|t| t.dtype() == DType::F32 && t.is_contiguous())
            {
                // Three passes in place, no allocation (composed: a dozen tensors per step).
                m.inplace_op2(
                    &g,
                    &crate::ops::Moment {
                        beta: b1,
                        square: false,
                    },
                )?;
                v.inplace_op2(
                    &g,
                    &crate::ops::Moment {
                        beta: b2,
                        square: true,
                    },
                )?;
                w.inplace_op3(
                    &*m,
                    &*v,
                    &crate::ops::AdamApply {
                        lr,
                        decay: wd,
                        c1,
                        c2,
                        eps: self.cfg.eps,
                    },
                )?;
                continue;
            }
            *m = ((&*m * b1)? + (&g * (1.0 - b1))?)?;
            *v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let update = (&*m / c1)?.div(&((&*v / c2)?.sqrt()? + self.cfg.eps)?)?;
            let next = ((w * (1.0 - lr * wd))? - (update * lr)?)?;
            p.set(&next)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_a_tenth() {
        let lr = |s| learning_rate(1.0, 0.1, 10, 110, s);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!((lr(60) - 0.55).abs() < 1e-12, "half way down the cosine");
        assert!((lr(110) - 0.1).abs() < 1e-12);
        assert!((lr(500) - 0.1).abs() < 1e-12, "stays at the floor");
        for s in 10..110 {
            assert!(lr(s + 1) <= lr(s));
        }
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let dev = candle_core::Device::Cpu;
        let mut g = BTreeMap::from([
            ("a".to_string(), Tensor::new(&[3f32, 0.0], &dev).expect("t")),
            ("b".to_string(), Tensor::new(&[4f32], &dev).expect("t")),
        ]);
        let before = clip(&mut g, 1.0).expect("clip");
        assert!((before - 5.0).abs() < 1e-6);
        assert!((grad_norm(&g).expect("norm") - 1.0).abs() < 1e-5);
    }

    #[test]
    fn decay_is_decoupled_and_skips_excluded_parameters() {
        let dev = candle_core::Device::Cpu;
        let params = BTreeMap::from([
            ("w".to_string(), Var::new(&[1f32, 1.0], &dev).expect("v")),
            ("norm".to_string(), Var::new(&[1f32, 1.0], &dev).expect("v")),
        ]);
        let cfg = OptimSection {
            weight_decay: 0.5,
            ..OptimSection::default()
        };
        let mut opt = AdamW::new(cfg, &params, |n, _| n == "w").expect("adamw");
        let zeros = BTreeMap::from([
            (
                "w".to_string(),
                Tensor::zeros(2, DType::F32, &dev).expect("z"),
            ),
            (
                "norm".to_string(),
                Tensor::zeros(2, DType::F32, &dev).expect("z"),
            ),
        ]);
        opt.step(&params, &zeros, 0.1).expect("step");
        let w = params["w"].as_tensor().to_vec1::<f32>().expect("w");
        let n = params["norm"].as_tensor().to_vec1::<f32>().expect("n");
        assert!(
            (w[0] - 0.95).abs() < 1e-6,
            "w shrinks by lr·wd without a gradient: {w:?}"
        );
        assert_eq!(n, vec![1.0, 1.0]);
    }

    #[test]
    fn the_fused_step_follows_adamw_over_several_steps() {
        let dev = candle_core::Device::Cpu;
        let w0 = [0.5f32, -1.0, 2.0];
        let params = BTreeMap::from([("w".to_string(), Var::new(&w0, &dev).expect("v"))]);
        let cfg = OptimSection {
            weight_decay: 0.1,
            ..OptimSection::default()
        };
        let (b1, b2, eps) = (cfg.beta1, cfg.beta2, cfg.eps);
        let mut opt = AdamW::new(cfg, &params, |_, _| true).expect("adamw");
        // The reference in f64, written out.
        let (mut w, mut m, mut v) = (w0.map(f64::from), [0f64; 3], [0f64; 3]);
        for t in 1..=3 {
            let g = [0.3 * t as f64, -0.2, 0.05];
            let gt = Tensor::new(&g.map(|x| x as f32), &dev).expect("g");
            opt.step(&params, &BTreeMap::from([("w".to_string(), gt)]), 0.01)
                .expect("step");
            let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
            for i in 0..3 {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                w[i] = w[i] * (1.0 - 0.01 * 0.1) - 0.01 * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
            }
        }
        let got = params["w"].as_tensor().to_vec1::<f32>().expect("w");
        for (a, b) in got.iter().zip(&w) {
            assert!((f64::from(*a) - b).abs() < 1e-6, "{got:?} vs {w:?}");
        }
        let m_got = opt.m["w"].to_vec1::<f32>().expect("m");
        assert!((f64::from(m_got[0]) - m[0]).abs() < 1e-6);
    }
}
