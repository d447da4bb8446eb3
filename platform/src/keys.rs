//! Virtual API keys: created by `starling keys create`, shown once, stored
//! as SHA-256 hashes (the keys are 190 random bits, so a fast hash is
//! enough: nothing to brute-force), each with optional limits: a daily
//! cloud budget in USD, requests and tokens per minute, allowed models.
//!
//! The server checks keys against memory only: a background task
//! ([`KeyRing::watch`]) reloads them from the database every
//! [`RELOAD_EVERY`], so keys created or revoked by the CLI while it runs
//! take effect within seconds, and a database that is away slows no
//! request (the last keys read keep serving). Rate limits are token
//! buckets per key: a request takes its estimate up front and settles the
//! difference with what it really used when its record closes
//! ([`KeyRing::settle`]). The day's spend starts from the usage records, so
//! a restart does not reset a budget.
//!
//! Scopes widen what a key may see beyond its own requests ([`ADMIN`]:
//! every key's usage).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::distributions::{Alphanumeric, DistString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::Db;

/// How stale the in-memory key table may get.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The scope that sees every key's records (`GET /v1/usage` of all keys,
/// every key's posting data).
pub const ADMIN: &str = "admin";
/// The scope that makes a key read-only on the posting API.
pub const POSTING_READ: &str = "posting:read";
/// The prefix of a scope that limits a key to one campaign
/// (`campaign:cmp_...`) on the posting API.
pub const CAMPAIGN: &str = "campaign:";
/// Every scope a key can be given (`campaign:` with an id).
pub const SCOPES: &[&str] = &[ADMIN, POSTING_READ, "campaign:<id>"];

/// Whether `scope` is one a key can be given.
pub fn valid_scope(scope: &str) -> bool {
    scope == ADMIN || scope == POSTING_READ || scope.strip_prefix(CAMPAIGN).is_some_and(|id| !id.is_empty() && !id.contains(','))
}

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
    /// What it may do beyond its own requests (see [`SCOPES`]).
    pub scopes: Vec<String>,
}

impl KeyInfo {
    /// Whether the key holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The campaign a `campaign:` scope limits the key to.
    pub fn campaign(&self) -> Option<&str> {
        self.scopes.iter().find_map(|s| s.strip_prefix(CAMPAIGN))
    }
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
    /// Scopes (see [`SCOPES`]).
    pub scopes: Vec<String>,
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
    /// A scope nobody defined.
    #[error("unknown scope `{0}` (known: {known})", known = SCOPES.join(", "))]
    UnknownScope(String),
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
    /// Keys in `db` (whose migrations made the table).
    pub fn new(db: &Db) -> Self {
        Self { db: db.clone() }
    }

