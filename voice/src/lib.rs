//! Voice commands: `POST /v1/voice/commands` turns speech (or text) into a
//! posting action in one call: the transcript (the process's speech to
//! text, [`Speech`]), the reading (the deterministic [`grammar`], else the
//! language model under a JSON schema, [`model::Model`]), times resolved in
//! the account's zone ([`when`]), then the action through the posting
//! service's own functions (`posting::api::ops`), or a single-use
//! confirmation token for what is destructive, unsure or ambiguous.
//!
//! - `words`: an utterance as tokens, numbers said in words.
//! - `when`: dates, times and periods as said, in the account's zone.
//! - `intent`: the intents and their arguments.
//! - `grammar`: the deterministic reading of the commands.
//! - `model`: the language model's reading, checked against what was said.
//! - `matching`: names said against names stored.
//! - `actions`: what a reading means in the posting service, and doing it.
//! - `service`: one command end to end; confirmations; the record.
//! - `store`: the `voice_commands` table.
//! - `api`: the HTTP routes; `error`: their errors in OpenAI's shape.

pub mod actions;
mod api;
pub mod error;
pub mod grammar;
pub mod intent;
pub mod matching;
mod metrics;
pub mod model;
pub mod service;
pub mod store;
pub mod when;
pub mod words;

pub use error::VoiceError;
pub use model::{Failure, Model};
pub use service::{Answer, Audio, Input, Speech, Voice};

use serde::Deserialize;

/// `[voice]` of `starling.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceConfig {
    /// Serve `/v1/voice/*` with `serve` (needs `[database]` and `[posting]`).
    pub enabled: bool,
    /// Below this confidence a command that changes something waits for a
    /// confirmation (the grammar's full readings are 0.95, partial ones and
    /// the model's 0.5).
    pub confidence_threshold: f64,
    /// How long a confirmation token works, seconds.
    pub confirmation_ttl_secs: u64,
    /// The model (or route) that reads what the grammar does not; empty:
    /// the local model.
    pub model: String,
    /// The speech model; empty: `[speech] default`.
    pub speech_model: String,
    /// Keep each command's audio with its record.
    pub keep_audio: bool,
    /// Largest upload, MiB (413 beyond).
    pub max_upload_mb: usize,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            confidence_threshold: 0.7,
            confirmation_ttl_secs: 300,
            model: String::new(),
            speech_model: String::new(),
            keep_audio: false,
            max_upload_mb: 25,
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The database.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The metrics registry.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl Voice {
    /// The routes (`/v1/voice/*`), behind the same keys as `guard` checks.
    pub fn router(&self, guard: platform::auth::Guard) -> axum::Router {
        api::router(self.clone(), guard)
    }
}
