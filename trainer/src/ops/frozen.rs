//! A linear layer over a frozen weight (LoRA's base weights, a frozen LM head): `x · Wᵀ` whose
//! backward pass computes only the input's gradient `g · W`. Candle's matmul backward computes
//! both operands' gradients whatever is trained, so under LoRA every frozen weight cost a
//! weight-gradient product (as many FLOPs as its forward product) and kept the result until the
//! backward pass ended.

use super::f32_slice;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};

/// Attaches the product `x · Wᵀ`, computed outside the graph, to `x`'s graph (CPU, f32): the
/// forward pass returns a copy of `product`, the backward pass `g · W`.
#[derive(Clone)]
pub struct FrozenLinear {
    /// `x · Wᵀ`, [N, out], computed from the detached input.
    pub product: Tensor,
    /// W, [out, in].
    pub weight: Tensor,
}

impl FrozenLinear {
    /// `x · Wᵀ` for `x` [N, in] and a frozen `w` [out, in], with a gradient for `x` only.
    pub fn apply(x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let product = x.detach().matmul(&w.t()?)?;
        if !x.track_op() {
            return Ok(product);
        }
        x.apply_op1(FrozenLinear {
            product,
            weight: w.clone(),
        })
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (storage, layout) = self.product.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("frozen linear: a CPU product expected");
        };
        let values = f32_slice(cpu, layout, "frozen linear")?.to_vec();
        Ok((CpuStorage::F32(values), layout.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.weight)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn a_frozen_linear_matches_the_matmul_and_computes_no_weight_gradient() {
        let dev = Device::Cpu;
        let vals = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + seed * 104729) % 1000) as f32 - 500.0) / 300.0)
                .collect()
        };
        let x = Var::from_tensor(&Tensor::from_vec(vals(6 * 5, 1), (6, 5), &dev).expect("x"))
            .expect("var");
        let w = Tensor::from_vec(vals(4 * 5, 2), (4, 5), &dev).expect("w");
        let g = Tensor::from_vec(vals(6 * 4, 3), (6, 4), &dev).expect("g");
        let fused = FrozenLinear::apply(x.as_tensor(), &w).expect("fused");
        let plain = x.as_tensor().matmul(&w.t().expect("t")).expect("plain");
        let v = |t: &Tensor| t.flatten_all().expect("f").to_vec1::<f32>().expect("v");
        assert_eq!(v(&fused), v(&plain));
        let gf = (fused * &g)
            .expect("m")
            .sum_all()
            .expect("s")
            .backward()
            .expect("b");
        let gp = (plain * &g)
            .expect("m")
            .sum_all()
            .expect("s")
            .backward()
            .expect("b");
        let (a, b) = (
            v(gf.get(x.as_tensor()).expect("dx")),
            v(gp.get(x.as_tensor()).expect("dx")),
        );
        assert!(
            a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-5),
            "{a:?} {b:?}"
        );
        // Candle's matmul also produced (and kept) a gradient for the frozen weight's transpose;
        // the fused op does not.
        let wt_grads = |store: &candle_core::backprop::GradStore| {
            store
                .get_ids()
                .filter(|id| **id != x.as_tensor().id())
                .count()
        };
        assert!(
            wt_grads(&gp) > wt_grads(&gf),
            "the plain matmul kept more gradients"
        );
        // An input outside any graph gets the plain product.
        let free = FrozenLinear::apply(&x.as_detached_tensor(), &w).expect("free");
        assert!(!free.track_op());
    }
}
