//! The dry-run platform: every post goes through the whole pipeline (the
//! gate, the state machine, the audit log) and lands in the local outbox
//! table with a made-up id instead of on a network. The default, so a
//! fresh `starling serve` posts "for real" without any credentials.

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use sqlx::Row;

use super::{Ctx, Me, Outgoing, Platform, PublishError, Published, Remote};
use crate::model::{new_id, now_ms};

/// Posts into `posting_outbox`.
#[derive(Debug, Clone)]
pub struct DryRun {
    db: platform::db::Db,
}

impl DryRun {
    /// The outbox in `db` (whose posting migrations made the table).
    pub fn new(db: &platform::db::Db) -> Self {
        Self { db: db.clone() }
    }
}

/// A database error here means nothing was written: not sent.
fn not_sent(e: sqlx::Error) -> PublishError {
    PublishError::NotSent(format!("outbox: {e}"))
}

impl Platform for DryRun {
    fn name(&self) -> &'static str {
        "dry-run"
    }

    fn rules(&self) -> post_rules::Platform {
        // Counted as X counts, the strictest common case.
        post_rules::Platform::X
    }

    fn needs_credentials(&self) -> bool {
        false
    }

    fn publish<'a>(&'a self, ctx: Ctx<'a>, post: Outgoing<'a>) -> BoxFuture<'a, Result<Published, PublishError>> {
        async move {
            let id = new_id("dry");
            sqlx::query("INSERT INTO posting_outbox (external_id, account_id, text, reply_to, posted_ms) VALUES ($1, $2, $3, $4, $5)")
                .bind(&id)
                .bind(&ctx.account.id)
                .bind(post.text)
                .bind(post.reply_to)
                .bind(now_ms())
                .execute(self.db.pool())
                .await
                .map_err(not_sent)?;
            Ok(Published { id, pause_until_ms: None })
        }
        .boxed()
    }

    fn upload<'a>(&'a self, _ctx: Ctx<'a>, _content_type: &'a str, bytes: &'a [u8]) -> BoxFuture<'a, Result<(String, Option<i64>), PublishError>> {
        async move { Ok((format!("dry_media_{}", bytes.len()), None)) }.boxed()
    }

    fn me<'a>(&'a self, ctx: Ctx<'a>) -> BoxFuture<'a, Result<Me, PublishError>> {
        async move { Ok(Me { id: ctx.account.id.clone(), handle: ctx.account.handle.clone() }) }.boxed()
    }

    fn recent<'a>(&'a self, ctx: Ctx<'a>, _remote_id: &'a str, since_ms: i64) -> BoxFuture<'a, Result<Vec<Remote>, PublishError>> {
        async move {
            let rows = sqlx::query(
                "SELECT external_id, text, posted_ms FROM posting_outbox WHERE account_id = $1 AND posted_ms >= $2 \
                 ORDER BY posted_ms DESC LIMIT 100",
            )
            .bind(&ctx.account.id)
            .bind(since_ms)
            .fetch_all(self.db.pool())
            .await
            .map_err(not_sent)?;
            rows.iter()
                .map(|r| {
                    Ok(Remote {
                        id: r.try_get("external_id").map_err(not_sent)?,
                        text: r.try_get("text").map_err(not_sent)?,
                        created_ms: r.try_get("posted_ms").map_err(not_sent)?,
                    })
                })
                .collect()
        }
        .boxed()
    }
}
