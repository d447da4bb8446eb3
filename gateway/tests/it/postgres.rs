//! The durable records on PostgreSQL (what docker-compose.gpu.yml runs):
//! the usage and key tests of SQLite, against a private PostgreSQL server
//! each test starts (`test_support::postgres`).

/// A server whose URL's usage journal (kept in the temp directory) goes
/// with it, and none a crashed earlier run left is taken for ours.
pub struct PgServer(test_support::postgres::PgServer);

impl PgServer {
    pub async fn start() -> Self {
        let mut pg = test_support::postgres::PgServer::start().await;
        let remove = |url: &str| {
            for (file, _) in crate::support::journal_files(&crate::support::journal_for(url)) {
                let _ = std::fs::remove_file(file);
            }
        };
        remove(&pg.url);
        pg.on_drop(remove);
        Self(pg)
    }
}

impl std::ops::Deref for PgServer {
    type Target = test_support::postgres::PgServer;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for PgServer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

#[tokio::test]
async fn usage_records_are_kept_across_a_restart_on_postgres() {
    let pg = PgServer::start().await;
    crate::usage::recorded_priced_and_kept_across_a_restart(&pg.url).await;
}

#[tokio::test]
async fn keys_are_created_revoked_and_enforced_on_postgres() {
    let pg = PgServer::start().await;
    crate::keys::revoked_key_refused(&pg.url).await;
}

#[tokio::test]
async fn journaled_records_are_written_once_on_postgres() {
    let pg = PgServer::start().await;
    crate::usage::journal_written_once(&pg.url).await;
}

#[tokio::test]
async fn usage_records_wait_out_a_database_outage() {
    let mut pg = PgServer::start().await;
    crate::usage::kept_through_a_database_outage(&mut pg).await;
}

/// A key without a budget, then keys with one, on one connection: the
/// optional float must bind the same way both times (sqlx's Any driver
/// binds a missing f64 as float4 unless worked around).
#[tokio::test]
async fn keys_with_and_without_budgets_on_one_postgres_connection() {
    let pg = PgServer::start().await;
    let db = platform::db::Db::open(&pg.url).await.expect("database");
    let store = platform::keys::KeyStore::new(&db);
    let new = |name: &str, budget: Option<f64>| platform::keys::NewKey {
        name: name.into(),
        budget_usd_per_day: budget,
        rpm: None,
        tpm: None,
        models: Vec::new(),
        scopes: Vec::new(),
    };
    for (name, budget) in [("none", None), ("some", Some(2.5)), ("none-again", None), ("more", Some(0.25))] {
        let created = store.create(&new(name, budget)).await;
        assert!(created.is_ok(), "create {name}: {:?}", created.err());
    }
    let mut got: Vec<(String, Option<f64>)> =
        store.all().await.expect("list").into_iter().map(|(_, k)| (k.name, k.budget_usd_per_day)).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![("more".into(), Some(0.25)), ("none".into(), None), ("none-again".into(), None), ("some".into(), Some(2.5))]
    );
}
