//! X's API v2: a small client for what the dispatcher needs: `POST
//! /2/tweets` (text, reply for threads, media ids, the paid-partnership and
//! made-with-AI labels), `GET /2/users/me` and the account's recent posts
//! (`GET /2/users/{id}/tweets`) to reconcile posts whose outcome is unknown.
//!
//! Answers are sorted as [`PublishError`] says: 429 waits for the reset
//! its headers give (`x-rate-limit-reset`, or `x-user-limit-24hour-reset`
//! when the day's allowance is spent), 503 is retried later, 401 asks for
//! authorisation again, 403 duplicate content is final, and a timeout or
//! any other 5xx after the request went out is unknown. Errors come as
//! `application/problem+json` (`title`, `detail`, `type`, `status`).
//!
//! Credentials: `{"access_token": "..."}`, an OAuth 2.0 user-context
//! token; or OAuth 1.0a's `{"consumer_key", "consumer_secret",
//! "access_token", "access_token_secret"}`, and every request is signed
//! (`oauth1.rs`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Ctx, Me, Metrics, Outgoing, Platform, PublishError, Published, Remote};
use crate::model::now_ms;

/// `[posting.x]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XConfig {
    /// The API's base URL.
    pub api_base: String,
    /// A call's whole time, seconds; past it the outcome is unknown.
    pub timeout_secs: u64,
    /// Time to connect, seconds; past it nothing was sent.
    pub connect_timeout_secs: u64,
    /// The app's OAuth 2.0 client id (empty: sign-in with X is off;
    /// accounts can still be given an access token).
    pub client_id: String,
    /// The app's client secret (a confidential client), from env
    /// `STARLING_X_CLIENT_SECRET`, never from the file.
    #[serde(skip)]
    pub client_secret: Option<crate::secrets::Hidden>,
    /// Where X asks the person to authorise the app.
    pub authorize_url: String,
    /// Where X sends the person back (empty: the server's public URL +
    /// `/api/v1/oauth/x/callback`); registered with the app on X.
    pub redirect_url: String,
    /// What the app asks for (`offline.access` for refresh tokens).
    pub scopes: Vec<String>,
}

impl Default for XConfig {
    fn default() -> Self {
        Self {
            api_base: "https://api.x.com".into(),
            timeout_secs: 30,
            connect_timeout_secs: 10,
            client_id: String::new(),
            client_secret: None,
            authorize_url: "https://x.com/i/oauth2/authorize".into(),
            redirect_url: String::new(),
            scopes: ["tweet.read", "tweet.write", "users.read", "offline.access", "media.write"].map(String::from).to_vec(),
        }
    }
}

/// How a request to X is authorised.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// OAuth 2.0 user context: `Authorization: Bearer`.
    Bearer(&'a str),
    /// OAuth 1.0a user context: a signed `Authorization: OAuth` header.
    OAuth1(super::oauth1::Keys<'a>),
}

impl Auth<'_> {
    /// `req` (a `method` on `url`, with `query`, which the caller adds to
    /// it too) authorised.
    pub fn sign(&self, req: reqwest::RequestBuilder, method: &str, url: &str, query: &[(&str, &str)]) -> reqwest::RequestBuilder {
        match self {
            Self::Bearer(token) => req.bearer_auth(token),
            Self::OAuth1(keys) => req.header(reqwest::header::AUTHORIZATION, super::oauth1::header(keys, method, url, query)),
        }
    }
}

/// The X client.
#[derive(Debug, Clone)]
pub struct X {
    http: reqwest::Client,
    base: String,
}

/// rustls with ring and the platform's roots, without a process-wide
/// crypto provider.
fn tls() -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| e.to_string())?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous() // Not dangerous: the platform's own verifier.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The HTTP client of `config`'s timeouts.
fn http_client(config: &XConfig) -> Result<reqwest::Client, String> {
    client_with_timeouts(Duration::from_secs(config.timeout_secs), Duration::from_secs(config.connect_timeout_secs))
}

/// An HTTP client (rustls with the platform's roots) that follows no
/// redirect: a platform's API, token endpoint or a webhook receiver that
/// redirects is answered as it is.
pub fn client_with_timeouts(timeout: Duration, connect: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls()?)
        .timeout(timeout)
        .connect_timeout(connect)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

impl X {
    /// A client for `config`.
    pub fn new(config: &XConfig) -> Result<Self, String> {
        Ok(Self { http: http_client(config)?, base: config.api_base.trim_end_matches('/').to_owned() })
    }

    /// The OAuth 2.0 flow of `config`'s app, answering at `public_url`'s
    /// callback unless `redirect_url` says otherwise (None: no client id).
    pub fn oauth(config: &XConfig, public_url: &str) -> Result<Option<super::x_oauth::XOAuth>, String> {
        if config.client_id.is_empty() {
            return Ok(None);
        }
        let redirect = if config.redirect_url.is_empty() {
            format!("{}/api/v1/oauth/x/callback", public_url.trim_end_matches('/'))
        } else {
            config.redirect_url.clone()
        };
        super::x_oauth::XOAuth::new(http_client(config)?, config, &redirect).map(Some)
    }

