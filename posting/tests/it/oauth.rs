//! Sign-in with X (OAuth 2.0 with PKCE) and refresh-token rotation: one
//! refresh at a time per account even with two dispatchers, the new
//! refresh token kept; a refused refresh sends the account back for
//! authorisation, and signing in again brings it back.

use posting::model::{AccountStatus, State};
use posting::store::Tenant;
use serde_json::{json, Value};

use crate::api::{client, serve};
use crate::support::{env_with, sentence, BOTH};

#[tokio::test]
async fn sign_in_then_refresh_with_rotation() {
    for backend in BOTH {
        let e = env_with(backend, |c| {
            c.x.client_id = "app-id".into();
            c.x.client_secret = Some(posting::secrets::Hidden("app-secret".into()));
            c.x.redirect_url = "http://starling.invalid/api/v1/oauth/x/callback".into();
        })
        .await;
        e.x.set_client("app-id", Some("app-secret"));
        // Every token is close to expiring: each use refreshes it first.
        e.x.set_token_lifetime(60);
        let api = serve(&e).await;
        let c = client(&api, None);
        let (s, start) = c.post("/accounts/x/authorize", json!({"time_zone": "Asia/Tokyo", "daily_cap": 50})).await;
        assert_eq!(s, 200, "{start}");
        let url = start["authorize_url"].as_str().expect("url");
        let back = e.x.approve(url, "9001", "brand").expect("X approves");
        let callback = back.trim_start_matches("http://starling.invalid/api/v1");
        let origin = api.clone();
        let get = |path: String| {
            let api = origin.clone();
            async move {
                let res = reqwest::get(format!("{api}{path}")).await.expect("callback");
                (res.status().as_u16(), res.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let (s, done) = get(callback.to_owned()).await;
        assert_eq!(s, 201, "{backend:?}: {done}");
        let account = &done["account"];
        assert_eq!((account["handle"].as_str(), account["remote_id"].as_str()), (Some("brand"), Some("9001")));
        assert_eq!((account["time_zone"].as_str(), account["daily_cap"].as_i64()), (Some("Asia/Tokyo"), Some(50)));
        assert_eq!(account["has_credentials"], true);
        let (s, again) = get(callback.to_owned()).await;
        assert_eq!((s, again["error"]["field"].as_str()), (400, Some("state")), "a state works once: {again}");

        let acc = e.posting.store().account(&Tenant::All, account["id"].as_str().expect("id")).await.expect("read").expect("account");
        let mut posts = Vec::new();
        for i in 0..6 {
            posts.push(e.due(&acc, &[&sentence(100 + i)], |_| {}).await);
        }
        let sealer = posting::secrets::Sealer::new(Some(&crate::support::secret()), &[]).expect("key");
        let mut cfg = crate::support::config(&e.x.url());
        cfg.x.client_id = "app-id".into();
        cfg.x.client_secret = Some(posting::secrets::Hidden("app-secret".into()));
        cfg.x.redirect_url = "http://starling.invalid/api/v1/oauth/x/callback".into();
        let replica = posting::Posting::open(&e.db, cfg, sealer).await.expect("replica");
        let (d1, d2) = (e.posting.dispatcher(), replica.dispatcher());
        for _ in 0..8 {
            let (a, b) = tokio::join!(d1.step(), d2.step());
            if a.expect("step").claimed + b.expect("step").claimed == 0 {
                break;
            }
        }
        for p in &posts {
            assert_eq!(e.reload(p).await.state, State::Posted, "{backend:?}");
        }
        let (refreshed, refused) = e.x.refreshes();
        assert!(refreshed >= 1, "{backend:?}: tokens were refreshed");
        assert_eq!(refused, 0, "{backend:?}: no refresh token was ever used twice");

        // The person revokes the app: the refresh is refused, the account
        // waits for authorisation, its post with it.
        e.x.revoke_refresh_tokens();
        let waiting = e.due(&acc, &[&sentence(120)], |_| {}).await;
        e.settle(3).await;
        let acc_now = e.posting.store().account(&Tenant::All, &acc.id).await.expect("read").expect("account");
        assert_eq!(acc_now.status, AccountStatus::NeedsReauth, "{backend:?}");
        assert_eq!(e.reload(&waiting).await.state, State::Scheduled);
        let (_, start) = c.post("/accounts/x/authorize", json!({})).await;
        let back = e.x.approve(start["authorize_url"].as_str().expect("url"), "9001", "brand").expect("approve");
        let (s, done) = get(back.trim_start_matches("http://starling.invalid/api/v1").to_owned()).await;
        assert_eq!((s, done["account"]["id"].as_str()), (200, Some(acc.id.as_str())), "the same account, authorised again: {done}");
        e.settle(3).await;
        assert_eq!(e.reload(&waiting).await.state, State::Posted, "{backend:?}");
    }
}
