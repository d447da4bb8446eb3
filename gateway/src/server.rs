//! The HTTP server: routes, request parsing, SSE, readiness, metrics and
//! graceful shutdown. Handlers turn OpenAI requests into provider calls
//! (`crate::provider`) and the chunks back into OpenAI responses.

use std::future::{Future, IntoFuture};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, StreamExt};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::openai::{ChatCompletionRequest, CompletionsRequest, DetokenizeRequest, Sampling, Shape, TokenizeRequest};
use crate::provider::{Chunk, ChunkStream, CompletionRequest, Finish, Provider, Providers, TokenLogprob, Usage};

/// `[server]` of `starling.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Largest request body accepted, bytes (413 beyond).
    pub body_limit_bytes: usize,
    /// On SIGINT/SIGTERM: how long running streams may take to finish
    /// before they are cancelled, seconds.
    pub shutdown_grace_secs: u64,
    /// `max_tokens` of a chat completion that names none. Every admitted
    /// request reserves KV cache for its whole length up front, so "up to
    /// the context" as a default would let a handful of requests fill it.
    pub default_max_tokens: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 4 << 20,
            shutdown_grace_secs: 30,
            default_max_tokens: 1024,
        }
    }
}

struct Inner {
    config: ServerConfig,
    /// Set when the shutdown grace is over: running requests stop.
    cancel: watch::Sender<bool>,
    metrics: Metrics,
    providers: OnceLock<Providers>,
    fingerprint: String,
}

/// The application state: cheap to clone, shared by every handler.
#[derive(Clone)]
pub struct App(Arc<Inner>);

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("ready", &self.0.providers.get().is_some()).finish()
    }
}

impl App {
    /// A server that answers 503 on model routes until [`App::set_ready`].
    pub fn new(config: ServerConfig) -> prometheus::Result<Self> {
        Ok(Self(Arc::new(Inner {
            config,
            cancel: watch::Sender::new(false),
            metrics: Metrics::new()?,
            providers: OnceLock::new(),
            fingerprint: format!("fp_starling_{}", env!("CARGO_PKG_VERSION").replace('.', "_")),
        })))
    }

    /// Models are loaded: start serving them. Later calls are ignored.
    pub fn set_ready(&self, providers: Providers) {
        if self.0.providers.set(providers).is_err() {
            tracing::warn!("set_ready called twice; keeping the first providers");
        }
    }

    /// The metrics registry (for tests and embedding).
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Resolves when the shutdown grace is over.
    fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.cancel.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    fn providers(&self) -> Result<&Providers, ApiError> {
        self.0.providers.get().ok_or_else(|| ApiError::not_ready("Models are still loading; retry shortly."))
    }

    /// Every route.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/completions", post(completions))
            .route("/v1/models", get(list_models))
            .route("/v1/models/{*id}", get(get_model))
            .route("/tokenize", post(tokenize))
            .route("/detokenize", post(detokenize))
            .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .fallback(|method: Method, uri: Uri| async move { ApiError::route_not_found(method.as_str(), uri.path()) })
            .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
                ApiError::method_not_allowed(method.as_str(), uri.path())
            })
            .layer(middleware::from_fn_with_state(self.clone(), record))
            .with_state(self.clone())
    }
}

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting,
/// give running requests (streams included) `shutdown_grace_secs` to finish,
/// and cancel what is left: streams end with an error event, waiting
/// requests get 503, and their generations are cancelled.
pub async fn serve(listener: TcpListener, app: App, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let grace = Duration::from_secs(app.0.config.shutdown_grace_secs);
    let signalled = Arc::new(Notify::new());
    let notify = Arc::clone(&signalled);
    let server = axum::serve(listener, app.router()).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; {grace:?} for running requests");
        notify.notify_one();
    });
    let deadline = async {
        signalled.notified().await;
        tokio::time::sleep(grace).await;
    };
    // Connections run in their own tasks, so the server future finishing is
    // what tells us every request is done; past the grace, tell the
    // requests to stop (which cancels their generations) and wait for that.
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        () = deadline => {}
    }
    tracing::warn!("shutdown grace over: cancelling the requests still running");
    app.0.cancel.send_replace(true);
    server.await
}

