//! Media: what a post attaches, kept until sent, and its ids on each
//! account's platform.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sqlx::Row;

use super::{Store, StoreError, Tenant};
use crate::model::{new_id, now_ms};

/// A media file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Media {
    /// `med_...`: what a post's part lists in `media`.
    pub id: String,
    /// `image/png`, `video/mp4`, ...
    pub content_type: String,
    /// Bytes.
    pub size: i64,
    /// Unix ms.
    pub created_ms: i64,
}

impl Store {
    /// Keep a media file for `owner`.
    pub async fn create_media(&self, owner: &str, content_type: &str, bytes: &[u8]) -> Result<Media, StoreError> {
        let m = Media { id: new_id("med"), content_type: content_type.to_owned(), size: bytes.len() as i64, created_ms: now_ms() };
        sqlx::query("INSERT INTO posting_media (id, owner, content_type, size, bytes, created_ms) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&m.id)
            .bind(owner)
            .bind(&m.content_type)
            .bind(m.size)
            .bind(B64.encode(bytes))
            .bind(m.created_ms)
            .execute(self.pool())
            .await?;
        Ok(m)
    }

    /// Media `id` if `tenant` may see it.
    pub async fn media(&self, tenant: &Tenant, id: &str) -> Result<Option<Media>, StoreError> {
        let (owner, bind) = tenant.clause(2);
        let row = sqlx::query(&format!("SELECT id, content_type, size, created_ms FROM posting_media WHERE id = $1 AND {owner}"))
            .bind(id)
            .bind(bind)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(r) => Some(Media { id: r.try_get("id")?, content_type: r.try_get("content_type")?, size: r.try_get("size")?, created_ms: r.try_get("created_ms")? }),
            None => None,
        })
    }

    /// A media file's bytes.
    pub async fn media_bytes(&self, id: &str) -> Result<Vec<u8>, StoreError> {
        let text: String = sqlx::query_scalar("SELECT bytes FROM posting_media WHERE id = $1").bind(id).fetch_one(self.pool()).await?;
        B64.decode(text).map_err(|e| StoreError::Corrupt { id: id.to_owned(), column: "bytes", error: e.to_string() })
    }

    /// What `account`'s platform calls media `id`, while it has not expired.
    pub async fn uploaded(&self, id: &str, account: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT remote_id FROM posting_media_uploads WHERE media_id = $1 AND account_id = $2 AND (expires_ms IS NULL OR expires_ms > $3)",
        )
        .bind(id)
        .bind(account)
        .bind(now_ms() + 60_000)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Remember an upload.
    pub async fn save_upload(&self, id: &str, account: &str, remote: &str, expires_ms: Option<i64>) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM posting_media_uploads WHERE media_id = $1 AND account_id = $2").bind(id).bind(account).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO posting_media_uploads (media_id, account_id, remote_id, expires_ms) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(account)
            .bind(remote)
            .bind(expires_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
