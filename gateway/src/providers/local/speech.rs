//! Transcriptions on the local Whisper engines: the upload decoded off the
//! runtime, admitted to the model's engine, answered as OpenAI's
//! `verbose_json` object (streamed: each segment as its window finishes,
//! then the whole object).
//!
//! What a model here cannot do (translate or take another language on an
//! English-only model, word timestamps, a codec we do not decode) is
//! `unsupported`, so a route moves on to a candidate that can.

use futures_util::stream::{self, StreamExt};
use inference::speech::engine::SpeechEvent;
use inference::speech::{audio, TranscribeOptions};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::providers::local::LocalChat;
use crate::providers::{Api, Call, Reply};
use crate::speech::{formats, SpeechConfig};

impl LocalChat {
    pub(super) async fn transcribe(&self, call: Call) -> Result<Reply, ApiError> {
        let speech = self.speech.get().ok_or_else(|| ApiError::not_ready("Speech models are still loading; retry shortly."))?;
        let engine = speech.engines.get(&call.model).ok_or_else(|| ApiError::model_not_found(&call.model))?;
        let translate = call.api == Api::Translations;
        let opts = options(&call.body, translate, &speech.config)?;
        if !engine.info().multilingual {
            let english_only = |param: &str, what: String| {
                ApiError::unsupported(param, format!("`{}` is English-only; {what}; use a multilingual model", call.model))
            };
            if translate {
                return Err(english_only("model", "it cannot translate".into()));
            }
            if let Some(code) = opts.language.as_deref().filter(|c| *c != "en") {
                return Err(english_only("language", format!("`{code}` is not available")));
            }
        }
        let upload = call.audio.ok_or_else(|| ApiError::internal("an audio call without its file"))?;
        let ext = upload.filename.as_deref().and_then(|n| n.rsplit_once('.')).map(|(_, e)| e.to_owned());
        let max_secs = speech.config.max_audio_secs;
        let engine = engine.clone();
        // MP3 decoding, resampling and the log-mel are CPU work: off the event loop.
        let mut events = tokio::task::spawn_blocking(move || {
            let decoded = audio::decode(upload.bytes.to_vec(), ext.as_deref(), max_secs).map_err(|e| match e {
                audio::AudioError::Unsupported(_) => ApiError::unsupported("file", e),
                e => ApiError::invalid("file", e),
            })?;
            Ok::<_, ApiError>(engine.transcribe(&decoded.samples, opts)?)
        })
        .await
        .map_err(|e| ApiError::internal(format!("audio decoding stopped: {e}")))??;
        let task = if translate { "translate" } else { "transcribe" };
        if !call.stream {
            return Ok(Reply::Json(formats::verbose_json(&events.finish().await?, task)));
        }
        // The first event comes with the first window; an error before it
        // (a bad option the engine caught) is this attempt's answer.
        let first = events.next().await.ok_or_else(|| ApiError::from(inference::Error::EngineStopped))??;
        let item = move |ev: SpeechEvent| match ev {
            SpeechEvent::Segment(seg) => formats::segment(&seg),
            SpeechEvent::Done(t) => formats::verbose_json(&t, task),
        };
        let head = stream::once(std::future::ready(Ok(item(first))));
        let rest = stream::unfold(events, move |mut events| async move {
            let ev = events.next().await?;
            Some((ev.map(item).map_err(ApiError::from), events))
        });
        Ok(Reply::Stream(head.chain(rest).boxed()))
    }
}

/// The engine's options from the call's form fields and `[speech]`.
fn options(body: &Map<String, Value>, translate: bool, config: &SpeechConfig) -> Result<TranscribeOptions, ApiError> {
    let granularities = body.get("timestamp_granularities").and_then(Value::as_array);
    if granularities.is_some_and(|g| g.iter().any(|v| v == "word")) {
        return Err(ApiError::unsupported("timestamp_granularities[]", "word timestamps are not implemented here; `segment` is"));
    }
    let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    let defaults = TranscribeOptions::default();
    Ok(TranscribeOptions {
        language: text("language"),
        translate,
        initial_prompt: text("prompt"),
        temperatures: match body.get("temperature").and_then(Value::as_f64) {
            Some(t) => vec![t as f32],
            None => defaults.temperatures.clone(),
        },
        beam_size: config.beam_size,
        min_window_secs: config.min_window_secs,
        ..defaults
    })
}
