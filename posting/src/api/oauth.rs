//! Sign-in with X: `POST /api/v1/accounts/x/authorize` (with a key) gives
//! the URL to send the person to; X sends them back to `GET
//! /api/v1/oauth/x/callback` (no key: the single-use state, kept ten
//! minutes, is what ties the answer to the request), where the code is
//! traded for tokens and the account is created, or authorised again.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use platform::auth::Caller;
use serde::{Deserialize, Serialize};

use super::openapi::{Authorize, Connected, ErrorBody};
use super::{body, Access, ApiError};
use crate::model::new_id;
use crate::platforms::x_oauth::XOAuth;
use crate::schedule;
use crate::store::NewAccount;
use crate::Posting;

/// How long a person has to answer X.
const STATE_MAX_AGE_MS: i64 = 10 * 60_000;

#[derive(Deserialize, Serialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Settings {
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    daily_cap: Option<i64>,
    #[serde(default)]
    max_length: Option<i64>,
}

fn oauth(p: &Posting) -> Result<&XOAuth, ApiError> {
    p.x_oauth.as_deref().ok_or_else(|| {
        ApiError::conflict("sign-in with X is not configured: set [posting.x] client_id (and STARLING_X_CLIENT_SECRET for a confidential app)")
    })
}

#[utoipa::path(post, operation_id = "oauth_authorize", path = "/api/v1/accounts/x/authorize", tag = "accounts", request_body = Settings,
    responses((status = 200, description = "Where to send the person: authorize_url, expires_in", body = Authorize), (status = 400, description = "A bad field, named", body = ErrorBody), (status = 401, description = "No key, or not a live one", body = ErrorBody), (status = 403, description = "The key may not write here", body = ErrorBody), (status = 409, description = "Sign-in with X is not configured", body = ErrorBody)))]
pub(super) async fn authorize(State(p): State<Posting>, caller: Caller, bytes: Bytes) -> Result<Json<Authorize>, ApiError> {
    let access = Access::load(&p, &caller).await?;
    access.write()?;
    if access.campaign.is_some() {
        return Err(ApiError::forbidden("a key limited to one campaign cannot add accounts"));
    }
    let settings: Settings = if bytes.is_empty() { Settings::default() } else { body(&bytes)? };
    if let Some(tz) = &settings.time_zone {
        schedule::zone(tz).map_err(|e| ApiError::invalid("time_zone", e))?;
    }
    super::accounts::check_limits(settings.daily_cap, settings.max_length, "x")?;
    let (url, state, verifier) = oauth(&p)?.authorize();
    let sealed = p.sealer.seal(&state, verifier.as_bytes()).map_err(|e| ApiError::conflict(e.to_string()))?;
    let settings = serde_json::to_string(&settings).unwrap_or_default();
    p.store.save_oauth_state(&state, &access.owner, "x", &sealed, &settings).await?;
    Ok(Json(Authorize { authorize_url: url, expires_in: STATE_MAX_AGE_MS / 1000 }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[utoipa::path(get, operation_id = "oauth_callback", path = "/api/v1/oauth/x/callback", tag = "accounts", params(Callback), security(()),
    responses((status = 201, description = "Account connected", body = Connected), (status = 200, description = "Account authorised again", body = Connected),
        (status = 400, description = "Unknown or expired state, or X refused", body = ErrorBody), (status = 502, description = "X did not give tokens", body = ErrorBody)))]
pub(super) async fn callback(State(p): State<Posting>, Query(q): Query<Callback>) -> Result<(StatusCode, Json<Connected>), ApiError> {
    if let Some(e) = q.error {
        return Err(ApiError::invalid("error", format!("X did not authorise the app: {e} {}", q.error_description.unwrap_or_default())));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return Err(ApiError::invalid("code", "X's answer lacks its code or state"));
    };
    let oauth = oauth(&p)?;
    let (owner, _, sealed, settings) = p
        .store
        .take_oauth_state(&state, STATE_MAX_AGE_MS)
        .await?
        .ok_or_else(|| ApiError::invalid("state", "unknown or expired (ten minutes): start again from /api/v1/accounts/x/authorize"))?;
    let verifier = p.sealer.open(&state, &sealed).map_err(|e| ApiError::conflict(e.to_string()))?;
    let verifier = String::from_utf8_lossy(&verifier).into_owned();
    let tokens = oauth.exchange(&code, &verifier).await.map_err(|e| ApiError::upstream(format!("X did not give tokens: {e}")))?;
    let me = p.x.user(&crate::platforms::x::Auth::Bearer(&tokens.access_token)).await.map_err(|e| ApiError::upstream(format!("X did not say who signed in: {e}")))?;
    let settings: Settings = serde_json::from_str(&settings).unwrap_or_default();
    let plain = tokens.to_json().to_string();
    let (status, account) = match p.store.account_by_handle(&owner, "x", &me.handle).await? {
        Some(existing) => {
            let sealed = p.sealer.seal(&existing.id, plain.as_bytes()).map_err(|e| ApiError::conflict(e.to_string()))?;
            p.store.reauthorised(&existing.id, &sealed, &me.id).await?;
            (StatusCode::OK, existing.id)
        }
        None => {
            let id = new_id("acc");
            let sealed = p.sealer.seal(&id, plain.as_bytes()).map_err(|e| ApiError::conflict(e.to_string()))?;
            let new = NewAccount {
                platform: "x".into(),
                handle: me.handle.clone(),
                time_zone: settings.time_zone.unwrap_or_else(|| p.config.default_time_zone.clone()),
                daily_cap: settings.daily_cap.unwrap_or(super::accounts::platform_cap("x").0),
                max_length: settings.max_length,
            };
            let account = p.store.create_account(Some(id), &owner, &new, Some(sealed)).await?;
            p.store.set_remote_id(&account.id, &me.id).await?;
            (StatusCode::CREATED, account.id)
        }
    };
    let account = p.store.account(&crate::store::Tenant::All, &account).await?.ok_or_else(|| ApiError::not_found("account", &account))?;
    Ok((status, Json(Connected { message: format!("X account @{} connected", me.handle), account })))
}
