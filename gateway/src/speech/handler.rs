//! `POST /v1/audio/transcriptions` and `/v1/audio/translations`: read the
//! form, admit the key, route the call (the local Whisper engines or a cloud
//! provider, with fallback), answer in the asked format (or stream SSE
//! events), and record usage (audio seconds, cost) and metrics.

use std::convert::Infallible;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use serde_json::Value;

use crate::accounting::usage::{self, UsageRecord};
use crate::api::answer::{admit, failed, Admitted, Source};
use crate::error::ApiError;
use crate::providers::{Api, Audio, ChunkValues, Reply};
use crate::server::auth::Caller;
use crate::server::body::read_bytes;
use crate::server::shutdown::or_shutdown;
use crate::server::sse::{event, event_stream};
use crate::server::App;
use crate::speech::form::{self, Format};
use crate::speech::formats;

/// `POST /v1/audio/transcriptions`.
pub(crate) async fn transcriptions(State(app): State<App>, caller: Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    run(app, caller, headers, body, Api::Transcriptions).await
}

/// `POST /v1/audio/translations`: any language in, English text out (multilingual models).
pub(crate) async fn translations(State(app): State<App>, caller: Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    run(app, caller, headers, body, Api::Translations).await
}

async fn run(app: App, caller: Caller, headers: HeaderMap, body: Body, api: Api) -> Result<Response, ApiError> {
    let started = Instant::now();
    let speech = app.speech_config();
    let ctype = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)"));
    let boundary = ctype
        .filter(|c| c.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
        .and_then(|c| multer::parse_boundary(c).ok())
        .ok_or_else(|| ApiError::unsupported_media_type("multipart/form-data", ctype))?;
    let limit = speech.max_upload_mb << 20;
    let bytes = read_bytes(&app, &headers, body, limit).await?;
    let form = form::parse(bytes, boundary, api == Api::Translations).await?;
    let route = speech.route(&form.model, &app.0.router).to_owned();
    let admitted = admit(&app, &caller, &form.model, 0).await?;
    let mut record = usage::draft(&form.model, caller.0.as_ref().map(|k| k.id.clone()));
    let audio = Audio { bytes: form.file.clone(), filename: form.filename.clone() };
    let routing = app.0.router.answer(api, &route, form.fields(), form.stream, admitted.local_only, Some(audio));
    let routed = match or_shutdown(&app, routing).await {
        Ok(r) => r,
        Err(e) => return Err(failed(&app, record, &admitted, e, started)),
    };
    record.provider.clone_from(&routed.provider);
    record.model.clone_from(&routed.model);
    record.attempts = i64::from(routed.attempts);
    let source = Source::of(&routed);
    let answer = match routed.reply {
        Reply::Stream(items) if form.stream => return Ok(marked(stream_events(app, items, record, admitted, started), &source)),
        // A provider that does not stream (the cloud's Whisper): the events from its segments.
        Reply::Json(v) if form.stream => {
            let items = stream::iter(formats::segments(&v).to_vec().into_iter().chain([v]).map(Ok)).boxed();
            return Ok(marked(stream_events(app, items, record, admitted, started), &source));
        }
        Reply::Json(v) => v,
        Reply::Stream(items) => match or_shutdown(&app, last(items)).await {
            Ok(v) => v,
            Err(e) => return Err(failed(&app, record, &admitted, e, started)),
        },
    };
    finished(&app, &mut record, &admitted, &answer, started);
    let text = |body: String, mime: &'static str| ([(header::CONTENT_TYPE, mime)], body).into_response();
    let res = match form.format {
        Format::Json => Json(formats::json(&answer)).into_response(),
        Format::VerboseJson => Json(formats::verbose(answer)).into_response(),
        Format::Text => text(format!("{}\n", formats::text(&answer)), "text/plain; charset=utf-8"),
        Format::Srt => text(formats::srt(&answer), "application/x-subrip; charset=utf-8"),
        Format::Vtt => text(formats::vtt(&answer), "text/vtt; charset=utf-8"),
    };
    Ok(marked(res, &source))
}

