//! Virtual API keys: created by `starling keys create`, shown once, stored
//! as SHA-256 hashes (the keys are 190 random bits, so a fast hash is
//! enough: nothing to brute-force), each with optional limits: a daily
//! cloud budget in USD, requests and tokens per minute, allowed models.
//!
//! The server keeps the keys in memory and reloads them from the database
//! at most every [`RELOAD_EVERY`], so keys created or revoked by the CLI
//! while it runs take effect within seconds. Rate limits are token buckets
//! per key; the day's spend starts from the usage records, so a restart
//! does not reset a budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::distributions::{Alphanumeric, DistString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::accounting::db::Db;

/// How stale the in-memory key table may get.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT,
    budget_usd_per_day DOUBLE PRECISION,
    rpm BIGINT,
    tpm BIGINT,
    models TEXT
)";

/// A key's settings (never the key).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyInfo {
    /// `key_...`: what records and `group_by=key` show.
    pub id: String,
    /// Who it is for.
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    /// Unix ms.
    pub created_ms: i64,
    /// Unix ms, once revoked.
    pub revoked_ms: Option<i64>,
    /// Cloud spend allowed per UTC day, USD.
    pub budget_usd_per_day: Option<f64>,
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens (prompt estimate + max_tokens) per minute.
    pub tpm: Option<u32>,
    /// Models (routes) it may use; empty: all.
    pub models: Vec<String>,
}

/// What `keys create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// Who it is for.
    pub name: String,
    /// Daily cloud budget, USD.
    pub budget_usd_per_day: Option<f64>,
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens per minute.
    pub tpm: Option<u32>,
    /// Allowed models; empty: all.
    pub models: Vec<String>,
}

/// Key storage failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The database.
    #[error("key store: {0}")]
    Db(#[from] sqlx::Error),
    /// No such key.
    #[error("no key with id `{0}`")]
    NotFound(String),
}

/// SHA-256 of a key, hex.
pub fn hash(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Keys in the database.
#[derive(Debug, Clone)]
pub struct KeyStore {
    db: Db,
}

impl KeyStore {
    /// Keys in `db` (creates the table if missing).
    pub async fn new(db: &Db) -> Result<Self, KeyError> {
        sqlx::query(SCHEMA).execute(db.pool()).await?;
        Ok(Self { db: db.clone() })
    }

    /// Create a key: returns the key itself (shown once) and its settings.
    pub async fn create(&self, new: &NewKey) -> Result<(String, KeyInfo), KeyError> {
        let mut rng = rand::thread_rng();
        let key = format!("sk-starling-{}", Alphanumeric.sample_string(&mut rng, 32));
        let info = KeyInfo {
            id: format!("key_{}", Alphanumeric.sample_string(&mut rng, 12)),
            name: new.name.clone(),
            prefix: key[..16].to_owned(),
            created_ms: now_ms(),
            revoked_ms: None,
            budget_usd_per_day: new.budget_usd_per_day,
            rpm: new.rpm,
            tpm: new.tpm,
            models: new.models.clone(),
        };
        sqlx::query(
            "INSERT INTO api_keys (id, name, hash, prefix, created_ms, revoked_ms, budget_usd_per_day, rpm, tpm, models) \
             VALUES ($1, $2, $3, $4, $5, NULL, NULLIF($6, 'NaN'), $7, $8, $9)",
        )
        .bind(&info.id)
        .bind(&info.name)
        .bind(hash(&key))
        .bind(&info.prefix)
        .bind(info.created_ms)
        .bind(crate::accounting::db::nullable_f64(info.budget_usd_per_day))
        .bind(info.rpm.map(i64::from))
        .bind(info.tpm.map(i64::from))
        .bind((!info.models.is_empty()).then(|| info.models.join(",")))
        .execute(self.db.pool())
        .await?;
        Ok((key, info))
    }

    /// Every key, revoked ones included, with their hashes.
    pub async fn all(&self) -> Result<Vec<(String, KeyInfo)>, KeyError> {
        let rows = sqlx::query(
            "SELECT id, name, hash, prefix, created_ms, revoked_ms, budget_usd_per_day, rpm, tpm, models \
             FROM api_keys ORDER BY created_ms",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let limit = |v: Option<i64>| v.and_then(|n| u32::try_from(n).ok());
            let models: Option<String> = r.try_get("models")?;
            out.push((
                r.try_get("hash")?,
                KeyInfo {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    prefix: r.try_get("prefix")?,
                    created_ms: r.try_get("created_ms")?,
                    revoked_ms: r.try_get("revoked_ms")?,
                    budget_usd_per_day: r.try_get("budget_usd_per_day")?,
                    rpm: limit(r.try_get("rpm")?),
                    tpm: limit(r.try_get("tpm")?),
                    models: models.map(|m| m.split(',').map(str::to_owned).collect()).unwrap_or_default(),
                },
            ));
        }
        Ok(out)
    }

    /// Revoke a key by id.
    pub async fn revoke(&self, id: &str) -> Result<(), KeyError> {
        let done = sqlx::query("UPDATE api_keys SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(self.db.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(KeyError::NotFound(id.to_owned()));
        }
        Ok(())
    }

    /// USD recorded for `key_id` since `since_ms` (the budget's day).
    pub async fn spent_since(&self, key_id: &str, since_ms: i64) -> Result<f64, KeyError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS spent FROM usage_records \
             WHERE key_id = $1 AND ts_ms >= $2",
        )
        .bind(key_id)
        .bind(since_ms)
        .fetch_one(self.db.pool())
        .await?;
        Ok(row.try_get("spent")?)
    }
}

