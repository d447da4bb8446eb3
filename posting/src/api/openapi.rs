//! The OpenAPI 3.1 document of `/api/v1`, generated from the handlers'
//! annotations and the types they read and write (`utoipa`), served at
//! `GET /api/v1/openapi.json`; and the envelopes the handlers answer with
//! (lists, pages, the error body), so what is documented is what is sent.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::analytics::Row;
use crate::model::{Account, Campaign, Post, PostEvent};
use crate::store::{Link, Product, Webhook};

/// Every error: `{"error": {...}}`.
#[derive(serde::Serialize, ToSchema)]
pub struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

/// What went wrong.
#[derive(serde::Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_field`, `not_found`, `conflict`, `forbidden`, `unauthorized`, ...
    pub(crate) code: String,
    /// For a person.
    pub(crate) message: String,
    /// The request field at fault.
    pub(crate) field: Option<String>,
}

/// `{"data": [accounts]}`.
#[derive(serde::Serialize, ToSchema)]
pub struct AccountList {
    pub(crate) data: Vec<Account>,
}

/// `{"data": [campaigns]}`.
#[derive(serde::Serialize, ToSchema)]
pub struct CampaignList {
    pub(crate) data: Vec<Campaign>,
}

/// A post a campaign's fill made, with its score and short link.
#[derive(serde::Serialize, ToSchema)]
pub struct FilledPost {
    #[serde(flatten)]
    pub(crate) post: Post,
    /// The draft's quality score (0..1).
    pub(crate) score: f64,
    /// Its link, where it has one.
    pub(crate) short_url: Option<String>,
}

/// `{"data": [posts]}` of a fill.
#[derive(serde::Serialize, ToSchema)]
pub struct FilledPosts {
    pub(crate) data: Vec<FilledPost>,
}

/// A page of posts.
#[derive(serde::Serialize, ToSchema)]
pub struct PostPage {
    pub(crate) data: Vec<Post>,
    /// Pass as `cursor` for the next page; null on the last.
    pub(crate) next_cursor: Option<String>,
}

/// A post with its state changes.
#[derive(serde::Serialize, ToSchema)]
pub struct PostWithEvents {
    #[serde(flatten)]
    pub(crate) post: Post,
    pub(crate) events: Vec<PostEvent>,
}

/// `{"data": [products]}`.
#[derive(serde::Serialize, ToSchema)]
pub struct ProductList {
    pub(crate) data: Vec<Product>,
}

/// An import's counts.
#[derive(serde::Serialize, ToSchema)]
pub struct Imported {
    pub(crate) imported: i64,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

/// A link with its short URL (and, listed, its human clicks).
#[derive(serde::Serialize, ToSchema)]
pub struct LinkShown {
    #[serde(flatten)]
    pub(crate) link: Link,
    pub(crate) short_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) clicks: Option<i64>,
}

/// `{"data": [links]}`.
#[derive(serde::Serialize, ToSchema)]
pub struct LinkList {
    pub(crate) data: Vec<LinkShown>,
}

/// Where to send the person to authorise the app on X.
#[derive(serde::Serialize, ToSchema)]
pub struct Authorize {
    pub(crate) authorize_url: String,
    /// Seconds the answer is awaited.
    pub(crate) expires_in: i64,
}

/// An account connected by sign-in.
#[derive(serde::Serialize, ToSchema)]
pub struct Connected {
    pub(crate) message: String,
    pub(crate) account: Account,
}

/// Analytics rows.
#[derive(serde::Serialize, ToSchema)]
pub struct Report {
    pub(crate) group_by: String,
    pub(crate) from_ms: i64,
    pub(crate) to_ms: i64,
    pub(crate) rows: Vec<Row>,
}

/// The A/B comparison of a campaign's variants.
#[derive(serde::Serialize, ToSchema)]
pub struct AbTest {
    /// Which test.
    pub(crate) test: String,
    /// Variants, best click-through first.
    pub(crate) variants: Vec<Row>,
    /// `leader`, `runner_up`, `z`, `p_value`, `significant`; null without two variants with impressions.
    #[schema(value_type = Option<Object>)]
    pub(crate) result: Option<serde_json::Value>,
}

/// A webhook just made, with its signing secret (shown this once).
#[derive(serde::Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub(crate) webhook: Webhook,
    /// HMAC-SHA256 key of `Starling-Signature`.
    pub(crate) secret: String,
}

/// `{"data": [webhooks]}`.
#[derive(serde::Serialize, ToSchema)]
pub struct WebhookList {
    pub(crate) data: Vec<Webhook>,
}

struct Keys;

impl Modify for Keys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("api_key", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Starling posting API", description = "Accounts, campaigns, scheduled posts, products, short links and analytics. Keys as for /v1 (Authorization: Bearer)."),
    paths(
        super::accounts::create, super::accounts::list, super::accounts::one, super::oauth::authorize, super::oauth::callback,
        super::campaigns::create, super::campaigns::list, super::campaigns::one, super::campaigns::set_status, super::fill::fill,
        super::posts::create, super::posts::list, super::posts::one, super::posts::act,
        super::products::import, super::products::list_products, super::links::create, super::links::list, super::links::redirect,
        super::analytics::analytics, super::analytics::ab, super::webhooks::create, super::webhooks::list, super::webhooks::delete, super::media::create,
    ),
    security(("api_key" = [])),
    modifiers(&Keys),
    tags((name = "accounts"), (name = "campaigns"), (name = "posts"), (name = "products"), (name = "links"), (name = "analytics"), (name = "webhooks")),
)]
struct Doc;

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Doc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

pub(super) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}
