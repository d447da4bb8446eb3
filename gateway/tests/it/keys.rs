//! Virtual API keys: auth on /v1 once keys exist (or beyond loopback),
//! hashed storage, RPM limits, model lists and daily cloud budgets.


use platform::db::Db;
use platform::keys::{KeyStore, NewKey};
use serde_json::{json, Value};

use crate::fake_openai::FakeOpenAi;
use crate::routing::{gateway_for, header, provider, route};
use crate::support::{app_over, engine, serve_on, start_recorded, MODEL};
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

async fn get(url: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.expect("send")
}

async fn create(db: &TempDb, new: NewKey) -> String {
    let store = KeyStore::new(&Db::open(&db.url()).await.expect("db"));
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
    // Liveness and readiness stay open; metrics need a key too.
    assert_eq!(reqwest::get(format!("{}/health", s.base)).await.expect("get").status(), 200);
    assert_eq!(reqwest::get(format!("{}/ready", s.base)).await.expect("get").status(), 200);
    assert_eq!(reqwest::get(format!("{}/metrics", s.base)).await.expect("get").status(), 401);
    let metrics = reqwest::Client::new().get(format!("{}/metrics", s.base)).bearer_auth(&key).send().await.expect("get");
    assert_eq!(metrics.status(), 200);
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
    let store = KeyStore::new(&Db::open(db_url).await.expect("db"));
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
    let engine = engine();
    let app = app_over(&engine);
    let s = serve_on(app, engine, "0.0.0.0:0").await;
    let res = post(&format!("{}/chat/completions", s.v1()), None, &hi(MODEL)).await;
    assert_eq!(res.status(), 401);
    let v: Value = res.json().await.expect("json");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("starling keys create"), "{v}");
    assert_eq!(reqwest::get(format!("{}/health", s.base)).await.expect("get").status(), 200);
}

/// `/metrics` is open to a scraper without a key where configured.
#[tokio::test]
async fn public_metrics_need_no_key() {
    let db = TempDb::new();
    create(&db, NewKey { name: "team".into(), ..Default::default() }).await;
    let s = start_recorded(|_| {}, |c| c.public_metrics = true, Default::default(), Some(&db.url())).await;
    assert_eq!(get(&format!("{}/metrics", s.base), None).await.status(), 200);
    assert_eq!(get(&format!("{}/models", s.v1()), None).await.status(), 401);
}

/// Each key sees its own usage; a key with the `admin` scope sees all.
#[tokio::test]
async fn usage_is_each_keys_own_unless_admin() {
    let db = TempDb::new();
    let store = KeyStore::new(&Db::open(&db.url()).await.expect("db"));
    let (a, a_info) = store.create(&NewKey { name: "a".into(), ..Default::default() }).await.expect("create");
    let (b, b_info) = store.create(&NewKey { name: "b".into(), ..Default::default() }).await.expect("create");
    let admin = NewKey { name: "ops".into(), scopes: vec!["admin".into()], ..Default::default() };
    let (ops, _) = store.create(&admin).await.expect("create");
    assert!(store.create(&NewKey { name: "x".into(), scopes: vec!["root".into()], ..Default::default() }).await.is_err());
    let mut s = start_recorded(|_| {}, |_| {}, Default::default(), Some(&db.url())).await;
    let url = format!("{}/chat/completions", s.v1());
    for key in [&a, &b, &b] {
        assert_eq!(post(&url, Some(key), &hi(MODEL)).await.status(), 200);
    }
    // Graceful shutdown writes the queued records.
    s.shutdown();
    s.done.take().expect("serve task").await.expect("join").expect("serve");
    let s = start_recorded(|_| {}, |_| {}, Default::default(), Some(&db.url())).await;
    let usage = |key: String| {
        let url = format!("{}/usage?group_by=key", s.v1());
        async move { get(&url, Some(&key)).await.json::<Value>().await.expect("json") }
    };
    let groups = |v: &Value| -> Vec<(String, u64)> {
        v["data"].as_array().expect("data").iter().map(|g| (g["group"].as_str().unwrap_or("").to_owned(), g["requests"].as_u64().unwrap_or(0))).collect()
    };
    assert_eq!(groups(&usage(a.clone()).await), vec![(a_info.id.clone(), 1)]);
    assert_eq!(groups(&usage(b.clone()).await), vec![(b_info.id.clone(), 2)]);
    let mut all = groups(&usage(ops).await);
    all.sort();
    let mut expected = vec![(a_info.id, 1), (b_info.id, 2)];
    expected.sort();
    assert_eq!(all, expected);
}

/// One app on a loopback and a public listener: keys are required on the
/// public one whichever listener started last.
#[tokio::test]
async fn keys_are_required_per_listener() {
    let engine = engine();
    let app = app_over(&engine);
    let public = serve_on(app.clone(), engine.clone(), "0.0.0.0:0").await;
    let private = serve_on(app, engine, "127.0.0.1:0").await;
    assert_eq!(post(&format!("{}/chat/completions", public.v1()), None, &hi(MODEL)).await.status(), 401);
    assert_eq!(post(&format!("{}/chat/completions", private.v1()), None, &hi(MODEL)).await.status(), 200);
}

/// A request larger than the key's tokens per minute is refused at once
/// (400 naming max_tokens: waiting would not help); a small request's
/// unused estimate is given back when its record closes.
#[tokio::test]
async fn tokens_per_minute_count_max_tokens_and_real_use() {
    let db = TempDb::new();
    let key = create(&db, NewKey { name: "tpm".into(), tpm: Some(1000), ..Default::default() }).await;
    let s = start_recorded(|_| {}, |_| {}, Default::default(), Some(&db.url())).await;
    let url = format!("{}/chat/completions", s.v1());
    let mut big = hi(MODEL);
    big["max_tokens"] = json!(32_000);
    let res = post(&url, Some(&key), &big).await;
    assert_eq!(res.status(), 400);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["error"]["param"], "max_tokens", "{v}");
    // 600 reserved each, about 40 used: without settling, the second would
    // find 400 left and be refused.
    let mut asks = hi(MODEL);
    asks["max_tokens"] = json!(598);
    asks["stop"] = json!([".", "!", "?", "\n"]);
    assert_eq!(post(&url, Some(&key), &asks).await.status(), 200);
    assert_eq!(post(&url, Some(&key), &asks).await.status(), 200);
}
