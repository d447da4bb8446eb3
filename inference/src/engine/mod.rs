//! The [`Engine`] handle and the engine thread behind it.
//!
//! One thread owns the model, every sequence's KV cache and a rayon pool of
//! `threads` workers (the engine's whole CPU budget: the loop itself runs on
//! one of those workers, and nothing else in the process uses the pool).
//! Request tasks never touch tensors: [`Engine::generate`] validates and
//! tokenizes the request, reserves capacity, and sends it over a bounded
//! channel; tokens come back on the returned [`GenerationStream`].
//!
//! Each loop iteration is one step of continuous batching: drop sequences
//! whose stream was dropped, admit waiting ones, plan the step
//! (`scheduler::plan`: a decode token for every generating sequence, then
//! prefill chunks), run one forward pass over all of them, then sample,
//! detokenize and send for each. A sequence leaves the batch the step it
//! finishes or is cancelled, and frees its cache and reservation then.
//!
//! Admission is decided on the caller's side, before anything is queued:
//! a request needs one of `max_running + max_waiting` slots and a KV
//! reservation for its worst case (prompt + max_tokens). Otherwise it fails
//! at once with [`Error::Overloaded`] and an estimated `retry_after`.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::chat::ChatMessage;
use crate::constraint::Constraint;
use crate::device::DeviceSpec;
use crate::kernels::quant::Kernel;
use crate::sampling::{SamplingParams, TokenLogprob};

mod admission;
mod handle;
pub(crate) mod worker;

pub use handle::Engine;

/// Most alternatives a request may ask for per token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Engine settings (the `[engine]` section of the config).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The GGUF to load.
    pub model_path: PathBuf,
    /// Name the model is served under.
    pub model_name: String,
    /// CPU threads for the forward pass (0: every core).
    pub threads: usize,
    /// Sequences decoded together in one step.
    pub max_running: usize,
    /// Admitted requests waiting for a running slot; beyond: `Overloaded`.
    pub max_waiting: usize,
    /// KV cache memory for all sequences together; requests reserve their
    /// worst case against it.
    pub kv_cache_bytes: usize,
    /// Most tokens in one forward pass (decode tokens + prefill chunks).
    pub max_batch_tokens: usize,
    /// Most prompt tokens one sequence prefills per step, so a long prompt
    /// does not stall everyone else's stream.
    pub prefill_chunk: usize,
    /// Where the forward pass runs.
    pub device: DeviceSpec,
    /// Sequences with the same prompt (`n` choices) prefill it once and
    /// copy it (off: each prefills its own, for comparison).
    pub share_prompts: bool,
}

impl EngineConfig {
    /// Defaults for a model file: sized for a small CPU box.
    pub fn new(model_path: impl Into<PathBuf>, model_name: impl Into<String>) -> Self {
        Self {
            model_path: model_path.into(),
            model_name: model_name.into(),
            threads: 0,
            max_running: 16,
            max_waiting: 64,
            kv_cache_bytes: 1 << 30,
            max_batch_tokens: 512,
            prefill_chunk: 256,
            device: DeviceSpec::Cpu,
            share_prompts: true,
        }
    }
}

/// What to complete.
#[derive(Clone, Debug)]
pub enum Prompt {
    /// Raw text; special-token strings in it are recognised (as llama-server does).
    Text(String),
    /// A conversation, rendered with the model's chat template and ending
    /// with an open assistant turn.
    Chat(Vec<ChatMessage>),
    /// A conversation whose last message, the assistant's answer so far, is
    /// to be continued: rendered up to an open assistant turn that already
    /// holds that text (vLLM's `continue_final_message`).
    ChatContinued(Vec<ChatMessage>),
    /// A conversation with tools the model may call, rendered by a template
    /// that renders tools itself ([`crate::chat::ChatTemplate::speaks_tools`]).
    ChatWithTools {
        /// The turns, tool calls and results included.
        messages: Vec<ChatMessage>,
        /// OpenAI's `{"type": "function", "function": {...}}` objects.
        tools: Vec<serde_json::Value>,
    },
    /// Token ids as they are.
    Tokens(Vec<u32>),
}

