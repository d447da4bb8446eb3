//! The HTTP server: routes, request parsing, SSE, readiness, metrics and
//! graceful shutdown. Chat completions go through the [`crate::router`] to
//! providers; legacy completions and the tokenizer routes go straight to
//! the local models (`crate::generator`).

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use futures_util::stream::{self, StreamExt};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::choices::{collect_all, merged, open_choices, produced, total_usage};
use crate::config::{GatewayConfig, ProviderKind};
use crate::error::ApiError;
use crate::generator::{Chunk, Generators, TokenLogprob, Usage};
use crate::local::{new_id, unix_now, LocalChat};
use crate::messages::{self, MessagesError};
use crate::metrics::Metrics;
use crate::openai::{from_value, CompletionsRequest, DetokenizeRequest, TokenizeRequest};
use crate::openai_compatible::OpenAiCompatible;
use crate::provider::{ChatReply, ChunkValues, Provider};
use crate::router::{Router, Upstream};
use crate::cache::{Answer, Cached, ResponseCache};
use crate::db::Db;
use crate::keys::{KeyInfo, KeyRing, KeyStore, Refusal};
use crate::router::token_estimate;
use crate::usage::{self, GroupBy, UsageLog, UsageRecord, UsageStore};

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
    /// HTTP threads of `starling serve`, each with its own event loop and
    /// its own listening socket on the same address (`SO_REUSEPORT`: the
    /// kernel spreads connections). 0: one per CPU core.
    pub http_threads: usize,
}

impl ServerConfig {
    /// `http_threads`, with 0 resolved to the number of CPU cores.
    pub fn threads(&self) -> usize {
        match self.http_threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 4 << 20,
            shutdown_grace_secs: 30,
            default_max_tokens: 1024,
            http_threads: 0,
        }
    }
}

struct Inner {
    config: ServerConfig,
    /// Set when the shutdown grace is over: running requests stop.
    cancel: watch::Sender<bool>,
    metrics: Metrics,
    /// The local models, once loaded (shared with the `local` provider).
    generators: Arc<OnceLock<Generators>>,
    router: Arc<Router>,
    cache: ResponseCache,
    /// Usage records, once a database is attached.
    usage: OnceLock<UsageLog>,
    /// API keys, once a database is attached.
    keys: OnceLock<KeyRing>,
    /// Listening beyond loopback: keys are required.
    public: AtomicBool,
    fingerprint: String,
}

/// The database could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// Usage records.
    #[error(transparent)]
    Usage(#[from] crate::usage::UsageError),
    /// API keys.
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
}

/// Who is calling: the API key's settings, or None where no key is needed.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<KeyInfo>);

/// The key a request presents: `Authorization: Bearer` (OpenAI) or
/// `x-api-key` (Anthropic).
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim))
}

/// 401 unless the request may proceed; the caller's key (if any) goes into
/// the request for the handler. Keys are needed once any exists, and always
/// when listening beyond loopback.
async fn authenticate(State(app): State<App>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let presented = presented_key(req.headers()).map(str::to_owned);
    let public = app.0.public.load(Ordering::Relaxed);
    let caller = match (app.0.keys.get(), presented) {
        (Some(ring), Some(p)) => match ring.find(&p).await {
            Some(k) => Caller(Some(k)),
            None if ring.any().await || public => return Err(ApiError::invalid_api_key(Some(&p))),
            // No keys exist and the server is private: keys are not in use.
            None => Caller(None),
        },
        (Some(ring), None) if public || ring.any().await => return Err(ApiError::invalid_api_key(None)),
        (None, _) if public => {
            return Err(ApiError::invalid_api_key(None).with_message(
                "This server listens beyond loopback and keeps no API keys: configure [database] and create one with `starling keys create`.",
            ))
        }
        _ => Caller(None),
    };
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// Why the app could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The metrics registry refused a metric.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A provider's config is unusable.
    #[error(transparent)]
    Provider(#[from] crate::openai_compatible::SetupError),
    /// A route's config is unusable.
    #[error(transparent)]
    Route(#[from] crate::router::RouteError),
    /// Two providers share a name, or one is called `local`.
    #[error("provider name `{0}` is used twice (`local` is the engine's)")]
    DuplicateProvider(String),
}

/// The application state: cheap to clone, shared by every handler.
#[derive(Clone)]
pub struct App(Arc<Inner>);

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("ready", &self.0.generators.get().is_some()).finish()
    }
}

