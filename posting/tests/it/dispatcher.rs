//! The dispatcher against the fake X: what goes out, what is retried,
//! what is never sent twice.

use posting::model::{AccountStatus, State};
use posting::store::Tenant;
use test_support::fake_x::Fault;

use crate::support::{env, env_with, sentence, BOTH};

/// A post and a thread go out once each, in order, with their labels;
/// every step is in the post's events.
#[tokio::test]
async fn posts_and_threads_go_out_once() {
    for backend in BOTH {
        let e = env(backend).await;
        let acc = e.x_account("maker", "u1", 100).await;
        let single = e.due(&acc, &["#ad New grinder in stock https://acme.shop/g"], |p| {
            p.affiliate = true;
            p.made_with_ai = true;
        })
        .await;
        let thread = e.due(&acc, &["Thread 1/3 about beans", "2/3: roast", "3/3: grind"], |_| {}).await;
        e.settle(5).await;
        let (single, thread) = (e.reload(&single).await, e.reload(&thread).await);
        assert_eq!((single.state, thread.state), (State::Posted, State::Posted), "{backend:?}: {single:?} {thread:?}");
        let sent = e.x.posts();
        assert_eq!(sent.len(), 4, "{backend:?}");
        let by_id = |id: &str| sent.iter().find(|p| p.id == id).cloned().expect("sent");
        let one = by_id(&single.external_ids[0]);
        assert_eq!(one.text, single.parts[0].text);
        assert_eq!(one.body["made_with_ai"], true);
        assert!(one.body.get("paid_partnership").is_none());
        let parts: Vec<_> = thread.external_ids.iter().map(|id| by_id(id)).collect();
        let texts: Vec<&str> = parts.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, ["Thread 1/3 about beans", "2/3: roast", "3/3: grind"]);
        assert_eq!(parts[0].reply_to, None);
        assert_eq!(parts[1].reply_to.as_deref(), Some(parts[0].id.as_str()));
        assert_eq!(parts[2].reply_to.as_deref(), Some(parts[1].id.as_str()));
        let events: Vec<String> = e.posting.store().events(&single.id).await.expect("events").into_iter().map(|ev| ev.to).collect();
        assert_eq!(events, ["scheduled", "claimed", "attempting", "posted"], "{backend:?}");
    }
}

/// 503 and a failed connection are retried (nothing was sent); 429 holds
/// the account until the reset the headers give.
#[tokio::test]
async fn retries_only_what_was_not_sent() {
    for backend in BOTH {
        let e = env(backend).await;
        let acc = e.x_account("maker", "u1", 100).await;
        e.x.fail_next([Fault::Unavailable]);
        let p = e.due(&acc, &[&sentence(1)], |_| {}).await;
        e.posting.dispatcher().step().await.expect("step");
        let after = e.reload(&p).await;
        assert_eq!(after.state, State::Scheduled, "{backend:?}");
        assert!(after.last_error.as_deref().is_some_and(|m| m.contains("503")), "{after:?}");
        e.settle(3).await;
        let after = e.reload(&p).await;
        assert_eq!((after.state, after.attempts, e.x.count(&sentence(1))), (State::Posted, 2, 1), "{backend:?}");

        // Two posts claimed in one step: the first meets the 429, the
        // second is not sent either.
        e.x.fail_next([Fault::RateLimited { reset_in_secs: 120 }]);
        let both = [e.due(&acc, &[&sentence(2)], |_| {}).await, e.due(&acc, &[&sentence(3)], |_| {}).await];
        e.settle(3).await;
        let account = e.posting.store().account(&Tenant::All, &acc.id).await.expect("read").expect("account");
        let reset = account.paused_until_ms.expect("paused");
        assert!(reset >= posting::model::now_ms() + 100_000, "paused until the reset: {reset}");
        for p in &both {
            let p = e.reload(p).await;
            assert_eq!((p.state, p.due_ms), (State::Scheduled, Some(reset)), "{backend:?}: {p:?}");
        }
        assert_eq!(e.x.posts().len(), 1, "nothing sent while rate limited");
    }
}

