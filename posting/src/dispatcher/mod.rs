//! The dispatcher: takes due posts under a lease and sends them, so that a
//! post is never lost and never sent twice, whatever stops the process.
//!
//! Each step: leases that ran out are settled (a claimed post was not
//! sent: scheduled again; an attempting one may have been: unknown), due
//! posts are claimed, each passes the gate, and each part is sent after
//! `attempting` is committed. What the platform answers decides the next
//! state (see [`PublishError`]): retried later only when nothing reached
//! it, on 429 (after the reset) or 503, with a cap on attempts. Unknown
//! posts are looked for among the account's recent posts; found, they are
//! posted (a thread goes on with its next part), not found after
//! `reconcile_checks` looks, they wait for a person.

mod media;
mod reconcile;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::gate::{self, GateConfig, Verdict};
use crate::model::{new_id, now_ms, Account, AccountStatus, State};
use crate::platforms::x_oauth::{RefreshError, XOAuth};
use crate::platforms::{Ctx, Outgoing, Platform, Platforms, PublishError};
use crate::secrets::Sealer;
use crate::store::{Claimed, Store, StoreError, Tenant, Transition, Value};

/// `[posting.dispatcher]`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// How often it looks for due posts, ms (it also wakes when one is scheduled).
    pub tick_ms: u64,
    /// How long a claim holds, seconds: longer than a platform call may take.
    pub lease_secs: u64,
    /// Calls to the platform per post before it fails.
    pub max_attempts: i64,
    /// First wait before retrying a post that did not get through, seconds (doubles each time, at most an hour).
    pub retry_secs: u64,
    /// Times an unknown post is looked for on the platform.
    pub reconcile_checks: i64,
    /// Wait between those looks, seconds.
    pub reconcile_secs: u64,
    /// Posts claimed per step.
    pub batch: i64,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self { tick_ms: 1000, lease_secs: 90, max_attempts: 6, retry_secs: 30, reconcile_checks: 3, reconcile_secs: 60, batch: 32 }
    }
}

/// What one step did (for tests and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Posts claimed.
    pub claimed: usize,
    /// Posts that went out.
    pub posted: usize,
    /// Unknown posts looked for.
    pub reconciled: usize,
    /// Webhook messages delivered.
    pub webhooks: usize,
}

/// The dispatcher of one process (its lease owner id is its own).
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    platforms: Platforms,
    sealer: Sealer,
    gate: GateConfig,
    config: DispatchConfig,
    owner: String,
    wake: Arc<tokio::sync::Notify>,
    x_oauth: Option<Arc<XOAuth>>,
    metrics: crate::MetricsConfig,
    /// When each account's metrics were last asked for by this process
    /// (a read that saved nothing still spent the account's budget).
    metrics_asked: Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
    webhooks: Option<reqwest::Client>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("owner", &self.owner).field("platforms", &self.platforms).finish_non_exhaustive()
    }
}

/// Credentials that could not be had.
enum CredentialsError {
    /// Not now (a refresh that failed, an account waiting for authorisation).
    Later(String),
    /// Not with this key or these values: a person must look.
    Never(String),
}

/// What happens to a post after a call.
enum After {
    /// No clear answer from a platform that de-duplicates on the key.
    Resend(String),
    Retry(String),
    Wait { until_ms: i64, reason: String },
    Fail(String),
    Unknown(String),
    Reauth(String),
    Suspended(String),
}

impl Dispatcher {
    /// A dispatcher over `store` posting to `platforms`.
    pub fn new(store: Store, platforms: Platforms, sealer: Sealer, gate: GateConfig, config: DispatchConfig) -> Self {
        Self { store, platforms, sealer, gate, config, owner: new_id("dsp"), wake: Arc::default(), x_oauth: None, metrics: crate::MetricsConfig { reads_per_day: 0, max_age_days: 30 }, metrics_asked: Arc::default(), webhooks: crate::webhooks::client().ok() }
    }

    /// Refresh X tokens with this app before they expire.
    pub fn with_oauth(mut self, x_oauth: Option<Arc<XOAuth>>) -> Self {
        self.x_oauth = x_oauth;
        self
    }

    /// Read posts' metrics as `metrics` says.
    pub fn with_metrics(mut self, metrics: crate::MetricsConfig) -> Self {
        self.metrics = metrics;
        self
    }

