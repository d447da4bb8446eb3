//! A Mastodon instance as a loopback server, for the posting tests:
//! `POST /api/v1/statuses` with its documented `Idempotency-Key` (the same
//! key from the same account within the hour answers the status already
//! made instead of making another), `verify_credentials`, an account's
//! statuses (content as HTML, as Mastodon renders it), errors as
//! `{"error": "..."}`, and faults on request.

// Handlers answer errors as whole responses, as axum's handlers do.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};

pub use crate::fake_x::Fault;

#[derive(Default)]
struct Inner {
    /// Token -> (account id, acct).
    users: HashMap<String, (String, String)>,
    /// (account id, id, text, reply to).
    statuses: Vec<(String, String, String, Option<String>)>,
    /// (account id, idempotency key) -> status id.
    keys: HashMap<(String, String), String>,
    faults: std::collections::VecDeque<Fault>,
    next: u64,
    /// Media id -> (account id, polls left before processed).
    media: HashMap<String, (String, u8)>,
}

type Shared = Arc<Mutex<Inner>>;

/// The server; stops when dropped.
pub struct FakeMastodon {
    addr: SocketAddr,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeMastodon {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

fn account(inner: &Shared, headers: &HeaderMap) -> Result<(String, String), Response> {
    let token = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    token.and_then(|t| inner.lock().ok()?.users.get(t).cloned()).ok_or_else(|| error(StatusCode::UNAUTHORIZED, "The access token is invalid"))
}

fn status_json(id: &str, text: &str, reply: Option<&String>) -> Value {
    let html = format!("<p>{}</p>", text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"));
    json!({"id": id, "created_at": "2026-12-06T12:00:00.000Z", "content": html, "in_reply_to_id": reply, "visibility": "public"})
}

async fn create(State(inner): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let (acct_id, _) = match account(&inner, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(text) = body["status"].as_str().map(str::to_owned) else { return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation failed: Text can't be blank") };
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let Ok(mut g) = inner.lock() else { return error(StatusCode::INTERNAL_SERVER_ERROR, "poisoned") };
    if let Some(k) = &key {
        if let Some(id) = g.keys.get(&(acct_id.clone(), k.clone())).cloned() {
            let (_, _, t, r) = g.statuses.iter().find(|s| s.1 == id).cloned().unwrap_or_default();
            return Json(status_json(&id, &t, r.as_ref())).into_response();
        }
    }
    let unknown_media = body["media_ids"].as_array().into_iter().flatten().any(|m| m.as_str().is_none_or(|id| g.media.get(id).is_none_or(|(owner, left)| *owner != acct_id || *left > 0)));
    if unknown_media {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation failed: media_ids are invalid");
    }
    let fault = g.faults.pop_front();
    if fault == Some(Fault::Unavailable) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    if text.chars().count() > 500 && !text.contains("http") {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation failed: Text character limit of 500 exceeded");
    }
    g.next += 1;
    let id = format!("1100{}", g.next);
    let reply = body["in_reply_to_id"].as_str().map(str::to_owned);
    g.statuses.push((acct_id.clone(), id.clone(), text.clone(), reply.clone()));
    if let Some(k) = key {
        g.keys.insert((acct_id, k), id.clone());
    }
    if fault == Some(Fault::ServerErrorAfterCreate) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    }
    Json(status_json(&id, &text, reply.as_ref())).into_response()
}

/// `POST /api/v2/media` (multipart `file`): 200 for images, 202 for video
/// (processed after one `GET /api/v1/media/{id}` that answers 206).
async fn upload(State(inner): State<Shared>, headers: HeaderMap, mut form: axum::extract::Multipart) -> Response {
    let (acct, _) = match account(&inner, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut kind = None;
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some("file") {
            kind = field.content_type().map(str::to_owned);
            let _ = field.bytes().await;
        }
    }
    let Some(kind) = kind else { return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation failed: File can't be blank") };
    let Ok(mut g) = inner.lock() else { return error(StatusCode::INTERNAL_SERVER_ERROR, "poisoned") };
    g.next += 1;
    let id = format!("2200{}", g.next);
    let video = kind.starts_with("video/");
    g.media.insert(id.clone(), (acct, u8::from(video)));
    let status = if video { StatusCode::ACCEPTED } else { StatusCode::OK };
    (status, Json(json!({"id": id, "type": if video { "video" } else { "image" }, "url": if video { Value::Null } else { json!("https://files.example/x") }}))).into_response()
}

/// `GET /api/v1/media/{id}`: 206 while processing, then 200.
async fn media_status(State(inner): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = account(&inner, &headers) {
        return r;
    }
    let Ok(mut g) = inner.lock() else { return error(StatusCode::INTERNAL_SERVER_ERROR, "poisoned") };
    let Some(m) = g.media.get_mut(&id) else { return error(StatusCode::NOT_FOUND, "Record not found") };
    let status = if m.1 > 0 {
        m.1 -= 1;
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    (status, Json(json!({"id": id}))).into_response()
}

async fn verify(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    match account(&inner, &headers) {
        Ok((id, acct)) => Json(json!({"id": id, "username": acct, "acct": acct})).into_response(),
        Err(r) => r,
    }
}

async fn statuses(State(inner): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = account(&inner, &headers) {
        return r;
    }
    let Ok(g) = inner.lock() else { return error(StatusCode::INTERNAL_SERVER_ERROR, "poisoned") };
    let list: Vec<Value> = g.statuses.iter().rev().filter(|s| s.0 == id).take(40).map(|s| status_json(&s.1, &s.2, s.3.as_ref())).collect();
    Json(list).into_response()
}

impl FakeMastodon {
    /// Start it on a free loopback port.
    pub async fn start() -> Self {
        let inner: Shared = Arc::default();
        let app = axum::Router::new()
            .route("/api/v1/statuses", post(create))
            .route("/api/v2/media", post(upload).layer(axum::extract::DefaultBodyLimit::max(20 << 20)))
            .route("/api/v1/media/{id}", get(media_status))
            .route("/api/v1/accounts/verify_credentials", get(verify))
            .route("/api/v1/accounts/{id}/statuses", get(statuses))
            .with_state(inner.clone());
        let (addr, task) = crate::serve_loopback(app).await;
        Self { addr, inner, task }
    }

    /// The instance's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Accept `token` as account `id` (`acct`).
    pub fn add_user(&self, token: &str, id: &str, acct: &str) {
        if let Ok(mut g) = self.inner.lock() {
            g.users.insert(token.to_owned(), (id.to_owned(), acct.to_owned()));
        }
    }

    /// The next creates meet these faults, in order (replays under a known key never do).
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        if let Ok(mut g) = self.inner.lock() {
            g.faults.extend(faults);
        }
    }

    /// Media uploaded.
    pub fn media_count(&self) -> usize {
        self.inner.lock().map(|g| g.media.len()).unwrap_or(0)
    }

    /// Statuses with exactly this text.
    pub fn count(&self, text: &str) -> usize {
        self.inner.lock().map(|g| g.statuses.iter().filter(|s| s.2 == text).count()).unwrap_or(0)
    }

    /// Every status: (id, text, reply to).
    pub fn statuses(&self) -> Vec<(String, String, Option<String>)> {
        self.inner.lock().map(|g| g.statuses.iter().map(|s| (s.1.clone(), s.2.clone(), s.3.clone())).collect()).unwrap_or_default()
    }
}
