//! Whisper's encoder and decoder on candle tensors, for any candle device.
//!
//! The decoder keeps a self-attention key/value cache per sequence (a step
//! feeds only the new tokens) and each clip's cross-attention keys and values
//! are computed once, right after the encoder, and shared by every sequence
//! decoding that clip (beams, temperature retries). A decode step takes rows
//! from many sequences at once: projections and MLPs run on all rows in one
//! matmul, attention runs per sequence against its own cache.
//!
//! The encoder takes any number of mel frames up to the model's 30 s window
//! (3000 frames), so a short clip can be encoded on a shorter window; see
//! `transcribe.rs` for how the window is chosen.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Conv1d, Conv1dConfig, LayerNorm};

use crate::error::{Error, Result};
use crate::speech::linear::{Precision, Proj};
use crate::speech::ops;
use crate::speech::weights::Weights;

/// Sizes read off the weights' shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dims {
    pub n_mels: usize,
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    pub n_vocab: usize,
    pub n_text_ctx: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
}

/// Whisper's head size is 64 in every released size.
const HEAD_DIM: usize = 64;
const LN_EPS: f64 = 1e-5;

struct Attention {
    /// `[q; k; v]` fused by rows (self-attention) or `q` alone (cross-attention).
    q_or_qkv: Proj,
    /// `[k; v]` fused by rows: cross-attention only.
    kv: Option<Proj>,
    out: Proj,
    norm: LayerNorm,
    heads: usize,
}

struct Mlp {
    norm: LayerNorm,
    up: Proj,
    down: Proj,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = ops::gelu_erf(self.up.forward(&self.norm.forward(x)?)?)?;
        self.down.forward(&h)
    }
}

struct EncoderLayer {
    attn: Attention,
    mlp: Mlp,
}

struct DecoderLayer {
    self_attn: Attention,
    cross_attn: Attention,
    mlp: Mlp,
}

/// A loaded Whisper model. Immutable after load; shared by the engine thread.
pub struct Whisper {
    pub dims: Dims,
    device: Device,
    dtype: DType,
    conv1: Conv1d,
    conv2: Conv1d,
    enc_pos: Tensor,
    enc_layers: Vec<EncoderLayer>,
    enc_norm: LayerNorm,
    /// Token embeddings (rows looked up per step).
    embed: Tensor,
    /// The same matrix as the output projection (tied), at the layers' precision.
    logits: Proj,
    dec_pos: Tensor,
    dec_layers: Vec<DecoderLayer>,
    dec_norm: LayerNorm,
}

impl std::fmt::Debug for Whisper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whisper").field("dims", &self.dims).field("device", &self.device).finish_non_exhaustive()
    }
}

/// One clip's encoder output turned into every decoder layer's cross-attention keys and values.
pub struct CrossKv {
    /// Per layer: keys and values `[heads, frames, head_dim]`.
    layers: Vec<(Tensor, Tensor)>,
}

impl std::fmt::Debug for CrossKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossKv").field("layers", &self.layers.len()).finish()
    }
}

/// One decoding sequence's self-attention cache: per layer, keys and values
/// `[heads, len, head_dim]`. Cloning is cheap (tensors are shared and never
/// written in place), which is what a beam fork needs.
#[derive(Clone, Default)]
pub struct SelfKv {
    layers: Vec<(Tensor, Tensor)>,
}

impl SelfKv {
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |(k, _)| k.dim(1).unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for SelfKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfKv").field("len", &self.len()).finish()
    }
}

/// One sequence's part of a decode step.
pub struct StepRow<'a> {
    /// Tokens to feed (the whole prompt on the first step, then one).
    pub tokens: &'a [u32],
    pub cache: &'a mut SelfKv,
    pub cross: &'a CrossKv,
}

