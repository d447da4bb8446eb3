//! Speech to text over HTTP: `POST /v1/audio/transcriptions` and
//! `/v1/audio/translations` as OpenAI defines them, routed like any model
//! name: to the local Whisper engines (`providers::local::speech` over
//! `inference::speech`) or to cloud providers (OpenAI's or Groq's Whisper
//! over multipart), with fallback between them.
//!
//! - `form`: the multipart body read into a validated [`form::Form`].
//! - `formats`: `json`, `text`, `srt`, `vtt`, `verbose_json` and the SSE events.
//! - `handler`: the route: admission, the router, usage record, metrics.

pub(crate) mod form;
pub mod formats;
pub(crate) mod handler;

pub use handler::transcribe;

use std::collections::BTreeMap;

use inference::speech::{Precision, SpeechEngine};
use serde::Deserialize;

/// `[speech]` of `starling.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechConfig {
    /// Speech models to load at start (names of the manifest, kind `speech-to-text`); empty: none.
    pub models: Vec<String>,
    /// What `model: "whisper-1"` (OpenAI's name, many clients' default) means here.
    pub default: String,
    /// Largest upload, MiB (413 beyond); OpenAI's limit is 25.
    pub max_upload_mb: usize,
    /// Longest audio accepted, seconds (400 beyond).
    pub max_audio_secs: f32,
    /// Beams at temperature 0 (faster-whisper's default 5; 1 is greedy and faster).
    pub beam_size: usize,
    /// The linear layers on the CPU: `int8` (our 8-bit kernels, as
    /// faster-whisper's `int8` compute type) or `float` (f32). CUDA runs f16.
    pub precision: Precision,
    /// Shortest encoder window for audio under 30 s, seconds: the audio plus
    /// one second, at least this long; 30 is faster-whisper's fixed window.
    /// 15 by default: on the speech bench's 17 clips it gives the same word
    /// error rate as 30 (and as faster-whisper) with about half the encoder
    /// time; 10 cost tiny.en accuracy.
    pub min_window_secs: u32,
    /// Clips decoded together per model.
    pub max_running: usize,
    /// Clips admitted per model (running + waiting) before 429.
    pub max_clips: usize,
}

impl SpeechConfig {
    /// The route a request's `model` takes: `whisper-1` (OpenAI's name,
    /// many clients' default) is `default` unless a route claims it.
    pub(crate) fn route<'a>(&'a self, model: &'a str, router: &crate::routing::router::Router) -> &'a str {
        if model == "whisper-1" && !router.models().any(|m| m == model) {
            &self.default
        } else {
            model
        }
    }
}

impl Default for SpeechConfig {
    fn default() -> Self {
        Self {
            models: vec!["whisper-tiny-en".into()],
            default: "whisper-tiny-en".into(),
            max_upload_mb: 25,
            max_audio_secs: 3600.0,
            beam_size: 5,
            precision: Precision::Int8,
            min_window_secs: 15,
            max_running: 8,
            max_clips: 32,
        }
    }
}

/// The loaded speech models by name, and the settings requests use.
#[derive(Clone, Debug, Default)]
pub struct SpeechModels {
    pub(crate) engines: BTreeMap<String, SpeechEngine>,
    pub(crate) config: SpeechConfig,
}

impl SpeechModels {
    pub fn new(config: SpeechConfig) -> Self {
        Self {
            engines: BTreeMap::new(),
            config,
        }
    }

    /// Serve `engine` as `name`.
    pub fn insert(&mut self, name: impl Into<String>, engine: SpeechEngine) {
        self.engines.insert(name.into(), engine);
    }


    /// Set the clips-waiting/running gauges from each engine, now.
    pub(crate) fn observe_queues(&self, metrics: &crate::metrics::Metrics) {
        for (name, engine) in &self.engines {
            let (waiting, running) = engine.queue();
            metrics.speech_queue.with_label_values(&[name.as_str(), "waiting"]).set(waiting as i64);
            metrics.speech_queue.with_label_values(&[name.as_str(), "running"]).set(running as i64);
        }
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.engines.keys().map(String::as_str)
    }
}
