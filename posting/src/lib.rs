//! Starling's posting service: accounts, campaigns and scheduled posts,
//! and the dispatcher that sends them, never losing one and never sending
//! one twice.
//!
//! - `model`: the rows and a post's states.
//! - `store`: the tables (`posting/migrations/`, SQLite or PostgreSQL) and
//!   the dispatcher's leases.
//! - `secrets`: credentials sealed at rest.
//! - `schedule`: time in an account's zone, daily bounds, weekly slots;
//!   `cron`: cron expressions for recurring schedules.
//! - `gate`: the pre-flight checks before every post.
//! - `platforms`: where posts go (dry-run, X, Mastodon).
//! - `dispatcher`: the loop that sends due posts.
//! - `api`: the REST API under `/api/v1`.

pub mod analytics;
pub mod api;
pub mod cron;
pub mod dispatcher;
pub mod drafts;
pub mod gate;
pub mod model;
pub mod platforms;
pub mod schedule;
pub mod secrets;
pub mod store;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use platform::auth::Guard;
use platform::db::Db;
use serde::Deserialize;

use crate::dispatcher::{DispatchConfig, Dispatcher};
use crate::gate::GateConfig;
use crate::platforms::dry_run::DryRun;
use crate::platforms::mastodon::Mastodon;
use crate::platforms::x::{XConfig, X};
use crate::platforms::x_oauth::XOAuth;
use crate::platforms::{Platform, Platforms};
use crate::secrets::Sealer;
use crate::store::{Store, StoreError, Tenant};

/// `[posting]` of `starling.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostingConfig {
    /// Run the posting API and dispatcher with `serve` (needs `[database]`).
    pub enabled: bool,
    /// The zone of an account that names none.
    pub default_time_zone: String,
    /// Where people reach this server (short links, the OAuth callback);
    /// empty: `http://` and `[server] listen`.
    pub public_url: String,
    /// Share of link clicks that become a sale, for estimated revenue.
    pub conversion_rate: f64,
    /// Campaigns with `autofill` keep their slots of this many coming days filled.
    pub autofill_days: i64,
    /// How often they are looked at, seconds.
    pub autofill_every_secs: u64,
    /// Reading posts' metrics from the platforms.
    pub metrics: MetricsConfig,
    /// X's API.
    pub x: XConfig,
    /// The pre-flight gate.
    pub gate: GateConfig,
    /// The dispatcher.
    pub dispatcher: DispatchConfig,
}

impl Default for PostingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            default_time_zone: "UTC".into(),
            public_url: String::new(),
            conversion_rate: 0.02,
            autofill_days: 7,
            autofill_every_secs: 900,
            metrics: MetricsConfig::default(),
            x: XConfig::default(),
            gate: GateConfig::default(),
            dispatcher: DispatchConfig::default(),
        }
    }
}

/// `[posting.metrics]`: how often posts' counts are read back. X charges
/// for reads: each account is read at most `reads_per_day` times a day, one
/// call for up to 100 of its posts younger than `max_age_days`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Calls per account per day (0: never read).
    pub reads_per_day: u32,
    /// Posts older than this are no longer read (X's non-public metrics
    /// stop at 30 days).
    pub max_age_days: i64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { reads_per_day: 24, max_age_days: 30 }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A platform client.
    #[error("{0}")]
    Platform(String),
    /// Settings that cannot work together.
    #[error("{0}")]
    Config(String),
    /// Credentials are stored but cannot be opened.
    #[error("{accounts} account(s) have stored credentials, but {why}")]
    Secrets {
        /// How many.
        accounts: usize,
        /// Why they cannot be opened.
        why: String,
    },
}

/// The service: cheap to clone, shared by the API's handlers.
#[derive(Clone)]
pub struct Posting {
    pub(crate) store: Store,
    pub(crate) platforms: Platforms,
    pub(crate) sealer: Sealer,
    pub(crate) config: Arc<PostingConfig>,
    pub(crate) dispatcher: Dispatcher,
    /// Sign-in with X, where an app is configured.
    pub(crate) x_oauth: Option<Arc<XOAuth>>,
    /// The X client (who signed in).
    pub(crate) x: Arc<X>,
    /// The content pipeline, once the process has one.
    pub(crate) drafter: Arc<std::sync::OnceLock<Arc<dyn drafts::Drafter>>>,
}

impl std::fmt::Debug for Posting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Posting").field("platforms", &self.platforms).field("drafts", &self.drafter.get().is_some()).finish_non_exhaustive()
    }
}

