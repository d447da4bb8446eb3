//! OpenAI's wire format: request bodies (parsed leniently: unknown fields
//! are ignored, as OpenAI ignores them) and their validation into
//! provider-neutral [`CompletionRequest`]s.

use std::collections::HashMap;

use inference::{ChatMessage, Constraint, Role, SamplingParams};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::structured::{Structured, Tagged};
use super::tools::{self, Tools};
use crate::error::ApiError;
use crate::providers::local::generator::{CompletionRequest, Input};

/// Most choices per request (OpenAI allows 128; every choice here is a
/// sequence in the engine, so the limit is the server's to set).
pub const MAX_N: usize = 16;
/// Most stop strings (OpenAI's limit).
pub const MAX_STOP: usize = 4;
/// Most `top_logprobs` (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most `logprobs` on legacy completions (OpenAI's limit).
pub const MAX_LEGACY_LOGPROBS: usize = 5;

/// A request body parsed into `T`: 400 naming the field for a wrong type
/// or an out-of-range number.
pub fn from_value<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let mut path = e.path().to_string();
        let mut inner = e.into_inner().to_string();
        if path == "." {
            // serde loses the path inside `#[serde(flatten)]`; the shared
            // sampling and output-constraint fields are the flattened parts
            // of our bodies, so read them alone to name the field.
            if let Err(e) = serde_path_to_error::deserialize::<_, Sampling>(value) {
                path = e.path().to_string();
                inner = e.into_inner().to_string();
            } else if let Err(e) = serde_path_to_error::deserialize::<_, Structured>(value) {
                path = e.path().to_string();
                inner = e.into_inner().to_string();
            }
        }
        if path == "." {
            ApiError::bad_body(format!("Invalid request body: {inner}"))
        } else {
            ApiError::invalid(path, inner)
        }
    })
}

/// A string or a list of strings (`stop`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with usage and no choices.
    #[serde(default)]
    pub include_usage: bool,
}

/// A message's `content`: a string or an array of parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts; only `text` parts are supported.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    /// `text`, `image_url`, `input_audio`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

/// One chat message.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The content (null only on assistant turns that call tools).
    pub content: Option<Content>,
    /// An assistant turn's calls.
    pub tool_calls: Option<Vec<serde_json::Value>>,
    /// A `tool` turn's call.
    pub tool_call_id: Option<String>,
}

/// Sampling fields shared by chat and legacy completions, plus the
/// extensions vLLM and llama-server accept (`top_k`, `min_p`,
/// `repetition_penalty`, `ignore_eos`).
#[derive(Debug, Default, Deserialize)]
pub struct Sampling {
    /// 0..=2.
    pub temperature: Option<f32>,
    /// (0, 1].
    pub top_p: Option<f32>,
    /// -2..=2.
    pub presence_penalty: Option<f32>,
    /// -2..=2.
    pub frequency_penalty: Option<f32>,
    /// Token id (as a string) -> bias in -100..=100.
    pub logit_bias: Option<HashMap<String, f32>>,
    /// Same seed, same request: same output.
    pub seed: Option<i64>,
    /// Keep the k most likely tokens.
    pub top_k: Option<u32>,
    /// Drop tokens below this fraction of the best one's probability.
    pub min_p: Option<f32>,
    /// llama.cpp-style repetition penalty.
    pub repetition_penalty: Option<f32>,
    /// vLLM's: generate past the end-of-sequence token, up to `max_tokens`
    /// (benchmarks that need answers of a fixed length).
    pub ignore_eos: Option<bool>,
    /// `stop`: a string or up to 4.
    pub stop: Option<OneOrMany>,
    /// Choices.
    pub n: Option<u64>,
    /// Stream as SSE.
    pub stream: Option<bool>,
    /// Stream options.
    pub stream_options: Option<StreamOptions>,
    /// End-user id (recorded, not used for sampling).
    pub user: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    /// Model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Deprecated name of `max_completion_tokens`.
    pub max_tokens: Option<u64>,
    /// Most tokens to generate.
    pub max_completion_tokens: Option<u64>,
    /// Return logprobs of the output tokens.
    pub logprobs: Option<bool>,
    /// Alternatives per token (needs `logprobs`).
    pub top_logprobs: Option<u64>,
    /// Functions the model may call.
    pub tools: Option<Vec<serde_json::Value>>,
    /// `none`, `auto`, `required` or a named function.
    pub tool_choice: Option<serde_json::Value>,
    /// More than one call per answer (default true).
    pub parallel_tool_calls: Option<bool>,
    /// Legacy function calling: refused when non-empty.
    pub functions: Option<Vec<serde_json::Value>>,
    /// vLLM's extension: continue the last message (the assistant's answer
    /// so far) instead of answering it.
    #[serde(default)]
    pub continue_final_message: bool,
    /// vLLM's companion flag: `true` with `continue_final_message` is a
    /// contradiction (refused); otherwise it changes nothing.
    pub add_generation_prompt: Option<bool>,
    /// The shared sampling fields.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// What the output must be (`response_format`, `guided_*`, `x_post`).
    #[serde(flatten)]
    pub structured: Structured,
}

