//! The database behind usage records and API keys: SQLite by default
//! (`sqlite://path`, created if missing, WAL), PostgreSQL by URL, through
//! sqlx's Any driver so one set of queries serves both.

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

/// A connection pool.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
}

impl Db {
    /// Connect to `url` (`sqlite://path`, `sqlite::memory:`, `postgres://...`).
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
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
        Ok(Self { pool })
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
pub(crate) fn nullable_f64(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}
