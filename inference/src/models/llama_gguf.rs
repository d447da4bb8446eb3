//! A llama-family decoder over GGUF tensors, written for continuous batching.
//!
//! Unlike candle's `quantized_llama`, the model keeps no state: every call of
//! `forward` ([`Decoder::forward`]) takes a batch of sequences, each with its own
//! tokens, start position and [`KvCache`], so a prefill chunk of one request
//! and decode steps of fifteen others run as one pass. All rows of the batch
//! share each weight read (the batched matmul in `kernels::quant`); only
//! attention is per sequence.
//!
//! Tensors are read with candle's GGUF reader into `QTensor`s. Q4_0, Q4_1 and
//! Q8_0 weights are repacked for our SIMD kernels; any other type (K-quants,
//! F16, ...) runs through candle's `QMatMul`, so every llama-style GGUF loads.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, LlamaConfig, RopeStyle};
use crate::kernels::ops;
use crate::kernels::quant::{quantize_rows, BlockQ8A, QFormat, QMatrix};
use crate::kv_cache::KvCache;
use crate::models::{check_batch, logit_rows, BatchSeq, Decoder};

/// A weight matrix `[out, in]` and the way we multiply by it.
enum Linear {
    /// Our kernels.
    Quant(Arc<QMatrix>),
    /// candle's quantized matmul, for GGUF types we have no kernel for.
    Candle {
        mm: QMatMul,
        rows: usize,
        cols: usize,
    },
}

impl Linear {
    fn rows(&self) -> usize {
        match self {
            Self::Quant(q) => q.rows(),
            Self::Candle { rows, .. } => *rows,
        }
    }

    fn cols(&self) -> usize {
        match self {
            Self::Quant(q) => q.cols(),
            Self::Candle { cols, .. } => *cols,
        }
    }

    /// `out[m][rows] = x[m][cols] @ W^T`. `xq` is `x` quantized by the caller
    /// (shared by every `Quant` matrix that reads the same input).
    fn forward(&self, x: &[f32], xq: &[BlockQ8A], m: usize, out: &mut [f32]) -> candle_core::Result<()> {
        match self {
            Self::Quant(q) => {
                q.matmul(xq, m, out);
                Ok(())
            }
            Self::Candle { mm, rows, cols } => {
                let t = Tensor::from_slice(&x[..m * cols], (m, *cols), &Device::Cpu)?;
                let y = mm.forward(&t)?.flatten_all()?.to_vec1::<f32>()?;
                out[..m * rows].copy_from_slice(&y);
                Ok(())
            }
        }
    }
}

/// Token embedding table.
enum Embedding {
    Quant(Arc<QMatrix>),
    Dense { table: Vec<f32>, dim: usize },
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Q, K and V fused into one matrix `[n_embd + 2 kv_dim, n_embd]` when the
    /// three share a format: one pass over the input instead of three.
    qkv: Vec<Linear>,
    qkv_bias: Option<Vec<f32>>,
    o: Linear,
    ffn_norm: Vec<f32>,
    /// Gate and up, fused likewise (`[2 n_ff, n_embd]`).
    gate_up: Vec<Linear>,
    down: Linear,
}

/// Reusable activation buffers, grown to the largest batch seen and never
/// shrunk, so a steady decode loop does not reallocate them (a few small
/// per-call index vectors remain: matmul's row table, attention's owners).
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    xq: Vec<BlockQ8A>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    angles: Vec<(f32, f32)>,
    rows: Vec<usize>,
    sel: Vec<f32>,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch").field("rows", &self.x.len()).finish()
    }
}

fn grow<T: Clone + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

/// The loaded model. Immutable after load; share it freely.
pub struct LlamaModel {
    cfg: LlamaConfig,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    output: Linear,
    freq_factors: Option<Vec<f32>>,
    weight_bytes: usize,
}

impl std::fmt::Debug for LlamaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaModel").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

struct Loader<'a> {
    g: &'a mut GgufFile,
    bytes: usize,
}

