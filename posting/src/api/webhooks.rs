//! `/api/v1/webhooks`: receivers of post and campaign events (see
//! [`crate::webhooks`] for delivery and the signature). The signing secret
//! is shown once, when the webhook is made.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use platform::auth::Caller;
use serde::Deserialize;

use super::openapi::{CreatedWebhook, ErrorBody, WebhookList};
use super::{body, Access, ApiError};
use crate::model::new_id;
use crate::store::EVENTS;
use crate::Posting;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Create {
    /// Where events are POSTed (http or https).
    url: String,
    /// Which: post.scheduled, post.posted, post.failed, post.unknown, post.blocked, campaign.created, campaign.status.
    events: Vec<String>,
}

#[utoipa::path(post, operation_id = "webhooks_create", path = "/api/v1/webhooks", tag = "webhooks", request_body = Create,
    responses((status = 201, description = "The webhook and its signing secret (shown once)", body = CreatedWebhook),
        (status = 400, description = "A bad field, named", body = ErrorBody), (status = 403, description = "The key may not write here", body = ErrorBody)))]
pub(super) async fn create(State(p): State<Posting>, caller: Caller, bytes: Bytes) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    let access = Access::load(&p, &caller).await?;
    access.write()?;
    access.whole_tenant("add webhooks")?;
    let req: Create = body(&bytes)?;
    super::links::check_target(&req.url).map_err(|e| ApiError::invalid("url", e))?;
    if req.events.is_empty() {
        return Err(ApiError::invalid("events", format!("at least one of {}", EVENTS.join(", "))));
    }
    if let Some(bad) = req.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(ApiError::invalid("events", format!("`{bad}` is not one of {}", EVENTS.join(", "))));
    }
    let id = new_id("whk");
    let secret = format!("whsec_{}", new_id("s").trim_start_matches("s_"));
    let sealed = p.sealer.seal(&id, secret.as_bytes()).map_err(|e| ApiError::conflict(e.to_string()))?;
    let webhook = p.store.create_webhook(&access.owner, &id, &req.url, &sealed, &req.events).await?;
    Ok((StatusCode::CREATED, Json(CreatedWebhook { webhook, secret })))
}

#[utoipa::path(get, operation_id = "webhooks_list", path = "/api/v1/webhooks", tag = "webhooks",
    responses((status = 200, description = "The key's webhooks", body = WebhookList), (status = 401, description = "No key", body = ErrorBody)))]
pub(super) async fn list(State(p): State<Posting>, caller: Caller) -> Result<Json<WebhookList>, ApiError> {
    let access = Access::load(&p, &caller).await?;
    access.whole_tenant("see webhooks")?;
    Ok(Json(WebhookList { data: p.store.webhooks(&access.tenant).await? }))
}

#[utoipa::path(delete, operation_id = "webhooks_delete", path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted; its pending messages dropped"), (status = 404, description = "Not one the key may see", body = ErrorBody)))]
pub(super) async fn delete(State(p): State<Posting>, caller: Caller, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let access = Access::load(&p, &caller).await?;
    access.write()?;
    access.whole_tenant("delete webhooks")?;
    if p.store.delete_webhook(&access.tenant, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook", &id))
    }
}
