//! Campaigns.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{json, to_json, Store, StoreError, Tenant};
use crate::model::{new_id, now_ms, Campaign};

/// What creating a campaign takes (checked by the caller).
#[derive(Debug, Clone)]
pub struct NewCampaign {
    /// The account it posts from.
    pub account_id: String,
    /// Its name.
    pub name: String,
    /// What it is about.
    pub niche: String,
    /// Weekday -> `HH:MM` times in the account's zone.
    pub slots: BTreeMap<String, Vec<String>>,
    /// The link its posts carry.
    pub link_url: Option<String>,
    /// `hashtag`, `paid_partnership` or `none`.
    pub disclosure: String,
    /// Words its posts must not contain.
    pub banned_terms: Vec<String>,
    /// A/B variant names.
    pub variants: Vec<String>,
    /// Product ids.
    pub products: Vec<String>,
    /// `required` or `auto`.
    pub approval: String,
    /// Budget for posts with links, USD.
    pub link_budget_usd: Option<f64>,
    /// A cron expression (checked by the caller).
    pub cron: Option<String>,
    /// The end, Unix ms.
    pub ends_ms: Option<i64>,
    /// Most posts.
    pub max_posts: Option<i64>,
    /// Fills its own slots.
    pub autofill: bool,
}

const COLUMNS: &str = "id, owner, account_id, name, niche, status, slots, link_url, disclosure, banned_terms, variants, products, \
                       approval, link_budget_usd, cron, ends_ms, max_posts, autofill, created_ms";

fn campaign(row: &AnyRow) -> Result<Campaign, StoreError> {
    let id: String = row.try_get("id")?;
    Ok(Campaign {
        owner: row.try_get("owner")?,
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        niche: row.try_get("niche")?,
        status: row.try_get("status")?,
        slots: json(&id, "slots", &row.try_get::<String, _>("slots")?)?,
        link_url: row.try_get("link_url")?,
        disclosure: row.try_get("disclosure")?,
        banned_terms: json(&id, "banned_terms", &row.try_get::<String, _>("banned_terms")?)?,
        variants: json(&id, "variants", &row.try_get::<String, _>("variants")?)?,
        products: json(&id, "products", &row.try_get::<String, _>("products")?)?,
        approval: row.try_get("approval")?,
        link_budget_usd: row.try_get("link_budget_usd")?,
        cron: row.try_get("cron")?,
        ends_ms: row.try_get("ends_ms")?,
        max_posts: row.try_get("max_posts")?,
        autofill: row.try_get::<i64, _>("autofill")? != 0,
        created_ms: row.try_get("created_ms")?,
        id,
    })
}

impl Store {
    /// Create a campaign owned by `owner` (active).
    pub async fn create_campaign(&self, owner: &str, new: &NewCampaign) -> Result<Campaign, StoreError> {
        let id = new_id("cmp");
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO posting_campaigns (id, owner, account_id, name, niche, status, slots, link_url, disclosure, banned_terms, \
             variants, products, approval, link_budget_usd, cron, ends_ms, max_posts, autofill, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, $9, $10, $11, $12, NULLIF($13, 'NaN'), $15, $16, $17, $18, $14, $14)",
        )
        .bind(&id)
        .bind(owner)
        .bind(&new.account_id)
        .bind(&new.name)
        .bind(&new.niche)
        .bind(to_json(&new.slots))
        .bind(&new.link_url)
        .bind(&new.disclosure)
        .bind(to_json(&new.banned_terms))
        .bind(to_json(&new.variants))
        .bind(to_json(&new.products))
        .bind(&new.approval)
        .bind(platform::db::nullable_f64(new.link_budget_usd))
        .bind(now)
        .bind(&new.cron)
        .bind(new.ends_ms)
        .bind(new.max_posts)
        .bind(i64::from(new.autofill))
        .execute(&mut *tx)
        .await?;
        super::webhooks::enqueue(&mut tx, owner, "campaign.created", serde_json::json!({"campaign_id": id, "name": new.name})).await?;
        tx.commit().await?;
        self.campaign(&Tenant::All, &id).await?.ok_or_else(|| StoreError::Conflict(format!("campaign {id} vanished")))
    }

    /// One campaign, if `tenant` may see it.
    pub async fn campaign(&self, tenant: &Tenant, id: &str) -> Result<Option<Campaign>, StoreError> {
        let (owner, bind) = tenant.clause(2);
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM posting_campaigns WHERE id = $1 AND {owner}"))
            .bind(id)
            .bind(bind)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(campaign).transpose()
    }

    /// The campaigns `tenant` may see, oldest first.
    pub async fn campaigns(&self, tenant: &Tenant) -> Result<Vec<Campaign>, StoreError> {
        let (owner, bind) = tenant.clause(1);
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM posting_campaigns WHERE {owner} ORDER BY created_ms, id"))
            .bind(bind)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(campaign).collect()
    }

    /// Campaigns that fill their own slots, while active.
    pub async fn autofill_campaigns(&self) -> Result<Vec<Campaign>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM posting_campaigns WHERE autofill = 1 AND status = 'active' ORDER BY created_ms"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(campaign).collect()
    }

    /// A campaign's posts that count against its `max_posts` (all but cancelled).
    pub async fn campaign_posts(&self, id: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM posting_posts WHERE campaign_id = $1 AND state <> 'cancelled'").bind(id).fetch_one(self.pool()).await?)
    }

    /// Set a campaign's status (`active`, `paused`, `completed`).
    pub async fn set_campaign_status(&self, id: &str, status: &str) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE posting_campaigns SET status = $1, updated_ms = $2 WHERE id = $3")
            .bind(status)
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let owner: String = sqlx::query_scalar("SELECT owner FROM posting_campaigns WHERE id = $1").bind(id).fetch_one(&mut *tx).await?;
        super::webhooks::enqueue(&mut tx, &owner, "campaign.status", serde_json::json!({"campaign_id": id, "status": status})).await?;
        tx.commit().await?;
        Ok(())
    }
}