/// A 500 after the post was created, and a call that never answers, end
/// `unknown`; the account's timeline shows them and they become posted
/// without a second send. A post that never left is found nowhere and
/// waits for a person; `retry` sends it once.
#[tokio::test]
async fn unknown_outcomes_are_reconciled_not_resent() {
    for backend in BOTH {
        let e = env(backend).await;
        let acc = e.x_account("maker", "u1", 100).await;
        e.x.fail_next([Fault::ServerErrorAfterCreate, Fault::HangAfterCreate]);
        let a = e.due(&acc, &["Fresh roast https://acme.shop/roast & more"], |_| {}).await;
        let b = e.due(&acc, &[&sentence(5)], |_| {}).await;
        e.settle(4).await;
        for p in [&a, &b] {
            let p = e.reload(p).await;
            assert_eq!(p.state, State::Posted, "{backend:?}: {p:?}");
            let events: Vec<String> = e.posting.store().events(&p.id).await.expect("events").into_iter().map(|ev| ev.to).collect();
            assert_eq!(events, ["scheduled", "claimed", "attempting", "unknown", "posted"], "{backend:?}");
            let sent = e.x.posts().into_iter().find(|s| s.text == p.parts[0].text).expect("on X");
            assert_eq!(p.external_ids, [sent.id]);
        }
        assert_eq!(e.x.posts().len(), 2, "{backend:?}: no second send");

        // Taken by a dispatcher that died after `attempting` was committed
        // and before the request left.
        let lost = e.due(&acc, &[&sentence(6)], |_| {}).await;
        sqlx::query("UPDATE posting_posts SET state = 'attempting', lease_owner = 'dsp_gone', lease_until_ms = 0 WHERE id = $1")
            .bind(&lost.id)
            .execute(e.db.pool())
            .await
            .expect("simulate a crash");
        e.settle(5).await;
        let held = e.reload(&lost).await;
        assert_eq!((held.state, held.due_ms), (State::Unknown, None), "{backend:?}: {held:?}");
        assert!(held.last_error.as_deref().is_some_and(|m| m.contains("/retry")), "{held:?}");
        assert_eq!(e.x.count(&sentence(6)), 0);
    }
}

/// Duplicate content and suspension end a post for good; 401 sends the
/// account back for authorisation and its posts wait.
#[tokio::test]
async fn refusals_are_final_and_reauthorisation_waits() {
    for backend in BOTH {
        let e = env(backend).await;
        let acc = e.x_account("maker", "u1", 100).await;
        e.x.add_post("u1", &sentence(7));
        let dup = e.due(&acc, &[&sentence(7)], |_| {}).await;
        e.settle(3).await;
        let dup = e.reload(&dup).await;
        assert_eq!((dup.state, dup.attempts), (State::Failed, 1), "{backend:?}: {dup:?}");
        assert!(dup.last_error.as_deref().is_some_and(|m| m.contains("duplicate")), "{dup:?}");

        e.x.fail_next([Fault::Unauthorized]);
        let waits = e.due(&acc, &[&sentence(8)], |_| {}).await;
        e.settle(3).await;
        let waits = e.reload(&waits).await;
        assert_eq!(waits.state, State::Scheduled, "{backend:?}: {waits:?}");
        let account = e.posting.store().account(&Tenant::All, &acc.id).await.expect("read").expect("account");
        assert_eq!(account.status, AccountStatus::NeedsReauth);
        assert_eq!(e.x.count(&sentence(8)), 0);

        let other = e.x_account("other", "u2", 100).await;
        e.x.fail_next([Fault::Suspended]);
        let gone = e.due(&other, &[&sentence(9)], |_| {}).await;
        e.settle(3).await;
        assert_eq!(e.reload(&gone).await.state, State::Failed);
        let other = e.posting.store().account(&Tenant::All, &other.id).await.expect("read").expect("account");
        assert_eq!(other.status, AccountStatus::Suspended);
    }
}

