//! The routed seam and everything that answers it: a provider answers chat,
//! legacy completions and audio transcriptions in OpenAI's wire format. The
//! router picks providers per request; each provider module translates to
//! whatever it talks to.
//!
//! - `local`: the in-process engines ([`local::LocalChat`]): chat and legacy
//!   completions over the loaded models (`local::generator`: one choice at
//!   a time, `local::choices`: `n` of them), transcriptions over the Whisper
//!   models (`local::speech`).
//! - `openai_compatible`: OpenAI, Groq and any OpenAI-compatible URL.
//! - `anthropic`: Claude's Messages API, translated both ways.
//! - `upstream`: the HTTP/1.1 client to cloud providers; `sse` reads their
//!   event streams; `multipart` writes the audio APIs' uploads.
//!
//! Bodies stay JSON values end to end, so fields we do not model (tools,
//! images, vendor extensions) pass through to providers that understand
//! them; only the local provider parses them into engine requests.

pub mod anthropic;
pub mod local;
pub(crate) mod multipart;
pub mod openai_compatible;
pub mod sse;
pub(crate) mod upstream;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::providers::local::generator::Load;

/// Which of OpenAI's APIs a call speaks: its body and its answer are that
/// API's. Both go through the same routes, providers, limits and records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `/v1/chat/completions`: messages in, `chat.completion` out.
    Chat,
    /// `/v1/completions`: a prompt in, `text_completion` out (legacy).
    Completions,
    /// `/v1/audio/transcriptions`: [`Call::audio`] and the form's other
    /// fields (`language`, `prompt`, `temperature`,
    /// `timestamp_granularities`) as the body. Whatever the client asked
    /// for, a provider answers OpenAI's `verbose_json` object (`text`,
    /// `language`, `duration`, `segments`), which the edge renders in the
    /// client's `response_format`; streamed, the segments one by one, then
    /// that whole object.
    Transcriptions,
    /// `/v1/audio/translations`: as [`Api::Transcriptions`], English out.
    Translations,
}

impl Api {
    /// Its path under a provider's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "chat/completions",
            Self::Completions => "completions",
            Self::Transcriptions => "audio/transcriptions",
            Self::Translations => "audio/translations",
        }
    }

    /// Audio in: priced by the minute, not by the token.
    pub fn is_audio(self) -> bool {
        matches!(self, Self::Transcriptions | Self::Translations)
    }
}

/// The uploaded file of an audio call (cheap to clone: attempts share it).
#[derive(Debug, Clone)]
pub struct Audio {
    /// The file as uploaded.
    pub bytes: Bytes,
    /// Its name as the client sent it (the extension is a format hint).
    pub filename: Option<String>,
}

/// One attempt of a request at one provider.
#[derive(Debug, Clone)]
pub struct Call {
    /// Which API the body and the answer speak.
    pub api: Api,
    /// The client's body, `model` already set to the provider's model name.
    pub body: Map<String, Value>,
    /// The provider's model name.
    pub model: String,
    /// `stream: true`.
    pub stream: bool,
    /// The last message is the assistant's answer so far, to be continued
    /// rather than answered (a stream another provider broke off; only
    /// sent where [`Provider::continues_prefill`]).
    pub continuation: bool,
    /// The file of an audio call ([`Api::is_audio`]).
    pub audio: Option<Audio>,
}

/// `chat.completion.chunk` (or `text_completion`) objects, the usage chunk
/// last when there is one.
/// An `Err` ends the stream: it is sent as an OpenAI error event.
pub type ChunkValues = BoxStream<'static, Result<Value, ApiError>>;

/// A chunk that is not for the client: from here the stream is carried on
/// by another provider (the router's resume of a broken stream). Usage
/// accounting closes the record of the one that broke off there; the server
/// never sends it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The provider carrying on.
    pub provider: String,
    /// Its model.
    pub model: String,
    /// Output chunks before the handover, which the usage the new provider
    /// reports to the client includes.
    pub carried: i64,
}

const HANDOVER: &str = "x_starling_handover";

impl Handover {
    /// As a chunk.
    pub fn to_chunk(&self) -> Value {
        serde_json::json!({HANDOVER: {"provider": self.provider, "model": self.model, "carried": self.carried}})
    }

    /// The handover `chunk` is, if it is one.
    pub fn of(chunk: &Value) -> Option<Self> {
        let h = chunk.get(HANDOVER)?;
        Some(Self {
            provider: h["provider"].as_str()?.to_owned(),
            model: h["model"].as_str()?.to_owned(),
            carried: h["carried"].as_i64().unwrap_or(0),
        })
    }
}

/// A provider's answer.
pub enum Reply {
    /// A whole `chat.completion` (or `text_completion`) object.
    Json(Value),
    /// A stream of chunk objects. Providers always report usage in the
    /// last chunk (they ask upstream for it); the server drops that chunk
    /// when the client did not ask for it.
    Stream(ChunkValues),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Json(v) => f.debug_tuple("Json").field(v).finish(),
            Self::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// Anything a route can send a request to: the one seam between the API
/// and whatever answers (the local engine, a cloud provider).
pub trait Provider: Send + Sync {
    /// The configured name (`local`, `groq`, `openai`, ...), as routes,
    /// logs and metrics name it.
    fn name(&self) -> &str;

    /// Answer one request. Errors carry the status the client should see;
    /// the router retries or falls back on 429, 5xx and `unsupported` (an
    /// API the provider does not speak), and returns other errors as they
    /// are.
    fn answer(&self, call: Call) -> BoxFuture<'_, Result<Reply, ApiError>>;

    /// Live load, where the provider knows it (the local engine does).
    fn load(&self) -> Option<Load> {
        None
    }

    /// Whether it can continue a final assistant message (a prefill), so a
    /// stream another candidate broke off can be resumed here.
    fn continues_prefill(&self) -> bool {
        false
    }
}