/// A legacy `prompt`: text, texts, token ids, or lists of token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One prompt as token ids.
    Tokens(Vec<u32>),
    /// Several prompts as token ids.
    TokenLists(Vec<Vec<u32>>),
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionsRequest {
    /// Model name.
    pub model: String,
    /// The prompt(s).
    pub prompt: PromptInput,
    /// Most tokens to generate (OpenAI's default is 16).
    pub max_tokens: Option<u64>,
    /// Prepend the prompt to each choice's text.
    #[serde(default)]
    pub echo: bool,
    /// Return this many alternatives per token (0..=5).
    pub logprobs: Option<u64>,
    /// Text after the completion: unsupported (no fill-in-the-middle).
    pub suffix: Option<String>,
    /// Server-side best-of: only `best_of == n` is supported.
    pub best_of: Option<u64>,
    /// The shared sampling fields.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// What the output must be (`response_format`, `guided_*`, `x_post`).
    #[serde(flatten)]
    pub structured: Structured,
}

/// What a request asks of the server beyond one choice.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Choices per prompt.
    pub n: usize,
    /// Stream as SSE.
    pub stream: bool,
    /// Send a usage chunk at the end of a stream.
    pub include_usage: bool,
}

fn seed_of(seed: Option<i64>) -> Option<u64> {
    // Negative seeds are valid in OpenAI's schema; reinterpret the bits.
    seed.map(|s| s as u64)
}

impl Sampling {
    /// The choice count and streaming flags, checked.
    pub fn shape(&self) -> Result<Shape, ApiError> {
        let n = self.n.unwrap_or(1);
        if n == 0 || n > MAX_N as u64 {
            return Err(ApiError::invalid("n", format!("{n} is not between 1 and {MAX_N}")));
        }
        let stream = self.stream.unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(ApiError::invalid("stream_options", "stream_options is only allowed when stream is true"));
        }
        Ok(Shape {
            n: n as usize,
            stream,
            include_usage: self.stream_options.as_ref().is_some_and(|o| o.include_usage),
        })
    }

    /// Engine sampling settings (ranges are checked by the engine, which
    /// names the field) and stop strings.
    fn params(&self) -> Result<(SamplingParams, Vec<String>), ApiError> {
        let d = SamplingParams::default();
        let mut logit_bias = Vec::new();
        for (k, &v) in self.logit_bias.iter().flatten() {
            let id = k
                .parse::<u32>()
                .map_err(|_| ApiError::invalid("logit_bias", format!("key `{k}` is not a token id")))?;
            logit_bias.push((id, v));
        }
        // HashMap order is random: sort so the same request samples the same.
        logit_bias.sort_by_key(|&(id, _)| id);
        let stop = match &self.stop {
            None => Vec::new(),
            Some(OneOrMany::One(s)) => vec![s.clone()],
            Some(OneOrMany::Many(v)) => v.clone(),
        };
        if stop.len() > MAX_STOP {
            return Err(ApiError::invalid("stop", format!("{} stop sequences; at most {MAX_STOP}", stop.len())));
        }
        if stop.iter().any(String::is_empty) {
            return Err(ApiError::invalid("stop", "stop sequences must not be empty"));
        }
        let p = SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_p: self.top_p.unwrap_or(d.top_p),
            top_k: self.top_k.map_or(d.top_k, |k| k as usize),
            min_p: self.min_p.unwrap_or(d.min_p),
            repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            logit_bias,
            seed: seed_of(self.seed),
        };
        Ok((p, stop))
    }
}

fn max_tokens(param: &str, v: Option<u64>, default: usize) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(0) => Err(ApiError::invalid(param, "must be at least 1")),
        // The engine checks it against the context; clamp only what does not
        // fit in usize so that check names the real value's field.
        Some(v) => Ok(usize::try_from(v).unwrap_or(usize::MAX)),
    }
}

