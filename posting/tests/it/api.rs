//! The REST API over real HTTP on loopback: validation errors that name
//! the field, what each key may see and do, pagination, slots.

use std::sync::{Arc, OnceLock};

use platform::keys::{KeyRing, KeyStore, NewKey};
use serde_json::{json, Value};

use crate::support::{env, Backend, Env, BOTH};

/// The API of `e` on a loopback port, behind its database's keys.
pub async fn serve(e: &Env) -> String {
    let ring = KeyRing::load(KeyStore::new(&e.db)).await.expect("keys");
    let keys = Arc::new(OnceLock::new());
    let _ = keys.set(ring);
    let guard = platform::auth::Guard {
        keys,
        reject: |_| axum::response::IntoResponse::into_response(axum::http::StatusCode::UNAUTHORIZED),
    };
    let app = e.posting.router(guard).layer(axum::Extension(platform::auth::Exposure { public: false }));
    let (addr, _) = test_support::serve_loopback(app).await;
    format!("http://{addr}/api/v1")
}

async fn key(e: &Env, name: &str, scopes: &[&str]) -> String {
    let new = NewKey {
        name: name.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    KeyStore::new(&e.db).create(&new).await.expect("key").0
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// A raw body with its content type.
    pub async fn post_raw(&self, path: &str, ctype: &str, body: &str) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", ctype)
            .body(body.to_owned());
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let res = req.send().await.expect("request");
        (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
    }
}

pub fn client(base: &str, key: Option<&str>) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client {
        http: reqwest::Client::new(),
        base: base.to_owned(),
        key: key.map(str::to_owned),
    }
}

