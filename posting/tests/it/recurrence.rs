//! Recurring schedules and campaigns that fill their own slots: a cron
//! expression in the account's zone, an end date, a number of posts.
//!
//! The drafts here come from a stand-in for the content pipeline's seam
//! (`posting::drafts::Drafter`) that writes distinct sentences carrying
//! what it was asked to carry, so the schedule is what is tested; the real
//! drafter (the gateway's generate-then-rank on SmolLM2) fills slots in
//! `tests/posting_e2e.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use posting::drafts::{Draft, DraftError, DraftRequest, Drafter};
use serde_json::json;

use crate::api::{client, serve};
use crate::support::{env, BOTH};

struct StandIn(AtomicUsize);

impl Drafter for StandIn {
    fn drafts(&self, req: DraftRequest) -> BoxFuture<'_, Result<Vec<Draft>, DraftError>> {
        Box::pin(async move {
            let i = self.0.fetch_add(1, Ordering::SeqCst);
            let text = format!(
                "{} {} {}",
                req.disclosure.unwrap_or_default(),
                test_support::distinct_sentence(600 + i),
                req.link.unwrap_or_default()
            );
            Ok(vec![Draft { text: text.trim().to_owned(), score: 0.5 }])
        })
    }
}

#[tokio::test]
async fn campaigns_fill_their_cron_slots_until_their_end() {
    for backend in BOTH {
        let e = env(backend).await;
        e.posting.set_drafter(Arc::new(StandIn(AtomicUsize::new(0))));
        let c = client(&serve(&e).await, None);
        let (_, acc) = c.post("/accounts", json!({"platform": "dry-run", "handle": "tokyo_shop", "time_zone": "Asia/Tokyo"})).await;
        let (s, err) = c.post("/campaigns", json!({"account_id": acc["id"], "name": "bad", "cron": "0 9 * *"})).await;
        assert_eq!((s, err["error"]["field"].as_str()), (400, Some("cron")), "{err}");

        // Daily at 09:00 Tokyo, three posts in all, filled by itself.
        let body = json!({"account_id": acc["id"], "name": "daily", "cron": "0 9 * * *", "max_posts": 3, "autofill": true, "link_url": "https://acme.shop/x"});
        let (s, daily) = c.post("/campaigns", body).await;
        assert_eq!(s, 201, "{daily}");
        assert_eq!(e.posting.autofill(None).await.expect("autofill"), 3, "{backend:?}");
        assert_eq!(e.posting.autofill(None).await.expect("autofill"), 0, "{backend:?}: max_posts reached");
        let (_, posts) = c.get(&format!("/posts?campaign_id={}", daily["id"].as_str().expect("id"))).await;
        let posts = posts["data"].as_array().expect("posts").clone();
        let tz = jiff::tz::TimeZone::get("Asia/Tokyo").expect("zone");
        let mut days = Vec::new();
        for p in &posts {
            assert_eq!(p["state"], "draft", "approval required: drafts holding their slots");
            let at = jiff::Timestamp::from_millisecond(p["scheduled_ms"].as_i64().expect("slot")).expect("time").to_zoned(tz.clone());
            assert_eq!((at.hour(), at.minute()), (9, 0), "{at}");
            days.push(at.date());
            let text = p["parts"][0]["text"].as_str().expect("text");
            assert!(text.starts_with("#ad") && text.contains("/r/"), "{text}");
        }
        days.sort();
        days.dedup();
        assert_eq!(days.len(), 3, "three different days");

        // Every six hours until two days from now.
        let ends = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(48)).expect("time");
        let body = json!({"account_id": acc["id"], "name": "bursts", "cron": "0 */6 * * *", "ends_at": ends.to_string(), "autofill": true, "approval": "auto"});
        let (_, bursts) = c.post("/campaigns", body).await;
        let made = e.posting.autofill(None).await.expect("autofill");
        assert!((7..=8).contains(&made), "{backend:?}: 48 hours of six-hourly slots, {made}");
        let (_, posts) = c.get(&format!("/posts?campaign_id={}", bursts["id"].as_str().expect("id"))).await;
        for p in posts["data"].as_array().expect("posts") {
            assert_eq!(p["state"], "scheduled");
            assert!(p["scheduled_ms"].as_i64().is_some_and(|t| t < ends.as_millisecond()), "{p}");
        }
    }
}
