//! Products (the affiliate store's catalogue), short links and their clicks.

use std::collections::HashSet;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{json, to_json, Store, StoreError, Tenant};
use crate::model::{new_id, now_ms};

/// A product as imported.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Product {
    /// `prd_...` (stable across imports: the SKU is the key).
    #[serde(default)]
    pub id: String,
    /// The feed's own key.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Product page.
    pub url: String,
    /// Price, in `currency`.
    pub price: Option<f64>,
    /// ISO 4217.
    pub currency: Option<String>,
    /// Commission as a fraction of the price (0.08 for 8%).
    pub commission_rate: Option<f64>,
    /// Selling points.
    pub features: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
}

/// A short link.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Link {
    /// `/r/{code}`.
    pub code: String,
    /// Where it goes (without the UTM parameters, which are added).
    pub target: String,
    /// Its campaign.
    pub campaign_id: Option<String>,
    /// Its post.
    pub post_id: Option<String>,
    /// Its product.
    pub product_id: Option<String>,
    /// Its A/B variant.
    pub variant: Option<String>,
    /// `utm_source`.
    pub utm_source: Option<String>,
    /// `utm_medium`.
    pub utm_medium: Option<String>,
    /// `utm_campaign`.
    pub utm_campaign: Option<String>,
    /// `utm_content`.
    pub utm_content: Option<String>,
    /// Unix ms.
    pub created_ms: i64,
}

fn product(row: &AnyRow) -> Result<Product, StoreError> {
    let id: String = row.try_get("id")?;
    Ok(Product {
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        url: row.try_get("url")?,
        price: row.try_get("price")?,
        currency: row.try_get("currency")?,
        commission_rate: row.try_get("commission_rate")?,
        features: json(&id, "features", &row.try_get::<String, _>("features")?)?,
        tags: json(&id, "tags", &row.try_get::<String, _>("tags")?)?,
        id,
    })
}

const LINK_COLUMNS: &str = "code, target, campaign_id, post_id, product_id, variant, utm_source, utm_medium, utm_campaign, utm_content, created_ms";

fn link(row: &AnyRow) -> Result<Link, StoreError> {
    Ok(Link {
        code: row.try_get("code")?,
        target: row.try_get("target")?,
        campaign_id: row.try_get("campaign_id")?,
        post_id: row.try_get("post_id")?,
        product_id: row.try_get("product_id")?,
        variant: row.try_get("variant")?,
        utm_source: row.try_get("utm_source")?,
        utm_medium: row.try_get("utm_medium")?,
        utm_campaign: row.try_get("utm_campaign")?,
        utm_content: row.try_get("utm_content")?,
        created_ms: row.try_get("created_ms")?,
    })
}

