//! Where posts go: one [`Platform`] trait, one implementation per service.
//!
//! - `dry_run`: the default; posts land in the local outbox table with a
//!   made-up id, so the whole pipeline runs without credentials.
//! - `x`: X's API v2 (a small hand-written client), `x_oauth` its sign-in.
//! - `mastodon`: any Mastodon instance (idempotent posting).
//!
//! A platform sorts every failure into what the dispatcher may do next
//! ([`PublishError`]): the distinction that matters is whether the post
//! may have reached the platform. X has no idempotency key, so anything
//! sent without a clear answer is [`PublishError::Unknown`] and is never
//! sent again blindly.

pub mod dry_run;
pub mod mastodon;
pub mod oauth1;
pub mod x;
mod x_media;
pub mod x_oauth;

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::model::Account;

/// One post (or one part of a thread) to send.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// Its text.
    pub text: &'a str,
    /// The part it answers (a thread's previous part).
    pub reply_to: Option<&'a str>,
    /// Media ids already uploaded.
    pub media: &'a [String],
    /// X's paid-partnership label.
    pub paid_partnership: bool,
    /// X's made-with-AI label.
    pub made_with_ai: bool,
    /// The same for every try of this part (`post id.part`), for platforms
    /// that de-duplicate on it.
    pub idempotency_key: &'a str,
}

/// A post as the platform has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// The platform's id.
    pub id: String,
    /// The platform said the account has no calls left until then (Unix ms).
    pub pause_until_ms: Option<i64>,
}

/// The account credentials belong to, as the platform names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Me {
    /// The platform's id.
    pub id: String,
    /// The handle.
    pub handle: String,
}

/// A post the platform shows on the account (for reconciling unknowns).
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    /// The platform's id.
    pub id: String,
    /// Its text as the platform shows it.
    pub text: String,
    /// When it was created (Unix ms), where the platform says.
    pub created_ms: Option<i64>,
}

/// What the platform counts for a post.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Metrics {
    /// Times shown.
    pub impressions: i64,
    /// Likes.
    pub likes: i64,
    /// Reposts.
    pub reposts: i64,
    /// Replies.
    pub replies: i64,
    /// Quotes.
    pub quotes: i64,
    /// Bookmarks.
    pub bookmarks: i64,
    /// Clicks on its links, where the platform tells the owner (X's non-public metrics).
    pub url_clicks: Option<i64>,
}

/// Why a call did not end with a post, sorted by what may happen next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PublishError {
    /// Nothing reached the platform (no connection): safe to try again.
    #[error("not sent: {0}")]
    NotSent(String),
    /// 429: not posted; nothing for this account until `until_ms`.
    #[error("rate limited until {until_ms}: {reason}")]
    RateLimited {
        /// Unix ms of the reset.
        until_ms: i64,
        /// What the platform said.
        reason: String,
    },
    /// 503: the platform is overloaded and did not take it; try later.
    #[error("platform unavailable: {0}")]
    Unavailable(String),
    /// Refused for good (duplicate content, invalid text): never retried.
    #[error("refused: {0}")]
    Rejected(String),
    /// 401: the credentials no longer work; the account needs authorising again.
    #[error("unauthorised: {0}")]
    Unauthorized(String),
    /// The account is suspended: nothing more is sent from it.
    #[error("account suspended: {0}")]
    Suspended(String),
    /// Sent, with no clear answer (timeout, 5xx other than 503, a broken
    /// connection): it may be on the platform.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// The account a call is for, with its opened credentials.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The account.
    pub account: &'a Account,
    /// Its credentials (the platform's own JSON), where it has any.
    pub credentials: Option<&'a serde_json::Value>,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        f.debug_struct("Ctx").field("account", &self.account.id).field("credentials", &self.credentials.map(|_| "***")).finish()
    }
}

/// A service posts go to.
pub trait Platform: Send + Sync {
    /// The name accounts give (`dry-run`, `x`).
    fn name(&self) -> &'static str;

    /// Its text rules.
    fn rules(&self) -> post_rules::Platform;