/// The gate: length, banned terms, disclosure, duplicates and the daily
/// cap (counted in the account's own day), each with its reason.
#[tokio::test]
async fn the_gate_blocks_with_reasons_and_defers_over_the_cap() {
    for backend in BOTH {
        let e = env_with(backend, |c| c.gate.banned_terms = vec!["guaranteed returns".into()]).await;
        let acc = e.x_account("maker", "u1", 3).await;
        let long = e.due(&acc, &[&"word ".repeat(60)], |_| {}).await;
        let banned = e.due(&acc, &["Guaranteed returns on this grinder"], |_| {}).await;
        let undisclosed = e.due(&acc, &["Buy the grinder https://acme.shop/g"], |p| p.affiliate = true).await;
        let disclosed = e.due(&acc, &["Buy the grinder https://acme.shop/g"], |p| {
            p.affiliate = true;
            p.paid_partnership = true;
        })
        .await;
        e.settle(3).await;
        for (post, reason) in [(&long, "long"), (&banned, "banned term"), (&undisclosed, "#ad")] {
            let p = e.reload(post).await;
            assert_eq!(p.state, State::Blocked, "{backend:?}: {p:?}");
            assert!(p.last_error.as_deref().is_some_and(|m| m.contains(reason)), "{backend:?}: {reason}: {p:?}");
        }
        assert_eq!(e.reload(&disclosed).await.state, State::Posted, "{backend:?}");
        assert_eq!(e.x.posts()[0].body["paid_partnership"], true);

        let near = e.due(&acc, &["Buy the grinder https://acme.shop/g!"], |p| p.paid_partnership = true).await;
        e.settle(2).await;
        let near = e.reload(&near).await;
        assert!(near.state == State::Blocked && near.last_error.as_deref().is_some_and(|m| m.contains("duplicate")), "{near:?}");

        // Cap 3: one is out; of three more, two go and one waits for the
        // next day in Paris.
        let mut more = Vec::new();
        for i in 10..13 {
            more.push(e.due(&acc, &[&sentence(i)], |_| {}).await);
        }
        e.settle(4).await;
        let mut states = Vec::new();
        for p in &more {
            states.push(e.reload(p).await);
        }
        assert_eq!(states.iter().filter(|p| p.state == State::Posted).count(), 2, "{backend:?}: {states:?}");
        let deferred = states.iter().find(|p| p.state == State::Scheduled).expect("one waits");
        let tz = posting::schedule::zone("Europe/Paris").expect("zone");
        let (_, midnight) = posting::schedule::local_day(&tz, posting::model::now_ms());
        assert_eq!(deferred.due_ms, Some(midnight), "moved to the next day in Paris");
        let why = e.posting.store().events(&deferred.id).await.expect("events").last().and_then(|ev| ev.detail.clone());
        assert!(why.is_some_and(|d| d.contains("daily cap")), "{backend:?}");
    }
}

/// Two dispatchers (two replicas) on one database, 40 posts of four
/// accounts: each goes out exactly once.
#[tokio::test]
async fn replicas_never_send_a_post_twice() {
    for backend in BOTH {
        let e = env(backend).await;
        e.x.set_latency(std::time::Duration::from_millis(5));
        let mut posts = Vec::new();
        for a in 0..4 {
            let acc = e.x_account(&format!("acct{a}"), &format!("u{a}"), 100).await;
            for i in 0..10 {
                posts.push(e.due(&acc, &[&sentence(a * 10 + i)], |_| {}).await);
            }
        }
        let sealer = posting::secrets::Sealer::new(Some(&crate::support::secret()), &[]).expect("key");
        let second = posting::Posting::open(&e.db, crate::support::config(&e.x.url()), sealer).await.expect("replica");
        let (d1, d2) = (e.posting.dispatcher(), second.dispatcher());
        for _ in 0..10 {
            let (a, b) = tokio::join!(d1.step(), d2.step());
            let (a, b) = (a.expect("step"), b.expect("step"));
            if a.claimed + b.claimed == 0 {
                break;
            }
        }
        for p in &posts {
            assert_eq!(e.reload(p).await.state, State::Posted, "{backend:?}");
            assert_eq!(e.x.count(&p.parts[0].text), 1, "{backend:?}: {}", p.parts[0].text);
        }
        assert_eq!(e.x.posts().len(), 40);
    }
}

