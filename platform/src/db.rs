//! The database behind usage records, API keys and (next) posting: SQLite
//! by default (`sqlite://path`, created if missing, WAL), PostgreSQL by URL,
//! through sqlx's Any driver so one set of queries serves both.
//!
//! Each service owns its tables as a set of [`Migrations`] (SQL files valid
//! on SQLite and PostgreSQL, built into the binary) in a range of versions
//! of its own, all in the database's one `_sqlx_migrations` history:
//! [`Db::open`] applies platform's (`platform/migrations/`, usage records
//! and keys), a service applies its own with [`Db::migrate`] when it
//! attaches (posting: `posting/migrations/`). Every database, old or new,
//! reaches the same schema in the same steps.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::any::AnyPoolOptions;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::AnyPool;

/// A service's migrations: (version, description, SQL) in order. Each
/// service owns a range of versions (platform 1..1000, posting 1001..2000,
/// voice 2001..3000)
/// and its own folder of SQL files, so one database holds every service's
/// tables in one `_sqlx_migrations` history without a service knowing the
/// others' files.
#[derive(Debug, Clone, Copy)]
pub struct Migrations(pub &'static [(i64, &'static str, &'static str)]);

/// Platform's own: usage records and API keys.
pub const MIGRATIONS: Migrations = Migrations(&[
    (1, "usage records and api keys", include_str!("../migrations/0001_usage_records_and_api_keys.sql")),
    (2, "key scopes", include_str!("../migrations/0002_key_scopes.sql")),
    (3, "usage audio seconds", include_str!("../migrations/0003_usage_audio_seconds.sql")),
]);

/// Migrations as sqlx's migrator reads them (what `sqlx::migrate!`
/// builds, without its proc-macro: the SQL is in the binary either way).
impl MigrationSource<'static> for Migrations {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, Cow::Borrowed(sql), false)
                })
                .collect())
        })
    }
}

/// The database could not be opened or brought to the current schema.
/// Shows the URL without its password.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Connecting (or the URL itself).
    #[error("cannot open the database {url}: {source}")]
    Connect {
        /// The URL, password masked.
        url: String,
        /// Why.
        source: sqlx::Error,
    },
    /// Applying the migrations.
    #[error("cannot migrate the database {url}: {source}")]
    Migrate {
        /// The URL, password masked.
        url: String,
        /// Why.
        source: sqlx::migrate::MigrateError,
    },
}

/// `url` with the password of its user info masked
/// (`postgres://starling:***@db/starling`), for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A connection pool.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    /// The URL, password masked.
    url: String,
}

impl Db {
    /// Connect to `url` (`sqlite://path`, `sqlite::memory:`, `postgres://...`)
    /// and apply the migrations it lacks.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        let pool = Self::connect(url).await.map_err(|source| DbError::Connect { url: redacted(url), source })?;
        let db = Self { pool, url: redacted(url) };
        db.migrate(MIGRATIONS).await?;
        Ok(db)
    }

    /// Apply those of a service's `migrations` the database lacks (each
    /// service calls this for its own when it attaches to the database).
    pub async fn migrate(&self, migrations: Migrations) -> Result<(), DbError> {
        let url = || self.url.clone();
        let mut migrator = Migrator::new(migrations).await.map_err(|source| DbError::Migrate { url: url(), source })?;
        // The other services' versions are in the same history.
        migrator.set_ignore_missing(true);
        migrator.run(&self.pool).await.map_err(|source| DbError::Migrate { url: url(), source })
    }

    /// Whether this is a PostgreSQL database (else SQLite), for the few
    /// statements the two spell differently.
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres")
    }

    async fn connect(url: &str) -> Result<AnyPool, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains('?') && !url.contains(":memory:") {
            // Create the file if missing.
            format!("{url}?mode=rwc")
        } else {
            url.to_owned()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            // sqlx's default (30 s) would hold a request that reads keys, or
            // the usage writer's retries, that long while the database is
            // away; fail sooner and let the caller retry.
            .acquire_timeout(std::time::Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL: readers never block the writer, and a commit
                        // survives a process crash without an fsync each.
                        for pragma in ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL", "PRAGMA busy_timeout = 5000"] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(pool)
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// An optional float to bind where the SQL reads it as
/// `NULLIF($n, 'NaN')`. sqlx 0.8's Any driver binds a `None::<f64>` as
/// PostgreSQL `float4` (its Null mapping swaps `Real` and `Double`), and a
/// statement it prepared that way then rejects every real `f64` bound on
/// the same connection ("incorrect binary data format in bind parameter").
/// NaN is always a `float8`; `NULLIF` turns it back into NULL on
/// PostgreSQL, and SQLite stores a bound NaN as NULL by itself.
pub fn nullable_f64(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(redacted("postgres://starling:s3cret@db:5432/starling?sslmode=require"), "postgres://starling:***@db:5432/starling?sslmode=require");
        assert_eq!(redacted("postgres://u:p@ss@db/x"), "postgres://u:***@db/x");
        assert_eq!(redacted("postgres://starling@db/starling"), "postgres://starling@db/starling");
        assert_eq!(redacted("sqlite://starling.db"), "sqlite://starling.db");
    }

    /// A connection error names the database without its password.
    #[tokio::test]
    async fn a_connection_error_hides_the_password() {
        // A port nothing listens on: bind, read the port, close.
        let free = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(1);
        let err = Db::open(&format!("postgres://starling:s3cret-pw@127.0.0.1:{free}/starling")).await.expect_err("nothing listens");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("starling:***@127.0.0.1"), "{shown}");
    }

    /// A new database reaches the current schema, and opening it again
    /// applies nothing twice.
    #[tokio::test]
    async fn migrations_apply_once() {
        let dir = std::env::temp_dir().join(format!("starling-migrate-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let url = format!("sqlite://{}", dir.display());
        for _ in 0..2 {
            let db = Db::open(&url).await.expect("open");
            let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(db.pool()).await.expect("count");
            assert_eq!(applied, MIGRATIONS.0.len() as i64);
            sqlx::query("SELECT scopes FROM api_keys").fetch_all(db.pool()).await.expect("scopes column");
        }
        let _ = std::fs::remove_file(&dir);
    }
}