    /// Whether an account needs credentials here.
    fn needs_credentials(&self) -> bool;

    /// How long the platform de-duplicates a post sent again with the same
    /// [`Outgoing::idempotency_key`] (None: it does not, as X does not).
    /// Within it, a post whose outcome is unknown is simply sent again.
    fn idempotency_window_ms(&self) -> Option<i64> {
        None
    }

    /// Upload a media file (`bytes` of `content_type`) for the account:
    /// the platform's id for it and when that id expires (Unix ms). Safe
    /// to repeat: nothing is public until a post attaches it.
    fn upload<'a>(&'a self, _ctx: Ctx<'a>, _content_type: &'a str, _bytes: &'a [u8]) -> BoxFuture<'a, Result<(String, Option<i64>), PublishError>> {
        let name = self.name();
        Box::pin(async move { Err(PublishError::Rejected(format!("media upload to {name} is not built yet"))) })
    }

    /// Send one post.
    fn publish<'a>(&'a self, ctx: Ctx<'a>, post: Outgoing<'a>) -> BoxFuture<'a, Result<Published, PublishError>>;

    /// Who the credentials belong to (X: `/2/users/me`).
    fn me<'a>(&'a self, ctx: Ctx<'a>) -> BoxFuture<'a, Result<Me, PublishError>>;

    /// The account's posts since `since_ms` (newest first, as many as one
    /// call returns), to find out whether an unknown post arrived.
    fn recent<'a>(&'a self, ctx: Ctx<'a>, remote_id: &'a str, since_ms: i64) -> BoxFuture<'a, Result<Vec<Remote>, PublishError>>;

    /// What the platform counts for these posts of the account (at most
    /// 100 ids a call); a platform that counts nothing answers none.
    fn metrics<'a>(&'a self, _ctx: Ctx<'a>, _ids: &'a [String]) -> BoxFuture<'a, Result<Vec<(String, Metrics)>, PublishError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// The platforms this service posts to, by name.
#[derive(Clone, Default)]
pub struct Platforms(HashMap<&'static str, Arc<dyn Platform>>);

impl std::fmt::Debug for Platforms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Platforms {
    /// These platforms.
    pub fn new(list: Vec<Arc<dyn Platform>>) -> Self {
        Self(list.into_iter().map(|p| (p.name(), p)).collect())
    }

    /// The one named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Platform>> {
        self.0.get(name)
    }

    /// Every name, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut n: Vec<_> = self.0.keys().copied().collect();
        n.sort_unstable();
        n
    }
}

/// Send `req`: a connection that never opened is surely not sent; any
/// other failure may have reached the platform.
pub(crate) async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::Response, PublishError> {
    req.send().await.map_err(|e| if e.is_connect() || e.is_builder() { PublishError::NotSent(e.to_string()) } else { PublishError::Unknown(e.to_string()) })
}

/// Whether a post the platform shows is ours: the same words once the
/// platform's rewriting is undone on both sides (X turns every URL into a
/// `t.co` link and adds one for attached media, `&`, `<` and `>` come back
/// as entities, space is collapsed): URLs are left out of the comparison.
pub fn same_text(ours: &str, theirs: &str) -> bool {
    fn normal(text: &str) -> String {
        let text = text.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
        let mut out = text.clone();
        for url in post_rules::extract::entities(&text).urls {
            out = out.replacen(&url, " ", 1);
        }
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }
    normal(ours) == normal(theirs)
}

#[cfg(test)]
mod tests {
    use super::same_text;

    #[test]
    fn rewritten_texts_still_match() {
        assert!(same_text("#ad Grind fresh: https://acme.shop/grinder?utm_source=x & enjoy", "#ad Grind fresh: https://t.co/AbC123 &amp; enjoy"));
        assert!(!same_text("#ad Grind fresh today", "#ad Grind fresh tomorrow"));
        assert!(same_text("one https://acme.com two", "one two https://t.co/media1"), "URLs (and X's media link) are left out");
        assert!(!same_text("one two three", "one two"));
    }
}
