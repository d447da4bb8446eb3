//! Whisper's linear layers: candle's dense matmul, or on the CPU our 8-bit
//! kernels (`kernels::quant`: weights quantized to Q8_0 once at load,
//! activations per 32 values at each call, integer dot products with VNNI or
//! AVX2), which is what faster-whisper's `int8` compute type does with
//! oneDNN.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;

use crate::error::{Error, Result};
use crate::kernels::quant::{quantize_rows, BlockQ8A, QMatrix};
use rayon::prelude::*;

/// Activations quantized per rayon task.
const QUANTIZE_TASK: usize = 1 << 15;

/// Numbers the linear layers compute with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 8-bit weights and activations on the CPU (the default there).
    #[default]
    Int8,
    /// The model's weights in f32 on the CPU (f16 on CUDA, whatever this says).
    Float,
}

/// `y = x w^T + b`.
pub(crate) enum Proj {
    Dense(Linear),
    Int8 { w: QMatrix, bias: Option<Vec<f32>> },
}

impl Proj {
    /// `weight` `[out, in]` and `bias` `[out]` as loaded; 8-bit where asked
    /// and the weights allow (CPU, `in` a multiple of 32).
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>, precision: Precision) -> Result<Self> {
        let (rows, cols) = weight.dims2()?;
        if precision == Precision::Int8 && weight.device().is_cpu() && cols % 32 == 0 {
            let flat = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            if let Some(w) = QMatrix::quantize_q8_0(rows, cols, &flat) {
                let bias = bias.map(|b| b.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose()?;
                return Ok(Self::Int8 { w, bias });
            }
        }
        Ok(Self::Dense(Linear::new(weight, bias)))
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (w, bias) = match self {
            Self::Dense(l) => return Ok(l.forward(x)?),
            Self::Int8 { w, bias } => (w, bias),
        };
        let dims = x.dims();
        let cols = *dims.last().ok_or_else(|| Error::Backend("a linear layer's input has no dimensions".into()))?;
        if cols != w.cols() {
            return Err(Error::Backend(format!("linear layer of {} inputs fed {cols}", w.cols())));
        }
        let m = x.elem_count() / cols;
        let input = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        // In row groups across the pool: a 30 s window is 1500 rows.
        let group = cols * (QUANTIZE_TASK / cols).max(1);
        let xq: Vec<BlockQ8A> = input
            .par_chunks(group)
            .map(|rows| {
                let mut q = Vec::new();
                quantize_rows(rows, &mut q);
                q
            })
            .collect::<Vec<_>>()
            .concat();
        let n = w.rows();
        let mut out = vec![0f32; m * n];
        w.matmul(&xq, m, &mut out);
        if let Some(b) = bias {
            for row in out.chunks_exact_mut(n) {
                row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
            }
        }
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        Ok(Tensor::from_vec(out, shape, &Device::Cpu)?)
    }
}
