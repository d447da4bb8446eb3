//! CPU kernels of the llama forward pass: quantized matmul (`quant`) and the
//! small element-wise and attention ops (`ops`). They work on plain `f32`
//! slices owned by the caller, so the forward pass allocates nothing per step.

pub mod ops;
pub mod quant;