/// Counts every answer by route and status.
async fn record(State(app): State<App>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let res = next.run(req).await;
    let m = &app.0.metrics;
    m.request_seconds.with_label_values(&[&route]).observe(started.elapsed().as_secs_f64());
    m.requests.with_label_values(&[route.as_str(), res.status().as_str()]).inc();
    if res.status() == StatusCode::TOO_MANY_REQUESTS {
        m.rate_limited.with_label_values(&[&route]).inc();
    }
    res
}

/// Parse a JSON body: 415 unless JSON, 413 over the limit, 400 for bad
/// syntax, invalid UTF-8 or nesting past serde_json's depth limit, and 400
/// naming the field for a wrong type or an out-of-range number.
async fn parse<T: DeserializeOwned>(app: &App, headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    let ctype = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)"));
    let is_json = ctype.is_some_and(|c| {
        let mime = c.split(';').next().unwrap_or("").trim();
        mime.eq_ignore_ascii_case("application/json")
    });
    if !is_json {
        return Err(ApiError::unsupported_media_type(ctype));
    }
    let limit = app.0.config.body_limit_bytes;
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::too_large(limit))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_body(format!("The request body is not valid JSON: {e}")))?;
    serde_path_to_error::deserialize::<_, T>(&value).map_err(|e| {
        let mut path = e.path().to_string();
        let mut inner = e.into_inner().to_string();
        if path == "." {
            // serde loses the path inside `#[serde(flatten)]`; the shared
            // sampling fields are the only flattened part of our bodies, so
            // read them alone to name the field.
            if let Err(e) = serde_path_to_error::deserialize::<_, Sampling>(&value) {
                path = e.path().to_string();
                inner = e.into_inner().to_string();
            }
        }
        if path == "." {
            ApiError::bad_body(format!("Invalid request body: {inner}"))
        } else {
            ApiError::invalid(path.clone(), format!("Invalid value for `{path}`: {inner}"))
        }
    })
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn new_id(prefix: &str) -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!("{prefix}-{}", Alphanumeric.sample_string(&mut rand::thread_rng(), 24))
}

/// Start `n` choices per request (seeds offset per choice so they differ
/// yet repeat). All or nothing: if one is refused, the started ones are
/// dropped (cancelled) and the refusal is the answer.
async fn open_choices(
    app: &App,
    provider: &Arc<dyn Provider>,
    reqs: Vec<CompletionRequest>,
    n: usize,
) -> Result<Vec<ChunkStream>, ApiError> {
    let mut out = Vec::with_capacity(reqs.len() * n);
    let started = Instant::now();
    for req in reqs {
        for i in 0..n {
            let mut r = req.clone();
            r.sampling.seed = r.sampling.seed.map(|s| s.wrapping_add(i as u64));
            let model = r.model.clone();
            let stream = provider.complete(r).await?;
            out.push(timed(app.0.metrics.clone(), model, started, stream));
        }
    }
    Ok(out)
}

/// Observe TTFT, inter-token latency and token counts as chunks pass.
fn timed(metrics: Metrics, model: String, started: Instant, stream: ChunkStream) -> ChunkStream {
    let mut last: Option<Instant> = None;
    stream
        .map(move |c| {
            if let Ok(chunk) = &c {
                let now = Instant::now();
                if let Chunk::Delta { .. } = chunk {
                    match last {
                        None => metrics.ttft_seconds.with_label_values(&[&model]).observe((now - started).as_secs_f64()),
                        Some(t) => metrics.inter_token_seconds.with_label_values(&[&model]).observe((now - t).as_secs_f64()),
                    }
                    last = Some(now);
                }
                if let Chunk::Done { usage, .. } = chunk {
                    metrics.prompt_tokens.with_label_values(&[&model]).inc_by(usage.prompt_tokens as u64);
                    metrics.completion_tokens.with_label_values(&[&model]).inc_by(usage.completion_tokens as u64);
                }
            }
            c
        })
        .boxed()
}