/// A bad request is a 400 whose `field` names what was wrong.
#[tokio::test]
async fn validation_errors_name_the_field() {
    for backend in BOTH {
        let e = env(backend).await;
        let c = client(&serve(&e).await, None);
        let (s, acc) = c
            .post("/accounts", json!({"platform": "dry-run", "handle": "@shop", "time_zone": "Europe/Paris"}))
            .await;
        assert_eq!(s, 201, "{acc}");
        let acc = acc["id"].as_str().expect("id").to_owned();
        let cases = [
            ("/accounts", json!({"platform": "myspace", "handle": "a"}), "platform"),
            (
                "/accounts",
                json!({"platform": "dry-run", "handle": "a", "time_zone": "Mars/Base"}),
                "time_zone",
            ),
            ("/accounts", json!({"platform": "x", "handle": "a"}), "credentials"),
            ("/accounts", json!({"platform": "dry-run", "handle": "a", "daily_cap": 0}), "daily_cap"),
            ("/accounts", json!({"platform": "dry-run", "handle": 5}), "handle"),
            ("/posts", json!({"text": "hi"}), "body"),
            ("/posts", json!({"account_id": "acc_nope", "text": "hi"}), "account_id"),
            (
                "/posts",
                json!({"account_id": acc, "text": "hi", "scheduled_at": "2026-03-29T02:30"}),
                "scheduled_at",
            ),
            ("/posts", json!({"account_id": acc, "text": "hi", "scheduled_at": "soon"}), "scheduled_at"),
            ("/posts", json!({"account_id": acc, "parts": [{"text": "a"}, {"text": " "}]}), "parts[1].text"),
            ("/posts", json!({"account_id": acc, "text": "hi", "colour": "red"}), "body"),
            ("/campaigns", json!({"account_id": acc, "name": "c", "slots": {"funday": ["09:00"]}}), "slots"),
            ("/campaigns", json!({"account_id": acc, "name": "c", "disclosure": "whisper"}), "disclosure"),
        ];
        for (path, body, field) in cases {
            let (s, err) = c.post(path, body.clone()).await;
            assert_eq!(s, 400, "{path} {body}: {err}");
            assert_eq!(err["error"]["field"], field, "{path} {body}: {err}");
            assert!(err["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        let (s, err) = c.get("/posts?limit=0").await;
        assert_eq!((s, err["error"]["field"].as_str()), (400, Some("limit")));
        let (s, _) = c.get("/posts/post_nope").await;
        assert_eq!(s, 404, "{backend:?}");
    }
}

/// Key A never sees key B's accounts, campaigns or posts; `admin` sees
/// all; `posting:read` cannot write; `campaign:ID` sees only its campaign.
#[tokio::test]
async fn keys_see_only_their_own() {
    for backend in BOTH {
        let e = env(backend).await;
        let (a, b, admin) = (key(&e, "a", &[]).await, key(&e, "b", &[]).await, key(&e, "ops", &["admin"]).await);
        let reader = key(&e, "reader", &["posting:read"]).await;
        let base = serve(&e).await;
        let ca = client(&base, Some(&a));
        let (s, acc) = ca.post("/accounts", json!({"platform": "dry-run", "handle": "shop-a"})).await;
        assert_eq!(s, 201, "{acc}");
        let acc = acc["id"].as_str().expect("id").to_owned();
        let (_, cmp) = ca.post("/campaigns", json!({"account_id": acc, "name": "spring"})).await;
        let cmp = cmp["id"].as_str().expect("campaign").to_owned();
        let (_, other) = ca.post("/campaigns", json!({"account_id": acc, "name": "autumn"})).await;
        let other = other["id"].as_str().expect("campaign").to_owned();
        let (s, post) = ca
            .post("/posts", json!({"account_id": acc, "campaign_id": cmp, "text": "spring is here"}))
            .await;
        assert_eq!(s, 201, "{post}");
        let post = post["id"].as_str().expect("post").to_owned();
        ca.post("/posts", json!({"account_id": acc, "campaign_id": other, "text": "autumn is here"}))
            .await;

        let cb = client(&base, Some(&b));
        for path in ["/accounts", "/campaigns", "/posts"] {
            let (s, v) = cb.get(path).await;
            assert_eq!((s, v["data"].as_array().map(Vec::len)), (200, Some(0)), "{backend:?} {path}: {v}");
        }
        for path in [format!("/accounts/{acc}"), format!("/campaigns/{cmp}"), format!("/posts/{post}")] {
            assert_eq!(cb.get(&path).await.0, 404, "{backend:?} {path}");
        }
        assert_eq!(cb.post(&format!("/posts/{post}/cancel"), json!({})).await.0, 404);
        let (s, v) = cb.post("/posts", json!({"account_id": acc, "text": "not mine"})).await;
        assert_eq!((s, v["error"]["field"].as_str()), (400, Some("account_id")));
        assert_eq!(client(&base, None).get("/posts").await.0, 401);
        assert_eq!(client(&base, Some("sk-starling-wrong")).get("/posts").await.0, 401);

        let (_, all) = client(&base, Some(&admin)).get("/posts").await;
        assert_eq!(all["data"].as_array().map(Vec::len), Some(2), "{all}");
        let cr = client(&base, Some(&reader));
        assert_eq!(cr.get("/posts").await.0, 200);
        assert_eq!(cr.post("/accounts", json!({"platform": "dry-run", "handle": "r"})).await.0, 403);

        let scoped = key(&e, "spring-only", &[&format!("campaign:{cmp}")]).await;
        // Keys are read when the ring loads: serve again to pick it up.
        let cs = client(&serve(&e).await, Some(&scoped));
        let (_, mine) = cs.get("/posts").await;
        let texts: Vec<&str> = mine["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["parts"][0]["text"].as_str())
            .collect();
        assert_eq!(texts, ["spring is here"], "{backend:?}");
        assert_eq!(cs.get(&format!("/campaigns/{other}")).await.0, 404);
        assert_eq!(
            cs.post("/posts", json!({"account_id": acc, "campaign_id": other, "text": "sneaky"})).await.0,
            403
        );
        assert_eq!(cs.get("/webhooks").await.0, 403, "{backend:?}: a campaign's key sees no webhooks");
        c_products_hidden(&cs, &ca).await;
        let (s, v) = cs.post("/posts", json!({"account_id": acc, "campaign_id": cmp, "text": "spring, again"})).await;
        assert_eq!(s, 201, "{v}");
        let (_, seen_by_a) = ca.get(&format!("/posts?campaign_id={cmp}")).await;
        assert_eq!(
            seen_by_a["data"].as_array().map(Vec::len),
            Some(2),
            "the campaign's owner sees what the scoped key wrote"
        );
    }
}

/// Pages of a listing follow each other without gaps or repeats.
#[tokio::test]
async fn listings_page_with_cursors() {
    for backend in BOTH {
        let e = env(backend).await;
        let c = client(&serve(&e).await, None);
        let (_, acc) = c.post("/accounts", json!({"platform": "dry-run", "handle": "shop"})).await;
        let mut made = Vec::new();
        for i in 0..7 {
            let (_, p) = c.post("/posts", json!({"account_id": acc["id"], "text": format!("draft {i}")})).await;
            made.push(p["id"].as_str().expect("id").to_owned());
        }
        let mut seen = Vec::new();
        let mut path = "/posts?limit=3&state=draft".to_owned();
        loop {
            let (s, page) = c.get(&path).await;
            assert_eq!(s, 200, "{page}");
            seen.extend(
                page["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["id"].as_str().map(str::to_owned)),
            );
            match page["next_cursor"].as_str() {
                Some(cur) => path = format!("/posts?limit=3&state=draft&cursor={cur}"),
                None => break,
            }
        }
        let unique: std::collections::BTreeSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "no post twice: {seen:?}");
        made.sort();
        seen.sort();
        assert_eq!(seen, made, "{backend:?}: every post once");
    }
}

/// Posts scheduled into a campaign's next free slots take distinct slots
/// at their local time; a draft is approved then scheduled; the events
/// say so.
#[tokio::test]
async fn posts_take_the_next_free_slots() {
    for backend in BOTH {
        let e = env(backend).await;
        let c = client(&serve(&e).await, None);
        let (_, acc) = c
            .post("/accounts", json!({"platform": "dry-run", "handle": "shop", "time_zone": "America/New_York"}))
            .await;
        let slots = json!({"mon": ["09:00"], "tue": ["09:00"], "wed": ["09:00"], "thu": ["09:00"], "fri": ["09:00"], "sat": ["09:00"], "sun": ["09:00"]});
        let (s, cmp) = c.post("/campaigns", json!({"account_id": acc["id"], "name": "daily", "slots": slots})).await;
        assert_eq!(s, 201, "{cmp}");
        let mut times = Vec::new();
        for i in 0..3 {
            let (s, p) = c
                .post(
                    "/posts",
                    json!({"account_id": acc["id"], "campaign_id": cmp["id"], "text": format!("slot {i}"), "next_slot": true}),
                )
                .await;
            assert_eq!((s, p["state"].as_str()), (201, Some("scheduled")), "{p}");
            times.push(p["scheduled_ms"].as_i64().expect("time"));
        }
        let tz = posting::schedule::zone("America/New_York").expect("zone");
        for w in times.windows(2) {
            assert!(w[0] < w[1], "{times:?}");
        }
        for t in &times {
            let local = jiff::Timestamp::from_millisecond(*t).expect("instant").to_zoned(tz.clone());
            assert_eq!((local.hour(), local.minute()), (9, 0), "09:00 in New York whatever the offset: {local}");
        }
        let (_, draft) = c.post("/posts", json!({"account_id": acc["id"], "text": "later"})).await;
        let id = draft["id"].as_str().expect("id");
        assert_eq!(draft["state"], "draft");
        assert_eq!(
            c.post(&format!("/posts/{id}/schedule"), json!({"scheduled_at": "2030-01-01T10:00"})).await.0,
            409,
            "not approved yet"
        );
        assert_eq!(c.post(&format!("/posts/{id}/approve"), json!({})).await.0, 200);
        let (s, p) = c.post(&format!("/posts/{id}/schedule"), json!({"scheduled_at": "2030-01-01T10:00"})).await;
        assert_eq!((s, p["scheduled_ms"].as_i64()), (200, Some(1_893_510_000_000)), "{p}");
        let (_, full) = c.get(&format!("/posts/{id}")).await;
        let states: Vec<&str> = full["events"].as_array().into_iter().flatten().filter_map(|ev| ev["to"].as_str()).collect();
        assert_eq!(states, ["draft", "approved", "scheduled"], "{backend:?}");
    }
}

/// The OpenAPI document is generated from the handlers, names every
/// route, and is a valid OpenAPI 3.1 document to an independent validator
/// (openapi-spec-validator, in the test venv).
#[tokio::test]
async fn the_openapi_document_validates() {
    let e = env(Backend::Sqlite).await;
    let c = client(&serve(&e).await, None);
    let (s, doc) = c.get("/openapi.json").await;
    assert_eq!(s, 200, "{doc}");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    let paths: Vec<&String> = doc["paths"].as_object().expect("paths").keys().collect();
    for route in [
        "/api/v1/accounts",
        "/api/v1/campaigns/{id}/fill",
        "/api/v1/posts/{id}/{action}",
        "/api/v1/products/import",
        "/api/v1/analytics",
        "/r/{code}",
    ] {
        assert!(paths.iter().any(|p| *p == route), "{route} missing from {paths:?}");
    }
    let file = std::env::temp_dir().join(format!("starling-openapi-{}.json", std::process::id()));
    std::fs::write(&file, doc.to_string()).expect("write");
    let out = std::process::Command::new(test_support::test_python())
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Media: a file of a type both platforms take is kept and can be listed
/// by a post; anything else is refused naming what.
#[tokio::test]
async fn media_are_kept_and_checked() {
    let e = env(Backend::Sqlite).await;
    let c = client(&serve(&e).await, None);
    let (s, media) = c.post_raw("/media", "image/png", "not really a png, but bytes").await;
    assert_eq!(s, 201, "{media}");
    let (s, err) = c.post_raw("/media", "application/pdf", "%PDF").await;
    assert_eq!((s, err["error"]["field"].as_str()), (400, Some("content-type")));
    let (_, acc) = c.post("/accounts", json!({"platform": "dry-run", "handle": "shop"})).await;
    let (s, post) = c.post("/posts", json!({"account_id": acc["id"], "parts": [{"text": "look", "media": [media["id"]]}]})).await;
    assert_eq!(s, 201, "{post}");
    let (s, err) = c.post("/posts", json!({"account_id": acc["id"], "parts": [{"text": "look", "media": ["med_nope"]}]})).await;
    assert_eq!((s, err["error"]["field"].as_str()), (400, Some("parts[0].media")), "{err}");
}

/// A campaign's key sees only its campaign's products, never the rest of
/// its owner's catalogue.
async fn c_products_hidden(scoped: &Client, owner: &Client) {
    owner.post_raw("/products/import", "text/csv", "sku,name,url\nSECRET-1,Unlaunched,https://acme.shop/next\n").await;
    let (_, all) = owner.get("/products").await;
    assert_eq!(all["data"].as_array().map(Vec::len), Some(1), "{all}");
    let (s, seen) = scoped.get("/products").await;
    assert_eq!((s, seen["data"].as_array().map(Vec::len)), (200, Some(0)), "{seen}");
}