/// Chat messages from their wire form: roles checked, text parts joined,
/// tool calls and results kept (the provider decides how to write them).
fn chat_messages(messages: &[Message]) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "at least one message is required"));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        match m.role.as_str() {
            "system" | "developer" | "user" | "assistant" | "tool" => {}
            "function" => {
                return Err(ApiError::unsupported(
                    &format!("messages[{i}].role"),
                    "role `function` (legacy function calling) is not supported; use tools",
                ))
            }
            other => {
                return Err(ApiError::invalid(
                    format!("messages[{i}].role"),
                    format!("`{other}` is not one of system, developer, user, assistant, tool"),
                ))
            }
        }
        if m.role == "tool" && m.tool_call_id.is_none() {
            return Err(ApiError::invalid(format!("messages[{i}].tool_call_id"), "a tool message answers a call: tool_call_id is required"));
        }
        let calls = m.tool_calls.as_deref().filter(|c| !c.is_empty());
        if calls.is_some() && m.role != "assistant" {
            return Err(ApiError::invalid(format!("messages[{i}].tool_calls"), "only assistant messages carry tool_calls"));
        }
        let text = match &m.content {
            None if calls.is_some() => String::new(),
            None => return Err(ApiError::invalid(format!("messages[{i}].content"), "content is required")),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        ("text", None) => {
                            return Err(ApiError::invalid(
                                format!("messages[{i}].content[{j}].text"),
                                "a text part needs `text`",
                            ))
                        }
                        (kind, _) => {
                            return Err(ApiError::unsupported(
                                &format!("messages[{i}].content[{j}].type"),
                                format!("content parts of type `{kind}` are not supported; only `text`"),
                            ))
                        }
                    }
                }
                text
            }
        };
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => Role::User,
        };
        let mut message = ChatMessage::new(role, text);
        message.tool_calls = calls.unwrap_or_default().iter().map(tools::call_with_object_arguments).collect();
        message.tool_call_id.clone_from(&m.tool_call_id);
        out.push(message);
    }
    Ok(out)
}

impl ChatCompletionRequest {
    /// The provider request for one choice, checked.
    pub fn to_completion(&self, default_max_tokens: usize) -> Result<CompletionRequest, ApiError> {
        if self.functions.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(ApiError::unsupported("functions", "functions (legacy function calling) are not supported; use tools"));
        }
        let tools = self.tools()?;
        let messages = chat_messages(&self.messages)?;
        let input = chat_input(messages, self.continue_final_message, self.add_generation_prompt)?;
        let asked = self.max_completion_tokens.or(self.max_tokens);
        let max = max_tokens("max_completion_tokens", asked, default_max_tokens)?;
        let logprobs = match (self.logprobs.unwrap_or(false), self.top_logprobs) {
            (_, Some(k)) if k > MAX_TOP_LOGPROBS as u64 => {
                return Err(ApiError::invalid("top_logprobs", format!("{k} is not between 0 and {MAX_TOP_LOGPROBS}")))
            }
            (false, Some(_)) => return Err(ApiError::invalid("top_logprobs", "top_logprobs requires logprobs: true")),
            (true, k) => Some(k.unwrap_or(0) as usize),
            (false, None) => None,
        };
        let (sampling, stop) = self.sampling.params()?;
        let constraint = self.constraint(tools.as_ref())?;
        Ok(CompletionRequest {
            model: self.model.clone(),
            input,
            max_tokens: max,
            clamp_max_tokens: asked.is_none(),
            sampling,
            stop,
            logprobs,
            prompt_logprobs: None,
            ignore_eos: self.sampling.ignore_eos.unwrap_or(false),
            constraint,
            tools,
        })
    }

    /// The request's tools, checked; `None` without any.
    fn tools(&self) -> Result<Option<Tools>, ApiError> {
        Tools::parse(self.tools.as_deref(), self.tool_choice.as_ref(), self.parallel_tool_calls)
    }

    /// The output constraint: the tools' grammar or `response_format` and
    /// its kin (not both: which would win is not for us to guess).
    fn constraint(&self, tools: Option<&Tools>) -> Result<Option<Tagged>, ApiError> {
        let structured = self.structured.constraint()?;
        let Some(grammar) = tools.and_then(Tools::grammar) else {
            return Ok(structured);
        };
        if let Some(s) = structured {
            return Err(ApiError::unsupported(&s.field, "an output constraint together with tools is not supported"));
        }
        Ok(Some(Tagged { constraint: Constraint::Grammar(grammar), field: "tools".into() }))
    }
}

