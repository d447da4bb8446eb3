//! A real server on 127.0.0.1:0 over the real model.

use std::path::PathBuf;
use std::sync::Arc;

use async_openai::config::OpenAIConfig;
use async_openai::Client;
use gateway::{App, GatewayConfig, Generator, Generators, LocalModel, ServerConfig};
use inference::{Engine, EngineConfig};
use tokio::sync::oneshot;

pub use test_support::smollm2_path;

/// Name the test model is served under.
pub const MODEL: &str = "smollm2";

/// reqwest (and async-openai through it) is built without a default TLS
/// crypto provider, and builds its TLS config even for http URLs: give the
/// test process ring, as the gateway's own clients are given it.
pub fn tls_for_test_clients() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A running server; dropping it shuts the server down.
pub struct Server {
    pub base: String,
    pub engine: Engine,
    stop: Option<oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// `/v1` base URL.
    pub fn v1(&self) -> String {
        format!("{}/v1", self.base)
    }

    /// An async-openai client for it (no retries: tests see every answer).
    pub fn client(&self) -> Client<OpenAIConfig> {
        Client::with_config(OpenAIConfig::new().with_api_base(self.v1()).with_api_key("unused"))
    }

    /// Ask it to shut down (graceful).
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Start a server; `engine` and `server` adjust the test-sized defaults.
pub async fn start(engine: impl FnOnce(&mut EngineConfig), server: impl FnOnce(&mut ServerConfig)) -> Server {
    start_with(engine, server, GatewayConfig::default()).await
}

/// A default server with these providers and routes.
pub async fn start_routed(gateway: GatewayConfig) -> Server {
    start_with(|_| {}, |_| {}, gateway).await
}

pub async fn start_with(
    engine: impl FnOnce(&mut EngineConfig),
    server: impl FnOnce(&mut ServerConfig),
    gateway: GatewayConfig,
) -> Server {
    start_recorded(engine, server, gateway, None).await
}

/// The test engine: the real SmolLM2 on two threads.
pub fn engine() -> Engine {
    let mut cfg = EngineConfig::new(smollm2_path(), MODEL);
    cfg.threads = 2;
    Engine::start(cfg).expect("engine start")
}

/// A default app serving `engine`'s model, ready.
pub fn app_over(engine: &Engine) -> App {
    let app = App::new(ServerConfig::default(), GatewayConfig::default()).expect("app");
    serve_models(&app, engine);
    app
}

/// `app` serves `engine`'s model from now on.
fn serve_models(app: &App, engine: &Engine) {
    let provider: Arc<dyn Generator> = Arc::new(LocalModel::new(engine.clone()));
    app.set_ready(Generators::new(vec![provider]));
}

/// A server that records usage in the database at `usage_url`.
pub async fn start_recorded(
    engine: impl FnOnce(&mut EngineConfig),
    server: impl FnOnce(&mut ServerConfig),
    gateway: GatewayConfig,
    usage_url: Option<&str>,
) -> Server {
    let mut cfg = EngineConfig::new(smollm2_path(), MODEL);
    cfg.threads = 2;
    engine(&mut cfg);
    let engine = Engine::start(cfg).expect("engine start");
    let mut sc = ServerConfig::default();
    server(&mut sc);
    let app = App::new(sc, gateway).expect("app");
    if let Some(url) = usage_url {
        let db = platform::db::Db::open(url).await.expect("database");
        app.attach_database(&db, Some(&journal_for(url))).await.expect("attach database");
    }
    serve_models(&app, &engine);
    start_app(app, engine).await
}

/// The usage journal kept with a database, so a restart on the same
/// database reads it, as `serve`'s does: beside a SQLite file, in the temp
/// directory for a PostgreSQL URL (`PgServer` removes it).
pub fn journal_for(url: &str) -> PathBuf {
    match url.strip_prefix("sqlite://") {
        Some(path) => PathBuf::from(format!("{path}.journal")),
        None => {
            let name: String = url.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
            std::env::temp_dir().join(format!("starling-journal-{name}"))
        }
    }
}

/// The files of the journal at `base` (its segments and lock), and the
/// bytes in them.
pub fn journal_files(base: &std::path::Path) -> Vec<(PathBuf, u64)> {
    let dir = base.parent().unwrap_or(std::path::Path::new("."));
    let prefix = format!("{}.", base.file_name().and_then(|n| n.to_str()).unwrap_or_default());
    let mut found: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)))
                .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Serve an already built app.