impl App {
    /// A server over the local models (503 until [`App::set_ready`]) and
    /// the providers and routes of `gateway`.
    pub fn new(config: ServerConfig, gateway: GatewayConfig) -> Result<Self, SetupError> {
        let metrics = Metrics::new()?;
        let generators = Arc::new(OnceLock::new());
        let fingerprint = format!("fp_starling_{}", env!("CARGO_PKG_VERSION").replace('.', "_"));
        let local = LocalChat::new(generators.clone(), metrics.clone(), fingerprint.clone(), config.default_max_tokens);
        let mut upstreams = HashMap::from([("local".to_owned(), Upstream::local(Arc::new(local)))]);
        let threads = config.threads();
        for p in &gateway.providers {
            let provider: Arc<dyn Provider> = match p.kind {
                ProviderKind::OpenaiCompatible => Arc::new(OpenAiCompatible::new(p, threads)?),
                ProviderKind::Anthropic => Arc::new(crate::anthropic::Anthropic::new(p, threads)?),
            };
            let upstream = Upstream::remote(provider, p.ttft_timeout());
            if upstreams.insert(p.name.clone(), upstream).is_some() {
                return Err(SetupError::DuplicateProvider(p.name.clone()));
            }
        }
        let router = Arc::new(Router::new(&gateway, &upstreams, metrics.clone())?);
        Ok(Self(Arc::new(Inner {
            config,
            cancel: watch::Sender::new(false),
            metrics,
            generators,
            router,
            cache: ResponseCache::new(&gateway.cache),
            usage: OnceLock::new(),
            keys: OnceLock::new(),
            public: AtomicBool::new(false),
            fingerprint,
        })))
    }

    /// Models are loaded: start serving them. Later calls are ignored.
    pub fn set_ready(&self, generators: Generators) {
        if self.0.generators.set(generators).is_err() {
            tracing::warn!("set_ready called twice; keeping the first models");
        }
    }

    /// Keep usage records and read API keys in `db` from now on (a second
    /// call is ignored), journaling records in the file `journal` until they
    /// are written (see [`UsageLog::start`]). Needs a tokio runtime: it
    /// starts the writer task.
    pub async fn attach_database(&self, db: &Db, journal: Option<&std::path::Path>) -> Result<(), DatabaseError> {
        let usage = UsageStore::new(db).await?;
        let keys = KeyRing::load(KeyStore::new(db).await?).await?;
        let log = UsageLog::start(usage, self.0.metrics.usage_writer.clone(), journal);
        if self.0.usage.set(log).is_err() || self.0.keys.set(keys).is_err() {
            tracing::warn!("database attached twice; keeping the first");
        }
        Ok(())
    }

    /// Every request has ended: write the usage records still queued,
    /// waiting up to `shutdown_grace_secs` for a database that is away.
    pub async fn close(&self) {
        if let Some(log) = self.0.usage.get() {
            log.close(Duration::from_secs(self.0.config.shutdown_grace_secs)).await;
        }
    }

