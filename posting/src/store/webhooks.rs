//! Webhooks and their deliveries. A delivery is written in the same
//! transaction as the change it tells of ([`enqueue`]), so no change is
//! ever committed without its messages, and none is lost to a restart.

use sqlx::{Any, Row, Transaction};

use super::{json, to_json, Store, StoreError, Tenant};
use crate::model::{new_id, now_ms};

/// A receiver of events.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Webhook {
    /// `whk_...`.
    pub id: String,
    /// Where events are posted.
    pub url: String,
    /// Which (`post.scheduled`, `post.posted`, `post.failed`,
    /// `post.unknown`, `post.blocked`, `campaign.created`, `campaign.status`).
    pub events: Vec<String>,
    /// Unix ms.
    pub created_ms: i64,
}

/// A message to deliver.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `Starling-Delivery` (receivers de-duplicate on it: delivery is at
    /// least once).
    pub id: String,
    /// Its webhook's URL.
    pub url: String,
    /// Its webhook's sealed secret.
    pub secret: String,
    /// Its webhook's id (the secret is sealed for it).
    pub webhook_id: String,
    /// The event type.
    pub event: String,
    /// The JSON body.
    pub payload: String,
    /// Tries so far.
    pub attempts: i64,
}

/// Every event a webhook can ask for.
pub const EVENTS: [&str; 7] = ["post.scheduled", "post.posted", "post.failed", "post.unknown", "post.blocked", "campaign.created", "campaign.status"];

