//! The llama-family decoder on candle tensors, for any candle device.
//!
//! This is the CUDA path: weights stay quantized on the device (candle's
//! `QMatMul` and its GGUF kernels), norms, RoPE and softmax use candle-nn's
//! fused kernels, and each sequence's keys and values live in device
//! buffers. It is the same continuous-batching contract as `llama_gguf`
//! (a batch of sequences, each with its own start position and cache), so
//! the engine drives either one. On the CPU it runs too, slower than our own
//! kernels; the tests run it there against llama.cpp's greedy outputs, so the
//! code that runs on a GPU is checked on every machine.
//!
//! All rows of a step share every matmul; RoPE runs once over the whole batch
//! with per-token angles; attention is per sequence (its cache has its own
//! length), grouped-query heads folded into one batched matmul per sequence.

use std::path::Path;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, LlamaConfig, RopeStyle};
use crate::kernels::ops;
use crate::models::{check_batch, logit_rows, BatchSeq, Decoder, SequenceCache};

struct Layer {
    attn_norm: Tensor,
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    /// Q, K and V biases (qwen2), `[n_embd + 2 kv_dim]`.
    qkv_bias: Option<Tensor>,
    o: QMatMul,
    ffn_norm: Tensor,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

/// The loaded model, on its device. Immutable after load.
pub struct DeviceLlama {
    cfg: LlamaConfig,
    device: Device,
    /// Dequantized embedding table `[vocab, n_embd]` (lookups are row gathers).
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: QMatMul,
    freq_factors: Option<Vec<f32>>,
    weight_bytes: usize,
}

impl std::fmt::Debug for DeviceLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceLlama")
            .field("cfg", &self.cfg)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// One sequence's keys and values on the device: per layer, K and V buffers
/// `[n_head_kv, capacity, head_dim]`, allocated whole for the sequence's
/// reservation when it starts (growing would copy, with both copies alive
/// on the GPU beyond what the KV budget counts).
pub struct DeviceKvCache {
    device: Device,
    n_head_kv: usize,
    head_dim: usize,
    len: usize,
    cap: usize,
    layers: Vec<(Tensor, Tensor)>,
    n_layer: usize,
}

impl std::fmt::Debug for DeviceKvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKvCache").field("len", &self.len).field("cap", &self.cap).finish()
    }
}

impl DeviceKvCache {
    /// Make room for `positions` positions (copying what is there). Only
    /// the start allocates: a sequence never passes its reservation.
    fn reserve(&mut self, positions: usize) -> candle_core::Result<()> {
        if positions <= self.cap {
            return Ok(());
        }
        let cap = positions;
        let shape = (self.n_head_kv, cap, self.head_dim);
        let mut layers = Vec::with_capacity(self.n_layer);
        for l in 0..self.n_layer {
            let k = Tensor::zeros(shape, DType::F32, &self.device)?;
            let v = Tensor::zeros(shape, DType::F32, &self.device)?;
            if let Some((old_k, old_v)) = self.layers.get(l) {
                if self.len > 0 {
                    k.slice_set(&old_k.narrow(1, 0, self.len)?, 1, 0)?;
                    v.slice_set(&old_v.narrow(1, 0, self.len)?, 1, 0)?;
                }
            }
            layers.push((k, v));
        }
        self.layers = layers;
        self.cap = cap;
        Ok(())
    }

    /// Write `k`, `v` (`[n_head_kv, n, head_dim]`) at `pos` in `layer` and
    /// return views of every position up to and including them. The last
    /// layer's write makes the positions count.
    fn append(&mut self, layer: usize, pos: usize, k: &Tensor, v: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let n = k.dim(1)?;
        let (ck, cv) = &self.layers[layer];
        ck.slice_set(k, 1, pos)?;
        cv.slice_set(v, 1, pos)?;
        let views = (ck.narrow(1, 0, pos + n)?, cv.narrow(1, 0, pos + n)?);
        if layer + 1 == self.n_layer {
            self.len = pos + n;
        }
        Ok(views)
    }
}

impl SequenceCache for DeviceKvCache {
    fn len(&self) -> usize {
        self.len
    }

    fn allocated_bytes(&self) -> usize {
        2 * self.n_layer * self.cap * self.n_head_kv * self.head_dim * std::mem::size_of::<f32>()
    }

