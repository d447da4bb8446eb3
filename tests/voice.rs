//! Voice commands end to end on the default `serve` (the local SmolLM2 and whisper-tiny-en, SQLite, the dry-run platform):
//! the shared table of typed commands (`voice/tests/support/table.rs`) read right and the destructive ones held for a
//! confirmation; spoken commands synthesised with festival (some with noise mixed in) changing the right things in the
//! posting service; a confirmation carried out once however often it is sent; a read-only key reporting but not
//! scheduling, and never seeing another key's commands.

#[path = "../voice/tests/support/table.rs"]
mod table;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::{tz::TimeZone, Timestamp, Zoned};
use serde_json::{json, Value};
use table::{Case, Confirm};
use test_support::speech::{clip, Sentence, Variant};

const ZONE: &str = "America/New_York";

struct Server {
    child: Child,
    root: String,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn db_url(tag: &str) -> (String, std::path::PathBuf) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let base = std::env::temp_dir().join(format!("starling-voice-{tag}-{}-{nanos}", std::process::id()));
    (format!("sqlite://{}.db", base.display()), base)
}

async fn start(db: &str, base: &std::path::Path) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_starling"));
    serve
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("STARLING_DATABASE_URL", db)
        .env("STARLING_USAGE_JOURNAL", format!("{}.journal", base.display()))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::null());
    let (child, addr) = test_support::spawn_serve(serve);
    let server = Server { child, root: format!("http://{addr}"), http: reqwest::Client::new() };
    let deadline = Instant::now() + Duration::from_secs(180);
    while server.http.get(format!("{}/ready", server.root)).send().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "the model did not load");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server
}

impl Server {
    async fn call(&self, method: reqwest::Method, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.root));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, None, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(reqwest::Method::GET, path, None, None).await;
        assert_eq!(s, 200, "{path}: {v}");
        v
    }

    async fn say(&self, text: &str, key: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::POST, "/v1/voice/commands", key, Some(json!({"text": text}))).await
    }

    /// A spoken command: the clip uploaded as a client would, retried while the speech model is still loading (503).
    async fn speak(&self, path: &std::path::Path) -> Value {
        let bytes = std::fs::read(path).expect("clip");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("command.wav").to_owned();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.clone()));
            let res = self.http.post(format!("{}/v1/voice/commands", self.root)).multipart(form).send().await.expect("request");
            let status = res.status().as_u16();
            let v: Value = res.json().await.unwrap_or(Value::Null);
            if status == 503 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            assert_eq!(status, 200, "{v}");
            return v;
        }
    }
}

fn now() -> Zoned {
    Timestamp::now().to_zoned(TimeZone::get(ZONE).expect("zone"))
}

/// What the test sets up: an account in New York, four campaigns (two that "summer" both fits), a product with a short
/// link, and posts scheduled where the cancel commands look.
struct Fixture {
    campaigns: Vec<(String, String)>,
    posts: Vec<String>,
    link: String,
}

async fn set_up(s: &Server) -> Fixture {
    let (st, account) = s.post("/api/v1/accounts", json!({"platform": "dry-run", "handle": "@brew_lab", "time_zone": ZONE})).await;
    assert_eq!(st, 201, "{account}");
    let account = account["id"].as_str().expect("id").to_owned();
    let mut campaigns = Vec::new();
    for name in ["Coffee Grinder Launch", "Running Shoes Spring", "Summer Sale", "Summer Launch"] {
        let (st, c) = s.post("/api/v1/campaigns", json!({"account_id": account, "name": name})).await;
        assert_eq!(st, 201, "{c}");
        campaigns.push((name.to_owned(), c["id"].as_str().expect("id").to_owned()));
    }
    let feed = json!([{"sku": "RS-1", "name": "Running shoes", "url": "https://acme.shop/shoes", "price": 90, "currency": "USD", "commission_rate": 0.1}]);
    let (st, imported) = s.post("/api/v1/products/import", feed).await;
    assert_eq!(st, 200, "{imported}");
    let products = s.get("/api/v1/products").await;
    let shoes = products["data"][0]["id"].as_str().expect("product").to_owned();
    let (st, link) = s.post("/api/v1/links", json!({"target": "https://acme.shop/shoes", "product_id": shoes})).await;
    assert_eq!(st, 201, "{link}");
    let mut posts = Vec::new();
    let n = now();
    for (i, spec) in ["+1d 09:00", "fri 18:00", "+3d 12:00"].iter().enumerate() {
        let at = table::at(spec, &n).timestamp().to_string();
        let (st, p) = s.post("/api/v1/posts", json!({"account_id": account, "text": format!("Fresh beans are in, batch {i}."), "scheduled_at": at})).await;
        assert_eq!(st, 201, "{p}");
        posts.push(p["id"].as_str().expect("id").to_owned());
    }
    Fixture { campaigns, posts, link: link["code"].as_str().expect("code").to_owned() }
}