/// Queue `event` (with `data`) for every active webhook of `owner` that
/// asked for it, inside `tx`.
pub(super) async fn enqueue(tx: &mut Transaction<'_, Any>, owner: &str, event: &str, data: serde_json::Value) -> Result<(), StoreError> {
    let key = new_id("evt");
    let now = now_ms();
    let payload = serde_json::json!({"id": key, "type": event, "created_ms": now, "data": data}).to_string();
    sqlx::query(
        "INSERT INTO posting_webhook_deliveries (id, webhook_id, event, payload, attempts, next_ms, state, created_ms) \
         SELECT id || '.' || $1, id, $2, $3, 0, $4, 'pending', $4 FROM posting_webhooks \
         WHERE owner = $5 AND active = 1 AND events LIKE $6",
    )
    .bind(&key)
    .bind(event)
    .bind(&payload)
    .bind(now)
    .bind(owner)
    .bind(format!("%\"{event}\"%"))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Register a webhook for `owner` with its sealed secret.
    pub async fn create_webhook(&self, owner: &str, id: &str, url: &str, sealed_secret: &str, events: &[String]) -> Result<Webhook, StoreError> {
        let now = now_ms();
        sqlx::query("INSERT INTO posting_webhooks (id, owner, url, secret, events, active, created_ms) VALUES ($1, $2, $3, $4, $5, 1, $6)")
            .bind(id)
            .bind(owner)
            .bind(url)
            .bind(sealed_secret)
            .bind(to_json(&events))
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(Webhook { id: id.to_owned(), url: url.to_owned(), events: events.to_vec(), created_ms: now })
    }

    /// The active webhooks `tenant` may see.
    pub async fn webhooks(&self, tenant: &Tenant) -> Result<Vec<Webhook>, StoreError> {
        let (owner, bind) = tenant.clause(1);
        let rows = sqlx::query(&format!("SELECT id, url, events, created_ms FROM posting_webhooks WHERE active = 1 AND {owner} ORDER BY created_ms"))
            .bind(bind)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                Ok(Webhook { events: json(&id, "events", &r.try_get::<String, _>("events")?)?, url: r.try_get("url")?, created_ms: r.try_get("created_ms")?, id })
            })
            .collect()
    }

    /// Every sealed secret: (account or webhook id, sealed, version; a
    /// webhook's version is 0).
    pub async fn sealed_secrets(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let mut out = Vec::new();
        for r in sqlx::query("SELECT id, credentials, credentials_version FROM posting_accounts WHERE credentials IS NOT NULL").fetch_all(self.pool()).await? {
            out.push((r.try_get("id")?, r.try_get("credentials")?, r.try_get("credentials_version")?));
        }
        for r in sqlx::query("SELECT id, secret FROM posting_webhooks WHERE active = 1").fetch_all(self.pool()).await? {
            out.push((r.try_get("id")?, r.try_get("secret")?, 0));
        }
        Ok(out)
    }

    /// Store a secret sealed again (an account's only if still at `version`).
    pub async fn replace_secret(&self, id: &str, version: i64, sealed: &str) -> Result<bool, StoreError> {
        if id.starts_with("whk_") {
            let done = sqlx::query("UPDATE posting_webhooks SET secret = $1 WHERE id = $2").bind(sealed).bind(id).execute(self.pool()).await?;
            return Ok(done.rows_affected() == 1);
        }
        self.replace_credentials(id, version, sealed).await
    }

    /// Stop a webhook (its pending messages are dropped).
    pub async fn delete_webhook(&self, tenant: &Tenant, id: &str) -> Result<bool, StoreError> {
        let (owner, bind) = tenant.clause(2);
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(&format!("UPDATE posting_webhooks SET active = 0 WHERE id = $1 AND active = 1 AND {owner}"))
            .bind(id)
            .bind(bind)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE posting_webhook_deliveries SET state = 'failed', next_ms = NULL, last_error = 'webhook deleted' WHERE webhook_id = $1 AND state = 'pending'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Take up to `limit` deliveries due by `now`, each held for `hold_ms`
    /// (so another dispatcher does not send it meanwhile).
    pub async fn due_deliveries(&self, now: i64, hold_ms: i64, limit: i64) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.webhook_id, d.event, d.payload, d.attempts, d.next_ms, w.url, w.secret FROM posting_webhook_deliveries d \
             JOIN posting_webhooks w ON w.id = d.webhook_id WHERE d.state = 'pending' AND d.next_ms <= $1 ORDER BY d.next_ms LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut taken = Vec::new();
        for r in &rows {
            let id: String = r.try_get("id")?;
            let held = sqlx::query("UPDATE posting_webhook_deliveries SET next_ms = $1 WHERE id = $2 AND state = 'pending' AND next_ms = $3")
                .bind(now + hold_ms)
                .bind(&id)
                .bind(r.try_get::<i64, _>("next_ms")?)
                .execute(self.pool())
                .await?;
            if held.rows_affected() == 1 {
                taken.push(Delivery {
                    id,
                    url: r.try_get("url")?,
                    secret: r.try_get("secret")?,
                    webhook_id: r.try_get("webhook_id")?,
                    event: r.try_get("event")?,
                    payload: r.try_get("payload")?,
                    attempts: r.try_get("attempts")?,
                });
            }
        }
        Ok(taken)
    }

    /// A delivery's outcome: delivered, retried at `next_ms`, or given up (`next_ms` None).
    pub async fn delivery_done(&self, id: &str, delivered: bool, next_ms: Option<i64>, error: Option<&str>) -> Result<(), StoreError> {
        let state = if delivered { "delivered" } else if next_ms.is_some() { "pending" } else { "failed" };
        sqlx::query(
            "UPDATE posting_webhook_deliveries SET state = $1, next_ms = $2, last_error = $3, attempts = attempts + 1, \
             delivered_ms = $4 WHERE id = $5",
        )
        .bind(state)
        .bind(if delivered { None } else { next_ms })
        .bind(error)
        .bind(delivered.then(now_ms))
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Deliveries of a webhook by state (for the API and tests).
    pub async fn deliveries(&self, webhook: &str) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT event, state, attempts FROM posting_webhook_deliveries WHERE webhook_id = $1 ORDER BY created_ms, id")
            .bind(webhook)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok((r.try_get("event")?, r.try_get("state")?, r.try_get("attempts")?))).collect()
    }
}
