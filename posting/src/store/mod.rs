//! The posting tables (`posting/migrations/`, on the one `[database]`:
//! SQLite or PostgreSQL through sqlx's Any driver). Every write that
//! accepts something commits before the caller answers; every state change
//! of a post writes its event in the same transaction.
//!
//! - `accounts`: accounts and their sealed credentials.
//! - `campaigns`: campaigns.
//! - `posts`: posts, their events, and the dispatcher's claims and leases.

mod accounts;
mod campaigns;
mod catalog;
mod media;
mod metrics;
mod posts;
mod webhooks;

pub use accounts::NewAccount;
pub use campaigns::NewCampaign;
pub use catalog::{Link, Product};
pub use media::Media;
pub use metrics::Click;
pub use webhooks::{Delivery, Webhook, EVENTS};
pub use posts::{Claimed, NewPost, PostFilter, Transition, Value};

use platform::db::{Db, DbError, Migrations};

/// The posting service's migrations (versions 1001..2000).
pub const MIGRATIONS: Migrations = Migrations(&[
    (1001, "posting", include_str!("../../migrations/1001_posting.sql")),
    (1002, "oauth, links, products", include_str!("../../migrations/1002_oauth_links_products.sql")),
    (1003, "webhooks", include_str!("../../migrations/1003_webhooks.sql")),
    (1004, "media", include_str!("../../migrations/1004_media.sql")),
    (1005, "recurrence", include_str!("../../migrations/1005_recurrence.sql")),
]);

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Bringing the schema up to date.
    #[error(transparent)]
    Migrate(#[from] DbError),
    /// A stored JSON column that does not read back (a bug or a hand edit).
    #[error("stored {column} of {id} is not valid: {error}")]
    Corrupt {
        /// The row.
        id: String,
        /// The column.
        column: &'static str,
        /// Why.
        error: String,
    },
    /// Two writes raced and this one lost (a unique index said no).
    #[error("{0}")]
    Conflict(String),
}

/// Whose rows a request may see: a key's own (its id), or everyone's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenant {
    /// Rows created by this key ('' when keys are not in use).
    Owner(String),
    /// Every row (the `admin` scope, and the dispatcher).
    All,
}

impl Tenant {
    /// The SQL condition on `owner` for bind `$n`, and the value to bind
    /// (`All` binds nothing useful and matches every row).
    fn clause(&self, n: usize) -> (String, String) {
        match self {
            Self::Owner(o) => (format!("owner = ${n}"), o.clone()),
            Self::All => (format!("(owner = ${n} OR TRUE)"), String::new()),
        }
    }
}

/// The posting tables in a database.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// The tables in `db`, brought up to date.
    pub async fn open(db: &Db) -> Result<Self, StoreError> {
        db.migrate(MIGRATIONS).await?;
        Ok(Self { db: db.clone() })
    }

    fn pool(&self) -> &sqlx::AnyPool {
        self.db.pool()
    }

    /// Whether claims may use `FOR UPDATE SKIP LOCKED` (PostgreSQL);
    /// SQLite has one writer, so its claim is atomic as it is.
    fn postgres(&self) -> bool {
        self.db.is_postgres()
    }
}

/// A JSON column read back into `T`.
fn json<T: serde::de::DeserializeOwned>(id: &str, column: &'static str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt { id: id.to_owned(), column, error: e.to_string() })
}

/// `T` as a JSON column.
fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Our own plain types (strings, vectors, maps of strings) always serialise.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Whether `e` is a unique-index violation (a race another writer won).
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
