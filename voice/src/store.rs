//! The `voice_commands` table (`voice/migrations/`, on the one
//! `[database]`): every command with what was heard, read and done, and
//! the single-use confirmation tokens. A token is claimed by one atomic
//! update, so a confirmation sent twice (a retry, two clients) carries the
//! action out once; the second is answered with the first's result.

use platform::db::{Db, DbError, Migrations};
use sqlx::{AnyPool, Row};

/// Voice's migrations (versions 2001..3000).
pub const MIGRATIONS: Migrations = Migrations(&[(2001, "voice commands", include_str!("../migrations/2001_voice_commands.sql"))]);

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Bringing the schema up to date.
    #[error(transparent)]
    Migrate(#[from] DbError),
}

/// A stored command.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// `vc_...`.
    pub id: String,
    /// The key that sent it.
    pub owner: String,
    /// When (Unix ms).
    pub created_ms: i64,
    /// done, needs_confirmation, confirming, failed, refused, expired.
    pub status: String,
    /// The answer as JSON.
    pub record: String,
    /// What a confirmation does, as JSON.
    pub plan: Option<String>,
}

/// What claiming a token found.
#[derive(Debug)]
pub enum Claim {
    /// This call holds it: carry the plan out.
    Won(Stored),
    /// Carried out already: the stored answer.
    Done(Stored),
    /// Another call is carrying it out now.
    Running,
    /// Past its time.
    Expired,
    /// No such token for this key.
    Unknown,
}

/// The table.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
}

const COLUMNS: &str = "id, owner, created_ms, status, record, plan";

fn stored(r: &sqlx::any::AnyRow) -> Result<Stored, sqlx::Error> {
    Ok(Stored {
        id: r.try_get("id")?,
        owner: r.try_get("owner")?,
        created_ms: r.try_get("created_ms")?,
        status: r.try_get("status")?,
        record: r.try_get("record")?,
        plan: r.try_get("plan")?,
    })
}

impl Store {
    /// The table on `db`, brought up to date.
    pub async fn open(db: &Db) -> Result<Self, StoreError> {
        db.migrate(MIGRATIONS).await?;
        Ok(Self { pool: db.pool().clone() })
    }

    /// Keep a command (committed before the caller answers). `token` is
    /// `(sha256 hex, expires_ms)` for one that waits for a confirmation.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
        status: &str,
        intent: &str,
        record: &str,
        plan: Option<&str>,
        token: Option<(&str, i64)>,
        audio: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO voice_commands (id, owner, created_ms, updated_ms, status, intent, record, plan, token_hash, token_expires_ms, audio, audio_name) \
             VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(id)
        .bind(owner)
        .bind(now_ms)
        .bind(status)
        .bind(intent)
        .bind(record)
        .bind(plan)
        .bind(token.map(|t| t.0))
        .bind(token.map(|t| t.1))
        .bind(audio.map(|a| a.0))
        .bind(audio.map(|a| a.1))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Take the command waiting on `token_hash` for `owner` (None: any
    /// owner, for an admin key), once. (`*` stands for any owner: key ids
    /// never contain it.)
    pub async fn claim(&self, token_hash: &str, owner: Option<&str>, now_ms: i64) -> Result<Claim, StoreError> {
        let won = sqlx::query(
            "UPDATE voice_commands SET status = 'confirming', updated_ms = $1 \
             WHERE token_hash = $2 AND ($3 = '*' OR owner = $3) AND status = 'needs_confirmation' AND token_expires_ms > $1",
        )
        .bind(now_ms)
        .bind(token_hash)
        .bind(owner.unwrap_or("*"))
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM voice_commands WHERE token_hash = $1 AND ($2 = '*' OR owner = $2)"))
            .bind(token_hash)
            .bind(owner.unwrap_or("*"))
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(Claim::Unknown) };
        let s = stored(&row)?;
        Ok(match (won, s.status.as_str()) {
            (true, _) => Claim::Won(s),
            (false, "confirming") => Claim::Running,
            (false, "needs_confirmation" | "expired") => Claim::Expired,
            (false, _) => Claim::Done(s),
        })
    }

    /// Give a claimed token back (the action never started).
    pub async fn release(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE voice_commands SET status = 'needs_confirmation', updated_ms = $1 WHERE id = $2 AND status = 'confirming'")
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The command's outcome: its status and the answer.
    pub async fn finish(&self, id: &str, status: &str, record: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE voice_commands SET status = $1, record = $2, updated_ms = $3 WHERE id = $4")
            .bind(status)
            .bind(record)
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// `owner`'s commands (None: everyone's), newest first, older than
    /// `before` (created_ms, id) where given.
    pub async fn list(&self, owner: Option<&str>, before: Option<(i64, String)>, limit: i64) -> Result<Vec<Stored>, StoreError> {
        let paged = i64::from(before.is_some());
        let (ms, id) = before.unwrap_or_default();
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM voice_commands WHERE ($1 = '*' OR owner = $1) \
             AND ($2 = 0 OR created_ms < $3 OR (created_ms = $3 AND id < $4)) ORDER BY created_ms DESC, id DESC LIMIT $5"
        ))
        .bind(owner.unwrap_or("*"))
        .bind(paged)
        .bind(ms)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(stored).collect::<Result<_, _>>()?)
    }
}
