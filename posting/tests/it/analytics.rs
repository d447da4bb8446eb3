//! The catalogue, short links and analytics: a product feed imported all
//! or nothing, a redirect that counts people and not bots and goes only
//! where it was registered, metrics read back from X, figures per post,
//! product and variant, and the A/B test.

use posting::model::State;
use posting::store::Tenant;
use serde_json::json;

use crate::api::{client, serve};
use crate::support::{env, sentence, BOTH};

const FEED: &str = "sku,name,url,price,currency,commission_rate,features,tags
GR-1,Burr grinder,https://acme.shop/grinder,120,USD,0.08,40 settings|steel burrs,coffee|kitchen
KT-2,Gooseneck kettle,https://acme.shop/kettle,60,usd,0.1,,coffee
";

#[tokio::test]
async fn products_import_all_or_nothing() {
    for backend in BOTH {
        let e = env(backend).await;
        let c = client(&serve(&e).await, None);
        let bad = FEED.replace("KT-2,Gooseneck kettle,https://acme.shop/kettle,60", "KT-2,,ftp://acme.shop/kettle,sixty");
        let (s, err) = c.post_raw("/products/import", "text/csv", &bad).await;
        assert_eq!(s, 400, "{err}");
        let rows = err["error"]["rows"].as_array().expect("rows");
        let fields: Vec<(i64, &str)> = rows.iter().map(|r| (r["line"].as_i64().unwrap_or(0), r["field"].as_str().unwrap_or(""))).collect();
        assert_eq!(fields, [(3, "name"), (3, "url"), (3, "price")], "{backend:?}: {err}");
        assert_eq!(e.posting.store().products(&Tenant::All).await.expect("read").len(), 0, "nothing half-imported");

        let (s, done) = c.post_raw("/products/import", "text/csv", FEED).await;
        assert_eq!((s, done["created"].as_i64(), done["updated"].as_i64()), (200, Some(2), Some(0)), "{done}");
        let json_feed = json!({"products": [{"sku": "GR-1", "name": "Burr grinder Pro", "url": "https://acme.shop/grinder", "price": 130.0, "currency": "USD", "commission_rate": 0.08, "features": ["48 settings"], "tags": ["coffee"]}]});
        let (s, done) = c.post_raw("/products/import", "application/json", &json_feed.to_string()).await;
        assert_eq!((s, done["created"].as_i64(), done["updated"].as_i64()), (200, Some(0), Some(1)), "{done}");
        let products = e.posting.store().products(&Tenant::All).await.expect("read");
        let grinder = products.iter().find(|p| p.sku == "GR-1").expect("grinder");
        assert_eq!((grinder.name.as_str(), grinder.price, grinder.features.clone()), ("Burr grinder Pro", Some(130.0), vec!["48 settings".to_owned()]));
        let kettle = products.iter().find(|p| p.sku == "KT-2").expect("kettle");
        assert_eq!((kettle.currency.as_deref(), kettle.tags.clone(), kettle.features.len()), (Some("USD"), vec!["coffee".to_owned()], 0));
        let (s, err) = c.post_raw("/products/import", "application/json", r#"[{"sku": "A", "name": "a", "url": "https://a.com/x", "commission_rate": 8}]"#).await;
        assert_eq!((s, err["error"]["field"].as_str()), (400, Some("commission_rate")), "{err}");
    }
}

#[tokio::test]
async fn links_metrics_and_analytics() {
    for backend in BOTH {
        let e = env(backend).await;
        let api = serve(&e).await;
        let c = client(&api, None);
        c.post_raw("/products/import", "text/csv", FEED).await;
        let grinder = e.posting.store().products(&Tenant::All).await.expect("read").into_iter().find(|p| p.sku == "GR-1").expect("grinder");
        let acc = e.x_account("maker", "u1", 100).await;
        let (s, cmp) = c.post("/campaigns", json!({"account_id": acc.id, "name": "Spring Sale", "variants": ["a", "b"]})).await;
        assert_eq!(s, 201, "{cmp}");
        let cmp = cmp["id"].as_str().expect("id").to_owned();

        // One post per variant, each with its own link to the grinder.
        let mut by_variant = Vec::new();
        for (i, variant) in ["a", "b"].into_iter().enumerate() {
            let post = e.due(&acc, &[&sentence(300 + i)], |p| {
                p.campaign_id = Some(cmp.clone());
                p.variant = Some(variant.into());
            })
            .await;
            let (s, link) = c
                .post("/links", json!({"target": "https://acme.shop/grinder?utm_source=old&ref=7", "campaign_id": cmp, "post_id": post.id, "product_id": grinder.id, "variant": variant}))
                .await;
            assert_eq!(s, 201, "{link}");
            by_variant.push((post, link["code"].as_str().expect("code").to_owned()));
        }
        e.settle(3).await;
        let origin = api.trim_end_matches("/api/v1").to_owned();
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        let visit = |code: String, ua: &'static str| {
            let (http, origin) = (http.clone(), origin.clone());
            async move {
                let res = http.get(format!("{origin}/r/{code}?target=https://evil.example")).header("user-agent", ua).header("referer", "https://t.co/abc").send().await.expect("visit");
                (res.status().as_u16(), res.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned))
            }
        };
        let desktop = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0";
        let mobile = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile/15E148";
        let (s, location) = visit(by_variant[0].1.clone(), desktop).await;
        assert_eq!(s, 302, "{backend:?}");
        let location = location.expect("location");
        assert_eq!(location, "https://acme.shop/grinder?ref=7&utm_source=x&utm_medium=social&utm_campaign=spring-sale&utm_content=a", "only where it was registered");
        for _ in 0..29 {
            visit(by_variant[0].1.clone(), mobile).await;
        }
        for _ in 0..5 {
            visit(by_variant[1].1.clone(), desktop).await;
        }
        visit(by_variant[0].1.clone(), "Twitterbot/1.0").await;
        visit(by_variant[0].1.clone(), "").await;
        assert_eq!(visit("nope1234".into(), desktop).await.0, 404);
        assert_eq!(visit("../../etc".into(), desktop).await.0, 404);

        // X counts 1,000 impressions for each; metrics are read back once.
        for (post, _) in &by_variant {
            let p = e.reload(post).await;
            assert_eq!(p.state, State::Posted);
            e.x.set_metrics(&p.external_ids[0], [1000, 40, 5, 3, 30]);
        }
        let d = e.posting.dispatcher().with_metrics(posting::MetricsConfig { reads_per_day: 24, max_age_days: 30 });
        assert_eq!(d.read_metrics().await.expect("read"), 2);
        assert_eq!(d.read_metrics().await.expect("read"), 0, "within the read budget: not again this hour");
        assert_eq!(e.x.lookups(), 1);

        let (s, by_post) = c.get(&format!("/analytics?group_by=post&campaign_id={cmp}")).await;
        assert_eq!(s, 200, "{by_post}");
        let a = by_post["rows"].as_array().expect("rows").iter().find(|r| r["key"] == by_variant[0].0.id).expect("post a").clone();
        assert_eq!((a["impressions"].as_i64(), a["link_clicks"].as_i64(), a["likes"].as_i64()), (Some(1000), Some(30), Some(40)), "{a}");
        assert!((a["ctr"].as_f64().unwrap_or(0.0) - 0.03).abs() < 1e-9);
        assert!((a["engagement_rate"].as_f64().unwrap_or(0.0) - 0.048).abs() < 1e-9);
        let (_, by_product) = c.get("/analytics?group_by=product").await;
        let row = &by_product["rows"][0];
        // 35 clicks x 2% conversion x 8% commission x $120.
        assert_eq!((row["key"].as_str(), row["link_clicks"].as_i64()), (Some(grinder.id.as_str()), Some(35)));
        assert!((row["revenue_estimate"].as_f64().unwrap_or(0.0) - 6.72).abs() < 1e-9, "{row}");
        let (_, ab) = c.get(&format!("/campaigns/{cmp}/ab")).await;
        assert_eq!(ab["result"]["leader"], format!("{cmp}/a"), "{ab}");
        assert_eq!(ab["result"]["significant"], true, "30/1000 against 5/1000: {ab}");
        assert!(ab["test"].as_str().is_some_and(|t| t.contains("two-proportion z-test")));
        let (s, err) = c.get("/analytics?group_by=colour").await;
        assert_eq!((s, err["error"]["field"].as_str()), (400, Some("group_by")));
    }
}
