//! The in-process engines as the `local` [`Provider`]: chat and legacy
//! completions over the loaded models, transcriptions over the Whisper
//! models, answered in OpenAI's shapes.
//!
//! - `model`: [`LocalModel`], one loaded model as a [`Generator`] of single
//!   choices (the engine's side of this provider; `generator` is that seam).
//! - `choices`: running a request's `n` choices, merged or collected.
//! - `chat`, `completions`: one request of each API into choices and back
//!   into OpenAI's answer or chunks, all framed by one [`Frame`].
//! - `speech`: transcriptions and translations on the Whisper engines.
//! - `tool_calls`: the model's tool calls read back from its text.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::providers::{Api, Call, Provider, Reply};
use crate::speech::SpeechModels;

mod chat;
pub mod choices;
mod completions;
pub mod generator;
mod model;
mod speech;
mod tool_calls;

use generator::{Generators, Load};
pub use model::LocalModel;

/// The `local` provider: OpenAI chat and legacy completions over the local
/// models, and transcriptions over the local Whisper models.
#[derive(Clone, Debug)]
pub struct LocalChat {
    /// Set once the models are loaded (503 until then, so routes fall
    /// back to cloud candidates while the engine starts).
    generators: Arc<OnceLock<Generators>>,
    /// The Whisper engines, likewise.
    speech: Arc<OnceLock<SpeechModels>>,
    metrics: Metrics,
    fingerprint: String,
    default_max_tokens: usize,
}

impl LocalChat {
    /// Answers over `generators` and `speech`, recording token timings in `metrics`.
    pub fn new(
        generators: Arc<OnceLock<Generators>>,
        speech: Arc<OnceLock<SpeechModels>>,
        metrics: Metrics,
        fingerprint: String,
        default_max_tokens: usize,
    ) -> Self {
        Self { generators, speech, metrics, fingerprint, default_max_tokens }
    }

    fn generators(&self) -> Result<&Generators, ApiError> {
        self.generators.get().ok_or_else(|| ApiError::not_ready("The local model is still loading."))
    }

    /// The frame of an answer to `call`.
    fn frame(&self, call: &Call) -> Frame {
        Frame::new(call.api, call.stream, &call.model, &self.fingerprint)
    }
}

impl Provider for LocalChat {
    fn name(&self) -> &str {
        "local"
    }

    fn answer(&self, call: Call) -> BoxFuture<'_, Result<Reply, ApiError>> {
        match call.api {
            Api::Chat => Box::pin(self.chat(call)),
            Api::Completions => Box::pin(self.completions(call)),
            Api::Transcriptions | Api::Translations => Box::pin(self.transcribe(call)),
        }
    }

    fn load(&self) -> Option<Load> {
        self.generators.get()?.iter().find_map(|g| g.load())
    }

    /// `continue_final_message`, as vLLM's.
    fn continues_prefill(&self) -> bool {
        true
    }
}

/// What every answer and chunk of one response shares, in OpenAI's shape:
/// `id`, `object`, `created`, `model` and `system_fingerprint`. The one
/// place the local provider's JSON objects are built.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    fingerprint: String,
}

impl Frame {
    /// The frame of a response of `api` for `model` (a stream's chunks have
    /// their own `object`).
    pub(crate) fn new(api: Api, stream: bool, model: &str, fingerprint: &str) -> Self {
        let (prefix, object) = match (api, stream) {
            (Api::Chat, false) => ("chatcmpl", "chat.completion"),
            (Api::Chat, true) => ("chatcmpl", "chat.completion.chunk"),
            // Legacy completions: the one other API answered in frames.
            _ => ("cmpl", "text_completion"),
        };
        Self { id: new_id(prefix), object, created: unix_now(), model: model.to_owned(), fingerprint: fingerprint.to_owned() }
    }

    /// An answer or chunk with these `choices` and `usage` (null on every
    /// chunk but the last, as OpenAI streams with `include_usage`; the
    /// server drops it when the client did not ask).
    pub(crate) fn with(&self, choices: Value, usage: Value) -> Value {
        json!({
            "id": self.id, "object": self.object, "created": self.created, "model": self.model,
            "system_fingerprint": self.fingerprint, "choices": choices, "usage": usage,
        })
    }
}

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `prefix-` and 24 random alphanumerics, as OpenAI's ids look.
pub(crate) fn new_id(prefix: &str) -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!("{prefix}-{}", Alphanumeric.sample_string(&mut rand::thread_rng(), 24))
}