impl Loader<'_> {
    fn invalid(&self, reason: String) -> Error {
        Error::InvalidModel {
            path: self.g.path.clone(),
            reason,
        }
    }

    fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        let g = &mut *self.g;
        g.content
            .tensor(&mut g.reader, name, &Device::Cpu)
            .map_err(|e| Error::InvalidModel {
                path: g.path.clone(),
                reason: format!("tensor `{name}`: {e}"),
            })
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self.qtensor(name)?;
        let v = t
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| self.invalid(format!("tensor `{name}`: {e}")))?;
        if v.len() != len {
            return Err(self.invalid(format!("tensor `{name}` has {} values, expected {len}", v.len())));
        }
        self.bytes += v.len() * 4;
        Ok(v)
    }

    /// A `[rows, cols]` matrix in the kernel format if we have one.
    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Linear> {
        let t = self.qtensor(name)?;
        let dims = t.shape().dims().to_vec();
        if dims != [rows, cols] {
            return Err(self.invalid(format!("tensor `{name}` has shape {dims:?}, expected [{rows}, {cols}]")));
        }
        let packed = match kernel_format(t.dtype()) {
            Some(fmt) => {
                let raw = t.data().map_err(|e| self.invalid(format!("tensor `{name}`: {e}")))?;
                QMatrix::from_ggml(fmt, rows, cols, &raw)
            }
            None => None,
        };
        match packed {
            Some(q) => {
                self.bytes += q.size_in_bytes();
                Ok(Linear::Quant(Arc::new(q)))
            }
            None => {
                self.bytes += t.storage_size_in_bytes();
                let mm = QMatMul::from_qtensor(t).map_err(|e| self.invalid(format!("tensor `{name}`: {e}")))?;
                Ok(Linear::Candle { mm, rows, cols })
            }
        }
    }

    /// Several matrices with the same input, fused into one when they share
    /// a format we have kernels for (GGUF rows are contiguous, so fusing is
    /// concatenating the raw blocks before repacking).
    fn fused(&mut self, parts: &[(&str, usize)], cols: usize) -> Result<Vec<Linear>> {
        let mut tensors = Vec::with_capacity(parts.len());
        for (name, rows) in parts {
            let t = self.qtensor(name)?;
            if t.shape().dims() != [*rows, cols] {
                // Let `matrix` report the shape error.
                return parts.iter().map(|(n, r)| self.matrix(n, *r, cols)).collect();
            }
            tensors.push(t);
        }
        let fmt = kernel_format(tensors[0].dtype());
        if fmt.is_none() || tensors.iter().any(|t| kernel_format(t.dtype()) != fmt) {
            return parts.iter().map(|(n, r)| self.matrix(n, *r, cols)).collect();
        }
        let mut raw = Vec::new();
        for (t, (name, _)) in tensors.iter().zip(parts) {
            raw.extend_from_slice(&t.data().map_err(|e| self.invalid(format!("tensor `{name}`: {e}")))?);
        }
        let rows = parts.iter().map(|(_, r)| r).sum();
        let q = fmt
            .and_then(|f| QMatrix::from_ggml(f, rows, cols, &raw))
            .ok_or_else(|| self.invalid(format!("cannot fuse {parts:?}")))?;
        self.bytes += q.size_in_bytes();
        Ok(vec![Linear::Quant(Arc::new(q))])
    }
}

/// Our kernel format for a GGUF type, if we have one.
fn kernel_format(dtype: GgmlDType) -> Option<QFormat> {
    match dtype {
        GgmlDType::Q4_0 => Some(QFormat::Q4_0),
        GgmlDType::Q4_1 => Some(QFormat::Q4_1),
        GgmlDType::Q8_0 => Some(QFormat::Q8_0),
        _ => None,
    }
}