impl Whisper {
    /// Load from a model folder (CTranslate2 `model.bin` or Hugging Face
    /// `model.safetensors`), the linear layers at `precision`.
    pub(crate) fn load(w: &Weights, device: &Device, dtype: DType, precision: Precision) -> Result<Self> {
        let get = |name: &str| w.get(name, dtype, device);
        let shape = |name: &str| -> Result<Vec<usize>> { Ok(w.get(name, DType::F32, &Device::Cpu)?.dims().to_vec()) };
        let bad = |reason: String| Error::InvalidModel {
            path: w.path().to_path_buf(),
            reason,
        };
        let conv = shape("encoder/conv1/weight")?;
        let [n_audio_state, n_mels, 3] = conv[..] else {
            return Err(bad(format!("encoder/conv1/weight has shape {conv:?}, expected [state, mels, 3]")));
        };
        let enc_pos = get("encoder/position_encodings/encodings")?;
        let embed = get("decoder/embeddings/weight")?;
        let dec_pos = get("decoder/position_encodings/encodings")?;
        let (n_audio_ctx, n_vocab, n_text_ctx, n_text_state) = (enc_pos.dim(0)?, embed.dim(0)?, dec_pos.dim(0)?, embed.dim(1)?);
        let count = |side: &str| (0..).take_while(|i| w.has(&format!("{side}/layer_{i}/ffn/linear_0/weight"))).count();
        let heads = |side: &str, state: usize| {
            w.scalar(&format!("{side}/num_heads")).map_or(state / HEAD_DIM, |h| h as usize)
        };
        let dims = Dims {
            n_mels,
            n_audio_ctx,
            n_audio_state,
            n_audio_head: heads("encoder", n_audio_state),
            n_audio_layer: count("encoder"),
            n_vocab,
            n_text_ctx,
            n_text_state,
            n_text_head: heads("decoder", n_text_state),
            n_text_layer: count("decoder"),
        };
        if dims.n_audio_layer == 0 || dims.n_text_layer == 0 || n_audio_state % dims.n_audio_head != 0 || n_text_state % dims.n_text_head != 0 {
            return Err(bad(format!("inconsistent Whisper dimensions {dims:?}")));
        }
        let linear = |name: &str| -> Result<Proj> {
            let b = format!("{name}/bias");
            let bias = if w.has(&b) { Some(get(&b)?) } else { None };
            Proj::new(get(&format!("{name}/weight"))?, bias, precision)
        };
        let norm = |name: &str| -> Result<LayerNorm> {
            Ok(LayerNorm::new(get(&format!("{name}/gamma"))?, get(&format!("{name}/beta"))?, LN_EPS))
        };
        let mlp = |l: &str| -> Result<Mlp> {
            Ok(Mlp {
                norm: norm(&format!("{l}/ffn/layer_norm"))?,
                up: linear(&format!("{l}/ffn/linear_0"))?,
                down: linear(&format!("{l}/ffn/linear_1"))?,
            })
        };
        let self_attn = |l: &str, heads: usize| -> Result<Attention> {
            Ok(Attention {
                q_or_qkv: linear(&format!("{l}/self_attention/linear_0"))?,
                kv: None,
                out: linear(&format!("{l}/self_attention/linear_1"))?,
                norm: norm(&format!("{l}/self_attention/layer_norm"))?,
                heads,
            })
        };
        let conv_cfg = |stride| Conv1dConfig {
            padding: 1,
            stride,
            ..Default::default()
        };
        let enc_layers = (0..dims.n_audio_layer)
            .map(|i| {
                let l = format!("encoder/layer_{i}");
                Ok(EncoderLayer {
                    attn: self_attn(&l, dims.n_audio_head)?,
                    mlp: mlp(&l)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let dec_layers = (0..dims.n_text_layer)
            .map(|i| {
                let l = format!("decoder/layer_{i}");
                Ok(DecoderLayer {
                    self_attn: self_attn(&l, dims.n_text_head)?,
                    cross_attn: Attention {
                        q_or_qkv: linear(&format!("{l}/attention/linear_0"))?,
                        kv: Some(linear(&format!("{l}/attention/linear_1"))?),
                        out: linear(&format!("{l}/attention/linear_2"))?,
                        norm: norm(&format!("{l}/attention/layer_norm"))?,
                        heads: dims.n_text_head,
                    },
                    mlp: mlp(&l)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv1: Conv1d::new(get("encoder/conv1/weight")?, Some(get("encoder/conv1/bias")?), conv_cfg(1)),
            conv2: Conv1d::new(get("encoder/conv2/weight")?, Some(get("encoder/conv2/bias")?), conv_cfg(2)),
            enc_pos,
            enc_layers,
            enc_norm: norm("encoder/layer_norm")?,
            logits: Proj::new(embed.clone(), None, precision)?,
            embed,
            dec_pos,
            dec_layers,
            dec_norm: norm("decoder/layer_norm")?,
            dims,
            device: device.clone(),
            dtype,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Encode a batch of mel windows `[batch, n_mels, frames]` (frames even, at most
    /// `2 * n_audio_ctx`) and return each clip's cross-attention keys and values.
    pub fn encode(&self, mel: &Tensor) -> Result<Vec<Arc<CrossKv>>> {
        let (batch, _, frames) = mel.dims3()?;
        let ctx = frames / 2;
        if frames % 2 != 0 || ctx > self.dims.n_audio_ctx || ctx == 0 {
            return Err(Error::Backend(format!("encoder window of {frames} frames")));
        }
        let x = mel.to_device(&self.device)?.to_dtype(self.dtype)?;
        let x = ops::gelu_erf(self.conv1.forward(&x)?)?;
        let x = ops::gelu_erf(self.conv2.forward(&x)?)?;
        let mut x = x.transpose(1, 2)?.broadcast_add(&self.enc_pos.narrow(0, 0, ctx)?)?;
        for layer in &self.enc_layers {
            let a = &layer.attn;
            let h = a.q_or_qkv.forward(&a.norm.forward(&x)?)?;
            let d = self.dims.n_audio_state;
            let split = |i: usize| -> Result<Tensor> { heads(&h.narrow(D::Minus1, i * d, d)?, a.heads) };
            let att = attend(&split(0)?, &split(1)?, &split(2)?, false)?;
            x = (x + a.out.forward(&merge(&att)?)?)?;
            x = (&x + layer.mlp.forward(&x)?)?;
        }
        let x = self.enc_norm.forward(&x)?;
        let d = self.dims.n_text_state;
        (0..batch)
            .map(|b| {
                let xa = x.get(b)?;
                let layers = self
                    .dec_layers
                    .iter()
                    .map(|layer| {
                        let kv = layer.cross_attn.kv.as_ref().ok_or_else(|| Error::Backend("cross-attention without k/v".into()))?;
                        let kv = kv.forward(&xa)?;
                        let h = layer.cross_attn.heads;
                        Ok((heads(&kv.narrow(D::Minus1, 0, d)?, h)?, heads(&kv.narrow(D::Minus1, d, d)?, h)?))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Arc::new(CrossKv { layers }))
            })
            .collect()
    }

    /// Feed each row's tokens, extend its cache, and return the logits of each
    /// row's last token, `[rows, vocab]` as f32 on the CPU.
    pub fn decode(&self, rows: &mut [StepRow<'_>]) -> Result<Tensor> {
        let d = self.dims.n_text_state;
        let mut ids = Vec::new();
        let mut pos = Vec::new();
        for r in rows.iter() {
            let start = r.cache.len();
            if r.tokens.is_empty() || start + r.tokens.len() > self.dims.n_text_ctx {
                return Err(Error::Backend(format!("decoder row of {} tokens at {start}", r.tokens.len())));
            }
            ids.extend_from_slice(r.tokens);
            pos.extend((start..start + r.tokens.len()).map(|p| p as u32));
        }
        let n = ids.len();
        let ids = Tensor::from_vec(ids, n, &self.device)?;
        let pos = Tensor::from_vec(pos, n, &self.device)?;
        let mut x = (self.embed.index_select(&ids, 0)? + self.dec_pos.index_select(&pos, 0)?)?;
        for (li, layer) in self.dec_layers.iter().enumerate() {
            // Self-attention over each row's cache plus its new tokens.
            let a = &layer.self_attn;
            let qkv = a.q_or_qkv.forward(&a.norm.forward(&x)?)?;
            let mut outs = Vec::with_capacity(rows.len());
            let mut at = 0;
            for r in rows.iter_mut() {
                let m = r.tokens.len();
                let part = qkv.narrow(0, at, m)?;
                at += m;
                let q = heads(&part.narrow(1, 0, d)?, a.heads)?;
                let k = heads(&part.narrow(1, d, d)?, a.heads)?;
                let v = heads(&part.narrow(1, 2 * d, d)?, a.heads)?;
                let (k, v) = match r.cache.layers.get(li) {
                    Some((pk, pv)) => (Tensor::cat(&[pk, &k], 1)?, Tensor::cat(&[pv, &v], 1)?),
                    None => (k, v),
                };
                outs.push(merge(&attend(&q, &k, &v, m > 1)?)?);
                if li < r.cache.layers.len() {
                    r.cache.layers[li] = (k, v);
                } else {
                    r.cache.layers.push((k, v));
                }
            }
            x = (x + a.out.forward(&Tensor::cat(&outs, 0)?)?)?;
            // Cross-attention against each row's clip.
            let c = &layer.cross_attn;
            let q = c.q_or_qkv.forward(&c.norm.forward(&x)?)?;
            let mut outs = Vec::with_capacity(rows.len());
            let mut at = 0;
            for r in rows.iter() {
                let m = r.tokens.len();
                let (k, v) = &r.cross.layers[li];
                outs.push(merge(&attend(&heads(&q.narrow(0, at, m)?, c.heads)?, k, v, false)?)?);
                at += m;
            }
            x = (&x + c.out.forward(&Tensor::cat(&outs, 0)?)?)?;
            x = (&x + layer.mlp.forward(&x)?)?;
        }
        // Only each row's last position needs logits.
        let mut last = Vec::with_capacity(rows.len());
        let mut at = 0;
        for r in rows.iter() {
            at += r.tokens.len();
            last.push((at - 1) as u32);
        }
        let last = Tensor::from_vec(last, rows.len(), &self.device)?;
        let x = self.dec_norm.forward(&x.index_select(&last, 0)?)?;
        let logits = self.logits.forward(&x)?;
        Ok(logits.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)
    }
}

/// `[.., len, heads * 64]` -> `[.., heads, len, 64]`, contiguous.
fn heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = x.dims();
    let mut shape = dims[..dims.len() - 1].to_vec();
    shape.extend([heads, x.dim(D::Minus1)? / heads]);
    let r = x.reshape(shape)?;
    let rank = r.rank();
    Ok(r.transpose(rank - 3, rank - 2)?.contiguous()?)
}

/// `[.., heads, len, 64]` -> `[.., len, heads * 64]`.
fn merge(x: &Tensor) -> Result<Tensor> {
    let rank = x.rank();
    let t = x.transpose(rank - 3, rank - 2)?.contiguous()?;
    let dims = t.dims().to_vec();
    let mut shape = dims[..rank - 2].to_vec();
    shape.push(dims[rank - 2] * dims[rank - 1]);
    Ok(t.reshape(shape)?)
}

/// Scaled dot-product attention; `causal` masks later keys for a multi-token
/// step whose queries are the last `q_len` positions of `k`. The scale goes
/// on the queries (`len x 64`), not on the scores (`len x len`): for a 30 s
/// encoder window that is a pass over 1500 rows instead of 1500 x 1500 per head.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Result<Tensor> {
    let scale = 1.0 / (q.dim(D::Minus1)? as f64).sqrt();
    let mut w = (q * scale)?.matmul(&k.t()?)?;
    if causal {
        let (ql, kl) = (q.dim(D::Minus2)?, k.dim(D::Minus2)?);
        let offset = kl - ql;
        let mask: Vec<f32> = (0..ql)
            .flat_map(|i| (0..kl).map(move |j| if j > i + offset { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (ql, kl), w.device())?.to_dtype(w.dtype())?;
        w = w.broadcast_add(&mask)?;
    }
    let w = ops::softmax_last_dim(w)?;
    Ok(w.matmul(v)?)
}