    /// Account one request: metrics now, the record off the request path.
    fn record(&self, mut r: UsageRecord) {
        r.cost_usd = if r.cache_hit {
            0.0
        } else {
            self.0.router.cost(&r.provider, &r.model, r.prompt_tokens, r.cached_tokens, r.completion_tokens)
        };
        let m = &self.0.metrics;
        if !r.provider.is_empty() {
            let labels = [r.provider.as_str(), r.model.as_str()];
            m.provider_tokens.with_label_values(&[labels[0], labels[1], "prompt"]).inc_by(r.prompt_tokens.max(0) as u64);
            m.provider_tokens.with_label_values(&[labels[0], labels[1], "completion"]).inc_by(r.completion_tokens.max(0) as u64);
            m.cost_usd.with_label_values(&labels).inc_by(r.cost_usd.max(0.0));
        }
        if let (Some(ring), Some(key)) = (self.0.keys.get(), &r.key_id) {
            // The budget is for cloud spend: the local engine is paid for.
            if r.provider != "local" {
                ring.spend(key, r.cost_usd);
            }
        }
        if let Some(log) = self.0.usage.get() {
            log.record(r);
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

    fn generators(&self) -> Result<&Generators, ApiError> {
        self.0.generators.get().ok_or_else(|| ApiError::not_ready("Models are still loading; retry shortly."))
    }

    /// Every route.
    pub fn router(&self) -> axum::Router {
        // Everything that reaches a model or the records needs a key once
        // keys exist or the server listens beyond loopback.
        let guarded = axum::Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/messages", post(anthropic_messages))
            .route("/v1/completions", post(completions))
            .route("/v1/models", get(list_models))
            .route("/v1/usage", get(usage_summary))
            .route("/v1/models/{*id}", get(get_model))
            .route("/tokenize", post(tokenize))
            .route("/detokenize", post(detokenize))
            .route_layer(middleware::from_fn_with_state(self.clone(), authenticate));
        guarded
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
/// requests get 503, and their generations are cancelled. Last, write the
/// usage records still queued ([`App::close`]).
pub async fn serve(listener: TcpListener, app: App, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let served = serve_connections(listener, app.clone(), shutdown).await;
    app.close().await;
    served
}

/// [`serve`] without the final [`App::close`]: for one app served on
/// several listeners (a thread each), closed once after all of them end.
pub async fn serve_connections(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(app.0.config.shutdown_grace_secs);
    let signalled = Arc::new(Notify::new());
    let notify = Arc::clone(&signalled);
    let public = listener.local_addr().is_ok_and(|a| !a.ip().is_loopback());
    app.0.public.store(public, Ordering::Relaxed);
    // SSE writes many small frames: never let Nagle hold one back.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
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
    let served = tokio::select! {
        r = &mut server => r,
        () = deadline => {
            tracing::warn!("shutdown grace over: cancelling the requests still running");
            app.0.cancel.send_replace(true);
            server.await
        }
    };
    served
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

/// Read a JSON body: 415 unless JSON, 413 over the limit, 400 for bad
/// syntax, invalid UTF-8 or nesting past serde_json's depth limit.
async fn read_json(app: &App, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
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
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_body(format!("The request body is not valid JSON: {e}")))
}

/// Read and parse a JSON body into `T` (see [`read_json`] and
/// [`openai::from_value`]).
async fn parse<T: DeserializeOwned>(app: &App, headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    from_value(&read_json(app, headers, body).await?)
}

/// Run `fut` unless the shutdown grace runs out first (503 then; dropping
/// `fut` cancels whatever it started).
async fn or_shutdown<T>(app: &App, fut: impl Future<Output = Result<T, ApiError>>) -> Result<T, ApiError> {
    tokio::select! {
        r = fut => r,
        () = app.cancelled() => Err(ApiError::not_ready("The server is shutting down.")),
    }
}

/// A chunk that only carries usage (`choices: []`).
fn usage_only(v: &Value) -> bool {
    v["choices"].as_array().is_some_and(Vec::is_empty) && !v["usage"].is_null()
}

/// `chunks`, cut at the end of the shutdown grace by a 503 error item.
/// Dropping `chunks` there cancels the generation.
fn until_shutdown(app: &App, chunks: ChunkValues) -> ChunkValues {
    let cancelled: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(app.cancelled());
    stream::unfold(Some((chunks, cancelled)), |state| async move {
        let (mut chunks, mut cancelled) = state?;
        tokio::select! {
            item = chunks.next() => item.map(|i| (i, Some((chunks, cancelled)))),
            () = &mut cancelled => Some((Err(ApiError::not_ready("The server is shutting down.")), None)),
        }
    })
    .boxed()
}

/// `data: {json}\n\n`, written straight into one buffer (`format!`
/// through `Display` costs a formatter pass per value).
fn event(v: &Value) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"data: ");
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut buf, v);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// A `text/event-stream` response with this body.
fn event_stream(events: impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events))
        .unwrap_or_else(|e| ApiError::internal(e.to_string()).into_response())
}

/// An OpenAI SSE response: `data: {json}\n\n` per chunk, then `data: [DONE]`.
/// Without `include_usage` the usage chunk and the `usage` fields are left
/// out. An error ends the stream with an OpenAI error event; so does the
/// end of the shutdown grace. When the client goes away the body, and with
/// it `chunks`, is dropped, which cancels the generation.
fn sse(app: &App, chunks: ChunkValues, include_usage: bool) -> Response {
    let events = stream::unfold(Some(until_shutdown(app, chunks)), move |state| async move {
        let mut chunks = state?;
        loop {
            let bytes = match chunks.next().await {
                None => Bytes::from_static(b"data: [DONE]\n\n"),
                Some(Err(e)) => Bytes::from(format!("data: {}\n\ndata: [DONE]\n\n", e.body())),
                Some(Ok(mut v)) => {
                    if !include_usage {
                        if usage_only(&v) {
                            continue;
                        }
                        if let Some(o) = v.as_object_mut() {
                            o.remove("usage");
                        }
                    }
                    return Some((Ok(event(&v)), Some(chunks)));
                }
            };
            return Some((Ok(bytes), None));
        }
    });
    event_stream(events)
}