/// Whether `answer` is right for `case`, and why not.
fn judge(case: &Case, answer: &Value, at: &Zoned, post_id: &str) -> Vec<String> {
    let mut diff = table::differences(case, answer["intent"].as_str().unwrap_or(""), &answer["arguments"], at, post_id);
    let confirm = answer["needs_confirmation"].as_bool().unwrap_or(false);
    let destructive = matches!(answer["intent"].as_str(), Some("cancel_post" | "pause_campaign"));
    match case.confirm {
        // Read as what it is and not held: the one thing that must never happen.
        Confirm::Yes if !confirm && destructive => diff.push(format!("not held for a confirmation ({})", answer["reply"])),
        Confirm::Yes if !confirm => diff.push(format!("not held ({})", answer["reply"])),
        Confirm::No if confirm => diff.push(format!("held for a confirmation ({})", answer["reply"])),
        _ => {}
    }
    diff
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_and_spoken_commands_do_the_right_things() {
    let (db, base) = db_url("main");
    let s = start(&db, &base).await;
    let fx = set_up(&s).await;

    // The table, typed.
    let mut wrong = Vec::new();
    let mut by_model = 0;
    for case in table::CASES {
        let said = case.said.replace("{post_id}", &fx.posts[2]);
        let at = now();
        let (status, answer) = s.say(&said, None).await;
        assert_eq!(status, 200, "{said}: {answer}");
        by_model += usize::from(answer["reader"] == "model");
        let diff = judge(case, &answer, &at, &fx.posts[2]);
        if !diff.is_empty() {
            wrong.push(format!("{said:?}: {} (read {} {} by the {})", diff.join("; "), answer["intent"], answer["arguments"], answer["reader"]));
        }
        // Nothing destructive happens before a confirmation.
        if case.confirm == Confirm::Yes {
            assert!(answer["result"].is_null(), "{said}: acted before a confirmation: {answer}");
        }
    }
    let total = table::CASES.len();
    let accuracy = (total - wrong.len()) as f64 / total as f64;
    // Straight to stderr, past the test harness's capture: the accuracy shows in every run's output.
    let mut report = format!("voice text commands: {}/{total} right ({:.1}%), {by_model} read by the model\n", total - wrong.len(), accuracy * 100.0);
    for w in &wrong {
        report.push_str(&format!("  wrong: {w}\n"));
    }
    let _ = std::io::Write::write_all(&mut std::io::stderr(), report.as_bytes());
    let destructive_wrong: Vec<&String> = wrong.iter().filter(|w| w.contains("not held for a confirmation")).collect();
    assert!(destructive_wrong.is_empty(), "destructive commands acted on without a confirmation: {destructive_wrong:?}");
    assert!(accuracy >= 0.9, "accuracy {accuracy:.3} below 0.9:\n{}", wrong.join("\n"));
    for (name, id) in &fx.campaigns {
        assert_eq!(s.get(&format!("/api/v1/campaigns/{id}")).await["status"], "active", "{name} changed without a confirmation");
    }
    for id in &fx.posts {
        assert_eq!(s.get(&format!("/api/v1/posts/{id}")).await["state"], "scheduled", "{id} changed without a confirmation");
    }

    // A report counts what happened: one person follows the running shoes link.
    let browser = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";
    let click = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).user_agent(browser).build().expect("client");
    let res = click.get(format!("{}/r/{}", s.root, fx.link)).send().await.expect("click");
    assert_eq!(res.status().as_u16(), 302);
    let (_, report) = s.say("How many clicks did the running shoes link get today?", None).await;
    assert_eq!((report["status"].as_str(), report["result"]["value"].as_f64()), (Some("done"), Some(1.0)), "{report}");

    // A confirmation carries the command out once, however often it is sent.
    let (_, held) = s.say("Pause the coffee grinder campaign", None).await;
    let token = held["confirmation_token"].as_str().expect("token").to_owned();
    let (st, done) = s.post("/v1/voice/commands/confirm", json!({"token": token})).await;
    assert_eq!((st, done["status"].as_str()), (200, Some("done")), "{done}");
    let grinder = &fx.campaigns[0].1;
    assert_eq!(s.get(&format!("/api/v1/campaigns/{grinder}")).await["status"], "paused");
    let (st, again) = s.post("/v1/voice/commands/confirm", json!({"token": token})).await;
    assert_eq!(st, 200, "{again}");
    assert_eq!((&again["id"], &again["result"]), (&done["id"], &done["result"]), "a retried confirmation answers with the first result");
    let (st, bad) = s.post("/v1/voice/commands/confirm", json!({"token": "vct_not-a-token"})).await;
    assert_eq!((st, bad["error"]["param"].as_str()), (404, Some("token")), "{bad}");
    let (st, bad) = s.post("/v1/voice/commands", json!({"txt": "hello"})).await;
    assert_eq!((st, bad["error"]["param"].as_str()), (400, Some("txt")), "{bad}");

    // Spoken: festival's voice, three with noise mixed in; the first two phrased as in the typed table.
    let spoken: &[(&Sentence, Variant, &str)] = &[
        (&SPOKEN[0], Variant::Base16k, "Schedule a tweet about our new wireless earbuds for Friday at six p.m."),
        (&SPOKEN[1], Variant::Base16k, "Post the summer sale announcement tomorrow at nine thirty in the morning"),
        (&SPOKEN[2], Variant::Base16k, "How many clicks did the link to the running shoes get yesterday?"),
        (&SPOKEN[3], Variant::Mp3, "Resume the coffee grinder campaign"),
        (&SPOKEN[4], Variant::Base16k, "Write three posts about summer hiking gear"),
        (&SPOKEN[5], Variant::Base16k, "Write a couple of tweets about our summer sale"),
        (&SPOKEN[6], Variant::Base16k, "What's scheduled for tomorrow?"),
        (&SPOKEN[7], Variant::Base16k, "Show me the posts scheduled for next week"),
        (&SPOKEN[8], Variant::Base16k, "Delete my next tweet"),
        (&SPOKEN[9], Variant::Base16k, "Cancel the next post"),
        (&SPOKEN[10], Variant::Base16k, "How many impressions did my last post get?"),
        (&SPOKEN[11], Variant::Base16k, "What was the revenue for the coffee grinder campaign last week?"),
        (&SPOKEN[12], Variant::Noisy, "Stop the running shoes campaign"),
        (&SPOKEN[13], Variant::Noisy, "Schedule a post about our cold brew kit in two hours"),
        (&SPOKEN[14], Variant::Noisy, "Tweet about our espresso machine on Monday at 10"),
        (&SPOKEN[15], Variant::Base16k, "Pause the summer campaign"),
        (&SPOKEN[16], Variant::Base16k, "Tell me a joke"),
    ];
    let mut heard = Vec::new();
    let mut misheard = Vec::new();
    for (sentence, variant, typed) in spoken {
        let case = table::CASES.iter().find(|c| c.said == *typed).unwrap_or_else(|| panic!("{typed:?} is not in the table"));
        let at = now();
        let answer = s.speak(&clip(sentence, *variant)).await;
        let diff = judge(case, &answer, &at, "");
        if !diff.is_empty() {
            misheard.push(format!("{:?} ({variant:?}) heard as {:?}: {}", sentence.spoken, answer["transcript"], diff.join("; ")));
        }
        assert!(answer["timings"]["speech_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{answer}");
        heard.push((sentence.id, answer));
    }
    assert!(misheard.is_empty(), "{} of {} spoken commands went wrong:\n{}", misheard.len(), spoken.len(), misheard.join("\n"));
    let answer = |id: &str| &heard.iter().find(|(i, _)| *i == id).expect("heard").1;
    // The earbuds post is scheduled at six p.m. on the coming Friday in New York, written by the local model.
    let post = &answer("earbuds")["result"]["post"];
    let want = table::at("fri 18:00", &now()).timestamp().as_millisecond();
    assert_eq!((post["state"].as_str(), post["scheduled_ms"].as_i64()), (Some("scheduled"), Some(want)), "{post}");
    let stored = s.get(&format!("/api/v1/posts/{}", post["id"].as_str().expect("id"))).await;
    assert_eq!(stored["scheduled_ms"].as_i64(), Some(want));
    assert_eq!(stored["made_with_ai"], true);
    // Paused by voice once confirmed (the noisy "stop the running shoes campaign").
    let token = answer("stop-shoes")["confirmation_token"].as_str().expect("token");
    let (st, done) = s.post("/v1/voice/commands/confirm", json!({"token": token})).await;
    assert_eq!((st, done["status"].as_str()), (200, Some("done")), "{done}");
    let shoes = &fx.campaigns[1].1;
    assert_eq!(s.get(&format!("/api/v1/campaigns/{shoes}")).await["status"], "paused");
    // Resumed by voice: active again.
    assert_eq!(s.get(&format!("/api/v1/campaigns/{grinder}")).await["status"], "active");
    // Three drafts stored for approval.
    let drafts = answer("hiking")["result"]["drafts"].as_array().expect("drafts").len();
    assert_eq!(drafts, 3, "{}", answer("hiking"));
    // The spoken "cancel the next post", confirmed, cancels the scheduled post that comes first.
    let scheduled = s.get("/api/v1/posts?state=scheduled&limit=500").await;
    let first = scheduled["data"].as_array().expect("posts").iter().min_by_key(|p| p["scheduled_ms"].as_i64()).expect("a scheduled post").clone();
    let token = answer("cancel-next")["confirmation_token"].as_str().expect("token");
    let (st, done) = s.post("/v1/voice/commands/confirm", json!({"token": token})).await;
    assert_eq!((st, &done["result"]["post"]["id"]), (200, &first["id"]), "{done}");
    assert_eq!(s.get(&format!("/api/v1/posts/{}", first["id"].as_str().expect("id"))).await["state"], "cancelled");
    // Every command is on record (the refused bad body is not a command), newest first.
    let list = s.get("/v1/voice/commands?limit=500").await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(table::CASES.len() + 2 + spoken.len()));
    assert_eq!(list["data"][0]["id"], heard.last().expect("one").1["id"]);
}

