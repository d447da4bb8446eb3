//! X's API v2 as a loopback server, for the posting tests: the endpoints
//! the posting service calls, in their documented shapes (`201` with
//! `{"data": {"id", "text", "edit_history_tweet_ids"}}`; errors as
//! `application/problem+json` with `title`, `detail`, `type`, `status`;
//! `403` for duplicate content; `429` with `x-rate-limit-*` headers;
//! `x-user-limit-24hour-*` on every create; URLs in a post's text
//! rewritten to `t.co` links, as X shows them).
//!
//! It counts every post it created by its original text, so a test can
//! tell a lost post from one sent twice, and it takes faults on request
//! for the next calls: 503 before creating, 500 or a hang after creating
//! (the post exists, the caller cannot know), 429, 401, a suspension.

// Handlers answer errors as whole responses, as axum's handlers do.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use sha2::Digest as _;
use serde_json::{json, Value};

/// What the next `POST /2/tweets` does instead of answering 201.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 503 Service Unavailable; nothing created.
    Unavailable,
    /// Creates the post, then answers 500.
    ServerErrorAfterCreate,
    /// Creates the post, then never answers (the caller times out).
    HangAfterCreate,
    /// 429 with `x-rate-limit-remaining: 0` and a reset this many seconds ahead.
    RateLimited {
        /// Seconds to the reset.
        reset_in_secs: u64,
    },
    /// 401.
    Unauthorized,
    /// 403: the account is suspended.
    Suspended,
}

/// A post the fake holds.
#[derive(Debug, Clone, PartialEq)]
pub struct FakePost {
    /// Its id.
    pub id: String,
    /// The author's user id.
    pub author: String,
    /// The text as sent.
    pub text: String,
    /// The post it replies to.
    pub reply_to: Option<String>,
    /// The whole request body.
    pub body: Value,
    /// Its `Authorization` header's scheme and fields (never a secret: the fake's own tokens).
    pub authorization: String,
    /// Unix ms.
    pub created_ms: i64,
}

/// A media upload in progress or done.
#[derive(Debug, Clone, Default)]
struct Upload {
    total: usize,
    received: usize,
    segments: usize,
    video: bool,
    finalized: bool,
    /// Status polls left before a video is processed.
    polls_left: u8,
}

/// An authorisation code X gave and what it was given for.
struct Grant {
    user: (String, String),
    challenge: String,
    redirect_uri: String,
}

#[derive(Default)]
struct Inner {
    /// The app: client id and, for a confidential client, its secret.
    client: Option<(String, Option<String>)>,
    codes: HashMap<String, Grant>,
    /// Refresh token -> (user, used already).
    refresh: HashMap<String, ((String, String), bool)>,
    token_lifetime_secs: u64,
    /// Post id -> (impressions, likes, reposts, replies, url link clicks).
    metrics: HashMap<String, [i64; 5]>,
    lookups: u64,
    /// Media id -> upload.
    media: HashMap<String, Upload>,
    status_polls: u64,
    refreshes: u64,
    refresh_failures: u64,
    /// Access token -> (user id, username).
    users: HashMap<String, (String, String)>,
    posts: Vec<FakePost>,
    faults: VecDeque<Fault>,
    latency: Duration,
    next_id: u64,
    creates: u64,
}

