//! The `usage_records` table: batched inserts (each record at most once)
//! and the totals `GET /v1/usage` shows.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use platform::db::Db;

use super::UsageRecord;

/// Why the usage store could not be opened or queried.
#[derive(Debug, thiserror::Error)]
#[error("usage store: {0}")]
pub struct UsageError(#[from] sqlx::Error);

/// A record unless it is already there: the same record may come from
/// memory and from the journal (read back after a crash, or after an
/// outage during which the queue was full), and must be written once. Id,
/// arrival and latency single one out (latency within a nanosecond: the
/// JSON round trip of the journal may move a double by one ulp).
const INSERT: &str = "INSERT INTO usage_records (request_id, ts_ms, key_id, route, provider, model, prompt_tokens, \
    completion_tokens, cached_tokens, cost_usd, ttft_ms, latency_ms, status, error, cache_hit, attempts, audio_seconds) \
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULLIF($11, 'NaN'), $12, $13, $14, $15, $16, $17 \
    WHERE NOT EXISTS (SELECT 1 FROM usage_records WHERE request_id = $1 AND ts_ms = $2 AND route = $4 \
    AND latency_ms BETWEEN $12 - 0.000001 AND $12 + 0.000001)";
/// Most records per transaction.
pub(super) const BATCH: usize = 256;

/// The store: a connection pool to SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct UsageStore {
    pool: AnyPool,
}

impl UsageStore {
    /// Usage records in `db` (the table is `platform`'s first migration).
    pub fn new(db: &Db) -> Self {
        Self { pool: db.pool().clone() }
    }

    /// Insert, in one transaction, those of `records` the store does not
    /// have yet.
    pub async fn insert(&self, records: &[UsageRecord]) -> Result<(), UsageError> {
        let mut tx = self.pool.begin().await?;
        for r in records {
            sqlx::query(INSERT)
                .bind(text(&r.request_id))
                .bind(r.ts_ms)
                .bind(r.key_id.as_deref().map(text))
                .bind(text(&r.route))
                .bind(text(&r.provider))
                .bind(text(&r.model))
                .bind(r.prompt_tokens)
                .bind(r.completion_tokens)
                .bind(r.cached_tokens)
                .bind(r.cost_usd)
                .bind(platform::db::nullable_f64(r.ttft_ms))
                .bind(r.latency_ms)
                .bind(r.status)
                .bind(r.error.as_deref().map(text))
                .bind(r.cache_hit)
                .bind(r.attempts)
                .bind(r.audio_seconds)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Totals per group over `[from_ms, to_ms)`, of one key's records or
    /// (`None`) of all.
    pub async fn summary(&self, from_ms: i64, to_ms: i64, group_by: GroupBy, key_id: Option<&str>) -> Result<Vec<UsageGroup>, UsageError> {
        // The column comes from the enum, never from the request.
        let col = group_by.column();
        let of_key = if key_id.is_some() { "AND key_id = $3" } else { "" };
        let sql = format!(
            "SELECT COALESCE({col}, '') AS grp, COUNT(*) AS requests, \
             CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
             CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
             CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS cached_tokens, \
             CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost_usd, \
             CAST(COALESCE(SUM(audio_seconds), 0) AS DOUBLE PRECISION) AS audio_seconds, \
             CAST(COALESCE(SUM(CASE WHEN cache_hit THEN 1 ELSE 0 END), 0) AS BIGINT) AS cache_hits, \
             CAST(COALESCE(SUM(CASE WHEN status >= 400 OR error IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS errors \
             FROM usage_records WHERE ts_ms >= $1 AND ts_ms < $2 {of_key} GROUP BY COALESCE({col}, '') ORDER BY grp"
        );
        let mut query = sqlx::query(&sql).bind(from_ms).bind(to_ms);
        if let Some(k) = key_id {
            query = query.bind(k);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(UsageGroup::from_row).collect::<Result<_, _>>().map_err(UsageError)
    }
}

/// Text as the database can hold it. PostgreSQL text cannot contain NUL
/// (SQLite can), and a client's model name or an upstream's error message
/// may: one such record would fail its batch on every retry and hold up
/// every record behind it.
fn text(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

/// `group_by` of `GET /v1/usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// API key id.
    Key,
    /// Provider.
    Provider,
    /// Provider's model.
    Model,
    /// Requested model or route.
    Route,
}

impl GroupBy {
    /// From the query string value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "key" => Some(Self::Key),
            "provider" => Some(Self::Provider),
            "model" => Some(Self::Model),
            "route" => Some(Self::Route),
            _ => None,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::Key => "key_id",
            Self::Provider => "provider",
            Self::Model => "model",
            Self::Route => "route",
        }
    }
}

/// One group's totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageGroup {
    /// The group's value (key id, provider, model or route).
    pub group: String,
    /// Requests.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Generated tokens.
    pub completion_tokens: i64,
    /// Cached prompt tokens.
    pub cached_tokens: i64,
    /// USD.
    pub cost_usd: f64,
    /// Seconds of audio transcribed.
    pub audio_seconds: f64,
    /// Answers from the cache.
    pub cache_hits: i64,
    /// Failed requests.
    pub errors: i64,
}

impl UsageGroup {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            group: row.try_get("grp")?,
            requests: row.try_get("requests")?,
            prompt_tokens: row.try_get("prompt_tokens")?,
            completion_tokens: row.try_get("completion_tokens")?,
            cached_tokens: row.try_get("cached_tokens")?,
            cost_usd: row.try_get("cost_usd")?,
            audio_seconds: row.try_get("audio_seconds")?,
            cache_hits: row.try_get("cache_hits")?,
            errors: row.try_get("errors")?,
        })
    }
}

