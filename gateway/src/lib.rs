//! Starling's HTTP edge: an OpenAI-compatible API (`/v1/chat/completions`,
//! `/v1/completions`, `/v1/models`, `/tokenize`, `/detokenize`) plus
//! `/health`, `/ready` and `/metrics`, over a [`Provider`] seam.
//!
//! - `server`: axum routes, body parsing, SSE, readiness, graceful shutdown.
//! - `openai`: OpenAI request bodies and their validation.
//! - `provider`: the provider-neutral request/chunk types and the trait.
//! - `local`: the in-process engine as a provider.
//! - `error`: [`ApiError`], rendered in OpenAI's error shape.
//! - `metrics`: the Prometheus registry.
//!
//! Routing across cloud providers comes with the gateway issue; handlers
//! already only see `Provider`s.

pub mod error;
pub mod local;
pub mod metrics;
pub mod openai;
pub mod provider;
pub mod server;

pub use error::ApiError;
pub use local::LocalProvider;
pub use provider::{Provider, Providers};
pub use server::{serve, App, ServerConfig};
