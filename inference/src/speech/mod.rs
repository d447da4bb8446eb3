//! Speech to text: Whisper on candle tensors.
//!
//! - `ct2`: the reader for CTranslate2's `model.bin`.
//! - `weights`: CTranslate2 or Hugging Face safetensors weights under one naming.
//! - `model`: encoder and decoder (self-attention KV cache, cross-attention K/V once per clip).
//! - `linear`: its linear layers, dense or on our 8-bit CPU kernels; `ops`:
//!   softmax and GELU on our vectorised CPU kernels.
//! - `mel`: the log-mel front end (faster-whisper's, numerically).
//! - `tokens`: tokenizer and special tokens; `languages`: codes and names.
//! - `decode`: one 30 s window: prompt, logit rules, greedy / sampling / beam search.
//! - `transcribe`: one clip: seeking, temperature fallback, segments.
//! - `audio`: decoding files to 16 kHz mono.
//! - `engine`: the thread that batches clips through the model.

pub mod audio;
pub mod ct2;
pub mod decode;
pub mod engine;
pub mod languages;
mod linear;
pub mod mel;
pub mod model;
mod ops;
pub mod tokens;
pub mod transcribe;
mod weights;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::device::Resolved;
use crate::DeviceSpec;
pub use audio::{Audio, AudioError};
pub use engine::{SpeechEngine, SpeechEngineConfig, Transcript};
pub use linear::Precision;
pub use transcribe::{ClipJob, Segment, TranscribeOptions};

/// A loaded Whisper model with its tokenizer and front end.
#[derive(Debug)]
pub struct SpeechModel {
    pub model: model::Whisper,
    pub tokens: tokens::WhisperTokens,
    pub mel: mel::MelFrontEnd,
    pub dir: PathBuf,
}

impl SpeechModel {
    /// Load a model folder (CTranslate2 or Hugging Face) onto `device`.
    /// CUDA runs f16; the CPU f32 (candle's CPU f16 matmul is slow), with
    /// the linear layers on our 8-bit kernels at [`Precision::Int8`]. Where
    /// the LLM would take our kernels, Whisper runs on candle's CPU backend
    /// (a CUDA device that cannot open falls back there, with the LLM's
    /// warning).
    pub fn load(dir: &Path, device: DeviceSpec, precision: Precision) -> Result<Self> {
        let device = match device.resolve() {
            Resolved::Kernels => Device::Cpu,
            Resolved::Candle(dev) => dev,
        };
        let dtype = if device.is_cuda() { DType::F16 } else { DType::F32 };
        let w = weights::Weights::open(dir)?;
        let model = model::Whisper::load(&w, &device, dtype, precision)?;
        drop(w);
        let tokens = tokens::WhisperTokens::load(dir, model.dims.n_vocab)?;
        let mel = mel::MelFrontEnd::new(model.dims.n_mels);
        Ok(Self {
            model,
            tokens,
            mel,
            dir: dir.to_path_buf(),
        })
    }

    /// Transcribe one clip on the calling thread (no batching): for tools and tests.
    pub fn transcribe(&self, samples: &[f32], opts: TranscribeOptions) -> Result<Transcript> {
        let mel = self.mel.compute(samples);
        let mut job = ClipJob::new(&self.tokens, mel, opts, self.model.dims.n_text_ctx, 2 * self.model.dims.n_audio_ctx)?;
        loop {
            if let Some((window, frames)) = job.wants_encode() {
                let t = Tensor::from_vec(window, (1, self.mel.n_mels(), frames), &Device::Cpu)?;
                let cross = self.model.encode(&t)?.pop().ok_or_else(|| Error::Backend("encoder returned nothing".into()))?;
                job.encoded(&self.tokens, cross);
            }
            if job.is_finished() {
                break;
            }
            let mut rows = job.rows();
            if rows.is_empty() {
                continue;
            }
            let logits = self.model.decode(&mut rows)?.to_vec2::<f32>()?;
            drop(rows);
            job.advance(&self.tokens, logits);
        }
        Ok(Transcript::of(&job, &self.tokens))
    }
}
