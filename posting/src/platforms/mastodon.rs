//! Mastodon (any instance): `POST /api/v1/statuses`, `GET
//! /api/v1/accounts/verify_credentials`, `GET /api/v1/accounts/{id}/statuses`.
//!
//! Chosen as the second platform because its API is open (any instance,
//! a bearer token from the instance's own settings) and because it takes
//! an `Idempotency-Key` on new statuses: a post sent again with the same
//! key within an hour is not posted twice, the server answers with the
//! status it made. So unlike X, an unknown outcome here is settled by
//! sending again under the same key ([`Platform::idempotency_window_ms`]),
//! and the timeline is read only past that window. Its own length rule:
//! 500 characters, each URL counting 23 (`post_rules::Platform::Mastodon`).
//!
//! Media: `POST /api/v2/media` (202 while a video is processed, then `GET
//! /api/v1/media/{id}` until 200).
//!
//! Credentials: `{"instance": "https://mastodon.social", "access_token": "..."}`.
//! Rate limits: 429 with `X-RateLimit-Reset` (an ISO 8601 time).

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Ctx, Me, Outgoing, Platform, PublishError, Published, Remote};
use crate::model::now_ms;

/// How long Mastodon keeps an idempotency key (its documented hour),
/// less a margin for clocks.
const IDEMPOTENCY_WINDOW_MS: i64 = 50 * 60_000;

/// The Mastodon client (one for every instance).
#[derive(Debug, Clone)]
pub struct Mastodon {
    http: reqwest::Client,
}

impl Mastodon {
    /// A client with `timeout` for a whole call.
    pub fn new(timeout: Duration, connect: Duration) -> Result<Self, String> {
        Ok(Self { http: super::x::client_with_timeouts(timeout, connect)? })
    }

    /// The instance and token of `ctx`.
    fn target<'a>(ctx: &Ctx<'a>) -> Result<(&'a str, &'a str), PublishError> {
        let c = ctx.credentials.ok_or_else(|| PublishError::Unauthorized("the account has no credentials".into()))?;
        let instance = c.get("instance").and_then(Value::as_str).ok_or_else(|| PublishError::Rejected("credentials lack `instance`".into()))?;
        let token = c.get("access_token").and_then(Value::as_str).ok_or_else(|| PublishError::Unauthorized("credentials lack `access_token`".into()))?;
        Ok((instance.trim_end_matches('/'), token))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Response, PublishError> {
        super::send(req).await
    }
}

/// Sort an answer that is not a success (Mastodon's errors: `{"error": "..."}`).
async fn failure(res: Response) -> PublishError {
    let status = res.status();
    let reset = res.headers().get("x-ratelimit-reset").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<jiff::Timestamp>().ok());
    let body = res.text().await.unwrap_or_default();
    let said = serde_json::from_str::<Value>(&body).ok().and_then(|v| v["error"].as_str().map(str::to_owned)).unwrap_or(body);
    let said = format!("{} {said}", status.as_u16());
    match status {
        StatusCode::TOO_MANY_REQUESTS => {
            PublishError::RateLimited { until_ms: reset.map_or(now_ms() + 5 * 60_000, |t| t.as_millisecond()), reason: said }
        }
        StatusCode::SERVICE_UNAVAILABLE => PublishError::Unavailable(said),
        StatusCode::UNAUTHORIZED => PublishError::Unauthorized(said),
        StatusCode::FORBIDDEN if said.to_lowercase().contains("suspended") => PublishError::Suspended(said),
        s if s.is_server_error() => PublishError::Unknown(said),
        _ => PublishError::Rejected(said),
    }
}

#[derive(Deserialize)]
struct Status {
    id: String,
    #[serde(default)]
    content: String,
    created_at: Option<String>,
}

#[derive(Deserialize)]
struct MediaAttachment {
    id: String,
}

#[derive(Deserialize)]
struct Account {
    id: String,
    acct: String,
}

/// A status's HTML as text: tags dropped (`<br>` and paragraph ends as
/// spaces), entities undone.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    let mut tag = String::new();
    for c in html.chars() {
        match (in_tag, c) {
            (false, '<') => {
                in_tag = true;
                tag.clear();
            }
            (true, '>') => {
                in_tag = false;
                if tag.starts_with("br") || tag.starts_with("/p") {
                    out.push(' ');
                }
            }
            (true, c) => tag.push(c),
            (false, c) => out.push(c),
        }
    }
    out.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'")
}

