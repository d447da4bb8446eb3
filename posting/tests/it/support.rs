//! A posting service on a fresh database, a fake X, and helpers to put
//! accounts and posts in.


use base64::Engine as _;
use platform::db::Db;
use posting::model::{Account, Part, Post, State};
use posting::secrets::Sealer;
use posting::store::{NewAccount, NewPost};
use posting::{Posting, PostingConfig};
use test_support::fake_x::FakeX;
use test_support::postgres::PgServer;

/// Which database a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A service, its database and a fake X; everything goes on drop.
pub struct Env {
    pub db: Db,
    pub posting: Posting,
    pub x: FakeX,
    _pg: Option<PgServer>,
    sqlite: Option<std::path::PathBuf>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(path) = &self.sqlite {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}

/// The secret key of the tests (32 bytes).
pub fn secret() -> String {
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

/// The dispatcher's settings for tests: no waiting between retries or
/// looks, short leases and timeouts.
pub fn config(x_url: &str) -> PostingConfig {
    let mut c = PostingConfig::default();
    c.x.api_base = x_url.to_owned();
    c.x.timeout_secs = 2;
    c.x.connect_timeout_secs = 1;
    c.dispatcher.retry_secs = 0;
    c.dispatcher.reconcile_secs = 0;
    c.dispatcher.reconcile_checks = 2;
    c.dispatcher.lease_secs = 5;
    c
}

/// A fresh database on `backend` (its URL, and the server behind it).
pub async fn database(backend: Backend) -> (String, Option<PgServer>, Option<std::path::PathBuf>) {
    match backend {
        Backend::Postgres => {
            let pg = PgServer::start().await;
            (pg.url.clone(), Some(pg), None)
        }
        Backend::Sqlite => {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            let path = std::env::temp_dir().join(format!("starling-posting-{}-{nanos}.db", std::process::id()));
            (format!("sqlite://{}", path.display()), None, Some(path))
        }
    }
}

/// A service on a fresh database with `tune` applied to its config.
pub async fn env_with(backend: Backend, tune: impl FnOnce(&mut PostingConfig)) -> Env {
    let x = FakeX::start().await;
    let (url, pg, sqlite) = database(backend).await;
    let db = Db::open(&url).await.expect("database");
    let mut cfg = config(&x.url());
    tune(&mut cfg);
    let sealer = Sealer::new(Some(&secret()), &[]).expect("key");
    let posting = Posting::open(&db, cfg, sealer).await.expect("posting");
    Env { db, posting, x, _pg: pg, sqlite }
}

/// A service on a fresh database.
pub async fn env(backend: Backend) -> Env {
    env_with(backend, |_| {}).await
}

impl Env {
    /// An X account whose token the fake knows (user `user_id`).
    pub async fn x_account(&self, handle: &str, user_id: &str, daily_cap: i64) -> Account {
        let token = format!("token-{handle}");
        self.x.add_user(&token, user_id, handle);
        let id = posting::model::new_id("acc");
        let sealer = Sealer::new(Some(&secret()), &[]).expect("key");
        let sealed = sealer.seal(&id, serde_json::json!({"access_token": token}).to_string().as_bytes()).expect("seal");
        let new = NewAccount { platform: "x".into(), handle: handle.into(), time_zone: "Europe/Paris".into(), daily_cap, max_length: None };
        self.posting.store().create_account(Some(id), "", &new, Some(sealed)).await.expect("account")
    }

    /// A post of `parts` scheduled for now.
    pub async fn due(&self, account: &Account, parts: &[&str], tune: impl FnOnce(&mut NewPost)) -> Post {
        let mut new = NewPost {
            account_id: account.id.clone(),
            campaign_id: None,
            variant: None,
            parts: parts.iter().map(|t| Part { text: (*t).to_owned(), media: Vec::new() }).collect(),
            affiliate: false,
            paid_partnership: false,
            made_with_ai: false,
            state: State::Scheduled,
            scheduled_ms: Some(posting::model::now_ms()),
        };
        tune(&mut new);
        self.posting.store().create_post("", &new).await.expect("post")
    }

    /// The post as stored now.
    pub async fn reload(&self, post: &Post) -> Post {
        self.posting.store().post(&posting::store::Tenant::All, &post.id).await.expect("read").expect("exists")
    }

    /// Run dispatcher steps until nothing moves (at most `n`).
    pub async fn settle(&self, n: usize) {
        let d = self.posting.dispatcher();
        for _ in 0..n {
            let s = d.step().await.expect("step");
            if s.claimed == 0 && s.reconciled == 0 {
                return;
            }
        }
    }
}

/// Distinct sentences, one per `i` (no two near-duplicates).
pub fn sentence(i: usize) -> String {
    test_support::distinct_sentence(i)
}

/// Both backends, for a scenario.
pub const BOTH: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