    fn copy_prefix(&mut self, from: &Self, len: usize) -> Result<()> {
        if from.len < len || from.n_layer != self.n_layer {
            return Err(Error::Backend(format!("cannot copy {len} positions from a cache of {}", from.len)));
        }
        self.reserve(len)?;
        for ((k, v), (fk, fv)) in self.layers.iter().zip(&from.layers) {
            k.slice_set(&fk.narrow(1, 0, len)?, 1, 0)?;
            v.slice_set(&fv.narrow(1, 0, len)?, 1, 0)?;
        }
        self.len = len;
        Ok(())
    }
}

struct Loader<'a> {
    g: &'a mut GgufFile,
    device: &'a Device,
    bytes: usize,
}

impl Loader<'_> {
    fn invalid(&self, name: &str, e: impl std::fmt::Display) -> Error {
        Error::InvalidModel {
            path: self.g.path.clone(),
            reason: format!("tensor `{name}`: {e}"),
        }
    }

    fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        let g = &mut *self.g;
        let t = g.content.tensor(&mut g.reader, name, self.device).map_err(|e| Error::InvalidModel {
            path: g.path.clone(),
            reason: format!("tensor `{name}`: {e}"),
        })?;
        self.bytes += t.storage_size_in_bytes();
        Ok(t)
    }

    /// A `[rows, cols]` weight as a quantized matmul.
    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<QMatMul> {
        let t = self.qtensor(name)?;
        if t.shape().dims() != [rows, cols] {
            let dims = t.shape().dims().to_vec();
            return Err(self.invalid(name, format!("shape {dims:?}, expected [{rows}, {cols}]")));
        }
        QMatMul::from_qtensor(t).map_err(|e| self.invalid(name, e))
    }

    /// A 1-D f32 weight of `len` values, on the device.
    fn vector(&mut self, name: &str, len: usize) -> Result<Tensor> {
        let t = self.qtensor(name)?;
        let v = t.dequantize(self.device).and_then(|t| t.flatten_all()).map_err(|e| self.invalid(name, e))?;
        if v.elem_count() != len {
            return Err(self.invalid(name, format!("{} values, expected {len}", v.elem_count())));
        }
        Ok(v)
    }
}