/// One choice, read to its end.
struct Collected {
    text: String,
    logprobs: Vec<TokenLogprob>,
    finish: Finish,
    usage: Usage,
    prompt: Option<Vec<TokenLogprob>>,
}

async fn collect(mut s: ChunkStream) -> Result<Collected, ApiError> {
    let mut text = String::new();
    let mut logprobs = Vec::new();
    while let Some(chunk) = s.next().await {
        match chunk? {
            Chunk::Delta { text: t, logprob } => {
                text.push_str(&t);
                logprobs.extend(logprob);
            }
            Chunk::Done { text: t, finish, usage, prompt } => {
                text.push_str(&t);
                return Ok(Collected { text, logprobs, finish, usage, prompt });
            }
        }
    }
    Err(ApiError::internal("the provider ended a choice without finishing it"))
}

/// Every choice read to its end, unless the shutdown grace runs out first.
async fn collect_all(app: &App, choices: Vec<ChunkStream>) -> Result<Vec<Collected>, ApiError> {
    tokio::select! {
        r = futures_util::future::join_all(choices.into_iter().map(collect)) => r.into_iter().collect(),
        () = app.cancelled() => Err(ApiError::not_ready("The server is shutting down.")),
    }
}

/// Usage of a whole request: each distinct prompt once (`n` choices share
/// it, as OpenAI counts), every choice's completion.
fn total_usage(usages: &[Usage], n: usize) -> Value {
    let prompt: usize = usages.iter().step_by(n.max(1)).map(|u| u.prompt_tokens).sum();
    let completion: usize = usages.iter().map(|u| u.completion_tokens).sum();
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn chat_logprob(t: &TokenLogprob) -> Value {
    json!({
        "token": t.token,
        "logprob": t.logprob.unwrap_or(0.0),
        "bytes": t.bytes,
        "top_logprobs": t.top.iter().map(|(tok, b, lp)| json!({"token": tok, "logprob": lp, "bytes": b})).collect::<Vec<_>>(),
    })
}

/// An SSE response fed by a task: `data: {json}\n\n` per chunk, then
/// `data: [DONE]`. When the client goes away the body is dropped, the task's
/// next send fails and it drops the choices, which cancels them in the engine.
fn sse<F, Fut>(app: &App, produce: F) -> Response
where
    F: FnOnce(mpsc::Sender<Value>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Value>(16);
    let (last_word, cancelled) = (tx.clone(), app.cancelled());
    let producing = produce(tx);
    tokio::spawn(async move {
        tokio::select! {
            () = producing => {}
            () = cancelled => {
                // The producer (and with it every choice) is dropped here.
                let _ = last_word.send(ApiError::not_ready("The server is shutting down.").body()).await;
            }
        }
    });
    let events = stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(v) => Some((Ok::<_, std::convert::Infallible>(Bytes::from(format!("data: {v}\n\n"))), Some(rx))),
            None => Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), None)),
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events))
        .unwrap_or_else(|e| ApiError::internal(e.to_string()).into_response())
}

/// Choices merged into one stream of (choice index, chunk), minus deltas
/// that carry nothing to send (text held back, no logprob asked).
fn merged(choices: Vec<ChunkStream>) -> impl futures_util::Stream<Item = (usize, Result<Chunk, ApiError>)> {
    stream::select_all(choices.into_iter().enumerate().map(|(i, s)| s.map(move |c| (i, c)).boxed())).filter(|(_, c)| {
        let empty = matches!(c, Ok(Chunk::Delta { text, logprob: None }) if text.is_empty());
        std::future::ready(!empty)
    })
}