/// Mastodon: its own length rule (500, a URL counting 23), threads as
/// replies, and an unknown outcome settled by sending again under the same
/// idempotency key: one status, never two.
#[tokio::test]
async fn mastodon_posts_once_under_its_idempotency_key() {
    use test_support::fake_mastodon::FakeMastodon;
    for backend in BOTH {
        let e = env(backend).await;
        let m = FakeMastodon::start().await;
        m.add_user("tok-m", "42", "brew@fosstodon.example");
        let sealer = posting::secrets::Sealer::new(Some(&crate::support::secret()), &[]).expect("key");
        let id = posting::model::new_id("acc");
        let creds = serde_json::json!({"instance": m.url(), "access_token": "tok-m"}).to_string();
        let new = posting::store::NewAccount { platform: "mastodon".into(), handle: "brew".into(), time_zone: "UTC".into(), daily_cap: 100, max_length: None };
        let acc = e.posting.store().create_account(Some(id.clone()), "", &new, Some(sealer.seal(&id, creds.as_bytes()).expect("seal"))).await.expect("account");

        m.fail_next([Fault::ServerErrorAfterCreate]);
        let unknown = e.due(&acc, &[&sentence(400)], |_| {}).await;
        let long_url = format!("{} https://acme.shop/{}", "a".repeat(440), "x".repeat(200));
        let counted = e.due(&acc, &[&long_url], |_| {}).await;
        let too_long = e.due(&acc, &[&"b".repeat(501)], |_| {}).await;
        let thread = e.due(&acc, &[&sentence(401), &sentence(402)], |_| {}).await;
        e.settle(5).await;
        let unknown = e.reload(&unknown).await;
        assert_eq!((unknown.state, e.x.count(&sentence(400)), m.count(&sentence(400))), (State::Posted, 0, 1), "{backend:?}: {unknown:?}");
        let events: Vec<String> = e.posting.store().events(&unknown.id).await.expect("events").into_iter().filter_map(|ev| ev.detail).collect();
        assert!(events.iter().any(|d| d.contains("idempotency key")), "{events:?}");
        assert_eq!(e.reload(&counted).await.state, State::Posted, "a URL counts 23");
        let too_long = e.reload(&too_long).await;
        assert!(too_long.state == State::Blocked && too_long.last_error.as_deref().is_some_and(|m| m.contains("500")), "{too_long:?}");
        let thread = e.reload(&thread).await;
        assert_eq!(thread.state, State::Posted);
        let statuses = m.statuses();
        let second = statuses.iter().find(|s| s.0 == thread.external_ids[1]).expect("second part");
        assert_eq!(second.2.as_deref(), Some(thread.external_ids[0].as_str()), "the thread replies to itself");

        // First tried two hours ago: the instance has forgotten the key, so
        // it is looked for on the account instead of sent again.
        let old = e.due(&acc, &[&sentence(403)], |_| {}).await;
        sqlx::query("UPDATE posting_posts SET first_try_ms = $1, attempts = 1 WHERE id = $2")
            .bind(posting::model::now_ms() - 2 * 3_600_000)
            .bind(&old.id)
            .execute(e.db.pool())
            .await
            .expect("an old first try");
        e.settle(6).await;
        let old = e.reload(&old).await;
        assert_eq!((old.state, old.due_ms, m.count(&sentence(403))), (State::Unknown, None, 0), "{backend:?}: {old:?}");

        // An image and a video (processed after a poll) go up first.
        let image = e.posting.store().create_media("", "image/png", &[7u8; 2_000]).await.expect("image");
        let video = e.posting.store().create_media("", "video/mp4", &[1u8; 50_000]).await.expect("video");
        let with_media = e.due(&acc, &[&sentence(404)], |p| p.parts[0].media = vec![image.id.clone(), video.id.clone()]).await;
        e.settle(3).await;
        assert_eq!((e.reload(&with_media).await.state, m.media_count(), m.count(&sentence(404))), (State::Posted, 2, 1), "{backend:?}");
    }
}