impl DeviceLlama {
    /// Load a llama-family GGUF onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::from_gguf(&mut GgufFile::open(path)?, device)
    }

    /// Load the weights of an opened GGUF onto `device`.
    pub fn from_gguf(g: &mut GgufFile, device: &Device) -> Result<Self> {
        let cfg = LlamaConfig::from_gguf(g)?;
        if cfg.rope_style == RopeStyle::Neox && cfg.rope_dim != cfg.head_dim {
            // candle's NeoX RoPE pairs i with i + head_dim/2; partial rotary
            // pairs i with i + rope_dim/2.
            return Err(Error::InvalidModel {
                path: g.path.clone(),
                reason: format!(
                    "partial NeoX RoPE ({} of {} dims) is not supported on this device; use --device cpu",
                    cfg.rope_dim, cfg.head_dim
                ),
            });
        }
        let mut ld = Loader { g, device, bytes: 0 };
        let (d, kvd, ff) = (cfg.n_embd, cfg.kv_dim(), cfg.n_ff);
        let qd = cfg.n_head * cfg.head_dim;

        // Held dequantized (f32), not as loaded: count it so.
        let table = ld.qtensor("token_embd.weight")?;
        ld.bytes -= table.storage_size_in_bytes();
        let embed = table.dequantize(device).map_err(|e| ld.invalid("token_embd.weight", e))?;
        ld.bytes += embed.elem_count() * std::mem::size_of::<f32>();
        if embed.dims() != [cfg.vocab_size, d] {
            let dims = embed.dims().to_vec();
            return Err(ld.invalid("token_embd.weight", format!("shape {dims:?}, expected [{}, {d}]", cfg.vocab_size)));
        }
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{l}.{s}");
            let qkv_bias = if ld.g.has_tensor(&p("attn_q.bias")) {
                let parts = [
                    ld.vector(&p("attn_q.bias"), qd)?,
                    ld.vector(&p("attn_k.bias"), kvd)?,
                    ld.vector(&p("attn_v.bias"), kvd)?,
                ];
                Some(Tensor::cat(&parts, 0).map_err(|e| ld.invalid(&p("attn_q.bias"), e))?)
            } else {
                None
            };
            layers.push(Layer {
                attn_norm: ld.vector(&p("attn_norm.weight"), d)?,
                q: ld.matrix(&p("attn_q.weight"), qd, d)?,
                k: ld.matrix(&p("attn_k.weight"), kvd, d)?,
                v: ld.matrix(&p("attn_v.weight"), kvd, d)?,
                qkv_bias,
                o: ld.matrix(&p("attn_output.weight"), d, qd)?,
                ffn_norm: ld.vector(&p("ffn_norm.weight"), d)?,
                gate: ld.matrix(&p("ffn_gate.weight"), ff, d)?,
                up: ld.matrix(&p("ffn_up.weight"), ff, d)?,
                down: ld.matrix(&p("ffn_down.weight"), d, ff)?,
            });
        }
        let norm = ld.vector("output_norm.weight", d)?;
        let output_name = if ld.g.has_tensor("output.weight") { "output.weight" } else { "token_embd.weight" };
        let output = ld.matrix(output_name, cfg.vocab_size, d)?;
        let freq_factors = if ld.g.has_tensor("rope_freqs.weight") {
            let f = ld.vector("rope_freqs.weight", cfg.rope_dim / 2)?;
            Some(f.to_vec1::<f32>().map_err(|e| ld.invalid("rope_freqs.weight", e))?)
        } else {
            None
        };
        let weight_bytes = ld.bytes;
        Ok(Self {
            cfg,
            device: device.clone(),
            embed,
            layers,
            norm,
            output,
            freq_factors,
            weight_bytes,
        })
    }

    /// cos and sin of every token's RoPE angles, `[tokens, 1, head_dim/2]`
    /// (dimensions past `rope_dim` are left unrotated: cos 1, sin 0).
    fn rope_tables(&self, batch: &[BatchSeq<'_, DeviceKvCache>], tokens: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let cfg = &self.cfg;
        let half = cfg.head_dim / 2;
        let rot = cfg.rope_dim / 2;
        let mut cos = vec![1.0f32; tokens * half];
        let mut sin = vec![0.0f32; tokens * half];
        let mut angles = vec![(0.0, 0.0); rot];
        let mut t = 0;
        for b in batch {
            for i in 0..b.tokens.len() {
                ops::rope_angles(b.start_pos + i, cfg.rope_dim, cfg.rope_theta, self.freq_factors.as_deref(), &mut angles);
                for (j, &(c, s)) in angles.iter().enumerate() {
                    cos[t * half + j] = c;
                    sin[t * half + j] = s;
                }
                t += 1;
            }
        }
        Ok((
            Tensor::from_vec(cos, (tokens, 1, half), &self.device)?,
            Tensor::from_vec(sin, (tokens, 1, half), &self.device)?,
        ))
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        // Each token is its own batch entry, so one kernel applies every
        // token's own position.
        match self.cfg.rope_style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(x, cos, sin),
            RopeStyle::Neox => candle_nn::rotary_emb::rope(x, cos, sin),
        }
    }

    /// Causal attention of one sequence's `n` new tokens over its cache.
    /// `q`: `[n, n_head, head_dim]`, `k`/`v`: `[n, n_head_kv, head_dim]`;
    /// returns `[n, n_head * head_dim]`.
    fn attend(
        &self,
        layer: usize,
        seq: &mut BatchSeq<'_, DeviceKvCache>,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let cfg = &self.cfg;
        let (n, hd) = (seq.tokens.len(), cfg.head_dim);
        let group = cfg.n_head / cfg.n_head_kv;
        let k = k.transpose(0, 1)?.contiguous()?;
        let v = v.transpose(0, 1)?.contiguous()?;
        let (keys, values) = seq.cache.append(layer, seq.start_pos, &k, &v)?;
        // Query heads h = kv * group + g share kv head `kv`: fold them into
        // the rows of one matmul per kv head.
        let q = q.transpose(0, 1)?.contiguous()?.reshape((cfg.n_head_kv, group * n, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut scores = (q.matmul(&keys.t()?)? * scale)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        probs
            .matmul(&values)?
            .reshape((cfg.n_head, n, hd))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((n, cfg.n_head * hd))
    }

    /// The causal mask of a sequence's `n > 1` new tokens, `[1, group * n,
    /// start + n]` (rows are query head `g`, token `i` at `g * n + i`; token
    /// `i` sees positions up to `start + i`). One token sees everything: none.
    fn causal_mask(&self, start: usize, n: usize) -> candle_core::Result<Option<Tensor>> {
        if n == 1 {
            return Ok(None);
        }
        let group = self.cfg.n_head / self.cfg.n_head_kv;
        let len = start + n;
        let mut mask = vec![0.0f32; group * n * len];
        for r in 0..group * n {
            let visible = start + r % n + 1;
            mask[r * len + visible..(r + 1) * len].fill(f32::NEG_INFINITY);
        }
        Tensor::from_vec(mask, (1, group * n, len), &self.device).map(Some)
    }

    fn forward_tensors(
        &self,
        batch: &mut [BatchSeq<'_, DeviceKvCache>],
        rows: &mut Vec<usize>,
        logits: &mut Vec<f32>,
    ) -> candle_core::Result<()> {
        let cfg = &self.cfg;
        let (hd, kvd) = (cfg.head_dim, cfg.kv_dim());
        let qd = cfg.n_head * hd;
        let tokens: Vec<u32> = batch.iter().flat_map(|b| b.tokens.iter().copied()).collect();
        let t_total = tokens.len();
        let ids = Tensor::from_vec(tokens, t_total, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let (cos, sin) = self.rope_tables(batch, t_total)?;
        let mut masks = Vec::with_capacity(batch.len());
        for b in batch.iter_mut() {
            b.cache.reserve(b.start_pos + b.tokens.len())?;
            masks.push(self.causal_mask(b.start_pos, b.tokens.len())?);
        }

        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, cfg.rms_eps)?;
            let (mut q, mut k, mut v) = (layer.q.forward(&h)?, layer.k.forward(&h)?, layer.v.forward(&h)?);
            if let Some(bias) = &layer.qkv_bias {
                q = q.broadcast_add(&bias.narrow(0, 0, qd)?)?;
                k = k.broadcast_add(&bias.narrow(0, qd, kvd)?)?;
                v = v.broadcast_add(&bias.narrow(0, qd + kvd, kvd)?)?;
            }
            let q = self.rope(&q.reshape((t_total, cfg.n_head, 1, hd))?, &cos, &sin)?;
            let k = self.rope(&k.reshape((t_total, cfg.n_head_kv, 1, hd))?, &cos, &sin)?;
            let q = q.reshape((t_total, cfg.n_head, hd))?;
            let k = k.reshape((t_total, cfg.n_head_kv, hd))?;
            let v = v.reshape((t_total, cfg.n_head_kv, hd))?;
            let mut outs = Vec::with_capacity(batch.len());
            let mut t = 0;
            for (seq, mask) in batch.iter_mut().zip(&masks) {
                let n = seq.tokens.len();
                let (q, k, v) = (q.narrow(0, t, n)?, k.narrow(0, t, n)?, v.narrow(0, t, n)?);
                outs.push(self.attend(li, seq, &q, &k, &v, mask.as_ref())?);
                t += n;
            }
            let attn = Tensor::cat(&outs, 0)?;
            x = (x + layer.o.forward(&attn)?)?;

            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, cfg.rms_eps)?;
            let act = (layer.gate.forward(&h)?.silu()? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&act)?)?;
        }

        logit_rows(batch, rows);
        logits.clear();
        if rows.is_empty() {
            return Ok(());
        }
        let idx = Tensor::from_vec(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), rows.len(), &self.device)?;
        let last = candle_nn::ops::rms_norm(&x.index_select(&idx, 0)?, &self.norm, cfg.rms_eps)?;
        logits.extend(self.output.forward(&last)?.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }
}

/// Reused between steps: which rows need logits.
#[derive(Debug, Default)]
pub struct DeviceScratch {
    rows: Vec<usize>,
}

impl Decoder for DeviceLlama {
    type Cache = DeviceKvCache;
    type Scratch = DeviceScratch;

    fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    fn new_cache(&self, positions: usize) -> Result<DeviceKvCache> {
        let mut cache = DeviceKvCache {
            device: self.device.clone(),
            n_head_kv: self.cfg.n_head_kv,
            head_dim: self.cfg.head_dim,
            len: 0,
            cap: 0,
            layers: Vec::new(),
            n_layer: self.cfg.n_layer,
        };
        cache.reserve(positions)?;
        Ok(cache)
    }

    fn forward(
        &self,
        batch: &mut [BatchSeq<'_, DeviceKvCache>],
        scratch: &mut DeviceScratch,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        check_batch(batch, self.cfg.vocab_size)?;
        // A failed step may leave positions half written; the engine drops
        // the step's sequences, so no cache is used again after an error.
        self.forward_tensors(batch, &mut scratch.rows, logits).map_err(Error::Candle)?;
        Ok(())
    }
}
