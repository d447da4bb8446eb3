//! Posts, their events, and the dispatcher's claims: a claim takes due
//! posts under a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so
//! replicas never take the same post; SQLite has one writer), and every
//! later step is fenced on the lease's owner.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{json, to_json, Store, StoreError, Tenant};
use crate::model::{new_id, now_ms, Part, Post, PostEvent, State};

/// What creating a post takes (checked by the caller).
#[derive(Debug, Clone)]
pub struct NewPost {
    /// The account it goes out from.
    pub account_id: String,
    /// Its campaign.
    pub campaign_id: Option<String>,
    /// Its A/B variant.
    pub variant: Option<String>,
    /// The post or thread.
    pub parts: Vec<Part>,
    /// Promotes something for a commission.
    pub affiliate: bool,
    /// X's paid-partnership label.
    pub paid_partnership: bool,
    /// X's made-with-AI label.
    pub made_with_ai: bool,
    /// `Draft`, `Approved` or `Scheduled`.
    pub state: State,
    /// When (with `Scheduled`).
    pub scheduled_ms: Option<i64>,
}

/// Which posts a listing wants.
#[derive(Debug, Clone, Default)]
pub struct PostFilter {
    /// In this state.
    pub state: Option<State>,
    /// From this account.
    pub account_id: Option<String>,
    /// Of this campaign.
    pub campaign_id: Option<String>,
    /// Older than this `(created_ms, id)` (the page before ended there).
    pub before: Option<(i64, String)>,
    /// At most this many.
    pub limit: i64,
}

/// A post the dispatcher holds under its lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The post.
    pub post: Post,
    /// When it was claimed (its `attempt_started_ms` for an unknown one).
    pub attempt_started_ms: Option<i64>,
}

/// A state change: from any of `from`, to `to`, setting the given columns,
/// optionally only while `lease` holds it; written with its event.
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    /// States it may leave.
    pub from: &'a [State],
    /// State it enters.
    pub to: State,
    /// Only while this dispatcher holds the lease.
    pub lease: Option<&'a str>,
    /// Only while the lease has run out before this (Unix ms): what takes
    /// a stopped dispatcher's post over must not take one whose lease was
    /// just extended.
    pub expired_by: Option<i64>,
    /// Columns to set.
    pub set: Vec<(&'static str, Value)>,
    /// Why, for the event.
    pub detail: Option<String>,
}

/// A column value a [`Transition`] sets.
#[derive(Debug, Clone)]
pub enum Value {
    /// An integer (or NULL).
    Int(Option<i64>),
    /// A text (or NULL).
    Text(Option<String>),
}

const COLUMNS: &str = "id, owner, account_id, campaign_id, variant, parts, affiliate, paid_partnership, made_with_ai, state, \
                       scheduled_ms, due_ms, attempts, attempt_started_ms, first_try_ms, external_ids, last_error, posted_ms, created_ms, updated_ms";

fn post(row: &AnyRow) -> Result<Post, StoreError> {
    let id: String = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    Ok(Post {
        owner: row.try_get("owner")?,
        account_id: row.try_get("account_id")?,
        campaign_id: row.try_get("campaign_id")?,
        variant: row.try_get("variant")?,
        parts: json(&id, "parts", &row.try_get::<String, _>("parts")?)?,
        affiliate: row.try_get::<i64, _>("affiliate")? != 0,
        paid_partnership: row.try_get::<i64, _>("paid_partnership")? != 0,
        made_with_ai: row.try_get::<i64, _>("made_with_ai")? != 0,
        state: state.parse().map_err(|error| StoreError::Corrupt { id: id.clone(), column: "state", error })?,
        scheduled_ms: row.try_get("scheduled_ms")?,
        due_ms: row.try_get("due_ms")?,
        attempts: row.try_get("attempts")?,
        first_try_ms: row.try_get("first_try_ms")?,
        external_ids: json(&id, "external_ids", &row.try_get::<String, _>("external_ids")?)?,
        last_error: row.try_get("last_error")?,
        posted_ms: row.try_get("posted_ms")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
        id,
    })
}

/// The webhook event a change of state is, if any: what a person or a
/// receiver acts on, not the dispatcher's own steps (a claim, a retry
/// put back).
fn webhook_event(from: Option<State>, to: State) -> Option<&'static str> {
    match (from, to) {
        (None | Some(State::Draft | State::Approved | State::Scheduled | State::Unknown | State::Blocked | State::Failed), State::Scheduled) => {
            Some("post.scheduled")
        }
        (_, State::Posted) => Some("post.posted"),
        (_, State::Failed) => Some("post.failed"),
        (Some(f), State::Unknown) if f != State::Unknown => Some("post.unknown"),
        (_, State::Blocked) => Some("post.blocked"),
        _ => None,
    }
}

