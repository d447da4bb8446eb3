//! A fake of OpenAI's Chat Completions API and its legacy Completions API
//! (and so of Groq's and vLLM's, which speak the same wire format) on
//! 127.0.0.1:0, for routing tests: real HTTP, the documented JSON and SSE
//! shapes, OpenAI's error bodies and rate-limit headers, and faults
//! scripted per request.
//!
//! Shapes follow OpenAI's API reference: a `chat.completion` object; a
//! stream of `chat.completion.chunk` events (role first, content deltas, a
//! chunk with `finish_reason`, a usage chunk with empty `choices` when
//! `stream_options.include_usage`, then `data: [DONE]`); errors as
//! `{"error": {"message", "type", "param", "code"}}`. Legacy completions
//! answer `text_completion` objects, streamed as `text_completion` chunks
//! whose choices carry `text`.
//!
//! Audio: `/v1/audio/transcriptions` and `/translations` take OpenAI's
//! multipart form and answer `json` (`text` and a `duration` usage),
//! `text`, or `verbose_json` (task, language, duration, text, segments with
//! tokens and their scores, `words` when asked for word timestamps), as
//! OpenAI's `whisper-1` and Groq's Whisper models do. The file must be WAV
//! (the fake reads its duration from the header); anything else gets
//! OpenAI's "Invalid file format" 400.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

/// What the fake does with one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 with `Retry-After` (seconds) and OpenAI's `x-ratelimit-*` headers.
    RateLimited { retry_after_secs: u64 },
    /// 500 with OpenAI's server_error body.
    ServerError,
    /// 400 with an invalid_request_error naming `param`.
    BadRequest { param: &'static str },
    /// Wait this long before the headers (a slow first token).
    Slow(Duration),
    /// 200 and SSE headers, then the connection breaks before any event.
    ResetBeforeFirstChunk,
    /// The role chunk and one content chunk, then, once the test calls
    /// [`FakeOpenAi::cut`], the connection breaks.
    ResetAfterFirstChunk,
    /// 200 with a body that is not JSON (or a stream event that is not).
    Malformed,
    /// A normal answer with `Connection: close`: the server closes the
    /// connection after it.
    CloseConnection,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub authorization: Option<String>,
    pub body: Value,
    /// The client's address: one per connection.
    pub peer: std::net::SocketAddr,
}

#[derive(Default)]
struct Inner {
    name: String,
    faults: Mutex<VecDeque<Fault>>,
    seen: Mutex<Vec<Seen>>,
    cut: tokio::sync::Notify,
}

/// A running fake; dropping it stops accepting (the task ends with the test).
#[derive(Clone)]
pub struct FakeOpenAi {
    pub base_url: String,
    inner: Arc<Inner>,
}

impl FakeOpenAi {
    /// Start one; `name` appears in its answers' text.
    pub async fn start(name: &str) -> Self {
        Self::start_on(name, false).await
    }

    /// Start one serving HTTPS with `tests/tls/server.pem` (for `localhost`
    /// and 127.0.0.1, signed by `tests/tls/ca.pem`).
    pub async fn start_tls(name: &str) -> Self {
        Self::start_on(name, true).await
    }

    async fn start_on(name: &str, tls: bool) -> Self {
        let inner = Arc::new(Inner { name: name.into(), ..Default::default() });
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/v1/audio/translations", post(translations))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let port = listener.local_addr().expect("addr").port();
        let base_url = if tls {
            tokio::spawn(crate::support::serve_tls(listener, app));
            format!("https://localhost:{port}/v1")
        } else {
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://127.0.0.1:{port}/v1")
        };
        Self { base_url, inner }
    }

    /// Script the next requests' faults (then normal answers).
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.inner.faults.lock().expect("lock").extend(faults);
    }

    /// Break the stream held open by [`Fault::ResetAfterFirstChunk`].
    pub fn cut(&self) {
        self.inner.cut.notify_one();
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().expect("lock").clone()
    }

    /// The answer text the fake writes for a request (its words).
    pub fn answer_words(&self) -> Vec<String> {
        answer_words(&self.inner.name)
    }
}

fn answer_words(name: &str) -> Vec<String> {
    ["Hello", " from", " ", name, "."].iter().map(|s| s.to_string()).collect()
}

fn error(status: StatusCode, kind: &str, message: &str, param: Option<&str>, code: Option<&str>) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    (status, axum::Json(body)).into_response()
}

async fn chat(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(false, inner, peer, headers, body).await
}

async fn completions(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(true, inner, peer, headers, body).await
}

