//! Webhooks: post and campaign events reach a real receiver on loopback,
//! signed (checked by Python's hmac), retried after failures, and kept
//! across a restart of the service.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::api::{client, serve};
use crate::support::{env, BOTH};

/// What the receiver got: (headers, body, status it answered).
type Seen = Arc<Mutex<Vec<(HeaderMap, String, u16)>>>;

/// A receiver that answers 500 to its first `fail` requests, then 200.
async fn receiver(fail: usize) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let log = log.clone();
            async move {
                let mut log = log.lock().expect("log");
                let status = if log.len() < fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
                log.push((headers, body, status.as_u16()));
                status
            }
        }),
    );
    let (addr, _) = test_support::serve_loopback(app).await;
    (format!("http://{addr}/hook"), seen)
}

#[tokio::test]
async fn events_are_signed_retried_and_kept_across_a_restart() {
    for backend in BOTH {
        let e = env(backend).await;
        let c = client(&serve(&e).await, None);
        let (url, seen) = receiver(2).await;
        let (s, hook) = c.post("/webhooks", json!({"url": url, "events": ["post.scheduled", "post.posted", "post.blocked", "campaign.created"]})).await;
        assert_eq!(s, 201, "{hook}");
        let secret = hook["secret"].as_str().expect("secret").to_owned();
        let (s, err) = c.post("/webhooks", json!({"url": url, "events": ["post.liked"]})).await;
        assert_eq!((s, err["error"]["field"].as_str()), (400, Some("events")));

        let (_, acc) = c.post("/accounts", json!({"platform": "dry-run", "handle": "shop"})).await;
        c.post("/campaigns", json!({"account_id": acc["id"], "name": "hooks"})).await;
        let now = jiff::Timestamp::now().to_string();
        c.post("/posts", json!({"account_id": acc["id"], "text": "Fresh beans today", "scheduled_at": now})).await;
        c.post("/posts", json!({"account_id": acc["id"], "text": "word ".repeat(70), "scheduled_at": now})).await;
        // Sent, refused twice by the receiver, held for its back-off.
        e.settle(3).await;
        let pending = e.posting.store().deliveries(hook["id"].as_str().expect("id")).await.expect("deliveries");
        assert!(pending.iter().any(|(_, state, _)| state == "pending"), "{backend:?}: {pending:?}");

        // Restarted later: a new service on the same database delivers the rest.
        sqlx::query("UPDATE posting_webhook_deliveries SET next_ms = 0 WHERE state = 'pending'").execute(e.db.pool()).await.expect("later");
        let sealer = posting::secrets::Sealer::new(Some(&crate::support::secret()), &[]).expect("key");
        let restarted = posting::Posting::open(&e.db, crate::support::config(&e.x.url()), sealer).await.expect("restart");
        restarted.dispatcher().step().await.expect("step");
        let done = e.posting.store().deliveries(hook["id"].as_str().expect("id")).await.expect("deliveries");
        assert!(done.iter().all(|(_, state, _)| state == "delivered"), "{backend:?}: {done:?}");
        let events: BTreeSet<&str> = done.iter().map(|(event, _, _)| event.as_str()).collect();
        assert_eq!(events, BTreeSet::from(["campaign.created", "post.blocked", "post.posted", "post.scheduled"]), "{backend:?}");
        assert_eq!(done.iter().filter(|(e, _, _)| e == "post.scheduled").count(), 2);

        let seen = seen.lock().expect("log").clone();
        let ok: Vec<_> = seen.iter().filter(|(_, _, status)| *status == 200).collect();
        assert_eq!(ok.len(), done.len(), "each delivered once after the failures");
        let (headers, body, _) = ok.iter().find(|(h, _, _)| h["starling-event"] == "post.posted").expect("posted");
        let payload: Value = serde_json::from_str(body).expect("json");
        assert_eq!(payload["type"], "post.posted");
        assert!(payload["data"]["external_ids"][0].as_str().is_some_and(|x| x.starts_with("dry_")), "{payload}");
        let sig = headers["starling-signature"].to_str().expect("signature");
        let (t, v1) = sig.split_once(",v1=").expect("t=..,v1=..");
        let t = t.trim_start_matches("t=");
        let check = std::process::Command::new("python3")
            .args(["-c", "import hmac, hashlib, sys; print(hmac.new(sys.argv[1].encode(), (sys.argv[2] + '.' + sys.argv[3]).encode(), hashlib.sha256).hexdigest())"])
            .args([&secret, t, body])
            .output()
            .expect("python3");
        assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), v1, "signed as documented");
    }
}
