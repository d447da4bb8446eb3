//! Reading a GGUF file: header, metadata and the hyperparameters of a
//! llama-family model. Tensor payloads are loaded by `models::llama_gguf`.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};

use crate::error::{Error, Result};

/// An opened GGUF: its metadata and a reader positioned anywhere.
#[derive(Debug)]
pub struct GgufFile {
    /// Path, for error messages.
    pub path: PathBuf,
    /// Parsed header, metadata and tensor index.
    pub content: Content,
    /// The open file, for reading tensor payloads.
    pub reader: BufReader<File>,
}

impl GgufFile {
    /// Open and parse the header of a GGUF file. A missing file, a file that
    /// is not GGUF or a truncated header is an error, never a panic.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| Error::InvalidModel {
            path: path.to_owned(),
            reason: format!("not a readable GGUF file ({e})"),
        })?;
        Ok(Self {
            path: path.to_owned(),
            content,
            reader,
        })
    }

    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidModel {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// The raw metadata value for `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// A required integer.
    pub fn u64(&self, key: &str) -> Result<u64> {
        let v = self
            .get(key)
            .ok_or_else(|| self.invalid(format!("missing metadata `{key}`")))?;
        value_u64(v).ok_or_else(|| self.invalid(format!("metadata `{key}` is not an integer")))
    }

    /// An optional float (missing -> `None`, wrong type -> error).
    pub fn f32_opt(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(*v)),
            Some(Value::F64(v)) => Ok(Some(*v as f32)),
            Some(_) => Err(self.invalid(format!("metadata `{key}` is not a float"))),
        }
    }

    /// An optional string.
    pub fn str_opt(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        }
    }

    /// A required array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>> {
        match self.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.as_str()),
                    _ => Err(self.invalid(format!("metadata `{key}` holds a non-string"))),
                })
                .collect(),
            _ => Err(self.invalid(format!("missing string array `{key}`"))),
        }
    }

    /// An optional array of integers.
    pub fn ints_opt(&self, key: &str) -> Result<Option<Vec<u64>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| value_u64(v).ok_or_else(|| self.invalid(format!("`{key}` holds a non-integer"))))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Err(self.invalid(format!("metadata `{key}` is not an array"))),
        }
    }

    /// Whether the file has a tensor of this name.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }
}

fn value_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(x) => Some(x.into()),
        Value::U16(x) => Some(x.into()),
        Value::U32(x) => Some(x.into()),
        Value::U64(x) => Some(x),
        Value::I8(x) => u64::try_from(x).ok(),
        Value::I16(x) => u64::try_from(x).ok(),
        Value::I32(x) => u64::try_from(x).ok(),
        Value::I64(x) => u64::try_from(x).ok(),
        Value::Bool(b) => Some(b.into()),
        _ => None,
    }
}

/// How rotary embeddings pair up dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (2i, 2i+1): GGUF llama files (the converter permutes Q/K).
    Interleaved,
    /// Halves (i, i + d/2): GPT-NeoX style, used by Qwen2 GGUFs.
    Neox,
}

/// Hyperparameters of a llama-family decoder, read from GGUF metadata.
#[derive(Clone, Debug)]
pub struct LlamaConfig {
    /// `general.architecture` (llama, qwen2, ...), the metadata key prefix.
    pub arch: String,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Feed-forward inner size.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when < n_head).
    pub n_head_kv: usize,
    /// Per-head dimension.
    pub head_dim: usize,
    /// Dimensions rotated by RoPE (usually head_dim).
    pub rope_dim: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RoPE pairing.
    pub rope_style: RopeStyle,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Trained context length.
    pub context_length: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
}

impl LlamaConfig {
    /// Read the hyperparameters. Keys are prefixed with the architecture name,
    /// so Llama-3 and Qwen2 GGUFs load through the same code.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g
            .str_opt("general.architecture")
            .ok_or_else(|| g.invalid("missing `general.architecture`"))?
            .to_owned();
        let rope_style = match arch.as_str() {
            "llama" | "mistral" | "granite" => RopeStyle::Interleaved,
            "qwen2" | "qwen3" => RopeStyle::Neox,
            other => {
                return Err(Error::Unsupported {
                    path: g.path.clone(),
                    reason: format!("architecture `{other}` (supported: llama, mistral, qwen2)"),
                })
            }
        };
        let key = |k: &str| format!("{arch}.{k}");
        let us = |k: &str| -> Result<usize> { Ok(g.u64(&key(k))? as usize) };
        let n_embd = us("embedding_length")?;
        let n_head = us("attention.head_count")?;
        if n_head == 0 || n_embd % n_head != 0 {
            return Err(g.invalid(format!("head_count {n_head} does not divide embedding {n_embd}")));
        }
        let n_head_kv = match g.get(&key("attention.head_count_kv")) {
            Some(_) => us("attention.head_count_kv")?,
            None => n_head,
        };
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(g.invalid(format!("head_count_kv {n_head_kv} does not divide {n_head}")));
        }
        let head_dim = match g.get(&key("attention.key_length")) {
            Some(_) => us("attention.key_length")?,
            None => n_embd / n_head,
        };
        let rope_dim = match g.get(&key("rope.dimension_count")) {
            Some(_) => us("rope.dimension_count")?,
            None => head_dim,
        };
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(g.invalid(format!("rope dimension {rope_dim} vs head dim {head_dim}")));
        }
        let vocab_size = match g.get(&key("vocab_size")) {
            Some(_) => us("vocab_size")?,
            None => g.strings("tokenizer.ggml.tokens")?.len(),
        };
        Ok(Self {
            n_layer: us("block_count")?,
            n_embd,
            n_ff: us("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim,
            rope_dim,
            rope_theta: g.f32_opt(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_style,
            rms_eps: g
                .f32_opt(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5),
            context_length: us("context_length")?,
            vocab_size,
            arch,
        })
    }

    /// Width of the K (and V) rows of one token in one layer.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

/// Token-type codes of `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
pub mod token_type {
    /// Ordinary vocabulary entry.
    pub const NORMAL: u64 = 1;
    /// Control token (BOS, EOS, chat markers): special.
    pub const CONTROL: u64 = 3;
    /// User-defined token: always matched as a whole, even in plain text.
    pub const USER_DEFINED: u64 = 4;
}