/// The spoken commands (festival reads numbers as words: what a person says).
static SPOKEN: [Sentence; 17] = [
    Sentence { id: "earbuds", spoken: "Schedule a tweet about our new wireless earbuds for Friday at six p.m.", reference: "" },
    Sentence { id: "summer-sale", spoken: "Post the summer sale announcement tomorrow at nine thirty in the morning.", reference: "" },
    Sentence { id: "shoes-clicks", spoken: "How many clicks did the link to the running shoes get yesterday?", reference: "" },
    Sentence { id: "resume-grinder", spoken: "Resume the coffee grinder campaign.", reference: "" },
    Sentence { id: "hiking", spoken: "Write three posts about summer hiking gear.", reference: "" },
    Sentence { id: "sale-ideas", spoken: "Write a couple of tweets about our summer sale.", reference: "" },
    Sentence { id: "list-tomorrow", spoken: "What's scheduled for tomorrow?", reference: "" },
    Sentence { id: "list-next-week", spoken: "Show me the posts scheduled for next week.", reference: "" },
    Sentence { id: "delete-next", spoken: "Delete my next tweet.", reference: "" },
    Sentence { id: "cancel-next", spoken: "Cancel the next post.", reference: "" },
    Sentence { id: "impressions", spoken: "How many impressions did my last post get?", reference: "" },
    Sentence { id: "revenue", spoken: "What was the revenue for the coffee grinder campaign last week?", reference: "" },
    Sentence { id: "stop-shoes", spoken: "Stop the running shoes campaign.", reference: "" },
    Sentence { id: "cold-brew-kit", spoken: "Schedule a post about our cold brew kit in two hours.", reference: "" },
    Sentence { id: "espresso-monday", spoken: "Tweet about our espresso machine on Monday at ten.", reference: "" },
    Sentence { id: "pause-summer", spoken: "Pause the summer campaign.", reference: "" },
    Sentence { id: "joke", spoken: "Tell me a joke.", reference: "" },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_key_reports_but_does_not_schedule() {
    let (db, base) = db_url("keys");
    let key = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_starling")).env("STARLING_DATABASE_URL", &db).args(args).output().expect("starling keys");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let writer = key(&["keys", "create", "--name", "writer"]);
    let reader = key(&["keys", "create", "--name", "reader", "--scopes", "posting:read"]);
    let s = start(&db, &base).await;
    let (st, account) = s.call(reqwest::Method::POST, "/api/v1/accounts", Some(&writer), Some(json!({"platform": "dry-run", "handle": "@w", "time_zone": ZONE}))).await;
    assert_eq!(st, 201, "{account}");
    let (st, _) = s.say("What's scheduled for tomorrow?", None).await;
    assert_eq!(st, 401, "keys are in use: a command needs one");

    let (st, report) = s.say("How many clicks did the coffee grinder campaign get this week?", Some(&reader)).await;
    assert_eq!((st, report["intent"].as_str()), (200, Some("report_metric")), "{report}");
    let (st, refused) = s.say("Post saying hello world tomorrow at 9 am", Some(&reader)).await;
    assert_eq!((st, refused["error"]["code"].as_str()), (403, Some("forbidden")), "{refused}");

    // The writer's pending command: its token means nothing to the reader, and the reader's list does not show it.
    let (st, post) = s.call(reqwest::Method::POST, "/api/v1/posts", Some(&writer), Some(json!({"account_id": account["id"], "text": "Beans", "scheduled_at": table::at("+1d 09:00", &now()).timestamp().to_string()}))).await;
    assert_eq!(st, 201, "{post}");
    let (st, held) = s.say("Cancel the next post", Some(&writer)).await;
    assert_eq!((st, held["needs_confirmation"].as_bool()), (200, Some(true)), "{held}");
    let token = held["confirmation_token"].as_str().expect("token");
    let (st, _) = s.call(reqwest::Method::POST, "/v1/voice/commands/confirm", Some(&reader), Some(json!({"token": token}))).await;
    assert_eq!(st, 404, "another key's token");
    let (_, mine) = s.call(reqwest::Method::GET, "/v1/voice/commands", Some(&reader), None).await;
    let ids: Vec<&str> = mine["data"].as_array().expect("data").iter().filter_map(|c| c["id"].as_str()).collect();
    assert!(!ids.contains(&held["id"].as_str().expect("id")), "the reader sees the writer's command: {mine}");
    assert_eq!(ids.len(), 2, "{mine}");
    let (st, done) = s.call(reqwest::Method::POST, "/v1/voice/commands/confirm", Some(&writer), Some(json!({"token": token}))).await;
    assert_eq!((st, done["status"].as_str()), (200, Some("done")), "{done}");
    assert_eq!(done["result"]["post"]["state"], "cancelled");
}