async fn chat_completions(State(app): State<App>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let req: ChatCompletionRequest = parse(&app, &headers, body).await?;
    let shape: Shape = req.sampling.shape()?;
    let creq = req.to_completion(app.0.config.default_max_tokens)?;
    let provider = app.providers()?.resolve(&req.model)?.clone();
    let want_logprobs = creq.logprobs.is_some();
    let choices = open_choices(&app, &provider, vec![creq], shape.n).await?;
    let (id, created, model, fp) = (new_id("chatcmpl"), unix_now(), req.model.clone(), app.0.fingerprint.clone());

    if !shape.stream {
        let mut out = Vec::new();
        let mut usages = Vec::new();
        for (i, c) in collect_all(&app, choices).await?.into_iter().enumerate() {
            usages.push(c.usage);
            out.push(json!({
                "index": i,
                "message": {"role": "assistant", "content": c.text, "refusal": null},
                "logprobs": want_logprobs.then(|| json!({"content": c.logprobs.iter().map(chat_logprob).collect::<Vec<_>>(), "refusal": null})),
                "finish_reason": c.finish.as_str(),
            }));
        }
        return Ok(Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": fp,
            "choices": out,
            "usage": total_usage(&usages, shape.n),
        }))
        .into_response());
    }

    let n = choices.len();
    Ok(sse(&app, move |tx| async move {
        let chunk = |choices: Value, usage: Option<Value>| {
            let mut v = json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": fp, "choices": choices,
            });
            if shape.include_usage {
                v["usage"] = usage.unwrap_or(Value::Null);
            }
            v
        };
        let delta = |i: usize, d: Value, lp: Option<Value>, finish: Option<&str>| {
            chunk(json!([{"index": i, "delta": d, "logprobs": lp, "finish_reason": finish}]), None)
        };
        for i in 0..n {
            if tx.send(delta(i, json!({"role": "assistant", "content": "", "refusal": null}), None, None)).await.is_err() {
                return;
            }
        }
        let mut usages = vec![Usage::default(); n];
        let mut events = merged(choices);
        while let Some((i, c)) = events.next().await {
            let msgs = match c {
                Ok(Chunk::Delta { text, logprob }) => {
                    let lp = logprob.map(|t| json!({"content": [chat_logprob(&t)], "refusal": null}));
                    vec![delta(i, json!({"content": text}), lp, None)]
                }
                Ok(Chunk::Done { text, finish, usage, .. }) => {
                    usages[i] = usage;
                    let mut v = Vec::new();
                    if !text.is_empty() {
                        v.push(delta(i, json!({"content": text}), None, None));
                    }
                    v.push(delta(i, json!({}), None, Some(finish.as_str())));
                    v
                }
                Err(e) => vec![e.body()],
            };
            for m in msgs {
                if tx.send(m).await.is_err() {
                    return;
                }
            }
        }
        if shape.include_usage {
            let _ = tx.send(chunk(json!([]), Some(total_usage(&usages, shape.n)))).await;
        }
    }))
}