/// A token bucket: `capacity` per minute, refilled continuously.
#[derive(Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    /// Take `n` of `per_minute`; else the wait until it could.
    fn take(&mut self, n: f64, per_minute: f64, now: Instant) -> Result<(), Duration> {
        let rate = per_minute / 60.0;
        self.level = (self.level + now.duration_since(self.at).as_secs_f64() * rate).min(per_minute);
        self.at = now;
        if self.level >= n {
            self.level -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(((n - self.level) / rate).min(3600.0)))
        }
    }
}

/// A key's live counters.
#[derive(Debug)]
struct Live {
    requests: Bucket,
    tokens: Bucket,
    /// UTC day number and USD recorded in it (None: not read yet).
    spent: Option<(i64, f64)>,
}

/// The server's view: keys by hash, reloaded when stale, and counters.
#[derive(Debug)]
pub struct KeyRing {
    store: KeyStore,
    keys: tokio::sync::RwLock<(Instant, HashMap<String, KeyInfo>)>,
    live: Mutex<HashMap<String, Live>>,
}

/// Why a request is refused before routing.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// RPM or TPM used up: retry after this long.
    RateLimited(Duration, &'static str),
    /// The key may not use this model.
    ModelNotAllowed,
}

impl KeyRing {
    /// Load the keys of `store`.
    pub async fn load(store: KeyStore) -> Result<Self, KeyError> {
        let keys = Self::read(&store).await?;
        Ok(Self {
            store,
            keys: tokio::sync::RwLock::new((Instant::now(), keys)),
            live: Mutex::new(HashMap::new()),
        })
    }

    async fn read(store: &KeyStore) -> Result<HashMap<String, KeyInfo>, KeyError> {
        Ok(store.all().await?.into_iter().filter(|(_, k)| k.revoked_ms.is_none()).collect())
    }

    async fn fresh(&self) {
        if self.keys.read().await.0.elapsed() < RELOAD_EVERY {
            return;
        }
        let mut w = self.keys.write().await;
        if w.0.elapsed() < RELOAD_EVERY {
            return;
        }
        match Self::read(&self.store).await {
            Ok(keys) => *w = (Instant::now(), keys),
            // Keep serving with what we have; try again next time.
            Err(e) => tracing::error!("cannot reload API keys: {e}"),
        }
    }

    /// Whether any key is live (then every /v1 request needs one).
    pub async fn any(&self) -> bool {
        self.fresh().await;
        !self.keys.read().await.1.is_empty()
    }

    /// The key behind `presented`, if it is live.
    pub async fn find(&self, presented: &str) -> Option<KeyInfo> {
        self.fresh().await;
        self.keys.read().await.1.get(&hash(presented)).cloned()
    }

    /// Admit a request of about `tokens` tokens to `model` for `key`.
    pub fn admit(&self, key: &KeyInfo, model: &str, tokens: u64) -> Result<(), Refusal> {
        if !key.models.is_empty() && !key.models.iter().any(|m| m == model) {
            return Err(Refusal::ModelNotAllowed);
        }
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let l = live.entry(key.id.clone()).or_insert_with(|| Live {
            requests: Bucket { level: f64::from(key.rpm.unwrap_or(0)), at: now },
            tokens: Bucket { level: f64::from(key.tpm.unwrap_or(0)), at: now },
            spent: None,
        });
        // Check both before taking either, so a refusal costs nothing.
        let (saved_r, saved_t) = ((l.requests.level, l.requests.at), (l.tokens.level, l.tokens.at));
        if let Some(rpm) = key.rpm {
            l.requests.take(1.0, f64::from(rpm), now).map_err(|d| Refusal::RateLimited(d, "requests per minute"))?;
        }
        if let Some(tpm) = key.tpm {
            if let Err(d) = l.tokens.take(tokens as f64, f64::from(tpm), now) {
                (l.requests.level, l.requests.at) = saved_r;
                (l.tokens.level, l.tokens.at) = saved_t;
                return Err(Refusal::RateLimited(d, "tokens per minute"));
            }
        }
        Ok(())
    }

    /// Whether `key`'s cloud budget for today is spent.
    pub async fn over_budget(&self, key: &KeyInfo) -> bool {
        let Some(budget) = key.budget_usd_per_day else { return false };
        let day = now_ms().div_euclid(86_400_000);
        let known = {
            let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.get(&key.id).and_then(|l| l.spent).filter(|(d, _)| *d == day).map(|(_, s)| s)
        };
        let spent = match known {
            Some(s) => s,
            None => {
                // First use today: start from what the records say.
                let s = self.store.spent_since(&key.id, day * 86_400_000).await.unwrap_or_else(|e| {
                    tracing::error!("cannot read today's spend of {}: {e}", key.id);
                    0.0
                });
                let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(l) = live.get_mut(&key.id) {
                    l.spent = Some((day, s));
                }
                s
            }
        };
        spent >= budget
    }

    /// Add a request's cost to its key's day.
    pub fn spend(&self, key_id: &str, usd: f64) {
        let day = now_ms().div_euclid(86_400_000);
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = live.get_mut(key_id) {
            match &mut l.spent {
                Some((d, s)) if *d == day => *s += usd,
                // Not read yet (or a new day): `over_budget` reads the
                // records, which will hold this cost.
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_over_time() {
        let t0 = Instant::now();
        let mut b = Bucket { level: 2.0, at: t0 };
        assert!(b.take(1.0, 60.0, t0).is_ok());
        assert!(b.take(1.0, 60.0, t0).is_ok());
        // 60/min is one per second: the next one is a second away.
        let wait = b.take(1.0, 60.0, t0).expect_err("empty");
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-9);
        assert!(b.take(1.0, 60.0, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn key_hash_is_sha256_hex() {
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
