//! Where Whisper's weights come from: a CTranslate2 folder (`model.bin`) or a
//! Hugging Face checkpoint (`model.safetensors`). The model is built against
//! CTranslate2's variable names; the safetensors side translates each name to
//! Hugging Face's and fuses q/k/v (and cross-attention k/v) the way CTranslate2
//! stores them, so both formats go through one builder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::speech::ct2::Ct2Model;

/// Named tensors under CTranslate2's Whisper names.
pub(crate) enum Weights {
    Ct2(Ct2Model),
    HfSafetensors { path: PathBuf, tensors: HashMap<String, Tensor> },
}

impl Weights {
    /// Open the weights of the model folder `dir`: `model.bin` if present, else `model.safetensors`.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let ct2 = dir.join("model.bin");
        if ct2.exists() {
            let m = Ct2Model::open(&ct2)?;
            if m.spec != "WhisperSpec" {
                return Err(Error::Unsupported {
                    path: ct2,
                    reason: format!("CTranslate2 spec {} is not a Whisper model", m.spec),
                });
            }
            return Ok(Self::Ct2(m));
        }
        let st = dir.join("model.safetensors");
        if st.exists() {
            let tensors = candle_core::safetensors::load(&st, &Device::Cpu).map_err(|e| Error::InvalidModel {
                path: st.clone(),
                reason: e.to_string(),
            })?;
            return Ok(Self::HfSafetensors { path: st, tensors });
        }
        Err(Error::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no model.bin (CTranslate2) or model.safetensors (Hugging Face) in this folder",
            ),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        match self {
            Self::Ct2(m) => m.path(),
            Self::HfSafetensors { path, .. } => path,
        }
    }

    fn invalid(&self, reason: String) -> Error {
        Error::InvalidModel {
            path: self.path().to_path_buf(),
            reason,
        }
    }

    /// Whether a tensor of this name exists (used to count layers).
    pub(crate) fn has(&self, name: &str) -> bool {
        match self {
            Self::Ct2(m) => m.variable(name).is_some(),
            Self::HfSafetensors { tensors, .. } => hf_parts(name).is_some_and(|p| tensors.contains_key(&p[0])),
        }
    }

    /// A scalar setting, where the format stores one (CTranslate2's `num_heads`).
    pub(crate) fn scalar(&self, name: &str) -> Option<i64> {
        match self {
            Self::Ct2(m) => m.scalar(name),
            Self::HfSafetensors { .. } => None,
        }
    }

    /// The tensor CTranslate2 calls `name`, as `dtype` on `device`.
    pub(crate) fn get(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let t = match self {
            Self::Ct2(m) => return m.tensor(name, dtype, device),
            Self::HfSafetensors { tensors, .. } => {
                let parts = hf_parts(name).ok_or_else(|| self.invalid(format!("no Hugging Face name for {name}")))?;
                let mut pieces = Vec::with_capacity(parts.len());
                for p in &parts {
                    match tensors.get(p) {
                        Some(t) => pieces.push(t.clone()),
                        // Whisper's key projection has no bias: CTranslate2 fuses zeros there.
                        None if p.ends_with("k_proj.bias") => {
                            let w = tensors.get(&p.replace(".bias", ".weight")).ok_or_else(|| self.invalid(format!("missing {p}")))?;
                            pieces.push(Tensor::zeros(w.dim(0)?, w.dtype(), w.device())?)
                        }
                        None => return Err(self.invalid(format!("missing {p}"))),
                    }
                }
                Tensor::cat(&pieces, 0)?
            }
        };
        Ok(t.to_dtype(dtype)?.to_device(device)?)
    }
}