    /// Who `auth` belongs to (`/2/users/me`).
    pub async fn user(&self, auth: &Auth<'_>) -> Result<Me, PublishError> {
        let url = format!("{}/2/users/me", self.base);
        let res = self.send(auth.sign(self.http.get(&url), "GET", &url, &[])).await?;
        if !res.status().is_success() {
            return Err(failure(res).await);
        }
        let me: Data<User> = res.json().await.map_err(|e| PublishError::Unknown(format!("/2/users/me: {e}")))?;
        Ok(Me { id: me.data.id, handle: me.data.username })
    }

    /// How the account's requests are authorised: OAuth 1.0a where its
    /// credentials carry the four keys, else its OAuth 2.0 bearer token.
    fn auth<'a>(ctx: &Ctx<'a>) -> Result<Auth<'a>, PublishError> {
        let field = |k: &str| ctx.credentials.and_then(|c| c.get(k)).and_then(Value::as_str);
        if let (Some(consumer_key), Some(consumer_secret), Some(token), Some(token_secret)) =
            (field("consumer_key"), field("consumer_secret"), field("access_token"), field("access_token_secret"))
        {
            return Ok(Auth::OAuth1(super::oauth1::Keys { consumer_key, consumer_secret, token, token_secret }));
        }
        field("access_token").map(Auth::Bearer).ok_or_else(|| PublishError::Unauthorized("the account has no access token".into()))
    }

    pub(super) async fn send(&self, req: reqwest::RequestBuilder) -> Result<Response, PublishError> {
        super::send(req).await
    }

    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(super) fn base(&self) -> &str {
        &self.base
    }

    /// A success's JSON body as `T`, or the failure sorted.
    pub(super) async fn read<T: serde::de::DeserializeOwned>(&self, res: Result<Response, PublishError>) -> Result<T, PublishError> {
        let res = res?;
        if !res.status().is_success() {
            return Err(failure(res).await);
        }
        res.json().await.map_err(|e| PublishError::Unknown(format!("an answer that did not read: {e}")))
    }
}

/// A header as an integer.
fn header_i64(h: &HeaderMap, name: &str) -> Option<i64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// When the account may call again, if its headers say it may not now:
/// the day's allowance first (it is the longer wait), then the window's.
fn exhausted_until(h: &HeaderMap) -> Option<i64> {
    let secs = if header_i64(h, "x-user-limit-24hour-remaining") == Some(0) {
        header_i64(h, "x-user-limit-24hour-reset")
    } else if header_i64(h, "x-rate-limit-remaining") == Some(0) {
        header_i64(h, "x-rate-limit-reset")
    } else {
        None
    }?;
    Some(secs.saturating_mul(1000))
}

/// What an error answer says (problem+json's `detail`, else `title`, else the body).
fn problem(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    field("detail").or_else(|| field("title")).unwrap_or_else(|| body.chars().take(300).collect())
}

/// Sort an answer that is not a success.
pub(super) async fn failure(res: Response) -> PublishError {
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.text().await.unwrap_or_default();
    let said = format!("{} {}", status.as_u16(), problem(&body));
    match status {
        StatusCode::TOO_MANY_REQUESTS => PublishError::RateLimited {
            // No reset header: a quarter of an hour, X's rate window.
            until_ms: exhausted_until(&headers).or_else(|| header_i64(&headers, "x-rate-limit-reset").map(|s| s * 1000)).unwrap_or(now_ms() + 15 * 60_000),
            reason: said,
        },
        StatusCode::SERVICE_UNAVAILABLE => PublishError::Unavailable(said),
        StatusCode::UNAUTHORIZED => PublishError::Unauthorized(said),
        StatusCode::FORBIDDEN if said.to_lowercase().contains("suspended") => PublishError::Suspended(said),
        s if s.is_server_error() => PublishError::Unknown(said),
        _ => PublishError::Rejected(said),
    }
}

#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct Counted {
    id: String,
    #[serde(default)]
    public_metrics: PublicMetrics,
    #[serde(default)]
    non_public_metrics: Option<NonPublicMetrics>,
}

#[derive(Deserialize, Default)]
struct PublicMetrics {
    #[serde(default)]
    retweet_count: i64,
    #[serde(default)]
    reply_count: i64,
    #[serde(default)]
    like_count: i64,
    #[serde(default)]
    quote_count: i64,
    #[serde(default)]
    bookmark_count: i64,
    #[serde(default)]
    impression_count: i64,
}

#[derive(Deserialize)]
struct NonPublicMetrics {
    #[serde(default)]
    impression_count: Option<i64>,
    #[serde(default)]
    url_link_clicks: Option<i64>,
}

#[derive(Deserialize)]
struct Lookup {
    #[serde(default)]
    data: Vec<Counted>,
}

#[derive(Deserialize)]
struct User {
    id: String,
    username: String,
}

#[derive(Deserialize)]
struct Timeline {
    #[serde(default)]
    data: Vec<TimelinePost>,
}

