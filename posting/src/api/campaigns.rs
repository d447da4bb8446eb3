//! `/api/v1/campaigns`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use platform::auth::Caller;
use serde::Deserialize;

use super::openapi::{CampaignList, ErrorBody};
use super::{body, Access, ApiError};
use crate::model::Campaign;
use crate::schedule;
use crate::store::NewCampaign;
use crate::Posting;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Create {
    account_id: String,
    name: String,
    #[serde(default)]
    niche: String,
    #[serde(default)]
    slots: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    link_url: Option<String>,
    #[serde(default = "hashtag")]
    disclosure: String,
    #[serde(default)]
    banned_terms: Vec<String>,
    #[serde(default)]
    variants: Vec<String>,
    #[serde(default)]
    products: Vec<String>,
    #[serde(default = "required")]
    approval: String,
    #[serde(default)]
    link_budget_usd: Option<f64>,
    /// Posting times as a cron expression (`0 9 * * mon-fri`), with the weekly slots.
    #[serde(default)]
    cron: Option<String>,
    /// No slot at or after this (RFC 3339, or local in the account's zone).
    #[serde(default)]
    ends_at: Option<String>,
    /// No slot once the campaign has this many posts.
    #[serde(default)]
    max_posts: Option<i64>,
    /// Fill its free slots of the coming days by itself (drafts wait for
    /// approval unless `approval` is `auto`).
    #[serde(default)]
    autofill: bool,
}

fn hashtag() -> String {
    "hashtag".into()
}

fn required() -> String {
    "required".into()
}

#[utoipa::path(post, operation_id = "campaigns_create", path = "/api/v1/campaigns", tag = "campaigns", request_body = Create,
    responses((status = 201, description = "Created", body = Campaign), (status = 400, description = "A bad field, named", body = ErrorBody), (status = 401, description = "No key, or not a live one", body = ErrorBody), (status = 403, description = "The key may not write here", body = ErrorBody)))]
pub(super) async fn create(State(p): State<Posting>, caller: Caller, bytes: Bytes) -> Result<(StatusCode, Json<Campaign>), ApiError> {
    let access = Access::load(&p, &caller).await?;
    access.write()?;
    if access.campaign.is_some() {
        return Err(ApiError::forbidden("a key limited to one campaign cannot create campaigns"));
    }
    let req: Create = body(&bytes)?;
    let Some(account) = p.store.account(&access.tenant, &req.account_id).await? else {
        return Err(ApiError::invalid("account_id", format!("no account `{}`", req.account_id)));
    };
    if let Some(c) = &req.cron {
        c.parse::<crate::cron::Cron>().map_err(|e| ApiError::invalid("cron", e))?;
    }
    let tz = schedule::zone(&account.time_zone).map_err(|e| ApiError::invalid("account_id", e))?;
    let ends_ms = req.ends_at.as_deref().map(|t| schedule::parse_time(t, &tz)).transpose().map_err(|e| ApiError::invalid("ends_at", e))?;
    if req.max_posts.is_some_and(|m| m < 1) {
        return Err(ApiError::invalid("max_posts", "1 or more"));
    }
    let known = p.store.products_by_id(&access.tenant, &req.products).await?;
    if let Some(missing) = req.products.iter().find(|id| !known.iter().any(|k| &k.id == *id)) {
        return Err(ApiError::invalid("products", format!("no product `{missing}`")));
    }
    if req.name.trim().is_empty() {
        return Err(ApiError::invalid("name", "a name"));
    }
    schedule::check_slots(&req.slots).map_err(|e| ApiError::invalid("slots", e))?;
    if let Some(url) = &req.link_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ApiError::invalid("link_url", "an http(s) URL"));
        }
    }
    if !["hashtag", "paid_partnership", "none"].contains(&req.disclosure.as_str()) {
        return Err(ApiError::invalid("disclosure", "one of hashtag, paid_partnership, none"));
    }
    if !["required", "auto"].contains(&req.approval.as_str()) {
        return Err(ApiError::invalid("approval", "required or auto"));
    }
    if req.link_budget_usd.is_some_and(|b| !(b.is_finite() && b >= 0.0)) {
        return Err(ApiError::invalid("link_budget_usd", "a budget of 0 or more"));
    }
    let new = NewCampaign {
        account_id: req.account_id,
        name: req.name.trim().to_owned(),
        niche: req.niche,
        slots: req.slots,
        link_url: req.link_url,
        disclosure: req.disclosure,
        banned_terms: req.banned_terms,
        variants: req.variants,
        products: req.products,
        approval: req.approval,
        link_budget_usd: req.link_budget_usd,
        cron: req.cron,
        ends_ms,
        max_posts: req.max_posts,
        autofill: req.autofill,
    };
    Ok((StatusCode::CREATED, Json(p.store.create_campaign(&access.owner, &new).await?)))
}