/// The fields of a chat request the server itself needs; the rest is the
/// providers' business.
#[derive(Deserialize)]
struct ChatHead {
    model: String,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<crate::openai::StreamOptions>,
}

async fn chat_completions(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let value = read_json(&app, &headers, body).await?;
    let head: ChatHead = from_value(&value)?;
    let Value::Object(body) = value else {
        return Err(ApiError::bad_body("The request body must be a JSON object."));
    };
    let stream = head.stream.unwrap_or(false);
    let include_usage = head.stream_options.is_some_and(|o| o.include_usage);
    let (reply, source) = answer_chat(&app, &caller, &head.model, body, stream, started).await?;
    let mut res = match reply {
        ChatReply::Json(v) => Json(v).into_response(),
        ChatReply::Stream(s) => sse(&app, s, include_usage),
    };
    source.mark(&mut res);
    Ok(res)
}

/// Who answered a chat request.
struct Source {
    provider: String,
    model: String,
    attempts: u32,
    cache_hit: bool,
}

impl Source {
    /// Which candidate answered, for clients and for debugging routes.
    fn mark(&self, res: &mut Response) {
        let h = res.headers_mut();
        let attempts = self.attempts.to_string();
        for (name, value) in [("x-starling-provider", &self.provider), ("x-starling-model", &self.model), ("x-starling-attempts", &attempts)] {
            if let Ok(v) = header::HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        }
        if self.cache_hit {
            h.insert("x-starling-cache", header::HeaderValue::from_static("hit"));
        }
    }
}

/// Everything a chat request goes through, whatever API it came in by:
/// the key's limits and budget, the cache, the router, usage records and
/// the overhead histogram. A JSON answer is recorded here; a stream is
/// recorded when it ends (it comes back metered).
async fn answer_chat(
    app: &App,
    caller: &Caller,
    route: &str,
    body: Map<String, Value>,
    stream: bool,
    started: Instant,
) -> Result<(ChatReply, Source), ApiError> {
    let mut record = usage::draft(route, caller.0.as_ref().map(|k| k.id.clone()));
    let (input, output) = token_estimate(&body);
    let local_only = admit(app, caller, route, input + output).await?;
    let recorder = app.clone();
    let finish = move |r: UsageRecord| recorder.record(r);
    let cache_key = app.0.cache.key(route, &body);
    if let Some(hit) = cache_key.as_ref().and_then(|k| app.0.cache.get(k)) {
        record.provider.clone_from(&hit.provider);
        record.model.clone_from(&hit.model);
        record.cache_hit = true;
        let reply = match &hit.answer {
            Answer::Json(v) => {
                usage::observe(&mut record, v);
                record.status = 200;
                record.latency_ms = started.elapsed().as_secs_f64() * 1e3;
                app.record(record);
                ChatReply::Json(v.clone())
            }
            Answer::Stream(chunks) => {
                let replay = stream::iter(chunks.clone().into_iter().map(Ok)).boxed();
                ChatReply::Stream(usage::metered(replay, record, started, finish))
            }
        };
        let source = Source { provider: hit.provider.clone(), model: hit.model.clone(), attempts: 0, cache_hit: true };
        return Ok((reply, source));
    }
    let routed = match or_shutdown(app, app.0.router.chat(route, body, stream, local_only)).await {
        Ok(r) => r,
        Err(e) => {
            record.status = i64::from(e.status.as_u16());
            record.error = Some(e.message.clone());
            record.latency_ms = started.elapsed().as_secs_f64() * 1e3;
            app.record(record);
            return Err(e);
        }
    };
    record.provider.clone_from(&routed.provider);
    record.model.clone_from(&routed.model);
    record.attempts = i64::from(routed.attempts);
    let reply = match routed.reply {
        ChatReply::Json(v) => {
            if let Some(k) = cache_key {
                let (provider, model) = (routed.provider.clone(), routed.model.clone());
                app.0.cache.put(k, Cached { provider, model, answer: Answer::Json(v.clone()) });
            }
            usage::observe(&mut record, &v);
            record.status = 200;
            record.latency_ms = started.elapsed().as_secs_f64() * 1e3;
            app.record(record);
            ChatReply::Json(v)
        }
        ChatReply::Stream(s) => {
            let s = match cache_key {
                Some(k) => app.0.cache.filling(k, routed.provider.clone(), routed.model.clone(), s),
                None => s,
            };
            // Stands if the stream is cut before its usage chunk: the
            // provider bills the prompt all the same.
            record.prompt_tokens = input as i64;
            ChatReply::Stream(usage::metered(s, record, started, finish))
        }
    };
    let overhead = started.elapsed().saturating_sub(routed.upstream);
    app.0.metrics.overhead_seconds.observe(overhead.as_secs_f64());
    Ok((reply, Source { provider: routed.provider, model: routed.model, attempts: routed.attempts, cache_hit: false }))
}

