//! The posting service end to end on the default `serve` (the local
//! SmolLM2, SQLite, the dry-run platform): a product feed and a campaign
//! go in, drafts are generated locally into the campaign's next slots and
//! go out to the dry-run outbox at their times (never before), and the
//! short links and analytics answer.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

async fn send(http: &reqwest::Client, method: reqwest::Method, url: &str, body: Option<(&str, String)>) -> (u16, Value) {
    let mut req = http.request(method, url);
    if let Some((ctype, b)) = body {
        req = req.header("content-type", ctype).body(b);
    }
    let res = req.send().await.expect("request");
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_serve_generates_schedules_posts_and_counts() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let base = std::env::temp_dir().join(format!("starling-e2e-{}-{nanos}", std::process::id()));
    let db = format!("sqlite://{}.db", base.display());
    let mut serve = Command::new(env!("CARGO_BIN_EXE_starling"));
    serve
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("STARLING_DATABASE_URL", &db)
        .env("STARLING_USAGE_JOURNAL", format!("{}.journal", base.display()))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::null());
    let (mut child, addr) = test_support::spawn_serve(serve);
    let root = format!("http://{addr}");
    let api = format!("{root}/api/v1");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let deadline = Instant::now() + Duration::from_secs(180);
    while send(&http, reqwest::Method::GET, &format!("{root}/ready"), None).await.0 != 200 {
        assert!(Instant::now() < deadline, "the model did not load");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let feed = "sku,name,url,price,currency,commission_rate,features,tags\n\
                GR-1,Burr grinder,https://acme.shop/grinder,120,USD,0.08,40 grind settings|steel burrs,coffee\n\
                KT-2,Gooseneck kettle,https://acme.shop/kettle,60,USD,0.1,precise pour|keeps heat,coffee\n";
    let (s, imported) = send(&http, reqwest::Method::POST, &format!("{api}/products/import"), Some(("text/csv", feed.into()))).await;
    assert_eq!((s, imported["created"].as_i64()), (200, Some(2)), "{imported}");
    let (_, products) = send(&http, reqwest::Method::GET, &format!("{api}/products"), None).await;
    let product_ids: Vec<&str> = products["data"].as_array().expect("products").iter().filter_map(|p| p["id"].as_str()).collect();
    let (s, account) = send(
        &http,
        reqwest::Method::POST,
        &format!("{api}/accounts"),
        Some(("application/json", json!({"platform": "dry-run", "handle": "@brew_lab", "time_zone": "America/New_York"}).to_string())),
    )
    .await;
    assert_eq!(s, 201, "{account}");

    // Two slots a little ahead, at their local time in New York.
    let tz = jiff::tz::TimeZone::get("America/New_York").expect("zone");
    let mut slots: serde_json::Map<String, Value> = serde_json::Map::new();
    let mut expected = Vec::new();
    for ahead in [50, 60] {
        let at = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_secs(ahead)).expect("time").to_zoned(tz.clone());
        let day = posting::schedule::weekday_key(at.weekday());
        let time = format!("{:02}:{:02}:{:02}", at.hour(), at.minute(), at.second());
        slots.entry(day).or_insert_with(|| json!([])).as_array_mut().expect("times").push(json!(time));
        expected.push(at.with().subsec_nanosecond(0).build().expect("whole second").timestamp().as_millisecond());
    }
    let campaign = json!({
        "account_id": account["id"], "name": "Brew Better", "niche": "home coffee brewing", "products": product_ids,
        "slots": slots, "variants": ["a", "b"], "banned_terms": ["guaranteed"], "approval": "auto",
    });
    let (s, campaign) = send(&http, reqwest::Method::POST, &format!("{api}/campaigns"), Some(("application/json", campaign.to_string()))).await;
    assert_eq!(s, 201, "{campaign}");
    let id = campaign["id"].as_str().expect("id");
    let fill = json!({"slots": 2, "candidates": 2, "seed": 7}).to_string();
    let (s, filled) = send(&http, reqwest::Method::POST, &format!("{api}/campaigns/{id}/fill"), Some(("application/json", fill))).await;
    assert_eq!(s, 201, "{filled}");
    let drafts = filled["data"].as_array().expect("posts").clone();
    assert_eq!(drafts.len(), 2, "{filled}");
    for (d, at) in drafts.iter().zip(&expected) {
        let text = d["parts"][0]["text"].as_str().expect("text");
        eprintln!("draft at {at}: {text}");
        assert!(text.starts_with("#ad"), "disclosed first: {text}");
        assert!(text.contains(d["short_url"].as_str().expect("link")), "carries its link: {text}");
        assert!(!text.to_lowercase().contains("guaranteed"), "{text}");
        assert_eq!((d["state"].as_str(), d["scheduled_ms"].as_i64()), (Some("scheduled"), Some(*at)), "{d}");
        assert_eq!(d["made_with_ai"], true);
    }

    // Out to the dry-run outbox at their times, not before.
    let deadline = Instant::now() + Duration::from_secs(180);
    let posted = loop {
        let (_, page) = send(&http, reqwest::Method::GET, &format!("{api}/posts?state=posted&campaign_id={id}"), None).await;
        let posted = page["data"].as_array().cloned().unwrap_or_default();
        if posted.len() == 2 {
            break posted;
        }
        assert!(Instant::now() < deadline, "not posted: {page}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for p in &posted {
        assert!(p["posted_ms"].as_i64() >= p["scheduled_ms"].as_i64(), "never early: {p}");
        assert!(p["external_ids"][0].as_str().is_some_and(|x| x.starts_with("dry_")), "{p}");
    }

    let short = drafts[0]["short_url"].as_str().expect("link");
    let res = http.get(short).header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0").send().await.expect("visit");
    assert_eq!(res.status().as_u16(), 302);
    let location = res.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(location.starts_with("https://acme.shop/") && location.contains("utm_campaign=brew-better"), "{location}");
    let (s, report) = send(&http, reqwest::Method::GET, &format!("{api}/analytics?group_by=campaign"), None).await;
    assert_eq!(s, 200, "{report}");
    let row = report["rows"].as_array().and_then(|r| r.iter().find(|r| r["key"] == id)).cloned().expect("the campaign's row");
    assert_eq!((row["posts"].as_i64(), row["link_clicks"].as_i64()), (Some(2), Some(1)), "{row}");

    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().expect("wait");
    assert!(status.success(), "serve exits 0 on SIGTERM: {status:?}");
    for suffix in [".db", ".db-wal", ".db-shm", ".journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", base.display()));
    }
}