#[utoipa::path(get, operation_id = "campaigns_list", path = "/api/v1/campaigns", tag = "campaigns", responses((status = 200, description = "The campaigns the key may see", body = CampaignList), (status = 400, description = "A bad field, named", body = ErrorBody), (status = 401, description = "No key, or not a live one", body = ErrorBody)))]
pub(super) async fn list(State(p): State<Posting>, caller: Caller) -> Result<Json<CampaignList>, ApiError> {
    let access = Access::load(&p, &caller).await?;
    let mut campaigns = p.store.campaigns(&access.tenant).await?;
    campaigns.retain(|c| access.allows_campaign(Some(&c.id)));
    Ok(Json(CampaignList { data: campaigns }))
}

/// The campaign `id` if the caller may see it.
pub(crate) async fn visible(p: &Posting, access: &Access, id: &str) -> Result<Campaign, ApiError> {
    match p.store.campaign(&access.tenant, id).await? {
        Some(c) if access.allows_campaign(Some(&c.id)) => Ok(c),
        _ => Err(ApiError::not_found("campaign", id)),
    }
}

#[utoipa::path(get, operation_id = "campaigns_one", path = "/api/v1/campaigns/{id}", tag = "campaigns", params(("id" = String, Path, description = "cmp_...")),
    responses((status = 200, description = "The campaign", body = Campaign), (status = 404, description = "Not one the key may see", body = ErrorBody)))]
pub(super) async fn one(State(p): State<Posting>, caller: Caller, Path(id): Path<String>) -> Result<Json<Campaign>, ApiError> {
    Ok(Json(visible(&p, &Access::load(&p, &caller).await?, &id).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetStatus {
    status: String,
}

#[utoipa::path(post, operation_id = "campaigns_set_status", path = "/api/v1/campaigns/{id}/status", tag = "campaigns", params(("id" = String, Path)), request_body = SetStatus,
    responses((status = 200, description = "The campaign", body = Campaign), (status = 400, description = "A bad field, named", body = ErrorBody), (status = 401, description = "No key, or not a live one", body = ErrorBody), (status = 403, description = "The key may not write here", body = ErrorBody), (status = 404, description = "Not one the key may see", body = ErrorBody)))]
pub(super) async fn set_status(State(p): State<Posting>, caller: Caller, Path(id): Path<String>, bytes: Bytes) -> Result<Json<Campaign>, ApiError> {
    let access = Access::load(&p, &caller).await?;
    let req: SetStatus = body(&bytes)?;
    Ok(Json(set_status_of(&p, &access, &id, &req.status).await?))
}

/// Set campaign `id`'s status, as `access` may.
pub(crate) async fn set_status_of(p: &Posting, access: &Access, id: &str, status: &str) -> Result<Campaign, ApiError> {
    access.write()?;
    let c = visible(p, access, id).await?;
    if !["active", "paused", "completed"].contains(&status) {
        return Err(ApiError::invalid("status", "one of active, paused, completed"));
    }
    p.store.set_campaign_status(&c.id, status).await?;
    visible(p, access, id).await
}
