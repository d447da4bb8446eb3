//! The HTTP server: the app state, its routes and the layers in front of
//! them. The handlers live in [`crate::api`]; here are what they share:
//!
//! - `auth`: the gateway's refusals for `platform::auth`'s key check.
//! - `body`: JSON bodies and query strings read into our types.
//! - `sse`: OpenAI's event-stream framing.
//! - `serve`: the accept loop, connection timeouts and graceful shutdown.
//! - `shutdown`: what a request does when the shutdown grace runs out.
//!
//! Chat completions go through the [`crate::routing`] router to providers;
//! legacy completions and the tokenizer routes go straight to the local
//! models (`crate::providers::local::generator`).

pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod serve;
pub(crate) mod shutdown;
pub(crate) mod sse;

pub use auth::Caller;
pub use serve::{serve, serve_connections};

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::config::{GatewayConfig, ProviderKind};
use crate::error::ApiError;
use crate::providers::local::generator::Generators;
use crate::providers::local::LocalChat;
use crate::metrics::Metrics;
use crate::providers::openai_compatible::OpenAiCompatible;
use crate::providers::Provider;
use crate::routing::router::{Router, Timeouts, Upstream};
use crate::api;
use platform::auth::Exposure;
use crate::api::answer::Admitted;
use crate::accounting::cache::ResponseCache;
use platform::db::Db;
use platform::keys::{KeyRing, KeyStore};
use crate::accounting::usage::{UsageLog, UsageRecord, UsageStore};

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
    /// Serve `/metrics` without a key even when keys are in use or the
    /// listener is public (for a Prometheus that cannot send one).
    pub public_metrics: bool,
    /// Time a client has to send a request's head, seconds; also how long
    /// a keep-alive connection may sit idle (hyper waits for the next head
    /// from the moment an answer is sent).
    pub header_read_timeout_secs: u64,
    /// Time a client has to send a request's whole body, seconds (408
    /// past it).
    pub body_read_timeout_secs: u64,
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
            public_metrics: false,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 60,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) config: ServerConfig,
    /// Set when the shutdown grace is over: running requests stop.
    pub(crate) cancel: watch::Sender<bool>,
    pub(crate) metrics: Metrics,
    /// The local models, once loaded (shared with the `local` provider).
    pub(crate) generators: Arc<OnceLock<Generators>>,
    pub(crate) router: Arc<Router>,
    pub(crate) cache: ResponseCache,
    /// Usage records, once a database is attached.
    pub(crate) usage: OnceLock<UsageLog>,
    /// API keys, once a database is attached (shared with the auth layer).
    pub(crate) keys: Arc<OnceLock<Arc<KeyRing>>>,
    /// The Whisper models, once loaded (shared with the `local` provider).
    pub(crate) speech: Arc<OnceLock<crate::speech::SpeechModels>>,
    /// `[speech]`, known before the models load: audio requests are read
    /// and routed (to cloud candidates) while the local models load.
    pub(crate) speech_config: OnceLock<crate::speech::SpeechConfig>,
    /// The weights of `/v1/posts/score`.
    pub(crate) scoring: content::Weights,
    /// The prompt templates of `/v1/posts/generate`.
    pub(crate) prompts: content::prompts::Prompts,
    /// Routes of the other services of the process (posting), served
    /// beside the gateway's with the same layers.
    pub(crate) mounted: OnceLock<axum::Router>,
}

/// The database could not be attached: its API keys could not be read.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DatabaseError(#[from] platform::keys::KeyError);

/// Why the app could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The metrics registry refused a metric.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A provider's config is unusable.
    #[error(transparent)]
    Provider(#[from] crate::providers::openai_compatible::SetupError),
    /// A route's config is unusable.
    #[error(transparent)]
    Route(#[from] crate::routing::router::RouteError),
    /// Two providers share a name, or one is called `local`.
    #[error("provider name `{0}` is used twice (`local` is the engine's)")]
    DuplicateProvider(String),
    /// `[scoring]` has a weight that cannot be.
    #[error("[scoring]: {0}")]
    Scoring(String),
    /// A prompt template does not compile or names an unknown variable.
    #[error(transparent)]
    Prompts(#[from] content::prompts::TemplateError),
}

/// The application state: cheap to clone, shared by every handler.
#[derive(Clone)]
pub struct App(pub(crate) Arc<Inner>);

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("ready", &self.0.generators.get().is_some()).finish()
    }
}

