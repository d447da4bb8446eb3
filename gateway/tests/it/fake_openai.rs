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
    match fault {
        Some(Fault::RateLimited { retry_after_secs }) => {
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
            return res;
        }
        Some(Fault::ServerError) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "The server had an error while processing your request. Sorry about that!",
                None,
                None,
            )
        }
        Some(Fault::BadRequest { param }) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("Invalid value for '{param}'."),
                Some(param),
                Some("invalid_value"),
            )
        }
        Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
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
        let choice = if legacy {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": "stop"})
        } else {
            json!({"index": 0, "message": {"role": "assistant", "content": text, "refusal": null}, "logprobs": null, "finish_reason": "stop"})
        };
        let mut res = axum::Json(json!({
            "id": id, "object": object, "created": created, "model": model,
            "system_fingerprint": "fp_fake", "choices": [choice], "usage": usage,
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