impl Store {
    /// Insert or update `products` (by SKU) for `owner`, all in one
    /// transaction: (created, updated).
    pub async fn upsert_products(&self, owner: &str, products: &[Product]) -> Result<(usize, usize), StoreError> {
        let mut tx = self.pool().begin().await?;
        let now = now_ms();
        let mut created = 0;
        for p in products {
            let done = sqlx::query(
                "UPDATE posting_products SET name = $1, url = $2, price = NULLIF($3, 'NaN'), currency = $4, \
                 commission_rate = NULLIF($5, 'NaN'), features = $6, tags = $7, updated_ms = $8 WHERE owner = $9 AND sku = $10",
            )
            .bind(&p.name)
            .bind(&p.url)
            .bind(platform::db::nullable_f64(p.price))
            .bind(&p.currency)
            .bind(platform::db::nullable_f64(p.commission_rate))
            .bind(to_json(&p.features))
            .bind(to_json(&p.tags))
            .bind(now)
            .bind(owner)
            .bind(&p.sku)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                sqlx::query(
                    "INSERT INTO posting_products (id, owner, sku, name, url, price, currency, commission_rate, features, tags, created_ms, updated_ms) \
                     VALUES ($1, $2, $3, $4, $5, NULLIF($6, 'NaN'), $7, NULLIF($8, 'NaN'), $9, $10, $11, $11)",
                )
                .bind(new_id("prd"))
                .bind(owner)
                .bind(&p.sku)
                .bind(&p.name)
                .bind(&p.url)
                .bind(platform::db::nullable_f64(p.price))
                .bind(&p.currency)
                .bind(platform::db::nullable_f64(p.commission_rate))
                .bind(to_json(&p.features))
                .bind(to_json(&p.tags))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                created += 1;
            }
        }
        tx.commit().await?;
        Ok((created, products.len() - created))
    }

    /// The products `tenant` may see, by SKU.
    pub async fn products(&self, tenant: &Tenant) -> Result<Vec<Product>, StoreError> {
        let (owner, bind) = tenant.clause(1);
        let rows = sqlx::query(&format!("SELECT id, sku, name, url, price, currency, commission_rate, features, tags FROM posting_products WHERE {owner} ORDER BY sku")).bind(bind).fetch_all(self.pool()).await?;
        rows.iter().map(product).collect()
    }

    /// These products of `tenant`, by id (unknown ids are left out).
    pub async fn products_by_id(&self, tenant: &Tenant, ids: &[String]) -> Result<Vec<Product>, StoreError> {
        let wanted: HashSet<&String> = ids.iter().collect();
        Ok(self.products(tenant).await?.into_iter().filter(|p| wanted.contains(&p.id)).collect())
    }

    /// Store a short link for `owner` under a fresh code.
    pub async fn create_link(&self, owner: &str, l: &Link) -> Result<Link, StoreError> {
        use rand::distributions::{Alphanumeric, DistString};
        for _ in 0..5 {
            let code = Alphanumeric.sample_string(&mut rand::thread_rng(), 8);
            let done = sqlx::query(&format!(
                "INSERT INTO posting_links (owner, {LINK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .bind(owner)
            .bind(&code)
            .bind(&l.target)
            .bind(&l.campaign_id)
            .bind(&l.post_id)
            .bind(&l.product_id)
            .bind(&l.variant)
            .bind(&l.utm_source)
            .bind(&l.utm_medium)
            .bind(&l.utm_campaign)
            .bind(&l.utm_content)
            .bind(now_ms())
            .execute(self.pool())
            .await;
            match done {
                Ok(_) => return Ok(Link { code, created_ms: now_ms(), ..l.clone() }),
                Err(e) if super::is_unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict("no free link code after five tries".into()))
    }

    /// A link by code, whoever owns it (the redirect is public).
    pub async fn link(&self, code: &str) -> Result<Option<Link>, StoreError> {
        let row = sqlx::query(&format!("SELECT {LINK_COLUMNS} FROM posting_links WHERE code = $1")).bind(code).fetch_optional(self.pool()).await?;
        row.as_ref().map(link).transpose()
    }

    /// The links `tenant` may see, with their human clicks, newest first.
    pub async fn links(&self, tenant: &Tenant, campaign: Option<&str>) -> Result<Vec<(Link, i64)>, StoreError> {
        let (owner, bind) = tenant.clause(1);
        let rows = sqlx::query(&format!(
            "SELECT {LINK_COLUMNS}, (SELECT COUNT(*) FROM posting_clicks c WHERE c.code = posting_links.code AND c.bot = 0) AS clicks \
             FROM posting_links WHERE {owner} AND ($2 = '' OR campaign_id = $2) ORDER BY created_ms DESC, code"
        ))
        .bind(bind)
        .bind(campaign.unwrap_or_default())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok((link(r)?, r.try_get("clicks")?))).collect()
    }

    /// Tie a link to the post that carries it.
    pub async fn set_link_post(&self, code: &str, post: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE posting_links SET post_id = $1 WHERE code = $2").bind(post).bind(code).execute(self.pool()).await?;
        Ok(())
    }

    /// Record a visit of `code`.
    pub async fn record_click(&self, code: &str, referrer_host: Option<&str>, agent: &str, bot: bool) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO posting_clicks (id, code, at_ms, referrer_host, agent, bot) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(new_id("clk"))
            .bind(code)
            .bind(now_ms())
            .bind(referrer_host)
            .bind(agent)
            .bind(i64::from(bot))
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
