//! The REST API under `/api/v1`: JSON in and out, errors as
//! `{"error": {"code", "message", "field"}}` with the right status, the
//! same keys as `/v1` (`platform::auth`), and what a key may see:
//!
//! - a key sees what it created (the `admin` scope: everything);
//! - `posting:read`: only reads;
//! - `campaign:ID`: only that campaign, its posts and its account (whoever
//!   created them; what it creates belongs to the campaign's owner).
//!
//! - `accounts`: `/api/v1/accounts`.
//! - `campaigns`: `/api/v1/campaigns`.
//! - `posts`: `/api/v1/posts` and the actions on one post.

mod accounts;
mod analytics;
mod campaigns;
pub(crate) mod fill;
mod links;
mod media;
mod oauth;
pub mod openapi;
pub mod ops;
mod posts;
mod products;
mod webhooks;

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Json;
use platform::auth::{Caller, Guard, Refusal};
use platform::keys::{ADMIN, POSTING_READ};
use serde::de::DeserializeOwned;

use crate::store::{StoreError, Tenant};
use crate::Posting;

/// An error in the posting API's shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    /// 400 naming the field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "invalid_field", message: message.into(), field: Some(field.into()) }
    }

    /// 404 for an id the caller cannot see (whether or not it exists).
    pub fn not_found(what: &str, id: &str) -> Self {
        Self { status: StatusCode::NOT_FOUND, code: "not_found", message: format!("no {what} `{id}`"), field: None }
    }

    /// 409: not in a state that allows it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self { status: StatusCode::CONFLICT, code: "conflict", message: message.into(), field: None }
    }

    /// 502: the platform did not do its part.
    pub fn upstream(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_GATEWAY, code: "upstream_error", message: message.into(), field: None }
    }

    /// 503: not now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, code: "unavailable", message: message.into(), field: None }
    }

    /// An error another service answered with `status`.
    pub fn from_status(status: u16, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        let code = match status.as_u16() {
            429 => "rate_limited",
            503 => "unavailable",
            400..=499 => "refused",
            _ => "upstream_error",
        };
        Self { status, code, message: message.into(), field: None }
    }

    /// 403: the key's scopes do not allow it.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self { status: StatusCode::FORBIDDEN, code: "forbidden", message: message.into(), field: None }
    }

    /// Its HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The field it names.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    fn unauthorized(message: &str) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, code: "unauthorized", message: message.into(), field: None }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::conflict(m),
            e => {
                tracing::error!(error = %e, "posting store");
                Self {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "storage_unavailable",
                    message: "the database did not answer; nothing was changed, try again".into(),
                    field: None,
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = openapi::ErrorBody { error: openapi::ErrorDetail { code: self.code.into(), message: self.message, field: self.field } };
        (self.status, Json(body)).into_response()
    }
}

/// What a key may see and do here.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    /// Whose rows.
    pub tenant: Tenant,
    /// The owner its writes are stored under.
    pub owner: String,
    /// Only this campaign.
    pub campaign: Option<String>,
    /// Reads only.
    pub read_only: bool,
}

impl Access {
    /// What `caller` may do. A campaign scope is a grant by whoever made
    /// the key (the operator): the key acts as the campaign's owner, only
    /// within that campaign (every handler applies [`Access::campaign`]).
    pub(crate) async fn load(p: &Posting, caller: &Caller) -> Result<Self, ApiError> {
        let Some(k) = &caller.0 else {
            return Ok(Self { tenant: Tenant::Owner(String::new()), owner: String::new(), campaign: None, read_only: false });
        };
        let read_only = k.has_scope(POSTING_READ);
        if let Some(c) = k.campaign() {
            // A campaign that does not exist grants nothing: no owner has this name.
            let owner = p.store.campaign(&Tenant::All, c).await?.map_or_else(|| "\u{0}none".to_owned(), |c| c.owner);
            return Ok(Self { tenant: Tenant::Owner(owner.clone()), owner, campaign: Some(c.to_owned()), read_only });
        }
        let tenant = if k.has_scope(ADMIN) { Tenant::All } else { Tenant::Owner(k.id.clone()) };
        Ok(Self { tenant, owner: k.id.clone(), campaign: None, read_only })
    }