/// `POST /v1/messages`: Anthropic clients, routed like chat completions.
async fn anthropic_messages(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, MessagesError> {
    let started = Instant::now();
    let Value::Object(body) = read_json(&app, &headers, body).await? else {
        return Err(ApiError::bad_body("The request body must be a JSON object.").into());
    };
    let (route, chat, stream) = messages::to_chat(&body)?;
    let (reply, source) = answer_chat(&app, &caller, &route, chat, stream, started).await?;
    let mut res = match reply {
        ChatReply::Json(v) => Json(messages::to_message(&v, &route)).into_response(),
        // Shutdown ends it with an Anthropic error event, as OpenAI streams get theirs.
        ChatReply::Stream(s) => event_stream(messages::to_events(until_shutdown(&app, s), route)),
    };
    source.mark(&mut res);
    Ok(res)
}

/// The caller's key limits: RPM/TPM (429) and model list (403). Returns
/// whether its cloud budget is spent (then only local candidates remain).
async fn admit(app: &App, caller: &Caller, model: &str, tokens: u64) -> Result<bool, ApiError> {
    let (Some(key), Some(ring)) = (&caller.0, app.0.keys.get()) else { return Ok(false) };
    ring.admit(key, model, tokens).map_err(|r| match r {
        Refusal::RateLimited(after, what) => {
            ApiError::overloaded(format!("Rate limit reached for key `{}` on {what}.", key.id), after)
        }
        Refusal::ModelNotAllowed => ApiError::model_not_allowed(model),
    })?;
    Ok(ring.over_budget(key).await)
}

#[derive(Deserialize)]
struct UsageQuery {
    /// Unix seconds, inclusive (default: the beginning).
    from: Option<i64>,
    /// Unix seconds, exclusive (default: now).
    to: Option<i64>,
    /// `key`, `provider`, `model` or `route` (default `provider`).
    group_by: Option<String>,
}

/// `GET /v1/usage?from&to&group_by=`: totals per group from the records.
async fn usage_summary(State(app): State<App>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let q: UsageQuery = serde_urlencoded_query(&uri)?;
    let group = q.group_by.as_deref().unwrap_or("provider");
    let group_by = GroupBy::parse(group)
        .ok_or_else(|| ApiError::invalid("group_by", format!("`{group}` is not one of key, provider, model, route")))?;
    let log = app.0.usage.get().ok_or_else(|| ApiError::route_not_found("GET", "/v1/usage (no usage database configured)"))?;
    let from_ms = q.from.unwrap_or(0).saturating_mul(1000);
    let to_ms = q.to.map_or(i64::MAX, |t| t.saturating_mul(1000));
    let data = log.store().summary(from_ms, to_ms, group_by).await.map_err(|e| {
        tracing::error!("{e}");
        ApiError::internal("the usage store could not be read")
    })?;
    Ok(Json(json!({"object": "list", "group_by": group, "from": q.from, "to": q.to, "data": data})))
}

/// The query string as `T` (400 naming the field).
fn serde_urlencoded_query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_body(format!("Invalid query string: {}", e.body_text())))
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