/// OpenAI's default `max_tokens` for legacy completions.
pub const LEGACY_DEFAULT_MAX_TOKENS: usize = 16;

impl CompletionsRequest {
    /// One provider request per prompt, checked.
    pub fn to_completions(&self) -> Result<Vec<CompletionRequest>, ApiError> {
        if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::unsupported("suffix", "suffix (fill-in-the-middle) is not supported"));
        }
        let n = self.sampling.n.unwrap_or(1);
        if self.best_of.is_some_and(|b| b != n) {
            return Err(ApiError::unsupported("best_of", "best_of is supported only equal to n"));
        }
        let inputs: Vec<Input> = match &self.prompt {
            PromptInput::Text(t) => vec![Input::Text(t.clone())],
            PromptInput::Texts(v) => v.iter().cloned().map(Input::Text).collect(),
            PromptInput::Tokens(t) => vec![Input::Tokens(t.clone())],
            PromptInput::TokenLists(v) => v.iter().cloned().map(Input::Tokens).collect(),
        };
        if inputs.is_empty() || inputs.len() * (n as usize).max(1) > MAX_N {
            return Err(ApiError::invalid(
                "prompt",
                format!("{} prompts x n = {n}: between 1 and {MAX_N} choices per request", inputs.len()),
            ));
        }
        let logprobs = match self.logprobs {
            Some(k) if k > MAX_LEGACY_LOGPROBS as u64 => {
                return Err(ApiError::invalid("logprobs", format!("{k} is not between 0 and {MAX_LEGACY_LOGPROBS}")))
            }
            k => k.map(|k| k as usize),
        };
        let max = max_tokens("max_tokens", self.max_tokens, LEGACY_DEFAULT_MAX_TOKENS)?;
        let (sampling, stop) = self.sampling.params()?;
        let constraint = self.structured.constraint()?;
        Ok(inputs
            .into_iter()
            .map(|input| CompletionRequest {
                model: self.model.clone(),
                input,
                max_tokens: max,
                clamp_max_tokens: self.max_tokens.is_none(),
                sampling: sampling.clone(),
                stop: stop.clone(),
                logprobs,
                prompt_logprobs: if self.echo { logprobs } else { None },
                ignore_eos: self.sampling.ignore_eos.unwrap_or(false),
                constraint: constraint.clone(),
                tools: None,
            })
            .collect())
    }
}

/// `POST /tokenize`.
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    /// Model name.
    pub model: String,
    /// Text to tokenize.
    pub prompt: Option<String>,
    /// Or a conversation, rendered with the chat template.
    pub messages: Option<Vec<Message>>,
    /// Tokenize as the model will see the prompt (special tokens and BOS);
    /// `false` treats special-token strings in `prompt` as text.
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
    /// With `messages`: render them as a chat request with
    /// `continue_final_message` would be.
    #[serde(default)]
    pub continue_final_message: bool,
}

fn yes() -> bool {
    true
}

/// `POST /detokenize`.
#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    /// Model name.
    pub model: String,
    /// Token ids.
    pub tokens: Vec<u32>,
}

/// A conversation as an input: answered, or its last (assistant) message
/// continued.
fn chat_input(messages: Vec<ChatMessage>, continue_final: bool, add_generation_prompt: Option<bool>) -> Result<Input, ApiError> {
    if !continue_final {
        return Ok(Input::Chat(messages));
    }
    if add_generation_prompt == Some(true) {
        return Err(ApiError::invalid("add_generation_prompt", "add_generation_prompt and continue_final_message cannot both be true"));
    }
    if messages.last().is_none_or(|m| m.role != Role::Assistant) {
        return Err(ApiError::invalid("messages", "continue_final_message needs the last message to be the assistant's"));
    }
    Ok(Input::ChatContinued(messages))
}

impl TokenizeRequest {
    /// The input to tokenize, checked.
    pub fn input(&self) -> Result<Input, ApiError> {
        match (&self.prompt, &self.messages) {
            (Some(p), None) => Ok(Input::Text(p.clone())),
            (None, Some(m)) => chat_input(chat_messages(m)?, self.continue_final_message, None),
            _ => Err(ApiError::invalid("prompt", "give exactly one of `prompt` and `messages`")),
        }
    }
}