/// Legacy logprobs over `tokens`, offsets counted from `offset`.
fn legacy_logprobs(tokens: &[TokenLogprob], mut offset: usize) -> Value {
    let mut text_offset = Vec::with_capacity(tokens.len());
    for t in tokens {
        text_offset.push(offset);
        offset += t.token.len();
    }
    json!({
        "tokens": tokens.iter().map(|t| &t.token).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            t.logprob.map(|_| t.top.iter().map(|(tok, _, lp)| (tok.clone(), json!(lp))).collect::<serde_json::Map<_, _>>())
        }).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

async fn completions(State(app): State<App>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let req: CompletionsRequest = parse(&app, &headers, body).await?;
    let shape = req.sampling.shape()?;
    let reqs = req.to_completions()?;
    let provider = app.providers()?.resolve(&req.model)?.clone();
    // Echo needs each prompt's text: the request's own, or its tokens decoded
    // (`prompts` stays empty without echo).
    let mut prompts = Vec::with_capacity(reqs.len());
    for r in reqs.iter().filter(|_| req.echo) {
        prompts.push(match &r.input {
            crate::provider::Input::Text(t) => t.clone(),
            crate::provider::Input::Tokens(t) => provider.detokenize(&r.model, t)?,
            crate::provider::Input::Chat(_) => String::new(),
        });
    }
    let want_logprobs = reqs.first().is_some_and(|r| r.logprobs.is_some());
    let echo = req.echo;
    let choices = open_choices(&app, &provider, reqs, shape.n).await?;
    let (id, created, model, fp) = (new_id("cmpl"), unix_now(), req.model.clone(), app.0.fingerprint.clone());
    let n = shape.n;

    if !shape.stream {
        let mut out = Vec::new();
        let mut usages = Vec::new();
        for (i, c) in collect_all(&app, choices).await?.into_iter().enumerate() {
            usages.push(c.usage);
            let (text, logprobs) = if echo {
                let prompt = &prompts[i / n];
                let mut toks = c.prompt.unwrap_or_default();
                toks.extend(c.logprobs);
                (format!("{prompt}{}", c.text), legacy_logprobs(&toks, 0))
            } else {
                (c.text, legacy_logprobs(&c.logprobs, 0))
            };
            out.push(json!({
                "index": i,
                "text": text,
                "logprobs": want_logprobs.then_some(logprobs),
                "finish_reason": c.finish.as_str(),
            }));
        }
        return Ok(Json(json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": fp, "choices": out, "usage": total_usage(&usages, n),
        }))
        .into_response());
    }

    let total = choices.len();
    Ok(sse(&app, move |tx| async move {
        let chunk = |i: usize, text: String, lp: Option<Value>, finish: Option<&str>| {
            let mut v = json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "system_fingerprint": fp,
                "choices": [{"index": i, "text": text, "logprobs": lp, "finish_reason": finish}],
            });
            if shape.include_usage {
                v["usage"] = Value::Null;
            }
            v
        };
        // Running text length per choice, for `text_offset`.
        let mut offsets = vec![0usize; total];
        if echo {
            for (i, off) in offsets.iter_mut().enumerate() {
                let p = prompts[i / n].clone();
                *off = p.len();
                if tx.send(chunk(i, p, None, None)).await.is_err() {
                    return;
                }
            }
        }
        let mut usages = vec![Usage::default(); total];
        let mut events = merged(choices);
        while let Some((i, c)) = events.next().await {
            let msg = match c {
                Ok(Chunk::Delta { text, logprob }) => {
                    let lp = logprob.map(|t| {
                        let v = legacy_logprobs(std::slice::from_ref(&t), offsets[i]);
                        offsets[i] += t.token.len();
                        v
                    });
                    chunk(i, text, lp.filter(|_| want_logprobs), None)
                }
                Ok(Chunk::Done { text, finish, usage, .. }) => {
                    usages[i] = usage;
                    chunk(i, text, None, Some(finish.as_str()))
                }
                Err(e) => e.body(),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
        if shape.include_usage {
            let mut v = json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "system_fingerprint": fp, "choices": [],
            });
            v["usage"] = total_usage(&usages, n);
            let _ = tx.send(v).await;
        }
    }))
}

async fn list_models(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"object": "list", "data": app.providers()?.models()})))
}

async fn get_model(State(app): State<App>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let models = app.providers()?.models();
    let card = models.into_iter().find(|m| m.id == id).ok_or_else(|| ApiError::model_not_found(&id))?;
    Ok(Json(json!(card)))
}

async fn tokenize(State(app): State<App>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let req: TokenizeRequest = parse(&app, &headers, body).await?;
    let input = req.input()?;
    let provider = app.providers()?.resolve(&req.model)?;
    let tokens = provider.tokenize(&req.model, &input, req.add_special_tokens)?;
    let max_model_len = provider.models().iter().find(|m| m.id == req.model).map(|m| m.max_model_len);
    Ok(Json(json!({"tokens": tokens, "count": tokens.len(), "max_model_len": max_model_len})))
}

async fn detokenize(State(app): State<App>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let req: DetokenizeRequest = parse(&app, &headers, body).await?;
    let provider = app.providers()?.resolve(&req.model)?;
    Ok(Json(json!({"prompt": provider.detokenize(&req.model, &req.tokens)?})))
}

async fn ready(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    app.providers()?;
    Ok(Json(json!({"status": "ready"})))
}

async fn metrics(State(app): State<App>) -> Response {
    let text = app.0.metrics.render(app.0.providers.get());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
