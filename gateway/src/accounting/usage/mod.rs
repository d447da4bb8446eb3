//! Usage records: one row per request (who, which route, which provider
//! and model answered, tokens, cost, latency, status, attempts), in SQLite
//! by default or PostgreSQL by URL: `store` writes and sums them, `writer`
//! takes them off the request path, `meter` fills one as an answer passes.
//!
//! Handlers hand records to [`UsageLog::record`] (an unbounded channel:
//! never blocks, never drops); one writer task inserts them in batches, one
//! transaction per batch, so the database never sits on a request's path.
//! A write that fails (the database restarting, a network blip) is kept
//! and retried with growing pauses: an outage delays records, it does not
//! lose them. [`UsageLog::close`] drains the channel and flushes; `serve`
//! calls it after the last request ended. With a journal (`serve` keeps
//! one, [`crate::accounting::journal`]) each record is also appended to a local file
//! before it is queued, so a hard kill or a database that stays away past
//! the shutdown grace loses nothing: the next start writes what the file
//! holds, and during a long outage memory keeps at most a bounded number,
//! the rest read back from the file. Without one, those records are logged whole at shutdown, and a
//! hard kill loses what is still queued. SQLite runs in WAL mode with
//! `synchronous=NORMAL`, so a committed batch survives a process crash.

use serde::{Deserialize, Serialize};

mod meter;
mod store;
mod writer;

pub use meter::{draft, metered, observe};
pub use store::{GroupBy, UsageError, UsageGroup, UsageStore};
pub use writer::{UsageLog, WriterMetrics};

/// One request's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The response id (`chatcmpl-...`), or a generated one for failures.
    pub request_id: String,
    /// Unix milliseconds when the request arrived.
    pub ts_ms: i64,
    /// The API key's id, when the request carried one.
    pub key_id: Option<String>,
    /// The model the client asked for (a route or a model name).
    pub route: String,
    /// Provider that answered (empty when none did).
    pub provider: String,
    /// Its model.
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Generated tokens.
    pub completion_tokens: i64,
    /// Prompt tokens served from the provider's cache.
    pub cached_tokens: i64,
    /// USD.
    pub cost_usd: f64,
    /// Arrival to first chunk (streams), milliseconds.
    pub ttft_ms: Option<f64>,
    /// Arrival to the end of the answer, milliseconds.
    pub latency_ms: f64,
    /// HTTP status of the answer (200 even if a stream failed midway; then
    /// `error` says why).
    pub status: i64,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Served from the gateway's cache.
    pub cache_hit: bool,
    /// Provider attempts made.
    pub attempts: i64,
    /// Seconds of audio (speech requests; 0 otherwise). Journals written
    /// before the field existed read as 0.
    #[serde(default)]
    pub audio_seconds: f64,
}