/// Legacy completions: local models only (no routing), but keys, limits
/// and usage records apply as for chat.
async fn completions(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let req: CompletionsRequest = parse(&app, &headers, body).await?;
    let shape = req.sampling.shape()?;
    let reqs = req.to_completions()?;
    let estimate: u64 = reqs.iter().map(|r| r.max_tokens as u64 * shape.n as u64).sum();
    admit(&app, &caller, &req.model, estimate).await?;
    let mut record = usage::draft(&req.model, caller.0.as_ref().map(|k| k.id.clone()));
    record.provider = "local".into();
    record.model.clone_from(&req.model);
    record.attempts = 1;
    let provider = app.generators()?.resolve(&req.model)?.clone();
    // Echo needs each prompt's text: the request's own, or its tokens decoded
    // (`prompts` stays empty without echo).
    let mut prompts = Vec::with_capacity(reqs.len());
    for r in reqs.iter().filter(|_| req.echo) {
        prompts.push(match &r.input {
            crate::generator::Input::Text(t) => t.clone(),
            crate::generator::Input::Tokens(t) => provider.detokenize(&r.model, t)?,
            crate::generator::Input::Chat(_) | crate::generator::Input::ChatContinued(_) => String::new(),
        });
    }
    let want_logprobs = reqs.first().is_some_and(|r| r.logprobs.is_some());
    let echo = req.echo;
    let choices = open_choices(&app.0.metrics, &provider, reqs, shape.n).await?;
    let (id, created, model, fp) = (new_id("cmpl"), unix_now(), req.model.clone(), app.0.fingerprint.clone());
    let n = shape.n;

    if !shape.stream {
        let mut out = Vec::new();
        let mut usages = Vec::new();
        for (i, c) in or_shutdown(&app, collect_all(choices)).await?.into_iter().enumerate() {
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
        let v = json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": fp, "choices": out, "usage": total_usage(&usages, n),
        });
        usage::observe(&mut record, &v);
        record.status = 200;
        record.latency_ms = started.elapsed().as_secs_f64() * 1e3;
        app.record(record);
        return Ok(Json(v).into_response());
    }

    let total = choices.len();
    // As chat streams do: `usage` on every chunk and a usage chunk last,
    // which `sse` leaves out unless the client asked.
    let chunks = produced(move |tx| async move {
        let chunk = |i: usize, text: String, lp: Option<Value>, finish: Option<&str>| {
            json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "system_fingerprint": fp,
                "choices": [{"index": i, "text": text, "logprobs": lp, "finish_reason": finish}],
                "usage": null,
            })
        };
        // Running text length per choice, for `text_offset`.
        let mut offsets = vec![0usize; total];
        if echo {
            for (i, off) in offsets.iter_mut().enumerate() {
                let p = prompts[i / n].clone();
                *off = p.len();
                if tx.send(Ok(chunk(i, p, None, None))).await.is_err() {
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
                    Ok(chunk(i, text, lp.filter(|_| want_logprobs), None))
                }
                Ok(Chunk::Done { text, finish, usage, .. }) => {
                    usages[i] = usage;
                    Ok(chunk(i, text, None, Some(finish.as_str())))
                }
                Err(e) => Err(e),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
        let v = json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": fp, "choices": [], "usage": total_usage(&usages, n),
        });
        let _ = tx.send(Ok(v)).await;
    });
    let recorder = app.clone();
    Ok(sse(&app, usage::metered(chunks, record, started, move |r| recorder.record(r)), shape.include_usage))
}

/// The local models, then every route name that is not one of them.
async fn list_models(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    let local = app.generators()?.models();
    let mut routes: Vec<&str> = app.0.router.models().filter(|r| !local.iter().any(|m| m.id == *r)).collect();
    routes.sort_unstable();
    let mut data: Vec<Value> = local.iter().map(|m| json!(m)).collect();
    let created = unix_now();
    data.extend(routes.into_iter().map(|r| json!({"id": r, "object": "model", "created": created, "owned_by": "starling"})));
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn get_model(State(app): State<App>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let models = app.generators()?.models();
    let card = models.into_iter().find(|m| m.id == id).ok_or_else(|| ApiError::model_not_found(&id))?;
    Ok(Json(json!(card)))
}

async fn tokenize(State(app): State<App>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let req: TokenizeRequest = parse(&app, &headers, body).await?;
    let input = req.input()?;
    let provider = app.generators()?.resolve(&req.model)?;
    let tokens = provider.tokenize(&req.model, &input, req.add_special_tokens)?;
    let max_model_len = provider.models().iter().find(|m| m.id == req.model).map(|m| m.max_model_len);
    Ok(Json(json!({"tokens": tokens, "count": tokens.len(), "max_model_len": max_model_len})))
}

async fn detokenize(State(app): State<App>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let req: DetokenizeRequest = parse(&app, &headers, body).await?;
    let provider = app.generators()?.resolve(&req.model)?;
    Ok(Json(json!({"prompt": provider.detokenize(&req.model, &req.tokens)?})))
}

async fn ready(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    app.generators()?;
    Ok(Json(json!({"status": "ready"})))
}

async fn metrics(State(app): State<App>) -> Response {
    let text = app.0.metrics.render(app.0.generators.get(), &app.0.router.breaker_states());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
