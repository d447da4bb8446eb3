//! Metric snapshots and what the analytics read: posts out in a range,
//! each post's latest counts, and human clicks on links.

use std::collections::HashMap;

use sqlx::Row;

use super::{Store, StoreError, Tenant};
use crate::model::now_ms;
use crate::platforms::Metrics;

/// A human click on a link, with what the link belongs to.
#[derive(Debug, Clone)]
pub struct Click {
    /// Link code.
    pub code: String,
    /// Its campaign, post, product and variant.
    pub campaign_id: Option<String>,
    /// The post.
    pub post_id: Option<String>,
    /// The product.
    pub product_id: Option<String>,
    /// The variant.
    pub variant: Option<String>,
}

impl Store {
    /// `account`'s posts posted since `since_ms` (newest first, at most
    /// `limit`): (post id, external ids).
    pub async fn posted_since(&self, account: &str, since_ms: i64, limit: i64) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, external_ids FROM posting_posts WHERE account_id = $1 AND state = 'posted' AND posted_ms >= $2 \
             ORDER BY posted_ms DESC LIMIT $3",
        )
        .bind(account)
        .bind(since_ms)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let ids = super::json(&id, "external_ids", &r.try_get::<String, _>("external_ids")?)?;
                Ok((id, ids))
            })
            .collect()
    }

    /// When `account`'s metrics were last read.
    pub async fn last_metrics_read(&self, account: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MAX(at_ms) FROM posting_metrics WHERE account_id = $1").bind(account).fetch_one(self.pool()).await?)
    }

    /// Keep one reading: (post id, external id, counts) of `account`.
    pub async fn save_metrics(&self, account: &str, readings: &[(String, String, Metrics)]) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        for (post, external, m) in readings {
            sqlx::query(
                "INSERT INTO posting_metrics (external_id, post_id, account_id, at_ms, impressions, likes, reposts, replies, quotes, bookmarks, url_clicks) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(external)
            .bind(post)
            .bind(account)
            .bind(now)
            .bind(m.impressions)
            .bind(m.likes)
            .bind(m.reposts)
            .bind(m.replies)
            .bind(m.quotes)
            .bind(m.bookmarks)
            .bind(m.url_clicks)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Each post's latest counts (summed over its parts).
    pub async fn latest_metrics(&self, post_ids: &[String]) -> Result<HashMap<String, Metrics>, StoreError> {
        let mut out: HashMap<String, Metrics> = HashMap::new();
        for chunk in post_ids.chunks(200) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT m.post_id, m.impressions, m.likes, m.reposts, m.replies, m.quotes, m.bookmarks, m.url_clicks FROM posting_metrics m \
                 WHERE m.post_id IN ({}) AND m.at_ms = (SELECT MAX(at_ms) FROM posting_metrics n WHERE n.external_id = m.external_id)",
                marks.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for r in q.fetch_all(self.pool()).await? {
                let e = out.entry(r.try_get("post_id")?).or_default();
                e.impressions += r.try_get::<i64, _>("impressions")?;
                e.likes += r.try_get::<i64, _>("likes")?;
                e.reposts += r.try_get::<i64, _>("reposts")?;
                e.replies += r.try_get::<i64, _>("replies")?;
                e.quotes += r.try_get::<i64, _>("quotes")?;
                e.bookmarks += r.try_get::<i64, _>("bookmarks")?;
                if let Some(c) = r.try_get::<Option<i64>, _>("url_clicks")? {
                    e.url_clicks = Some(e.url_clicks.unwrap_or(0) + c);
                }
            }
        }
        Ok(out)
    }

    /// Human clicks in `[from, to)` on the links `tenant` may see.
    pub async fn clicks(&self, tenant: &Tenant, from_ms: i64, to_ms: i64) -> Result<Vec<Click>, StoreError> {
        let (owner, bind) = tenant.clause(3);
        let owner = owner.replace("owner", "l.owner");
        let rows = sqlx::query(&format!(
            "SELECT l.code, l.campaign_id, l.post_id, l.product_id, l.variant FROM posting_clicks c \
             JOIN posting_links l ON l.code = c.code WHERE c.bot = 0 AND c.at_ms >= $1 AND c.at_ms < $2 AND {owner}"
        ))
        .bind(from_ms)
        .bind(to_ms)
        .bind(bind)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Click {
                    code: r.try_get("code")?,
                    campaign_id: r.try_get("campaign_id")?,
                    post_id: r.try_get("post_id")?,
                    product_id: r.try_get("product_id")?,
                    variant: r.try_get("variant")?,
                })
            })
            .collect()
    }

    /// Posts of `tenant` that went out in `[from, to)`.
    pub async fn posted_between(&self, tenant: &Tenant, from_ms: i64, to_ms: i64) -> Result<Vec<crate::model::Post>, StoreError> {
        let (owner, bind) = tenant.clause(3);
        let ids: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM posting_posts WHERE state = 'posted' AND posted_ms >= $1 AND posted_ms < $2 AND {owner} ORDER BY posted_ms"
        ))
        .bind(from_ms)
        .bind(to_ms)
        .bind(bind)
        .fetch_all(self.pool())
        .await?;
        let mut posts = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = self.post(&Tenant::All, &id).await? {
                posts.push(p);
            }
        }
        Ok(posts)
    }
}