/// A generation request.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Most tokens to generate; `None`: up to the context length.
    pub max_tokens: Option<usize>,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Stop strings (matched on text, not emitted).
    pub stop: Vec<String>,
    /// Per generated token: its logprob and this many alternatives.
    pub logprobs: Option<usize>,
    /// Per prompt token: its logprob and this many alternatives.
    pub prompt_logprobs: Option<usize>,
    /// Keep going past EOS (benchmarks).
    pub ignore_eos: bool,
    /// Reduce `max_tokens` to the room the context leaves instead of
    /// refusing it: for a server's default, which the client never chose.
    pub clamp_max_tokens: bool,
    /// What the output must be (a grammar, a post's rules).
    pub constraint: Option<Constraint>,
}

impl GenerateRequest {
    /// A request with default sampling.
    pub fn new(prompt: Prompt) -> Self {
        Self {
            prompt,
            max_tokens: None,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            logprobs: None,
            prompt_logprobs: None,
            ignore_eos: false,
            clamp_max_tokens: false,
            constraint: None,
        }
    }
}

/// A token's logprob and the most likely alternatives at its position.
#[derive(Clone, Debug, PartialEq)]
pub struct LogprobInfo {
    /// Logprob of the token actually in the sequence.
    pub logprob: f32,
    /// Most likely tokens, best first.
    pub top: Vec<TokenLogprob>,
}

/// One generated token.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenEvent {
    /// Its id.
    pub id: u32,
    /// Text that became final with this token: whole UTF-8 characters only,
    /// minus anything that may still turn out to be a stop string (so it can
    /// be empty). The concatenation of all `text`s and `Done::flush` is the answer.
    pub text: String,
    /// Present when the request asked for logprobs.
    pub logprob: Option<LogprobInfo>,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// A stop string matched.
    Stop,
    /// `max_tokens` reached.
    Length,
}

/// Token counts of a finished request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens (including a final EOS).
    pub completion_tokens: usize,
}

/// The last event of a stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Done {
    /// Why it ended.
    pub finish: FinishReason,
    /// Text held back until the end (a partial stop-string match that never completed).
    pub flush: String,
    /// Token counts.
    pub usage: Usage,
    /// Per prompt token, when asked (the first has none: nothing predicts it).
    pub prompt_logprobs: Option<Vec<Option<LogprobInfo>>>,
}

/// What a [`GenerationStream`] yields.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A token.
    Token(TokenEvent),
    /// The end.
    Done(Done),
    /// The engine failed this sequence (the engine itself keeps running).
    Error(String),
}

/// The tokens of one request. Dropping it cancels the request: the engine
/// removes the sequence at its next step and frees its cache.
#[derive(Debug)]
pub struct GenerationStream {
    rx: mpsc::UnboundedReceiver<Event>,
    prompt_tokens: usize,
}

impl GenerationStream {
    /// The next event; `None` after `Done`/`Error`.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// Blocking variant, for callers outside an async runtime.
    pub fn blocking_next(&mut self) -> Option<Event> {
        self.rx.blocking_recv()
    }

    /// Prompt length in tokens.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }
}

/// Live figures of the engine, updated every step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineStats {
    /// Sequences in the batch.
    pub running: usize,
    /// Admitted sequences waiting for a slot.
    pub waiting: usize,
    /// KV bytes reserved by admitted requests.
    pub kv_reserved_bytes: usize,
    /// KV bytes actually allocated by running sequences.
    pub kv_allocated_bytes: usize,
    /// Steps run since start.
    pub steps: u64,
    /// Tokens generated since start.
    pub generated_tokens: u64,
    /// Recent generation rate over all sequences (EWMA).
    pub tokens_per_second: f64,
    /// Grammar masks computed since start (one per constrained token).
    pub masks: u64,
    /// Time spent computing them, summed over threads.
    pub mask_seconds: f64,
    /// Time steps waited for masks after their forward pass had finished:
    /// what constrained sequences cost the batch.
    pub mask_stall_seconds: f64,
    /// Prompt tokens copied from another sequence's cache instead of
    /// prefilled (`n` choices share their prompt's prefill).
    pub shared_prompt_tokens: u64,
}

/// Facts about the loaded model.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// Served name.
    pub name: String,
    /// Architecture from the GGUF.
    pub arch: String,
    /// Context length in tokens.
    pub context_length: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Bytes of weights in memory.
    pub weight_bytes: usize,
    /// KV bytes per token.
    pub kv_bytes_per_token: usize,
    /// CPU kernel in use (for the CPU device).
    pub kernel: Kernel,
    /// Where the forward pass runs (`cpu`, `cuda:0`, ...): after a fallback,
    /// not what was asked for.
    pub device: DeviceSpec,
    /// Forward-pass threads.
    pub threads: usize,
    /// Time the load took.
    pub load_time: Duration,
}