/// The answer a scripted fault makes instead of the normal one (after
/// [`Fault::Slow`]'s wait, none).
async fn scripted(fault: Option<&Fault>, model: &str) -> Option<Response> {
    match fault? {
        Fault::RateLimited { retry_after_secs } => {
            let mut res = error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                &format!("Rate limit reached for {model} on requests per min (RPM): Limit 3, Used 3, Requested 1."),
                None,
                Some("rate_limit_exceeded"),
            );
            let h = res.headers_mut();
            h.insert("retry-after", retry_after_secs.to_string().parse().expect("header"));
            h.insert("x-ratelimit-limit-requests", "3".parse().expect("header"));
            h.insert("x-ratelimit-remaining-requests", "0".parse().expect("header"));
            h.insert("x-ratelimit-reset-requests", format!("{retry_after_secs}s").parse().expect("header"));
            Some(res)
        }
        Fault::ServerError => Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The server had an error while processing your request. Sorry about that!",
            None,
            None,
        )),
        Fault::BadRequest { param } => Some(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("Invalid value for '{param}'."),
            Some(param),
            Some("invalid_value"),
        )),
        Fault::Slow(d) => {
            tokio::time::sleep(*d).await;
            None
        }
        _ => None,
    }
}

/// A chat answer, or with `legacy` a legacy completion's.
async fn answer(legacy: bool, inner: Arc<Inner>, peer: std::net::SocketAddr, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", "We could not parse the JSON body of your request.", None, None),
    };
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    inner.seen.lock().expect("lock").push(Seen { authorization, body: body.clone(), peer });
    let fault = inner.faults.lock().expect("lock").pop_front();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let model = body["model"].as_str().unwrap_or("unknown").to_owned();
    if let Some(res) = scripted(fault.as_ref(), &model).await {
        return res;
    }
    match fault {
        Some(Fault::Malformed) if !stream => {
            return ([("content-type", "application/json")], "{\"id\": \"chatcmpl-1\", \"choices\": [").into_response()
        }
        _ => {}
    }
    let (id, object, chunk_object) =
        if legacy { ("cmpl-fake0001", "text_completion", "text_completion") } else { ("chatcmpl-fake0001", "chat.completion", "chat.completion.chunk") };
    let created = 1_700_000_000u64;
    let words = answer_words(&inner.name);
    let text: String = words.concat();
    let usage = json!({"prompt_tokens": 9, "completion_tokens": words.len(), "total_tokens": 9 + words.len()});
    let close = if matches!(fault, Some(Fault::CloseConnection)) { "close" } else { "keep-alive" };
    if !stream {
        // `n` choices, as OpenAI answers them (whole answers only).
        let n = body["n"].as_u64().unwrap_or(1);
        let choices: Vec<Value> = (0..n)
            .map(|index| {
                if legacy {
                    json!({"index": index, "text": text, "logprobs": null, "finish_reason": "stop"})
                } else {
                    json!({"index": index, "message": {"role": "assistant", "content": text, "refusal": null}, "logprobs": null, "finish_reason": "stop"})
                }
            })
            .collect();
        let mut res = axum::Json(json!({
            "id": id, "object": object, "created": created, "model": model,
            "system_fingerprint": "fp_fake", "choices": choices, "usage": usage,
        }))
        .into_response();
        res.headers_mut().insert("connection", close.parse().expect("header"));
        return res;
    }
    let include_usage = body["stream_options"]["include_usage"].as_bool().unwrap_or(false);
    let chunk = |delta: Value, finish: Option<&str>| {
        let choice = if legacy {
            json!({"index": 0, "text": delta["content"].as_str().unwrap_or(""), "logprobs": null, "finish_reason": finish})
        } else {
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
        };
        let mut v = json!({
            "id": id, "object": chunk_object, "created": created, "model": model,
            "system_fingerprint": "fp_fake", "choices": [choice],
        });
        if include_usage {
            v["usage"] = Value::Null;
        }
        format!("data: {v}\n\n")
    };
    // Chat streams open with the role; legacy ones have none.
    let mut events = if legacy { Vec::new() } else { vec![chunk(json!({"role": "assistant", "content": "", "refusal": null}), None)] };
    events.extend(words.iter().map(|w| chunk(json!({"content": w}), None)));
    events.push(chunk(json!({}), Some("stop")));
    if include_usage {
        let v = json!({"id": id, "object": chunk_object, "created": created, "model": model,
                       "system_fingerprint": "fp_fake", "choices": [], "usage": usage});
        events.push(format!("data: {v}\n\n"));
    }
    events.push("data: [DONE]\n\n".into());
    let body = match fault {
        Some(Fault::ResetBeforeFirstChunk) => broken(Vec::new(), None),
        Some(Fault::ResetAfterFirstChunk) => broken(events.into_iter().take(2).collect(), Some(inner.clone())),
        Some(Fault::Malformed) => {
            let mut evs: Vec<String> = events.into_iter().take(1).collect();
            evs.push("data: {\"id\": \"chatcmpl-fake0001\", \"choices\": [\n\n".into());
            Body::from_stream(stream::iter(evs.into_iter().map(|e| Ok::<_, Infallible>(Bytes::from(e)))))
        }
        _ => Body::from_stream(stream::iter(events.into_iter().map(|e| Ok::<_, Infallible>(Bytes::from(e))))),
    };
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .header("connection", close)
        .body(body)
        .expect("response")
}