    /// Read the counts of recent posts of every account whose last reading
    /// is older than its share of the day's reads; returns readings kept.
    pub async fn read_metrics(&self) -> Result<usize, StoreError> {
        if self.metrics.reads_per_day == 0 {
            return Ok(0);
        }
        let every = 86_400_000 / i64::from(self.metrics.reads_per_day);
        let now = now_ms();
        let mut kept = 0;
        for account in self.store.accounts(&Tenant::All).await? {
            let asked = self.metrics_asked.lock().ok().and_then(|m| m.get(&account.id).copied());
            let last = self.store.last_metrics_read(&account.id).await?.max(asked);
            if account.status != AccountStatus::Active || last.is_some_and(|t| t > now - every) {
                continue;
            }
            let Ok(platform) = self.platform(&account) else { continue };
            let posts = self.store.posted_since(&account.id, now - self.metrics.max_age_days * 86_400_000, 100).await?;
            let mut ids: Vec<String> = Vec::new();
            let mut post_of = std::collections::HashMap::new();
            for (post, externals) in &posts {
                for e in externals {
                    if ids.len() < 100 {
                        ids.push(e.clone());
                        post_of.insert(e.clone(), post.clone());
                    }
                }
            }
            if ids.is_empty() {
                continue;
            }
            let Ok(credentials) = self.credentials(&account).await else { continue };
            if let Ok(mut m) = self.metrics_asked.lock() {
                m.insert(account.id.clone(), now);
            }
            let ctx = Ctx { account: &account, credentials: credentials.as_ref() };
            match platform.metrics(ctx, &ids).await {
                Ok(found) => {
                    let readings: Vec<_> =
                        found.into_iter().filter_map(|(ext, m)| post_of.get(&ext).map(|post| (post.clone(), ext, m))).collect();
                    kept += readings.len();
                    self.store.save_metrics(&account.id, &readings).await?;
                }
                Err(e) => tracing::warn!(account = %account.id, error = %e, "metrics not read"),
            }
        }
        Ok(kept)
    }