/// The Hugging Face tensors that make up CTranslate2's `name`, concatenated by rows in this order.
fn hf_parts(name: &str) -> Option<Vec<String>> {
    let (side, rest) = name.split_once('/')?;
    let prefix = format!("model.{side}");
    let one = |s: String| Some(vec![s]);
    let ln = |base: &str, leaf: &str| match leaf {
        "gamma" => Some(format!("{base}.weight")),
        "beta" => Some(format!("{base}.bias")),
        _ => None,
    };
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["conv1", p] | ["conv2", p] => one(format!("{prefix}.{}.{p}", &rest[..5])),
        ["position_encodings", "encodings"] => one(format!("{prefix}.embed_positions.weight")),
        ["embeddings", "weight"] | ["projection", "weight"] => one(format!("{prefix}.embed_tokens.weight")),
        ["layer_norm", leaf] => one(ln(&format!("{prefix}.layer_norm"), leaf)?),
        [layer, block, part @ ..] => {
            let i: usize = layer.strip_prefix("layer_")?.parse().ok()?;
            let l = format!("{prefix}.layers.{i}");
            let (attn, norm) = match *block {
                "self_attention" => ("self_attn", "self_attn_layer_norm"),
                "attention" => ("encoder_attn", "encoder_attn_layer_norm"),
                "ffn" => ("", "final_layer_norm"),
                _ => return None,
            };
            match (part, *block) {
                (["layer_norm", leaf], _) => one(ln(&format!("{l}.{norm}"), leaf)?),
                (["linear_0", p], "ffn") => one(format!("{l}.fc1.{p}")),
                (["linear_1", p], "ffn") => one(format!("{l}.fc2.{p}")),
                (["linear_0", p], "self_attention") => {
                    Some(["q_proj", "k_proj", "v_proj"].iter().map(|x| format!("{l}.{attn}.{x}.{p}")).collect())
                }
                (["linear_1", p], "self_attention") | (["linear_2", p], "attention") => one(format!("{l}.{attn}.out_proj.{p}")),
                (["linear_0", p], "attention") => one(format!("{l}.{attn}.q_proj.{p}")),
                (["linear_1", p], "attention") => Some(["k_proj", "v_proj"].iter().map(|x| format!("{l}.{attn}.{x}.{p}")).collect()),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::hf_parts;

    #[test]
    fn ct2_names_map_onto_hugging_face_names() {
        let cases = [
            ("encoder/conv1/weight", vec!["model.encoder.conv1.weight"]),
            ("encoder/position_encodings/encodings", vec!["model.encoder.embed_positions.weight"]),
            ("decoder/projection/weight", vec!["model.decoder.embed_tokens.weight"]),
            ("decoder/layer_norm/gamma", vec!["model.decoder.layer_norm.weight"]),
            (
                "encoder/layer_2/self_attention/linear_0/bias",
                vec![
                    "model.encoder.layers.2.self_attn.q_proj.bias",
                    "model.encoder.layers.2.self_attn.k_proj.bias",
                    "model.encoder.layers.2.self_attn.v_proj.bias",
                ],
            ),
            ("decoder/layer_0/attention/layer_norm/beta", vec!["model.decoder.layers.0.encoder_attn_layer_norm.bias"]),
            (
                "decoder/layer_0/attention/linear_1/weight",
                vec!["model.decoder.layers.0.encoder_attn.k_proj.weight", "model.decoder.layers.0.encoder_attn.v_proj.weight"],
            ),
            ("decoder/layer_1/attention/linear_2/weight", vec!["model.decoder.layers.1.encoder_attn.out_proj.weight"]),
            ("decoder/layer_1/ffn/linear_1/bias", vec!["model.decoder.layers.1.fc2.bias"]),
            ("decoder/layer_1/ffn/layer_norm/gamma", vec!["model.decoder.layers.1.final_layer_norm.weight"]),
        ];
        for (ct2, hf) in cases {
            assert_eq!(hf_parts(ct2), Some(hf.iter().map(|s| s.to_string()).collect()), "{ct2}");
        }
        assert_eq!(hf_parts("decoder/layer_0/bogus/linear_0/weight"), None);
    }
}