async fn event(tx: &mut Transaction<'_, Any>, id: &str, from: Option<State>, to: State, detail: Option<&str>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO posting_post_events (id, post_id, seq, at_ms, from_state, to_state, detail) \
         VALUES ($1, $2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM posting_post_events WHERE post_id = $2), $3, $4, $5, $6)",
    )
    .bind(new_id("evt"))
    .bind(id)
    .bind(now_ms())
    .bind(from.map(State::as_str))
    .bind(to.as_str())
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    if let Some(kind) = webhook_event(from, to) {
        let row = sqlx::query("SELECT owner, external_ids, campaign_id FROM posting_posts WHERE id = $1").bind(id).fetch_one(&mut **tx).await?;
        let owner: String = row.try_get("owner")?;
        let external: Vec<String> = json(id, "external_ids", &row.try_get::<String, _>("external_ids")?)?;
        let data = serde_json::json!({
            "post_id": id, "campaign_id": row.try_get::<Option<String>, _>("campaign_id")?,
            "from": from.map(State::as_str), "to": to.as_str(), "detail": detail, "external_ids": external,
        });
        super::webhooks::enqueue(tx, &owner, kind, data).await?;
    }
    Ok(())
}

impl Store {
    /// Create a post owned by `owner`; committed when this returns.
    pub async fn create_post(&self, owner: &str, new: &NewPost) -> Result<Post, StoreError> {
        let id = new_id("post");
        let now = now_ms();
        let due = (new.state == State::Scheduled).then_some(new.scheduled_ms).flatten();
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO posting_posts (id, owner, account_id, campaign_id, variant, parts, affiliate, paid_partnership, made_with_ai, \
             has_link, state, scheduled_ms, due_ms, attempts, external_ids, reconcile_checks, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, '[]', 0, $14, $14)",
        )
        .bind(&id)
        .bind(owner)
        .bind(&new.account_id)
        .bind(&new.campaign_id)
        .bind(&new.variant)
        .bind(to_json(&new.parts))
        .bind(i64::from(new.affiliate))
        .bind(i64::from(new.paid_partnership))
        .bind(i64::from(new.made_with_ai))
        .bind(i64::from(Post::has_link(&new.parts)))
        .bind(new.state.as_str())
        .bind(new.scheduled_ms)
        .bind(due)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        event(&mut tx, &id, None, new.state, None).await?;
        tx.commit().await?;
        self.post(&Tenant::All, &id).await?.ok_or_else(|| StoreError::Conflict(format!("post {id} vanished")))
    }

    /// One post, if `tenant` may see it.
    pub async fn post(&self, tenant: &Tenant, id: &str) -> Result<Option<Post>, StoreError> {
        let (owner, bind) = tenant.clause(2);
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM posting_posts WHERE id = $1 AND {owner}"))
            .bind(id)
            .bind(bind)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(post).transpose()
    }

    /// A page of the posts `tenant` may see, newest first.
    pub async fn posts(&self, tenant: &Tenant, filter: &PostFilter) -> Result<Vec<Post>, StoreError> {
        let (owner, owner_bind) = tenant.clause(1);
        let mut sql = format!("SELECT {COLUMNS} FROM posting_posts WHERE {owner}");
        let mut binds = vec![Value::Text(Some(owner_bind))];
        let mut bind = |sql: &mut String, condition: &str, v: Value| {
            binds.push(v);
            sql.push_str(&condition.replace("$n", &format!("${}", binds.len())));
        };
        if let Some(s) = filter.state {
            bind(&mut sql, " AND state = $n", Value::Text(Some(s.as_str().into())));
        }
        if let Some(a) = &filter.account_id {
            bind(&mut sql, " AND account_id = $n", Value::Text(Some(a.clone())));
        }
        if let Some(c) = &filter.campaign_id {
            bind(&mut sql, " AND campaign_id = $n", Value::Text(Some(c.clone())));
        }
        if let Some((ms, id)) = &filter.before {
            // The pair comparison spelled out (the same on SQLite and PostgreSQL).
            bind(&mut sql, " AND (created_ms < $n", Value::Int(Some(*ms)));
            bind(&mut sql, " OR (created_ms = $n", Value::Int(Some(*ms)));
            bind(&mut sql, " AND id < $n))", Value::Text(Some(id.clone())));
        }
        sql.push_str(&format!(" ORDER BY created_ms DESC, id DESC LIMIT {}", filter.limit.clamp(1, 500)));
        let mut q = sqlx::query(&sql);
        for v in binds {
            q = match v {
                Value::Int(i) => q.bind(i),
                Value::Text(t) => q.bind(t),
            };
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter().map(post).collect()
    }

    /// A post's events, oldest first.
    pub async fn events(&self, id: &str) -> Result<Vec<PostEvent>, StoreError> {
        let rows = sqlx::query("SELECT at_ms, from_state, to_state, detail FROM posting_post_events WHERE post_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PostEvent {
                    at_ms: r.try_get("at_ms")?,
                    from: r.try_get("from_state")?,
                    to: r.try_get("to_state")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// Apply `t` to post `id`: false when the post was in none of
    /// `t.from` (or the lease is not `t.lease`'s), and nothing changed.
    pub async fn transition(&self, id: &str, t: Transition<'_>) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let mut sets = String::from("state = $1, updated_ms = $2");
        for (i, (column, _)) in t.set.iter().enumerate() {
            sets.push_str(&format!(", {column} = ${}", i + 3));
        }
        let k = t.set.len() + 3;
        let mut lease = if t.lease.is_some() { format!(" AND lease_owner = ${}", k + 2) } else { String::new() };
        if let Some(by) = t.expired_by {
            // A number, not a bind: it keeps the placeholders in order.
            lease.push_str(&format!(" AND lease_until_ms < {by}"));
        }
        let sql = format!("UPDATE posting_posts SET {sets} WHERE id = ${k} AND state = ${}{lease}", k + 1);
        // One statement per possible origin, so the event knows which it
        // left (the first statement of the transaction writes: SQLite
        // takes its write lock at once, never upgrading a read).
        for &from in t.from {
            let mut q = sqlx::query(&sql).bind(t.to.as_str()).bind(now_ms());
            for (_, v) in &t.set {
                q = match v {
                    Value::Int(i) => q.bind(*i),
                    Value::Text(s) => q.bind(s.clone()),
                };
            }
            q = q.bind(id).bind(from.as_str());
            if let Some(owner) = t.lease {
                q = q.bind(owner);
            }
            if q.execute(&mut *tx).await?.rows_affected() == 1 {
                event(&mut tx, id, Some(from), t.to, t.detail.as_deref()).await?;
                tx.commit().await?;
                return Ok(true);
            }
        }
        tx.rollback().await?;
        Ok(false)
    }

    /// Take up to `limit` scheduled posts due by `now` of accounts that may
    /// post, under a lease held by `owner` until `until_ms`.
    pub async fn claim(&self, owner: &str, now: i64, until_ms: i64, limit: i64) -> Result<Vec<Claimed>, StoreError> {
        let lock = if self.postgres() { " FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "UPDATE posting_posts SET state = 'claimed', lease_owner = $1, lease_until_ms = $2, updated_ms = $3 \
             WHERE id IN (SELECT id FROM posting_posts WHERE state = 'scheduled' AND due_ms <= $3 \
               AND account_id IN (SELECT id FROM posting_accounts WHERE status = 'active' \
                 AND (paused_until_ms IS NULL OR paused_until_ms <= $3)) \
               ORDER BY due_ms, id LIMIT $4{lock}) \
             RETURNING {COLUMNS}"
        );
        let mut tx = self.pool().begin().await?;
        let rows = sqlx::query(&sql).bind(owner).bind(until_ms).bind(now).bind(limit).fetch_all(&mut *tx).await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let p = post(row)?;
            event(&mut tx, &p.id, Some(State::Scheduled), State::Claimed, Some(owner)).await?;
            claimed.push(Claimed { post: p, attempt_started_ms: None });
        }
        tx.commit().await?;
        claimed.sort_by(|a, b| a.post.due_ms.cmp(&b.post.due_ms).then(a.post.id.cmp(&b.post.id)));
        Ok(claimed)
    }

    /// Posts whose lease ran out: a claimed one was never sent (back to
    /// scheduled); an attempting one may have been (to unknown). Returns
    /// how many of each.
    pub async fn expire_leases(&self, now: i64) -> Result<(usize, usize), StoreError> {
        let expired = |state: &str| {
            sqlx::query("SELECT id FROM posting_posts WHERE state = $1 AND lease_until_ms < $2")
                .bind(state.to_owned())
                .bind(now)
                .fetch_all(self.pool())
        };
        let mut counts = (0, 0);
        for row in expired("claimed").await? {
            let id: String = row.try_get("id")?;
            let t = Transition {
                from: &[State::Claimed],
                to: State::Scheduled,
                lease: None,
                expired_by: Some(now),
                set: vec![("lease_owner", Value::Text(None)), ("lease_until_ms", Value::Int(None))],
                detail: Some("its dispatcher stopped before sending it".into()),
            };
            counts.0 += usize::from(self.transition(&id, t).await?);
        }
        for row in expired("attempting").await? {
            let id: String = row.try_get("id")?;
            let t = Transition {
                from: &[State::Attempting],
                to: State::Unknown,
                lease: None,
                expired_by: Some(now),
                set: vec![
                    ("lease_owner", Value::Text(None)),
                    ("lease_until_ms", Value::Int(None)),
                    ("due_ms", Value::Int(Some(now))),
                    ("last_error", Value::Text(Some("the dispatcher stopped while sending it: whether it arrived is unknown".into()))),
                ],
                detail: Some("lease expired while sending".into()),
            };
            counts.1 += usize::from(self.transition(&id, t).await?);
        }
        Ok(counts)
    }

    /// Unknown posts due for another look at the platform (`due_ms` set).
    pub async fn unknown_due(&self, now: i64, limit: i64) -> Result<Vec<Claimed>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS}, reconcile_checks FROM posting_posts WHERE state = 'unknown' AND due_ms <= $1 ORDER BY due_ms, id LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok(Claimed { post: post(r)?, attempt_started_ms: r.try_get("attempt_started_ms")? })).collect()
    }

    /// How many times an unknown post has been looked for.
    pub async fn reconcile_checks(&self, id: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT reconcile_checks FROM posting_posts WHERE id = $1").bind(id).fetch_one(self.pool()).await?)
    }

    /// Posts of `account` that count against its day `[start, end)`:
    /// posted in it, or sent in it with the outcome not known yet.
    pub async fn posts_in_day(&self, account: &str, start_ms: i64, end_ms: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM posting_posts WHERE account_id = $1 AND \
             ((state = 'posted' AND posted_ms >= $2 AND posted_ms < $3) \
              OR (state IN ('attempting', 'unknown') AND attempt_started_ms >= $2 AND attempt_started_ms < $3))",
        )
        .bind(account)
        .bind(start_ms)
        .bind(end_ms)
        .fetch_one(self.pool())
        .await?)
    }

    /// The texts of `account`'s posts since `since_ms` that are out or on
    /// their way (posted, attempting, unknown), other than `except`.
    pub async fn recent_texts(&self, account: &str, since_ms: i64, except: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, parts FROM posting_posts WHERE account_id = $1 AND id <> $2 AND state IN ('posted', 'attempting', 'unknown') \
             AND COALESCE(posted_ms, updated_ms) >= $3 ORDER BY updated_ms DESC LIMIT 1000",
        )
        .bind(account)
        .bind(except)
        .bind(since_ms)
        .fetch_all(self.pool())
        .await?;
        let mut texts = Vec::new();
        for r in &rows {
            let id: String = r.try_get("id")?;
            let parts: Vec<Part> = json(&id, "parts", &r.try_get::<String, _>("parts")?)?;
            texts.extend(parts.into_iter().map(|p| p.text));
        }
        Ok(texts)
    }

    /// The times `account`'s posts hold from `from_ms` on (drafts with a
    /// time hold theirs too).
    pub async fn taken_slots(&self, account: &str, from_ms: i64) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT scheduled_ms FROM posting_posts WHERE account_id = $1 AND scheduled_ms >= $2 \
             AND state IN ('draft', 'approved', 'scheduled', 'claimed', 'attempting')",
        )
        .bind(account)
        .bind(from_ms)
        .fetch_all(self.pool())
        .await?)
    }

    /// Hold a claimed post longer (a slow batch, a long media upload):
    /// false when the lease is no longer ours.
    pub async fn extend_lease(&self, id: &str, owner: &str, until_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE posting_posts SET lease_until_ms = $1 WHERE id = $2 AND lease_owner = $3 AND state IN ('claimed', 'attempting')")
            .bind(until_ms)
            .bind(id)
            .bind(owner)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Posts with links a campaign has sent (or is sending).
    pub async fn link_posts(&self, campaign: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM posting_posts WHERE campaign_id = $1 AND has_link = 1 AND state IN ('posted', 'attempting', 'unknown')",
        )
        .bind(campaign)
        .fetch_one(self.pool())
        .await?)
    }
}