impl App {
    /// A server over the local models (503 until [`App::set_ready`]) and
    /// the providers and routes of `gateway`, with a registry of its own.
    pub fn new(config: ServerConfig, gateway: GatewayConfig) -> Result<Self, SetupError> {
        Self::with_registry(config, gateway, &prometheus::Registry::new())
    }

    /// [`App::new`] with its metrics in `registry`, shared with the other
    /// services of the process: `/metrics` renders all of it.
    pub fn with_registry(config: ServerConfig, gateway: GatewayConfig, registry: &prometheus::Registry) -> Result<Self, SetupError> {
        let metrics = Metrics::new(registry)?;
        let generators = Arc::new(OnceLock::new());
        let fingerprint = format!("fp_starling_{}", env!("CARGO_PKG_VERSION").replace('.', "_"));
        let speech = Arc::new(OnceLock::new());
        let local = LocalChat::new(generators.clone(), speech.clone(), metrics.clone(), fingerprint, config.default_max_tokens);
        let mut upstreams = HashMap::from([("local".to_owned(), Upstream::local(Arc::new(local)))]);
        let threads = config.threads();
        for p in &gateway.providers {
            let provider: Arc<dyn Provider> = match p.kind {
                ProviderKind::OpenaiCompatible => Arc::new(OpenAiCompatible::new(p, threads)?),
                ProviderKind::Anthropic => Arc::new(crate::providers::anthropic::Anthropic::new(p, threads)?),
            };
            let timeouts = Timeouts { first_chunk: p.ttft_timeout(), total: p.total_timeout() };
            let upstream = Upstream::remote(provider, timeouts);
            if upstreams.insert(p.name.clone(), upstream).is_some() {
                return Err(SetupError::DuplicateProvider(p.name.clone()));
            }
        }
        gateway.scoring.validate().map_err(SetupError::Scoring)?;
        let prompts = content::prompts::Prompts::load(&gateway.prompts_dir)?;
        let router = Arc::new(Router::new(&gateway, &upstreams, metrics.clone())?);
        Ok(Self(Arc::new(Inner {
            config,
            cancel: watch::Sender::new(false),
            metrics,
            generators,
            router,
            cache: ResponseCache::new(&gateway.cache),
            usage: OnceLock::new(),
            keys: Arc::new(OnceLock::new()),
            speech,
            speech_config: OnceLock::new(),
            scoring: gateway.scoring.clone(),
            prompts,
            mounted: OnceLock::new(),
        })))
    }

    /// Models are loaded: start serving them. Later calls are ignored.
    pub fn set_ready(&self, generators: Generators) {
        if self.0.generators.set(generators).is_err() {
            tracing::warn!("set_ready called twice; keeping the first models");
        }
    }

    /// `[speech]` before its models load (else [`App::set_speech`] brings
    /// it): `/v1/audio/*` reads and routes requests from now on, the local
    /// candidates answering 503 until their models are in. Later calls are
    /// ignored.
    pub fn set_speech_config(&self, config: crate::speech::SpeechConfig) {
        let _ = self.0.speech_config.set(config);
    }

    /// Speech models are loaded: serve `/v1/audio/*`. Later calls are ignored.
    pub fn set_speech(&self, speech: crate::speech::SpeechModels) {
        self.set_speech_config(speech.config.clone());
        if self.0.speech.set(speech).is_err() {
            tracing::warn!("set_speech called twice; keeping the first models");
        }
    }

    /// `[speech]` as set (its defaults before anything set it).
    pub(crate) fn speech_config(&self) -> crate::speech::SpeechConfig {
        self.0.speech_config.get().cloned().unwrap_or_default()
    }

