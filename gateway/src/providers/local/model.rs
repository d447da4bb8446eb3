//! [`LocalModel`]: one model loaded in the engine, as a [`Generator`] of
//! single choices. Preparing a large prompt (templating, tokenizing) runs
//! on the blocking pool, a bounded number at once.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use inference::{ChatMessage, Engine, Event, FinishReason, GenerateRequest, LogprobInfo, Prompt};

use crate::api::tools::{self, Tools};
use crate::error::ApiError;
use crate::providers::local::generator::{
    Chunk, ChunkStream, CompletionRequest, Finish, Generator, Input, Load, ModelCard, TokenLogprob, Usage,
};

/// One loaded model served by the local engine.
#[derive(Clone)]
pub struct LocalModel {
    engine: Engine,
    card: ModelCard,
    /// Large inputs being prepared (templated, tokenized, detokenized) on
    /// the blocking pool: at most one per core at once, as each holds
    /// memory in proportion to its text (concurrent 4 MB tokenizations took
    /// a process to 2.5 GiB).
    preparing: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel").field("model", &self.card.id).finish()
    }
}

impl LocalModel {
    /// Serve `engine`'s model under its configured name.
    pub fn new(engine: Engine) -> Self {
        let info = engine.info();
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let card = ModelCard {
            id: info.name.clone(),
            object: "model",
            created,
            owned_by: "starling".into(),
            max_model_len: info.context_length,
        };
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self { engine, card, preparing: Arc::new(tokio::sync::Semaphore::new(cores)) }
    }