impl Platform for Mastodon {
    fn name(&self) -> &'static str {
        "mastodon"
    }

    fn rules(&self) -> post_rules::Platform {
        post_rules::Platform::Mastodon
    }

    fn needs_credentials(&self) -> bool {
        true
    }

    fn idempotency_window_ms(&self) -> Option<i64> {
        Some(IDEMPOTENCY_WINDOW_MS)
    }

    fn upload<'a>(&'a self, ctx: Ctx<'a>, content_type: &'a str, bytes: &'a [u8]) -> BoxFuture<'a, Result<(String, Option<i64>), PublishError>> {
        async move {
            let (instance, token) = Self::target(&ctx)?;
            let part = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name("media").mime_str(content_type).map_err(|e| PublishError::Rejected(e.to_string()))?;
            let form = reqwest::multipart::Form::new().part("file", part);
            let res = self.send(self.http.post(format!("{instance}/api/v2/media")).bearer_auth(token).multipart(form)).await;
            // Nothing is posted by an upload: any failure but a refusal is "not sent".
            let not_sent = |e: PublishError| match e {
                PublishError::Unknown(w) | PublishError::Unavailable(w) => PublishError::NotSent(format!("media upload: {w}")),
                other => other,
            };
            let res = res.map_err(not_sent)?;
            if !res.status().is_success() {
                return Err(not_sent(failure(res).await));
            }
            // 200: ready; 202: still processing (`url` null) until GET answers 200.
            let mut processing = res.status() == StatusCode::ACCEPTED;
            let media: MediaAttachment = res.json().await.map_err(|e| PublishError::NotSent(format!("media upload: {e}")))?;
            let started = std::time::Instant::now();
            while processing {
                if started.elapsed() > Duration::from_secs(120) {
                    return Err(PublishError::NotSent("the instance is still processing the media".into()));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                let res = self.send(self.http.get(format!("{instance}/api/v1/media/{}", media.id)).bearer_auth(token)).await.map_err(not_sent)?;
                if !res.status().is_success() {
                    return Err(not_sent(failure(res).await));
                }
                processing = res.status() == StatusCode::PARTIAL_CONTENT;
            }
            Ok((media.id, None))
        }
        .boxed()
    }

    fn publish<'a>(&'a self, ctx: Ctx<'a>, post: Outgoing<'a>) -> BoxFuture<'a, Result<Published, PublishError>> {
        async move {
            let (instance, token) = Self::target(&ctx)?;
            let mut body = json!({"status": post.text, "visibility": "public"});
            if let Some(parent) = post.reply_to {
                body["in_reply_to_id"] = json!(parent);
            }
            if !post.media.is_empty() {
                body["media_ids"] = json!(post.media);
            }
            let req = self
                .http
                .post(format!("{instance}/api/v1/statuses"))
                .bearer_auth(token)
                .header("idempotency-key", post.idempotency_key)
                .json(&body);
            let res = self.send(req).await?;
            if !res.status().is_success() {
                return Err(failure(res).await);
            }
            let status: Status = res.json().await.map_err(|e| PublishError::Unknown(format!("created, but the answer did not read: {e}")))?;
            Ok(Published { id: status.id, pause_until_ms: None })
        }
        .boxed()
    }

    fn me<'a>(&'a self, ctx: Ctx<'a>) -> BoxFuture<'a, Result<Me, PublishError>> {
        async move {
            let (instance, token) = Self::target(&ctx)?;
            let res = self.send(self.http.get(format!("{instance}/api/v1/accounts/verify_credentials")).bearer_auth(token)).await?;
            if !res.status().is_success() {
                return Err(failure(res).await);
            }
            let a: Account = res.json().await.map_err(|e| PublishError::Unknown(format!("verify_credentials: {e}")))?;
            Ok(Me { id: a.id, handle: a.acct })
        }
        .boxed()
    }

    fn recent<'a>(&'a self, ctx: Ctx<'a>, remote_id: &'a str, since_ms: i64) -> BoxFuture<'a, Result<Vec<Remote>, PublishError>> {
        async move {
            let (instance, token) = Self::target(&ctx)?;
            let url = format!("{instance}/api/v1/accounts/{remote_id}/statuses");
            let res = self.send(self.http.get(url).query(&[("limit", "40")]).bearer_auth(token)).await?;
            if !res.status().is_success() {
                return Err(failure(res).await);
            }
            let statuses: Vec<Status> = res.json().await.map_err(|e| PublishError::Unknown(format!("statuses: {e}")))?;
            Ok(statuses
                .into_iter()
                .map(|s| Remote {
                    created_ms: s.created_at.and_then(|c| c.parse::<jiff::Timestamp>().ok()).map(|t| t.as_millisecond()),
                    text: text_of(&s.content),
                    id: s.id,
                })
                .filter(|r| r.created_ms.is_none_or(|c| c >= since_ms))
                .collect())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn html_back_to_text() {
        let html = "<p>Fresh beans &amp; a <a href=\"https://acme.shop/x\" rel=\"nofollow\"><span class=\"invisible\">https://</span>acme.shop/x</a></p>";
        assert_eq!(super::text_of(html), "Fresh beans & a https://acme.shop/x ");
    }
}
