//! Starling's HTTP edge: an OpenAI-compatible API (`/v1/chat/completions`,
//! `/v1/completions`, `/v1/models`, `/tokenize`, `/detokenize`) plus
//! `/health`, `/ready` and `/metrics`. Chat completions are routed to the
//! local engine or to cloud providers; the rest is served by the local
//! models.
//!
//! Where a request goes, folder by folder (`docs/ARCHITECTURE.md` has the map):
//!
//! - `server`: the app state, routes and layers (auth, SSE, shutdown).
//! - `api`: one handler file per endpoint family, and the request bodies.
//! - `routing`: model names to candidates, policy, fallback, breakers, prices.
//! - `providers`: the routed seam ([`Provider`]) and its implementations:
//!   the local engine, OpenAI-compatible servers, Anthropic.
//! - `accounting`: keys, usage records and their journal, the cache, the
//!   database pool.
//! - `speech`: `/v1/audio/transcriptions` and `/translations` over the local Whisper engines.
//! - `config`: `[[providers]]`, `[[routes]]`, retry and breaker settings.
//! - `error`: [`ApiError`], rendered in OpenAI's error shape.
//! - `metrics`: the Prometheus registry.

pub mod accounting;
pub mod api;
pub mod config;
pub mod error;
pub mod metrics;
pub mod posts;
pub mod providers;
pub mod routing;
pub mod server;
pub mod speech;

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
pub use providers::local::generator::{Generator, Generators};
pub use providers::local::{LocalChat, LocalModel};
pub use providers::{Call, Reply, Provider};
pub use speech::{SpeechConfig, SpeechModels};
pub use server::{serve, serve_connections, App, Caller, DatabaseError, ServerConfig, SetupError};