    /// Refuse a key limited to one campaign (for what is not a campaign's).
    pub(crate) fn whole_tenant(&self, what: &str) -> Result<(), ApiError> {
        match &self.campaign {
            Some(_) => Err(ApiError::forbidden(format!("a key limited to one campaign cannot {what}"))),
            None => Ok(()),
        }
    }

    /// Refuse a write to a read-only key.
    pub(crate) fn write(&self) -> Result<(), ApiError> {
        if self.read_only {
            return Err(ApiError::forbidden("this key is read-only (posting:read)"));
        }
        Ok(())
    }

    /// Whether the key may touch `campaign` (a campaign-limited key: only its own).
    pub(crate) fn allows_campaign(&self, campaign: Option<&str>) -> bool {
        self.campaign.as_deref().is_none_or(|c| campaign == Some(c))
    }
}

/// A JSON body as `T`, a bad one a 400 naming the field.
pub(crate) fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::invalid(field, e.into_inner().to_string())
    })
}

/// A cursor for the page after the row `(created_ms, id)`.
pub(crate) fn cursor(created_ms: i64, id: &str) -> String {
    format!("{created_ms}.{id}")
}

/// A cursor read back.
pub(crate) fn parse_cursor(c: &str) -> Result<(i64, String), ApiError> {
    c.split_once('.')
        .and_then(|(ms, id)| Some((ms.parse().ok()?, id.to_owned())))
        .ok_or_else(|| ApiError::invalid("cursor", "not a cursor this API gave"))
}

fn reject(refusal: Refusal) -> Response {
    ApiError::unauthorized(match refusal {
        Refusal::NoKey => "an API key is needed: Authorization: Bearer <key>",
        Refusal::WrongKey(_) => "that API key is not a live one",
        Refusal::PublicWithoutKeys => "this server listens beyond loopback and keeps no API keys: create one with `starling keys create`",
    })
    .into_response()
}

/// The routes, behind the key check of `guard`'s keys.
pub(crate) fn router(posting: Posting, keys: Guard) -> axum::Router {
    let guard = Guard { keys: keys.keys, reject };
    let open = axum::Router::new()
        .route("/api/v1/oauth/x/callback", get(oauth::callback))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/r/{code}", get(links::redirect))
        .route("/api/v1/{*rest}", any(|method: Method, uri: axum::http::Uri| async move {
            ApiError { status: StatusCode::NOT_FOUND, code: "not_found", message: format!("no route {method} {}", uri.path()), field: None }
        }));
    axum::Router::new()
        .route("/api/v1/accounts", post(accounts::create).get(accounts::list))
        .route("/api/v1/accounts/x/authorize", post(oauth::authorize))
        .route("/api/v1/accounts/{id}", get(accounts::one))
        .route("/api/v1/campaigns", post(campaigns::create).get(campaigns::list))
        .route("/api/v1/campaigns/{id}", get(campaigns::one))
        .route("/api/v1/campaigns/{id}/status", post(campaigns::set_status))
        .route("/api/v1/campaigns/{id}/ab", get(analytics::ab))
        .route("/api/v1/campaigns/{id}/fill", post(fill::fill))
        .route("/api/v1/analytics", get(analytics::analytics))
        .route("/api/v1/products", get(products::list_products))
        .route("/api/v1/products/import", post(products::import))
        .route("/api/v1/links", post(links::create).get(links::list))
        .route("/api/v1/media", post(media::create).layer(axum::extract::DefaultBodyLimit::max(media::MAX_BYTES)))
        .route("/api/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/api/v1/webhooks/{id}", axum::routing::delete(webhooks::delete))
        .route("/api/v1/posts", post(posts::create).get(posts::list))
        .route("/api/v1/posts/{id}", get(posts::one))
        .route("/api/v1/posts/{id}/{action}", post(posts::act))
        .route_layer(axum::middleware::from_fn_with_state(guard, platform::auth::authenticate))
        .merge(open)
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError { status: StatusCode::METHOD_NOT_ALLOWED, code: "method_not_allowed", message: format!("{method} is not allowed here"), field: None }
        })
        .with_state(posting)
}