/// The transcript of `file` by `model` (a route, or `whisper-1` for the
/// default), with `prompt` as Whisper's initial prompt (words to expect),
/// for another service of the process: admitted, routed (local Whisper or
/// a cloud provider, with fallback) and recorded as a transcription
/// request of `caller`'s, without HTTP.
pub async fn transcribe(app: &App, caller: &Caller, file: Bytes, filename: Option<String>, model: Option<&str>, prompt: Option<String>) -> Result<String, ApiError> {
    let started = Instant::now();
    let speech = app.speech_config();
    let limit = speech.max_upload_mb << 20;
    if file.len() > limit {
        return Err(ApiError::too_large(limit));
    }
    let form = form::Form {
        file,
        filename,
        model: model.unwrap_or("whisper-1").to_owned(),
        language: None,
        prompt,
        format: Format::VerboseJson,
        temperature: None,
        timestamp_granularities: Vec::new(),
        stream: false,
    };
    let route = speech.route(&form.model, &app.0.router).to_owned();
    let admitted = admit(app, caller, &form.model, 0).await?;
    let mut record = usage::draft(&form.model, caller.0.as_ref().map(|k| k.id.clone()));
    let audio = Audio { bytes: form.file.clone(), filename: form.filename.clone() };
    let routing = app.0.router.answer(Api::Transcriptions, &route, form.fields(), false, admitted.local_only, Some(audio));
    let routed = match or_shutdown(app, routing).await {
        Ok(r) => r,
        Err(e) => return Err(failed(app, record, &admitted, e, started)),
    };
    record.provider.clone_from(&routed.provider);
    record.model.clone_from(&routed.model);
    record.attempts = i64::from(routed.attempts);
    let answer = match routed.reply {
        Reply::Json(v) => v,
        Reply::Stream(items) => match or_shutdown(app, last(items)).await {
            Ok(v) => v,
            Err(e) => return Err(failed(app, record, &admitted, e, started)),
        },
    };
    finished(app, &mut record, &admitted, &answer, started);
    Ok(formats::text(&answer).to_owned())
}

fn marked(mut res: Response, source: &Source) -> Response {
    source.mark(&mut res);
    res
}

/// The whole answer at the end of a stream nobody asked for.
async fn last(mut items: ChunkValues) -> Result<Value, ApiError> {
    let mut last = None;
    while let Some(item) = items.next().await {
        last = Some(item?);
    }
    last.ok_or_else(|| ApiError::bad_gateway("the transcription ended without an answer"))
}

/// Record a transcription (`verbose_json`) and observe its audio seconds and real-time factor.
fn finished(app: &App, record: &mut UsageRecord, admitted: &Admitted, answer: &Value, started: Instant) {
    let wall = started.elapsed().as_secs_f64();
    let clip = formats::duration(answer);
    record.completion_tokens =
        formats::segments(answer).iter().map(|s| s["tokens"].as_array().map_or(0, Vec::len) as i64).sum();
    record.audio_seconds = clip;
    record.status = 200;
    record.latency_ms = wall * 1e3;
    app.record(record.clone(), admitted);
    let m = &app.0.metrics;
    let model = record.model.as_str();
    m.audio_seconds.with_label_values(&[model]).inc_by(clip.max(0.0));
    if clip > 0.0 {
        m.speech_rtf.with_label_values(&[model]).observe(wall / clip);
    }
}

/// SSE: a `transcript.text.delta` per segment, then `transcript.text.done`
/// from the whole answer (the item that is not a segment, which has no `start`).
/// A failure ends the stream with an error event.
fn stream_events(app: App, items: ChunkValues, record: UsageRecord, admitted: Admitted, started: Instant) -> Response {
    struct State {
        app: App,
        items: ChunkValues,
        record: UsageRecord,
        admitted: Admitted,
        first: bool,
    }
    let state = State { app, items, record, admitted, first: true };
    let body = stream::unfold(Some(state), move |state| async move {
        let mut s = state?;
        let item: Result<Bytes, Infallible> = match s.items.next().await {
            Some(Ok(v)) if v.get("start").is_some() => {
                let ev = formats::delta(&v, s.first);
                s.first = false;
                return Some((Ok(event(&ev)), Some(s)));
            }
            Some(Ok(v)) => {
                finished(&s.app, &mut s.record, &s.admitted, &v, started);
                Ok(event(&formats::done(&v)))
            }
            Some(Err(e)) => Ok(event(&failed(&s.app, s.record, &s.admitted, e, started).body())),
            None => {
                let e = ApiError::bad_gateway("the transcription ended without an answer");
                Ok(event(&failed(&s.app, s.record, &s.admitted, e, started).body()))
            }
        };
        Some((item, None))
    });
    event_stream(body)
}