    /// Create a key: returns the key itself (shown once) and its settings.
    pub async fn create(&self, new: &NewKey) -> Result<(String, KeyInfo), KeyError> {
        if let Some(bad) = new.scopes.iter().find(|s| !valid_scope(s)) {
            return Err(KeyError::UnknownScope(bad.clone()));
        }
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
            scopes: new.scopes.clone(),
        };
        sqlx::query(
            "INSERT INTO api_keys (id, name, hash, prefix, created_ms, revoked_ms, budget_usd_per_day, rpm, tpm, models, scopes) \
             VALUES ($1, $2, $3, $4, $5, NULL, NULLIF($6, 'NaN'), $7, $8, $9, $10)",
        )
        .bind(&info.id)
        .bind(&info.name)
        .bind(hash(&key))
        .bind(&info.prefix)
        .bind(info.created_ms)
        .bind(crate::db::nullable_f64(info.budget_usd_per_day))
        .bind(info.rpm.map(i64::from))
        .bind(info.tpm.map(i64::from))
        .bind(list(&info.models))
        .bind(list(&info.scopes))
        .execute(self.db.pool())
        .await?;
        Ok((key, info))
    }

    /// Every key, revoked ones included, with their hashes.
    pub async fn all(&self) -> Result<Vec<(String, KeyInfo)>, KeyError> {
        let rows = sqlx::query(
            "SELECT id, name, hash, prefix, created_ms, revoked_ms, budget_usd_per_day, rpm, tpm, models, scopes \
             FROM api_keys ORDER BY created_ms",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let limit = |v: Option<i64>| v.and_then(|n| u32::try_from(n).ok());
            let models: Option<String> = r.try_get("models")?;
            let scopes: Option<String> = r.try_get("scopes")?;
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
                    models: unlist(models),
                    scopes: unlist(scopes),
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

/// A list as one column: comma-separated, NULL when empty.
fn list(items: &[String]) -> Option<String> {
    (!items.is_empty()).then(|| items.join(","))
}

fn unlist(column: Option<String>) -> Vec<String> {
    column.map(|m| m.split(',').map(str::to_owned).collect()).unwrap_or_default()
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

    /// Give back `n` (or take more, when negative) after the fact: the
    /// level may go below zero, and then the next requests wait.
    fn adjust(&mut self, n: f64, per_minute: f64) {
        self.level = (self.level + n).min(per_minute);
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

/// The server's view: keys by hash, reloaded in the background, and
/// counters.
#[derive(Debug)]
pub struct KeyRing {
    store: KeyStore,
    /// Live keys by hash. Requests only read it; [`KeyRing::watch`] swaps
    /// in a fresh table.
    keys: RwLock<Arc<HashMap<String, KeyInfo>>>,
    live: Mutex<HashMap<String, Live>>,
}

/// Why a request is refused before routing.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// RPM or TPM used up: retry after this long.
    RateLimited(Duration, &'static str),
    /// The request alone asks for more tokens than the key's TPM allows.
    TooLarge {
        /// Its estimate.
        tokens: u64,
        /// The key's tokens per minute.
        tpm: u32,
    },
    /// The key may not use this model.
    ModelNotAllowed,
}

impl KeyRing {
    /// Load the keys of `store` (fails when they cannot be read once).
    pub async fn load(store: KeyStore) -> Result<Arc<Self>, KeyError> {
        let keys = Self::read(&store).await?;
        Ok(Arc::new(Self { store, keys: RwLock::new(Arc::new(keys)), live: Mutex::new(HashMap::new()) }))
    }

    async fn read(store: &KeyStore) -> Result<HashMap<String, KeyInfo>, KeyError> {
        Ok(store.all().await?.into_iter().filter(|(_, k)| k.revoked_ms.is_none()).collect())
    }

    /// Read the keys again now.
    pub async fn reload(&self) -> Result<(), KeyError> {
        let keys = Arc::new(Self::read(&self.store).await?);
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(())
    }

    /// Reload every [`RELOAD_EVERY`] on the current runtime, until the ring
    /// is dropped. While the database is away the last keys keep serving;
    /// the failure is logged once, and the recovery.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let ring = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut failing = false;
            loop {
                tick.tick().await;
                let Some(ring) = ring.upgrade() else { return };
                match ring.reload().await {
                    Ok(()) if failing => {
                        tracing::info!("API keys read again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        tracing::error!("cannot reload API keys (serving the last ones read): {e}");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        })
    }

    fn keys(&self) -> Arc<HashMap<String, KeyInfo>> {
        Arc::clone(&self.keys.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether any key is live (then every /v1 request needs one).
    pub fn any(&self) -> bool {
        !self.keys().is_empty()
    }

    /// The live key with id `id` (a service acting later for the key that
    /// asked, as a campaign filling its own slots).
    pub fn by_id(&self, id: &str) -> Option<KeyInfo> {
        self.keys().values().find(|k| k.id == id).cloned()
    }

    /// The key behind `presented`, if it is live.
    pub fn find(&self, presented: &str) -> Option<KeyInfo> {
        self.keys().get(&hash(presented)).cloned()
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
            if tokens > u64::from(tpm) {
                (l.requests.level, l.requests.at) = saved_r;
                return Err(Refusal::TooLarge { tokens, tpm });
            }
            if let Err(d) = l.tokens.take(tokens as f64, f64::from(tpm), now) {
                (l.requests.level, l.requests.at) = saved_r;
                (l.tokens.level, l.tokens.at) = saved_t;
                return Err(Refusal::RateLimited(d, "tokens per minute"));
            }
        }
        Ok(())
    }

    /// A request admitted with an estimate of `admitted` tokens used
    /// `used`: give back the difference, or take the excess (a request may
    /// use more than estimated; the next ones then wait for it).
    pub fn settle(&self, key: &KeyInfo, admitted: u64, used: u64) {
        let Some(tpm) = key.tpm else { return };
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = live.get_mut(&key.id) {
            l.tokens.adjust(admitted as f64 - used as f64, f64::from(tpm));
        }
    }

    /// Whether `key`'s cloud budget for today is spent. When today's spend
    /// cannot be read, it counts as spent for this request (the local
    /// engine still answers) and is read again for the next one.
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
                let s = match self.store.spent_since(&key.id, day * 86_400_000).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!("cannot read today's spend of {}: {e}", key.id);
                        return true;
                    }
                };
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

    async fn ring_with(new: NewKey) -> (Db, Arc<KeyRing>, KeyInfo, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("starling-keys-{}-{}", std::process::id(), new.name));
        let _ = std::fs::remove_file(&path);
        let db = Db::open(&format!("sqlite://{}", path.display())).await.expect("open");
        let store = KeyStore::new(&db);
        let (_, key) = store.create(&new).await.expect("create");
        let ring = KeyRing::load(store).await.expect("load");
        (db, ring, key, path)
    }

    /// A spend that cannot be read counts as spent for that request, and is
    /// read again for the next: an error is never cached as "0 spent".
    #[tokio::test]
    async fn a_failed_spend_lookup_is_not_cached() {
        let (db, ring, key, path) = ring_with(NewKey { name: "thrifty".into(), budget_usd_per_day: Some(1.0), ..Default::default() }).await;
        ring.admit(&key, "m", 1).expect("admit");
        sqlx::query("ALTER TABLE usage_records RENAME TO usage_away").execute(db.pool()).await.expect("rename");
        assert!(ring.over_budget(&key).await, "an unknown spend counts as spent");
        sqlx::query("ALTER TABLE usage_away RENAME TO usage_records").execute(db.pool()).await.expect("rename");
        sqlx::query(
            "INSERT INTO usage_records (request_id, ts_ms, key_id, route, provider, model, prompt_tokens, completion_tokens, \
             cached_tokens, cost_usd, latency_ms, status, cache_hit, attempts) VALUES ('r', $1, $2, 'r', 'openai', 'm', 1, 1, 0, 5.0, 1.0, 200, false, 1)",
        )
        .bind(now_ms())
        .bind(&key.id)
        .execute(db.pool())
        .await
        .expect("insert");
        assert!(ring.over_budget(&key).await, "today's 5 USD are read, not a cached 0");
        let _ = std::fs::remove_file(path);
    }

    /// Tokens taken up front are settled with what the request used.
    #[tokio::test]
    async fn unused_tokens_are_given_back() {
        let (_db, ring, key, path) = ring_with(NewKey { name: "tpm".into(), tpm: Some(1000), ..Default::default() }).await;
        assert_eq!(ring.admit(&key, "m", 1001), Err(Refusal::TooLarge { tokens: 1001, tpm: 1000 }));
        ring.admit(&key, "m", 600).expect("first");
        assert!(matches!(ring.admit(&key, "m", 600), Err(Refusal::RateLimited(..))));
        ring.settle(&key, 600, 40);
        ring.admit(&key, "m", 600).expect("the unused 560 came back");
        // Using more than admitted takes the excess from the next ones.
        ring.settle(&key, 600, 1000);
        assert!(matches!(ring.admit(&key, "m", 100), Err(Refusal::RateLimited(..))));
        let _ = std::fs::remove_file(path);
    }

    /// Requests read keys from memory: a database that went away leaves the
    /// last keys serving, and a reload brings new ones.
    #[tokio::test]
    async fn keys_serve_from_memory_while_the_database_is_away() {
        let (db, ring, key, path) = ring_with(NewKey { name: "team".into(), ..Default::default() }).await;
        let (second, _) = KeyStore::new(&db).create(&NewKey { name: "second".into(), ..Default::default() }).await.expect("create");
        assert!(ring.find(&second).is_none());
        ring.reload().await.expect("reload");
        assert!(ring.find(&second).is_some());
        db.pool().close().await;
        assert!(ring.reload().await.is_err());
        assert!(ring.find(&second).is_some() && ring.any());
        assert!(ring.keys().values().any(|k| k.id == key.id));
        let _ = std::fs::remove_file(path);
    }
}
