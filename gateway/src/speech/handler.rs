//! `POST /v1/audio/transcriptions` and `/v1/audio/translations`: read the
//! form, admit the key, decode the audio off the runtime, run it through the
//! model's speech engine, answer in the asked format (or stream SSE events),
//! and record usage (audio seconds) and metrics.

use std::convert::Infallible;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream;
use inference::speech::engine::{SpeechEvent, SpeechStream};
use inference::speech::{audio, Transcript, TranscribeOptions};

use crate::accounting::usage::{self, UsageRecord};
use crate::api::answer::{admit, Admitted};
use crate::error::ApiError;
use crate::server::auth::Caller;
use crate::server::body::read_bytes;
use crate::server::shutdown::or_shutdown;
use crate::server::sse::{event, event_stream};
use crate::server::App;
use crate::speech::form::{self, Format, Form};
use crate::speech::formats;

/// `POST /v1/audio/transcriptions`.
pub(crate) async fn transcriptions(State(app): State<App>, caller: Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    run(app, caller, headers, body, false).await
}

/// `POST /v1/audio/translations`: any language in, English text out (multilingual models).
pub(crate) async fn translations(State(app): State<App>, caller: Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    run(app, caller, headers, body, true).await
}

async fn run(app: App, caller: Caller, headers: HeaderMap, body: Body, translate: bool) -> Result<Response, ApiError> {
    let started = Instant::now();
    let speech = app.speech()?.clone();
    let ctype = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)"));
    let boundary = ctype
        .filter(|c| c.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
        .and_then(|c| multer::parse_boundary(c).ok())
        .ok_or_else(|| ApiError::unsupported_media_type("multipart/form-data", ctype))?;
    let limit = speech.config.max_upload_mb << 20;
    let bytes = read_bytes(&app, &headers, body, limit).await?;
    let form = form::parse(bytes, boundary, translate).await?;
    let (name, engine) = speech.get(&form.model).ok_or_else(|| ApiError::model_not_found(&form.model))?;
    if translate && !engine.info().multilingual {
        return Err(ApiError::invalid("model", format!("`{name}` is English-only and cannot translate; use a multilingual model")));
    }
    let admitted = admit(&app, &caller, &form.model, 0).await?;
    let mut record = usage::draft(&form.model, caller.0.as_ref().map(|k| k.id.clone()));
    record.provider = "local".into();
    record.model = name.to_owned();
    record.attempts = 1;
    let outcome = transcribe(&speech, &form, engine, translate).await;
    let (clip, events) = match outcome {
        Ok(ok) => ok,
        Err(e) => {
            fail(&app, record, &admitted, &e, started);
            return Err(e);
        }
    };
    let model = name.to_owned();
    if form.stream {
        return Ok(stream_events(app, events, record, admitted, model, clip, started));
    }
    let t = match or_shutdown(&app, async { events.finish().await.map_err(ApiError::from) }).await {
        Ok(t) => t,
        Err(e) => {
            fail(&app, record, &admitted, &e, started);
            return Err(e);
        }
    };
    finished(&app, &mut record, &admitted, &t, &model, clip, started);
    let task = if translate { "translate" } else { "transcribe" };
    let text = |body: String, mime: &'static str| ([(header::CONTENT_TYPE, mime)], body).into_response();
    let mut res = match form.format {
        Format::Json => Json(formats::json(&t)).into_response(),
        Format::VerboseJson => Json(formats::verbose_json(&t, task)).into_response(),
        Format::Text => text(format!("{}\n", t.text), "text/plain; charset=utf-8"),
        Format::Srt => text(formats::srt(&t.segments), "application/x-subrip; charset=utf-8"),
        Format::Vtt => text(formats::vtt(&t.segments), "text/vtt; charset=utf-8"),
    };
    if let Ok(v) = header::HeaderValue::from_str(&model) {
        res.headers_mut().insert("x-starling-model", v);
    }
    Ok(res)
}

