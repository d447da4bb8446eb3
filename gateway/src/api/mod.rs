//! The API's handlers, one file per endpoint family, and the request
//! bodies they parse.
//!
//! - `answer`: what every request that reaches a model goes through (key
//!   limits, cache, router, usage records), whichever API it came by.
//! - `chat`: `POST /v1/chat/completions` and `POST /v1/completions`.
//! - `messages`: `POST /v1/messages`, Anthropic clients, translated to chat.
//! - `models`, `tokenize`, `usage`: the rest of `/v1` and vLLM's tokenizer.
//! - `openai`: OpenAI request bodies and their validation.

pub(crate) mod answer;
pub mod chat;
pub mod messages;
pub(crate) mod models;
pub mod openai;
pub mod structured;
pub mod tools;
pub(crate) mod tokenize;
pub(crate) mod usage;