impl Posting {
    /// The service on `db` (its tables brought up to date), posting to
    /// the dry-run outbox and X (at `[posting.x] api_base`), credentials
    /// opened with `sealer`.
    pub async fn open(db: &Db, config: PostingConfig, sealer: Sealer) -> Result<Self, SetupError> {
        let x = Arc::new(X::new(&config.x).map_err(SetupError::Platform)?);
        let timeouts = (Duration::from_secs(config.x.timeout_secs), Duration::from_secs(config.x.connect_timeout_secs));
        let mastodon = Mastodon::new(timeouts.0, timeouts.1).map_err(SetupError::Platform)?;
        let list: Vec<Arc<dyn Platform>> = vec![Arc::new(DryRun::new(db)), x.clone(), Arc::new(mastodon)];
        let platforms = Platforms::new(list);
        if config.dispatcher.lease_secs <= config.x.timeout_secs {
            return Err(SetupError::Config(format!(
                "[posting.dispatcher] lease_secs ({}) must be longer than [posting.x] timeout_secs ({}): a lease that ends mid-call would let the post be taken for unknown while it is still being sent",
                config.dispatcher.lease_secs, config.x.timeout_secs
            )));
        }
        let store = Store::open(db).await?;
        // A key that cannot open what is stored is a start-up error, not a
        // surprise at the first post.
        let sealed: Vec<_> = store.accounts(&Tenant::All).await?.into_iter().filter(|a| a.has_credentials).collect();
        if !sealed.is_empty() {
            let mut failures = 0;
            let mut why = String::new();
            for a in &sealed {
                if let Some((s, _)) = store.sealed_credentials(&a.id).await? {
                    if let Err(e) = sealer.open(&a.id, &s) {
                        failures += 1;
                        why = e.to_string();
                    }
                }
            }
            if failures > 0 {
                return Err(SetupError::Secrets { accounts: failures, why });
            }
        }
        let x_oauth = X::oauth(&config.x, &config.public_url).map_err(SetupError::Platform)?.map(Arc::new);
        let dispatcher = Dispatcher::new(store.clone(), platforms.clone(), sealer.clone(), config.gate.clone(), config.dispatcher.clone())
            .with_oauth(x_oauth.clone())
            .with_metrics(config.metrics.clone());
        Ok(Self { store, platforms, sealer, config: Arc::new(config), dispatcher, x_oauth, x, drafter: Arc::default() })
    }

    /// Where drafts come from (later calls are ignored).
    pub fn set_drafter(&self, drafter: Arc<dyn drafts::Drafter>) {
        let _ = self.drafter.set(drafter);
    }

    /// The REST API, behind the same keys as `guard` checks.
    pub fn router(&self, guard: Guard) -> axum::Router {
        api::router(self.clone(), guard)
    }

    /// Fill the free slots of the next `[posting] autofill_days` of every
    /// active campaign with `autofill`, each on behalf of the key that owns
    /// it (looked up in `keys`; a campaign whose key is gone is skipped):
    /// how many posts were made.
    pub async fn autofill(&self, keys: Option<&platform::keys::KeyRing>) -> Result<usize, StoreError> {
        let until = model::now_ms() + self.config.autofill_days * 86_400_000;
        let mut made = 0;
        for c in self.store.autofill_campaigns().await? {
            let caller = match (c.owner.as_str(), keys) {
                ("", _) => platform::auth::Caller(None),
                (id, Some(ring)) => match ring.by_id(id) {
                    Some(k) => platform::auth::Caller(Some(k)),
                    None => {
                        tracing::warn!(campaign = %c.id, "the key that owns this campaign is gone; not filling it");
                        continue;
                    }
                },
                (_, None) => continue,
            };
            match api::fill::fill_campaign(self, &caller, &c, 28, 4, None, Some(until)).await {
                Ok(posts) => made += posts.len(),
                Err(e) => tracing::warn!(campaign = %c.id, error = ?e, "autofill"),
            }
        }
        if made > 0 {
            self.dispatcher.wake();
        }
        Ok(made)
    }

    /// Seal every stored secret (account credentials, webhook secrets)
    /// again under the current key, after a rotation: how many were.
    pub async fn reseal(&self) -> Result<usize, SetupError> {
        let mut n = 0;
        for (id, sealed, version) in self.store.sealed_secrets().await? {
            if self.sealer.is_current(&sealed) {
                continue;
            }
            let plain = self.sealer.open(&id, &sealed).map_err(|e| SetupError::Secrets { accounts: 1, why: format!("{id}: {e}") })?;
            let again = self.sealer.seal(&id, &plain).map_err(|e| SetupError::Secrets { accounts: 1, why: e.to_string() })?;
            if self.store.replace_secret(&id, version, &again).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The dispatcher (run it with [`Dispatcher::run`]).
    pub fn dispatcher(&self) -> Dispatcher {
        self.dispatcher.clone()
    }

    /// `[posting] default_time_zone`: the zone of an account that names none.
    pub fn default_time_zone(&self) -> &str {
        &self.config.default_time_zone
    }

    /// `[posting] autofill_every_secs`.
    pub fn autofill_every_secs(&self) -> u64 {
        self.config.autofill_every_secs
    }

    /// The tables.
    pub fn store(&self) -> &Store {
        &self.store
    }
}