#[derive(Deserialize)]
struct TimelinePost {
    id: String,
    text: String,
    created_at: Option<String>,
    /// A post over 280 is cut in `text`; the whole is here.
    #[serde(default)]
    note_tweet: Option<NoteTweet>,
}

#[derive(Deserialize)]
struct NoteTweet {
    text: String,
}

impl Platform for X {
    fn name(&self) -> &'static str {
        "x"
    }

    fn rules(&self) -> post_rules::Platform {
        post_rules::Platform::X
    }

    fn needs_credentials(&self) -> bool {
        true
    }

    fn publish<'a>(&'a self, ctx: Ctx<'a>, post: Outgoing<'a>) -> BoxFuture<'a, Result<Published, PublishError>> {
        async move {
            let auth = Self::auth(&ctx)?;
            let mut body = json!({ "text": post.text });
            if let Some(parent) = post.reply_to {
                body["reply"] = json!({ "in_reply_to_tweet_id": parent });
            }
            if !post.media.is_empty() {
                body["media"] = json!({ "media_ids": post.media });
            }
            if post.paid_partnership {
                body["paid_partnership"] = json!(true);
            }
            if post.made_with_ai {
                body["made_with_ai"] = json!(true);
            }
            let url = format!("{}/2/tweets", self.base);
            let res = self.send(auth.sign(self.http.post(&url), "POST", &url, &[]).json(&body)).await?;
            if res.status() != StatusCode::CREATED && res.status() != StatusCode::OK {
                return Err(failure(res).await);
            }
            let pause_until_ms = exhausted_until(res.headers());
            // Created, but an answer we cannot read: it is there, id unknown.
            let created: Data<Created> =
                res.json().await.map_err(|e| PublishError::Unknown(format!("created, but the answer did not read: {e}")))?;
            Ok(Published { id: created.data.id, pause_until_ms })
        }
        .boxed()
    }

    fn me<'a>(&'a self, ctx: Ctx<'a>) -> BoxFuture<'a, Result<Me, PublishError>> {
        async move { self.user(&Self::auth(&ctx)?).await }.boxed()
    }

    fn upload<'a>(&'a self, ctx: Ctx<'a>, content_type: &'a str, bytes: &'a [u8]) -> BoxFuture<'a, Result<(String, Option<i64>), PublishError>> {
        async move { self.upload_media(&Self::auth(&ctx)?, content_type, bytes).await }.boxed()
    }

    fn metrics<'a>(&'a self, ctx: Ctx<'a>, ids: &'a [String]) -> BoxFuture<'a, Result<Vec<(String, Metrics)>, PublishError>> {
        async move {
            let auth = Self::auth(&ctx)?;
            let ids = ids.join(",");
            let query = [("ids", ids.as_str()), ("tweet.fields", "public_metrics,non_public_metrics")];
            let url = format!("{}/2/tweets", self.base);
            let res = self.send(auth.sign(self.http.get(&url).query(&query), "GET", &url, &query)).await?;
            if !res.status().is_success() {
                return Err(failure(res).await);
            }
            let found: Lookup = res.json().await.map_err(|e| PublishError::Unknown(format!("post lookup: {e}")))?;
            Ok(found
                .data
                .into_iter()
                .map(|c| {
                    let p = c.public_metrics;
                    let private = c.non_public_metrics;
                    let m = Metrics {
                        impressions: private.as_ref().and_then(|n| n.impression_count).unwrap_or(p.impression_count),
                        likes: p.like_count,
                        reposts: p.retweet_count,
                        replies: p.reply_count,
                        quotes: p.quote_count,
                        bookmarks: p.bookmark_count,
                        url_clicks: private.and_then(|n| n.url_link_clicks),
                    };
                    (c.id, m)
                })
                .collect())
        }
        .boxed()
    }

    fn recent<'a>(&'a self, ctx: Ctx<'a>, remote_id: &'a str, since_ms: i64) -> BoxFuture<'a, Result<Vec<Remote>, PublishError>> {
        async move {
            let auth = Self::auth(&ctx)?;
            let since = jiff::Timestamp::from_millisecond(since_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let since = since.round(jiff::Unit::Second).unwrap_or(since);
            let url = format!("{}/2/users/{remote_id}/tweets", self.base);
            let since = since.to_string();
            let query = [("max_results", "100"), ("start_time", since.as_str()), ("tweet.fields", "created_at,note_tweet")];
            let res = self.send(auth.sign(self.http.get(&url).query(&query), "GET", &url, &query)).await?;
            if !res.status().is_success() {
                return Err(failure(res).await);
            }
            let t: Timeline = res.json().await.map_err(|e| PublishError::Unknown(format!("timeline: {e}")))?;
            Ok(t.data
                .into_iter()
                .map(|p| Remote {
                    created_ms: p.created_at.and_then(|c| c.parse::<jiff::Timestamp>().ok()).map(|t| t.as_millisecond()),
                    id: p.id,
                    text: p.note_tweet.map_or(p.text, |n| n.text),
                })
                .collect())
        }
        .boxed()
    }
}
