//! The in-process engine as a [`Provider`].

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use inference::{Engine, Event, FinishReason, GenerateRequest, LogprobInfo, Prompt};

use crate::error::ApiError;
use crate::provider::{Chunk, ChunkStream, CompletionRequest, Finish, Input, Load, ModelCard, Provider, TokenLogprob, Usage};

/// One loaded model served by the local engine.
#[derive(Clone)]
pub struct LocalProvider {
    engine: Engine,
    card: ModelCard,
}

impl std::fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProvider").field("model", &self.card.id).finish()
    }
}

impl LocalProvider {
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
        Self { engine, card }
    }

    /// The engine behind it.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn prompt(input: &Input) -> Prompt {
        match input {
            Input::Chat(m) => Prompt::Chat(m.clone()),
            Input::Text(t) => Prompt::Text(t.clone()),
            Input::Tokens(t) => Prompt::Tokens(t.clone()),
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

impl Provider for LocalProvider {
    fn name(&self) -> &str {
        "local"
    }

    fn models(&self) -> Vec<ModelCard> {
        vec![self.card.clone()]
    }

    fn complete(&self, req: CompletionRequest) -> BoxFuture<'_, Result<ChunkStream, ApiError>> {
        Box::pin(async move {
            let prompt = Self::prompt(&req.input);
            // Prompt ids are needed only to name the tokens of an echo.
            let prompt_ids = match req.prompt_logprobs {
                Some(_) => Some(self.engine.encode_prompt(&prompt)?),
                None => None,
            };
            let mut g = GenerateRequest::new(prompt);
            g.max_tokens = Some(req.max_tokens);
            g.clamp_max_tokens = req.clamp_max_tokens;
            g.sampling = req.sampling;
            g.stop = req.stop;
            g.logprobs = req.logprobs;
            g.prompt_logprobs = req.prompt_logprobs;
            let gen = self.engine.generate(g)?;
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

    fn tokenize(&self, _model: &str, input: &Input, add_special_tokens: bool) -> Result<Vec<u32>, ApiError> {
        match (input, add_special_tokens) {
            (Input::Text(t), false) => Ok(self.engine.tokenizer().encode(t, false)?),
            _ => Ok(self.engine.encode_prompt(&Self::prompt(input))?),
        }
    }

    fn detokenize(&self, _model: &str, tokens: &[u32]) -> Result<String, ApiError> {
        let vocab = self.engine.info().vocab_size;
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ApiError::invalid("tokens", format!("token id {bad} is outside the vocabulary (size {vocab})")));
        }
        Ok(self.engine.tokenizer().decode(tokens, false))
    }

    fn load(&self) -> Option<Load> {
        let s = self.engine.stats();
        Some(Load {
            running: s.running,
            waiting: s.waiting,
            kv_used_bytes: s.kv_reserved_bytes,
            kv_capacity_bytes: self.engine.kv_budget_bytes(),
        })
    }
}
