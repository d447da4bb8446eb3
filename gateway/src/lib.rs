//! Starling's HTTP edge: an OpenAI-compatible API (`/v1/chat/completions`,
//! `/v1/completions`, `/v1/models`, `/tokenize`, `/detokenize`) plus
//! `/health`, `/ready` and `/metrics`. Chat completions are routed to the
//! local engine or to cloud providers; the rest is served by the local
//! models.
//!
//! - `server`: axum routes, body parsing, SSE, readiness, graceful shutdown.
//! - `router`: public model names to candidate providers; fallback,
//!   retries and circuit breakers (`breaker`).
//! - `provider`: the routed seam, OpenAI chat completions as JSON values.
//! - `local`: the in-process engine, as a [`Generator`] of single choices
//!   ([`LocalModel`]) and as the `local` provider ([`LocalChat`]).
//! - `anthropic`: Claude's Messages API, translated both ways.
//! - `messages`: `POST /v1/messages`, Anthropic clients inbound.
//! - `openai_compatible`: OpenAI, Groq and any OpenAI-compatible URL.
//! - `generator`: provider-neutral single-choice requests and chunks.
//! - `choices`: running a request's `n` choices.
//! - `openai`: OpenAI request bodies and their validation.
//! - `prices`: USD per token, shipped defaults and the local engine's.
//! - `config`: `[[providers]]`, `[[routes]]`, retry and breaker settings.
//! - `sse`: reading upstream event streams.
//! - `upstream`: the HTTP/1.1 client to cloud providers, driven inline.
//! - `keys`: virtual API keys (hashed), rate limits and daily budgets.
//! - `db`: the SQLite/PostgreSQL pool behind keys and usage.
//! - `cache`: answers to deterministic requests, replayed (moka).
//! - `usage`: usage records (SQLite or PostgreSQL), written off the hot path;
//!   `journal` keeps them in a local file until they are written.
//! - `error`: [`ApiError`], rendered in OpenAI's error shape.
//! - `metrics`: the Prometheus registry.

pub mod anthropic;
pub mod breaker;
pub mod cache;
mod choices;
pub mod config;
pub mod db;
pub mod error;
pub mod generator;
mod journal;
pub mod keys;
pub mod local;
pub mod messages;
pub mod metrics;
pub mod openai;
pub mod openai_compatible;
pub mod prices;
pub mod provider;
pub mod router;
pub mod server;
pub mod sse;
mod upstream;
pub mod usage;

thread_local! {
    /// Which of `starling serve`'s HTTP threads runs here (0 on any other
    /// thread). Set once as each thread starts; requests read it to use that
    /// thread's connection pool of each provider.
    static HTTP_THREAD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Mark the calling thread as HTTP thread `i` (of
/// [`ServerConfig::threads`]): its requests use the `i`-th connection pool
/// of each provider, whose connections this thread's event loop drives.
pub fn enter_http_thread(i: usize) {
    HTTP_THREAD.with(|t| t.set(i));
}

pub(crate) fn http_thread() -> usize {
    HTTP_THREAD.with(std::cell::Cell::get)
}

pub use config::{GatewayConfig, ProviderConfig, RouteConfig, Secret};
pub use error::ApiError;
pub use generator::{Generator, Generators};
pub use local::{LocalChat, LocalModel};
pub use provider::{ChatCall, ChatReply, Provider};
pub use server::{serve, serve_connections, App, Caller, DatabaseError, ServerConfig, SetupError};