    /// Keep usage records and read API keys in `db` from now on (a second
    /// call is ignored), journaling records in the file `journal` until they
    /// are written (see [`UsageLog::start`]). Needs a tokio runtime that
    /// outlives the app: it starts the usage writer and the key reloader.
    pub async fn attach_database(&self, db: &Db, journal: Option<&std::path::Path>) -> Result<(), DatabaseError> {
        let keys = KeyRing::load(KeyStore::new(db)).await?;
        keys.watch();
        let log = UsageLog::start(UsageStore::new(db), self.0.metrics.usage_writer.clone(), journal);
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

    /// Account one request: metrics now, the record off the request path,
    /// and the key's token bucket settled with what it used.
    pub(crate) fn record(&self, mut r: UsageRecord, admitted: &Admitted) {
        r.cost_usd = if r.cache_hit {
            0.0
        } else if r.audio_seconds > 0.0 {
            self.0.router.audio_cost(&r.provider, &r.model, r.audio_seconds)
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
        if let (Some(ring), Some(key)) = (self.0.keys.get(), &admitted.key) {
            // The budget is for cloud spend: the local engine is paid for.
            if r.provider != "local" {
                ring.spend(&key.id, r.cost_usd);
            }
            let used = r.prompt_tokens.max(0) + r.completion_tokens.max(0);
            ring.settle(key, admitted.tokens, used as u64);
        }
        if let Some(log) = self.0.usage.get() {
            log.record(r);
        }
    }

    /// Serve `routes` (another service's, with its own state and its own
    /// key check: see [`App::key_guard`]) beside the gateway's, under the
    /// same request metrics and listener exposure. A second call is ignored.
    pub fn mount(&self, routes: axum::Router) {
        if self.0.mounted.set(routes).is_err() {
            tracing::warn!("routes mounted twice; keeping the first");
        }
    }

    /// The key check of this app's keys (set once a database is
    /// attached), for a mounted service to put in front of its routes
    /// with its own refusal shape.
    pub fn key_guard(&self) -> platform::auth::Guard {
        auth::guard(self)
    }

    /// The first local model's name, once the models are loaded.
    pub fn local_model(&self) -> Option<String> {
        self.0.generators.get()?.models().first().map(|m| m.id.clone())
    }

    /// The metrics registry (for tests and embedding).
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Resolves when the shutdown grace is over.
    pub(crate) fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.cancel.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    pub(crate) fn generators(&self) -> Result<&Generators, ApiError> {
        self.0.generators.get().ok_or_else(|| ApiError::not_ready("Models are still loading; retry shortly."))
    }

    /// Every route, as served on loopback.
    pub fn router(&self) -> axum::Router {
        self.router_for(Exposure { public: false })
    }

    /// Every route, as served on a listener reachable as `exposure` says.
    pub(crate) fn router_for(&self, exposure: Exposure) -> axum::Router {
        // Everything that reaches a model or the records needs a key once
        // keys exist or the listener is reachable beyond loopback; so do
        // the metrics (their labels name routes, models and providers),
        // unless `public_metrics` opens them to a scraper without one.
        let mut guarded = axum::Router::new()
            .route("/v1/chat/completions", post(api::chat::chat_completions))
            .route("/v1/messages", post(api::messages::anthropic_messages))
            .route("/v1/completions", post(api::chat::completions))
            .route("/v1/audio/transcriptions", post(crate::speech::handler::transcriptions))
            .route("/v1/audio/translations", post(crate::speech::handler::translations))
            .route("/v1/models", get(api::models::list_models))
            .route("/v1/usage", get(api::usage::usage_summary))
            .route("/v1/models/{*id}", get(api::models::get_model))
            .route("/tokenize", post(api::tokenize::tokenize))
            .route("/detokenize", post(api::tokenize::detokenize))
            .route("/v1/posts/score", post(crate::posts::score::score_posts))
            .route("/v1/posts/generate", post(crate::posts::generate::generate_posts));
        let mut open = axum::Router::new()
            .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
            .route("/ready", get(ready));
        if self.0.config.public_metrics {
            open = open.route("/metrics", get(metrics));
        } else {
            guarded = guarded.route("/metrics", get(metrics));
        }
        let mut routes = guarded
            .route_layer(middleware::from_fn_with_state(auth::guard(self), platform::auth::authenticate))
            .merge(open)
            .with_state(self.clone());
        if let Some(mounted) = self.0.mounted.get() {
            routes = routes.merge(mounted.clone());
        }
        routes
            .fallback(|method: Method, uri: Uri| async move { ApiError::route_not_found(method.as_str(), uri.path()) })
            .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
                ApiError::method_not_allowed(method.as_str(), uri.path())
            })
            .layer(middleware::from_fn_with_state(self.clone(), record))
            .layer(axum::Extension(exposure))
    }
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

async fn ready(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    if app.generators()?.iter().any(|g| !g.is_alive()) {
        return Err(ApiError::not_ready("The local engine stopped; the server needs a restart."));
    }
    Ok(Json(json!({"status": "ready"})))
}

async fn metrics(State(app): State<App>) -> Response {
    if let Some(speech) = app.0.speech.get() {
        speech.observe_queues(&app.0.metrics);
    }
    let text = app.0.metrics.render(app.0.generators.get(), &app.0.router.breaker_states());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
