//! The API's handlers, one file per endpoint family, and the request
//! bodies they parse.
//!
//! - `chat`: `POST /v1/chat/completions` (routed), and the path every chat
//!   request takes whichever API it came by.
//! - `messages`: `POST /v1/messages`, Anthropic clients, translated to chat.
//! - `completions`: `POST /v1/completions` (legacy, local models).
//! - `models`, `tokenize`, `usage`: the rest of `/v1` and vLLM's tokenizer.
//! - `openai`: OpenAI request bodies and their validation.

pub(crate) mod chat;
pub(crate) mod completions;
pub mod messages;
pub(crate) mod models;
pub mod openai;
pub(crate) mod tokenize;
pub(crate) mod usage;