/// The multipart form's text fields (`[]` names collect into arrays) and
/// the file's name and size, as [`Seen::body`]; `None` when it is not
/// multipart.
async fn read_form(headers: &HeaderMap, body: Bytes) -> Option<(Value, Bytes)> {
    let ctype = headers.get("content-type")?.to_str().ok()?;
    let boundary = multer::parse_boundary(ctype).ok()?;
    let mut mp = multer::Multipart::new(stream::once(async move { Ok::<_, std::io::Error>(body) }), boundary);
    let mut fields = serde_json::Map::new();
    let mut file = None;
    while let Some(field) = mp.next_field().await.ok()? {
        let name = field.name()?.to_owned();
        if name == "file" {
            fields.insert("file_name".into(), json!(field.file_name()));
            let bytes = field.bytes().await.ok()?;
            fields.insert("file_bytes".into(), json!(bytes.len()));
            file = Some(bytes);
        } else if let Some(list) = name.strip_suffix("[]") {
            let text = field.text().await.ok()?;
            let entry = fields.entry(list.to_owned()).or_insert_with(|| json!([]));
            entry.as_array_mut()?.push(json!(text));
        } else {
            fields.insert(name, json!(field.text().await.ok()?));
        }
    }
    Some((Value::Object(fields), file?))
}

/// Seconds of a PCM WAV file, from its header.
fn wav_seconds(wav: &[u8]) -> Option<f64> {
    if wav.get(..4)? != b"RIFF" || wav.get(8..12)? != b"WAVE" {
        return None;
    }
    let byte_rate = u32::from_le_bytes(wav.get(28..32)?.try_into().ok()?);
    let data = wav.windows(4).position(|w| w == b"data")?;
    let len = u32::from_le_bytes(wav.get(data + 4..data + 8)?.try_into().ok()?);
    (byte_rate > 0).then(|| f64::from(len) / f64::from(byte_rate))
}

async fn transcriptions(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    audio("transcribe", inner, peer, headers, body).await
}

async fn translations(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    audio("translate", inner, peer, headers, body).await
}

/// A transcription (`task` transcribe) or translation.
async fn audio(task: &str, inner: Arc<Inner>, peer: std::net::SocketAddr, headers: HeaderMap, body: Bytes) -> Response {
    let Some((form, file)) = read_form(&headers, body).await else {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "Could not parse multipart form", None, None);
    };
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    inner.seen.lock().expect("lock").push(Seen { authorization, body: form.clone(), peer });
    let fault = inner.faults.lock().expect("lock").pop_front();
    let model = form["model"].as_str().unwrap_or("unknown").to_owned();
    if let Some(res) = scripted(fault.as_ref(), &model).await {
        return res;
    }
    let Some(duration) = wav_seconds(&file) else {
        let msg = "Invalid file format. Supported formats: ['flac', 'm4a', 'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']";
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", msg, None, None);
    };
    let words = answer_words(&inner.name);
    let text: String = words.concat();
    let usage = json!({"type": "duration", "seconds": duration.ceil() as u64});
    match form["response_format"].as_str().unwrap_or("json") {
        "text" => text.into_response(),
        "verbose_json" => {
            let half = (duration / 2.0 * 100.0).round() / 100.0;
            let segment = |id: usize, start: f64, end: f64, text: &str| {
                json!({"id": id, "seek": 0, "start": start, "end": end, "text": text, "tokens": [50364, 15947 + id, 50464],
                       "temperature": 0.0, "avg_logprob": -0.25, "compression_ratio": 0.9, "no_speech_prob": 0.01})
            };
            let mut v = json!({
                "task": task,
                "language": "english", "duration": duration, "text": text,
                "segments": [segment(0, 0.0, half, &words[..2].concat()), segment(1, half, duration, &words[2..].concat())],
                "usage": usage,
            });
            if form["timestamp_granularities"].as_array().is_some_and(|g| g.iter().any(|x| x == "word")) {
                let step = duration / words.len() as f64;
                v["words"] = words.iter().enumerate().map(|(i, w)| json!({"word": w.trim(), "start": i as f64 * step, "end": (i + 1) as f64 * step})).collect();
            }
            axum::Json(v).into_response()
        }
        _ => axum::Json(json!({"text": text, "usage": usage})).into_response(),
    }
}

/// A chunked body that sends `events` and then fails (after the test's
/// `cut` when `wait` is given, so the events are surely out), which makes
/// hyper abort the connection mid-body: a reset, as the client sees it.
fn broken(events: Vec<String>, wait: Option<Arc<Inner>>) -> Body {
    let ok = stream::iter(events.into_iter().map(|e| Ok::<_, std::io::Error>(Bytes::from(e))));
    let fail = stream::once(async move {
        if let Some(inner) = wait {
            inner.cut.notified().await;
        }
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "fake reset"))
    });
    Body::from_stream(ok.chain(fail))
}
