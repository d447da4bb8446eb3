//! Virtual API keys: auth on /v1 once keys exist (or beyond loopback),
//! hashed storage, RPM limits, model lists and daily cloud budgets.

use std::sync::Arc;

use gateway::accounting::db::Db;
use gateway::accounting::keys::{KeyStore, NewKey};
use gateway::{App, Generator, Generators, LocalModel, ServerConfig};
use serde_json::{json, Value};

use crate::fake_openai::FakeOpenAi;
use crate::routing::{gateway_for, header, provider, route};
use crate::support::{serve_on, smollm2_path, start_recorded, MODEL};
use crate::usage::TempDb;

async fn post(url: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(url).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.expect("send")
}

fn hi(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
}

async fn create(db: &TempDb, new: NewKey) -> String {
    let store = KeyStore::new(&Db::open(&db.url()).await.expect("db")).await.expect("store");
    store.create(&new).await.expect("create").0
}

#[tokio::test]
async fn once_a_key_exists_every_v1_route_needs_one() {
    let db = TempDb::new();
    let key = create(&db, NewKey { name: "team".into(), ..Default::default() }).await;
    let s = start_recorded(|_| {}, |_| {}, Default::default(), Some(&db.url())).await;
    let url = format!("{}/chat/completions", s.v1());
    let res = post(&url, None, &hi(MODEL)).await;
    assert_eq!(res.status(), 401);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let wrong = "sk-starling-0123456789abcdefghijklmnopqrstuv";
    let v: Value = post(&url, Some(wrong), &hi(MODEL)).await.json().await.expect("json");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("sk-starl***stuv") && !msg.contains(wrong), "{msg}");
    assert_eq!(post(&url, Some(&key), &hi(MODEL)).await.status(), 200);
    // Anthropic clients send x-api-key.
    let res = reqwest::Client::new().get(format!("{}/models", s.v1())).header("x-api-key", &key).send().await.expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(reqwest::get(format!("{}/models", s.v1())).await.expect("get").status(), 401);
    // Liveness, readiness and metrics stay open.
    assert_eq!(reqwest::get(format!("{}/health", s.base)).await.expect("get").status(), 200);
    assert_eq!(reqwest::get(format!("{}/metrics", s.base)).await.expect("get").status(), 200);
    // Stored hashed: the key appears nowhere in the database file.
    let bytes = std::fs::read(&db.0).expect("db file");
    let wal = std::fs::read(format!("{}-wal", db.0.display())).unwrap_or_default();
    let needle = key.as_bytes();
    assert!(!bytes.windows(needle.len()).chain(wal.windows(needle.len())).any(|w| w == needle));
}

#[tokio::test]
async fn a_revoked_key_is_refused() {
    let db = TempDb::new();
    revoked_key_refused(&db.url()).await;
}

/// The revocation test on any database (`postgres.rs` runs it on PostgreSQL).
pub async fn revoked_key_refused(db_url: &str) {
    let store = KeyStore::new(&Db::open(db_url).await.expect("db")).await.expect("store");
    let (key, info) = store.create(&NewKey { name: "old".into(), ..Default::default() }).await.expect("create");
    let (other, _) = store.create(&NewKey { name: "new".into(), ..Default::default() }).await.expect("create");
    store.revoke(&info.id).await.expect("revoke");
    assert!(store.revoke(&info.id).await.is_err(), "revoking twice is an error");
    let s = start_recorded(|_| {}, |_| {}, Default::default(), Some(db_url)).await;
    let url = format!("{}/chat/completions", s.v1());
    assert_eq!(post(&url, Some(&key), &hi(MODEL)).await.status(), 401);
    assert_eq!(post(&url, Some(&other), &hi(MODEL)).await.status(), 200);
}

#[tokio::test]
async fn rate_limits_and_model_lists_apply_per_key() {
    let db = TempDb::new();
    let limited = create(&db, NewKey { name: "rpm".into(), rpm: Some(2), ..Default::default() }).await;
    let narrow = create(&db, NewKey { name: "narrow".into(), models: vec!["other-model".into()], ..Default::default() }).await;
    let s = start_recorded(|_| {}, |_| {}, Default::default(), Some(&db.url())).await;
    let url = format!("{}/chat/completions", s.v1());
    assert_eq!(post(&url, Some(&limited), &hi(MODEL)).await.status(), 200);
    assert_eq!(post(&url, Some(&limited), &hi(MODEL)).await.status(), 200);
    let res = post(&url, Some(&limited), &hi(MODEL)).await;
    assert_eq!(res.status(), 429);
    let after: u64 = header(&res, "retry-after").parse().expect("retry-after");
    assert!((1..=30).contains(&after), "{after}");
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let res = post(&url, Some(&narrow), &hi(MODEL)).await;
    assert_eq!(res.status(), 403);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["error"]["code"], "model_not_allowed");
}

#[tokio::test]
async fn a_spent_budget_leaves_only_the_local_engine() {
    let db = TempDb::new();
    let key = create(&db, NewKey { name: "thrifty".into(), budget_usd_per_day: Some(1e-9), ..Default::default() }).await;
    let openai = FakeOpenAi::start("openai").await;
    let mut cloud_only = route(&[("openai", "gpt-4o-mini")]);
    cloud_only.model = "cloud-only".into();
    let gw = gateway_for(
        vec![provider("openai", &openai.base_url)],
        vec![route(&[("openai", "gpt-4o-mini"), ("local", MODEL)]), cloud_only],
    );
    let s = start_recorded(|_| {}, |_| {}, gw, Some(&db.url())).await;
    let url = format!("{}/chat/completions", s.v1());
    // Within budget: the cloud answers first (and spends it).
    let res = post(&url, Some(&key), &hi("tweet-writer")).await;
    assert_eq!(header(&res, "x-starling-provider"), "openai");
    // Spent: only the local engine may answer.
    let res = post(&url, Some(&key), &hi("tweet-writer")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-starling-provider"), "local");
    let res = post(&url, Some(&key), &hi("cloud-only")).await;
    assert_eq!(res.status(), 429);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["error"]["code"], "insufficient_quota");
    assert_eq!(openai.seen().len(), 1);
}

#[tokio::test]
async fn beyond_loopback_without_keys_everything_is_refused() {
    let mut cfg = inference::EngineConfig::new(smollm2_path(), MODEL);
    cfg.threads = 2;
    let engine = inference::Engine::start(cfg).expect("engine");
    let app = App::new(ServerConfig::default(), Default::default()).expect("app");
    let g: Arc<dyn Generator> = Arc::new(LocalModel::new(engine.clone()));
    app.set_ready(Generators::new(vec![g]));
    let s = serve_on(app, engine, "0.0.0.0:0").await;
    let res = post(&format!("{}/chat/completions", s.v1()), None, &hi(MODEL)).await;
    assert_eq!(res.status(), 401);
    let v: Value = res.json().await.expect("json");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("starling keys create"), "{v}");
    assert_eq!(reqwest::get(format!("{}/health", s.base)).await.expect("get").status(), 200);
}