pub async fn start_app(app: App, engine: Engine) -> Server {
    serve_on(app, engine, "127.0.0.1:0").await
}

/// Serve an app on `addr` (`0.0.0.0:0` for a server reachable beyond
/// loopback); the base URL still points at loopback.
pub async fn serve_on(app: App, engine: Engine, addr: &str) -> Server {
    tls_for_test_clients();
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let base = format!("http://127.0.0.1:{port}");
    let (stop, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(gateway::serve(listener, app.clone(), async move {
        let _ = rx.await;
    }));
    Server { base, engine, stop: Some(stop), done: Some(done) }
}

/// The default test server.
pub async fn default_server() -> Server {
    start(|_| {}, |_| {}).await
}

/// POST a JSON body with reqwest (for what async-openai will not send).
pub async fn post_json(url: &str, body: &serde_json::Value) -> reqwest::Response {
    reqwest::Client::new().post(url).json(body).send().await.expect("send")
}

/// Start a streaming chat that runs for 2000 tokens (for cancellation and
/// shutdown tests: `ignore_eos`, so it cannot end early) and return its
/// response.
pub async fn long_stream(s: &Server) -> reqwest::Response {
    post_json(
        &format!("{}/chat/completions", s.v1()),
        &serde_json::json!({"model": MODEL, "messages": [{"role": "user", "content": "Tell me a long story."}],
                            "max_tokens": 2000, "ignore_eos": true, "stream": true}),
    )
    .await
}

/// Serve `app` over TLS with `tests/tls/server.pem` until the test ends,
/// giving handlers the client's address as `ConnectInfo`, as
/// `axum::serve` does for plain HTTP.
pub async fn serve_tls(listener: tokio::net::TcpListener, app: axum::Router) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .expect("tests/tls/server.pem");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("tests/tls/server.key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("TLS server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    while let Ok((tcp, peer)) = listener.accept().await {
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            // A failed handshake (an untrusting client) ends the connection.
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let app = app.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

/// The Whisper tiny.en engine, loaded once for the whole test binary (its
/// thread outlives each test's runtime); in f32, as the faster-whisper
/// transcripts its answers are compared with were made.
pub fn tiny_en() -> inference::speech::SpeechEngine {
    static ENGINE: std::sync::OnceLock<inference::speech::SpeechEngine> = std::sync::OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let dir = test_support::whisper_dir("whisper-tiny-en");
            let model = inference::speech::SpeechModel::load(&dir, inference::DeviceSpec::Cpu, inference::speech::Precision::Float).expect("load tiny.en");
            inference::speech::SpeechEngine::start(model, Default::default()).expect("speech engine")
        })
        .clone()
}

/// A server with the LLM and tiny.en as `whisper-tiny-en`; `speech` adjusts the `[speech]` settings.
pub async fn start_speech(speech: impl FnOnce(&mut gateway::SpeechConfig), usage_url: Option<&str>) -> Server {
    start_speech_routed(GatewayConfig::default(), speech, usage_url).await
}

/// [`start_speech`] with `gateway`'s providers and routes.
pub async fn start_speech_routed(
    gateway: GatewayConfig,
    speech: impl FnOnce(&mut gateway::SpeechConfig),
    usage_url: Option<&str>,
) -> Server {
    let engine = engine();
    let app = App::new(ServerConfig::default(), gateway).expect("app");
    if let Some(url) = usage_url {
        let db = platform::db::Db::open(url).await.expect("database");
        app.attach_database(&db, Some(&journal_for(url))).await.expect("attach database");
    }
    serve_models(&app, &engine);
    let mut cfg = gateway::SpeechConfig::default();
    speech(&mut cfg);
    let mut models = gateway::SpeechModels::new(cfg);
    models.insert("whisper-tiny-en", tiny_en());
    app.set_speech(models);
    start_app(app, engine).await
}