/// Media go up to X with the v2 chunked upload (initialize, 4 MB segments,
/// finalize, status while a video is processed) before the post that
/// attaches them, once per account: a second post reuses the ids.
#[tokio::test]
async fn media_upload_before_the_post_once() {
    for backend in BOTH {
        let e = env(backend).await;
        let acc = e.x_account("maker", "u1", 100).await;
        let image = e.posting.store().create_media("", "image/png", &[7u8; 10_000]).await.expect("image");
        let video = e.posting.store().create_media("", "video/mp4", &vec![1u8; 5 << 20]).await.expect("video");
        let with_both = e.due(&acc, &[&sentence(500)], |p| p.parts[0].media = vec![image.id.clone(), video.id.clone()]).await;
        e.settle(3).await;
        let with_both = e.reload(&with_both).await;
        assert_eq!(with_both.state, State::Posted, "{backend:?}: {with_both:?}");
        let (files, segments, polls) = e.x.uploads();
        assert_eq!((files, segments, polls), (2, 3, 1), "{backend:?}: one segment for the image, two for the 5 MB video, one status poll");
        let sent = e.x.posts().into_iter().find(|p| p.text == sentence(500)).expect("on X");
        assert_eq!(sent.body["media"]["media_ids"].as_array().map(Vec::len), Some(2), "{}", sent.body);

        let again = e.due(&acc, &[&sentence(501)], |p| p.parts[0].media = vec![image.id.clone()]).await;
        e.settle(3).await;
        assert_eq!(e.reload(&again).await.state, State::Posted);
        assert_eq!(e.x.uploads().0, 2, "{backend:?}: the image's X id is reused");
    }
}

/// An account with OAuth 1.0a keys posts with a signed `Authorization:
/// OAuth` header instead of a bearer token.
#[tokio::test]
async fn oauth1_keys_sign_the_requests() {
    for backend in BOTH {
        let e = env(backend).await;
        e.x.add_user("user-token-1a", "u9", "signed");
        let sealer = posting::secrets::Sealer::new(Some(&crate::support::secret()), &[]).expect("key");
        let id = posting::model::new_id("acc");
        let creds = serde_json::json!({"consumer_key": "ck", "consumer_secret": "cs", "access_token": "user-token-1a", "access_token_secret": "ts"});
        let new = posting::store::NewAccount { platform: "x".into(), handle: "signed".into(), time_zone: "UTC".into(), daily_cap: 100, max_length: None };
        let sealed = sealer.seal(&id, creds.to_string().as_bytes()).expect("seal");
        let acc = e.posting.store().create_account(Some(id), "", &new, Some(sealed)).await.expect("account");
        let post = e.due(&acc, &[&sentence(700)], |_| {}).await;
        e.settle(3).await;
        assert_eq!(e.reload(&post).await.state, State::Posted, "{backend:?}");
        let sent = e.x.posts().into_iter().find(|p| p.text == sentence(700)).expect("on X");
        assert_eq!(sent.author, "u9");
        assert!(sent.authorization.starts_with("OAuth ") && sent.authorization.contains("oauth_signature="), "{}", sent.authorization);
    }
}