impl LlamaModel {
    /// Load a llama-family GGUF (llama, mistral, qwen2) from `path`.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_gguf(&mut GgufFile::open(path)?)
    }

    /// Load the weights of an opened GGUF.
    pub fn from_gguf(g: &mut GgufFile) -> Result<Self> {
        let cfg = LlamaConfig::from_gguf(g)?;
        let mut ld = Loader { g, bytes: 0 };
        let (d, kvd, ff) = (cfg.n_embd, cfg.kv_dim(), cfg.n_ff);
        let qd = cfg.n_head * cfg.head_dim;

        let embed = match ld.matrix("token_embd.weight", cfg.vocab_size, d)? {
            Linear::Quant(q) => Embedding::Quant(q),
            Linear::Candle { .. } => {
                // No kernel for this format: keep an f32 table for lookups.
                let table = ld
                    .qtensor("token_embd.weight")?
                    .dequantize(&Device::Cpu)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|e| ld.invalid(format!("token_embd.weight: {e}")))?;
                Embedding::Dense { table, dim: d }
            }
        };

        let mut layers = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{l}.{s}");
            let qkv_bias = if ld.g.has_tensor(&p("attn_q.bias")) {
                let mut b = ld.vector(&p("attn_q.bias"), qd)?;
                b.extend(ld.vector(&p("attn_k.bias"), kvd)?);
                b.extend(ld.vector(&p("attn_v.bias"), kvd)?);
                Some(b)
            } else {
                None
            };
            layers.push(Layer {
                attn_norm: ld.vector(&p("attn_norm.weight"), d)?,
                qkv: ld.fused(
                    &[(&p("attn_q.weight"), qd), (&p("attn_k.weight"), kvd), (&p("attn_v.weight"), kvd)],
                    d,
                )?,
                qkv_bias,
                o: ld.matrix(&p("attn_output.weight"), d, qd)?,
                ffn_norm: ld.vector(&p("ffn_norm.weight"), d)?,
                gate_up: ld.fused(&[(&p("ffn_gate.weight"), ff), (&p("ffn_up.weight"), ff)], d)?,
                down: ld.matrix(&p("ffn_down.weight"), d, ff)?,
            });
        }
        let norm = ld.vector("output_norm.weight", d)?;
        let output = if ld.g.has_tensor("output.weight") {
            ld.matrix("output.weight", cfg.vocab_size, d)?
        } else {
            // Tied embeddings: the output head is the embedding table.
            match &embed {
                Embedding::Quant(q) => Linear::Quant(Arc::clone(q)),
                Embedding::Dense { .. } => ld.matrix("token_embd.weight", cfg.vocab_size, d)?,
            }
        };
        let freq_factors = if ld.g.has_tensor("rope_freqs.weight") {
            Some(ld.vector("rope_freqs.weight", cfg.rope_dim / 2)?)
        } else {
            None
        };
        let weight_bytes = ld.bytes;
        Ok(Self {
            cfg,
            embed,
            layers,
            norm,
            output,
            freq_factors,
            weight_bytes,
        })
    }

    /// Causal attention for every token of the batch (its cache already
    /// holds this step's keys and values), in parallel over tokens.
    fn attention(&self, batch: &[BatchSeq<'_, KvCache>], layer: usize, qkv: &[f32], out: &mut [f32]) {
        let cfg = &self.cfg;
        let (hd, kvd) = (cfg.head_dim, cfg.kv_dim());
        let qd = cfg.n_head * hd;
        let qkv_w = qd + 2 * kvd;
        let group = cfg.n_head / cfg.n_head_kv;
        // (sequence index, position) of every token, in batch order.
        let owners: Vec<(usize, usize)> = batch
            .iter()
            .enumerate()
            .flat_map(|(si, b)| (0..b.tokens.len()).map(move |i| (si, b.start_pos + i)))
            .collect();
        out.par_chunks_mut(qd)
            .zip(qkv.par_chunks(qkv_w))
            .zip(owners.par_iter())
            .for_each_init(Vec::new, |scores: &mut Vec<f32>, ((o, row), &(si, pos))| {
                let len = pos + 1;
                grow(scores, len);
                let (k, v) = batch[si].cache.layer(layer);
                for h in 0..cfg.n_head {
                    let kv_off = (h / group) * hd;
                    ops::attend(
                        &row[h * hd..(h + 1) * hd],
                        k,
                        v,
                        len,
                        kvd,
                        kv_off,
                        scores,
                        &mut o[h * hd..(h + 1) * hd],
                    );
                }
            });
    }
}

impl Decoder for LlamaModel {
    type Cache = KvCache;
    type Scratch = Scratch;

    fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    fn new_cache(&self, positions: usize) -> Result<KvCache> {
        Ok(KvCache::new(self.cfg.n_layer, self.cfg.kv_dim(), positions))
    }

