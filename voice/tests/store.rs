//! The `voice_commands` table on SQLite and PostgreSQL: a confirmation token is claimed once (a second claim reads the
//! first's result, a claim in flight says so), not past its time, not by another key; lists are per key and page.

use platform::db::Db;
use test_support::postgres::PgServer;
use voice::store::{Claim, Store};

async fn check(db: &Db) {
    let store = Store::open(db).await.expect("store");
    let now = 1_000_000;
    store.insert("vc_a", "key_a", now, "needs_confirmation", "pause_campaign", "{}", Some("{\"action\":\"x\"}"), Some(("hash-a", now + 300_000)), None).await.expect("insert");
    store.insert("vc_b", "key_a", now + 1, "needs_confirmation", "cancel_post", "{}", Some("{}"), Some(("hash-b", now + 10)), None).await.expect("insert");
    store.insert("vc_c", "key_b", now + 2, "done", "list_posts", "{}", None, None, Some(("UklGRg==", "c.wav"))).await.expect("insert");

    // Another key's token is no token.
    assert!(matches!(store.claim("hash-a", Some("key_b"), now + 5).await.expect("claim"), Claim::Unknown));
    // The first claim wins; while it runs a second is told so; once finished a second reads the result.
    assert!(matches!(store.claim("hash-a", Some("key_a"), now + 5).await.expect("claim"), Claim::Won(s) if s.id == "vc_a"));
    assert!(matches!(store.claim("hash-a", Some("key_a"), now + 6).await.expect("claim"), Claim::Running));
    store.finish("vc_a", "done", "{\"result\":1}", now + 7).await.expect("finish");
    assert!(matches!(store.claim("hash-a", Some("key_a"), now + 8).await.expect("claim"), Claim::Done(s) if s.record == "{\"result\":1}"));
    // Past its time.
    assert!(matches!(store.claim("hash-b", Some("key_a"), now + 11).await.expect("claim"), Claim::Expired));
    // An admin claims any key's.
    assert!(matches!(store.claim("nope", None, now).await.expect("claim"), Claim::Unknown));

    let a = store.list(Some("key_a"), None, 1).await.expect("list");
    assert_eq!(a.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["vc_b"]);
    let next = store.list(Some("key_a"), Some((a[0].created_ms, a[0].id.clone())), 10).await.expect("list");
    assert_eq!(next.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["vc_a"]);
    assert_eq!(store.list(None, None, 10).await.expect("list").len(), 3);
    assert_eq!(store.list(Some("key_b"), None, 10).await.expect("list").len(), 1);
}

#[tokio::test]
async fn tokens_and_lists_on_sqlite() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let path = std::env::temp_dir().join(format!("starling-voice-store-{}-{nanos}.db", std::process::id()));
    let db = Db::open(&format!("sqlite://{}", path.display())).await.expect("sqlite");
    check(&db).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn tokens_and_lists_on_postgres() {
    let pg = PgServer::start().await;
    let db = Db::open(&pg.url).await.expect("postgres");
    check(&db).await;
}
