//! Dropout by a fixed mask, `x ⊙ m`, whose backward pass is `g ⊙ m` only: candle's product
//! also computes the mask's gradient (an input-sized buffer kept until the backward pass ends).

use super::f32_slice;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Elements per parallel work item.
const CHUNK: usize = 1 << 14;

/// `x ⊙ mask` for a contiguous f32 `x` on the CPU with as many elements as `mask`.
#[derive(Clone)]
pub struct MaskMul {
    /// The mask (0 or 1/keep per element).
    pub mask: Arc<Vec<f32>>,
}

fn times(x: &[f32], m: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(m.par_chunks(CHUNK)))
        .for_each(|(o, (x, m))| {
            for ((o, &x), &m) in o.iter_mut().zip(x).zip(m) {
                *o = x * m;
            }
        });
    out
}

impl CustomOp1 for MaskMul {
    fn name(&self) -> &'static str {
        "mask-mul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "dropout")?;
        if x.len() != self.mask.len() {
            candle_core::bail!("dropout: {} values, a mask of {}", x.len(), self.mask.len());
        }
        Ok((CpuStorage::F32(times(x, &self.mask)), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn a_mask_product_matches_candles_and_keeps_no_mask_gradient() {
        let dev = Device::Cpu;
        let n = 2 * CHUNK + 3;
        let xs: Vec<f32> = (0..n).map(|i| (i % 17) as f32 - 8.0).collect();
        let ms: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { 0.0 } else { 1.5 }).collect();
        let gs: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.25).collect();
        let x = Var::from_tensor(&Tensor::from_vec(xs, n, &dev).expect("x")).expect("v");
        let m = Tensor::from_vec(ms.clone(), n, &dev).expect("m");
        let g = Tensor::from_vec(gs, n, &dev).expect("g");
        let fused = x
            .as_tensor()
            .apply_op1(MaskMul { mask: Arc::new(ms) })
            .expect("fused");
        let plain = (x.as_tensor() * &m).expect("plain");
        let v = |t: &Tensor| t.to_vec1::<f32>().expect("v");
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
        assert_eq!(
            v(gf.get(x.as_tensor()).expect("dx")),
            v(gp.get(x.as_tensor()).expect("dx"))
        );
        assert!(gp.get(&m).is_some() && gf.get(&m).is_none());
    }
}
