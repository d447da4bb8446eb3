//! `/api/v1/accounts`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use platform::auth::Caller;
use serde::Deserialize;
use serde_json::Value;

use super::openapi::{AccountList, ErrorBody};
use super::{body, Access, ApiError};
use crate::model::{new_id, Account};
use crate::schedule;
use crate::store::NewAccount;
use crate::Posting;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Create {
    platform: String,
    handle: String,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    daily_cap: Option<i64>,
    #[serde(default)]
    max_length: Option<i64>,
    /// The platform's credentials (X: `{"access_token": "..."}`); sealed at rest.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    credentials: Option<Value>,
}

/// The most posts a day we allow an account, below each platform's own
/// limit (X: 2,400 a day per user; we stay far under it by default).
pub(super) fn platform_cap(platform: &str) -> (i64, i64) {
    match platform {
        "x" => (15, 2000),
        _ => (100, 10_000),
    }
}

/// Whether `url` is https on a public host: the account's token is sent
/// there, so not in clear text and not to this network's own services.
fn public_https(url: &str) -> bool {
    let Ok(u) = super::links::check_target(url) else { return false };
    if u.scheme() != "https" {
        return false;
    }
    match u.host() {
        Some(url::Host::Domain(d)) => !(d == "localhost" || d.ends_with(".localhost") || d.ends_with(".internal") || d.ends_with(".local")),
        Some(url::Host::Ipv4(ip)) => !(ip.is_private() || ip.is_loopback() || ip.is_link_local() || ip.is_unspecified()),
        Some(url::Host::Ipv6(ip)) => !(ip.is_loopback() || ip.is_unspecified() || (ip.segments()[0] & 0xfe00) == 0xfc00 || (ip.segments()[0] & 0xffc0) == 0xfe80),
        None => false,
    }
}

/// A daily cap and length limit an account on `platform` may have.
pub(super) fn check_limits(daily_cap: Option<i64>, max_length: Option<i64>, platform: &str) -> Result<(), ApiError> {
    let most = platform_cap(platform).1;
    if daily_cap.is_some_and(|c| !(1..=most).contains(&c)) {
        return Err(ApiError::invalid("daily_cap", format!("between 1 and {most} posts a day on {platform}")));
    }
    if max_length.is_some_and(|l| !(1..=25_000).contains(&l)) {
        return Err(ApiError::invalid("max_length", "between 1 and 25000"));
    }
    Ok(())
}

#[utoipa::path(post, operation_id = "accounts_create", path = "/api/v1/accounts", tag = "accounts", request_body = Create,
    responses((status = 201, description = "Created", body = Account), (status = 400, description = "A bad field, named", body = ErrorBody), (status = 401, description = "No key, or not a live one", body = ErrorBody), (status = 403, description = "The key may not write here", body = ErrorBody), (status = 409, description = "That handle exists", body = ErrorBody)))]
pub(super) async fn create(State(p): State<Posting>, caller: Caller, bytes: Bytes) -> Result<(StatusCode, Json<Account>), ApiError> {
    let access = Access::load(&p, &caller).await?;
    access.write()?;
    if access.campaign.is_some() {
        return Err(ApiError::forbidden("a key limited to one campaign cannot create accounts"));
    }
    let req: Create = body(&bytes)?;
    let Some(platform) = p.platforms.get(&req.platform) else {
        return Err(ApiError::invalid("platform", format!("`{}` is not a configured platform (known: {})", req.platform, p.platforms.names().join(", "))));
    };
    let handle = req.handle.trim().trim_start_matches('@').to_owned();
    if handle.is_empty() || handle.len() > 100 {
        return Err(ApiError::invalid("handle", "a handle of 1 to 100 characters"));
    }
    let time_zone = req.time_zone.unwrap_or_else(|| p.config.default_time_zone.clone());
    schedule::zone(&time_zone).map_err(|e| ApiError::invalid("time_zone", e))?;
    check_limits(req.daily_cap, req.max_length, &req.platform)?;
    let daily_cap = req.daily_cap.unwrap_or(platform_cap(&req.platform).0);
    let id = new_id("acc");
    let sealed = match (&req.credentials, platform.needs_credentials()) {
        (None, true) => return Err(ApiError::invalid("credentials", format!("a {} account needs credentials", req.platform))),
        (Some(c), _) if !c.is_object() => return Err(ApiError::invalid("credentials", "an object")),
        (Some(c), _) if req.platform == "mastodon" && c.get("instance").and_then(Value::as_str).is_none_or(|i| !public_https(i)) => {
            return Err(ApiError::invalid("credentials.instance", "the instance's public https URL (https://mastodon.social)"))
        }
        (Some(c), _) => Some(p.sealer.seal(&id, c.to_string().as_bytes()).map_err(|e| ApiError::invalid("credentials", e.to_string()))?),
        (None, false) => None,
    };
    let new = NewAccount { platform: req.platform, handle, time_zone, daily_cap, max_length: req.max_length };
    let account = p.store.create_account(Some(id), &access.owner, &new, sealed).await?;
    Ok((StatusCode::CREATED, Json(account)))
}

#[utoipa::path(get, operation_id = "accounts_list", path = "/api/v1/accounts", tag = "accounts", responses((status = 200, description = "The accounts the key may see", body = AccountList), (status = 400, description = "A bad field, named", body = ErrorBody), (status = 401, description = "No key, or not a live one", body = ErrorBody)))]
pub(super) async fn list(State(p): State<Posting>, caller: Caller) -> Result<Json<AccountList>, ApiError> {
    let access = Access::load(&p, &caller).await?;
    let mut accounts = p.store.accounts(&access.tenant).await?;
    if let Some(c) = &access.campaign {
        let only = p.store.campaign(&access.tenant, c).await?.map(|c| c.account_id);
        accounts.retain(|a| Some(&a.id) == only.as_ref());
    }
    Ok(Json(AccountList { data: accounts }))
}

#[utoipa::path(get, operation_id = "accounts_one", path = "/api/v1/accounts/{id}", tag = "accounts", params(("id" = String, Path, description = "acc_...")),
    responses((status = 200, description = "The account", body = Account), (status = 404, description = "Not one the key may see", body = ErrorBody)))]
pub(super) async fn one(State(p): State<Posting>, caller: Caller, Path(id): Path<String>) -> Result<Json<Account>, ApiError> {
    let access = Access::load(&p, &caller).await?;
    let account = p.store.account(&access.tenant, &id).await?.ok_or_else(|| ApiError::not_found("account", &id))?;
    if let Some(c) = &access.campaign {
        let only = p.store.campaign(&access.tenant, c).await?.map(|c| c.account_id);
        if only.as_deref() != Some(id.as_str()) {
            return Err(ApiError::not_found("account", &id));
        }
    }
    Ok(Json(account))
}