/// The server; stops when dropped.
pub struct FakeX {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeX {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A problem+json answer, as X sends its errors.
fn problem(status: StatusCode, detail: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = json!({"title": title, "detail": detail, "type": "about:blank", "status": status.as_u16()});
    (status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response()
}

/// URLs as X shows them.
fn shortened(text: &str, id: u64) -> String {
    let mut n = 0;
    text.split(' ')
        .map(|w| {
            if w.starts_with("http://") || w.starts_with("https://") {
                n += 1;
                format!("https://t.co/f{id:x}x{n}")
            } else {
                w.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn rfc3339(ms: i64) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms.rem_euclid(1000))
}

type Shared = Arc<Mutex<Inner>>;

/// The token of a request: a bearer token, or an OAuth 1.0a header's
/// `oauth_token` when the header carries an HMAC-SHA1 signature (the fake
/// checks the header's shape and keys; the signature itself is checked
/// against X's published example in posting's unit tests).
fn presented(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.to_owned());
    }
    let fields: HashMap<&str, &str> = value
        .strip_prefix("OAuth ")?
        .split(", ")
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.trim_matches('"')))
        .collect();
    let signed = fields.get("oauth_signature_method") == Some(&"HMAC-SHA1")
        && fields.get("oauth_signature").is_some_and(|s| !s.is_empty())
        && fields.contains_key("oauth_consumer_key")
        && fields.contains_key("oauth_nonce")
        && fields.contains_key("oauth_timestamp");
    signed.then(|| fields.get("oauth_token").map(|t| (*t).to_owned())).flatten()
}

fn user(inner: &Shared, headers: &HeaderMap) -> Result<(String, String), Response> {
    let token = presented(headers);
    let token = token.as_deref();
    let found = token.and_then(|t| inner.lock().ok()?.users.get(t).cloned());
    found.ok_or_else(|| problem(StatusCode::UNAUTHORIZED, "Unauthorized"))
}

/// Under the lock: meet a fault or create the post. Ok: the fault to meet
/// after creating, the id, its number and the day's remaining creates.
fn created(guard: &mut Inner, author: String, text: String, body: Value, authorization: String) -> Result<(Option<Fault>, String, u64, u64), Response> {
    let fault = guard.faults.pop_front();
    match fault {
        Some(Fault::Unavailable) => return Err(problem(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")),
        Some(Fault::Unauthorized) => return Err(problem(StatusCode::UNAUTHORIZED, "Unauthorized")),
        Some(Fault::Suspended) => {
            return Err(problem(StatusCode::FORBIDDEN, "Your account is suspended and is not permitted to access this feature."))
        }
        Some(Fault::RateLimited { reset_in_secs }) => {
            let reset = (now_ms() / 1000 + reset_in_secs as i64).to_string();
            let mut r = problem(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            for (k, v) in [("x-rate-limit-limit", "100".to_owned()), ("x-rate-limit-remaining", "0".to_owned()), ("x-rate-limit-reset", reset)] {
                if let Ok(v) = v.parse() {
                    r.headers_mut().insert(k, v);
                }
            }
            return Err(r);
        }
        _ => {}
    }
    let ids: Vec<String> = body.pointer("/media/media_ids").and_then(Value::as_array).into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    if ids.iter().any(|id| guard.media.get(id).is_none_or(|u| !u.finalized || u.polls_left > 0)) {
        return Err(problem(StatusCode::BAD_REQUEST, "Your media IDs are invalid."));
    }
    if guard.posts.iter().any(|p| p.author == author && p.text == text) {
        return Err(problem(StatusCode::FORBIDDEN, "You are not allowed to create a Tweet with duplicate content."));
    }
    guard.next_id += 1;
    guard.creates += 1;
    let n = guard.next_id;
    let id = (1_900_000_000_000_000_000u64 + n).to_string();
    let reply_to = body.pointer("/reply/in_reply_to_tweet_id").and_then(Value::as_str).map(str::to_owned);
    guard.posts.push(FakePost { id: id.clone(), author, text, reply_to, body, authorization, created_ms: now_ms() });
    Ok((fault, id, n, 10_000u64.saturating_sub(guard.creates)))
}

async fn create(State(inner): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let (author, _) = match user(&inner, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return problem(StatusCode::BAD_REQUEST, "The request body is not valid JSON");
    };
    let Some(text) = body.get("text").and_then(Value::as_str).map(str::to_owned) else {
        return problem(StatusCode::BAD_REQUEST, "text: required");
    };
    // X takes a request it has received to the end even when the caller
    // goes away: the post is made in a task of its own.
    // An OAuth 1.0a header whole (no secret in it); a bearer token's scheme only.
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| if v.starts_with("OAuth ") { v.to_owned() } else { "Bearer".to_owned() })
        .unwrap_or_default();
    let making = {
        let inner = inner.clone();
        let text = text.clone();
        tokio::spawn(async move {
            let latency = inner.lock().map(|i| i.latency).unwrap_or_default();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let Ok(mut guard) = inner.lock() else { return Err(problem(StatusCode::INTERNAL_SERVER_ERROR, "poisoned")) };
            created(&mut guard, author, text, body, authorization)
        })
    };
    let (fault, id, n, remaining) = match making.await {
        Ok(Ok(c)) => c,
        Ok(Err(r)) => return r,
        Err(_) => return problem(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
    };
    match fault {
        Some(Fault::ServerErrorAfterCreate) => return problem(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        Some(Fault::HangAfterCreate) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        _ => {}
    }
    let shown = shortened(&text, n);
    let mut r = (StatusCode::CREATED, Json(json!({"data": {"id": id, "text": shown, "edit_history_tweet_ids": [id]}}))).into_response();
    let reset = (now_ms() / 1000 + 86_400).to_string();
    for (k, v) in [("x-user-limit-24hour-limit", "10000".to_owned()), ("x-user-limit-24hour-remaining", remaining.to_string()), ("x-user-limit-24hour-reset", reset)] {
        if let Ok(v) = v.parse() {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

/// `POST /2/media/upload/initialize`.
async fn media_init(State(inner): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Err(r) = user(&inner, &headers) {
        return r;
    }
    let (Some(total), Some(kind)) = (body["total_bytes"].as_u64(), body["media_type"].as_str()) else {
        return problem(StatusCode::BAD_REQUEST, "media_type and total_bytes are required");
    };
    let Ok(mut g) = inner.lock() else { return problem(StatusCode::INTERNAL_SERVER_ERROR, "poisoned") };
    g.next_id += 1;
    let id = format!("{}", 1_800_000_000_000_000_000u64 + g.next_id);
    let video = kind.starts_with("video/");
    g.media.insert(id.clone(), Upload { total: total as usize, video, polls_left: u8::from(video), ..Upload::default() });
    Json(json!({"data": {"id": id, "media_key": format!("3_{id}"), "expires_after_secs": 86400}})).into_response()
}

/// `POST /2/media/upload/{id}/append` (multipart: `segment_index`, `media`).
async fn media_append(State(inner): State<Shared>, headers: HeaderMap, Path(id): Path<String>, mut form: axum::extract::Multipart) -> Response {
    if let Err(r) = user(&inner, &headers) {
        return r;
    }
    let mut bytes = 0;
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some("media") {
            bytes += field.bytes().await.map(|b| b.len()).unwrap_or(0);
        }
    }
    let Ok(mut g) = inner.lock() else { return problem(StatusCode::INTERNAL_SERVER_ERROR, "poisoned") };
    let Some(u) = g.media.get_mut(&id) else { return problem(StatusCode::BAD_REQUEST, "media_id: unknown") };
    if bytes == 0 || bytes > 5 << 20 {
        return problem(StatusCode::BAD_REQUEST, "media: a segment of 1 byte to 5 MB");
    }
    u.received += bytes;
    u.segments += 1;
    Json(json!({"data": {"expires_at": now_ms() / 1000 + 86400}})).into_response()
}

/// `POST /2/media/upload/{id}/finalize`.
async fn media_finalize(State(inner): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = user(&inner, &headers) {
        return r;
    }
    let Ok(mut g) = inner.lock() else { return problem(StatusCode::INTERNAL_SERVER_ERROR, "poisoned") };
    let Some(u) = g.media.get_mut(&id) else { return problem(StatusCode::BAD_REQUEST, "media_id: unknown") };
    if u.received != u.total {
        return problem(StatusCode::BAD_REQUEST, "File size mismatch: the segments do not add up to total_bytes");
    }
    u.finalized = true;
    let mut data = json!({"id": id, "media_key": format!("3_{id}"), "size": u.total, "expires_after_secs": 86400});
    if u.video {
        data["processing_info"] = json!({"state": "pending", "check_after_secs": 1});
    }
    Json(json!({"data": data})).into_response()
}

/// `GET /2/media/upload?command=STATUS&media_id=...`.
async fn media_status(State(inner): State<Shared>, headers: HeaderMap, axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>) -> Response {
    if let Err(r) = user(&inner, &headers) {
        return r;
    }
    let Ok(mut g) = inner.lock() else { return problem(StatusCode::INTERNAL_SERVER_ERROR, "poisoned") };
    g.status_polls += 1;
    let id = q.get("media_id").cloned().unwrap_or_default();
    let Some(u) = g.media.get_mut(&id) else { return problem(StatusCode::BAD_REQUEST, "media_id: unknown") };
    u.polls_left = u.polls_left.saturating_sub(1);
    Json(json!({"data": {"id": id, "processing_info": {"state": "succeeded", "progress_percent": 100}}})).into_response()
}

/// `GET /2/tweets?ids=...&tweet.fields=public_metrics,non_public_metrics`.
async fn lookup(State(inner): State<Shared>, headers: HeaderMap, axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>) -> Response {
    let (user, _) = match user(&inner, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Ok(mut g) = inner.lock() else { return problem(StatusCode::INTERNAL_SERVER_ERROR, "poisoned") };
    g.lookups += 1;
    let ids: Vec<&str> = q.get("ids").map(|s| s.split(',').collect()).unwrap_or_default();
    if ids.is_empty() || ids.len() > 100 {
        return problem(StatusCode::BAD_REQUEST, "ids: between 1 and 100 ids");
    }
    let data: Vec<Value> = ids
        .iter()
        .filter_map(|id| g.posts.iter().find(|p| p.id == *id))
        .map(|p| {
            let [impressions, likes, reposts, replies, clicks] = g.metrics.get(&p.id).copied().unwrap_or_default();
            let mut v = json!({"id": p.id, "text": p.text, "edit_history_tweet_ids": [p.id],
                "public_metrics": {"retweet_count": reposts, "reply_count": replies, "like_count": likes, "quote_count": 0, "bookmark_count": 0, "impression_count": impressions}});
            // Non-public metrics only for the author's own posts.
            if p.author == user {
                v["non_public_metrics"] = json!({"impression_count": impressions, "url_link_clicks": clicks, "user_profile_clicks": 0});
            }
            v
        })
        .collect();
    Json(json!({"data": data})).into_response()
}

async fn me(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    match user(&inner, &headers) {
        Ok((id, username)) => Json(json!({"data": {"id": id, "name": username, "username": username}})).into_response(),
        Err(r) => r,
    }
}

async fn timeline(State(inner): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = user(&inner, &headers) {
        return r;
    }
    let Ok(g) = inner.lock() else { return problem(StatusCode::INTERNAL_SERVER_ERROR, "poisoned") };
    let mut mine: Vec<&FakePost> = g.posts.iter().filter(|p| p.author == id).collect();
    mine.reverse();
    mine.truncate(100);
    if mine.is_empty() {
        return Json(json!({"meta": {"result_count": 0}})).into_response();
    }
    let data: Vec<Value> = mine
        .iter()
        .map(|p| {
            let n: u64 = p.id.parse::<u64>().map(|i| i - 1_900_000_000_000_000_000).unwrap_or(0);
            json!({"id": p.id, "text": shortened(&p.text, n), "created_at": rfc3339(p.created_ms), "edit_history_tweet_ids": [p.id]})
        })
        .collect();
    let meta = json!({"result_count": data.len(), "newest_id": mine[0].id, "oldest_id": mine[mine.len() - 1].id});
    Json(json!({"data": data, "meta": meta})).into_response()
}

/// OAuth 2.0's error answer (RFC 6749 section 5.2), as X sends it.
fn oauth_error(error: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": error, "error_description": "Value passed for the token was invalid."}))).into_response()
}

fn issue(i: &mut Inner, user: (String, String)) -> Response {
    i.next_id += 1;
    let access = format!("at-{}-{}", user.0, i.next_id);
    let refresh = format!("rt-{}-{}", user.0, i.next_id);
    i.users.insert(access.clone(), user.clone());
    i.refresh.insert(refresh.clone(), (user, false));
    let lifetime = if i.token_lifetime_secs == 0 { 7200 } else { i.token_lifetime_secs };
    Json(json!({"token_type": "bearer", "expires_in": lifetime, "access_token": access, "scope": "tweet.read tweet.write users.read offline.access", "refresh_token": refresh}))
        .into_response()
}

/// `POST /2/oauth2/token`: the code (with its PKCE verifier) or a refresh
/// token for tokens; a refresh token works once (X rotates them).
async fn token(State(inner): State<Shared>, headers: HeaderMap, axum::Form(form): axum::Form<HashMap<String, String>>) -> Response {
    use base64::Engine as _;
    let Ok(mut i) = inner.lock() else { return oauth_error("server_error") };
    let Some((client_id, secret)) = i.client.clone() else { return oauth_error("unauthorized_client") };
    // A confidential client authenticates with Basic; a public one names itself.
    let basic = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic "));
    let authenticated = match (&secret, basic) {
        (Some(s), Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).ok() == Some(format!("{client_id}:{s}").into_bytes()),
        (None, _) => form.get("client_id") == Some(&client_id),
        (Some(_), None) => false,
    };
    if !authenticated {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client"}))).into_response();
    }
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some(grant) = form.get("code").and_then(|c| i.codes.remove(c)) else { return oauth_error("invalid_grant") };
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
            if challenge != grant.challenge || form.get("redirect_uri") != Some(&grant.redirect_uri) {
                return oauth_error("invalid_grant");
            }
            issue(&mut i, grant.user)
        }
        Some("refresh_token") => {
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            match i.refresh.get_mut(&presented) {
                Some((user, used)) if !*used => {
                    *used = true;
                    let user = user.clone();
                    i.refreshes += 1;
                    issue(&mut i, user)
                }
                _ => {
                    i.refresh_failures += 1;
                    oauth_error("invalid_request")
                }
            }
        }
        _ => oauth_error("unsupported_grant_type"),
    }
}

impl FakeX {
    /// Start it on a free loopback port.
    pub async fn start() -> Self {
        let inner: Shared = Arc::default();
        let app = axum::Router::new()
            .route("/2/oauth2/token", post(token))
            .route("/2/tweets", post(create).get(lookup))
            .route("/2/users/me", get(me))
            .route("/2/media/upload/initialize", post(media_init))
            .route("/2/media/upload/{id}/append", post(media_append).layer(axum::extract::DefaultBodyLimit::max(6 << 20)))
            .route("/2/media/upload/{id}/finalize", post(media_finalize))
            .route("/2/media/upload", get(media_status))
            .route("/2/users/{id}/tweets", get(timeline))
            .with_state(inner.clone());
        let (addr, task) = crate::serve_loopback(app).await;
        Self { addr, inner, task }
    }

    /// Its base URL (`[posting.x] api_base`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = self.inner.lock().expect("fake X state");
        f(&mut g)
    }

    /// Accept `token` as user `id` (`username`).
    pub fn add_user(&self, token: &str, id: &str, username: &str) {
        self.with(|i| i.users.insert(token.to_owned(), (id.to_owned(), username.to_owned())));
    }

    /// Stop accepting `token` (401 from now on).
    pub fn revoke(&self, token: &str) {
        self.with(|i| i.users.remove(token));
    }

    /// The next creates meet these faults, in order.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.with(|i| i.faults.extend(faults));
    }

    /// The app X knows: its client id and (confidential) secret.
    pub fn set_client(&self, client_id: &str, secret: Option<&str>) {
        self.with(|i| i.client = Some((client_id.to_owned(), secret.map(str::to_owned))));
    }

    /// Access tokens live this long from now on.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.with(|i| i.token_lifetime_secs = secs);
    }

    /// A person signs in as `user_id` (`username`) at `authorize_url` and
    /// approves the app: the URL X sends them back to (with `code` and
    /// `state`), or why X would refuse.
    pub fn approve(&self, authorize_url: &str, user_id: &str, username: &str) -> Result<String, String> {
        let uri: axum::http::Uri = authorize_url.parse().map_err(|e| format!("{e}"))?;
        let q = axum::extract::Query::<HashMap<String, String>>::try_from_uri(&uri).map_err(|e| e.body_text())?.0;
        let need = |k: &str| q.get(k).cloned().ok_or_else(|| format!("the authorize URL lacks {k}"));
        let (client_id, redirect_uri, state, challenge) = (need("client_id")?, need("redirect_uri")?, need("state")?, need("code_challenge")?);
        if need("response_type")? != "code" || need("code_challenge_method")? != "S256" {
            return Err("X wants response_type=code and PKCE with S256".into());
        }
        if !need("scope")?.split(' ').any(|s| s == "offline.access") {
            return Err("without offline.access there is no refresh token".into());
        }
        self.with(|i| {
            if i.client.as_ref().map(|c| &c.0) != Some(&client_id) {
                return Err(format!("unknown client {client_id}"));
            }
            i.next_id += 1;
            let code = format!("code-{}", i.next_id);
            let grant = Grant { user: (user_id.to_owned(), username.to_owned()), challenge, redirect_uri: redirect_uri.clone() };
            i.codes.insert(code.clone(), grant);
            Ok(format!("{redirect_uri}?state={state}&code={code}"))
        })
    }

    /// Refreshes that got new tokens, and those refused (a refresh token
    /// used twice, or unknown).
    pub fn refreshes(&self) -> (u64, u64) {
        self.with(|i| (i.refreshes, i.refresh_failures))
    }

    /// Every refresh token stops working (revoked by the person).
    pub fn revoke_refresh_tokens(&self) {
        self.with(|i| i.refresh.values_mut().for_each(|(_, used)| *used = true));
    }

    /// What X counts for post `id`: impressions, likes, reposts, replies, link clicks.
    pub fn set_metrics(&self, id: &str, counts: [i64; 5]) {
        self.with(|i| i.metrics.insert(id.to_owned(), counts));
    }

    /// Media uploads: (files initialised, segments appended, status polls).
    pub fn uploads(&self) -> (usize, usize, u64) {
        self.with(|i| (i.media.len(), i.media.values().map(|u| u.segments).sum(), i.status_polls))
    }

    /// Post lookups served (metric reads).
    pub fn lookups(&self) -> u64 {
        self.with(|i| i.lookups)
    }

    /// Every create waits this long before it is handled.
    pub fn set_latency(&self, latency: Duration) {
        self.with(|i| i.latency = latency);
    }

    /// A post `author` made elsewhere (another app, by hand).
    pub fn add_post(&self, author: &str, text: &str) {
        self.with(|i| {
            i.next_id += 1;
            let id = (1_900_000_000_000_000_000u64 + i.next_id).to_string();
            i.posts.push(FakePost { id, author: author.to_owned(), text: text.to_owned(), reply_to: None, body: json!({"text": text}), authorization: String::new(), created_ms: now_ms() });
        });
    }

    /// Every post created, in order.
    pub fn posts(&self) -> Vec<FakePost> {
        self.with(|i| i.posts.clone())
    }

    /// How many posts with exactly this text exist.
    pub fn count(&self, text: &str) -> usize {
        self.with(|i| i.posts.iter().filter(|p| p.text == text).count())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(1_772_323_200_123), "2026-03-01T00:00:00.123Z");
    }
}
