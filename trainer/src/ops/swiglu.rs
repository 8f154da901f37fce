//! SwiGLU, `silu(gate) · up`, fused: one pass forward and one pass backward, where candle's
//! composed SiLU and product take two passes forward and about fifteen backward (its SiLU
//! gradient alone is built from seven element-wise ops).

use super::f32_slice;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel work item.
const CHUNK: usize = 1 << 14;

/// `silu(gate) · up` element-wise, for `gate` and `up` of one shape (CPU, f32, contiguous).
#[derive(Clone, Copy)]
pub struct SwiGlu;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn same_shape(a: &Layout, b: &Layout) -> Result<()> {
    if a.dims() != b.dims() {
        candle_core::bail!("swiglu: gate {:?} and up {:?} differ", a.dims(), b.dims());
    }
    Ok(())
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_shape(gl, ul)?;
        let g = f32_slice(gs, gl, "swiglu")?;
        let u = f32_slice(us, ul, "swiglu")?;
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| {
                for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                    *o = g * sigmoid(g) * u;
                }
            });
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // Both gradients in one pass, as the two halves of one [2, n] buffer.
        let both = gate.apply_op3_no_bwd(up, &grad, &SwiGluBwd)?;
        let n = gate.elem_count();
        let half = |i: usize| -> Result<Tensor> { both.narrow(0, i, 1)?.reshape(gate.shape()) };
        debug_assert_eq!(both.dims(), [2, n]);
        Ok((Some(half(0)?), Some(half(1)?)))
    }
}

/// `(d gate, d up) = (g · up · σ(x)·(1 + x·(1 − σ(x))), g · silu(x))` for `x` = gate, as [2, n].
struct SwiGluBwd;

impl CustomOp3 for SwiGluBwd {
    fn name(&self) -> &'static str {
        "swiglu-bwd"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_shape(gl, ul)?;
        same_shape(gl, dl)?;
        let x = f32_slice(gs, gl, "swiglu gradient")?;
        let u = f32_slice(us, ul, "swiglu gradient")?;
        let d = f32_slice(ds, dl, "swiglu gradient")?;
        let n = x.len();
        let mut out = vec![0f32; 2 * n];
        let (dgate, dup) = out.split_at_mut(n);
        dgate
            .par_chunks_mut(CHUNK)
            .zip(dup.par_chunks_mut(CHUNK))
            .zip(x.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .zip(d.par_chunks(CHUNK))
            .for_each(|(((dg, du), (x, u)), d)| {
                for i in 0..x.len() {
                    let s = sigmoid(x[i]);
                    du[i] = d[i] * x[i] * s;
                    dg[i] = d[i] * u[i] * s * (1.0 + x[i] * (1.0 - s));
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((2, n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn swiglu_matches_the_composed_ops_forward_and_backward() {
        let dev = Device::Cpu;
        let n = 3 * CHUNK + 77; // several work items and a ragged end
        let vals = |seed: u32| -> Vec<f32> {
            (0..n as u32)
                .map(|i| {
                    ((i.wrapping_mul(2654435761).wrapping_add(seed) % 2000) as f32 - 1000.0) / 150.0
                })
                .collect()
        };
        let shape = (n / 7 + 1, 7);
        let pad = |mut v: Vec<f32>| {
            v.resize(shape.0 * shape.1, 0.5);
            v
        };
        let g =
            Var::from_tensor(&Tensor::from_vec(pad(vals(1)), shape, &dev).expect("g")).expect("v");
        let u =
            Var::from_tensor(&Tensor::from_vec(pad(vals(2)), shape, &dev).expect("u")).expect("v");
        let w = Tensor::from_vec(pad(vals(3)), shape, &dev).expect("w");
        let fused = g
            .as_tensor()
            .apply_op2(u.as_tensor(), SwiGlu)
            .expect("fused");
        let composed = (g.as_tensor().silu().expect("silu") * u.as_tensor()).expect("mul");
        let diff = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .expect("sub")
                .abs()
                .expect("abs")
                .flatten_all()
                .expect("flat")
                .max(0)
                .expect("max")
                .to_scalar::<f32>()
                .expect("scalar")
        };
        assert!(diff(&fused, &composed) < 1e-5, "forward");
        let gf = (fused * &w)
            .expect("m")
            .sum_all()
            .expect("s")
            .backward()
            .expect("b");
        let gc = (composed * &w)
            .expect("m")
            .sum_all()
            .expect("s")
            .backward()
            .expect("b");
        for (what, v) in [("gate", &g), ("up", &u)] {
            let a = gf.get(v.as_tensor()).expect("fused gradient");
            let b = gc.get(v.as_tensor()).expect("composed gradient");
            assert!(diff(a, b) < 1e-4, "{what}: {}", diff(a, b));
        }
    }
}
