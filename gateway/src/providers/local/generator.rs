//! The seam between the HTTP handlers and whatever produces tokens.
//!
//! Handlers parse and validate an OpenAI request into a provider-neutral
//! [`CompletionRequest`], ask the [`Generators`] registry for the provider
//! serving its model, and render the [`Chunk`] stream it returns as JSON or
//! SSE. The local engine is one provider ([`crate::providers::local::LocalModel`]);
//! cloud providers implement the same trait. `n` choices are `n` calls, so
//! every provider gets it for free.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use inference::{ChatMessage, SamplingParams};
use serde::Serialize;

use crate::api::structured::Tagged;
use crate::api::tools::Tools;
use crate::error::ApiError;

/// What to complete.
#[derive(Clone, Debug)]
pub enum Input {
    /// A conversation (chat completions).
    Chat(Vec<ChatMessage>),
    /// A conversation whose last (assistant) message is continued.
    ChatContinued(Vec<ChatMessage>),
    /// Raw text (legacy completions).
    Text(String),
    /// Token ids (legacy completions).
    Tokens(Vec<u32>),
}

/// A validated request for one choice.
#[derive(Clone, Debug)]
pub struct CompletionRequest {
    /// The model as the client named it.
    pub model: String,
    /// The prompt.
    pub input: Input,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// `max_tokens` is the server's default, not the client's: reduce it to
    /// what the context leaves rather than refusing the request.
    pub clamp_max_tokens: bool,
    /// Sampling settings (seed already offset per choice).
    pub sampling: SamplingParams,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Per generated token: logprob and this many alternatives.
    pub logprobs: Option<usize>,
    /// Per prompt token: logprob and this many alternatives (`echo`).
    pub prompt_logprobs: Option<usize>,
    /// Generate past the end-of-sequence token (vLLM's `ignore_eos`).
    pub ignore_eos: bool,
    /// What the output must be, and the field that said so.
    pub constraint: Option<Tagged>,
    /// Functions the model may call (chat with `tools`).
    pub tools: Option<Tools>,
}

/// A token's logprob as clients see it: text and bytes, not ids.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenLogprob {
    /// The token's text (lossy where the token is part of a UTF-8 character).
    pub token: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Natural-log probability (`None`: the first prompt token, which
    /// nothing predicts).
    pub logprob: Option<f32>,
    /// The most likely tokens at this position, best first.
    pub top: Vec<(String, Vec<u8>, f32)>,
}

/// Why a choice ended, in OpenAI's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// End of sequence or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl Finish {
    /// `finish_reason` on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// Token counts of one choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
}

/// One piece of one choice.
#[derive(Clone, Debug, PartialEq)]
pub enum Chunk {
    /// New text (may be empty while a partial character or a possible stop
    /// string is held back) and, when asked, the token's logprob.
    Delta {
        /// Text that became final.
        text: String,
        /// The token behind it.
        logprob: Option<TokenLogprob>,
    },
    /// The end of the choice.
    Done {
        /// Text held back until the end.
        text: String,
        /// Why it ended.
        finish: Finish,
        /// Token counts.
        usage: Usage,
        /// The prompt's tokens with logprobs, when asked.
        prompt: Option<Vec<TokenLogprob>>,
    },
}

/// A choice's chunks; dropping it cancels the generation.
pub type ChunkStream = BoxStream<'static, Result<Chunk, ApiError>>;

/// A model as `/v1/models` lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelCard {
    /// Name clients send as `model`.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Who serves it.
    pub owned_by: String,
    /// Context length in tokens (vLLM's `max_model_len`).
    pub max_model_len: usize,
}

/// Live load of a provider, for `/metrics` and routing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    /// Sequences generating.
    pub running: usize,
    /// Sequences admitted and waiting.
    pub waiting: usize,
    /// KV cache bytes in use (reserved).
    pub kv_used_bytes: usize,
    /// KV cache budget.
    pub kv_capacity_bytes: usize,
    /// Sequences decoded together.
    pub max_running: usize,
    /// Recent generation rate over all sequences, tokens/s.
    pub tokens_per_second: f64,
    /// How long a new request would wait for a slot (`None`: unknown, all
    /// slots busy and no rate measured yet).
    pub predicted_wait: Option<std::time::Duration>,
}

/// Anything that completes prompts.
pub trait Generator: Send + Sync {
    /// Short name for logs and metrics (`local`, `openai`, ...).
    fn name(&self) -> &str;

    /// Models served.
    fn models(&self) -> Vec<ModelCard>;

    /// Start one choice. Fails fast (429) when at capacity.
    fn complete(&self, req: CompletionRequest) -> BoxFuture<'_, Result<ChunkStream, ApiError>>;

    /// Token ids of an input as the model would see them.
    fn tokenize(&self, model: &str, input: &Input, add_special_tokens: bool) -> BoxFuture<'_, Result<Vec<u32>, ApiError>> {
        let _ = (input, add_special_tokens);
        let err = ApiError::unsupported("model", format!("`{model}` ({}) does not expose its tokenizer", self.name()));
        Box::pin(std::future::ready(Err(err)))
    }

    /// Text of token ids.
    fn detokenize(&self, model: &str, tokens: &[u32]) -> BoxFuture<'_, Result<String, ApiError>> {
        let _ = tokens;
        let err = ApiError::unsupported("model", format!("`{model}` ({}) does not expose its tokenizer", self.name()));
        Box::pin(std::future::ready(Err(err)))
    }

    /// Current load, where the provider knows it.
    fn load(&self) -> Option<Load> {
        None
    }

    /// Whether it can still answer (false: the local engine stopped, and
    /// `/ready` says so).
    fn is_alive(&self) -> bool {
        true
    }
}

/// Every provider, and which serves which model.
#[derive(Clone, Default)]
pub struct Generators {
    list: Vec<Arc<dyn Generator>>,
}

impl std::fmt::Debug for Generators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.list.iter().map(|p| p.name())).finish()
    }
}

impl Generators {
    /// A registry of these providers; earlier ones win a model name.
    pub fn new(list: Vec<Arc<dyn Generator>>) -> Self {
        Self { list }
    }

    /// The provider serving `model` (404 if none).
    pub fn resolve(&self, model: &str) -> Result<&Arc<dyn Generator>, ApiError> {
        self.list
            .iter()
            .find(|p| p.models().iter().any(|m| m.id == model))
            .ok_or_else(|| ApiError::model_not_found(model))
    }

    /// Every model of every provider.
    pub fn models(&self) -> Vec<ModelCard> {
        self.list.iter().flat_map(|p| p.models()).collect()
    }

    /// Every provider.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Generator>> {
        self.list.iter()
    }
}
