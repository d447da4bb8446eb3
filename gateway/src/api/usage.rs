//! `GET /v1/usage`: totals from the usage records.

use axum::extract::State;
use axum::http::Uri;
use axum::Json;
use platform::keys::ADMIN;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::accounting::usage::GroupBy;
use crate::server::body::serde_urlencoded_query;
use crate::server::{App, Caller};

#[derive(Deserialize)]
pub(crate) struct UsageQuery {
    /// Unix seconds, inclusive (default: the beginning).
    from: Option<i64>,
    /// Unix seconds, exclusive (default: now).
    to: Option<i64>,
    /// `key`, `provider`, `model` or `route` (default `provider`).
    group_by: Option<String>,
}

/// `GET /v1/usage?from&to&group_by=`: totals per group from the records:
/// of the caller's own key, or of every key for a key with the `admin`
/// scope (and where no keys are in use: a private, single-user server).
pub(crate) async fn usage_summary(State(app): State<App>, caller: Caller, uri: Uri) -> Result<Json<Value>, ApiError> {
    let q: UsageQuery = serde_urlencoded_query(&uri)?;
    let group = q.group_by.as_deref().unwrap_or("provider");
    let group_by = GroupBy::parse(group)
        .ok_or_else(|| ApiError::invalid("group_by", format!("`{group}` is not one of key, provider, model, route")))?;
    let log = app.0.usage.get().ok_or_else(|| ApiError::route_not_found("GET", "/v1/usage (no usage database configured)"))?;
    let from_ms = q.from.unwrap_or(0).saturating_mul(1000);
    let to_ms = q.to.map_or(i64::MAX, |t| t.saturating_mul(1000));
    let only = caller.0.as_ref().filter(|k| !k.has_scope(ADMIN)).map(|k| k.id.as_str());
    let data = log.store().summary(from_ms, to_ms, group_by, only).await.map_err(|e| {
        tracing::error!("{e}");
        ApiError::internal("the usage store could not be read")
    })?;
    Ok(Json(json!({"object": "list", "group_by": group, "from": q.from, "to": q.to, "data": data})))
}