/// Decode the upload (on the blocking pool: MP3 and resampling are CPU work) and admit it to the engine.
async fn transcribe(
    speech: &crate::speech::SpeechModels,
    form: &Form,
    engine: &inference::speech::SpeechEngine,
    translate: bool,
) -> Result<(f32, SpeechStream), ApiError> {
    let file = form.file.clone();
    let ext = form.extension().map(str::to_owned);
    let max_secs = speech.config.max_audio_secs;
    let decoded = tokio::task::spawn_blocking(move || audio::decode(file.to_vec(), ext.as_deref(), max_secs))
        .await
        .map_err(|e| ApiError::internal(format!("audio decoding stopped: {e}")))?
        .map_err(|e| ApiError::invalid("file", e))?;
    let clip = decoded.seconds();
    let defaults = TranscribeOptions::default();
    let opts = TranscribeOptions {
        language: form.language.clone(),
        translate,
        initial_prompt: form.prompt.clone(),
        temperatures: form.temperature.map_or(defaults.temperatures.clone(), |t| vec![t]),
        beam_size: speech.config.beam_size,
        min_window_secs: speech.config.min_window_secs,
        ..defaults
    };
    let events = engine.transcribe(decoded.samples, opts).map_err(ApiError::from)?;
    Ok((clip, events))
}

fn fail(app: &App, mut record: UsageRecord, admitted: &Admitted, e: &ApiError, started: Instant) {
    record.status = i64::from(e.status.as_u16());
    record.error = Some(e.message.clone());
    record.latency_ms = started.elapsed().as_secs_f64() * 1e3;
    app.record(record, admitted);
}

fn finished(app: &App, record: &mut UsageRecord, admitted: &Admitted, t: &Transcript, model: &str, clip: f32, started: Instant) {
    let wall = started.elapsed().as_secs_f64();
    record.completion_tokens = t.segments.iter().map(|s| s.tokens.len() as i64).sum();
    record.audio_seconds = f64::from(clip);
    record.status = 200;
    record.latency_ms = wall * 1e3;
    app.record(record.clone(), admitted);
    let m = &app.0.metrics;
    m.audio_seconds.with_label_values(&[model]).inc_by(f64::from(clip));
    if clip > 0.0 {
        m.speech_rtf.with_label_values(&[model]).observe(wall / f64::from(clip));
    }
}

/// SSE: a `transcript.text.delta` per segment as its window finishes, then
/// `transcript.text.done`. A failure ends the stream with an error event.
#[allow(clippy::too_many_arguments)]
fn stream_events(
    app: App,
    events: SpeechStream,
    record: UsageRecord,
    admitted: Admitted,
    model: String,
    clip: f32,
    started: Instant,
) -> Response {
    struct State {
        app: App,
        events: SpeechStream,
        record: UsageRecord,
        admitted: Admitted,
        model: String,
        first: bool,
    }
    let header_model = header::HeaderValue::from_str(&model).ok();
    let state = State { app, events, record, admitted, model, first: true };
    let body = stream::unfold(Some(state), move |state| async move {
        let mut s = state?;
        let item: Result<Bytes, Infallible> = match s.events.next().await {
            Some(Ok(SpeechEvent::Segment(seg))) => {
                let ev = formats::delta(&seg.text, s.first);
                s.first = false;
                return Some((Ok(event(&ev)), Some(s)));
            }
            Some(Ok(SpeechEvent::Done(t))) => {
                finished(&s.app, &mut s.record, &s.admitted, &t, &s.model, clip, started);
                Ok(event(&formats::done(&t)))
            }
            Some(Err(e)) => {
                let e = ApiError::from(e);
                fail(&s.app, s.record, &s.admitted, &e, started);
                Ok(event(&e.body()))
            }
            None => return None,
        };
        Some((item, None))
    });
    let mut res = event_stream(body);
    if let Some(v) = header_model {
        res.headers_mut().insert("x-starling-model", v);
    }
    res
}