    fn forward(&self, batch: &mut [BatchSeq<'_, KvCache>], s: &mut Scratch, logits: &mut Vec<f32>) -> Result<()> {
        let cfg = &self.cfg;
        let (d, kvd, hd, ff) = (cfg.n_embd, cfg.kv_dim(), cfg.head_dim, cfg.n_ff);
        let qd = cfg.n_head * hd;
        let qkv_w = qd + 2 * kvd;
        let t_total: usize = batch.iter().map(|b| b.tokens.len()).sum();
        let half_rope = cfg.rope_dim / 2;

        check_batch(batch, cfg.vocab_size)?;

        grow(&mut s.x, t_total * d);
        grow(&mut s.h, t_total * d);
        grow(&mut s.qkv, t_total * qkv_w);
        grow(&mut s.attn, t_total * qd);
        grow(&mut s.proj, t_total * d);
        grow(&mut s.gate_up, t_total * 2 * ff);
        grow(&mut s.act, t_total * ff);
        grow(&mut s.angles, t_total * half_rope);

        // Embeddings and RoPE angles, token by token in batch order.
        let mut t = 0;
        for b in batch.iter() {
            for (i, &tok) in b.tokens.iter().enumerate() {
                let row = &mut s.x[t * d..(t + 1) * d];
                match &self.embed {
                    Embedding::Quant(q) => q.dequantize_row(tok as usize, row),
                    Embedding::Dense { table, dim } => {
                        row.copy_from_slice(&table[tok as usize * dim..(tok as usize + 1) * dim])
                    }
                }
                ops::rope_angles(
                    b.start_pos + i,
                    cfg.rope_dim,
                    cfg.rope_theta,
                    self.freq_factors.as_deref(),
                    &mut s.angles[t * half_rope..(t + 1) * half_rope],
                );
                t += 1;
            }
        }
        for b in batch.iter_mut() {
            b.cache.reserve(b.start_pos + b.tokens.len());
        }

        let neox = cfg.rope_style == RopeStyle::Neox;
        let cerr = |e: candle_core::Error| Error::Candle(e);
        for (li, layer) in self.layers.iter().enumerate() {
            // Attention block.
            ops::rms_norm(&s.x[..t_total * d], &layer.attn_norm, cfg.rms_eps, &mut s.h[..t_total * d]);
            quantize_rows(&s.h[..t_total * d], &mut s.xq);
            let mut off = 0;
            for part in &layer.qkv {
                // Unfused parts land side by side in each qkv row via a
                // temporary; the fused (usual) case writes directly.
                if layer.qkv.len() == 1 {
                    part.forward(&s.h, &s.xq, t_total, &mut s.qkv).map_err(cerr)?;
                } else {
                    let w = part.rows();
                    grow(&mut s.proj, t_total * w.max(d));
                    part.forward(&s.h, &s.xq, t_total, &mut s.proj).map_err(cerr)?;
                    for r in 0..t_total {
                        s.qkv[r * qkv_w + off..r * qkv_w + off + w].copy_from_slice(&s.proj[r * w..(r + 1) * w]);
                    }
                    off += w;
                }
            }
            if let Some(bias) = &layer.qkv_bias {
                for row in s.qkv[..t_total * qkv_w].chunks_exact_mut(qkv_w) {
                    ops::add_assign(row, bias);
                }
            }
            let mut t = 0;
            for b in batch.iter_mut() {
                for i in 0..b.tokens.len() {
                    let row = &mut s.qkv[t * qkv_w..(t + 1) * qkv_w];
                    let cs = &s.angles[t * half_rope..(t + 1) * half_rope];
                    let (q, kv) = row.split_at_mut(qd);
                    let (k, v) = kv.split_at_mut(kvd);
                    ops::rope(q, hd, cs, neox);
                    ops::rope(k, hd, cs, neox);
                    b.cache.write(li, b.start_pos + i, k, v);
                    t += 1;
                }
            }
            self.attention(batch, li, &s.qkv[..t_total * qkv_w], &mut s.attn[..t_total * qd]);
            quantize_rows(&s.attn[..t_total * qd], &mut s.xq);
            layer.o.forward(&s.attn, &s.xq, t_total, &mut s.proj).map_err(cerr)?;
            ops::add_assign(&mut s.x[..t_total * d], &s.proj[..t_total * d]);

            // Feed-forward block.
            ops::rms_norm(&s.x[..t_total * d], &layer.ffn_norm, cfg.rms_eps, &mut s.h[..t_total * d]);
            quantize_rows(&s.h[..t_total * d], &mut s.xq);
            if layer.gate_up.len() == 1 {
                layer.gate_up[0].forward(&s.h, &s.xq, t_total, &mut s.gate_up).map_err(cerr)?;
            } else {
                // Unfused: gate then up, interleaved into [gate | up] rows.
                for (pi, part) in layer.gate_up.iter().enumerate() {
                    part.forward(&s.h, &s.xq, t_total, &mut s.act).map_err(cerr)?;
                    for r in 0..t_total {
                        let dst = r * 2 * ff + pi * ff;
                        s.gate_up[dst..dst + ff].copy_from_slice(&s.act[r * ff..(r + 1) * ff]);
                    }
                }
            }
            ops::silu_mul(&s.gate_up[..t_total * 2 * ff], ff, &mut s.act[..t_total * ff]);
            quantize_rows(&s.act[..t_total * ff], &mut s.xq);
            layer.down.forward(&s.act, &s.xq, t_total, &mut s.proj).map_err(cerr)?;
            ops::add_assign(&mut s.x[..t_total * d], &s.proj[..t_total * d]);
        }

        // Output head, only on the rows whose logits were asked for.
        logit_rows(batch, &mut s.rows);
        let r = s.rows.len();
        grow(&mut s.sel, r * d);
        for (i, &row) in s.rows.iter().enumerate() {
            ops::rms_norm(&s.x[row * d..(row + 1) * d], &self.norm, cfg.rms_eps, &mut s.sel[i * d..(i + 1) * d]);
        }
        logits.resize(r * self.output.rows(), 0.0);
        if r > 0 {
            quantize_rows(&s.sel[..r * d], &mut s.xq);
            self.output.forward(&s.sel, &s.xq, r, logits).map_err(cerr)?;
        }
        debug_assert_eq!(self.output.cols(), d);
        Ok(())
    }
}
