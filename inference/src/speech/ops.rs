//! Softmax and GELU for the model: on the CPU our vectorised kernels
//! (`kernels::vector`) in place, rows split across the rayon pool; elsewhere
//! candle's ops. Candle's CPU versions call libm per element and allocate a
//! new tensor, which made them a fifth of tiny.en's encoder time.

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::kernels::vector;

/// Softmax over the last dimension of `x`, a tensor just computed and held
/// nowhere else: on the CPU its storage is overwritten.
pub(crate) fn softmax_last_dim(x: Tensor) -> Result<Tensor> {
    in_place(x, Op::Softmax, |x| Ok(candle_nn::ops::softmax_last_dim(x)?))
}

/// GELU (erf form, Whisper's) of `x`, which is overwritten as for [`softmax_last_dim`].
pub(crate) fn gelu_erf(x: Tensor) -> Result<Tensor> {
    in_place(x, Op::Gelu, |x| Ok(x.gelu_erf()?))
}

fn in_place(x: Tensor, op: Op, elsewhere: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return elsewhere(&x);
    }
    let x = x.contiguous()?;
    x.inplace_op1(&Rows(op))?;
    Ok(x)
}

#[derive(Clone, Copy)]
enum Op {
    Softmax,
    Gelu,
}

/// A kernel over a contiguous f32 tensor, as a candle op.
struct Rows(Op);

/// Values per rayon task: enough to amortise the hand-off.
const TASK: usize = 1 << 15;

impl InplaceOp1 for Rows {
    fn name(&self) -> &'static str {
        match self.0 {
            Op::Softmax => "starling-softmax-last-dim",
            Op::Gelu => "starling-gelu-erf",
        }
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let name = self.name();
        let CpuStorage::F32(data) = storage else { candle_core::bail!("{name} takes f32") };
        let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("{name} takes a contiguous tensor") };
        let data = &mut data[start..end];
        match self.0 {
            Op::Softmax => {
                let cols = layout.dims().last().copied().unwrap_or(1).max(1);
                let rows_per_task = (TASK / cols).max(1);
                data.par_chunks_mut(rows_per_task * cols).for_each(|rows| vector::softmax_rows(rows, cols));
            }
            Op::Gelu => data.par_chunks_mut(TASK).for_each(vector::gelu_erf),
        }
        Ok(())
    }
}
