//! Starling's local inference engine.
//!
//! - `engine`: the [`Engine`] handle and the engine thread that owns a model
//!   and runs the continuous-batching loop.
//! - `scheduler`: which sequences run in the next step (plain data, no model).
//! - `device`: where the forward pass runs (`cpu`, `cuda:N`).
//! - `models`: the [`models::Decoder`] trait and its two backends:
//!   `llama_gguf` (our CPU kernels) and `llama_device` (candle tensors: CUDA).
//! - `kernels`: CPU SIMD kernels (quantized matmul, norms, RoPE, attention).
//! - `kv_cache`: per-sequence key/value buffers.
//! - `sampling`: logits processing and seeded sampling.
//! - `constraint`: constrained decoding (grammars on llguidance, post rules).
//! - `detok`: streaming detokenization (whole UTF-8 only) and stop strings.
//! - `speech`: Whisper speech to text (its own engine thread; see its module docs).
//! - `tokenizer`, `chat`, `gguf`: tokenizer, chat template and metadata from the GGUF.
//!
//! The crate knows nothing about HTTP or providers.

pub mod chat;
pub mod constraint;
pub mod detok;
pub mod device;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod kernels;
pub mod kv_cache;
pub mod models;
pub mod sampling;
pub mod scheduler;
pub mod speech;
pub mod tokenizer;

pub use chat::{ChatMessage, Role};
pub use constraint::{Constraint, Grammar, PostRules};
pub use device::DeviceSpec;
pub use engine::{
    Done, Engine, EngineConfig, EngineStats, Event, FinishReason, GenerateRequest, GenerationStream, LogprobInfo,
    ModelInfo, Prompt, TokenEvent, Usage,
};
pub use error::{Error, Result};
pub use sampling::SamplingParams;