    /// Wake the loop now (a post was scheduled).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Run steps until `stop` resolves.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut metrics_read: Option<std::time::Instant> = None;
        loop {
            if let Err(e) = self.step().await {
                tracing::warn!(error = %e, "dispatcher step failed; trying again");
            }
            // Whose turn it is comes from the database; asking once a minute is enough.
            if metrics_read.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                metrics_read = Some(std::time::Instant::now());
                if let Err(e) = self.read_metrics().await {
                    tracing::warn!(error = %e, "reading metrics failed");
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(self.config.tick_ms)) => {}
            }
        }
    }

    /// One pass: settle expired leases, send due posts, look for unknown ones.
    pub async fn step(&self) -> Result<Step, StoreError> {
        let now = now_ms();
        let (requeued, unknown) = self.store.expire_leases(now).await?;
        if requeued + unknown > 0 {
            tracing::warn!(requeued, unknown, "leases of a stopped dispatcher expired");
        }
        let mut step = Step::default();
        let until = now + self.lease_ms();
        let claimed = self.store.claim(&self.owner, now, until, self.config.batch).await?;
        step.claimed = claimed.len();
        // One account's posts in order (a thread's parts, its rate limits);
        // accounts side by side.
        let mut by_account: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
        for c in claimed {
            by_account.entry(c.post.account_id.clone()).or_default().push(c);
        }
        let runs = by_account.into_values().map(|posts| async move {
            let mut posted = 0;
            for c in posts {
                match self.dispatch(&c).await {
                    Ok(true) => posted += 1,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(post = %c.post.id, error = %e, "dispatching failed; its lease will expire"),
                }
            }
            posted
        });
        step.posted = futures_util::future::join_all(runs).await.into_iter().sum();
        for c in self.store.unknown_due(now_ms(), self.config.batch).await? {
            if let Err(e) = self.reconcile(&c).await {
                tracing::warn!(post = %c.post.id, error = %e, "reconciling failed");
            }
            step.reconciled += 1;
        }
        if let Some(http) = &self.webhooks {
            step.webhooks = crate::webhooks::deliver(&self.store, &self.sealer, http).await?;
        }
        Ok(step)
    }

    fn lease_ms(&self) -> i64 {
        (self.config.lease_secs * 1000) as i64
    }

    /// When an unknown post is next looked for on its platform.
    fn next_look_ms(&self) -> i64 {
        now_ms() + (self.config.reconcile_secs * 1000) as i64
    }

    fn retry_delay_ms(&self, attempts: i64) -> i64 {
        let base = (self.config.retry_secs * 1000) as i64;
        base.saturating_mul(1 << attempts.clamp(1, 8).saturating_sub(1)).min(3_600_000)
    }

    /// The account's platform, or why not.
    fn platform(&self, account: &Account) -> Result<&Arc<dyn Platform>, String> {
        self.platforms.get(&account.platform).ok_or_else(|| format!("no platform `{}` is configured", account.platform))
    }

    /// The account's credentials, opened (and refreshed where they expire).
    async fn credentials(&self, account: &Account) -> Result<Option<serde_json::Value>, CredentialsError> {
        if let (Some(oauth), "x", true) = (&self.x_oauth, account.platform.as_str(), account.has_credentials) {
            return match oauth.fresh(&self.store, &self.sealer, account).await {
                Ok(c) => Ok(Some(c)),
                // The account is marked for authorisation: the post waits for it.
                Err(e @ RefreshError::Rejected(_)) | Err(e @ RefreshError::Failed(_)) => Err(CredentialsError::Later(e.to_string())),
                Err(RefreshError::Store(e)) => Err(CredentialsError::Later(e.to_string())),
            };
        }
        let sealed = self.store.sealed_credentials(&account.id).await.map_err(|e| CredentialsError::Later(e.to_string()))?;
        let Some((sealed, _)) = sealed else { return Ok(None) };
        let plain = self.sealer.open(&account.id, &sealed).map_err(|e| CredentialsError::Never(e.to_string()))?;
        serde_json::from_slice(&plain).map(Some).map_err(|e| CredentialsError::Never(format!("stored credentials are not JSON: {e}")))
    }

    /// Gate and send one claimed post; true when it ended posted.
    async fn dispatch(&self, c: &Claimed) -> Result<bool, StoreError> {
        let post = &c.post;
        let lease = Some(self.owner.as_str());
        // The batch before it may have taken a while: hold it anew, or
        // leave it to whoever took it over.
        if !self.store.extend_lease(&post.id, &self.owner, now_ms() + self.lease_ms()).await? {
            return Ok(false);
        }
        let Some(account) = self.store.account(&Tenant::All, &post.account_id).await? else {
            return self.end(&post.id, State::Failed, "its account no longer exists".into()).await.map(|_| false);
        };
        // An earlier post of this batch may have met a rate limit or lost
        // the account's authorisation: the rest of the batch waits too.
        let now = now_ms();
        if account.status != AccountStatus::Active {
            let why = format!("the account is {}: waiting", account.status.as_str());
            return self.requeue(&post.id, now, why).await.map(|_| false);
        }
        if let Some(until) = account.paused_until_ms.filter(|&u| u > now) {
            return self.requeue(&post.id, until, "the account is rate limited: waiting for the reset".into()).await.map(|_| false);
        }
        let campaign = match &post.campaign_id {
            Some(id) => self.store.campaign(&Tenant::All, id).await?,
            None => None,
        };
        let platform = match self.platform(&account) {
            Ok(p) => p,
            Err(why) => return self.block(&post.id, why).await.map(|_| false),
        };
        match gate::check(&self.store, &self.gate, platform.rules(), &account, campaign.as_ref(), post).await? {
            Verdict::Pass => {}
            Verdict::Block(why) => return self.block(&post.id, why).await.map(|_| false),
            Verdict::Defer { until_ms, reason } => {
                self.requeue(&post.id, until_ms, reason).await?;
                return Ok(false);
            }
        }
        let credentials = match self.credentials(&account).await {
            Ok(c) => c,
            Err(CredentialsError::Later(why)) => {
                return self.requeue(&post.id, now_ms() + self.retry_delay_ms(1), format!("the account's credentials: {why}")).await.map(|_| false)
            }
            Err(CredentialsError::Never(why)) => return self.block(&post.id, format!("the account's credentials: {why}")).await.map(|_| false),
        };
        let ctx = Ctx { account: &account, credentials: credentials.as_ref() };
        let mut ids = post.external_ids.clone();
        let mut attempts = post.attempts;
        while ids.len() < post.parts.len() {
            let part = &post.parts[ids.len()];
            // When this part was first tried: its idempotency key's age.
            let first_try = if ids.len() == post.external_ids.len() { post.first_try_ms } else { None };
            let window = platform.idempotency_window_ms();
            if let (Some(first), Some(w)) = (first_try, window) {
                if now_ms() - first >= w {
                    // The platform has forgotten the key: it may have the
                    // part already, so look before sending it again.
                    let why = "its idempotency key has expired: looking for it on the account before sending again".to_owned();
                    return self.unsure(&post.id, State::Claimed, why).await.map(|_| false);
                }
            }
            // Media go up before the post: nothing is public until it is
            // sent. An upload may take minutes: hold the post meanwhile.
            if !part.media.is_empty() && !self.store.extend_lease(&post.id, &self.owner, now_ms() + self.lease_ms() + 180_000).await? {
                return Ok(false);
            }
            let media = match self.media_ids(platform.as_ref(), ctx, &account, &part.media).await {
                Ok(m) => m,
                Err(e) => return self.upload_failed(&post.id, attempts + 1, e).await.map(|_| false),
            };
            attempts += 1;
            let now = now_ms();
            let first_try = first_try.unwrap_or(now);
            let begin = Transition {
                from: &[State::Claimed],
                to: State::Attempting,
                lease,
                expired_by: None,
                set: vec![
                    ("attempts", Value::Int(Some(attempts))),
                    ("attempt_started_ms", Value::Int(Some(now))),
                    ("first_try_ms", Value::Int(Some(first_try))),
                    ("lease_until_ms", Value::Int(Some(now + self.lease_ms()))),
                ],
                detail: Some(format!("part {} of {}, attempt {attempts}", ids.len() + 1, post.parts.len())),
            };
            if !self.store.transition(&post.id, begin).await? {
                // The lease went to another dispatcher: it is theirs now.
                return Ok(false);
            }
            let key = format!("{}.{}", post.id, ids.len());
            let out = Outgoing {
                idempotency_key: &key,
                text: &part.text,
                reply_to: ids.last().map(String::as_str),
                media: &media,
                paid_partnership: post.paid_partnership,
                made_with_ai: post.made_with_ai,
            };
            let result = platform.publish(ctx, out).await;
            let after = match result {
                Ok(published) => {
                    ids.push(published.id);
                    let done = ids.len() == post.parts.len();
                    let now = now_ms();
                    let set = vec![
                        ("external_ids", Value::Text(Some(serde_json::to_string(&ids).unwrap_or_default()))),
                        ("posted_ms", Value::Int(done.then_some(now))),
                        ("last_error", Value::Text(None)),
                        ("due_ms", Value::Int(None)),
                        ("first_try_ms", Value::Int(None)),
                    ];
                    let detail = ids.last().map(|id| format!("posted as {id}"));
                    let t = Transition {
                        from: &[State::Attempting],
                        to: if done { State::Posted } else { State::Claimed },
                        lease,
                        expired_by: None,
                        set: set.clone(),
                        detail: detail.clone(),
                    };
                    if !self.store.transition(&post.id, t).await? {
                        // The lease ran out while the call was in flight and
                        // the post was taken for unknown: record what the
                        // platform said rather than let it be looked for.
                        let to = if done { State::Posted } else { State::Scheduled };
                        let t = Transition { from: &[State::Unknown], to, lease: None, expired_by: None, set, detail };
                        if !self.store.transition(&post.id, t).await? {
                            tracing::warn!(post = %post.id, id = ?ids.last(), "posted after its lease ran out; its state moved on");
                        }
                        return Ok(done);
                    }
                    if let Some(until) = published.pause_until_ms {
                        self.store.pause_account(&account.id, until).await?;
                    }
                    if done {
                        tracing::info!(post = %post.id, ids = ?ids, "posted");
                        return Ok(true);
                    }
                    continue;
                }
                Err(PublishError::NotSent(why)) | Err(PublishError::Unavailable(why)) => After::Retry(why),
                Err(PublishError::RateLimited { until_ms, reason }) => {
                    self.store.pause_account(&account.id, until_ms).await?;
                    After::Wait { until_ms, reason }
                }
                Err(PublishError::Rejected(why)) => After::Fail(why),
                // The platform de-duplicates on the key: sending again is
                // safe while it remembers the key.
                Err(PublishError::Unknown(why)) if window.is_some_and(|w| now_ms() - first_try < w) => After::Resend(why),
                Err(PublishError::Unknown(why)) => After::Unknown(why),
                Err(PublishError::Unauthorized(why)) => After::Reauth(why),
                Err(PublishError::Suspended(why)) => After::Suspended(why),
            };
            self.settle(&post.id, &account, attempts, after).await?;
            return Ok(false);
        }
        Ok(false)
    }

    /// Move an attempting post on after a call that did not post it.
    async fn settle(&self, id: &str, account: &Account, attempts: i64, after: After) -> Result<(), StoreError> {
        let lease = Some(self.owner.as_str());
        let back = |due: i64, why: String, detail: String| Transition {
            from: &[State::Attempting],
            to: State::Scheduled,
            lease,
            expired_by: None,
            set: vec![
                ("due_ms", Value::Int(Some(due))),
                ("last_error", Value::Text(Some(why))),
                ("lease_owner", Value::Text(None)),
                ("lease_until_ms", Value::Int(None)),
            ],
            detail: Some(detail),
        };
        let t = match after {
            After::Retry(why) if attempts < self.config.max_attempts => {
                let due = now_ms() + self.retry_delay_ms(attempts);
                back(due, why.clone(), format!("not sent ({why}); retry {attempts} of {}", self.config.max_attempts - 1))
            }
            After::Wait { until_ms, reason } if attempts < self.config.max_attempts => {
                back(until_ms, reason.clone(), format!("rate limited ({reason}); waiting for the reset"))
            }
            After::Resend(why) if attempts < self.config.max_attempts => {
                let due = now_ms() + self.retry_delay_ms(attempts);
                back(due, why.clone(), format!("no clear answer ({why}); sent again under its idempotency key"))
            }
            // Out of attempts, and it may be on the platform: looked for, not failed.
            After::Resend(why) => return self.unsure(id, State::Attempting, format!("sent without a clear answer, out of attempts: {why}")).await,
            After::Retry(why) | After::Wait { reason: why, .. } | After::Fail(why) => {
                let why = if attempts >= self.config.max_attempts { format!("{why} (after {attempts} attempts)") } else { why };
                return self.end(id, State::Failed, why).await;
            }
            After::Reauth(why) => {
                self.store.set_account_status(&account.id, AccountStatus::NeedsReauth, Some(&why)).await?;
                back(now_ms(), format!("the account needs authorising again: {why}"), "waiting for the account".into())
            }
            After::Suspended(why) => {
                self.store.set_account_status(&account.id, AccountStatus::Suspended, Some(&why)).await?;
                return self.end(id, State::Failed, format!("the account is suspended: {why}")).await;
            }
            After::Unknown(why) => Transition {
                from: &[State::Attempting],
                to: State::Unknown,
                lease,
                expired_by: None,
                set: vec![
                    ("due_ms", Value::Int(Some(self.next_look_ms()))),
                    ("last_error", Value::Text(Some(format!("sent without a clear answer: {why}")))),
                    ("lease_owner", Value::Text(None)),
                    ("lease_until_ms", Value::Int(None)),
                ],
                detail: Some(why),
            },
        };
        self.store.transition(id, t).await?;
        Ok(())
    }

    /// End a post this dispatcher holds in a final state, with why
    /// (nothing, where its lease went to another meanwhile).
    async fn end(&self, id: &str, to: State, why: String) -> Result<(), StoreError> {
        let t = Transition {
            from: &[State::Claimed, State::Attempting],
            to,
            lease: Some(&self.owner),
            expired_by: None,
            set: vec![
                ("last_error", Value::Text(Some(why.clone()))),
                ("due_ms", Value::Int(None)),
                ("lease_owner", Value::Text(None)),
                ("lease_until_ms", Value::Int(None)),
            ],
            detail: Some(why),
        };
        self.store.transition(id, t).await?;
        Ok(())
    }

    /// A post this dispatcher holds (claimed, or attempting with no clear
    /// answer) that may already be on the platform and may not be sent
    /// again: looked for there (reconciliation) instead.
    async fn unsure(&self, id: &str, from: State, why: String) -> Result<(), StoreError> {
        let t = Transition {
            from: &[from],
            to: State::Unknown,
            lease: Some(&self.owner),
            expired_by: None,
            set: vec![
                ("due_ms", Value::Int(Some(now_ms()))),
                ("reconcile_checks", Value::Int(Some(0))),
                ("last_error", Value::Text(Some(why.clone()))),
                ("lease_owner", Value::Text(None)),
                ("lease_until_ms", Value::Int(None)),
            ],
            detail: Some(why),
        };
        self.store.transition(id, t).await?;
        Ok(())
    }

    async fn block(&self, id: &str, why: String) -> Result<(), StoreError> {
        tracing::info!(post = id, reason = %why, "blocked by the gate");
        self.end(id, State::Blocked, why).await
    }

    async fn requeue(&self, id: &str, due: i64, why: String) -> Result<(), StoreError> {
        let t = Transition {
            from: &[State::Claimed],
            to: State::Scheduled,
            lease: Some(&self.owner),
            expired_by: None,
            set: vec![("due_ms", Value::Int(Some(due))), ("lease_owner", Value::Text(None)), ("lease_until_ms", Value::Int(None))],
            detail: Some(why),
        };
        self.store.transition(id, t).await?;
        Ok(())
    }
}
