//! Accounts and their sealed credentials.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{is_unique_violation, Store, StoreError, Tenant};
use crate::model::{new_id, now_ms, Account, AccountStatus};

/// What creating an account takes.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// `dry-run`, `x`, ...
    pub platform: String,
    /// Name on the platform.
    pub handle: String,
    /// IANA zone (checked by the caller).
    pub time_zone: String,
    /// Most posts per local day.
    pub daily_cap: i64,
    /// A larger length limit than the platform's default.
    pub max_length: Option<i64>,
}

const COLUMNS: &str = "id, owner, platform, handle, time_zone, daily_cap, max_length, CAST(CASE WHEN credentials IS NULL THEN 0 ELSE 1 END AS BIGINT) AS has_credentials, \
                       status, status_reason, paused_until_ms, remote_id, created_ms";

fn account(row: &AnyRow) -> Result<Account, StoreError> {
    Ok(Account {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        platform: row.try_get("platform")?,
        handle: row.try_get("handle")?,
        time_zone: row.try_get("time_zone")?,
        daily_cap: row.try_get("daily_cap")?,
        max_length: row.try_get("max_length")?,
        has_credentials: row.try_get::<i64, _>("has_credentials")? != 0,
        status: AccountStatus::parse(&row.try_get::<String, _>("status")?),
        status_reason: row.try_get("status_reason")?,
        paused_until_ms: row.try_get("paused_until_ms")?,
        remote_id: row.try_get("remote_id")?,
        created_ms: row.try_get("created_ms")?,
    })
}

impl Store {
    /// Create an account owned by `owner`, with its id chosen by the
    /// caller (credentials are sealed for an id, before the row exists).
    pub async fn create_account(&self, id: Option<String>, owner: &str, new: &NewAccount, sealed: Option<String>) -> Result<Account, StoreError> {
        let id = id.unwrap_or_else(|| new_id("acc"));
        let now = now_ms();
        sqlx::query(
            "INSERT INTO posting_accounts (id, owner, platform, handle, time_zone, daily_cap, max_length, credentials, \
             credentials_version, status, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, 'active', $9, $9)",
        )
        .bind(&id)
        .bind(owner)
        .bind(&new.platform)
        .bind(&new.handle)
        .bind(&new.time_zone)
        .bind(new.daily_cap)
        .bind(new.max_length)
        .bind(sealed)
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("an account {} on {} exists already", new.handle, new.platform))
            } else {
                e.into()
            }
        })?;
        self.account(&Tenant::All, &id).await?.ok_or_else(|| StoreError::Conflict(format!("account {id} vanished")))
    }

    /// One account, if `tenant` may see it.
    pub async fn account(&self, tenant: &Tenant, id: &str) -> Result<Option<Account>, StoreError> {
        let (owner, bind) = tenant.clause(2);
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM posting_accounts WHERE id = $1 AND {owner}"))
            .bind(id)
            .bind(bind)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(account).transpose()
    }

    /// The accounts `tenant` may see, oldest first.
    pub async fn accounts(&self, tenant: &Tenant) -> Result<Vec<Account>, StoreError> {
        let (owner, bind) = tenant.clause(1);
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM posting_accounts WHERE {owner} ORDER BY created_ms, id"))
            .bind(bind)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(account).collect()
    }

    /// An account's sealed credentials and their version.
    pub async fn sealed_credentials(&self, id: &str) -> Result<Option<(String, i64)>, StoreError> {
        let row = sqlx::query("SELECT credentials, credentials_version FROM posting_accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<Option<String>, _>("credentials")?.map(|c| (c, r.try_get("credentials_version").unwrap_or(0))),
            None => None,
        })
    }

    /// Store new sealed credentials if they are still at `version` (a
    /// refresh that lost a race to another stores nothing: false).
    pub async fn replace_credentials(&self, id: &str, version: i64, sealed: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE posting_accounts SET credentials = $1, credentials_version = credentials_version + 1, updated_ms = $2, \
             refresh_lease_until_ms = NULL WHERE id = $3 AND credentials_version = $4",
        )
        .bind(sealed)
        .bind(now_ms())
        .bind(id)
        .bind(version)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Take the account's refresh lease until `until_ms`: false while
    /// another holds it.
    pub async fn take_refresh_lease(&self, id: &str, until_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE posting_accounts SET refresh_lease_until_ms = $1 \
             WHERE id = $2 AND (refresh_lease_until_ms IS NULL OR refresh_lease_until_ms < $3)",
        )
        .bind(until_ms)
        .bind(id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Give the refresh lease back without new credentials.
    pub async fn release_refresh_lease(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE posting_accounts SET refresh_lease_until_ms = NULL WHERE id = $1").bind(id).execute(self.pool()).await?;
        Ok(())
    }

    /// Credentials from a new authorisation: stored whatever was there,
    /// the account active again.
    pub async fn reauthorised(&self, id: &str, sealed: &str, remote_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE posting_accounts SET credentials = $1, credentials_version = credentials_version + 1, status = 'active', \
             status_reason = NULL, remote_id = $2, refresh_lease_until_ms = NULL, updated_ms = $3 WHERE id = $4",
        )
        .bind(sealed)
        .bind(remote_id)
        .bind(now_ms())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Keep a pending authorisation: its state, sealed PKCE verifier and
    /// the account settings asked for.
    pub async fn save_oauth_state(&self, state: &str, owner: &str, platform: &str, verifier: &str, settings: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO posting_oauth_states (state, owner, platform, verifier, settings, created_ms) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(state)
            .bind(owner)
            .bind(platform)
            .bind(verifier)
            .bind(settings)
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Take a pending authorisation (once: it is deleted) if it is younger
    /// than `max_age_ms`: (owner, platform, sealed verifier, settings).
    pub async fn take_oauth_state(&self, state: &str, max_age_ms: i64) -> Result<Option<(String, String, String, String)>, StoreError> {
        let mut tx = self.pool().begin().await?;
        // Expired ones first (the DELETE also starts the write transaction).
        sqlx::query("DELETE FROM posting_oauth_states WHERE created_ms < $1").bind(now_ms() - max_age_ms).execute(&mut *tx).await?;
        let row = sqlx::query("SELECT owner, platform, verifier, settings FROM posting_oauth_states WHERE state = $1")
            .bind(state)
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM posting_oauth_states WHERE state = $1").bind(state).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(match row {
            Some(r) => Some((r.try_get("owner")?, r.try_get("platform")?, r.try_get("verifier")?, r.try_get("settings")?)),
            None => None,
        })
    }

    /// The account `owner` has on `platform` under `handle`.
    pub async fn account_by_handle(&self, owner: &str, platform: &str, handle: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM posting_accounts WHERE owner = $1 AND platform = $2 AND handle = $3"))
            .bind(owner)
            .bind(platform)
            .bind(handle)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(account).transpose()
    }

    /// Set an account's standing (and why).
    pub async fn set_account_status(&self, id: &str, status: AccountStatus, reason: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE posting_accounts SET status = $1, status_reason = $2, updated_ms = $3 WHERE id = $4")
            .bind(status.as_str())
            .bind(reason)
            .bind(now_ms())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Hold an account's posts until `until_ms` (a rate limit's reset).
    pub async fn pause_account(&self, id: &str, until_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE posting_accounts SET paused_until_ms = $1, updated_ms = $2 WHERE id = $3")
            .bind(until_ms)
            .bind(now_ms())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Remember the platform's id for the account.
    pub async fn set_remote_id(&self, id: &str, remote: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE posting_accounts SET remote_id = $1, updated_ms = $2 WHERE id = $3")
            .bind(remote)
            .bind(now_ms())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