    /// `work` on the engine, in place for an input of `bytes` under
    /// [`BLOCKING_PROMPT_BYTES`] (microseconds), else on the blocking pool
    /// with a preparation permit: never milliseconds on an HTTP thread,
    /// whose other requests would wait.
    async fn prepare<T: Send + 'static>(
        &self,
        bytes: usize,
        work: impl FnOnce(&Engine) -> Result<T, inference::Error> + Send + 'static,
    ) -> Result<T, ApiError> {
        if bytes <= BLOCKING_PROMPT_BYTES {
            return Ok(work(&self.engine)?);
        }
        let _permit = self.preparing.acquire().await.map_err(|_| ApiError::internal("prompt preparation is closed"))?;
        let engine = self.engine.clone();
        let done = tokio::task::spawn_blocking(move || work(&engine)).await;
        Ok(done.map_err(|e| ApiError::internal(format!("prompt preparation failed: {e}")))??)
    }

    /// The engine behind it.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine's prompt for `input`. Tools, calls and results go
    /// through the model's chat template where it renders tools itself,
    /// else into the documented Hermes prompt (`api::tools`).
    fn prompt(&self, input: &Input, tools: Option<&Tools>) -> Prompt {
        let (messages, continued) = match input {
            Input::Chat(m) => (m, false),
            Input::ChatContinued(m) => (m, true),
            Input::Text(t) => return Prompt::Text(t.clone()),
            Input::Tokens(t) => return Prompt::Tokens(t.clone()),
        };
        let functions = tools.map(Tools::functions).unwrap_or_default();
        let with_tools = !functions.is_empty() || messages.iter().any(ChatMessage::is_tool_turn);
        if with_tools && !continued && self.engine.template_speaks_tools() {
            // The template's own tool format: it renders calls and results too.
            return Prompt::ChatWithTools { messages: messages.clone(), tools: functions };
        }
        let messages = if with_tools { tools::conversation(messages, tools) } else { messages.clone() };
        if continued {
            Prompt::ChatContinued(messages)
        } else {
            Prompt::Chat(messages)
        }
    }

    fn token_logprob(&self, id: u32, info: Option<&LogprobInfo>) -> TokenLogprob {
        let tok = self.engine.tokenizer();
        let piece = |id: u32| {
            let bytes = tok.token_bytes(id).to_vec();
            (String::from_utf8_lossy(&bytes).into_owned(), bytes)
        };
        let (token, bytes) = piece(id);
        TokenLogprob {
            token,
            bytes,
            logprob: info.map(|i| i.logprob),
            top: info
                .map(|i| {
                    i.top
                        .iter()
                        .map(|t| {
                            let (s, b) = piece(t.id);
                            (s, b, t.logprob)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Prompts longer than this (bytes of text) are prepared on the blocking
/// pool; shorter ones take microseconds and are prepared in place.
const BLOCKING_PROMPT_BYTES: usize = 16 << 10;

fn text_bytes(input: &Input) -> usize {
    match input {
        Input::Chat(m) | Input::ChatContinued(m) => m.iter().map(|m| m.content.len()).sum(),
        Input::Text(t) => t.len(),
        Input::Tokens(t) => t.len() * 4,
    }
}

impl Generator for LocalModel {
    fn name(&self) -> &str {
        "local"
    }

    fn models(&self) -> Vec<ModelCard> {
        vec![self.card.clone()]
    }

    fn complete(&self, req: CompletionRequest) -> BoxFuture<'_, Result<ChunkStream, ApiError>> {
        Box::pin(async move {
            let prompt = self.prompt(&req.input, req.tools.as_ref());
            let bytes = text_bytes(&req.input);
            // Prompt ids are needed only to name the tokens of an echo.
            let prompt_ids = match req.prompt_logprobs {
                Some(_) => {
                    let p = prompt.clone();
                    Some(self.prepare(bytes, move |e| e.encode_prompt(&p)).await?)
                }
                None => None,
            };
            let mut g = GenerateRequest::new(prompt);
            g.max_tokens = Some(req.max_tokens);
            g.clamp_max_tokens = req.clamp_max_tokens;
            g.sampling = req.sampling;
            g.stop = req.stop;
            g.logprobs = req.logprobs;
            g.prompt_logprobs = req.prompt_logprobs;
            g.ignore_eos = req.ignore_eos;
            let field = req.constraint.as_ref().map_or_else(String::new, |t| t.field.clone());
            // Compiling a grammar takes milliseconds (the first one, with
            // the tokenizer's trie, ~200): never on an HTTP thread.
            let bytes = if req.constraint.is_some() { usize::MAX } else { bytes };
            g.constraint = req.constraint.map(|t| t.constraint);
            let gen = match self.prepare(bytes, move |e| Ok(e.generate(g))).await? {
                Ok(gen) => gen,
                // The engine cannot tell which field held the schema or rules; the request can.
                Err(inference::Error::Constraint(m)) => return Err(ApiError::invalid(field, m)),
                Err(e) => return Err(e.into()),
            };
            let this = self.clone();
            let chunks = stream::unfold(Some((gen, this, prompt_ids)), |state| async move {
                let (mut gen, this, prompt_ids) = state?;
                let chunk = match gen.next().await {
                    Some(Event::Token(t)) => {
                        let logprob = t.logprob.as_ref().map(|i| this.token_logprob(t.id, Some(i)));
                        return Some((Ok(Chunk::Delta { text: t.text, logprob }), Some((gen, this, prompt_ids))));
                    }
                    Some(Event::Done(d)) => {
                        let prompt = match (prompt_ids, d.prompt_logprobs) {
                            (Some(ids), Some(lps)) => Some(
                                ids.iter()
                                    .zip(lps.iter().chain(std::iter::repeat(&None)))
                                    .map(|(&id, lp)| this.token_logprob(id, lp.as_ref()))
                                    .collect(),
                            ),
                            _ => None,
                        };
                        Ok(Chunk::Done {
                            text: d.flush,
                            finish: match d.finish {
                                FinishReason::Eos | FinishReason::Stop => Finish::Stop,
                                FinishReason::Length => Finish::Length,
                            },
                            usage: Usage {
                                prompt_tokens: d.usage.prompt_tokens,
                                completion_tokens: d.usage.completion_tokens,
                            },
                            prompt,
                        })
                    }
                    Some(Event::Error(e)) => Err(ApiError::internal(format!("generation failed: {e}"))),
                    None => Err(ApiError::not_ready("the local engine stopped")),
                };
                // The end (or a failure): yield it, then finish the stream.
                Some((chunk, None))
            });
            Ok(chunks.boxed())
        })
    }

    fn tokenize(&self, _model: &str, input: &Input, add_special_tokens: bool) -> BoxFuture<'_, Result<Vec<u32>, ApiError>> {
        let (bytes, prompt) = (text_bytes(input), self.prompt(input, None));
        Box::pin(self.prepare(bytes, move |e| match (&prompt, add_special_tokens) {
            (Prompt::Text(t), false) => e.tokenizer().encode(t, false),
            _ => e.encode_prompt(&prompt),
        }))
    }

    fn detokenize(&self, _model: &str, tokens: &[u32]) -> BoxFuture<'_, Result<String, ApiError>> {
        let vocab = self.engine.info().vocab_size;
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            let err = ApiError::invalid("tokens", format!("token id {bad} is outside the vocabulary (size {vocab})"));
            return Box::pin(std::future::ready(Err(err)));
        }
        let tokens = tokens.to_vec();
        Box::pin(self.prepare(tokens.len() * 4, move |e| Ok(e.tokenizer().decode(&tokens, false))))
    }

    fn is_alive(&self) -> bool {
        self.engine.is_running()
    }

    fn load(&self) -> Option<Load> {
        let s = self.engine.stats();
        Some(Load {
            running: s.running,
            waiting: self.engine.admitted().saturating_sub(s.running),
            kv_used_bytes: s.kv_reserved_bytes,
            kv_capacity_bytes: self.engine.kv_budget_bytes(),
            max_running: self.engine.max_running(),
            tokens_per_second: s.tokens_per_second,
            predicted_wait: self.engine.predicted_wait(),
        })
    }
}
